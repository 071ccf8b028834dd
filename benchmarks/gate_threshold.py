"""Choose a weights file's unsure-change threshold (``FinalStage.min_change_confidence``).

Each set is refined with ``auto`` and the gate off, and each image is also scored as the gate would
leave it, with every change refused: its coarse mask, or for the images where a region pass ran
the coarse mask with the pass's corrections (only those are refined a second time). Each image's
``change_confidence`` then says which of the two results the gate would give at any threshold, so
one table per set shows the dataset IoU / mBA, the images kept and the images more than 1 point
below coarse for every threshold, exactly as ``crm eval`` would report them.

    python benchmarks/gate_threshold.py --weights weights/crm_mobilenet_v2_thin.safetensors \\
        thin=DIR/thin duts=DIR/duts-heldout [--thresholds 0.3,0.4,0.45,0.5,0.55]

A set is ``NAME=FOLDER`` in BIG layout (``*_im``, ``*_seg``, ``*_gt``). Write the chosen value into
the weights' sidecar as ``"final_stage": {"min_change_confidence": T}``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from crm_cli.engine import Refiner
from crm_cli.evaluation import Evaluation, evaluate, folder_samples
from crm_cli.masks import mask_to_float
from crm_cli.metrics import DatasetScore, ImageScore, score_pair
from crm_cli.outputs import render_output
from crm_cli.pairing import FilePair, find_pairs

# Above any confidence (they lie in [0, 1]): every image that changed keeps its coarse mask.
REFUSE_ALL = 2.0


def coarse_kept_scores(refiner: Refiner, pairs: Sequence[FilePair], ungated: Evaluation) -> list[ImageScore]:
    """Each image's score with every change refused, in the order of ``ungated`` (``pairs`` evaluated).

    The gate keeps the mask the final stage started from: the coarse mask itself (scored here
    without the model), or, where a region pass ran, the coarse mask with its corrections (those
    images are refined again with the gate refusing everything).
    """
    with_regions = {image["name"] for image in ungated.images if "regions" in image["schedule"]}
    refused: dict[str, ImageScore] = {}
    if with_regions:
        base = refiner.final_stage
        refiner.final_stage = dataclasses.replace(base, min_change_confidence=REFUSE_ALL)
        try:
            run = evaluate(refiner, folder_samples([pair for pair in pairs if pair.name in with_regions]))
        finally:
            refiner.final_stage = base
        refused = {score.name: score for score in run.refined.images}
    for sample in folder_samples([pair for pair in pairs if pair.name not in with_regions]):
        kept = render_output("soft", mask_to_float(sample.coarse))  # what refine_detailed returns when it keeps
        refused[sample.name] = score_pair(kept, sample.gt, sample.name)
    return [refused[image["name"]] for image in ungated.images]


def gated(ungated: Evaluation, kept_scores: Sequence[ImageScore], threshold: float) -> tuple[DatasetScore, int]:
    """The refined scores the gate at ``threshold`` gives, and how many images it keeps coarse.

    ``ungated``: the samples evaluated with the gate off; ``kept_scores``: their scores with every
    change refused (:func:`coarse_kept_scores`).
    """
    score, kept = DatasetScore(), 0
    for image, taken, coarse in zip(ungated.images, ungated.refined.images, kept_scores, strict=True):
        confidence = image["change_confidence"]
        if confidence is not None and confidence < threshold:
            score.add(coarse)
            kept += 1
        else:
            score.add(taken)
    return score, kept


def points_below(score: DatasetScore, coarse: DatasetScore) -> tuple[int, int]:
    """Images more than 1 point below their coarse mask: (in IoU, in mBA)."""
    iou = sum(1 for a, c in zip(score.images, coarse.images, strict=True) if a.iou < c.iou - 0.01)
    mba = sum(1 for a, c in zip(score.images, coarse.images, strict=True)
              if a.mba is not None and c.mba is not None and a.mba < c.mba - 0.01)
    return iou, mba


def sweep(refiner: Refiner, folder: Path, thresholds: Sequence[float]) -> list[str]:
    """Markdown rows, one per threshold, for one BIG-layout folder."""
    pairs = [pair for pair in find_pairs(folder)[0] if pair.gt is not None]
    if not pairs:
        raise SystemExit(f"{folder}: no image/mask/GT triples")
    base = refiner.final_stage
    refiner.final_stage = dataclasses.replace(base, min_change_confidence=0.0)
    try:
        ungated = evaluate(refiner, folder_samples(pairs))
    finally:
        refiner.final_stage = base
    kept_scores = coarse_kept_scores(refiner, pairs, ungated)
    rows = [f"| coarse | {100 * ungated.coarse.iou:.2f} / {100 * (ungated.coarse.mba or 0):.2f} | | |"]
    for threshold in thresholds:
        score, kept = gated(ungated, kept_scores, threshold)
        below = points_below(score, ungated.coarse)
        mark = " (the weights')" if threshold == base.min_change_confidence else ""
        rows.append(f"| {threshold:g}{mark} | {100 * score.iou:.2f} / {100 * (score.mba or 0):.2f} | {kept} of "
                    f"{len(pairs)} | {below[0]} / {below[1]} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    parser.add_argument("--thresholds", default="0,0.3,0.35,0.4,0.45,0.5,0.55,0.6")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    refiner = Refiner(args.weights, device=args.device)
    for spec in args.sets:
        name, _, folder = spec.partition("=")
        print(f"\n{name} ({folder})\n\n| threshold | IoU / mBA | kept | images −1 pt IoU / mBA |\n|---|---|---|---|")
        print("\n".join(sweep(refiner, Path(folder), thresholds)), flush=True)


if __name__ == "__main__":
    main()
