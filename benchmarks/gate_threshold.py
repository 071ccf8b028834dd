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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from named_sets import named_folders
from script_errors import one_line_errors

from crm_cli.engine import Refiner
from crm_cli.evaluation import Evaluation, Sample, evaluate, folder_samples
from crm_cli.imageio import probe_image
from crm_cli.masks import mask_to_float
from crm_cli.metrics import DatasetScore, ImageScore, score_pair
from crm_cli.outputs import render_output
from crm_cli.pairing import FilePair, scan_pairs

# Above any confidence (they lie in [0, 1]): every image that changed keeps its coarse mask.
REFUSE_ALL = 2.0


def evaluate_at(refiner: Refiner, pairs: Sequence[FilePair], threshold: float,
                on_sample: Callable[[Sample, np.ndarray], None] | None = None) -> Evaluation:
    """``pairs`` evaluated with the gate at ``threshold``; the weights' own is restored after."""
    base = refiner.final_stage
    refiner.final_stage = dataclasses.replace(base, min_change_confidence=threshold)
    try:
        return evaluate(refiner, folder_samples(pairs), on_sample=on_sample)
    finally:
        refiner.final_stage = base


def kept_coarse_score(sample: Sample) -> ImageScore:
    """The score of what ``refine_detailed`` returns when the gate keeps the coarse mask and no
    region pass ran: the coarse mask itself, no model needed."""
    return score_pair(render_output("soft", mask_to_float(sample.coarse)), sample.gt, sample.name)


def ungated_run(refiner: Refiner, pairs: Sequence[FilePair]) -> tuple[Evaluation, dict[str, ImageScore]]:
    """``pairs`` evaluated with the gate off, and each image's :func:`kept_coarse_score` by name,
    from the same reading of the files."""
    coarse: dict[str, ImageScore] = {}

    def score_coarse(sample: Sample, _refined: np.ndarray) -> None:
        coarse[sample.name] = kept_coarse_score(sample)

    return evaluate_at(refiner, pairs, 0.0, on_sample=score_coarse), coarse


def coarse_kept_scores(refiner: Refiner, pairs: Sequence[FilePair], ungated: Evaluation,
                       coarse_scores: Mapping[str, ImageScore]) -> list[ImageScore]:
    """Each image's score with every change refused, in the order of ``ungated`` (``pairs`` evaluated).

    The gate keeps the mask the final stage started from: the coarse mask itself
    (``coarse_scores``, from :func:`ungated_run`), or, where a region pass ran, the coarse mask with
    its corrections (those images are refined again with the gate refusing everything).
    """
    region_names = {image["name"] for image in ungated.images if "regions" in image["schedule"]}
    with_regions = [pair for pair in pairs if pair.name in region_names]
    refused = dict(coarse_scores)
    if with_regions:
        refused.update({score.name: score for score in evaluate_at(refiner, with_regions, REFUSE_ALL).refined.images})
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
    pairs = [pair for pair in scan_pairs(folder).pairs if pair.gt is not None]
    if not pairs:
        raise SystemExit(f"{folder}: no image/mask/GT triples")
    weights_threshold = refiner.final_stage.min_change_confidence
    # The partner gates the photos it refines at its own threshold, which this sweep does not move:
    # found from the headers (auto gives the partner the photos under its side) before any refinement.
    small = sum(1 for pair in pairs if max(probe_image(pair.image).shape) < refiner.partner_below_side)
    if small:
        partner = refiner.partner_weights_info.path
        raise SystemExit(f"{folder}: {small} of {len(pairs)} photos are refined by the weights' partner "
                         f"({partner}, photos under {refiner.partner_below_side} px), whose gate keeps its own "
                         f"threshold; sweep it with --weights {partner}")
    ungated, coarse_scores = ungated_run(refiner, pairs)
    kept_scores = coarse_kept_scores(refiner, pairs, ungated, coarse_scores)
    rows = [f"| coarse | {100 * ungated.coarse.iou:.2f} / {100 * (ungated.coarse.mba or 0):.2f} | | |"]
    for threshold in thresholds:
        score, kept = gated(ungated, kept_scores, threshold)
        below = points_below(score, ungated.coarse)
        mark = " (the weights')" if threshold == weights_threshold else ""
        rows.append(f"| {threshold:g}{mark} | {100 * score.iou:.2f} / {100 * (score.mba or 0):.2f} | {kept} of "
                    f"{len(pairs)} | {below[0]} / {below[1]} |")
    return rows


@one_line_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    parser.add_argument("--thresholds", default="0,0.3,0.35,0.4,0.45,0.5,0.55,0.6")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    sets = named_folders(args.sets, "a set")
    refiner = Refiner(args.weights, device=args.device)
    for name, folder in sets:
        print(f"\n{name} ({folder})\n\n| threshold | IoU / mBA | kept | images −1 pt IoU / mBA |\n|---|---|---|---|")
        print("\n".join(sweep(refiner, folder, thresholds)), flush=True)


if __name__ == "__main__":
    main()
