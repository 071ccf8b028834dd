"""Pack a training folder (``images/`` + ``masks/``, e.g. DUTS-TR) small enough to travel to a GPU
machine that takes a limited upload per call (see ``benchmarks/device_train.py``).

``OUT/train`` gets ``--pairs`` pairs spread evenly over the training split (every 20th pair in
sorted order is held out, as ``crm train`` does), each photo re-encoded as JPEG at ``--quality``
and each mask copied byte for byte. ``OUT/val`` gets the first ``--val`` held-out pairs, unchanged,
for ``crm train --val OUT/val``: a run on the packed folder never trains on our held-out photos.
The total is checked against ``--max-mib``; the packed folder is data, never to be committed.

    python benchmarks/pack_training_data.py DATA/duts-tr runs/pack --pairs 2600 --quality 75 --val 48
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from script_errors import one_line_errors

from crm_cli.imageio import read_image
from crm_cli.pairing import FilePair
from crm_cli.training.data import list_pairs, split_pairs


def evenly_spaced(pairs: list[FilePair], count: int) -> list[FilePair]:
    """``count`` pairs spread evenly over ``pairs`` (all of them when ``count`` is not smaller)."""
    if count >= len(pairs):
        return list(pairs)
    picks = np.linspace(0, len(pairs) - 1, count).round().astype(int)
    return [pairs[int(k)] for k in picks]


def write_pair(pair: FilePair, folder: Path, quality: int | None) -> int:
    """Write ``folder/images/NAME.jpg`` (re-encoded at ``quality``; copied when None) and
    ``folder/masks/NAME<suffix>`` (copied); returns the bytes written."""
    image_out = folder / "images" / (pair.name + (".jpg" if quality is not None else pair.image.suffix))
    mask_out = folder / "masks" / (pair.name + pair.mask.suffix)
    if quality is None:
        shutil.copyfile(pair.image, image_out)
    else:
        # read_image applies EXIF orientation, so the upright photo is stored without any.
        rgb = read_image(pair.image)
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise OSError(f"{pair.image}: JPEG encoding failed")
        image_out.write_bytes(encoded.tobytes())
    shutil.copyfile(pair.mask, mask_out)
    return image_out.stat().st_size + mask_out.stat().st_size


def pack(source: Path, out: Path, pairs: int, val: int, quality: int) -> tuple[int, int, int]:
    """Write ``out/train`` and ``out/val``; returns (train pairs, val pairs, bytes written)."""
    train_split, held_out = split_pairs(list_pairs(source))
    chosen = evenly_spaced(train_split, pairs)
    total = 0
    for folder, items, q in ((out / "train", chosen, quality), (out / "val", held_out[:val], None)):
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        for pair in items:
            total += write_pair(pair, folder, q)
    return len(chosen), min(val, len(held_out)), total


@one_line_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder with images/ and masks/")
    parser.add_argument("out", type=Path, help="output folder (train/ and val/ are replaced)")
    parser.add_argument("--pairs", type=int, default=2600, help="training pairs to take")
    parser.add_argument("--val", type=int, default=48, help="held-out pairs for OUT/val")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality of the re-encoded photos")
    parser.add_argument("--max-mib", type=float, default=56.0, help="fail when the pack is larger")
    args = parser.parse_args()
    n_train, n_val, size = pack(args.source, args.out, args.pairs, args.val, args.quality)
    mib = size / 2**20
    print(f"{args.out}: {n_train} training pairs, {n_val} held-out pairs, {mib:.1f} MiB", file=sys.stderr)
    if mib > args.max_mib:
        print(f"error: {mib:.1f} MiB is over --max-mib {args.max_mib:g}; take fewer --pairs or a lower --quality",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
