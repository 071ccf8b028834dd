"""Pair files: image/mask pairs to refine (``images/`` + ``masks/`` or two folders of any names, the BIG
layout, or side by side), found by :func:`scan_pairs` and :func:`scan_folder_pairs`, with their types
(FilePair, Pairing, PairFailure, NoPairsError), the matching of names (:func:`_match`), the ground-truth rule
(:func:`ground_truth_pairs`) and the output clashes (:func:`split_output_clashes`).

The name rules live in :mod:`naming`, the folder walk in :mod:`pair_inputs`, the hints and notes in
:mod:`pairing_hints`; predictions are paired with their ground truths for scoring in :mod:`score_pairs`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from .errors import count_noun
from .imageio import IMAGE_SUFFIXES
from .naming import (
    GT_SUFFIX,
    MASK_NAME_SUFFIXES,
    mask_suffix,
    name_key,
    natural_key,
    number_key,
    padding_key,
    preferred_file,
)
from .pair_inputs import (
    FolderWalk,
    LayoutInputs,
    apart_note,
    keyed_by_name,
    lies_under,
    skipped_note,
    unreadable_reason,
    walk_folder,
)
from .pairing_hints import (
    MAX_LISTED,
    formats_hint,
    layout_hint,
    listed,
    offset_note,
    renamed_masks_note,
    two_formats_hint,
    unreadable_hint,
)
from .writing import NameFolding, name_folding


@dataclass(frozen=True)
class FilePair:
    """An image, its coarse mask, the optional GT, and the output path relative to the output folder."""

    name: str
    image: Path
    mask: Path
    relative_output: Path
    gt: Path | None = None


# Names of the files the side-by-side layout leaves out: ground truths and coarse masks, no photos.
SIDE_BY_SIDE_LEFT_OUT = (GT_SUFFIX, "_seg")
# Pairing.layout of each layout scan_pairs finds, and of scan_folder_pairs' (crm batch FOLDER --masks DIR).
LAYOUT_FOLDERS = "images/ + masks/ folders"
LAYOUT_MASKS_DIR = "a photos folder + a --masks folder"
LAYOUT_BIG = "BIG layout: <name>_im + <name>_seg"
LAYOUT_SIDE_BY_SIDE = "side by side: <name> + <name>_mask"

T = TypeVar("T")


class NoPairsError(FileNotFoundError):
    """The input holds nothing of the kind to pair (no images, no ground truths): the command was
    pointed at the wrong place, a usage error (exit 2) in every command (``cli.failures.user_errors``
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


def unreadable_failures(unreadable: list[tuple[Path, str]]) -> list[PairFailure]:
    """A failure for each folder that could not be listed: whatever pairs it holds were not found, so a
    run that goes on without them has not done all it was asked to (exit 1), and says which folder."""
    return [PairFailure(str(folder), folder, f"cannot read the folder {folder} ({reason}): its files were not paired",
                        folder=True) for folder, reason in unreadable]


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
    else a file named ``<name>`` + a suffix of naming.MASK_NAME_SUFFIXES is a mask when ``<name>.*`` lies
    beside it. A file so named whose ``<name>.*`` is missing is a mask as well (one without its
    photo, which pairing leaves out with a note) when another file of its folder with the same
    suffix is the mask of a photo beside it: ``b_mask.png`` beside ``a.jpg`` + ``a_mask.png``. Any
    other file is a photo: ``ski-mask.jpg`` alone, whether its folder holds no pair or only pairs
    of other suffixes (``a.jpg`` + ``a_mask.png``), is a photo without its mask. Names are compared
    as :func:`_match` compares them at the most: in NFC, letter case and zero-padding ignored
    (``frame_0001_mask.png`` beside ``frame_1.png`` is its mask, ``B_MASK.png`` has the suffix
    ``_mask``)."""
    folded = [number_key(Path(path.stem)) for path in files]
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
        suffix = mask_suffix(stem)
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
    too in the last number of the name (``frame_1`` and ``frame_0001``, see :func:`naming.number_key`).
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
            nfc[key] = name_key(key)
        return nfc[key]

    def case_folded(key: Path) -> str:
        if key not in folded:
            folded[key] = as_is(key).casefold()
        return folded[key]

    def padding_ignored(key: Path) -> str:
        return padding_key(case_folded(key))

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


def _outside(real: str, excluded: str | None) -> str | None:
    """``excluded`` (a resolved folder), or None when the resolved input folder ``real`` lies in it:
    an output folder around an input folder holds it whole, and nothing of it is an output."""
    return None if lies_under(real, excluded) else excluded


def _folder_inputs(images_dir: Path, masks_dir: Path, excluded: str | None, layout: str, root: Path,
                   real: tuple[str, str] | None = None) -> LayoutInputs:
    """The photos below ``images_dir`` and the masks below ``masks_dir``, ``root`` being the folder
    the messages name; ``real`` is the two folders resolved, where the caller has resolved them
    already (each is resolved once). Each folder is walked without what lies in the other (see
    :func:`pair_inputs.walk_folder`'s ``apart``): a path of one that leads into the other (a link, or the other folder
    inside it) is skipped with a note, so no mask is taken for a photo and no photo for a mask.
    Raises NoPairsError when there is no photo."""
    real_images, real_masks = real if real is not None else (os.path.realpath(images_dir),
                                                             os.path.realpath(masks_dir))
    found_images = walk_folder(images_dir, IMAGE_SUFFIXES, _outside(real_images, excluded), apart=real_masks,
                               real=real_images)
    found_masks = walk_folder(masks_dir, IMAGE_SUFFIXES, _outside(real_masks, excluded), apart=real_images,
                              real=real_masks)
    images = keyed_by_name(found_images.files, images_dir)
    if not images:
        holder = "it" if root == images_dir else str(images_dir)
        if (reason := unreadable_reason(found_images, images_dir)) is not None:
            raise NoPairsError(f"{root}: no pairs found; cannot read {holder} ({reason})")
        raise NoPairsError(f"{root}: no pairs found; {holder} holds no image files"
                           + unreadable_hint(found_images.unreadable) + formats_hint(found_images)
                           + "".join(f"; {note}" for note in apart_note(found_images, masks_dir, real_masks)))
    notes = (skipped_note(found_images, found_masks) + apart_note(found_images, masks_dir, real_masks)
             + apart_note(found_masks, images_dir, real_images, masks=False))
    return LayoutInputs(layout, images, keyed_by_name(found_masks.files, masks_dir), ("", *MASK_NAME_SUFFIXES),
                        images_inside=keyed_by_name(found_images.inside, images_dir),
                        masks_inside=keyed_by_name(found_masks.inside, masks_dir),
                        broken=found_images.broken + found_masks.broken,
                        unreadable=found_images.unreadable + found_masks.unreadable, notes=notes, masks_dir=masks_dir)


def _side_by_side_inputs(walked: FolderWalk, root: Path, command: str = "crm batch") -> LayoutInputs:
    """:func:`scan_pairs`' side-by-side layout of the files ``walked`` found below ``root``, with
    notes for the files left out. Raises NoPairsError when no folder holds both a photo and a mask,
    its hints worded for ``command``."""
    notes = skipped_note(walked)
    # A photo's own mask beside it makes it a photo whatever its name (ski-mask.jpg + ski-mask_mask.png).
    photos, named = _side_by_side([*walked.files, *walked.inside])
    # Ground truths and coarse masks of the BIG layout's names (a_gt.png, a_seg.png beside a.jpg) are
    # no photos to refine.
    left_out = {path for path in photos if any(path.stem.endswith(tag) and len(path.stem) > len(tag)
                                               for tag in SIDE_BY_SIDE_LEFT_OUT)}
    in_output = set(walked.inside)
    images = keyed_by_name([path for path in photos if path not in left_out and path not in in_output], root)
    every_photo = images  # before the folders without a mask are left out: the two-formats hint reads them
    masks = keyed_by_name([path for path in named if path not in in_output], root)
    images_inside = keyed_by_name([path for path in photos if path not in left_out and path in in_output], root)
    masks_inside = keyed_by_name([path for path in named if path in in_output], root)
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
        if (reason := unreadable_reason(walked, root)) is not None:
            raise NoPairsError(f"{root}: no pairs found; cannot read it ({reason})")
        raise NoPairsError(f"{root}: no pairs found; expected images/ and masks/ folders, <name>_im.* with "
                           "<name>_seg.* (BIG layout), or photos with their masks beside them named "
                           "<name>_mask.*" + unreadable_hint(walked.unreadable)
                           + (two_formats_hint(every_photo, root) or layout_hint(root, command)
                              or formats_hint(walked)))
    return LayoutInputs(LAYOUT_SIDE_BY_SIDE, images, masks, MASK_NAME_SUFFIXES, images_inside, masks_inside,
                        broken=walked.broken, unreadable=walked.unreadable, notes=notes, guessed_in=root,
                        command=command)


def _unread_around(folder: Path, inputs: LayoutInputs) -> Path | None:
    """The folder among ``inputs.unreadable`` that is ``folder`` or holds it, or None."""
    return next((path for path, _ in inputs.unreadable if path == folder or path in folder.parents), None)


def _pair_inputs(inputs: LayoutInputs, exclude: Path | None) -> Pairing[FilePair]:
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
                           + unreadable_hint(inputs.unreadable)
                           + (two_formats_hint(images, root) or layout_hint(root, inputs.command)))
    gt_names = _match(list(images), list(inputs.gts), ("",)).matched if inputs.gts else {}
    tried = f"(or {', '.join(MASK_NAME_SUFFIXES[1:])})"
    pairs: list[FilePair] = []
    failures = unreadable_failures(inputs.unreadable)
    duplicates: list[str] = []  # files left out for another format of their name: named up to MAX_LISTED
    padded: list[str] = []  # the pairs matched only with zero-padding ignored, as "image + mask"
    for key, image_files in images.items():
        image = preferred_file(image_files, duplicates)
        if key in matched:
            mask = preferred_file(masks[matched[key]], duplicates)
            gt = preferred_file(inputs.gts[gt_names[key]], duplicates) if key in gt_names else None
            output = key.with_name(key.name + ("_mask.png" if big else ".png"))
            pairs.append(FilePair(str(key), image, mask, output, gt))
            if key in matches.padded:
                padded.append(f"{image} + {mask}")
            continue
        if key in ambiguous:
            fits = [str(preferred_file(masks[mask], [])) for mask in ambiguous[key]]
            error = f"{image}: {len(fits)} masks fit it, {listed(fits)}: rename or remove all but one"
        elif key in contested:
            mask_name, rivals = contested[key]
            fitted = [str(preferred_file(images[rival], [])) for rival in rivals]
            shared = preferred_file(masks[mask_name], [])
            error = (f"{image}: the mask {shared} fits {len(fitted)} photos, {listed(fitted)}: "
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
        if hint := two_formats_hint({key: files for key, files in images.items() if key in failed},
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
    notes += offset_note(inputs, matched, unpaired, orphan_keys)
    if inputs.masks_dir is not None:
        notes += renamed_masks_note(inputs, unpaired, orphan_keys, tried)
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
      of naming.MASK_NAME_SUFFIXES (``<name>_mask.*``, ``<name>-matte.*``...); output ``<path>/<name>.png``.
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
    they are, see :func:`naming.number_key`), with a note counting such pairs. Two masks that fit one
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
    before ``frame_10``, see :func:`naming.natural_key`). Where photos without a mask and masks without a
    photo are numbered sequences, a note says when the masks' numbers look shifted from the photos'
    (masks from 0, photos from 1: :func:`pairing_hints.offset_note`) or, in folder layouts, when the masks are
    named otherwise before the number with a mask word (``plate_matte.0001`` for ``plate.0001``:
    :func:`pairing_hints.renamed_masks_note`); neither is ever paired. Raises NoPairsError when there is no image
    at all (images without masks are failures instead; a folder whose names each come in two
    formats, ``a.jpg`` + ``a.png``, is told how to pair them). Outputs that would be one file on some
    disks are not checked here: see :func:`split_output_clashes`.
    """
    real = os.path.realpath(root)
    excluded = _outside(real, os.path.realpath(exclude) if exclude is not None else None)
    if (root / "images").is_dir() and (root / "masks").is_dir():
        inputs = _folder_inputs(root / "images", root / "masks", excluded, LAYOUT_FOLDERS, root)
        stray = [path for path in walk_folder(root, IMAGE_SUFFIXES, excluded, follow=False, skip=("images", "masks"),
                                              real=real).files
                 if path.stem.endswith("_im") and len(path.stem) > 3]
        if stray:
            inputs.notes.append(f"{count_noun(len(stray), '*_im file')} not paired, e.g. {stray[0]}: with images/ "
                                "and masks/ folders, only those are paired")
        return _pair_inputs(inputs, exclude)
    walked = walk_folder(root, IMAGE_SUFFIXES, excluded, real=real)
    images = keyed_by_name(walked.files, root, "_im")
    if not images:
        return _pair_inputs(_side_by_side_inputs(walked, root, command), exclude)
    return _pair_inputs(LayoutInputs(LAYOUT_BIG, images, keyed_by_name(walked.files, root, "_seg"), ("",),
                                     images_inside=keyed_by_name(walked.inside, root, "_im"),
                                     masks_inside=keyed_by_name(walked.inside, root, "_seg"),
                                     gts=keyed_by_name(walked.files, root, GT_SUFFIX), broken=walked.broken,
                                     unreadable=walked.unreadable, notes=skipped_note(walked)), exclude)


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
