"""What the pipeline allows on a dev set: its final stage replaced by the ground truth.

Each photo is refined as ``crm eval`` refines it (the schedule, the region pass, the guard, the
gate and the edge snap as shipped), except that the stage decoded at the photo's own size, the
final one, answers with the ground truth instead of the model. The refined score is then what a
perfect final stage would reach through everything around it: when it is far above the target, the
model, not the pipeline, is what holds a set back. The region pass keeps the model's own stages
(it decodes at its working size), so its mistakes still count.

    python benchmarks/pipeline_ceiling.py thin=DIR/thin carvana-dev=DIR/carvana-dev [--weights W] [--no-snap]

A set is ``NAME=FOLDER`` in BIG layout (``*_im``, ``*_seg``, ``*_gt``). Prints one row per set:
coarse, ceiling, and how many images the gate kept coarse even so.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from named_sets import named_folders
from script_errors import one_line_errors

from crm_cli.engine import Refiner
from crm_cli.evaluation import Evaluation, Sample, evaluate, folder_samples
from crm_cli.masks import binarize
from crm_cli.pairing import scan_pairs
from crm_cli.presets import get_preset
from crm_cli.stage_geometry import StageTiming


class TruthAtFullSize:
    """A stage runner that answers its full-size stages with ``truth`` and delegates the rest.

    Under the default settings only the final stage is decoded at the photo's size (the coarse
    stages decode at the next stage's, the region pass at its working size)."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.truth: np.ndarray | None = None  # float32 {0, 1} at the photo's size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runner, name)

    def _answer(self, image: np.ndarray, target_hw: tuple[int, int]) -> Any | None:
        """The truth as this runner's stage output, or None for a stage that is not at full size."""
        if self.truth is None or tuple(target_hw) != image.shape[:2]:
            return None
        return self.runner.stage_mask(np.ascontiguousarray(self.truth))

    def _truth_or(self, run_stage: Any, image: np.ndarray, mask: Any, ratio: float, target_hw: tuple[int, int],
                  **options: Any) -> tuple[Any, StageTiming]:
        """:meth:`_answer` for a stage at the photo's size (the model is not run: nothing of it would
        be used), ``run_stage``'s own result for any other."""
        answer = self._answer(image, target_hw)
        if answer is None:
            return run_stage(image, mask, ratio, target_hw, **options)
        return answer, StageTiming(ratio, 0.0, 0.0)

    def _stage(self, *args: Any, **options: Any) -> tuple[Any, StageTiming]:
        return self._truth_or(self.runner._stage, *args, **options)

    def _mirrored_stage(self, *args: Any, **options: Any) -> tuple[Any, StageTiming]:
        return self._truth_or(self.runner._mirrored_stage, *args, **options)


def with_truth(samples: Iterable[Sample], runners: list[TruthAtFullSize]) -> Iterator[Sample]:
    """``samples``, each one's ground truth handed to ``runners`` before it is refined."""
    for sample in samples:
        truth = binarize(sample.gt).astype(np.float32)  # as the scores binarise it
        for runner in runners:
            runner.truth = truth
        yield sample


def truth_refiner(weights: Path | None) -> tuple[Refiner, list[TruthAtFullSize]]:
    """The weights (and their partner) with every runner answering full-size stages with the truth."""
    refiner = Refiner(weights, "cpu")
    runners = []
    for owner in [refiner, *([refiner.partner] if refiner.partner is not None else [])]:
        owner.runner = TruthAtFullSize(owner.runner)
        runners.append(owner.runner)
    return refiner, runners


def ceiling(refiner: Refiner, runners: list[TruthAtFullSize], folder: Path, snap: bool = True) -> Evaluation:
    """The set in ``folder`` evaluated with the truth as its final stage (``snap``: the edge snap on,
    as shipped; off, ``auto`` otherwise unchanged, so the same weights refine each photo)."""
    pairs = [pair for pair in scan_pairs(folder).pairs if pair.gt is not None]
    preset = None if snap else get_preset("auto").overridden(None, snap=False)
    return evaluate(refiner, with_truth(folder_samples(pairs), runners), preset=preset)


@one_line_errors
def main() -> None:
    """Print coarse and ceiling per set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--weights", type=Path, default=None, help="default: the shipped weights")
    parser.add_argument("--no-snap", action="store_true", help="the edge snap off (crm eval --no-snap)")
    args = parser.parse_args()
    sets = named_folders(args.sets, "a set")
    refiner, runners = truth_refiner(args.weights)
    print(f"{'set':<16} {'n':>4} {'coarse IoU/mBA':>16} {'ceiling IoU/mBA':>16} {'kept coarse':>12}")
    for name, folder in sets:
        result = ceiling(refiner, runners, folder, snap=not args.no_snap)
        kept = sum(image["kept_coarse"] for image in result.images)
        print(f"{name:<16} {result.count:>4} {100 * result.coarse.iou:>7.2f} / {100 * (result.coarse.mba or 0):5.2f}"
              f" {100 * result.refined.iou:>7.2f} / {100 * (result.refined.mba or 0):5.2f} {kept:>12}", flush=True)


if __name__ == "__main__":
    main()
