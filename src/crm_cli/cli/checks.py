"""Checks made before the model loads, so a bad input or output fails in milliseconds, and the
pass-through of images too small to refine. Nothing heavy is imported at module level."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import MIN_REFINE_SIDE, NO_LABEL, SMALL_PHOTO
from .output import fail, require_stdout

if TYPE_CHECKING:
    from ..masks import MaskData


def check_output_name(output: Path, output_kind: str = "soft") -> str:
    """The format ``output``'s extension names; exit 2 (usage error) for a lossy or unknown one."""
    from ..writing import OutputNameError, output_format

    try:
        fmt = output_format(output)
    except OutputNameError as exc:
        raise fail(str(exc), code=2) from None
    if fmt == "WEBP" and output_kind == "soft16":
        raise fail(f"{output}: WebP holds 8 bits per channel; write --output-kind soft16 as .png or .tif", code=2)
    return fmt


def check_output_size(output: Path, width: int, height: int) -> None:
    """Refuse (exit 2, a usage error), before the model loads, an output name whose format cannot
    hold an image of this size (WebP, over 16383 px per side), which writing it after refining
    would refuse."""
    from ..writing import output_format, webp_size_refusal

    if output_format(output) == "WEBP" and (refusal := webp_size_refusal(width, height)) is not None:
        raise fail(f"{output}: {refusal}", code=2)


def check_label_output(read_mask: Callable[[], MaskData], mask_name: str, mode: str, output: Path) -> None:
    """Refuse (exit 2, a usage error), before the model loads, a label map as WebP: a palette or 16-bit
    one it cannot hold (writing it after refining would refuse it), and grey ids, which it stores as RGB.
    ``read_mask`` decodes the mask (called only when the format matters)."""
    from ..writing import image_mode, output_format, webp_refusal

    if mode == "binary" or output_format(output) != "WEBP":
        return
    from ..pipeline import choose_mode

    mask_data = read_mask()
    if choose_mode(mask_data, mode, mask_name) != "labels":
        return
    # A refined label map keeps the mask's palette and dtype (pipeline.refine_files). Like a lossy
    # extension, an output name that cannot hold the output is a usage error.
    if (refusal := webp_refusal(image_mode(mask_data.values, mask_data.palette))) is not None:
        raise fail(f"{output}: {refusal}", code=2)
    # Grey ids it could hold, but only as RGB with three equal channels, which label loaders do not read.
    raise fail(f"{output}: WebP stores grey as RGB, so a label map's ids would come back in three channels; "
               "write it as .png or .tif", code=2)


def check_labels(read_mask: Callable[[], MaskData], mask_name: str, mode: str,
                 labels: list[int]) -> tuple[list[str], bool]:
    """:func:`pipeline.labels_notes` for one mask, found before the model loads: the warnings, and
    whether nothing is left to refine (the mask is then written as it is, with no model).

    ``read_mask`` decodes the mask. Raises ImageReadError or ValueError for a mask that cannot be
    read in ``mode``.
    """
    from ..pipeline import choose_mode, labels_notes

    mask_data = read_mask()
    return labels_notes(mask_data, choose_mode(mask_data, mode, mask_name), labels, mask_name)


def same_file(path: Path, other: Path) -> bool:
    """True when ``other`` names the existing file ``path`` (also through a link or another spelling)."""
    return same_as_any(other, [path]) is not None


def same_as_any(target: Path, paths: Iterable[Path | None]) -> Path | None:
    """The first of ``paths`` naming the existing file ``target`` (also through a link or another
    spelling), else None. ``target`` is stat'ed once however many paths there are (a folder may pair
    thousands); None entries and paths missing, unreadable or holding a NUL byte are skipped."""
    import os

    try:
        wanted = os.stat(target)
    except (OSError, ValueError):  # missing or unreadable, or a name holding a NUL byte: nothing names it
        return None
    for path in paths:
        if path is None:
            continue
        try:
            if os.path.samestat(os.stat(path), wanted):
                return path
        except (OSError, ValueError):
            continue
    return None


def standard_input_refusal(inputs: Iterable[tuple[str, Path | None]], command: str) -> str | None:
    """The usage error for an input of ``command`` (role, path; None: not given) that is ``-``, which
    it cannot read (it reads files only), or None."""
    for role, path in inputs:
        if path is not None and str(path) == "-":
            return f"{role} -: crm {command} reads its inputs from files, not standard input"
    return None


def role_of(target: Path, inputs: Iterable[tuple[str, Path | None]]) -> tuple[str, Path] | None:
    """(role, path) of the first of ``inputs`` ((role, path) pairs) naming the existing file ``target``
    (see :func:`same_as_any`), else None: an output that would replace one of a command's inputs."""
    pairs = list(inputs)
    match = same_as_any(target, [path for _, path in pairs])
    if match is None:
        return None
    return next((role, path) for role, path in pairs if path is match)


