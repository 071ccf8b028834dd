"""Pair files: image/mask pairs to refine (``images/`` + ``masks/`` or two folders of any names, the BIG
layout, or side by side), and predictions with their ground truths for scoring."""

from __future__ import annotations

import os
import re
import unicodedata
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Generic, TypeVar

from .errors import count_noun
from .imageio import IMAGE_SUFFIXES, ImageReadError, probe_image
from .writing import NameFolding, name_folding


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
MASK_EXTENSIONS = (".png", ".tif", ".tiff", ".bmp", ".webp", ".pgm", ".pbm", ".pnm", ".ppm", ".jpg", ".jpeg", ".jpe",
                   ".jfif", ".gif")
GT_SUFFIX = "_gt"
SEG_SUFFIX = "_seg"  # a BIG-layout coarse mask (<name>_seg beside <name>_im and <name>_gt)
# Prediction names tried for a ground truth <name>_gt, in this order (BIG layout, DESIGN §5).
PRED_SUFFIXES = ("_mask", "", "_seg")
# Names a mask may have after its photo's name, in any letter case (``frame_0001_mask.png``,
# ``frame_0001.matte.tif``): tried after the photo's own name in masks/, and the mask names of
# photos with their masks beside them.
MASK_NAME_SUFFIXES = ("_mask", ".mask", "-mask", "_matte", ".matte", "-matte")
# Names of the files the side-by-side layout leaves out: ground truths and coarse masks, no photos.
SIDE_BY_SIDE_LEFT_OUT = (GT_SUFFIX, "_seg")
MAX_LISTED = 20  # items named in a message (missing ground truths, label or category ids)
# Pairing.layout of each layout scan_pairs finds, and of scan_folder_pairs' (crm batch FOLDER --masks DIR).
LAYOUT_FOLDERS = "images/ + masks/ folders"
LAYOUT_MASKS_DIR = "a photos folder + a --masks folder"
LAYOUT_BIG = "BIG layout: <name>_im + <name>_seg"
LAYOUT_SIDE_BY_SIDE = "side by side: <name> + <name>_mask"

# What the hints for a folder of no known layout say that crm eval reads instead (scan_pairs' ``command``).
_EVAL_READS = "crm eval reads the BIG layout only (<name>_im + <name>_seg + <name>_gt in one folder)"

T = TypeVar("T")


class NoPairsError(FileNotFoundError):
    """The input holds nothing of the kind to pair (no images, no ground truths): the command was
    pointed at the wrong place, a usage error (exit 2) in every command (``cli.common.user_errors``
    reads ``exit_code``)."""

    exit_code = 2


@dataclass(frozen=True)
class PairFailure:
    """An image left out of the run: its name (as its pair's is or would be), its file, and why."""

    name: str
    image: Path  # or the folder that could not be read (``folder``)
    error: str  # the whole message, naming the image
    folder: bool = False  # a folder that could not be listed, not an image


@dataclass(frozen=True)
class Pairing(Generic[T]):
    """Pairs found in folders, with what could not be paired and what was left out on purpose."""

    pairs: list[T]
    failures: list[PairFailure] = field(default_factory=list)  # images without a partner: each one fails
    notes: list[str] = field(default_factory=list)  # files left out on purpose: warnings
    layout: str = ""  # scan_pairs: the layout found, in words (for the line batch prints before it runs)
    # scan_pairs: the photos and masks of the pairs left out for lying in the output folder. They are
    # still inputs: an output path that is one of them must not be skipped as done or written over.
    left_out_inputs: list[Path] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """The message of each failure, in order."""
        return [failure.error for failure in self.failures]

    @property
    def unreadable_folders(self) -> list[PairFailure]:
        """The failures that are folders which could not be listed (``PairFailure.folder``)."""
        return [failure for failure in self.failures if failure.folder]

    @property
    def unpaired_photos(self) -> list[PairFailure]:
        """The failures that are photos (without their one mask), not folders."""
        return [failure for failure in self.failures if not failure.folder]


def _format_rank(suffix: str) -> int:
    """The place of the extension ``suffix`` (lower case) in MASK_EXTENSIONS; after them all if it is none of them."""
    return MASK_EXTENSIONS.index(suffix) if suffix in MASK_EXTENSIONS else len(MASK_EXTENSIONS)


def _preference(path: Path) -> tuple[int, str]:
    """Sort key of files that share a name: the format's place in MASK_EXTENSIONS, then the file name."""
    return _format_rank(path.suffix.lower()), path.name


def _duplicate_note(used: Path, ignored: Path) -> str:
    """The warning for a file left out because another format of the same name is used."""
    order = ", ".join(suffix[1:] for suffix in MASK_EXTENSIONS)
    return f"{ignored} ignored: {used} has the same name and is used (format order: {order})"


def _under(real: str, folder: str | None) -> bool:
    """True when the resolved path ``real`` is the resolved folder ``folder`` or lies below it."""
    return folder is not None and (real == folder or real.startswith(folder.rstrip(os.sep) + os.sep))


@dataclass
class _Walk:
    """What :func:`_walk` found below a folder."""

    files: list[Path] = field(default_factory=list)  # visible files of the formats asked for, in natural_key order
    inside: list[Path] = field(default_factory=list)  # the same, lying in the excluded folder
    broken: list[Path] = field(default_factory=list)  # visible links whose target is gone
    others: dict[str, int] = field(default_factory=dict)  # other visible files: count by extension
    # Folders not searched (outside the excluded folder): another path to a folder searched already
    # (a linked alias), or a link to the walk's folder or one around it (a loop); each with the real
    # folder it leads to.
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # Paths not taken because they lead into the walk's ``apart`` folder (a link to a mask file, a
    # folder of masks), each with the real path it leads to.
    apart: list[tuple[Path, str]] = field(default_factory=list)
    # Folders that could not be listed (no permission, an I/O error), each with the reason in words.
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def _unreadable_failures(unreadable: list[tuple[Path, str]]) -> list[PairFailure]:
    """A failure for each folder that could not be listed: whatever pairs it holds were not found, so a
    run that goes on without them has not done all it was asked to (exit 1), and says which folder."""
    return [PairFailure(str(folder), folder, f"cannot read the folder {folder} ({reason}): its files were not paired",
                        folder=True) for folder, reason in unreadable]


def _unreadable_reason(walked: _Walk, folder: Path) -> str | None:
    """Why the walk could not list ``folder`` itself (its own folder), or None when it could."""
    return next((reason for path, reason in walked.unreadable if path == folder), None)


