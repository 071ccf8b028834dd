"""Predictions paired with their ground truths for ``crm score``: scan_predictions and its ScorePair."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import count_noun
from .naming import (
    GT_SUFFIX,
    MASK_EXTENSIONS,
    SEG_SUFFIX,
    duplicate_note,
    format_preference,
    name_key,
    natural_key,
    preferred_file,
)
from .pair_inputs import FolderWalk, lies_under, skipped_note, walk_folder
from .pairing import NoPairsError, PairFailure, Pairing, unreadable_failures

# Prediction names tried for a ground truth <name>_gt, in this order (BIG layout, DESIGN §5).
PRED_SUFFIXES = ("_mask", "", "_seg")


@dataclass(frozen=True)
class ScorePair:
    """One prediction file and its ground truth, under a display name."""

    name: str
    pred: Path
    gt: Path


def _mask_files(folder: Path, walks: list[FolderWalk], other: Path | None = None) -> list[Path]:
    """Mask files below ``folder`` (sub-folders included, linked ones too, each real folder once),
    sorted. Hidden files and folders are left out, and so is what lies in the real folder of
    ``other`` (the other argument of ``crm score``: a folder inside this one, or linked from it),
    unless ``folder`` lies there itself. The walk is added to ``walks`` (for :func:`pair_inputs.skipped_note`)."""
    real = os.path.realpath(folder)
    skip = None
    if other is not None:
        skip = os.path.realpath(other)
        if lies_under(real, skip):
            skip = None
    walked = walk_folder(folder, MASK_EXTENSIONS, skip, real=real)
    walks.append(walked)
    return walked.files


def _base_name(gt: Path, folder: Path | None = None) -> str:
    """``<name>_gt.png`` -> ``<name>``; any other file -> its stem; prefixed by its sub-folder of ``folder``."""
    stem = gt.stem
    base = stem[: -len(GT_SUFFIX)] if stem.endswith(GT_SUFFIX) and len(stem) > len(GT_SUFFIX) else stem
    return base if folder is None else (gt.parent.relative_to(folder) / base).as_posix()


def _index(files: list[Path], folder: Path) -> tuple[dict[str, Path], dict[Path, list[Path]]]:
    """Predictions by relative path without and with the extension (in Unicode NFC, see
    :func:`naming.name_key`), and for each file chosen for a name, the other formats of that name it was
    chosen over (see :func:`naming.format_preference`)."""
    by_key: dict[str, Path] = {}
    shadowed: dict[Path, list[Path]] = {}
    for path in sorted(files, key=format_preference):
        relative = path.relative_to(folder)
        used = by_key.setdefault(name_key(relative.with_suffix("")), path)
        if used != path and used.with_suffix("") == path.with_suffix(""):
            shadowed.setdefault(used, []).append(path)
        by_key.setdefault(name_key(relative), path)
    return by_key, shadowed


def _find_prediction(name: str, gt: Path, index: dict[str, Path], suffixes: tuple[str, ...]) -> Path | None:
    """The first ``<name><suffix>`` present in the prediction index, never the GT file itself."""
    for suffix in suffixes:
        candidate = index.get(name_key(Path(name + suffix)))
        if candidate is not None and candidate.resolve() != gt.resolve():
            return candidate
    return None


def _other_predictions(name: str, gt: Path, index: dict[str, Path], suffixes: tuple[str, ...],
                       found: Path) -> list[Path]:
    """The predictions ``<name><suffix>`` present besides ``found``, the one :func:`_find_prediction` took.
    A ``<name>_seg`` is none: in the BIG layout it is the coarse mask beside the refined ``<name>_mask``."""
    others = (index.get(name_key(Path(name + suffix))) for suffix in suffixes if suffix != SEG_SUFFIX)
    return [path for path in others if path is not None and path != found and path.resolve() != gt.resolve()]


def _several_predictions_note(pred: Path, count: int, example: list[Path], suffixes: Sequence[str]) -> str:
    """The note for ``count`` ground truths that more than one prediction in ``pred`` could pair with
    (``example``: one ground truth's, the scored one first)."""
    return (f"{pred}: {count_noun(count, 'ground truth')} {'has' if count == 1 else 'have'} more than one "
            f"prediction here (e.g. {', '.join(path.name for path in example)}); each is scored with the first "
            f"found of {', '.join('<name>' + suffix for suffix in suffixes)}; --pred-suffix chooses one")


def _no_prediction(gt: Path | str, name: str, pred: Path, suffixes: Sequence[str]) -> str:
    """The message for ground truth ``gt`` (named as given) without its prediction ``<name><suffix>`` in ``pred``."""
    return f"no prediction for {gt} in {pred} (tried {', '.join(name + suffix for suffix in suffixes)})"


def scan_predictions(pred: Path, gt: Path, pred_suffix: str | None = None) -> Pairing[ScorePair]:
    """Pair predictions with ground truths; notes (warnings) name the files left out.

    GT folder: if it holds ``*_gt`` files (BIG layout) only those are ground truths, otherwise every
    mask file is. Sub-folders are searched, and a ground truth is paired with the prediction at the
    same relative path: ``<name>[_gt]`` with ``<name>_mask``, ``<name>`` or ``<name>_seg`` (first
    found), or only ``<name><pred_suffix>`` when given. Hidden files and folders are skipped, and
    so is what lies in the other folder (inside this one, or linked from it). Linked folders are
    followed, each real folder once and never one around the folder searched (a note counts those
    skipped). Where a name exists in several formats, one file is used (PNG, TIFF, BMP, WebP, JPEG,
    then GIF) and each ground-truth name is scored once.
    In folders, a ground truth without its prediction is a failure of its own (``Pairing.failures``,
    the ground truth as its file), so the others can still be scored. Raises FileNotFoundError when
    PRED or GT is missing, or when the one ground-truth file has no prediction in the PRED folder,
    NoPairsError when there is no ground truth to score at all, and ValueError when the two
    arguments cannot be paired (a folder of ground truths with one file).
    """
    suffixes = (pred_suffix,) if pred_suffix is not None else PRED_SUFFIXES
    if not gt.exists():
        raise FileNotFoundError(f"ground truth not found: {gt}")
    if not pred.exists():
        raise FileNotFoundError(f"prediction not found: {pred}")
    notes: list[str] = []
    walks: list[FolderWalk] = []
    if gt.is_file():
        if pred.is_file():
            return Pairing([ScorePair(_base_name(gt), pred, gt)])
        index, shadowed = _index(_mask_files(pred, walks), pred)
        found = _find_prediction(_base_name(gt), gt, index, suffixes)
        if found is None:
            raise FileNotFoundError(_no_prediction(gt.name, _base_name(gt), pred, suffixes))
        notes.extend(duplicate_note(found, path) for path in shadowed.get(found, []))
        if others := _other_predictions(_base_name(gt), gt, index, suffixes, found):
            notes.append(_several_predictions_note(pred, 1, [found, *others], suffixes))
        return Pairing([ScorePair(_base_name(gt), found, gt)], notes=skipped_note(*walks) + notes)
    if pred.is_file():
        raise ValueError("GT is a folder, so PRED must be a folder too")

    gt_files = _mask_files(gt, walks, other=pred)
    big_layout = [p for p in gt_files if p.stem.endswith(GT_SUFFIX)]
    if big_layout:
        gt_files = big_layout
    elif pred.resolve() == gt.resolve():
        raise NoPairsError(f"{gt}: no pairs found; PRED and GT are the same folder, so its ground truths must be "
                           f"named <name>{GT_SUFFIX}.* and it has none")
    if not gt_files:
        raise NoPairsError(f"{gt}: no pairs found; it holds no ground-truth masks")
    by_name: dict[str, list[Path]] = {}
    for gt_file in gt_files:
        by_name.setdefault(_base_name(gt_file, gt), []).append(gt_file)

    pred_files = _mask_files(pred, walks, other=gt)
    index, shadowed = _index(pred_files, pred)
    pairs: list[ScorePair] = []
    failures = unreadable_failures([folder for walk in walks for folder in walk.unreadable])
    several: list[list[Path]] = []  # per ground truth with more than one prediction: the scored one first
    for name, files in by_name.items():
        gt_file = preferred_file(files, notes)
        found = _find_prediction(name, gt_file, index, suffixes)
        if found is None:
            failures.append(PairFailure(name, gt_file, _no_prediction(gt_file, name, pred, suffixes)))
            continue
        notes.extend(duplicate_note(found, path) for path in shadowed.pop(found, []))
        if others := _other_predictions(name, gt_file, index, suffixes, found):
            several.append([found, *others])
        pairs.append(ScorePair(name, found, gt_file))
    if several:
        notes.append(_several_predictions_note(pred, len(several), several[0], suffixes))
    if unscored := _without_ground_truth(pred_files, pred, {name_key(Path(name)) for name in by_name}, suffixes,
                                         big=bool(big_layout)):
        notes.append(f"{pred}: {count_noun(len(unscored), 'prediction')} without a ground truth in {gt} not scored, "
                     f"e.g. {unscored[0]}")
    return Pairing(pairs, failures, skipped_note(*walks) + notes)


def _without_ground_truth(files: list[Path], folder: Path, names: set[str], suffixes: Sequence[str],
                          big: bool) -> list[Path]:
    """The predictions below ``folder`` that no ground truth pairs with, one file for each name
    (in :func:`naming.natural_key` order): files named ``<name><suffix>`` (a suffix of ``suffixes``) for no
    ground-truth name of ``names`` (relative, as :func:`naming.name_key` spells them). A name's files
    (``b_mask``, ``b_seg``) count once, as the file a ground truth ``b`` would pair with. Beside
    BIG-layout ground truths (``big``), the photos ``*_im`` and the ground truths ``*_gt`` are no
    predictions."""
    found: dict[str, tuple[int, Path]] = {}  # by the name without its longest suffix: (suffix's rank, file)
    for path in sorted(files, key=format_preference):
        if big and any(path.stem.endswith(tag) and len(path.stem) > len(tag) for tag in ("_im", GT_SUFFIX)):
            continue
        key = name_key(path.relative_to(folder).with_suffix(""))
        fits = [(len(suffix), rank, key[: len(key) - len(suffix)]) for rank, suffix in enumerate(suffixes)
                if key.endswith(suffix) and len(key) > len(suffix)]
        if not fits or any(base in names for _, _, base in fits):
            continue
        _, rank, base = max(fits, key=lambda fit: fit[0])
        if base not in found or rank < found[base][0]:
            found[base] = (rank, path)
    return sorted((path for _, path in found.values()), key=natural_key)
