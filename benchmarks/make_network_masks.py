"""Real coarse masks for DUTS-TR photos from the IS-Net ONNX network (a data tool, not a dependency).

The network is the one ``../shared/data/README.md`` describes (``carvana-dev-real``): the IS-Net
ONNX inside the npm package ``@imgly/background-removal-data@1.4.5``, ``/models/medium`` joined from
its chunks. Nothing of it goes into this repository; pass its path. It runs on ``onnxruntime``, which
crm installs for its own ONNX backend.

Two uses:

* ``--split held-out``: the held-out pairs (every 20th, as ``make_heldout_val.py``) as a BIG-layout
  folder whose ``_seg`` masks are the network's: a dev set of real masks at low resolution.
* ``--split train``: ``OUT/hi/<name>.png`` (the photo given to the network at its 1024 px input)
  and ``OUT/lo/<name>.png`` (the photo first reduced to a long side of 48-96 px, as a network
  working at low resolution sees it) for the first ``--limit`` training pairs in a seeded order,
  for ``crm train --network-masks OUT/hi --network-masks OUT/lo``.

Files already written are skipped, so an interrupted run continues where it stopped.

    python benchmarks/make_network_masks.py ISNET.onnx ../shared/data/duts-tr OUT --split train --limit 1200
"""

from __future__ import annotations

import argparse
import os
import random
import zlib
from pathlib import Path

import cv2
import numpy as np
from script_errors import one_line_errors

from crm_cli.training.data import list_pairs, load_pair, split_pairs

NETWORK_SIDE = 1024


class NetworkMasker:
    """One ONNX session; ``mask(rgb)`` is the binary mask at the photo's size."""

    def __init__(self, onnx_path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(onnx_path), options)
        self.input_name = self.session.get_inputs()[0].name

    def mask(self, rgb: np.ndarray, seen_long_side: int | None = None) -> np.ndarray:
        """uint8 0/255 (H, W). ``seen_long_side``: reduce the photo to this long side first."""
        height, width = rgb.shape[:2]
        seen = rgb
        if seen_long_side is not None:
            scale = seen_long_side / max(height, width)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            seen = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        x = cv2.resize(seen, (NETWORK_SIDE, NETWORK_SIDE), interpolation=cv2.INTER_LINEAR)
        x = x.astype(np.float32) / 255.0 - 0.5
        out = self.session.run(None, {self.input_name: x.transpose(2, 0, 1)[None]})[0][0, 0]
        out = (out - out.min()) / max(1e-8, float(out.max() - out.min()))
        out = cv2.resize(out, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.where(out >= 0.5, 255, 0).astype(np.uint8)


def write_png(path: Path, values: np.ndarray) -> None:
    """Write atomically, so that an interrupted run never leaves a half-written mask."""
    temporary = path.with_name(path.stem + ".partial.png")
    cv2.imwrite(str(temporary), values)
    os.replace(temporary, path)


def low_resolution_side(name: str) -> int:
    """The long side (48-96 px) the ``lo`` variant of photo ``name`` is reduced to, fixed per name."""
    return 48 + zlib.crc32(name.encode()) % 49


@one_line_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", type=Path, help="the IS-Net ONNX file")
    parser.add_argument("data", type=Path, help="DUTS-TR folder (images/, masks/)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", choices=("held-out", "train"), default="held-out")
    parser.add_argument("--limit", type=int, default=1200, help="training photos (--split train)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not args.onnx.is_file():
        raise SystemExit(f"{args.onnx}: no such file; the IS-Net ONNX is not shipped, ../shared/data/README.md "
                         "(carvana-dev-real) says where it comes from")
    masker = NetworkMasker(args.onnx, args.threads)
    train, held_out = split_pairs(list_pairs(args.data))
    written = 0
    if args.split == "held-out":
        args.out.mkdir(parents=True, exist_ok=True)
        for pair in held_out:
            target = args.out / f"{pair.name}_seg.png"
            if target.exists():
                continue
            image, gt = load_pair(pair)
            cv2.imwrite(str(args.out / f"{pair.name}_im.png"), image[:, :, ::-1])
            cv2.imwrite(str(args.out / f"{pair.name}_gt.png"), np.round(gt * 255).astype(np.uint8))
            write_png(target, masker.mask(image))
            written += 1
    else:
        for variant in ("hi", "lo"):
            (args.out / variant).mkdir(parents=True, exist_ok=True)
        order = list(train)
        random.Random(5).shuffle(order)
        for pair in order[: args.limit]:
            image = None
            for variant, side in (("hi", None), ("lo", low_resolution_side(pair.name))):
                target = args.out / variant / f"{pair.name}.png"
                if target.exists():
                    continue
                if image is None:
                    image, _ = load_pair(pair)
                write_png(target, masker.mask(image, side))
                written += 1
    print(f"wrote {written} masks under {args.out}")


if __name__ == "__main__":
    main()
