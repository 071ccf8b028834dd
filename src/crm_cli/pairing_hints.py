"""What :mod:`pairing` explains itself with: the hints of its NoPairsError (a folder's layout, sibling folders,
names in two formats, unreadable folders, formats crm does not read), its notes on mask sequences numbered or
named otherwise than their photos (:func:`offset_note`, :func:`renamed_masks_note`), and :func:`listed` with
MAX_LISTED, how many items a message names."""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from .errors import count_noun
from .image_headers import probe_image
from .image_sources import ImageReadError
from .imageio import IMAGE_SUFFIXES
from .naming import format_rank, last_number_span, mask_suffix, name_key, number_key
from .pair_inputs import FolderWalk, LayoutInputs, lies_under

MAX_LISTED = 20  # items named in a message (missing ground truths, label or category ids)

# What the hints for a folder of no known layout say that crm eval reads instead (pairing.scan_pairs' ``command``).
_EVAL_READS = "crm eval reads the BIG layout only (<name>_im + <name>_seg + <name>_gt in one folder)"


def listed(items: Sequence[Any], limit: int = MAX_LISTED) -> str:
    """``a, b, c`` for a message, with the count of the items past ``limit``."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def unreadable_hint(unreadable: list[tuple[Path, str]]) -> str:
    """For a NoPairsError: the folders that could not be listed (they may hold the pairs), or ""."""
    if not unreadable:
        return ""
    folder, reason = unreadable[0]
    return f"; cannot read {count_noun(len(unreadable), 'folder')} in it, e.g. {folder} ({reason})"


def formats_hint(walked: FolderWalk) -> str:
    """`` (it holds 300 .exr files; crm reads .jpg, ...)`` for a folder without one image crm reads."""
    if not walked.others:
        return ""
    common = sorted(walked.others.items(), key=lambda item: -item[1])[:3]
    held = ", ".join(count_noun(count, f"{suffix or 'extensionless'} file") for suffix, count in common)
    return f" (it holds {held}; crm reads {', '.join(IMAGE_SUFFIXES)})"


# What _sibling_hint reads: the first sub-folders of a folder (each real folder once) and at most
# _HINT_ENTRIES entries below each, so the hint costs the same on a folder of any size.
_HINT_FOLDERS = 20
_HINT_ENTRIES = 2000
# Header modes that read as a mask (grey, 1-bit, palette, 16/32-bit integer, float); photos are RGB.
_MASK_MODES = frozenset({"1", "L", "LA", "P", "I", "I;16", "I;16B", "I;16L", "F"})


def _hint_names(folder: Path) -> tuple[dict[str, Path], bool]:
    """The image files below ``folder`` by name as ``--masks`` would pair them (relative path without
    extension or mask suffix, letter case and zero-padding ignored: see :func:`naming.number_key`), one file
    each (the first by path), and whether every entry below was read. Links to folders are not
    followed and hidden entries are skipped. At most _HINT_ENTRIES entries are read, folder by folder
    (breadth first) and each folder in the order the disk lists it: a bigger folder gives a sample."""
    names: dict[str, Path] = {}
    seen = 0
    queue: deque[Path] = deque([folder])
    while queue and seen < _HINT_ENTRIES:
        directory = queue.popleft()
        below: list[str] = []
        try:
            with os.scandir(directory) as scan:
                # islice stops at the cap without taking one more entry from the disk.
                for entry in islice(scan, _HINT_ENTRIES - seen):
                    seen += 1
                    name = entry.name
                    if name.startswith("."):
                        continue
                    if entry.is_dir():
                        if not entry.is_symlink():
                            below.append(name)
                        continue
                    if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
                        continue
                    path = directory / name
                    stem = path.stem
                    suffix = mask_suffix(stem)
                    key = number_key(path.relative_to(folder).with_name(stem[: len(stem) - len(suffix)]
                                                                        if suffix else stem))
                    if key not in names or path < names[key]:
                        names[key] = path
        except OSError:  # unreadable, or gone meanwhile: no names there
            pass
        queue.extend(directory / name for name in sorted(below))
    return names, not queue and seen < _HINT_ENTRIES


def _looks_like_mask(path: Path) -> bool | None:
    """Whether the header of ``path`` reads as a mask's (not an RGB photo's); None when it cannot be read."""
    try:
        return probe_image(path).mode in _MASK_MODES
    except ImageReadError:
        return None


def _sibling_hint(root: Path, command: str = "crm batch") -> str:
    """For ``root`` without images/ and masks/ folders: the two of its sub-folders whose image files
    share the most names (``frames/a.jpg`` + ``alpha/a.png``), as the ``crm batch --masks`` line
    that pairs them; "" when no two share a name. Names are compared among those :func:`_hint_names`
    reads (a sample of a big folder: the hint then says "at least"). The masks' folder is the one
    whose file of a shared name reads as a mask while the other's does not; when both or neither do,
    the hint says which folder --masks takes. What follows is worded for ``command`` (see
    :func:`pairing.scan_pairs`): crm train is told to name them images/ and masks/, and crm eval that it
    reads the BIG layout only, crm batch pairing the two."""
    try:
        real_root = os.path.realpath(root)
        # root itself is listed whole, as the walk that found no pairs in it has just done.
        with os.scandir(root) as scan:
            found = sorted((entry.is_symlink(), entry.name) for entry in scan
                           if not entry.name.startswith(".") and entry.is_dir())
    except OSError:
        return ""
    chosen: dict[str, str] = {}  # real folder: the name read, its own folder's before a link's, in name order
    for link, name in found:
        if len(chosen) == _HINT_FOLDERS:
            break
        real = os.path.realpath(root / name) if link else os.path.join(real_root, name)
        if not lies_under(real_root, real):  # a link to root or to a folder around it: no folder of photos
            chosen.setdefault(real, name)
    folders = sorted(chosen.values())
    read = {folder: _hint_names(root / folder) for folder in folders}
    names = {folder: found_names for folder, (found_names, _) in read.items()}
    best: tuple[int, str, str] = (0, "", "")
    for index, first in enumerate(folders):
        for second in folders[index + 1:]:
            shared = len(names[first].keys() & names[second].keys())
            if shared > best[0]:
                best = (shared, first, second)
    shared, photos, masks = best
    if not shared:
        return ""
    key = min(names[photos].keys() & names[masks].keys())
    kinds = _looks_like_mask(names[photos][key]), _looks_like_mask(names[masks][key])
    if kinds == (True, False):
        photos, masks = masks, photos
    # Of a folder read in part only the names read are compared: the two share that many at least.
    least = "" if read[photos][1] and read[masks][1] else "at least "
    same = (f"{photos}/ and {masks}/ share {least}{count_noun(shared, 'image name')} (e.g. {names[photos][key]} + "
            f"{names[masks][key]})")
    pair_them = f"crm batch {root / photos} --masks {root / masks}"
    if kinds in ((True, False), (False, True)):
        told = f"; {same}, the masks in {masks}/"
        if command == "crm eval":
            return f"{told}, but {_EVAL_READS}; {pair_them} refines them"
        if command == "crm train":
            return f"{told}: call {photos}/ images/ and {masks}/ masks/ (links will do)"
        return f"{told}: name the two: {pair_them} (or call them images/ and masks/)"
    told = f"; {same}: if one holds the photos and the other their masks"
    if command == "crm eval":
        return f"{told}, {pair_them} refines them (the masks' folder after --masks), but {_EVAL_READS}"
    if command == "crm train":
        return f"{told}, call the photos' folder images/ and the masks' masks/ (links will do)"
    return f"{told}, name the two, the masks' folder after --masks: {pair_them} (or call them images/ and masks/)"


def layout_hint(root: Path, command: str = "crm batch") -> str:
    """Why ``root`` has no images/ + masks/ layout when it holds one of the two folders, or, holding
    neither, two of its folders that hold images of the same names (:func:`_sibling_hint`); worded
    for ``command`` (see :func:`pairing.scan_pairs`)."""
    images, masks = (root / "images").is_dir(), (root / "masks").is_dir()
    if not images and not masks:
        return _sibling_hint(root, command)
    if images == masks:
        return ""
    have, lack = ("images", "masks") if images else ("masks", "images")
    try:
        others = sorted(entry.name + "/" for entry in os.scandir(root)
                        if entry.is_dir() and not entry.name.startswith(".") and entry.name != have)
    except OSError:
        others = []
    seen = f" (beside it: {listed(others, 5)})" if others else ""
    target = others[0].rstrip("/") if len(others) == 1 else "FOLDER"
    photos, mattes = (root / "images", root / target) if images else (root / target, root / "masks")
    told = f"; it has {have}/ but no {lack}/ folder{seen}"
    if command == "crm eval":
        return f"{told}: {_EVAL_READS}, not images/ and masks/; crm batch {photos} --masks {mattes} refines them"
    rename = (f"the photos' folder must be named images/ and the masks' masks/ (a link will do: ln -s {target} "
              f"{root / lack})")
    if command == "crm train":
        return f"{told}: {rename}"
    return f"{told}: {rename}, or name the two: crm batch {photos} --masks {mattes}"


def two_formats_hint(images: dict[Path, list[Path]], root: Path) -> str:
    """For a folder below ``root`` taken for the side-by-side layout in which no pair was found: the
    names held in two formats (``frame_0001.jpg`` + ``frame_0001.png``), one photo by the format rule
    (see :func:`naming.format_preference`) but maybe a photo and its mask, as a hint naming how to pair them in
    words that say what each command that reads the folder takes (crm batch, train, eval); "" when no name
    is held in exactly two formats. The masks' format is the one whose file of the first such name
    reads as a mask while the other does not, else the one :func:`naming.format_preference` puts first (lossless:
    PNG before JPEG)."""
    combinations: dict[tuple[str, str], list[list[Path]]] = {}
    for files in images.values():
        formats = sorted({path.suffix.lower() for path in files}, key=format_rank)
        if len(formats) == 2:
            combinations.setdefault((formats[0], formats[1]), []).append(files)
    if not combinations:
        return ""
    (mask_format, photo_format), names = max(combinations.items(), key=lambda item: len(item[1]))
    first = names[0]
    mask = next(path for path in first if path.suffix.lower() == mask_format)
    photo = next(path for path in first if path.suffix.lower() == photo_format)
    kinds = _looks_like_mask(photo), _looks_like_mask(mask)
    if kinds == (True, False):
        (mask, mask_format), (photo, photo_format) = (photo, photo_format), (mask, mask_format)
    reads = f", {mask.name} reads as a mask and {photo.name} as a photo" if kinds in ((True, False), (False, True)) \
        else ""
    return (f"; {count_noun(len(names), 'name')} {'has' if len(names) == 1 else 'have'} both a {photo_format} and a "
            f"{mask_format} file (e.g. {photo} + {mask}{reads}), and the files of one name are one photo in any "
            f"format: if the {mask_format} files are the masks, put them in a folder of their own (for crm batch and "
            f"train: masks/ beside a folder images/ of the photos, or crm batch {root} --masks FOLDER; crm eval reads "
            "the BIG layout, NAME_im + NAME_seg + NAME_gt)")


# Words naming a mask in a file name (plate_matte.0001, frame_mask_00001, mask_00001, alpha.0001).
_MASK_WORDS = ("mask", "matte", "alpha", "seg")

# A numbered sequence of names, as the numbering notes compare them (NFC, case-folded): the folder,
# the text before the frame number and the text after it.
_Sequence = tuple[str, str, str]


def _numbered(key: Path, suffixes: Sequence[str] = ()) -> tuple[_Sequence, int] | None:
    """``key`` (a relative name) as a numbered frame: its sequence and its number (the last number
    of the name, see :func:`naming.last_number_span`), the name read without the suffix of ``suffixes`` ending
    it (a mask's ``frame_0007_mask`` is frame 7 of the sequence ``frame_``); None without a number."""
    folder, _, name = name_key(key, fold=True).rpartition("/")
    for suffix in suffixes:
        if suffix and name.endswith(suffix.casefold()) and len(name) > len(suffix):
            name = name[: len(name) - len(suffix)]
            break
    span = last_number_span(name)
    if span is None:
        return None
    start, end = span
    return (folder, name[:start], name[end:]), int(name[start:end])


def _sequences(keys: Sequence[Path], suffixes: Sequence[str] = ()) -> dict[_Sequence, dict[int, Path]]:
    """The numbered names among ``keys`` by sequence, each as ``{number: key}`` (the first key of a
    number, where two are padded otherwise: see :func:`_numbered`)."""
    found: dict[_Sequence, dict[int, Path]] = {}
    for key in keys:
        if (numbered := _numbered(key, suffixes)) is not None:
            found.setdefault(numbered[0], {}).setdefault(numbered[1], key)
    return found


def offset_note(inputs: LayoutInputs, matched: dict[Path, Path], unpaired: list[Path],
                orphans: list[Path]) -> list[str]:
    """The note on a mask sequence numbered from another number than its photos' (masks
    ``frame_0000`` ... ``frame_0004`` beside photos ``frame_0001`` ... ``frame_0005``, each mask
    likely the next photo's), which pairing by name pairs one off, or not at all: a sequence of the
    same folder and text around the number where some photos have no mask (``unpaired``) and some
    masks no photo (``orphans``), and the masks' numbers are the photos' shifted by one constant.
    None (an empty list) for ordinary missing masks."""
    if not unpaired or not orphans:
        return []
    photos = _sequences(list(inputs.images))
    masks = _sequences(list(inputs.masks), inputs.suffixes)
    candidates = {sequence for sequence, _ in filter(None, (_numbered(key) for key in unpaired))}
    candidates &= {sequence for sequence, _ in filter(None, (_numbered(key, inputs.suffixes) for key in orphans))}
    offset: list[tuple[_Sequence, int]] = []
    for sequence in sorted(candidates):
        photo_numbers, mask_numbers = photos[sequence], masks[sequence]
        if len(photo_numbers) < 2 or len(photo_numbers) != len(mask_numbers):
            continue
        shift = min(mask_numbers) - min(photo_numbers)
        if shift and {number + shift for number in photo_numbers} == mask_numbers.keys():
            offset.append((sequence, shift))
    if not offset:
        return []
    sequence, shift = offset[0]
    photo_numbers, mask_numbers = photos[sequence], masks[sequence]
    photo = inputs.images[photo_numbers[min(photo_numbers)]][0]
    mask = inputs.masks[mask_numbers[min(mask_numbers)]][0]
    alike = sum(1 for key in photo_numbers.values() if key in matched)
    paired = (f", so {count_noun(alike, 'photo')} {'was' if alike == 1 else 'were'} paired with the mask of "
              f"{'its' if alike == 1 else 'their'} own number" if alike else "")
    more = f" ({count_noun(len(offset) - 1, 'more sequence')} alike)" if len(offset) > 1 else ""
    return [f"the masks are numbered from {min(mask_numbers)} and the photos from {min(photo_numbers)} (e.g. "
            f"{mask} and {photo}){more}: if mask N belongs to photo N{-shift:+d}, rename the masks; pairs are made "
            f"by name{paired}"]


def _mask_words_in(text: str) -> set[str]:
    """The words of _MASK_WORDS that ``text`` holds."""
    return {word for word in _MASK_WORDS if word in text}


# What may join a mask word to the rest of a name (plate_matte, matte.plate, plate-alpha, plate mask).
_WORD_SEPARATORS = frozenset("_.- ")
# Every mask word, with the separator before it or the one after it (plate_alpha_mask. -> plate.).
_WORDS_PATTERN = "|".join(map(re.escape, _MASK_WORDS))
_MASK_WORD_AFTER_SEPARATOR = re.compile(f"[-_. ]?(?:{_WORDS_PATTERN})")
_MASK_WORD_BEFORE_SEPARATOR = re.compile(f"(?:{_WORDS_PATTERN})[-_. ]?")


def _without_mask_word(before: str) -> tuple[set[str], bool]:
    """The texts ``before`` (the text before a mask's frame number) leaves with one mask word taken
    out, with the separator before it, the one after it or neither (``plate_matte.`` -> ``plate.``,
    ``frame_mask_`` -> ``frame_``), and with every mask word taken out (``plate_alpha_mask.`` ->
    ``plate.``); and whether ``before`` is a mask word alone (``mask_``, ``matte.``, ``alpha``),
    which fits the photos of any name."""
    texts: set[str] = set()
    for word in _MASK_WORDS:
        start = before.find(word)
        while start != -1:
            end = start + len(word)
            texts.add(before[:start] + before[end:])
            if start and before[start - 1] in _WORD_SEPARATORS:
                texts.add(before[:start - 1] + before[end:])
            if before[end:end + 1] in _WORD_SEPARATORS:
                texts.add(before[:start] + before[end + 1:])
            start = before.find(word, start + 1)
    for pattern in (_MASK_WORD_AFTER_SEPARATOR, _MASK_WORD_BEFORE_SEPARATOR):
        texts.add(pattern.sub("", before))
    alone = "" in texts  # mask words only (``alpha_matte_``, ``seg_mask_``): fits the photos of any name
    texts.discard(before)
    return texts, alone


def _numbers_in_common(mask_numbers: dict[int, Path], photo_numbers: dict[int, Path]) -> set[int]:
    """The frame numbers of a mask sequence that a photo sequence has too."""
    return mask_numbers.keys() & photo_numbers.keys()  # a dict view's & runs over the smaller of the two


def renamed_masks_note(inputs: LayoutInputs, unpaired: list[Path], orphans: list[Path], tried: str) -> list[str]:
    """The note on masks without a photo named as photos without a mask but for a mask word in the
    text before the frame number (``plate_matte.0001`` for ``plate.0001``, ``frame_mask_00001`` for
    ``frame_00001``), or with a mask word for that whole text (``mask_00001`` for ``frame_00001``):
    the same folder, the same text after the number and numbers in common. It counts such masks
    and names the sequence with the most. Never a pair (a guess), a hint to rename them, ``tried``
    saying which names pair. None (an empty list) where no such masks are found.

    Each mask sequence is looked up among the photos' by the texts it leaves without its mask word
    (see :func:`_without_mask_word`), so the note costs time in proportion to the names, not to
    their square (a folder of N photos each with a mask of another name)."""
    if not unpaired or not orphans:
        return []
    photos = _sequences(unpaired)
    masks = _sequences(orphans, inputs.suffixes)
    # The photo sequences by folder and text after the number, for a mask word alone: in name order.
    around: dict[tuple[str, str], list[_Sequence]] = {}
    for sequence in sorted(photos):
        around.setdefault((sequence[0], sequence[2]), []).append(sequence)
    count = 0
    best: tuple[int, Path, Path] | None = None  # numbers in common, a mask and its photo
    for (folder, before, after), mask_numbers in sorted(masks.items()):
        words = _mask_words_in(before)
        if not words:
            continue
        texts, alone = _without_mask_word(before)
        fitting = (around.get((folder, after), []) if alone else
                   sorted(sequence for text in texts if (sequence := (folder, text, after)) in photos))
        fits: tuple[int, Path, Path] | None = None
        for sequence in fitting:
            if sequence[1] == before or words <= _mask_words_in(sequence[1]):
                continue
            photo_numbers = photos[sequence]
            shared = _numbers_in_common(mask_numbers, photo_numbers)
            if shared and (fits is None or len(shared) > fits[0]):
                number = min(shared)
                fits = (len(shared), mask_numbers[number], photo_numbers[number])
        if fits is not None:
            count += fits[0]
            if best is None or fits[0] > best[0]:
                best = fits
    if best is None:
        return []
    _, mask_key, photo_key = best
    mask, photo = inputs.masks[mask_key][0], inputs.images[photo_key][0]
    return [f"{count_noun(count, 'mask')} without an image {'is' if count == 1 else 'are'} numbered as photos "
            f"without a mask and named otherwise before the number, e.g. {mask.name} for {photo.name}: a mask is "
            f"paired by its photo's name, {photo_key.name}.* or {photo_key.name}_mask.* {tried}; if these are "
            f"their masks, rename them ({mask.name} -> {photo_key.name}{mask.suffix})"]