def _unreadable_hint(unreadable: list[tuple[Path, str]]) -> str:
    """For a NoPairsError: the folders that could not be listed (they may hold the pairs), or ""."""
    if not unreadable:
        return ""
    folder, reason = unreadable[0]
    return f"; cannot read {count_noun(len(unreadable), 'folder')} in it, e.g. {folder} ({reason})"


def _walk(folder: Path, suffixes: Sequence[str], exclude: str | None = None, follow: bool = True,
          skip: Sequence[str] = (), apart: str | None = None, real: str | None = None) -> _Walk:
    """The visible files below ``folder`` whose extension (any case) is one of ``suffixes``.

    Hidden files and folders (a name starting with a dot: ``.DS_Store``, AppleDouble ``._x.png``)
    are skipped, and so are the top-level entries named in ``skip``. Linked folders are followed
    (``follow``), each real folder searched once: every folder reached without a link first, then
    the linked ones in name order, round by round, so a folder is found by its own path before any
    link to it. A link to ``folder`` or to a folder around it (a loop, or the whole disk) is never
    followed. Files whose resolved path lies in the resolved folder ``exclude`` are listed apart.
    Nothing whose resolved path lies in the resolved folder ``apart`` is taken (the masks folder
    for the walk of the photos' one, and the reverse), unless ``folder`` lies there itself: the
    files and folders leading there are listed in ``apart``. ``real`` is ``folder`` resolved, where
    the caller has resolved it already.
    One ``os.scandir`` per folder and a path resolved per link and per folder only: 20,000 frames
    are listed in well under a second.
    """
    found = _Walk()
    start = real if real is not None else os.path.realpath(folder)
    if _under(start, apart):
        apart = None  # the walk's own folder lies there: leaving that out would leave out everything
    visited = {start}  # real paths of the folders searched, or queued to be
    queue: deque[tuple[Path, str, bool]] = deque()  # folders to search: path, real path, in the excluded folder
    links: list[tuple[Path, bool]] = []  # linked folders met, followed once no folder is left in queue

    def visit(directory: Path, real: str, excluded: bool) -> None:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except FileNotFoundError:  # gone meanwhile: nothing to pair there
            return
        except OSError as exc:
            # What lies in the excluded (output) folder is never paired, and a file system's lost+found
            # (root's, mode 0700, at the top of every ext4 mount) holds no input: neither is missed.
            if not excluded and directory.name != "lost+found":
                found.unreadable.append((directory, exc.strerror or str(exc)))
            return
        for entry in entries:
            name = entry.name
            if name.startswith(".") or (directory == folder and name in skip):
                continue
            path = directory / name
            try:
                is_dir = entry.is_dir(follow_symlinks=follow)
                link = entry.is_symlink()
            except OSError:
                continue
            if is_dir:
                if link:
                    links.append((path, excluded))
                else:
                    below = os.path.join(real, name)
                    if _under(below, apart):
                        found.apart.append((path, below))
                    elif below in visited:  # reached through a link before: searched already
                        if not excluded:  # what lies in the excluded folder is no input
                            found.skipped.append((path, below))
                    else:
                        visited.add(below)
                        queue.append((path, below, excluded or _under(below, exclude)))
                continue
            suffix = os.path.splitext(name)[1].lower()
            try:
                is_file = entry.is_file()
            except OSError:
                is_file = False
            if not is_file:
                if link and not os.path.exists(path) and suffix in suffixes:
                    found.broken.append(path)
                continue
            if suffix not in suffixes:
                found.others[suffix] = found.others.get(suffix, 0) + 1
                continue
            target = os.path.realpath(path) if link else ""
            if link and _under(target, apart):
                found.apart.append((path, target))
                continue
            inside = excluded or (link and _under(target, exclude))
            (found.inside if inside else found.files).append(path)

    queue.append((folder, start, _under(start, exclude)))
    while queue or links:
        if not queue:  # every folder reachable so far without a link is searched: the links met, in order
            met, links[:] = links[:], []
            for path, excluded in met:
                below = os.path.realpath(path)
                if _under(below, apart):
                    found.apart.append((path, below))
                elif below in visited or _under(start, below):  # an alias, or a loop back around the walk
                    if not excluded:
                        found.skipped.append((path, below))
                else:
                    visited.add(below)
                    queue.append((path, below, excluded or _under(below, exclude)))
            continue
        visit(*queue.popleft())
    found.files.sort(key=natural_key)
    found.inside.sort(key=natural_key)
    found.broken.sort()
    found.apart.sort()
    return found


def _skipped_note(*walks: _Walk) -> list[str]:
    """The note on the linked folders the walks did not follow (none: no note)."""
    skipped = [item for walk in walks for item in walk.skipped]
    if not skipped:
        return []
    path, real = skipped[0]
    return [f"{count_noun(len(skipped), 'linked folder')} skipped, e.g. {path} -> {real}: each leads to a folder "
            "searched already or to one holding the folder searched (each folder is searched once)"]


def _apart_note(walk: _Walk, other: Path, given: str, masks: bool = True) -> list[str]:
    """The note on the paths of one folder that lead into the ``other`` one (resolved: ``given``;
    none: no note): into the masks folder for the walk of the photos' one (``masks``), else into
    the photos' folder.

    The other folder itself, met as a folder rather than through a link of the walk's own (``crm
    batch shots --masks shots/mattes``, or ``--masks m`` where ``m -> shots/mattes``), is left out
    without a note: it was named as the other folder."""
    apart = [(path, real) for path, real in walk.apart if real != given or os.path.islink(path)]
    if not apart:
        return []
    path, real = apart[0]
    kind, taken, instead = ("masks", "a mask", "a photo") if masks else ("photos", "a photo", "a mask")
    return [f"{count_noun(len(apart), 'path')} leading into the {kind} folder skipped, e.g. {path} -> {real}: "
            f"what lies in {other} is {taken}, not {instead}"]


def _keyed(files: list[Path], folder: Path, tag: str = "") -> dict[Path, list[Path]]:
    """``{relative/name: files}`` of ``files`` below ``folder`` named ``<name><tag>.<ext>`` (all of
    them when ``tag`` is empty)."""
    found: dict[Path, list[Path]] = {}
    for path in files:
        stem = path.stem
        if tag and not (stem.endswith(tag) and len(stem) > len(tag)):
            continue
        relative = path.relative_to(folder)
        found.setdefault(relative.with_name(stem[: len(stem) - len(tag)]), []).append(path)
    return found


def _mask_suffix(stem: str) -> str | None:
    """The suffix of MASK_NAME_SUFFIXES (any case) that ends ``stem`` after a name, if one does."""
    lowered = stem.lower()
    for suffix in MASK_NAME_SUFFIXES:
        if lowered.endswith(suffix) and len(stem) > len(suffix):
            return suffix
    return None


