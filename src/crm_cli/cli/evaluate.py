"""``crm eval DIR``: refine a BIG-layout folder and score coarse vs refined (the paper's Table 1)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import MIN_REFINE_SIDE
from ..errors import count_noun, failure_text, no_room_words
from .checks import passthrough_note, precheck_pair, unwritable_reason
from .failures import out_of_memory_message, user_errors
from .options import (
    JsonOpt,
    PhotoBits,
    PhotoBitsOpt,
    QuietOpt,
    RefinerOptions,
    photo_bits_value,
    refiner_options,
    refuse_file_as_folder,
    refuse_standard_output,
    require_existing,
    threshold_option,
)
from .output import (
    FailureRecord,
    console,
    fail,
    finish_run,
    percent,
    report_failure,
    say,
    usage_errors_recorded,
    warn,
)
from .stops import clear_leftover_temp_files

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

    from ..evaluation import Sample


@refiner_options()
def evaluate(
    folder: Annotated[Path, typer.Argument(metavar="FOLDER",
                                           help="BIG-layout folder: <name>_im.*, <name>_seg.*, <name>_gt.*")],
    output_dir: Annotated[Path | None, typer.Option("--output", "-o", metavar="DIR",
                                                    help="Also write refined masks as <name>_mask.png.")] = None,
    options: RefinerOptions = RefinerOptions(),
    per_stage: Annotated[bool, typer.Option("--per-stage", help="Also score the output of every stage "
                                            "(decodes each stage at full size, like the paper's Table 5).")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, metavar="N", help="Only the first N pairs (0 = all).")] = 0,
    threshold: Annotated[float | None, threshold_option(
        "Score (and write with -o) the refined masks binarised at probability > T "
        "[default: the 8-bit soft mask, scored > 128].")] = None,
    photo_bits: PhotoBitsOpt = PhotoBits.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Refine every <name>_im with <name>_seg, score both against <name>_gt, print coarse -> refined.

    A bad pair is reported and left out of the scores, and the rest go on; the exit code is 1 if any failed.
    With -o, a refined mask that cannot be written is reported too, its pair still scored (exit code 1);
    a full disk stops the writing, not the scoring."""
    from rich.progress import Progress

    from ..evaluation import backend_versions, folder_samples
    from ..evaluation import evaluate as score_samples
    from ..pairing import LAYOUT_BIG, LAYOUT_FOLDERS, ground_truth_pairs, scan_pairs, split_output_clashes
    from ..writing import out_of_space, write_png

    failures: list[dict[str, str]] = []

    def failed(name: str, image: Path, error: str, out: Console | None = None) -> None:
        """Record and print one failed pair (even with -q: errors are not progress)."""
        failures.append({"name": name, "image": str(image), "error": error})
        report_failure(f"{name}: ", error, out)

    fatal = FailureRecord(json_out, lambda failure: {"folder": str(folder), **failure, "n": 0,
                                                     "failed": len(failures), "failures": failures})
    # With --json, crm's own usage errors print this record too, as runtime failures do.
    with usage_errors_recorded(fatal):
        require_existing(folder, "'FOLDER'")
        refuse_standard_output(output_dir, "crm eval writes one mask per pair into a folder, not to standard output",
                               "'--output'")
        if output_dir is not None:
            refuse_file_as_folder(output_dir, "'--output'")
        options.check_backend()
        settings = options.settings()
    # FOLDER holding nothing to score (NoPairsError) is a usage error (exit 2), as in batch and score.
    with user_errors(fatal.emit):
        found = scan_pairs(folder, command="crm eval")
    for note in found.notes:
        warn(note)
    # Only the BIG layout names ground truths: in another layout, what its pairing found is beside the point.
    needs = ("crm eval reads the BIG layout: <name>_im.* (the photo), <name>_seg.* (its coarse mask) and "
             "<name>_gt.* (its ground truth) in one folder")
    if found.layout == LAYOUT_FOLDERS:
        raise fatal.fail(f"{folder}: no pairs found; {needs}, not images/ and masks/ folders, which hold no "
                         "ground truths", 2)
    if found.layout != LAYOUT_BIG:
        raise fatal.fail(f"{folder}: no pairs to score; {needs}, not photos with their masks beside them "
                         "(<name>.* + <name>_mask.*), which hold no ground truths: name them <name>_im.* and "
                         "<name>_seg.*, with <name>_gt.* beside them", 2)
    for failure in found.failures:
        failed(failure.name, failure.image, failure.error)
    # Refused in eval's own words, and only where no pair failed: failures make it a runtime failure (exit 1).
    pairs, not_scored = ground_truth_pairs(found, folder, "not scored", None)
    if not pairs and not failures:
        raise fatal.fail(f"{folder}: no pairs found; no <name>_gt.* ground truth beside the <name>_im.* and "
                         "<name>_seg.* files (the BIG layout: the photo, its coarse mask and its ground truth)", 2)
    for note in not_scored:  # the others are scored: say these are not
        warn(note)
    with_ground_truth = pairs
    if limit:
        pairs = pairs[:limit]
    # With -o, refined masks are written by relative path: two outputs that are one file on the output
    # disk (A_mask.png, a_mask.png where it ignores letter case) would overwrite each other, so both fail.
    writable, clashes = split_output_clashes(pairs, output_dir) if output_dir is not None else (pairs, [])
    for clash in clashes:
        failed(clash.name, clash.image, clash.error)
    # Checked before the model loads: the output folder, and each pair's headers, sizes and memory.
    if output_dir is not None and writable and (reason := unwritable_reason(output_dir, folder=True)) is not None:
        raise fatal.fail(reason)
    checked = []
    for pair in writable:
        error, header, small = precheck_pair(pair.image, pair.mask, str(pair.image), str(pair.mask), settings,
                                             options.tile_size, gt=pair.gt)
        if error is not None:
            failed(pair.name, pair.image, error)
        else:
            checked.append(pair)
            if small:  # scored as crm refine and crm batch write it: the coarse mask, unrefined
                warn(passthrough_note(header.width, header.height, str(pair.image),
                                      "its coarse mask is scored (and written) as the refined one"))
    if not checked:
        raise fatal.fail("no pair left to score")
    if output_dir is not None:
        clear_leftover_temp_files((output_dir / pair.relative_output for pair in pairs), quiet)
    by_name = {pair.name: pair for pair in checked}
    # With -o, the masks that could not be written (name, output, error), and once a write found no
    # room (a full disk, a used-up quota: no_room holds its pair's name, folder and error), the masks
    # not tried.
    write_failures: list[dict[str, str]] = []
    not_written: list[dict[str, str]] = []
    no_room: list[tuple[str, Path, OSError]] = []
    with user_errors(fatal.emit):
        refiner = options.load(quiet)
    wall_start = time.perf_counter()
    with Progress(console=console, disable=quiet) as progress:
        task = progress.add_task("eval", total=len(checked))

        def announced(samples: Iterator[Sample]) -> Iterator[Sample]:
            for sample in samples:
                for note in sample.notes:
                    warn(note, progress.console)
                yield sample

        written: set[str] = set()

        def finished(sample: Sample, refined: np.ndarray) -> None:
            # A mask that cannot be written leaves its pair scored: the scores need no file.
            if output_dir is not None:
                target = output_dir / by_name[sample.name].relative_output
                if no_room:  # each write after it would find none either: crm batch stops there too
                    not_written.append({"name": sample.name, "output": str(target)})
                else:
                    try:
                        write_png(target, refined)
                    except OSError as exc:  # ImageWriteError: it names the mask and the reason
                        write_failures.append({"name": sample.name, "output": str(target), "error": str(exc)})
                        report_failure(f"{sample.name}: ", str(exc), progress.console)
                        if out_of_space(exc):
                            no_room.append((sample.name, target.parent, exc))
                    else:
                        written.add(sample.name)
            progress.advance(task)

        def refine_failed(name: str, error: Exception) -> None:
            # Running out of memory reads as in crm refine and crm batch, with its advice.
            message = out_of_memory_message(error) or failure_text(error)
            failed(name, by_name[name].image, message, progress.console)
            progress.advance(task)

        with user_errors(fatal.emit):
            samples = folder_samples(checked, on_error=refine_failed, photo_bits=photo_bits_value(photo_bits))
            scores = score_samples(refiner, announced(samples), settings,
                                   per_stage=per_stage, threshold=threshold, on_sample=finished,
                                   on_error=refine_failed, min_side=MIN_REFINE_SIDE)
    if output_dir is not None:
        # Masks of pairs this run did not write (failed, not written, past --limit) are an earlier run's:
        # crm score of the folder would score them beside this run's.
        stale = [output_dir / pair.relative_output for pair in with_ground_truth
                 if pair.name not in written and (output_dir / pair.relative_output).exists()]
        if stale:
            warn(f"{output_dir}: {count_noun(len(stale), 'refined mask')} of an earlier run, for pairs this run "
                 f"did not write (failed to refine or to write, or past --limit), e.g. {stale[0]}; "
                 f"crm score {output_dir} {folder} would score them too")
    scored = scores.count
    if not scored:
        raise fatal.fail("no pair could be scored")
    # Failures in the order of the pairs, as listed (pairing problems first).
    order = {pair.name: index for index, pair in enumerate(pairs)}
    failures.sort(key=lambda failure: order.get(failure["name"], -1))
    coarse_scores, refined_scores, refine_seconds = scores.coarse, scores.refined, scores.refine_seconds
    schedules, per_image = scores.schedules, scores.images
    wall = time.perf_counter() - wall_start
    summary = {
        "n": scored,
        # Under auto each image has its own stages (see "schedules"): no one list would be true.
        "ratios": None if settings.adaptive else list(settings.ratios), "preset": options.preset_name,
        "guard": settings.guard,
        "keep_given": settings.keep_given,
        "snap": settings.snap,
        "threshold": threshold,
        "schedules": dict(schedules.most_common()),
        "kept_coarse": sum(image["kept_coarse"] for image in per_image),
        # Images the weights' partner refined whole (photos under its side, other presets): 0 without one.
        "by_partner": sum(image["by_partner"] for image in per_image),
        # Images whose lone final stage the weights' lone-stage weights ran: 0 without them.
        "by_lone_stage": sum(image["by_lone_stage"] for image in per_image),
        **backend_versions(refiner),
        "device": refiner.device_name,
        "coarse": {"iou": coarse_scores.iou, "mba": coarse_scores.mba},
        "refined": {"iou": refined_scores.iou, "mba": refined_scores.mba},
        # No ground truth with a boundary: no mBA, and no change of it either.
        "delta": {"iou": refined_scores.iou - coarse_scores.iou,
                  "mba": None if refined_scores.mba is None and coarse_scores.mba is None
                  else (refined_scores.mba or 0.0) - (coarse_scores.mba or 0.0)},
        "seconds_total": round(wall, 3),
        "seconds_refine": round(refine_seconds, 3),
        "seconds_per_image": round(refine_seconds / scored, 3),
        "failed": len(failures),
        "failures": failures,
    }
    if output_dir is not None:  # which masks were written, and which were not (their pairs are scored)
        summary.update({"written": len(written), "write_failures": write_failures, "not_written": not_written})
    if per_stage:
        # One row per stage ratio that ran, over the images that ran it (all of them for fixed ratios).
        summary["stages"] = [{"ratio": ratio, "n": len(stage.images), "iou": stage.iou, "mba": stage.mba}
                             for ratio, stage in sorted(scores.stages_by_ratio.items())]
    say(
        f"{folder.name}: n={scored}  IoU/mBA  coarse {percent(coarse_scores.iou)}/{percent(coarse_scores.mba)}"
        f"  ->  refined{'' if threshold is None else f' (p > {threshold:g})'} "
        f"{percent(refined_scores.iou)}/{percent(refined_scores.mba)}"
        f"  (ΔIoU {100 * summary['delta']['iou']:+.2f}, ΔmBA "
        f"{'-' if summary['delta']['mba'] is None else format(100 * summary['delta']['mba'], '+.2f')})"
    )
    partner_note = f"; refined by the partner weights x{summary['by_partner']}" if refiner.partner is not None else ""
    if refiner.lone_stage is not None:
        partner_note += f"; final stage by the lone-stage weights x{summary['by_lone_stage']}"
    console.print("stages: " + ", ".join(f"{name} x{count}" for name, count in schedules.most_common())
                  + f"; coarse mask kept (model unsure) x{summary['kept_coarse']}{partner_note}", highlight=False)
    if per_stage:
        for stage in summary["stages"]:
            images = "" if stage["n"] == scored else f" ({stage['n']} images)"
            console.print(f"  after s={stage['ratio']:g}: {percent(stage['iou'])}/{percent(stage['mba'])}{images}",
                          highlight=False)
    say(f"time: {refine_seconds:.1f} s refining ({summary['seconds_per_image']:.2f} s/image), "
        f"{wall:.1f} s total, on {refiner.device_name}")
    if output_dir is not None and (write_failures or not_written):
        say(f"refined masks: {len(written)} written to {output_dir}, {len(write_failures)} could not be written"
            + (f", {len(not_written)} not tried after that" if not_written else "") + " (their pairs are scored)")
    for failure in [] if quiet else [*failures, *write_failures]:
        report_failure(f"{failure['name']}: " if failure["name"] else "", failure["error"], prefix="  failed")
    if no_room:  # the error line last, as crm batch's; finish_run then exits 1 after the record
        name, where, error = no_room[0]
        fail(f"{no_room_words(where, error.errno)}: crm eval stopped writing refined masks at {name} ("
             f"{count_noun(len(not_written), 'more pair')} scored, not written); free space, then run the same "
             "command again to write them")
    finish_run({**summary, "images": per_image}, failed=bool(failures or write_failures), json_out=json_out)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("eval", short_help="Refine a BIG-layout folder; print coarse -> refined IoU/mBA.")(evaluate)
