"""Write the synthetic thin-structure validation set: BIG-layout triples with SAM-like coarse masks.

Composites of wires, fences, railings, spokes, straps, hair, text and sharp polygons (see
``crm_cli.training.synthesis``) at 1024-2048 px on the long side, with textures and backgrounds
taken only from the DUTS-TR pairs held out from training (every 20th pair in sorted order). Each
coarse mask is SAM-like (``crm_cli.training.coarse.sam_like_coarse``) with a logit cell of
long side / 256 px, as SAM's 256x256 mask decoder has. Fixed seed: the same command writes the same
files. Output: OUT/<name>_im.jpg, <name>_gt.png (soft 8-bit GT, binarised at 128 by the scorers),
<name>_seg.png (0/255) and OUT/manifest.json.

    python benchmarks/make_thin_val.py ../shared/data/duts-tr OUT [--n 48] [--seed 11]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from script_errors import one_line_errors

from crm_cli.metrics import DatasetScore, score_pair
from crm_cli.training.coarse import sam_like_coarse
from crm_cli.training.data import PairCache, list_pairs, split_pairs
from crm_cli.training.synthesis import THIN_KINDS, composite

ASPECTS = (1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3)
# The first layer is an object (a held-out DUTS foreground, a bag, a polygon) that thin layers cross.
ANCHOR = {"paste": 2.0, "straps": 0.5, "polygons": 0.5}


def make_triple(index: int, seed: int, library: PairCache, min_side: int,
                max_side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Image, soft GT, SAM-like coarse mask (float32 {0, 1}) and the kinds drawn, for one index."""
    rng = np.random.default_rng([seed, index])
    long_side = int(rng.integers(min_side, max_side + 1))
    aspect = ASPECTS[int(rng.integers(0, len(ASPECTS)))]
    if aspect >= 1:
        width, height = long_side, round(long_side / aspect)
    else:
        height, width = long_side, round(long_side * aspect)
    sample = composite(rng, library, height, width, kinds=THIN_KINDS, layers=(2, 3),
                       width_scale=long_side / 1024, supersample=2, anchor=ANCHOR)
    coarse = sam_like_coarse(sample.gt, rng, sample.image, cell=long_side / 256)
    return sample.image, sample.gt, coarse, sample.kinds


def write_triple(image: np.ndarray, gt: np.ndarray, coarse: np.ndarray, image_path: Path, gt_path: Path,
                 coarse_path: Path) -> None:
    """Write a composite as the sets keep it: JPEG quality 95, the soft GT as 8-bit PNG, the coarse
    mask as a 0/255 PNG."""
    cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    cv2.imwrite(str(gt_path), np.clip(np.rint(gt * 255), 0, 255).astype(np.uint8))
    cv2.imwrite(str(coarse_path), (coarse * 255).astype(np.uint8))


@one_line_errors
def main() -> None:
    """Generate the set and print the coarse masks' IoU/mBA."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="DUTS-TR folder (images/, masks/)")
    parser.add_argument("out", type=Path, help="output folder (BIG layout)")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--min-side", type=int, default=1024)
    parser.add_argument("--max-side", type=int, default=2048)
    args = parser.parse_args()
    _, held_out = split_pairs(list_pairs(args.data))
    library = PairCache(held_out)
    args.out.mkdir(parents=True, exist_ok=True)
    scores = DatasetScore()
    manifest = {"command": " ".join(sys.argv), "seed": args.seed, "held_out_pairs": len(held_out), "images": []}
    for index in range(args.n):
        image, gt, coarse, kinds = make_triple(index, args.seed, library, args.min_side, args.max_side)
        name = f"thin{index:03d}"
        write_triple(image, gt, coarse, args.out / f"{name}_im.jpg", args.out / f"{name}_gt.png",
                     args.out / f"{name}_seg.png")
        score = score_pair(coarse, gt, name)
        scores.add(score)
        manifest["images"].append({"name": name, "size": [image.shape[1], image.shape[0]], "kinds": kinds,
                                   "coarse_iou": score.iou, "coarse_mba": score.mba})
        print(f"{name} {image.shape[1]}x{image.shape[0]} {'+'.join(kinds)}: coarse IoU {100 * score.iou:.2f}"
              f" mBA {100 * (score.mba or 0):.2f}", file=sys.stderr, flush=True)
    manifest["coarse"] = {"iou": scores.iou, "mba": scores.mba}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps({"n": args.n, "out": str(args.out), "coarse_iou": scores.iou, "coarse_mba": scores.mba}))


if __name__ == "__main__":
    main()
