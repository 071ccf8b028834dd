"""The name rules of :mod:`pairing` and :mod:`score_pairs`: mask extensions and their order of preference
(:func:`preferred_file`, the file used among the formats of one name), the ``_gt``, ``_seg`` and mask name suffixes,
the keys names are compared by (NFC, letter case, zero-padding) and :func:`natural_key`, the order pairs come in."""

from __future__ import annotations

import os
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any

# Mask file extensions, in order of preference among files whose names differ only in extension:
# lossless formats first, JPEG late (the rule batch and score share, see format_preference). GIF comes last:
# the same order serves photos, and a GIF beside a photo is more likely its 256-colour preview.
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".pbm", ".pnm", ".ppm", ".jpg", ".jpeg", ".jpe",
                   ".jfif", ".avif", ".gif")
GT_SUFFIX = "_gt"
SEG_SUFFIX = "_seg"  # a BIG-layout coarse mask (<name>_seg beside <name>_im and <name>_gt)
# Names a mask may have after its photo's name, in any letter case (``frame_0001_mask.png``,
# ``frame_0001.matte.tif``): tried after the photo's own name in masks/, and the mask names of
# photos with their masks beside them.
MASK_NAME_SUFFIXES = ("_mask", ".mask", "-mask", "_matte", ".matte", "-matte")


def format_rank(suffix: str) -> int:
    """The place of the extension ``suffix`` (lower case) in MASK_EXTENSIONS; after them all if it is none of them."""
    return MASK_EXTENSIONS.index(suffix) if suffix in MASK_EXTENSIONS else len(MASK_EXTENSIONS)


def format_preference(path: Path) -> tuple[int, str]:
    """Sort key of files that share a name: the format's place in MASK_EXTENSIONS, then the file name."""
    return format_rank(path.suffix.lower()), path.name


def duplicate_note(used: Path, ignored: Path) -> str:
    """The warning for a file left out because another format of the same name is used."""
    order = ", ".join(suffix[1:] for suffix in MASK_EXTENSIONS)
    return f"{ignored} ignored: {used} has the same name and is used (format order: {order})"


def preferred_file(files: list[Path], notes: list[str]) -> Path:
    """The file used among files of one name (see :func:`format_preference`); a note for each one left out."""
    used, *ignored = sorted(files, key=format_preference)
    notes.extend(duplicate_note(used, path) for path in ignored)
    return used


def mask_suffix(stem: str) -> str | None:
    """The suffix of MASK_NAME_SUFFIXES (any case) that ends ``stem`` after a name, if one does."""
    lowered = stem.lower()
    for suffix in MASK_NAME_SUFFIXES:
        if lowered.endswith(suffix) and len(stem) > len(suffix):
            return suffix
    return None


def name_key(key: Path, fold: bool = False) -> str:
    """A name as it is compared: Unicode NFC (macOS writes names decomposed, other systems composed,
    and the two look the same), and case-folded when ``fold``."""
    text = unicodedata.normalize("NFC", key.as_posix())
    return text.casefold() if fold else text


# ASCII digits only: a name's other digits (Arabic-Indic, full-width...) are letters like any other.
_DIGITS = frozenset("0123456789")


def last_number_span(name: str) -> tuple[int, int] | None:
    """Where the last run of digits of ``name`` lies (start, end), read as a number of its own (a
    frame number); None where there is none, where it is a decimal fraction (``crop_0.05``,
    ``v1.02``) or where a letter follows it (``0001a``)."""
    end = len(name)
    while end and name[end - 1] not in _DIGITS:
        end -= 1
    start = end
    while start and name[start - 1] in _DIGITS:
        start -= 1
    if start == end:
        return None
    if (start >= 2 and name[start - 1] == "." and name[start - 2] in _DIGITS) or name[end:end + 1].isalpha():
        return None
    return start, end


def _unpadded(name: str) -> str:
    """``name`` with the leading zeros of its last run of digits dropped (``frame_0007`` ->
    ``frame_7``, ``take_000`` -> ``take_0``), the number it reads as written as text, so runs of
    any length compare without converting them. A run that is a decimal fraction (``crop_0.05``,
    ``v1.02``) or that a letter follows (``0001a``) is left as it is, and so is every other run."""
    span = last_number_span(name)
    if span is None or name[span[0]] != "0":  # no number, or no zero to drop
        return name
    start, end = span
    return name[:start] + (name[start:end].lstrip("0") or "0") + name[end:]


# A run of ASCII digits, kept by re.split: text and numbers alternate in what it returns.
_DIGIT_RUN = re.compile(r"([0-9]+)")

NaturalKey = tuple[tuple[tuple[Any, ...], ...], tuple[str, ...]]


@lru_cache(maxsize=1024)  # a folder's name recurs in the key of each file below it
def _natural_part(part: str) -> tuple[Any, ...]:
    """One part of a path as :func:`natural_key` compares it: text and digit runs in turn, each run
    as (its length without leading zeros, those digits), which orders runs of any length as numbers
    without converting them."""
    chunks: list[Any] = _DIGIT_RUN.split(part)
    chunks[1::2] = [(len(digits), digits) for digits in (run.lstrip("0") for run in chunks[1::2])]
    return tuple(chunks)


def natural_key(path: Path | str) -> NaturalKey:
    """The sort key of ``path`` in natural order: part by part, each run of ASCII digits compared as
    the number it writes (``frame_2`` before ``frame_10``, as ffmpeg's ``%d`` numbers frames) and
    the text between as text; names equal but for leading zeros (``frame_01``, ``frame_1``) in the
    order of their plain text, so the order is the same on every run. The order pairs are made,
    refined and listed in."""
    parts = path.parts if isinstance(path, Path) else Path(path).parts
    if os.name == "nt":  # Windows paths compare with letter case ignored, as Path compares them there
        parts = tuple(os.path.normcase(part) for part in parts)
    return tuple(map(_natural_part, parts)), parts


def number_key(key: Path) -> str:
    """A name as :func:`pairing._match`'s zero-padding rounds compare it: NFC, case-folded, and the last
    number of its last part read without its zeros (see :func:`_unpadded`), so frames numbered with
    other zero-padding (``frame_7``, ``frame_0007``, ``frame_000007_mask``: ffmpeg's ``%d``,
    ``%04d``, ``%06d``) have one key; its folders and other numbers are compared as they are."""
    return padding_key(name_key(key, fold=True))


def padding_key(folded: str) -> str:
    """:func:`number_key` of a name already in NFC and case-folded (``folded``)."""
    folder, slash, name = folded.rpartition("/")
    return folder + slash + _unpadded(name)
