"""``crm score PRED GT``: IoU and mBA of predicted masks against ground truth (DESIGN §4). No torch."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .failures import user_errors
from .options import JsonOpt, require_readable_folder, threshold_option
from .output import FailureRecord, console, finish_run, percent, printable, report_failure, require_stdout, say, warn
from .stops import stop_behind, stops_cleanly

if TYPE_CHECKING:
    import numpy as np

    from ..masks import MaskData
    from ..metrics import DatasetScore, ImageScore
    from ..score_pairs import ScorePair


def _values(mask: MaskData, threshold: float | None = None) -> np.ndarray:
    """Raw mask values for scoring; palette masks give their foreground (index != 0) as booleans.

    With ``threshold`` the values are binarised at > threshold of their full scale instead.
    """
    from ..masks import mask_to_float

    values = mask.scoring_values()
    return values if threshold is None else mask_to_float(values) > threshold


def _score_files(pair: ScorePair, threshold: float | None, warned: set[str]) -> ImageScore:
    """Scores of one prediction file against its ground-truth file; ValueError names both on a size mismatch.

    Warns about a file that looks like a photo and about a mask upsampled to the other's size
    (``pipeline.fit_masks_for_scoring``), each warning once: ``warned`` holds those shown."""
    from ..imageio import read_mask
    from ..masks import SizeMismatchError
    from ..metrics import score_pair
    from ..pipeline import fit_masks_for_scoring

    def show(notes: list[str]) -> None:
        for note in notes:
            if note not in warned:
                warned.add(note)
                warn(note)

    try:
        pred, gt, notes = fit_masks_for_scoring(read_mask(pair.pred), read_mask(pair.gt), str(pair.pred),
                                                str(pair.gt))
    except SizeMismatchError as exc:
        show(exc.notes)  # a photo given as a mask explains the mismatch
        raise
    show(notes)
    return score_pair(_values(pred, threshold), _values(gt), pair.name)


def _print_table(scores: DatasetScore) -> None:
    """Per-image rows, then the dataset row, on stderr."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="IoU and mBA (%)", title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("IoU", justify="right")
    table.add_column("mBA", justify="right")
    for index, image in enumerate(scores.images):
        table.add_row(escape(printable(image.name)), percent(image.iou), percent(image.mba),
                      end_section=index == len(scores.images) - 1)
    label = f"dataset (n={len(scores.images)}"
    if scores.no_boundary:
        label += f", {scores.no_boundary} without GT boundary"
    table.add_row(label + ")", percent(scores.iou), percent(scores.mba), style="bold")
    console.print(table)
    console.print("IoU = sum of intersections / sum of unions; mBA = mean over images with a GT boundary.",
                  style="dim", highlight=False)


def _csv_text(scores: DatasetScore) -> str:
    """One row per image: name, iou, mba (empty when the GT has no boundary), intersection, union."""
    import io

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")  # csv's default, CRLF, breaks line-based shell tools
    writer.writerow(["name", "iou", "mba", "intersection", "union"])
    for image in scores.images:
        writer.writerow([image.name, repr(image.iou), "" if image.mba is None else repr(image.mba),
                         image.intersection, image.union])
    return buffer.getvalue()


def _write_csv(path: Path, scores: DatasetScore) -> None:
    """The rows of :func:`_csv_text` in ``path``, or on stdout for ``-``.
    Written with ``writing.write_atomic``: a failed write leaves an earlier CSV as it was and names ``path``."""
    import sys

    from ..writing import write_atomic

    if str(path) == "-":
        sys.stdout.write(_csv_text(scores))
        sys.stdout.flush()
    else:
        # surrogateescape: a name that is no UTF-8 (read from the folder as escaped bytes) is written
        # back as the bytes it was, as on stdout, where "utf-8" alone refused it and lost every score.
        write_atomic(path, _csv_text(scores).encode("utf-8", "surrogateescape"))


