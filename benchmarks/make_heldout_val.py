"""Write the DUTS-TR held-out split (every 20th pair, never trained on) as a BIG-layout folder.

Coarse masks come from the training recipe's perturbation (DESIGN §3) with the per-image seed of
evaluation.synthetic_coarse (as ``heldout_val.py`` and training-time validation), so ``crm eval``
on the folder reproduces their coarse scores.

    python benchmarks/make_heldout_val.py ../shared/data/duts-tr OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from crm_cli.evaluation import synthetic_coarse
from crm_cli.training.data import list_pairs, load_pair, split_pairs


def main() -> None:
    """Write OUT/<name>_im.png, <name>_gt.png (soft 8-bit) and <name>_seg.png (binary 0/255)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _, held_out = split_pairs(list_pairs(args.data))
    for k, pair in enumerate(held_out):
        image, gt = load_pair(pair)
        coarse = synthetic_coarse(gt, k)
        cv2.imwrite(str(args.out / f"{pair.name}_im.png"), image[:, :, ::-1])
        cv2.imwrite(str(args.out / f"{pair.name}_gt.png"), np.round(gt * 255).astype(np.uint8))
        cv2.imwrite(str(args.out / f"{pair.name}_seg.png"), np.round(coarse * 255).astype(np.uint8))
    print(f"wrote {len(held_out)} triples to {args.out}")


if __name__ == "__main__":
    main()
