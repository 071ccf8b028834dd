"""Find image/mask pairs in a folder: the BIG layout or ``images/`` + ``masks/`` sub-folders."""

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


def _by_suffix(folder: Path, tag: str) -> dict[Path, Path]:
    """``{relative/stem-without-tag: path}`` for files named ``<name><tag>.<ext>`` below ``folder``."""
    found: dict[Path, Path] = {}
    for path in sorted(folder.rglob(f"*{tag}.*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.stem.endswith(tag):
            key = path.relative_to(folder).with_name(path.stem[: -len(tag)])
            found.setdefault(key, path)
    return found


def _by_stem(folder: Path) -> dict[Path, Path]:
    found: dict[Path, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(path.relative_to(folder).with_suffix(""), path)
    return found


def find_pairs(root: Path) -> tuple[list[FilePair], list[str]]:
    """Pairs under ``root`` and a list of problems (images without masks).

    BIG layout: ``<name>_im.*`` + ``<name>_seg.*`` (+ ``<name>_gt.*``) in the same folder, output
    ``<name>_mask.png``. Otherwise ``root/images/**`` + ``root/masks/**`` by relative stem, output
    ``<relative stem>.png``. Sub-folders are mirrored in the output.
    """
    problems: list[str] = []
    pairs: list[FilePair] = []
    images = _by_suffix(root, "_im")
    if images:
        masks, gts = _by_suffix(root, "_seg"), _by_suffix(root, "_gt")
        for key, image in images.items():
            if key not in masks:
                problems.append(f"{image}: no matching {key.name}_seg.* mask")
                continue
            pairs.append(FilePair(str(key), image, masks[key], key.with_name(key.name + "_mask.png"), gts.get(key)))
        return pairs, problems
    if (root / "images").is_dir() and (root / "masks").is_dir():
        images, masks = _by_stem(root / "images"), _by_stem(root / "masks")
        for key, image in images.items():
            if key not in masks:
                problems.append(f"{image}: no mask with the same stem under {root / 'masks'}")
                continue
            pairs.append(FilePair(str(key), image, masks[key], key.with_suffix(".png")))
        return pairs, problems
    raise FileNotFoundError(
        f"{root}: no pairs found; expected <name>_im.* with <name>_seg.* (BIG layout) or images/ and masks/ folders"
    )