def _check_csv_target(csv_path: Path, inputs: list[tuple[str, Path]]) -> None:
    """Usage error (exit 2) when ``csv_path`` is one of the files to score (``inputs``: (role, file)),
    also through a link or another spelling: writing the CSV there would replace it."""
    from .checks import role_of

    if (found := role_of(csv_path, inputs)) is not None:  # every input exists: a new CSV matches none
        role, match = found
        raise typer.BadParameter(f"{csv_path} is the {role} {match}; writing the CSV there would replace it",
                                 param_hint="'--csv'")


def _score_coco(pred: Path, gt: Path, failures: list[dict[str, Any]]) -> DatasetScore:
    """Per-instance scores of two COCO files, matched by annotation id. An instance that cannot be
    scored, or that has no prediction, is reported now, appended to ``failures`` and left out."""
    from ..coco import load_coco, score_coco

    def failed(failure: dict[str, Any]) -> None:
        failures.append(failure)
        report_failure(f"annotation {failure['id']} (image_id {failure['image_id']!r}): ", failure["error"])

    return score_coco(load_coco(pred, exact_numbers=False), load_coco(gt, exact_numbers=False), on_error=failed)


def _is_coco(path: Path) -> bool:
    return path.suffix.lower() == ".json" and path.is_file()


def score(
    pred: Annotated[Path, typer.Argument(metavar="PRED",
                                         help="Predicted mask file, a folder of them, or a COCO .json file.")],
    gt: Annotated[Path, typer.Argument(metavar="GT", help="Ground-truth mask file or folder (BIG: <name>_gt.png), "
                                                          "or a COCO .json file (instances matched by id).")],
    pred_suffix: Annotated[
        str | None,
        typer.Option("--pred-suffix", metavar="SUFFIX", help="Only pair <name>_gt with <name>SUFFIX (e.g. _seg). "
                                           "Default: try _mask, no suffix, then _seg."),
    ] = None,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", dir_okay=False, allow_dash=True, metavar="FILE",
                     help="Write per-image rows (name,iou,mba,intersection,union); - for stdout."),
    ] = None,
    threshold: Annotated[float | None, threshold_option(
        "Binarise soft predictions at > T of their full scale (default: > 128 of 255); a binary one "
        "(0 and one value, 0/1, label ids) is its object as it is.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Score predicted masks against ground truth: dataset IoU and mBA (boundary accuracy).

    Soft masks are binarised with > 128 on the 8-bit scale (predictions at > T with -t); a mask of 0
    and one value, a 0/1 mask and a label map's ids count every non-zero pixel as the object. IoU is
    sum of intersections / sum of unions.

    mBA is the mean over images of the accuracy in 5 GT boundary bands, as in CascadePSP's evaluation;
    an image whose ground truth has no boundary (empty or full) has no mBA and is left out of that mean.

    A mask that is a smaller copy of the other with the same aspect ratio is upsampled to its size
    (with a warning), as crm eval upsamples a small ground truth.

    In folders, a ground truth without its prediction, or a pair that cannot be read or whose sizes
    differ, is reported and left out of the scores; the exit code is 1 if any failed.

    Two COCO files are scored per instance (crowd regions excluded), each at its image's full size. An
    instance without a prediction of its id, or that cannot be decoded, is reported and left out of the
    scores; the exit code is 1 if any failed.
    """
    failures: list[dict[str, Any]] = []  # COCO instances or folder pairs left out of the scores
    # With --json, a failure that stops the command prints its record, as every other command's does.
    fatal = FailureRecord(json_out, lambda failure: {"pred": str(pred), "gt": str(gt), **failure,
                                                     **({"failed": len(failures), "failures": failures}
                                                        if failures else {})})

    def pair_failed(name: str, pred_file: Path | None, gt_file: Path, error: str) -> None:
        """Record one pair left out of the scores and print its own `failed:` line, as crm eval does."""
        failures.append({"name": name, "pred": None if pred_file is None else str(pred_file), "gt": str(gt_file),
                         "error": error})
        report_failure(f"{name}: ", error)

    csv_stdout = csv_path is not None and str(csv_path) == "-"
    if csv_stdout and json_out:
        raise typer.BadParameter("- (stdout) cannot go with --json, whose record is written there; give a file name",
                                 param_hint="'--csv'")
    if csv_stdout:
        require_stdout("--csv -")
    with stops_cleanly(), user_errors(fatal.emit):
        from rich.progress import track

        from ..metrics import DatasetScore

        coco_files = _is_coco(pred) or _is_coco(gt)
        if coco_files and not (_is_coco(pred) and _is_coco(gt)):
            raise typer.BadParameter("a COCO file is scored against another COCO file: give two .json files")
        if coco_files and threshold is not None:
            raise typer.BadParameter("--threshold applies to mask files; COCO masks are already binary")
        for given, hint in ((pred, "'PRED'"), (gt, "'GT'")):
            require_readable_folder(given, hint)  # unreadable, it would read as one holding nothing
        if pred_suffix is not None and (coco_files or (pred.is_file() and not gt.is_dir())):
            # It picks a prediction for each ground truth in a PRED folder; a file is scored as given
            # (against a GT folder, that pairing's own error says what is wrong).
            raise typer.BadParameter(f"it names predictions in a PRED folder, and PRED {pred} is a "
                                     f"{'COCO file' if coco_files else 'file'}", param_hint="'--pred-suffix'")
        from ..pairing import Pairing  # lazily: it loads OpenCV, and --help must not
        from ..score_pairs import scan_predictions

        # One ground truth (a file) is scored or is an error; in folders each pair fails on its own.
        folders = not coco_files and pred.is_dir() and gt.is_dir()
        # NoPairsError (nothing to score where GT points) is a usage error through user_errors, as in
        # batch and eval.
        try:
            if coco_files:
                pairing = Pairing([])
            else:
                pairing = scan_predictions(pred, gt, pred_suffix)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        if csv_path is not None and not csv_stdout:
            # The files paired in folders too: a CSV named as one of them would replace it with the scores.
            inputs = [("PRED file", pred), ("GT file", gt)]
            for pair in pairing.pairs:
                inputs += [("prediction", pair.pred), ("ground truth", pair.gt)]
            inputs += [("ground truth", failure.image) for failure in pairing.failures]
            _check_csv_target(csv_path, inputs)
        for note in pairing.notes:
            warn(note)
        for failure in pairing.failures:
            pair_failed(failure.name, None, failure.image, failure.error)
        scores = _score_coco(pred, gt, failures) if coco_files else DatasetScore()
        warned: set[str] = set()  # the warnings shown for the pairs, each shown once
        for pair in track(pairing.pairs, description="scoring", console=console, transient=True,
                          disable=not console.is_terminal):
            try:
                scores.add(_score_files(pair, threshold, warned))
            except (OSError, ValueError, MemoryError) as exc:
                if not folders or stop_behind(exc):
                    raise
                pair_failed(pair.name, pair.pred, pair.gt, str(exc) or "out of memory")
        if failures and not scores.images:
            raise fatal.fail(f"no {'instance' if coco_files else 'pair'} could be scored: all {len(failures)} failed")
        _print_table(scores)
        if failures:
            what = "ground-truth instances" if coco_files else "ground truths"
            say(f"{len(failures)} of {len(scores.images) + len(failures)} {what} failed (listed above) and are "
                "left out of the scores")
        if csv_path is not None:
            _write_csv(csv_path, scores)
            say(f"wrote {'<stdout>' if csv_stdout else csv_path}")
    finish_run({**scores.to_dict(), "threshold": threshold, "failed": len(failures), "failures": failures},
               failed=bool(failures), json_out=json_out)


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("score", short_help="IoU and mBA of predicted masks against ground truth.")(score)