def check_stdout_not_terminal() -> None:
    """Exit 2 (a usage error) when ``-o -`` would write image bytes onto a terminal, and 1 when
    stdout is closed (``>&-``, see output.require_stdout)."""
    import sys

    require_stdout("-o -")
    if sys.stdout.isatty():
        raise fail("refusing to write PNG bytes to a terminal; redirect stdout or use -o FILE", code=2)


def check_not_same_file(image: Path, mask: Path) -> None:
    """Exit 2 (a usage error) when IMAGE and MASK name one existing file, also through a link or
    another spelling: the photo would be read as its own mask. ``-`` (stdin) and missing files are
    left to their own checks."""
    if "-" not in (str(image), str(mask)) and same_file(image, mask):
        names = str(image) if str(image) == str(mask) else f"{image} and {mask}"
        raise fail(f"IMAGE and MASK are the same file ({names}); give the photo, then its coarse mask", code=2)


# The names by which a process reaches its open files: a regular file named so has no folder of its own.
_DESCRIPTOR_NAME = re.compile(r"/dev/(?:fd/\d+|stdin|stdout|stderr)|/proc/(?:self|thread-self|\d+)/fd/\d+")
DESCRIPTOR = "a file descriptor"


def special_file(path: Path) -> str | None:
    """What ``path`` is when it exists but is no regular file in a folder of files: "a pipe" (a FIFO,
    or a process substitution's /dev/fd/N), "a character device", "a block device", "a socket", "a
    folder", or DESCRIPTOR for a regular file named through a descriptor (/dev/stdin redirected from
    a file, /dev/fd/N, /proc/<pid>/fd/N, also through a link); None otherwise, for a regular file
    anywhere else (under /dev/shm too) and for a missing or unreadable path. Nothing is opened, so a
    pipe's writer is not woken."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # missing or unreadable: reading it names it
        return None
    if not stat.S_ISREG(mode):
        kinds = ((stat.S_ISFIFO, "a pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                 (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
        return next((kind for test, kind in kinds if test(mode)), "a special file")
    name = os.path.abspath(path)
    for _ in range(40):  # the links on the way to the file, as the kernel follows them (40 at most)
        # The folder resolved too: /dev/fd is a link to /proc/self/fd, itself one to /proc/<pid>/fd.
        resolved = os.path.join(os.path.realpath(os.path.dirname(name)), os.path.basename(name))
        if _DESCRIPTOR_NAME.fullmatch(name) or _DESCRIPTOR_NAME.fullmatch(resolved):
            return DESCRIPTOR
        try:
            target = os.readlink(name)
        except OSError:  # no link: the file itself
            return None
        name = os.path.normpath(os.path.join(os.path.dirname(name), target))
    return None


def _link_loop(link: Path) -> bool:
    """Whether following the symbolic link ``link`` goes round in a loop (ELOOP) rather than to nothing."""
    import errno

    try:
        link.stat()
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def unwritable_reason(target: Path, folder: bool = False) -> str | None:
    """Why ``target`` (a file, or with ``folder`` a folder to write into) cannot be written, or None.

    Checks the nearest existing folder on its way: it must be a folder and writable; and the folders
    to be made on the way: none may be a symbolic link to nothing.
    """
    import os

    from ..errors import os_reason
    from ..writing import name_too_long

    # Before anything that stats the target: a name over the limit fails with a bare ENAMETOOLONG.
    if (too_long := name_too_long(target, "folder" if folder else "file")) is not None:
        return f"cannot write {'into ' if folder else ''}{target}: {too_long}"
    try:  # a folder on the way that cannot be searched makes exists() raise (Python 3.11 and later)
        if not folder and target.is_dir():
            return f"cannot write {target}: it is a folder"
        if folder and target.exists() and not target.is_dir():
            return f"cannot write into {target}: it is a file, not a folder"
        parent = target if folder else target.parent
        parent = parent if str(parent) else Path(".")
        while not parent.exists() and parent != parent.parent:
            if parent.is_symlink():  # a link to nothing: making the folder would fail, "file exists"
                where = f"cannot write {'into ' if folder else ''}{target}: {parent} links to {os.readlink(parent)}"
                if _link_loop(parent):
                    return f"{where}, a loop of links that never reaches a folder"
                return f"{where}, which does not exist"
            parent = parent.parent
        if not parent.is_dir():
            return f"cannot write {target}: {parent} is a file, not a folder"
    except OSError as exc:
        return f"cannot write {'into ' if folder else ''}{target}: {os_reason(exc)} on the way to it"
    if not os.access(parent, os.W_OK | os.X_OK):
        if _read_only_mount(parent):  # no chmod would help
            return f"cannot write {'into ' if folder else ''}{target}: {parent} is on a read-only file system"
        return f"cannot write {target}: permission denied on {parent}"
    return None


def _read_only_mount(folder: Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only (False where that cannot be told)."""
    import os

    if not hasattr(os, "statvfs") or not hasattr(os, "ST_RDONLY"):  # Windows
        return False
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_writable(target: Path, folder: bool = False) -> None:
    """Exit 1 with one line when ``target`` cannot be written (see unwritable_reason)."""
    reason = unwritable_reason(target, folder)
    if reason is not None:
        raise fail(reason)


