"""``crm score PRED GT``: IoU and mBA of predicted masks against ground truth (DESIGN §4). No torch."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import JsonOpt, console, emit_json, fail, percent, user_errors

if TYPE_CHECKING:
    import numpy as np

    from ..metrics import DatasetScore

MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".jpg", ".jpeg")
GT_SUFFIX = "_gt"
# Prediction names tried for a ground truth <name>_gt, in this order (BIG layout, DESIGN §5).
PRED_SUFFIXES = ("_mask", "", "_seg")
MAX_LISTED = 20


@dataclass(frozen=True)
class Pair:
    """One prediction file and its ground truth, under a display name."""

    name: str
    pred: Path
    gt: Path


def _mask_files(folder: Path) -> list[Path]:
    """Image files of a folder (not recursive, hidden files skipped), sorted by name."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in MASK_EXTENSIONS
    )


def _base_name(gt: Path) -> str:
    """``<name>_gt.png`` -> ``<name>``; any other file -> its stem."""
    stem = gt.stem
    return stem[: -len(GT_SUFFIX)] if stem.endswith(GT_SUFFIX) and len(stem) > len(GT_SUFFIX) else stem


def _index(files: list[Path]) -> dict[str, Path]:
    """Look-up by stem and by full name; for a stem shared by several extensions, PNG wins."""
    by_key: dict[str, Path] = {}
    for path in sorted(files, key=lambda p: (MASK_EXTENSIONS.index(p.suffix.lower()), p.name)):
        by_key.setdefault(path.stem, path)
        by_key.setdefault(path.name, path)
    return by_key


def _find_prediction(name: str, gt: Path, index: dict[str, Path], suffixes: tuple[str, ...]) -> Path | None:
    """The first ``<name><suffix>`` present in the prediction index, never the GT file itself."""
    for suffix in suffixes:
        candidate = index.get(name + suffix)
        if candidate is not None and candidate.resolve() != gt.resolve():
            return candidate
    return None


def pair_masks(pred: Path, gt: Path, pred_suffix: str | None = None) -> list[Pair]:
    """Pair predictions with ground truths.

    GT folder: if it holds ``*_gt`` files (BIG layout) only those are ground truths, otherwise every
    mask file is. A ground truth ``<name>[_gt]`` is paired with ``<name>_mask``, ``<name>`` or
    ``<name>_seg`` in PRED (first found), or only ``<name><pred_suffix>`` when given.
    Raises FileNotFoundError listing the ground truths that have no prediction.
    """
    suffixes = (pred_suffix,) if pred_suffix is not None else PRED_SUFFIXES
    if not gt.exists():
        raise FileNotFoundError(f"ground truth not found: {gt}")
    if not pred.exists():
        raise FileNotFoundError(f"prediction not found: {pred}")
    if gt.is_file():
        if pred.is_file():
            return [Pair(_base_name(gt), pred, gt)]
        found = _find_prediction(_base_name(gt), gt, _index(_mask_files(pred)), suffixes)
        if found is None:
            raise FileNotFoundError(f"no prediction for {gt.name} in {pred} "
                                    f"(tried {', '.join(_base_name(gt) + s for s in suffixes)})")
        return [Pair(_base_name(gt), found, gt)]
    if pred.is_file():
        raise typer.BadParameter("GT is a folder, so PRED must be a folder too")

    gt_files = _mask_files(gt)
    big_layout = [p for p in gt_files if p.stem.endswith(GT_SUFFIX)]
    if big_layout:
        gt_files = big_layout
    elif pred.resolve() == gt.resolve():
        raise typer.BadParameter(f"PRED and GT are the same folder but {gt} has no *{GT_SUFFIX} files")
    if not gt_files:
        raise FileNotFoundError(f"no ground-truth masks in {gt}")

    index = _index(_mask_files(pred))
    pairs, missing = [], []
    for gt_file in gt_files:
        name = _base_name(gt_file)
        found = _find_prediction(name, gt_file, index, suffixes)
        if found is None:
            missing.append(name)
        else:
            pairs.append(Pair(name, found, gt_file))
    if missing:
        listed = ", ".join(missing[:MAX_LISTED]) + (f", ... ({len(missing) - MAX_LISTED} more)"
                                                   if len(missing) > MAX_LISTED else "")
        tried = " / ".join(f"<name>{s}" for s in suffixes)
        raise FileNotFoundError(f"{len(missing)} of {len(gt_files)} ground truths have no prediction "
                                f"({tried}) in {pred}: {listed}")
    return pairs