def _name_key(key: Path, fold: bool = False) -> str:
    """A name as it is compared: Unicode NFC (macOS writes names decomposed, other systems composed,
    and the two look the same), and case-folded when ``fold``."""
    text = unicodedata.normalize("NFC", key.as_posix())
    return text.casefold() if fold else text


# ASCII digits only: a name's other digits (Arabic-Indic, full-width...) are letters like any other.
_DIGITS = frozenset("0123456789")


def _last_number(name: str) -> tuple[int, int] | None:
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
    span = _last_number(name)
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


def _number_key(key: Path) -> str:
    """A name as :func:`_match`'s zero-padding rounds compare it: NFC, case-folded, and the last
    number of its last part read without its zeros (see :func:`_unpadded`), so frames numbered with
    other zero-padding (``frame_7``, ``frame_0007``, ``frame_000007_mask``: ffmpeg's ``%d``,
    ``%04d``, ``%06d``) have one key; its folders and other numbers are compared as they are."""
    return _padding_key(_name_key(key, fold=True))


def _padding_key(folded: str) -> str:
    """:func:`_number_key` of a name already in NFC and case-folded (``folded``)."""
    folder, slash, name = folded.rpartition("/")
    return folder + slash + _unpadded(name)


@dataclass
class _Matched:
    """What :func:`_match` found: ``{image name: mask name}``, the image names several mask names
    fit, the image names whose one fitting mask name fits other images as well (with it, the
    image names competing for it, in order), and the image names matched only with zero-padding
    ignored."""

    matched: dict[Path, Path] = field(default_factory=dict)
    ambiguous: dict[Path, list[Path]] = field(default_factory=dict)
    contested: dict[Path, tuple[Path, list[Path]]] = field(default_factory=dict)
    padded: set[Path] = field(default_factory=set)

    def taken(self) -> set[Path]:
        """The mask names that fit an image: matched, or among the fits of a failure."""
        return {*self.matched.values(), *(mask for fits in self.ambiguous.values() for mask in fits),
                *(mask for mask, _ in self.contested.values())}


