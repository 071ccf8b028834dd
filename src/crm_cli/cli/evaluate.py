"""``crm eval DIR``: refine a BIG-layout folder and score coarse vs refined (the paper's Table 1)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import (
    JsonOpt,
    QuietOpt,
    RefinerOptions,
    console,
    emit_json,
    fail,
    percent,
    refiner_options,
    say,
    threshold_option,
    user_errors,
    warn,
)

if TYPE_CHECKING:
    import numpy as np

    from ..evaluation import Sample


@refiner_options()
def evaluate(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                           help="BIG-layout folder: <name>_im.*, <name>_seg.*, <name>_gt.*")],
    output_dir: Annotated[Path | None, typer.Option("--output", "-o", file_okay=False,
                                                    help="Also write refined masks as <name>_mask.png.")] = None,
    options: RefinerOptions = RefinerOptions(),
    per_stage: Annotated[bool, typer.Option("--per-stage", help="Also score the output of every stage "
                                            "(decodes each stage at full size, like the paper's Table 5).")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Only the first N pairs (0 = all).")] = 0,
    threshold: Annotated[float | None, threshold_option(
        "Score (and write with -o) the refined masks binarised at probability > T "
        "[default: the 8-bit soft mask, scored > 128].")] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Refine every <name>_im with <name>_seg, score both against <name>_gt, print coarse -> refined."""
    from rich.progress import Progress

    from ..evaluation import evaluate as score_samples
    from ..evaluation import folder_samples
    from ..metrics import DatasetScore
    from ..pairing import find_pairs
    from ..writing import write_png

    settings = options.settings()
    with user_errors():
        pairs, problems = find_pairs(folder)
        pairs = [p for p in pairs if p.gt is not None]
        if problems or not pairs:
            raise fail("; ".join(problems) or f"{folder}: no <name>_gt.* ground truth found")
        if limit:
            pairs = pairs[:limit]
        refiner = options.load(quiet)
    outputs = {pair.name: pair.relative_output for pair in pairs}
    wall_start = time.perf_counter()
    with Progress(console=console, disable=quiet) as progress, user_errors():
        task = progress.add_task("eval", total=len(pairs))

        def announced(samples: Iterator[Sample]) -> Iterator[Sample]:
            for sample in samples:
                for note in sample.notes:
                    warn(note, progress.console)
                yield sample

        def finished(sample: Sample, refined: np.ndarray) -> None:
            if output_dir is not None:
                write_png(output_dir / outputs[sample.name], refined)
            progress.advance(task)

        scores = score_samples(refiner, announced(folder_samples(pairs)), settings, per_stage=per_stage,
                               threshold=threshold, on_sample=finished)
    # Every ratio of the preset gets a row (an image whose schedule skipped a stage adds nothing to it).
    stage_scores = scores.stages + [DatasetScore() for _ in settings.ratios[len(scores.stages):]]
    coarse_scores, refined_scores, refine_seconds = scores.coarse, scores.refined, scores.refine_seconds
    schedules, per_image = scores.schedules, scores.images
    wall = time.perf_counter() - wall_start
    summary = {
        "n": len(pairs),
        "ratios": list(settings.ratios), "preset": options.preset_name, "guard": settings.guard,
        "threshold": threshold,
        "schedules": dict(schedules.most_common()),
        "kept_coarse": sum(image["kept_coarse"] for image in per_image),
        "device": refiner.device_name,
        "coarse": {"iou": coarse_scores.iou, "mba": coarse_scores.mba},
        "refined": {"iou": refined_scores.iou, "mba": refined_scores.mba},
        "delta": {"iou": refined_scores.iou - coarse_scores.iou,
                  "mba": (refined_scores.mba or 0.0) - (coarse_scores.mba or 0.0)},
        "seconds_total": round(wall, 3),
        "seconds_refine": round(refine_seconds, 3),
        "seconds_per_image": round(refine_seconds / len(pairs), 3),
    }
    if per_stage:
        summary["stages"] = [{"ratio": r, "iou": s.iou, "mba": s.mba} for r, s in zip(settings.ratios, stage_scores,
                                                                                       strict=True)]
    say(
        f"{folder.name}: n={len(pairs)}  IoU/mBA  coarse {percent(coarse_scores.iou)}/{percent(coarse_scores.mba)}"
        f"  ->  refined{'' if threshold is None else f' (p > {threshold:g})'} "
        f"{percent(refined_scores.iou)}/{percent(refined_scores.mba)}"
        f"  (ΔIoU {100 * summary['delta']['iou']:+.2f}, ΔmBA {100 * summary['delta']['mba']:+.2f})"
    )
    console.print("stages: " + ", ".join(f"{name} x{count}" for name, count in schedules.most_common())
                  + f"; coarse mask kept (model unsure) x{summary['kept_coarse']}", highlight=False)
    if per_stage:
        for stage in summary["stages"]:
            console.print(f"  after s={stage['ratio']:g}: {percent(stage['iou'])}/{percent(stage['mba'])}",
                          highlight=False)
    say(f"time: {refine_seconds:.1f} s refining ({summary['seconds_per_image']:.2f} s/image), "
        f"{wall:.1f} s total, on {refiner.device_name}")
    if json_out:
        summary["images"] = per_image
        emit_json(summary)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("eval", short_help="Refine a BIG-layout folder; print coarse -> refined IoU/mBA.")(evaluate)