def _read_values(path: Path) -> np.ndarray:
    """Raw mask values for scoring; palette masks give their foreground (index != 0) as booleans."""
    from ..imageio import read_mask

    return read_mask(path).scoring_values()


def _print_table(scores: DatasetScore) -> None:
    """Per-image rows, then the dataset row, on stderr."""
    from rich.table import Table

    table = Table(title="IoU and mBA (%)", title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("IoU", justify="right")
    table.add_column("mBA", justify="right")
    for index, image in enumerate(scores.images):
        table.add_row(image.name, percent(image.iou), percent(image.mba),
                      end_section=index == len(scores.images) - 1)
    label = f"dataset (n={len(scores.images)}"
    if scores.no_boundary:
        label += f", {scores.no_boundary} without GT boundary"
    table.add_row(label + ")", percent(scores.iou), percent(scores.mba), style="bold")
    console.print(table)
    console.print("IoU = sum of intersections / sum of unions; mBA = mean over images with a GT boundary.",
                  style="dim", highlight=False)


def _write_csv(path: Path, scores: DatasetScore) -> None:
    """One row per image: name, iou, mba (empty when the GT has no boundary), intersection, union."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "iou", "mba", "intersection", "union"])
        for image in scores.images:
            writer.writerow([image.name, repr(image.iou), "" if image.mba is None else repr(image.mba),
                             image.intersection, image.union])


def score(
    pred: Annotated[Path, typer.Argument(metavar="PRED", help="Predicted mask file, or a folder of them.")],
    gt: Annotated[Path, typer.Argument(metavar="GT",
                                       help="Ground-truth mask file or folder (BIG: <name>_gt.png).")],
    pred_suffix: Annotated[
        str | None,
        typer.Option("--pred-suffix", help="Only pair <name>_gt with <name>SUFFIX (e.g. _seg). "
                                           "Default: try _mask, no suffix, then _seg."),
    ] = None,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", dir_okay=False, help="Write per-image rows (name,iou,mba,intersection,union)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Score predicted masks against ground truth: dataset IoU and mBA (boundary accuracy).

    Masks are binarised with > 128 on the 8-bit scale. IoU is sum of intersections / sum of unions.

    mBA is the mean over images of the accuracy in 5 GT boundary bands, as in CascadePSP's evaluation.
    """
    with user_errors():
        from rich.progress import track

        from ..metrics import DatasetScore, score_pair

        pairs = pair_masks(pred, gt, pred_suffix)
        scores = DatasetScore()
        for pair in track(pairs, description="scoring", console=console, transient=True,
                          disable=not console.is_terminal):
            pred_values = _read_values(pair.pred)
            gt_values = _read_values(pair.gt)
            if pred_values.shape[:2] != gt_values.shape[:2]:
                raise fail(f"size mismatch: {pair.pred} is {pred_values.shape[1]}x{pred_values.shape[0]} "
                           f"but {pair.gt} is {gt_values.shape[1]}x{gt_values.shape[0]}")
            scores.add(score_pair(pred_values, gt_values, pair.name))
        _print_table(scores)
        if csv_path is not None:
            _write_csv(csv_path, scores)
            console.print(f"wrote {csv_path}", highlight=False)
    if json_out:
        emit_json(scores.to_dict())


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("score")(score)
