"""Write a training folder of photos plus thin-structure composites at the thin set's own scale.

Session 47's recipe (README, *Training*): the composites of ``make_thin_val.py`` (1024-2048 px on
the long side, SAM-like coarse masks with a logit cell of long side / 256 px), but with textures and
backgrounds from the DUTS-TR pairs *kept for training* (the thin set takes only held-out ones) and
another seed. Output:

- OUT/data/images, OUT/data/masks: every DUTS-TR pair (symbolic links to the files) and the
  composites ``zz_thin_NNNN`` (JPEG quality 95, 8-bit soft GT). Their names sort after DUTS-TR's, so
  ``crm train``'s every-20th held-out split keeps DUTS-TR's own held-out pairs.
- OUT/coarse: each composite's SAM-like coarse mask, ``zz_thin_NNNN.png`` (0/255), for
  ``crm train --network-masks OUT/coarse`` with the mix's ``network`` mode.

The same command writes the same files.

    python benchmarks/make_thin_train.py ../shared/data/duts-tr OUT [--n 400] [--seed 47]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from make_thin_val import make_triple, write_triple
from script_errors import one_line_errors

from crm_cli.pairing import FilePair
from crm_cli.training.data import PairCache, list_pairs, split_pairs

PREFIX = "zz_thin_"


def link_pairs(pairs: list[FilePair], data: Path) -> None:
    """Symbolic links to every pair's image and mask under data/images and data/masks."""
    for pair in pairs:
        for source, sub in ((pair.image, "images"), (pair.mask, "masks")):
            link = data / sub / source.name
            if not link.is_symlink() and not link.exists():
                os.symlink(source.resolve(), link)


@one_line_errors
def main() -> None:
    """Link the photos, draw the composites and print the ``crm train`` arguments that use them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="DUTS-TR folder (images/, masks/)")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--n", type=int, default=400, help="composites to draw")
    parser.add_argument("--seed", type=int, default=47)
    parser.add_argument("--min-side", type=int, default=1024)
    parser.add_argument("--max-side", type=int, default=2048)
    args = parser.parse_args()
    pairs = list_pairs(args.data)
    if any(pair.name.startswith(PREFIX) for pair in pairs):
        raise SystemExit(f"{args.data} already holds {PREFIX}* pairs: give the photos' own folder")
    training, _ = split_pairs(pairs)
    library = PairCache(training)
    data, coarse_dir = args.out / "data", args.out / "coarse"
    for folder in (data / "images", data / "masks", coarse_dir):
        folder.mkdir(parents=True, exist_ok=True)
    link_pairs(pairs, data)
    for index in range(args.n):
        image, gt, coarse, kinds = make_triple(index, args.seed, library, args.min_side, args.max_side)
        name = f"{PREFIX}{index:04d}"
        write_triple(image, gt, coarse, data / "images" / f"{name}.jpg", data / "masks" / f"{name}.png",
                     coarse_dir / f"{name}.png")
        print(f"{name} {image.shape[1]}x{image.shape[0]} {'+'.join(kinds)}", file=sys.stderr, flush=True)
    print(json.dumps({"pairs": len(pairs), "composites": args.n, "data": str(data), "network_masks": str(coarse_dir),
                      "train_args": f"--data {data} --network-masks {coarse_dir} --synthetic 0 "
                                    "--coarse-mix paper=0.5,network=0.5 --zoom 1.5"}))


if __name__ == "__main__":
    main()
