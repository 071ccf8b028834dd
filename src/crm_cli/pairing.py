"""Pair files: image/mask pairs to refine (the BIG layout or ``images/`` + ``masks/``), and
predictions with their ground truths for scoring."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .imageio import IMAGE_SUFFIXES


@dataclass(frozen=True)
class FilePair:
    """An image, its coarse mask, the optional GT, and the output path relative to the output folder."""

    name: str
    image: Path
    mask: Path
    relative_output: Path
    gt: Path | None = None


def _outside(path: Path, exclude: Path | None) -> bool:
    """True when ``path`` does not lie under the (resolved) folder ``exclude``."""
    return exclude is None or not path.resolve().is_relative_to(exclude)


def _by_suffix(folder: Path, tag: str, exclude: Path | None = None) -> dict[Path, Path]:
    """``{relative/stem-without-tag: path}`` for files named ``<name><tag>.<ext>`` below ``folder``."""
    found: dict[Path, Path] = {}
    for path in sorted(folder.rglob(f"*{tag}.*")):
        if (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.stem.endswith(tag)
                and _outside(path, exclude)):
            key = path.relative_to(folder).with_name(path.stem[: -len(tag)])
            found.setdefault(key, path)
    return found


def _by_stem(folder: Path, exclude: Path | None = None) -> dict[Path, Path]:
    found: dict[Path, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and _outside(path, exclude):
            found.setdefault(path.relative_to(folder).with_suffix(""), path)
    return found


def find_pairs(root: Path, exclude: Path | None = None) -> tuple[list[FilePair], list[str]]:
    """Pairs under ``root`` and a list of problems (images without masks).

    BIG layout: ``<name>_im.*`` + ``<name>_seg.*`` (+ ``<name>_gt.*``) in the same folder, output
    ``<name>_mask.png``. Otherwise ``root/images/**`` + ``root/masks/**`` by relative stem, output
    ``<relative stem>.png``. Sub-folders are mirrored in the output. Files under ``exclude``
    (the batch's own output folder, when it lies inside ``root``) are ignored, so reruns never
    pair earlier outputs.
    """
    problems: list[str] = []
    pairs: list[FilePair] = []
    exclude = exclude.resolve() if exclude is not None else None
    images = _by_suffix(root, "_im", exclude)
    if images:
        masks, gts = _by_suffix(root, "_seg", exclude), _by_suffix(root, "_gt", exclude)
        for key, image in images.items():
            if key not in masks:
                problems.append(f"{image}: no matching {key.name}_seg.* mask")
                continue
            pairs.append(FilePair(str(key), image, masks[key], key.with_name(key.name + "_mask.png"), gts.get(key)))
        return pairs, problems
    if (root / "images").is_dir() and (root / "masks").is_dir():
        images, masks = _by_stem(root / "images", exclude), _by_stem(root / "masks", exclude)
        for key, image in images.items():
            if key not in masks:
                problems.append(f"{image}: no mask with the same stem under {root / 'masks'}")
                continue
            pairs.append(FilePair(str(key), image, masks[key], key.with_suffix(".png")))
        return pairs, problems
    raise FileNotFoundError(
        f"{root}: no pairs found; expected <name>_im.* with <name>_seg.* (BIG layout) or images/ and masks/ folders"
    )


MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".jpg", ".jpeg")
GT_SUFFIX = "_gt"
# Prediction names tried for a ground truth <name>_gt, in this order (BIG layout, DESIGN §5).
PRED_SUFFIXES = ("_mask", "", "_seg")
MAX_LISTED = 20  # missing ground truths named in the error


@dataclass(frozen=True)
class ScorePair:
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


def pair_predictions(pred: Path, gt: Path, pred_suffix: str | None = None) -> list[ScorePair]:
    """Pair predictions with ground truths.

    GT folder: if it holds ``*_gt`` files (BIG layout) only those are ground truths, otherwise every
    mask file is. A ground truth ``<name>[_gt]`` is paired with ``<name>_mask``, ``<name>`` or
    ``<name>_seg`` in PRED (first found), or only ``<name><pred_suffix>`` when given.
    Raises FileNotFoundError listing the ground truths that have no prediction, and ValueError
    when the two arguments cannot be paired at all (a folder of ground truths with one file).
    """
    suffixes = (pred_suffix,) if pred_suffix is not None else PRED_SUFFIXES
    if not gt.exists():
        raise FileNotFoundError(f"ground truth not found: {gt}")
    if not pred.exists():
        raise FileNotFoundError(f"prediction not found: {pred}")
    if gt.is_file():
        if pred.is_file():
            return [ScorePair(_base_name(gt), pred, gt)]
        found = _find_prediction(_base_name(gt), gt, _index(_mask_files(pred)), suffixes)
        if found is None:
            raise FileNotFoundError(f"no prediction for {gt.name} in {pred} "
                                    f"(tried {', '.join(_base_name(gt) + s for s in suffixes)})")
        return [ScorePair(_base_name(gt), found, gt)]
    if pred.is_file():
        raise ValueError("GT is a folder, so PRED must be a folder too")

    gt_files = _mask_files(gt)
    big_layout = [p for p in gt_files if p.stem.endswith(GT_SUFFIX)]
    if big_layout:
        gt_files = big_layout
    elif pred.resolve() == gt.resolve():
        raise ValueError(f"PRED and GT are the same folder but {gt} has no *{GT_SUFFIX} files")
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
            pairs.append(ScorePair(name, found, gt_file))
    if missing:
        listed = ", ".join(missing[:MAX_LISTED]) + (f", ... ({len(missing) - MAX_LISTED} more)"
                                                   if len(missing) > MAX_LISTED else "")
        tried = " / ".join(f"<name>{s}" for s in suffixes)
        raise FileNotFoundError(f"{len(missing)} of {len(gt_files)} ground truths have no prediction "
                                f"({tried}) in {pred}: {listed}")
    return pairs


def pair_coco_annotations(pred: list, gt: list) -> list[tuple[dict, dict]]:
    """Pair ground-truth COCO annotations with the predictions of the same annotation ``id``.

    Crowd regions (``iscrowd``) of the ground truth are left out. Raises ValueError for duplicate
    prediction ids and, listing them, for ground-truth instances without a prediction.
    """
    by_id: dict = {}
    for annotation in pred:
        key = annotation.get("id") if isinstance(annotation, dict) else None
        if key is None:
            continue
        if key in by_id:
            raise ValueError(f"predictions: annotation id {key!r} appears more than once")
        by_id[key] = annotation
    pairs, missing = [], []
    instances = [a for a in gt if isinstance(a, dict) and not a.get("iscrowd")]
    for annotation in instances:
        found = by_id.get(annotation.get("id"))
        if found is None:
            missing.append(str(annotation.get("id")))
        else:
            pairs.append((annotation, found))
    if missing:
        listed = ", ".join(missing[:MAX_LISTED]) + (f", ... ({len(missing) - MAX_LISTED} more)"
                                                   if len(missing) > MAX_LISTED else "")
        raise ValueError(f"{len(missing)} of {len(instances)} ground-truth instances have no prediction "
                         f"with the same annotation id: {listed}")
    return pairs