def memory_problem(height: int, width: int, settings: Any, tile_size: int, label: str) -> str | None:
    """A one-line refusal when refining a ``width`` x ``height`` image would not fit in the memory
    available now (with a cheaper setting to try when one would fit), or None."""
    from ..runtime import available_memory_bytes, estimate_refine_bytes, format_bytes

    available = available_memory_bytes()
    full = bool(getattr(settings, "full_decode", False))
    needed = estimate_refine_bytes(height, width, full_decode=full, tile_size=tile_size)
    if available is None or needed <= available:
        return None
    message = (f"{label} is {width}x{height} ({width * height / 1e6:.0f} MP): refining it needs about "
               f"{format_bytes(needed)} of memory, but {format_bytes(available)} is available")
    cheaper: list[tuple[str, bool, int]] = []  # (options to try, full_decode, tile size)
    if full:
        cheaper.append(("--preset balanced", False, tile_size))
    if tile_size > 512:
        cheaper.append(("--tile-size 512", full, 512))
        if full:
            cheaper.append(("--preset balanced --tile-size 512", False, 512))
    for option, full_decode, tile in cheaper:
        if estimate_refine_bytes(height, width, full_decode=full_decode, tile_size=tile) <= available:
            return f"{message}; try {option}"
    return f"{message}; free memory, or downscale or crop the image"


def probe_pair(image: Any, mask: Any, image_name: str, mask_name: str, mode: str = "auto") -> tuple[Any, bool]:
    """Headers of an image and its mask checked for readability, fitting sizes and, for ``mode``
    labels, integer values, before any pixel is decoded. Returns (image header, whether the mask
    will be upsampled).

    Raises ImageReadError, SizeMismatchError or ValueError with a message naming the user's file(s).
    """
    from ..image_headers import probe_image
    from ..masks import check_pair_headers
    from ..pipeline import float_labels_error

    image_header = probe_image(image, name=image_name)
    mask_header = probe_image(mask, name=mask_name)
    upsampled = check_pair_headers(image_header, mask_header, image_name, mask_name)
    if mode == "labels" and mask_header.mode == "F":
        raise float_labels_error(mask_name)
    return image_header, upsampled


def too_small(header: Any) -> bool:
    """True when an image is below MIN_REFINE_SIDE and its mask is passed through unchanged."""
    return min(header.width, header.height) < MIN_REFINE_SIDE


def passthrough_note(width: int, height: int, label: str, outcome: str = "the mask is written unchanged") -> str:
    """The warning for an image too small to refine (``outcome``: what is done instead)."""
    return f"{label} is {width}x{height}, under the {MIN_REFINE_SIDE}-px minimum side crm refines; {outcome}"


def check_pair(image: Any, mask: Any, image_name: str, mask_name: str, settings: Any, tile_size: int,
               output: Path | None = None, mode: str = "auto") -> tuple[Any, bool]:
    """The checks of one pair before the model loads, raising on the first problem: headers readable,
    of fitting sizes and fit for ``mode`` (ImageReadError, SizeMismatchError, ValueError), ``output``
    (when given) writable (ImageWriteError) and, for an image large enough to refine, the memory
    refining needs (MemoryError).

    Returns (the image header, whether the image is too small to refine and is passed through).
    """
    header, _ = probe_pair(image, mask, image_name, mask_name, mode)
    if output is not None and (reason := unwritable_reason(output)) is not None:
        from ..writing import ImageWriteError

        raise ImageWriteError(reason)
    if too_small(header):
        return header, True
    problem = memory_problem(header.height, header.width, settings, tile_size, image_name)
    if problem is not None:
        raise MemoryError(problem)
    return header, False


