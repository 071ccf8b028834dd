"""Which side of the ground truth a refiner's errors lie on, near its boundary or far from it.

A mask's wrong pixels are either added (outside the ground truth) or removed (inside it), and
either near the ground truth's boundary (within ``--far`` px: the boundary drawn a little off) or
far from it (whole regions: background letters taken in, a window punched out of a car). IoU and
mBA mix these; a model change that trades one kind for another shows here.

    python benchmarks/error_sides.py FOLDER --pred default=OUT_A --pred candidate=OUT_B [--far 5]

FOLDER is in BIG layout (``*_gt`` ground truths); each ``--pred NAME=DIR`` holds refined masks of its
pairs (``crm eval FOLDER -o DIR``). The table gives, per mask kind, the mean pixels per image of each
kind of error; with two or more, the images whose far errors differ most from the first kind's are
listed under it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from named_sets import named_folders
from script_errors import one_line_errors

from crm_cli.guard import boundary_distance
from crm_cli.imageio import read_mask
from crm_cli.masks import binarize
from crm_cli.pipeline import fit_masks_for_scoring
from crm_cli.score_pairs import ScorePair, scan_predictions

FAR_PX = 5.0


@dataclass(frozen=True)
class ErrorSides:
    """Wrong pixels of one mask against its ground truth, by side and distance from the ground truth's boundary."""

    added_near: int
    added_far: int
    removed_near: int
    removed_far: int


def error_sides(pred: np.ndarray, gt: np.ndarray, far: float = FAR_PX) -> ErrorSides:
    """Count ``pred``'s wrong pixels against ``gt`` (both (H, W), any mask dtype, binarised as scores
    are): added pixels lie outside the ground truth, removed ones inside it; a pixel is far when its
    distance to the nearest pixel of the ground truth's other side is more than ``far`` px (with no
    other side, an empty or full ground truth, every wrong pixel is far)."""
    pred_b, gt_b = binarize(pred), binarize(gt)
    if pred_b.shape != gt_b.shape or pred_b.ndim != 2:
        raise ValueError(f"masks of one (H, W) size are needed, got {pred_b.shape} and {gt_b.shape}")
    return count_sides(pred_b, gt_b, far_from_boundary(gt_b, far))


def far_from_boundary(gt: np.ndarray, far: float) -> np.ndarray:
    """Bool (H, W): the pixels of a binary ground truth more than ``far`` px from its other side."""
    return boundary_distance(gt) > far


def count_sides(pred: np.ndarray, gt: np.ndarray, is_far: np.ndarray) -> ErrorSides:
    """:func:`error_sides` of binary masks, with the ground truth's far pixels already found."""
    added, removed = pred & ~gt, gt & ~pred
    return ErrorSides(added_near=int(np.count_nonzero(added & ~is_far)),
                      added_far=int(np.count_nonzero(added & is_far)),
                      removed_near=int(np.count_nonzero(removed & ~is_far)),
                      removed_far=int(np.count_nonzero(removed & is_far)))


def image_sides(gt_path: Path, pred_paths: dict[str, Path], far: float) -> dict[str, ErrorSides]:
    """Each kind's :func:`error_sides` on one image: the ground truth is read, and its distances found, once
    for all kinds; each prediction is fitted to it as ``crm score`` fits them. The fit's reading notes are
    not shown: on ``crm eval -o`` outputs they would only say, mask by mask, that a soft mask is soft."""
    gt_mask = read_mask(gt_path)
    far_maps: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
    sides = {}
    for kind, pred_path in pred_paths.items():
        pred, gt, _ = fit_masks_for_scoring(read_mask(pred_path), gt_mask, str(pred_path), str(gt_path))
        pred_b = binarize(pred.scoring_values())
        if pred_b.shape not in far_maps:  # a prediction larger than the ground truth has it upsampled
            gt_b = binarize(gt.scoring_values())
            far_maps[pred_b.shape] = gt_b, far_from_boundary(gt_b, far)
        sides[kind] = count_sides(pred_b, *far_maps[pred_b.shape])
    return sides


def mean_sides(rows: list[ErrorSides]) -> dict[str, float]:
    """Each kind of error's mean pixels per image."""
    values = [asdict(row) for row in rows]
    return {key: float(np.mean([row[key] for row in values])) for key in values[0]}


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Print the table (and the images that differ most); write every count with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="BIG-layout folder (*_gt ground truths)")
    parser.add_argument("--pred", action="append", required=True, metavar="NAME=DIR",
                        help="refined masks of the folder's pairs (crm eval FOLDER -o DIR); repeatable")
    parser.add_argument("--far", type=float, default=FAR_PX,
                        help=f"px from the ground truth's boundary (default {FAR_PX:g})")
    parser.add_argument("--top", type=int, default=5, help="images listed per kind after the first (default 5)")
    parser.add_argument("--json", dest="json_path", type=Path, help="also write every image's counts here")
    args = parser.parse_args(argv)
    if not args.far >= 0:
        raise SystemExit(f"--far must be a distance of 0 px or more, not {args.far}")
    kinds = dict(named_folders(args.pred, "--pred"))
    if len(kinds) < len(args.pred):
        raise SystemExit("--pred: each NAME once")

    found: dict[str, dict[str, ScorePair]] = {}
    for kind, folder in kinds.items():
        pairing = scan_predictions(folder, args.folder)
        for problem in pairing.problems:  # a ground truth without its refined mask: left out, and said
            print(f"warning: {problem}", file=sys.stderr)
        if not pairing.pairs:
            raise SystemExit(f"{folder}: no refined masks of {args.folder}'s ground truths")
        found[kind] = {pair.name: pair for pair in pairing.pairs}
    first, *others = list(found)
    names = list(found[first])  # in the pairing's order
    for kind in others:
        if found[kind].keys() != found[first].keys():
            raise SystemExit(f"{kinds[kind]}: refined masks of other images than the first --pred's "
                             f"({len(found[kind])} against {len(names)})")
    per_image = {name: image_sides(found[first][name].gt, {kind: found[kind][name].pred for kind in found},
                                   args.far) for name in names}
    counts = {kind: {name: per_image[name][kind] for name in names} for kind in found}

    print(f"mean wrong pixels per image, far = more than {args.far:g} px from the ground truth's boundary")
    print("| masks | images | added near | added far | removed near | removed far |")
    print("|---|---|---|---|---|---|")
    for kind, rows in counts.items():
        mean = mean_sides(list(rows.values()))
        print(f"| {kind} | {len(rows)} | {mean['added_near']:.0f} | {mean['added_far']:.0f} | "
              f"{mean['removed_near']:.0f} | {mean['removed_far']:.0f} |")
    for kind in others:
        change = {name: (counts[kind][name].added_far - counts[first][name].added_far,
                         counts[kind][name].removed_far - counts[first][name].removed_far) for name in names}
        for label, side in (("added far", 0), ("removed far", 1)):
            worst = sorted(change, key=lambda name: change[name][side], reverse=True)[: args.top]
            listed = ", ".join(f"{name} {change[name][side]:+d}" for name in worst if change[name][side] > 0)
            print(f"{kind}, most {label} px against {first}: {listed or 'none'}")
    if args.json_path is not None:
        images = {kind: {name: asdict(sides) for name, sides in rows.items()} for kind, rows in counts.items()}
        args.json_path.write_text(json.dumps({"far_px": args.far, "images": images}, indent=1) + "\n")


if __name__ == "__main__":
    main()
