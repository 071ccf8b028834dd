"""Pair files: image/mask pairs to refine (the BIG layout or ``images/`` + ``masks/``), and
predictions with their ground truths for scoring."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from .imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class FilePair:
    """An image, its coarse mask, the optional GT, and the output path relative to the output folder."""

    name: str
    image: Path
    mask: Path
    relative_output: Path
    gt: Path | None = None


# Mask file extensions, in order of preference among files whose names differ only in extension:
# lossless formats first, JPEG late (the rule batch and score share, see _preference). GIF comes last:
# the same order serves photos, and a GIF beside a photo is more likely its 256-colour preview.
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".jpg", ".jpeg", ".gif")
GT_SUFFIX = "_gt"
# Prediction names tried for a ground truth <name>_gt, in this order (BIG layout, DESIGN §5).
PRED_SUFFIXES = ("_mask", "", "_seg")
MAX_LISTED = 20  # items named in a message (missing ground truths, label or category ids)

T = TypeVar("T")


class NoPairsError(FileNotFoundError):
    """The input holds nothing of the kind to pair (no images, no ground truths): the command was
    pointed at the wrong place, a usage error (exit 2) in every command (``cli.common.user_errors``
    reads ``exit_code``)."""

    exit_code = 2


@dataclass(frozen=True)
class Pairing(Generic[T]):
    """Pairs found in folders, with what could not be paired and what was left out on purpose."""

    pairs: list[T]
    problems: list[str] = field(default_factory=list)  # inputs without a partner: each one is a failure
    notes: list[str] = field(default_factory=list)  # files left out on purpose: warnings
    folders: bool = False  # scan_pairs found the images/ + masks/ layout (not the BIG one)


def _preference(path: Path) -> tuple[int, str]:
    """Sort key of files that share a name: the format's place in MASK_EXTENSIONS, then the file name."""
    suffix = path.suffix.lower()
    rank = MASK_EXTENSIONS.index(suffix) if suffix in MASK_EXTENSIONS else len(MASK_EXTENSIONS)
    return rank, path.name


def _duplicate_note(used: Path, ignored: Path) -> str:
    """The warning for a file left out because another format of the same name is used."""
    order = ", ".join(suffix[1:] for suffix in MASK_EXTENSIONS)
    return f"{ignored} ignored: {used} has the same name and is used (format order: {order})"


def _is_hidden(relative: Path) -> bool:
    """True when a file or one of its folders (relative to the folder searched) starts with a dot."""
    return any(part.startswith(".") for part in relative.parts)


def _outside(path: Path, exclude: Path | None) -> bool:
    """True when ``path`` does not lie under the (resolved) folder ``exclude``."""
    return exclude is None or not path.resolve().is_relative_to(exclude)


def _by_suffix(folder: Path, tag: str) -> dict[Path, list[Path]]:
    """``{relative/name: files}`` for the visible image files ``<name><tag>.<ext>`` below ``folder``."""
    found: dict[Path, list[Path]] = {}
    for path in sorted(folder.rglob(f"*{tag}.*")):
        relative = path.relative_to(folder)
        if (path.suffix.lower() in IMAGE_SUFFIXES and path.stem.endswith(tag) and len(path.stem) > len(tag)
                and not _is_hidden(relative) and path.is_file()):
            found.setdefault(relative.with_name(path.stem[: -len(tag)]), []).append(path)
    return found