def precheck_pair(image: Any, mask: Any, image_name: str, mask_name: str, settings: Any,
                  tile_size: int, mode: str = "auto", gt: Path | None = None) -> tuple[str | None, Any, bool]:
    """:func:`check_pair` for one pair of many: returns (the error to report or None, the image's
    header or None, whether the pair is too small and passed through) instead of raising. A ground
    truth ``gt`` is checked against the image's header too (readable, of a fitting size)."""
    from ..image_headers import probe_image
    from ..image_sources import ImageReadError
    from ..masks import check_pair_headers

    try:
        header, small = check_pair(image, mask, image_name, mask_name, settings, tile_size, mode=mode)
        if gt is not None:
            check_pair_headers(header, probe_image(gt, name=str(gt)), image_name, str(gt), role="ground truth")
    except (ImageReadError, ValueError, MemoryError) as exc:  # SizeMismatchError is a ValueError
        return str(exc), None, False
    return None, header, small


def passthrough_pair(image: Any, mask: Any, *, mode: str, output_kind: str, threshold: float | None,
                     image_name: str, mask_name: str, decoded_mask: MaskData | None = None,
                     photo_bits: int | None = None, cutout_bits: int = 8):  # noqa: ANN201 - pipeline.PairResult
    """The output of a pair too small to refine: the coarse mask itself, rendered as asked
    (label maps keep their ids, palette and its transparency; a mask read as one object gets the
    notes refining would give it). No model is needed. ``decoded_mask`` and ``photo_bits``: see
    ``pipeline.read_pair``; ``cutout_bits``: see ``pipeline.refine_files``."""
    import time

    from ..masks import one_object_notes, weak_mask_note
    from ..outputs import render_output
    from ..pipeline import (
        PairResult,
        choose_mode,
        cutout_depth_note,
        cutout_pixels,
        label_map_notes,
        read_photo_pair,
        wants_16bit_cutout,
    )

    start = time.perf_counter()
    photo, mask_data, notes = read_photo_pair(image, mask, image_name, mask_name, decoded_mask, photo_bits=photo_bits,
                                              keep_16bit=wants_16bit_cutout(output_kind, cutout_bits))
    chosen = choose_mode(mask_data, mode, mask_name)
    profile, transparency = None, None
    if chosen == "labels":
        output, palette, probability = mask_data.values, mask_data.palette, None
        transparency = mask_data.transparency
        notes.extend(label_map_notes(output_kind, threshold))
    else:
        probability = mask_data.probability()
        if mode == "auto":
            notes += one_object_notes(mask_data, mask_name)
        if (note := weak_mask_note(probability, mask_name)) is not None:
            notes.append(note)
        output = render_output(output_kind, probability, image=cutout_pixels(photo), coarse=probability,
                               threshold=threshold)
        if (note := cutout_depth_note(photo, output_kind, image_name)) is not None:
            notes.append(note)
        palette = None
        profile = photo.profile_for(output_kind)
    return PairResult(output=output, palette=palette, mode=chosen, seconds=time.perf_counter() - start,
                      probability=probability, notes=notes, icc_profile=profile, transparency=transparency,
                      takes_photo_bits=photo.takes_photo_bits)


def schedule_fields(result: Any, passthrough: bool = False) -> dict[str, Any]:
    """JSON fields naming the stages a ``pipeline.PairResult`` ran (per label for label maps);
    ``kept_given`` says why none ran and the mask came back as given (``engine.KEPT_GIVEN_REASONS``,
    or ``config.PASSED_THROUGH_REASONS`` for a result that never reached the model: ``passthrough`` for
    a photo too small, else a label map with no id to refine), null when they ran."""
    from ..pipeline import schedule_label

    if not result.runs:
        return {"schedule": None, "kept_given": SMALL_PHOTO if passthrough else NO_LABEL}
    fields: dict[str, Any] = {"schedule": schedule_label(result.runs), "guard_restored": result.guard_restored,
                              "kept_coarse": result.kept_coarse}
    if result.mode == "labels":
        fields["label_ids"] = list(result.label_ids)  # which id each label_* entry is
        fields["label_ratios"] = [list(run.ratios) for run in result.runs]
        fields["label_change_confidence"] = [run.change_confidence for run in result.runs]
        fields["label_snap_px"] = [run.snap_px for run in result.runs]
        fields["label_by_partner"] = [run.by_partner for run in result.runs]
        fields["label_by_lone_stage"] = [run.by_lone_stage for run in result.runs]
        fields["label_kept_given"] = [run.kept_given for run in result.runs]
    else:
        fields["ratios"] = list(result.runs[0].ratios)
        fields["change_confidence"] = result.runs[0].change_confidence
        fields["snap_px"] = result.runs[0].snap_px
        fields["by_partner"] = result.runs[0].by_partner
        fields["by_lone_stage"] = result.runs[0].by_lone_stage
        fields["kept_given"] = result.runs[0].kept_given
    return fields
