"""Write the DUTS-TR held-out split (every 20th pair, never trained on) as a BIG-layout folder.

Coarse masks (``--coarse``), each seeded per image so that a folder is the same every time:

* ``paper`` (default): the training recipe's perturbation (DESIGN §3) with the per-image seed of
  training.data.synthetic_coarse (as ``heldout_val.py`` and training-time validation), so ``crm eval``
  on the folder reproduces their coarse scores;
* ``lowres``: a low-resolution network's mask, the GT on a grid of 40-72 cells along its long side
  with smooth noise (carvana-dev's recipe, ``training.coarse.lowres_coarse``);
* ``blocky``: the GT averaged over 8x8 blocks, thresholded, and enlarged back by nearest neighbour.

    python benchmarks/make_heldout_val.py ../shared/data/duts-tr OUT [--coarse lowres]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from script_errors import one_line_errors

from crm_cli.training.coarse import lowres_coarse
from crm_cli.training.data import list_pairs, load_pair, split_pairs, synthetic_coarse

COARSE_KINDS = ("paper", "lowres", "blocky")
LOWRES_SEED = 8
LOWRES_CELLS = (40.0, 72.0)
BLOCK_PX = 8


def blocky_coarse(gt: np.ndarray, block: int = BLOCK_PX) -> np.ndarray:
    """float32 {0, 1}: the soft GT averaged over ``block``-px cells, thresholded at 0.5, enlarged back
    by nearest neighbour to the GT's size."""
    height, width = gt.shape
    small = cv2.resize(gt.astype(np.float32), (max(1, width // block), max(1, height // block)),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize((small > 0.5).astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)


def heldout_coarse(gt: np.ndarray, index: int, kind: str) -> np.ndarray:
    """The coarse mask of the ``index``-th held-out pair for one of ``COARSE_KINDS`` (float in [0, 1])."""
    if kind == "paper":
        return synthetic_coarse(gt, index)
    if kind == "lowres":
        return lowres_coarse(gt, np.random.default_rng([LOWRES_SEED, index]), LOWRES_CELLS)
    if kind == "blocky":
        return blocky_coarse(gt)
    raise ValueError(f"unknown coarse kind {kind!r}; expected one of {', '.join(COARSE_KINDS)}")


@one_line_errors
def main() -> None:
    """Write OUT/<name>_im.png, <name>_gt.png (soft 8-bit) and <name>_seg.png (binary 0/255)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--coarse", choices=COARSE_KINDS, default="paper")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _, held_out = split_pairs(list_pairs(args.data))
    for k, pair in enumerate(held_out):
        image, gt = load_pair(pair)
        coarse = heldout_coarse(gt, k, args.coarse)
        cv2.imwrite(str(args.out / f"{pair.name}_im.png"), image[:, :, ::-1])
        cv2.imwrite(str(args.out / f"{pair.name}_gt.png"), np.round(gt * 255).astype(np.uint8))
        cv2.imwrite(str(args.out / f"{pair.name}_seg.png"), np.round(coarse * 255).astype(np.uint8))
    print(f"wrote {len(held_out)} triples to {args.out}")


if __name__ == "__main__":
    main()