def _by_stem(folder: Path) -> dict[Path, list[Path]]:
    """``{relative/stem: files}`` for the visible image files below ``folder``."""
    found: dict[Path, list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.suffix.lower() in IMAGE_SUFFIXES and not _is_hidden(relative) and path.is_file():
            found.setdefault(relative.with_suffix(""), []).append(path)
    return found


def _leave_out(found: dict[Path, list[Path]], exclude: Path | None) -> tuple[dict[Path, list[Path]], set[Path]]:
    """``found`` without its files under ``exclude``, and the names whose files all lie there."""
    kept: dict[Path, list[Path]] = {}
    inside: set[Path] = set()
    for key, files in found.items():
        outside = [path for path in files if _outside(path, exclude)]
        if outside:
            kept[key] = outside
        else:
            inside.add(key)
    return kept, inside


def listed(items: Sequence[Any], limit: int = MAX_LISTED) -> str:
    """``a, b, c`` for a message, with the count of the items past ``limit``."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _pick(files: list[Path], notes: list[str]) -> Path:
    """The file used among files of one name (see :func:`_preference`); a note for each one left out."""
    used, *ignored = sorted(files, key=_preference)
    notes.extend(_duplicate_note(used, path) for path in ignored)
    return used


def _count(number: int, noun: str) -> str:
    """``3 masks``, ``1 mask``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def scan_pairs(root: Path, exclude: Path | None = None) -> Pairing[FilePair]:
    """Pairs under ``root``, the problems (images without masks: failures), and notes (warnings).

    Layout: ``root/images/**`` + ``root/masks/**`` when both folders exist, paired by relative
    name without the extension, output ``<relative name>.png``. Otherwise the BIG layout:
    ``<name>_im.*`` + ``<name>_seg.*`` (+ ``<name>_gt.*``) in the same folder, output
    ``<name>_mask.png``. Sub-folders are mirrored in the output. Hidden files and folders are
    skipped. Of files that share a name in several formats one is used (PNG, TIFF, BMP, WebP,
    JPEG, then GIF), with a note; masks without an image are counted in a note. Files under
    ``exclude`` (the batch's own output folder, when it lies inside ``root``) are left out, so
    reruns never pair earlier outputs; a note counts the input pairs found there. Raises
    NoPairsError when there is no image at all (images without masks are problems instead).
    """
    problems: list[str] = []
    notes: list[str] = []
    pairs: list[FilePair] = []
    resolved = exclude.resolve() if exclude is not None else None
    folders = (root / "images").is_dir() and (root / "masks").is_dir()
    if folders:
        images, images_inside = _leave_out(_by_stem(root / "images"), resolved)
        masks, masks_inside = _leave_out(_by_stem(root / "masks"), resolved)
        stray = [path for files in _leave_out(_by_suffix(root, "_im"), resolved)[0].values() for path in files
                 if path.relative_to(root).parts[0] not in ("images", "masks")]
        if stray:
            notes.append(f"{_count(len(stray), '*_im file')} not paired, e.g. {stray[0]}: with images/ and masks/ "
                         "folders, only those are paired")
        if not images:
            raise NoPairsError(f"{root}: no pairs found; {root / 'images'} holds no image files")
    else:
        images, images_inside = _leave_out(_by_suffix(root, "_im"), resolved)
        if not images:
            raise NoPairsError(f"{root}: no pairs found; expected <name>_im.* with <name>_seg.* (BIG layout) "
                               "or images/ and masks/ folders")
        masks, masks_inside = _leave_out(_by_suffix(root, "_seg"), resolved)
    gts = {} if folders else _leave_out(_by_suffix(root, GT_SUFFIX), resolved)[0]
    for key, image_files in images.items():
        image = _pick(image_files, notes)
        if key not in masks:
            problems.append(f"{image}: no mask with the same stem under {root / 'masks'}" if folders
                            else f"{image}: no matching {key.name}_seg.* mask")
            continue
        mask = _pick(masks[key], notes)
        gt = _pick(gts[key], notes) if key in gts else None
        output = key.with_name(key.name + (".png" if folders else "_mask.png"))
        pairs.append(FilePair(str(key), image, mask, output, gt))
    orphans = [files[0] for key, files in masks.items() if key not in images]
    if orphans:
        notes.append(f"{_count(len(orphans), 'mask')} without an image ignored, e.g. {orphans[0]}")
    if left_out := sum(1 for key in images_inside if key in masks or key in masks_inside):
        notes.append(f"{_count(left_out, 'input pair')} left out: inside the output folder {exclude}")
    return Pairing(pairs, problems, notes, folders)


def find_pairs(root: Path, exclude: Path | None = None) -> tuple[list[FilePair], list[str]]:
    """Pairs under ``root`` and the problems (images without masks), as :func:`scan_pairs` finds them;
    callers that show warnings use :func:`scan_pairs` for its notes."""
    found = scan_pairs(root, exclude)
    return found.pairs, found.problems


@dataclass(frozen=True)
class ScorePair:
    """One prediction file and its ground truth, under a display name."""

    name: str
    pred: Path
    gt: Path


def _mask_files(folder: Path, skip: Path | None = None) -> list[Path]:
    """Mask files below ``folder`` (sub-folders included), sorted; hidden files and folders, and
    anything under the folder ``skip``, left out."""
    resolved = skip.resolve() if skip is not None else None
    return sorted(
        path for path in folder.rglob("*")
        if path.suffix.lower() in MASK_EXTENSIONS and not _is_hidden(path.relative_to(folder)) and path.is_file()
        and _outside(path, resolved)
    )


def _nested_in(folder: Path, other: Path) -> Path | None:
    """``folder`` when it lies strictly inside ``other`` (to leave it out when searching ``other``)."""
    folder_resolved, other_resolved = folder.resolve(), other.resolve()
    return folder if folder_resolved != other_resolved and folder_resolved.is_relative_to(other_resolved) else None


def _base_name(gt: Path, folder: Path | None = None) -> str:
    """``<name>_gt.png`` -> ``<name>``; any other file -> its stem; prefixed by its sub-folder of ``folder``."""
    stem = gt.stem
    base = stem[: -len(GT_SUFFIX)] if stem.endswith(GT_SUFFIX) and len(stem) > len(GT_SUFFIX) else stem
    return base if folder is None else (gt.parent.relative_to(folder) / base).as_posix()


def _index(files: list[Path], folder: Path) -> tuple[dict[str, Path], dict[Path, list[Path]]]:
    """Predictions by relative path without and with the extension, and for each file chosen for a
    name, the other formats of that name it was chosen over (see :func:`_preference`)."""
    by_key: dict[str, Path] = {}
    shadowed: dict[Path, list[Path]] = {}
    for path in sorted(files, key=_preference):
        relative = path.relative_to(folder)
        used = by_key.setdefault(relative.with_suffix("").as_posix(), path)
        if used != path and used.with_suffix("") == path.with_suffix(""):
            shadowed.setdefault(used, []).append(path)
        by_key.setdefault(relative.as_posix(), path)
    return by_key, shadowed


def _find_prediction(name: str, gt: Path, index: dict[str, Path], suffixes: tuple[str, ...]) -> Path | None:
    """The first ``<name><suffix>`` present in the prediction index, never the GT file itself."""
    for suffix in suffixes:
        candidate = index.get(name + suffix)
        if candidate is not None and candidate.resolve() != gt.resolve():
            return candidate
    return None


def scan_predictions(pred: Path, gt: Path, pred_suffix: str | None = None) -> Pairing[ScorePair]:
    """Pair predictions with ground truths; notes (warnings) name the files left out.

    GT folder: if it holds ``*_gt`` files (BIG layout) only those are ground truths, otherwise every
    mask file is. Sub-folders are searched, and a ground truth is paired with the prediction at the
    same relative path: ``<name>[_gt]`` with ``<name>_mask``, ``<name>`` or ``<name>_seg`` (first
    found), or only ``<name><pred_suffix>`` when given. Hidden files and folders are skipped, and
    so is one folder lying inside the other. Where a name exists in several formats, one file is
    used (PNG, TIFF, BMP, WebP, JPEG, then GIF) and each ground-truth name is scored once.
    Raises FileNotFoundError listing the ground truths that have no prediction, NoPairsError when
    there is no ground truth to score at all, and ValueError when the two arguments cannot be paired
    (a folder of ground truths with one file).
    """
    suffixes = (pred_suffix,) if pred_suffix is not None else PRED_SUFFIXES
    if not gt.exists():
        raise FileNotFoundError(f"ground truth not found: {gt}")
    if not pred.exists():
        raise FileNotFoundError(f"prediction not found: {pred}")
    notes: list[str] = []
    if gt.is_file():
        if pred.is_file():
            return Pairing([ScorePair(_base_name(gt), pred, gt)])
        index, shadowed = _index(_mask_files(pred), pred)
        found = _find_prediction(_base_name(gt), gt, index, suffixes)
        if found is None:
            raise FileNotFoundError(f"no prediction for {gt.name} in {pred} "
                                    f"(tried {', '.join(_base_name(gt) + s for s in suffixes)})")
        notes.extend(_duplicate_note(found, path) for path in shadowed.get(found, []))
        return Pairing([ScorePair(_base_name(gt), found, gt)], notes=notes)
    if pred.is_file():
        raise ValueError("GT is a folder, so PRED must be a folder too")

    gt_files = _mask_files(gt, skip=_nested_in(pred, gt))
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

    index, shadowed = _index(_mask_files(pred, skip=_nested_in(gt, pred)), pred)
    pairs, missing = [], []
    for name, files in by_name.items():
        gt_file = _pick(files, notes)
        found = _find_prediction(name, gt_file, index, suffixes)
        if found is None:
            missing.append(name)
            continue
        notes.extend(_duplicate_note(found, path) for path in shadowed.pop(found, []))
        pairs.append(ScorePair(name, found, gt_file))
    if missing:
        tried = " / ".join(f"<name>{s}" for s in suffixes)
        raise FileNotFoundError(f"{len(missing)} of {len(by_name)} ground truths have no prediction "
                                f"({tried}) in {pred}: {listed(missing)}")
    return Pairing(pairs, notes=notes)


def pair_coco_annotations(pred: list, gt: list) -> list[tuple[dict, dict]]:
    """Pair ground-truth COCO annotations with the predictions of the same annotation ``id``.

    Crowd regions (``iscrowd``) of the ground truth are left out, and so are predictions without an
    ``id``. Raises ValueError for an ``id`` that cannot name an annotation (a list or an object, by
    the rule ``image_id`` follows), for duplicate prediction ids and, listing them, for ground-truth
    instances without a prediction.
    """
    from .coco.files import is_json_id

    def usable(annotation: dict, index: int, side: str) -> bool:
        key = annotation.get("id")
        if key is not None and not is_json_id(key):
            raise ValueError(f"{side}: annotation #{index} has id {key!r}; an annotation id must be a number "
                             "or a string")
        return key is not None

    by_id: dict = {}
    for index, annotation in enumerate(pred):
        if not isinstance(annotation, dict) or not usable(annotation, index, "predictions"):
            continue
        key = annotation["id"]
        if key in by_id:
            raise ValueError(f"predictions: annotation id {key!r} appears more than once")
        by_id[key] = annotation
    pairs, missing = [], []
    instances = [(index, a) for index, a in enumerate(gt) if isinstance(a, dict) and not a.get("iscrowd")]
    for index, annotation in instances:
        found = by_id.get(annotation.get("id")) if usable(annotation, index, "ground truth") else None
        if found is None:
            missing.append(str(annotation.get("id")))
        else:
            pairs.append((annotation, found))
    if missing:
        raise ValueError(f"{len(missing)} of {len(instances)} ground-truth instances have no prediction "
                         f"with the same annotation id: {listed(missing)}")
    return pairs