def _side_by_side(files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The photos and the masks among ``files``, told apart in each folder by the names beside them:
    a file whose own mask name (``<stem>_mask.*``, ``<stem>-matte.*``...) lies beside it is a photo;
    else a file named ``<name>`` + a suffix of MASK_NAME_SUFFIXES is a mask when ``<name>.*`` lies
    beside it. A file so named whose ``<name>.*`` is missing is a mask as well (one without its
    photo, which pairing leaves out with a note) when another file of its folder with the same
    suffix is the mask of a photo beside it: ``b_mask.png`` beside ``a.jpg`` + ``a_mask.png``. Any
    other file is a photo: ``ski-mask.jpg`` alone, whether its folder holds no pair or only pairs
    of other suffixes (``a.jpg`` + ``a_mask.png``), is a photo without its mask. Names are compared
    as :func:`_match` compares them at the most: in NFC, letter case and zero-padding ignored
    (``frame_0001_mask.png`` beside ``frame_1.png`` is its mask, ``B_MASK.png`` has the suffix
    ``_mask``)."""
    folded = [_number_key(Path(path.stem)) for path in files]
    beside: dict[Path, set[str]] = {}
    for path, stem in zip(files, folded, strict=True):
        beside.setdefault(path.parent, set()).add(stem)
    is_mask: list[bool] = []
    # Files named like a mask whose photo is missing (index in files, suffix): which they are, photos
    # or masks, is known once every mask of a photo beside it is.
    pending: list[tuple[int, str]] = []
    paired: set[tuple[Path, str]] = set()  # (folder, suffix) of each mask whose photo lies beside it
    for index, (path, stem) in enumerate(zip(files, folded, strict=True)):
        names = beside[path.parent]
        suffix = _mask_suffix(stem)
        if suffix is None or any(stem + own in names for own in MASK_NAME_SUFFIXES):
            is_mask.append(False)
            continue
        mask = stem[: -len(suffix)] in names
        if mask:
            paired.add((path.parent, suffix))
        else:
            pending.append((index, suffix))
        is_mask.append(mask)
    for index, suffix in pending:
        is_mask[index] = (files[index].parent, suffix) in paired
    photos = [path for path, mask in zip(files, is_mask, strict=True) if not mask]
    masks = [path for path, mask in zip(files, is_mask, strict=True) if mask]
    return photos, masks


def _match(images: Sequence[Path], masks: Sequence[Path], suffixes: Sequence[str]) -> _Matched:
    """Pair image names with mask names.

    The mask of ``<name>`` is ``<name><suffix>`` for a suffix of ``suffixes`` (``""``: the same
    name), in up to six rounds, each only among the masks no earlier round took: the same name,
    then a suffixed one, then the same two with letter case ignored, then with zero-padding ignored
    too in the last number of the name (``frame_1`` and ``frame_0001``, see :func:`_number_key`).
    Names are compared in Unicode NFC. Within a round two fitting masks make the image ambiguous,
    and a mask that fits several images goes to none of them (``Cat`` and ``cat`` for ``CAT``):
    failures, never a guess. In the zero-padding rounds the images paired already count among
    those a mask fits, so of photos ``a_1`` and ``a_01`` neither takes a mask by its padding. Each
    name is put in NFC and case-folded once at the most across the forms (each form builds on the
    one before), and the masks are indexed once per form, only where an earlier form left an image
    unpaired: linear in the names.
    """
    same, suffixed = tuple(s for s in suffixes if not s), tuple(s for s in suffixes if s)
    found = _Matched()
    used: set[Path] = set()

    def unpaired(key: Path) -> bool:
        return key not in found.matched and key not in found.ambiguous and key not in found.contested

    # Each name put in NFC and case-folded once at the most, whatever the rounds it takes part in.
    nfc: dict[Path, str] = {}
    folded: dict[Path, str] = {}

    def as_is(key: Path) -> str:
        if key not in nfc:
            nfc[key] = _name_key(key)
        return nfc[key]

    def case_folded(key: Path) -> str:
        if key not in folded:
            folded[key] = as_is(key).casefold()
        return folded[key]

    def padding_ignored(key: Path) -> str:
        return _padding_key(case_folded(key))

    # The forms names are compared in, one after the other: as they are, then with letter case
    # ignored, then with zero-padding ignored as well.
    for form in (as_is, case_folded, padding_ignored):
        if not any(unpaired(key) for key in images):
            break
        padding = form is padding_ignored
        names = {key: form(key) for key in images if padding or unpaired(key)}
        index: dict[str, list[Path]] = {}
        for key in masks:
            if key not in used:
                index.setdefault(form(key), []).append(key)
        for round_suffixes in (same, suffixed):
            if not round_suffixes:
                continue
            fitting: dict[Path, list[Path]] = {}
            claimants: dict[Path, list[Path]] = {}  # mask name: the image names it fits in this round
            for key, name in names.items():
                free = unpaired(key)
                if not (free or padding):
                    continue
                fits = [mask for suffix in round_suffixes for mask in index.get(name + suffix, ())
                        if mask not in used]
                if fits and free:
                    fitting[key] = fits
                for mask in fits:
                    claimants.setdefault(mask, []).append(key)
            for key, fits in fitting.items():
                if len(fits) > 1:
                    found.ambiguous[key] = fits
                elif len(claimants[fits[0]]) > 1:
                    found.contested[key] = (fits[0], claimants[fits[0]])
                    used.add(fits[0])
                else:
                    found.matched[key] = fits[0]
                    used.add(fits[0])
                    if padding:
                        found.padded.add(key)
    return found


def listed(items: Sequence[Any], limit: int = MAX_LISTED) -> str:
    """``a, b, c`` for a message, with the count of the items past ``limit``."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _pick(files: list[Path], notes: list[str]) -> Path:
    """The file used among files of one name (see :func:`_preference`); a note for each one left out."""
    used, *ignored = sorted(files, key=_preference)
    notes.extend(_duplicate_note(used, path) for path in ignored)
    return used


def _formats_hint(walked: _Walk) -> str:
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
    extension or mask suffix, letter case and zero-padding ignored: see :func:`_number_key`), one file
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
                    suffix = _mask_suffix(stem)
                    key = _number_key(path.relative_to(folder).with_name(stem[: len(stem) - len(suffix)]
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
    :func:`scan_pairs`): crm train is told to name them images/ and masks/, and crm eval that it
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
        if not _under(real_root, real):  # a link to root or to a folder around it: no folder of photos
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


def _layout_hint(root: Path, command: str = "crm batch") -> str:
    """Why ``root`` has no images/ + masks/ layout when it holds one of the two folders, or, holding
    neither, two of its folders that hold images of the same names (:func:`_sibling_hint`); worded
    for ``command`` (see :func:`scan_pairs`)."""
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


@dataclass
class _Inputs:
    """One layout's files before they are paired: photos, masks and ground truths keyed by relative
    name (see :func:`_keyed`), and what the messages of :func:`_pair_inputs` say of the layout."""

    layout: str
    images: dict[Path, list[Path]]
    masks: dict[Path, list[Path]]
    suffixes: tuple[str, ...]  # the mask of <name> is <name><suffix> for one of them (see _match)
    images_inside: dict[Path, list[Path]] = field(default_factory=dict)  # photos in the excluded folder
    masks_inside: dict[Path, list[Path]] = field(default_factory=dict)  # masks in the excluded folder
    gts: dict[Path, list[Path]] = field(default_factory=dict)  # ground truths (BIG layout)
    broken: list[Path] = field(default_factory=list)  # links to missing files
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # folders that could not be listed, why
    notes: list[str] = field(default_factory=list)
    masks_dir: Path | None = None  # the masks' own folder (folder layouts): named where a photo's mask is missing
    # Side by side, a guess: the folder searched, for the NoPairsError when not one photo fits a mask
    # (then the folder holds another layout), and the command its hints name (scan_pairs' ``command``).
    guessed_in: Path | None = None
    command: str = "crm batch"


def _outside(real: str, excluded: str | None) -> str | None:
    """``excluded`` (a resolved folder), or None when the resolved input folder ``real`` lies in it:
    an output folder around an input folder holds it whole, and nothing of it is an output."""
    return None if _under(real, excluded) else excluded


def _folder_inputs(images_dir: Path, masks_dir: Path, excluded: str | None, layout: str, root: Path,
                   real: tuple[str, str] | None = None) -> _Inputs:
    """The photos below ``images_dir`` and the masks below ``masks_dir``, ``root`` being the folder
    the messages name; ``real`` is the two folders resolved, where the caller has resolved them
    already (each is resolved once). Each folder is walked without what lies in the other (see
    :func:`_walk`'s ``apart``): a path of one that leads into the other (a link, or the other folder
    inside it) is skipped with a note, so no mask is taken for a photo and no photo for a mask.
    Raises NoPairsError when there is no photo."""
    real_images, real_masks = real if real is not None else (os.path.realpath(images_dir),
                                                             os.path.realpath(masks_dir))
    found_images = _walk(images_dir, IMAGE_SUFFIXES, _outside(real_images, excluded), apart=real_masks,
                         real=real_images)
    found_masks = _walk(masks_dir, IMAGE_SUFFIXES, _outside(real_masks, excluded), apart=real_images,
                        real=real_masks)
    images = _keyed(found_images.files, images_dir)
    if not images:
        holder = "it" if root == images_dir else str(images_dir)
        if (reason := _unreadable_reason(found_images, images_dir)) is not None:
            raise NoPairsError(f"{root}: no pairs found; cannot read {holder} ({reason})")
        raise NoPairsError(f"{root}: no pairs found; {holder} holds no image files"
                           + _unreadable_hint(found_images.unreadable) + _formats_hint(found_images)
                           + "".join(f"; {note}" for note in _apart_note(found_images, masks_dir, real_masks)))
    notes = (_skipped_note(found_images, found_masks) + _apart_note(found_images, masks_dir, real_masks)
             + _apart_note(found_masks, images_dir, real_images, masks=False))
    return _Inputs(layout, images, _keyed(found_masks.files, masks_dir), ("", *MASK_NAME_SUFFIXES),
                   images_inside=_keyed(found_images.inside, images_dir),
                   masks_inside=_keyed(found_masks.inside, masks_dir),
                   broken=found_images.broken + found_masks.broken,
                   unreadable=found_images.unreadable + found_masks.unreadable, notes=notes, masks_dir=masks_dir)


def _side_by_side_inputs(walked: _Walk, root: Path, command: str = "crm batch") -> _Inputs:
    """:func:`scan_pairs`' side-by-side layout of the files ``walked`` found below ``root``, with
    notes for the files left out. Raises NoPairsError when no folder holds both a photo and a mask,
    its hints worded for ``command``."""
    notes = _skipped_note(walked)
    # A photo's own mask beside it makes it a photo whatever its name (ski-mask.jpg + ski-mask_mask.png).
    photos, named = _side_by_side([*walked.files, *walked.inside])
    # Ground truths and coarse masks of the BIG layout's names (a_gt.png, a_seg.png beside a.jpg) are
    # no photos to refine.
    left_out = {path for path in photos if any(path.stem.endswith(tag) and len(path.stem) > len(tag)
                                               for tag in SIDE_BY_SIDE_LEFT_OUT)}
    in_output = set(walked.inside)
    images = _keyed([path for path in photos if path not in left_out and path not in in_output], root)
    every_photo = images  # before the folders without a mask are left out: the two-formats hint reads them
    masks = _keyed([path for path in named if path not in in_output], root)
    images_inside = _keyed([path for path in photos if path not in left_out and path in in_output], root)
    masks_inside = _keyed([path for path in named if path in in_output], root)
    if shown := sorted((path for path in left_out if path not in in_output), key=natural_key):
        notes.append(f"{count_noun(len(shown), 'file')} named *{GT_SUFFIX}/*_seg left out: {listed(shown, 5)} "
                     "(taken for ground truths or coarse masks, not photos)")
    # A folder without one mask (an earlier output folder, photos not masked yet) is no part of the layout.
    with_masks = {key.parent for key in masks}
    maskless = [files[0] for key, files in images.items() if key.parent not in with_masks]
    images = {key: files for key, files in images.items() if key.parent in with_masks}
    if maskless and masks:
        notes.append(f"{count_noun(len(maskless), 'photo')} in folders without any <name>_mask.* mask not "
                     f"paired, e.g. {maskless[0]}")
    if not images or not masks:
        if (reason := _unreadable_reason(walked, root)) is not None:
            raise NoPairsError(f"{root}: no pairs found; cannot read it ({reason})")
        raise NoPairsError(f"{root}: no pairs found; expected images/ and masks/ folders, <name>_im.* with "
                           "<name>_seg.* (BIG layout), or photos with their masks beside them named "
                           "<name>_mask.*" + _unreadable_hint(walked.unreadable)
                           + (_two_formats_hint(every_photo, root) or _layout_hint(root, command)
                              or _formats_hint(walked)))
    return _Inputs(LAYOUT_SIDE_BY_SIDE, images, masks, MASK_NAME_SUFFIXES, images_inside, masks_inside,
                   broken=walked.broken, unreadable=walked.unreadable, notes=notes, guessed_in=root, command=command)


def _two_formats_hint(images: dict[Path, list[Path]], root: Path) -> str:
    """For a folder below ``root`` taken for the side-by-side layout in which no pair was found: the
    names held in two formats (``frame_0001.jpg`` + ``frame_0001.png``), one photo by the format rule
    (see :func:`_preference`) but maybe a photo and its mask, as a hint naming how to pair them in
    words that say what each command that reads the folder takes (crm batch, train, eval); "" when no name
    is held in exactly two formats. The masks' format is the one whose file of the first such name
    reads as a mask while the other does not, else the one :func:`_preference` puts first (lossless:
    PNG before JPEG)."""
    combinations: dict[tuple[str, str], list[list[Path]]] = {}
    for files in images.values():
        formats = sorted({path.suffix.lower() for path in files}, key=_format_rank)
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
    of the name, see :func:`_last_number`), the name read without the suffix of ``suffixes`` ending
    it (a mask's ``frame_0007_mask`` is frame 7 of the sequence ``frame_``); None without a number."""
    folder, _, name = _name_key(key, fold=True).rpartition("/")
    for suffix in suffixes:
        if suffix and name.endswith(suffix.casefold()) and len(name) > len(suffix):
            name = name[: len(name) - len(suffix)]
            break
    span = _last_number(name)
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


def _offset_note(inputs: _Inputs, matched: dict[Path, Path], unpaired: list[Path],
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


def _renamed_masks_note(inputs: _Inputs, unpaired: list[Path], orphans: list[Path], tried: str) -> list[str]:
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


def _unread_around(folder: Path, inputs: _Inputs) -> Path | None:
    """The folder among ``inputs.unreadable`` that is ``folder`` or holds it, or None."""
    return next((path for path, _ in inputs.unreadable if path == folder or path in folder.parents), None)


def _pair_inputs(inputs: _Inputs, exclude: Path | None) -> Pairing[FilePair]:
    """Pair each photo of ``inputs`` with its mask: the pairs, a failure for each photo without its
    one mask, and notes on the files left out (see :func:`scan_pairs`); ``exclude`` is the output
    folder as given, for the messages."""
    images, masks = inputs.images, inputs.masks
    big = inputs.layout == LAYOUT_BIG
    notes = list(inputs.notes)
    matches = _match(list(images), list(masks), inputs.suffixes)
    matched, ambiguous, contested = matches.matched, matches.ambiguous, matches.contested
    if inputs.guessed_in is not None and not matched and not ambiguous and not contested:
        root = inputs.guessed_in
        raise NoPairsError(f"{root}: no pairs found; no photo <name>.* has its mask <name>_mask.* beside it, and "
                           "there are no <name>_im.* with <name>_seg.* (BIG layout) nor images/ and masks/ folders"
                           + _unreadable_hint(inputs.unreadable)
                           + (_two_formats_hint(images, root) or _layout_hint(root, inputs.command)))
    gt_names = _match(list(images), list(inputs.gts), ("",)).matched if inputs.gts else {}
    tried = f"(or {', '.join(MASK_NAME_SUFFIXES[1:])})"
    pairs: list[FilePair] = []
    failures = _unreadable_failures(inputs.unreadable)
    duplicates: list[str] = []  # files left out for another format of their name: named up to MAX_LISTED
    padded: list[str] = []  # the pairs matched only with zero-padding ignored, as "image + mask"
    for key, image_files in images.items():
        image = _pick(image_files, duplicates)
        if key in matched:
            mask = _pick(masks[matched[key]], duplicates)
            gt = _pick(inputs.gts[gt_names[key]], duplicates) if key in gt_names else None
            output = key.with_name(key.name + ("_mask.png" if big else ".png"))
            pairs.append(FilePair(str(key), image, mask, output, gt))
            if key in matches.padded:
                padded.append(f"{image} + {mask}")
            continue
        if key in ambiguous:
            fits = [str(_pick(masks[mask], [])) for mask in ambiguous[key]]
            error = f"{image}: {len(fits)} masks fit it, {listed(fits)}: rename or remove all but one"
        elif key in contested:
            mask_name, rivals = contested[key]
            fitted = [str(_pick(images[rival], [])) for rival in rivals]
            error = (f"{image}: the mask {_pick(masks[mask_name], [])} fits {len(fitted)} photos, {listed(fitted)}: "
                     "name it as one of them exactly (letter case too), and the others' masks as theirs")
        elif big:
            error = f"{image}: no matching {key.name}_seg.* mask"
        elif inputs.masks_dir is not None and (unread := _unread_around(inputs.masks_dir / key.parent, inputs)):
            error = f"{image}: its mask cannot be looked for: the folder {unread} cannot be read"
        elif inputs.masks_dir is not None:
            error = (f"{image}: no mask {key.name}.* or {key.name}_mask.* {tried} under "
                     f"{inputs.masks_dir / key.parent}"
                     + (f" (one lies in the output folder {exclude}, which is never read)"
                        if key in inputs.masks_inside else ""))
        else:
            error = f"{image}: no mask {key.name}_mask.* {tried} beside it"
        failures.append(PairFailure(str(key), image, error))
    if inputs.guessed_in is not None and failures:
        # Side by side, a name held in two formats whose file used fails for want of a mask may be a
        # photo and its mask (a.jpg + a.png): said when no pair is found at all, and here beside pairs.
        failed = {Path(failure.name) for failure in failures}
        if hint := _two_formats_hint({key: files for key, files in images.items() if key in failed},
                                     inputs.guessed_in):
            notes.append(hint.removeprefix("; "))
    if padded:
        notes.append(f"{count_noun(len(padded), 'pair')} matched only by ignoring zero-padding in the last number of "
                     f"the name, e.g. {padded[0]}")
    notes += duplicates[:MAX_LISTED]
    if len(duplicates) > MAX_LISTED:
        notes.append(f"{len(duplicates) - MAX_LISTED} more files ignored: another format of the same name is used")
    # Input pairs whose image lies in the output folder: counted there, their masks not among the orphans.
    images_inside = {key: files for key, files in inputs.images_inside.items() if key not in images}
    inside = _match(list(images_inside), [*masks, *inputs.masks_inside], inputs.suffixes)
    used = matches.taken() | inside.taken()
    orphans = [files[0] for key, files in masks.items() if key not in used]
    if orphans:
        notes.append(f"{count_noun(len(orphans), 'mask')} without an image ignored, e.g. {orphans[0]}")
    # Numbered sequences named or numbered otherwise on the two sides: what to rename.
    unpaired = [key for key in images if key not in matched and key not in ambiguous and key not in contested]
    orphan_keys = [key for key in masks if key not in used]
    notes += _offset_note(inputs, matched, unpaired, orphan_keys)
    if inputs.masks_dir is not None:
        notes += _renamed_masks_note(inputs, unpaired, orphan_keys, tried)
    if inputs.broken:
        notes.append(f"{count_noun(len(inputs.broken), 'link')} to a missing file skipped, e.g. {inputs.broken[0]}")
    if left_out := len(inside.matched) + len(inside.ambiguous) + len(inside.contested):
        notes.append(f"{count_noun(left_out, 'input pair')} left out: inside the output folder {exclude}")
    # Still inputs, though never read: the files of those pairs, and the masks in the output folder
    # that a photo outside it would take.
    every_mask = {**masks, **inputs.masks_inside}
    left_out_inputs = [path for key, mask_key in inside.matched.items()
                       for path in (*images_inside[key], *every_mask[mask_key])]
    if inputs.masks_inside and unpaired:
        outside = _match(unpaired, list(inputs.masks_inside), inputs.suffixes)
        left_out_inputs += [path for mask_key in outside.taken() for path in inputs.masks_inside[mask_key]]
    return Pairing(pairs, failures, notes, inputs.layout, left_out_inputs)


def scan_pairs(root: Path, exclude: Path | None = None, command: str = "crm batch") -> Pairing[FilePair]:
    """Pairs under ``root``, the failures (images without their one mask), and notes (warnings).
    ``command`` is the one pairing ("crm batch", "crm eval" or "crm train"), which the hints of a
    NoPairsError name where they say how to pair two folders (only crm batch pairs any two, ``--masks``).

    Layouts, the first that applies:

    - ``root/images/**`` + ``root/masks/**`` when both folders exist: the mask of
      ``images/<path>/<name>.*`` is ``masks/<path>/<name>.*``, or else ``<name>`` followed by one
      of MASK_NAME_SUFFIXES (``<name>_mask.*``, ``<name>-matte.*``...); output ``<path>/<name>.png``.
      :func:`scan_folder_pairs` pairs two folders of any names by the same rules.
    - the BIG layout: ``<name>_im.*`` + ``<name>_seg.*`` (+ ``<name>_gt.*``) in the same folder,
      output ``<name>_mask.png``.
    - photos and masks side by side: ``<name>.*`` + ``<name>_mask.*`` (or another suffix of
      MASK_NAME_SUFFIXES), output ``<name>.png``. A file is told apart by the names beside it (see
      :func:`_side_by_side`: ``ski-mask.jpg`` with ``ski-mask_mask.png`` beside it is a photo;
      ``b_mask.png`` without ``b.*`` is a mask without an image, a note as in images/ + masks/, if
      another ``*_mask`` file beside it is a photo's mask, else a photo without its mask); files
      named ``*_gt``/``*_seg`` are left out with a note, and so are photos in folders holding no
      mask (an earlier output folder is one).

    Names are compared in Unicode NFC; where no mask has the same letter case, with case ignored;
    and where none fits so either, with the last number of the name read without its zeros
    (``frame_7`` + ``frame_0007``: frame numbers padded otherwise; folders and other numbers as
    they are, see :func:`_number_key`), with a note counting such pairs. Two masks that fit one
    photo equally, or one mask that fits several photos equally (photos ``a_1`` and ``a_01`` for
    ``a_001.png``, even where ``a_01`` has its own mask), make each such photo a failure.
    Sub-folders are searched (linked ones too, each real folder once, never a folder around the one
    searched; a note counts the links skipped) and mirrored in the output; a path in images/ that
    leads into masks/, or one in masks/ that leads into images/, is skipped (a note counts them), so
    no mask is taken for a photo and no photo for a mask. Hidden files and folders are skipped. Of
    files that share a name in several formats one is used (PNG, TIFF, BMP, WebP, JPEG, then GIF),
    with a note (``a.jpg`` and ``a.png`` give one pair, so one output); masks without an image and
    links to missing files are counted in notes. Files under ``exclude`` (the batch's own output
    folder, when it lies inside ``root``) are left out, so reruns never pair earlier outputs; a note
    counts the input pairs found there. Pairs and failures come in natural order (``frame_2``
    before ``frame_10``, see :func:`natural_key`). Where photos without a mask and masks without a
    photo are numbered sequences, a note says when the masks' numbers look shifted from the photos'
    (masks from 0, photos from 1: :func:`_offset_note`) or, in folder layouts, when the masks are
    named otherwise before the number with a mask word (``plate_matte.0001`` for ``plate.0001``:
    :func:`_renamed_masks_note`); neither is ever paired. Raises NoPairsError when there is no image
    at all (images without masks are failures instead; a folder whose names each come in two
    formats, ``a.jpg`` + ``a.png``, is told how to pair them). Outputs that would be one file on some
    disks are not checked here: see :func:`split_output_clashes`.
    """
    real = os.path.realpath(root)
    excluded = _outside(real, os.path.realpath(exclude) if exclude is not None else None)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        inputs = _folder_inputs(root / "images", root / "masks", excluded, LAYOUT_FOLDERS, root)
        stray = [path for path in _walk(root, IMAGE_SUFFIXES, excluded, follow=False, skip=("images", "masks"),
                                        real=real).files
                 if path.stem.endswith("_im") and len(path.stem) > 3]
        if stray:
            inputs.notes.append(f"{count_noun(len(stray), '*_im file')} not paired, e.g. {stray[0]}: with images/ "
                                "and masks/ folders, only those are paired")
        return _pair_inputs(inputs, exclude)
    walked = _walk(root, IMAGE_SUFFIXES, excluded, real=real)
    images = _keyed(walked.files, root, "_im")
    if not images:
        return _pair_inputs(_side_by_side_inputs(walked, root, command), exclude)
    return _pair_inputs(_Inputs(LAYOUT_BIG, images, _keyed(walked.files, root, "_seg"), ("",),
                                images_inside=_keyed(walked.inside, root, "_im"),
                                masks_inside=_keyed(walked.inside, root, "_seg"),
                                gts=_keyed(walked.files, root, GT_SUFFIX), broken=walked.broken,
                                unreadable=walked.unreadable, notes=_skipped_note(walked)), exclude)


def scan_folder_pairs(images_dir: Path, masks_dir: Path, exclude: Path | None = None) -> Pairing[FilePair]:
    """Pairs of the photos below ``images_dir`` with the masks below ``masks_dir`` (``crm batch
    FOLDER --masks DIR``), failures and notes, by the rules of :func:`scan_pairs`' images/ +
    masks/ layout; output ``<path>/<name>.png``, ``<path>`` the photo's sub-folder.

    Either folder may lie inside the other: what lies in the masks' folder is never a photo, and
    what lies in the photos' folder never a mask (links from one into the other included). Raises
    NoPairsError when the two are one folder (photos with their masks beside them are
    :func:`scan_pairs`' side-by-side layout) or the photos' folder holds no image.
    """
    real = os.path.realpath(images_dir), os.path.realpath(masks_dir)  # each folder resolved once, passed down
    if real[0] == real[1]:
        raise NoPairsError(f"{images_dir}: no pairs found; the masks folder {masks_dir} is this folder itself: "
                           "photos with their masks beside them, named <name> and <name>_mask (or -matte...), "
                           "pair without --masks (the side-by-side layout)")
    excluded = os.path.realpath(exclude) if exclude is not None else None
    return _pair_inputs(_folder_inputs(images_dir, masks_dir, excluded, LAYOUT_MASKS_DIR, images_dir, real),
                        exclude)


def ground_truth_pairs(found: Pairing[FilePair], folder: Path, fate: str,
                       needs: str | None) -> tuple[list[FilePair], list[str]]:
    """The pairs of ``found`` (``folder`` scanned) with a ground truth, in order, and a warning on
    those without one where there are any: how many, what became of them (``fate``, e.g. "not
    scored") and the first as an example. The one rule of crm eval and crm train's ``--data``,
    ``--val`` and ``--val-set``: only the BIG layout names ground truths (``<name>_gt``, beside
    ``<name>_im`` and its coarse ``<name>_seg``); in another layout each pair's mask is its ground
    truth, so every pair has one.

    Where pairs were found but none has a ground truth, a NoPairsError (a usage error) names the first
    photo, ``needs`` saying why ground truths are needed; with ``needs`` None the caller words its own
    refusal (crm eval, whose failed pairs come first)."""
    if found.layout != LAYOUT_BIG:
        return list(found.pairs), []
    pairs = [pair for pair in found.pairs if pair.gt is not None]
    without_gt = [pair for pair in found.pairs if pair.gt is None]
    if not without_gt:
        return pairs, []
    example = without_gt[0]
    if not pairs and needs is not None:
        raise NoPairsError(f"no BIG-layout photo under {folder} has its ground truth <name>_gt.* beside it, e.g. "
                           f"{example.image}: {needs}")
    return pairs, [f"{folder}: {count_noun(len(without_gt), 'BIG-layout pair')} without a ground truth <name>_gt.* "
                   f"{fate}, e.g. {example.image} + {example.mask}"]


def split_output_clashes(pairs: Sequence[FilePair], output_dir: Path,
                         folding: NameFolding | None = None) -> tuple[list[FilePair], list[PairFailure]]:
    """The pairs whose output path is theirs alone, and a failure for each of the others.

    Output paths are compared as the disk of ``output_dir`` compares names (``folding``; by default
    probed there with :func:`writing.name_folding`). Where it ignores letter case (macOS, Windows)
    ``A.png`` and ``a.png`` (of the photos ``A.jpg`` and ``a.png``), or ``Shot/x.png`` and
    ``shot/x.png``, are one file, and one pair's output would overwrite the other's, or pass for it
    on resume; so each pair of such a group fails, naming the others and their outputs (and saying
    so where the disk could not be probed and both foldings are assumed). Where the disk tells such
    names apart (Linux), every pair keeps its own output, as its photo has its own file.
    """
    if folding is None:
        # Probing writes a file, so only where some outputs could be one file: names equal with
        # Unicode form and letter case ignored, or with letter case alone (the foldings a disk has).
        for screen in (NameFolding(True, True).key, str.lower):
            screened = [screen(pair.relative_output.as_posix()) for pair in pairs]
            if len(set(screened)) < len(screened):
                folding = name_folding(output_dir)
                break
        else:
            return list(pairs), []
    ignored = " and ".join(what for what, folded in (("letter case", folding.case),
                                                     ("Unicode form", folding.unicode_form)) if folded)
    if folding.probed:
        disk = f"are one file on the output disk{', which ignores ' + ignored if ignored else ''}"
    else:
        disk = ("may be one file on the output disk (it could not be probed, so names are compared as macOS and "
                f"Windows disks compare them{': ' + ignored + ' ignored' if ignored else ''})")
    keys = [folding.key(pair.relative_output.as_posix()) for pair in pairs]
    groups: dict[str, list[FilePair]] = {}
    for pair, key in zip(pairs, keys, strict=True):
        groups.setdefault(key, []).append(pair)
    kept: list[FilePair] = []
    failures: list[PairFailure] = []
    for pair, key in zip(pairs, keys, strict=True):
        group = groups[key]
        if len(group) == 1:
            kept.append(pair)
            continue
        others = [f"{output_dir / other.relative_output} (of {other.image})" for other in group if other is not pair]
        failures.append(PairFailure(pair.name, pair.image, (
            f"{pair.image}: its output {output_dir / pair.relative_output} and {listed(others)} {disk}, so one "
            "would overwrite the other: rename the photos so their names differ in more than that")))
    return kept, failures


@dataclass(frozen=True)
class ScorePair:
    """One prediction file and its ground truth, under a display name."""

    name: str
    pred: Path
    gt: Path


def _mask_files(folder: Path, walks: list[_Walk], other: Path | None = None) -> list[Path]:
    """Mask files below ``folder`` (sub-folders included, linked ones too, each real folder once),
    sorted. Hidden files and folders are left out, and so is what lies in the real folder of
    ``other`` (the other argument of ``crm score``: a folder inside this one, or linked from it),
    unless ``folder`` lies there itself. The walk is added to ``walks`` (for :func:`_skipped_note`)."""
    real = os.path.realpath(folder)
    skip = None
    if other is not None:
        skip = os.path.realpath(other)
        if _under(real, skip):
            skip = None
    walked = _walk(folder, MASK_EXTENSIONS, skip, real=real)
    walks.append(walked)
    return walked.files


def _base_name(gt: Path, folder: Path | None = None) -> str:
    """``<name>_gt.png`` -> ``<name>``; any other file -> its stem; prefixed by its sub-folder of ``folder``."""
    stem = gt.stem
    base = stem[: -len(GT_SUFFIX)] if stem.endswith(GT_SUFFIX) and len(stem) > len(GT_SUFFIX) else stem
    return base if folder is None else (gt.parent.relative_to(folder) / base).as_posix()


def _index(files: list[Path], folder: Path) -> tuple[dict[str, Path], dict[Path, list[Path]]]:
    """Predictions by relative path without and with the extension (in Unicode NFC, see
    :func:`_name_key`), and for each file chosen for a name, the other formats of that name it was
    chosen over (see :func:`_preference`)."""
    by_key: dict[str, Path] = {}
    shadowed: dict[Path, list[Path]] = {}
    for path in sorted(files, key=_preference):
        relative = path.relative_to(folder)
        used = by_key.setdefault(_name_key(relative.with_suffix("")), path)
        if used != path and used.with_suffix("") == path.with_suffix(""):
            shadowed.setdefault(used, []).append(path)
        by_key.setdefault(_name_key(relative), path)
    return by_key, shadowed


def _find_prediction(name: str, gt: Path, index: dict[str, Path], suffixes: tuple[str, ...]) -> Path | None:
    """The first ``<name><suffix>`` present in the prediction index, never the GT file itself."""
    for suffix in suffixes:
        candidate = index.get(_name_key(Path(name + suffix)))
        if candidate is not None and candidate.resolve() != gt.resolve():
            return candidate
    return None


def _other_predictions(name: str, gt: Path, index: dict[str, Path], suffixes: tuple[str, ...],
                       found: Path) -> list[Path]:
    """The predictions ``<name><suffix>`` present besides ``found``, the one :func:`_find_prediction` took.
    A ``<name>_seg`` is none: in the BIG layout it is the coarse mask beside the refined ``<name>_mask``."""
    others = (index.get(_name_key(Path(name + suffix))) for suffix in suffixes if suffix != SEG_SUFFIX)
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
    walks: list[_Walk] = []
    if gt.is_file():
        if pred.is_file():
            return Pairing([ScorePair(_base_name(gt), pred, gt)])
        index, shadowed = _index(_mask_files(pred, walks), pred)
        found = _find_prediction(_base_name(gt), gt, index, suffixes)
        if found is None:
            raise FileNotFoundError(_no_prediction(gt.name, _base_name(gt), pred, suffixes))
        notes.extend(_duplicate_note(found, path) for path in shadowed.get(found, []))
        if others := _other_predictions(_base_name(gt), gt, index, suffixes, found):
            notes.append(_several_predictions_note(pred, 1, [found, *others], suffixes))
        return Pairing([ScorePair(_base_name(gt), found, gt)], notes=_skipped_note(*walks) + notes)
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
    failures = _unreadable_failures([folder for walk in walks for folder in walk.unreadable])
    several: list[list[Path]] = []  # per ground truth with more than one prediction: the scored one first
    for name, files in by_name.items():
        gt_file = _pick(files, notes)
        found = _find_prediction(name, gt_file, index, suffixes)
        if found is None:
            failures.append(PairFailure(name, gt_file, _no_prediction(gt_file, name, pred, suffixes)))
            continue
        notes.extend(_duplicate_note(found, path) for path in shadowed.pop(found, []))
        if others := _other_predictions(name, gt_file, index, suffixes, found):
            several.append([found, *others])
        pairs.append(ScorePair(name, found, gt_file))
    if several:
        notes.append(_several_predictions_note(pred, len(several), several[0], suffixes))
    if unscored := _without_ground_truth(pred_files, pred, {_name_key(Path(name)) for name in by_name}, suffixes,
                                         big=bool(big_layout)):
        notes.append(f"{pred}: {count_noun(len(unscored), 'prediction')} without a ground truth in {gt} not scored, "
                     f"e.g. {unscored[0]}")
    return Pairing(pairs, failures, _skipped_note(*walks) + notes)


def _without_ground_truth(files: list[Path], folder: Path, names: set[str], suffixes: Sequence[str],
                          big: bool) -> list[Path]:
    """The predictions below ``folder`` that no ground truth pairs with, one file for each name
    (in :func:`natural_key` order): files named ``<name><suffix>`` (a suffix of ``suffixes``) for no
    ground-truth name of ``names`` (relative, as :func:`_name_key` spells them). A name's files
    (``b_mask``, ``b_seg``) count once, as the file a ground truth ``b`` would pair with. Beside
    BIG-layout ground truths (``big``), the photos ``*_im`` and the ground truths ``*_gt`` are no
    predictions."""
    found: dict[str, tuple[int, Path]] = {}  # by the name without its longest suffix: (suffix's rank, file)
    for path in sorted(files, key=_preference):
        if big and any(path.stem.endswith(tag) and len(path.stem) > len(tag) for tag in ("_im", GT_SUFFIX)):
            continue
        key = _name_key(path.relative_to(folder).with_suffix(""))
        fits = [(len(suffix), rank, key[: len(key) - len(suffix)]) for rank, suffix in enumerate(suffixes)
                if key.endswith(suffix) and len(key) > len(suffix)]
        if not fits or any(base in names for _, _, base in fits):
            continue
        _, rank, base = max(fits, key=lambda fit: fit[0])
        if base not in found or rank < found[base][0]:
            found[base] = (rank, path)
    return sorted((path for _, path in found.values()), key=natural_key)

