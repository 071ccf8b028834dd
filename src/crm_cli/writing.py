"""Encoding masks and images losslessly (PNG, TIFF, WebP) and writing them atomically, or to stdout.

The extension names the format; a lossy one (JPEG, ...) is refused, so an output never alters the mask.
Only a picture to look at (crm compare's strip, :func:`write_picture`) may also be written as JPEG.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import sys
import threading
import time
import unicodedata
import uuid
import warnings
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin

# Output extensions and the lossless format each one names.
OUTPUT_FORMATS: dict[str, str] = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
# Lossy extensions (and their format), refused for masks; crm compare writes the JPEG ones for a strip.
LOSSY_SUFFIXES: dict[str, str] = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
                                  ".jp2": "JPEG 2000", ".avif": "AVIF", ".heic": "HEIC"}
# The extensions that name a JPEG, and the quality of one: only a picture to look at is written so (write_picture).
JPEG_SUFFIXES: tuple[str, ...] = tuple(suffix for suffix, fmt in LOSSY_SUFFIXES.items() if fmt == "JPEG")
JPEG_QUALITY = 95
# Image formats crm reads or that users reach for, but does not write.
_UNSUPPORTED_SUFFIXES: dict[str, str] = {".gif": "GIF", ".bmp": "BMP", ".pgm": "PGM"}
# write_atomic's temp files: ``.NAME.<12 hex digits>.tmp`` beside the target NAME (NAME shortened by
# fitted_name where the whole would be longer than the folder allows, see _temp_target).
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[0-9a-f]{12}\.tmp")
# The bytes a temp name adds to its target's: the leading dot, and ``.<12 hex digits>.tmp``.
_TEMP_NAME_EXTRA = len(".") + len(".0123456789ab.tmp")
# The longest file name, in bytes, where a folder's own limit cannot be read: NAME_MAX on Linux
# (ext4, XFS, Btrfs, tmpfs) and on macOS.
DEFAULT_NAME_MAX = 255
# A name fitted_name shortens ends in "~" and this many hex digits of the whole name's sha256.
_NAME_DIGEST_CHARS = 16
# The errors of a write that found no room: a full disk, or the user's quota used up.
OUT_OF_SPACE_ERRNOS: frozenset[int] = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk (length, type, CRC) every PNG ends with


# Python's warning filters and output are one state of the process, which ``warnings.catch_warnings``
# swaps in and restores: every crm context that changes them holds this lock (here, and the readers'
# (imageio and its parts, decode_messages' recorder of Pillow's warnings among them), which import it:
# they import writing, never the other way), so that two threads never install or restore each
# other's. Reentrant: imageio's readers nest them.
WARNING_STATE_LOCK = threading.RLock()


@contextmanager
def warnings_ignored(category: type[Warning] = Warning) -> Iterator[None]:
    """Inside, Python's warnings of ``category`` are ignored, taking turns (WARNING_STATE_LOCK) with
    every other crm context that changes the warning state: unguarded, the filter would also swallow
    a warning that another thread is recording (a reader's note of a damaged EXIF block:
    decode_messages), and its exit could restore that thread's recording list as the process's
    warning output."""
    with WARNING_STATE_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", category)
        yield


class ImageWriteError(OSError):
    """An output file cannot be written; the message names the user's path, never a temp file."""


class OutputNameError(ValueError):
    """An output name whose extension crm will not write (lossy or unknown): a usage error."""


def output_format(path: str | Path) -> str:
    """The lossless format an output name asks for: "PNG", "TIFF" or "WEBP" (by extension).

    Raises OutputNameError for lossy (JPEG, ...) or unknown extensions, naming the allowed ones.
    """
    suffix = Path(path).suffix.lower()
    if suffix in OUTPUT_FORMATS:
        return OUTPUT_FORMATS[suffix]
    allowed = ", ".join(OUTPUT_FORMATS)
    if suffix in LOSSY_SUFFIXES:
        raise OutputNameError(f"{path}: {LOSSY_SUFFIXES[suffix]} is lossy and would alter the mask; "
                              f"name the output {allowed}")
    if suffix in _UNSUPPORTED_SUFFIXES:
        raise OutputNameError(f"{path}: {_UNSUPPORTED_SUFFIXES[suffix]} output is not supported; "
                              f"name the output {allowed}")
    what = f"unknown extension {suffix!r}" if suffix else "no extension"
    raise OutputNameError(f"{path}: {what}; name the output {allowed}")


def picture_format(path: str | Path) -> str:
    """The format an output name asks for a picture to look at, never a mask (crm compare's strip):
    "JPEG" for JPEG_SUFFIXES, else :func:`output_format`'s (OutputNameError for other extensions)."""
    return "JPEG" if Path(path).suffix.lower() in JPEG_SUFFIXES else output_format(path)


def image_mode(array: np.ndarray, palette: list[int] | None = None) -> str:
    """The Pillow mode ``array`` is written in ("P", "L", "I;16", "RGB", "RGBA"); ValueError for
    arrays (or palettes) that cannot be written losslessly. Reads only dtype, shape and palette."""
    array = np.asarray(array)
    if palette is not None:
        if array.ndim != 2 or array.dtype != np.uint8:
            raise ValueError(
                f"a palette PNG needs a (H, W) uint8 index array, got {array.dtype} {array.shape}"
            )
        entries = [int(v) for v in palette]
        if len(entries) % 3 or not 3 <= len(entries) <= 768 or not all(0 <= v <= 255 for v in entries):
            raise ValueError(
                f"palette must be a flat RGB list of 3..768 ints in 0..255, got {len(entries)} values"
            )
        return "P"
    if array.ndim == 2 and array.dtype == np.uint8:
        return "L"
    if array.ndim == 2 and array.dtype == np.uint16:
        return "I;16"
    if array.ndim == 3 and array.dtype == np.uint8 and array.shape[2] in (3, 4):
        return "RGB" if array.shape[2] == 3 else "RGBA"
    if array.ndim == 3 and array.dtype == np.uint16 and array.shape[2] == 4:
        return RGBA16  # a 16-bit photo's cut-out; Pillow has no such mode, so PNG only (encode_image)
    raise ValueError(
        f"cannot encode array of dtype {array.dtype} and shape {array.shape}; expected (H, W) "
        "uint8/uint16, (H, W, 3|4) uint8 or (H, W, 4) uint16"
    )


# The zlib level of a 16-bit RGBA PNG. A 16-bit photo's low bits are noise that zlib cannot shrink: a
# 6000x4000 cut-out took 3.2 s at level 1 (70.9 MB), 4.6 s at 3 (67.4 MB) and 12.0 s at 6 (64.6 MB,
# Pillow's level for the other PNGs); a smooth one shrinks more at 6 (2.1 MB against 3.0 at 4K).
PNG_COMPRESS_LEVEL = 1
# image_mode's name for (H, W, 4) uint16 RGBA (Pillow's mode names stop at 8-bit RGBA).
RGBA16 = "RGBA;16"


def _to_pil(array: np.ndarray, palette: list[int] | None) -> Image.Image:
    """A Pillow image that saves ``array`` losslessly; ValueError for unsupported arrays."""
    array = np.ascontiguousarray(array)
    mode = image_mode(array, palette)
    if mode == "P":
        # Filling a new P image keeps the indices verbatim; converting an L image would remap them.
        image = Image.new("P", (array.shape[1], array.shape[0]))
        image.frombytes(array.tobytes())
        image.putpalette([int(v) for v in palette])
        return image
    if mode == "I;16":
        return Image.fromarray(array.astype("<u2", copy=False))
    return Image.fromarray(array)


def webp_refusal(image_mode: str) -> str | None:
    """Why lossless WebP cannot hold a Pillow image of ``image_mode`` ("P": a palette label map,
    "I;16": 16-bit values), or None for grey, RGB and RGBA."""
    if image_mode in ("L", "RGB", "RGBA"):
        return None
    kind = "a palette (label map)" if image_mode == "P" else "16-bit values"
    return f"WebP cannot store {kind} losslessly; write it as .png or .tif"


# The longest side a WebP file can hold (its header stores each side in 14 bits).
WEBP_MAX_SIDE = 16383


def webp_size_refusal(width: int, height: int) -> str | None:
    """Why WebP cannot hold an output of ``width`` x ``height`` (a side over WEBP_MAX_SIDE, as a
    line-scan strip's), or None."""
    if max(width, height) <= WEBP_MAX_SIDE:
        return None
    return (f"WebP holds at most {WEBP_MAX_SIDE} px per side, and this output is {width}x{height}; "
            "write it as .png or .tif")


def _check_transparency(transparency: int | bytes | None, palette: list[int] | None) -> None:
    """ValueError unless ``transparency`` is None or a palette's, as Pillow reads it from a PNG tRNS
    chunk: one transparent index (an int 0..255) or one alpha byte per entry (at most 256 bytes)."""
    if transparency is None:
        return
    if palette is None:
        raise ValueError("a transparency is written with a palette only")
    if isinstance(transparency, bytes):
        if len(transparency) > 256:
            raise ValueError(f"a palette's transparency holds at most 256 alpha bytes, got {len(transparency)}")
    elif not isinstance(transparency, int) or isinstance(transparency, bool) or not 0 <= transparency <= 255:
        raise ValueError(f"a palette's transparency is an index 0..255 or alpha bytes, got {transparency!r}")


def encode_image(array: np.ndarray, palette: list[int] | None = None, fmt: str = "PNG",
                 icc_profile: bytes | None = None, text: Mapping[str, str] | None = None,
                 transparency: int | bytes | None = None) -> bytes:
    """Losslessly encoded bytes of a mask or image array in ``fmt`` ("PNG", "TIFF" or "WEBP"), or
    lossy "JPEG" (quality JPEG_QUALITY) for a picture to look at, never a mask (:func:`write_picture`).

    Arrays: (H, W) uint8 or uint16, (H, W, 3) RGB or (H, W, 4) RGBA uint8, (H, W, 4) RGBA uint16
    (PNG only: a 16-bit photo's cut-out; ValueError in another format); with ``palette`` (flat
    RGB list) a palette image whose indices are the uint8 array values. WebP holds 8-bit grey,
    RGB and RGBA only, so a 16-bit or palette array raises ValueError there (JPEG: 8-bit grey and
    RGB). ``icc_profile``: the colour profile to embed (an image made of a photo's pixels keeps the photo's).
    ``text``: PNG only, Latin-1 keyword -> value pairs written as tEXt chunks before the image data
    (:func:`read_png_text` reads one back); ValueError for another format.
    ``transparency``: with ``palette``, the palette's transparency as ``MaskData.transparency`` holds it
    (one transparent index, or per-entry alpha bytes), written in a PNG's tRNS chunk; a TIFF palette
    cannot hold it (:func:`keeps_transparency`), so there it is left out.
    """
    if text and fmt != "PNG":
        raise ValueError(f"text chunks are written in PNG files only, not {fmt}")
    _check_transparency(transparency, palette)
    if palette is None and image_mode(array) == RGBA16:
        if fmt != "PNG":
            raise ValueError(f"a 16-bit RGBA image is written as PNG only, not {fmt}; write it as .png")
        return _png_rgba16(np.asarray(array), icc_profile, text)
    image = _to_pil(array, palette)
    buffer = io.BytesIO()
    profile: dict[str, object] = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "PNG":
        if text:
            profile["pnginfo"] = _png_text_info(text)
        if transparency is not None:
            profile["transparency"] = transparency
        image.save(buffer, format="PNG", **profile)
    elif fmt == "TIFF":
        image.save(buffer, format="TIFF", compression="tiff_adobe_deflate", **profile)
    elif fmt == "WEBP":
        if (refusal := webp_refusal(image.mode) or webp_size_refusal(image.width, image.height)) is not None:
            raise ValueError(refusal)
        # Lossless WebP stores grey as RGB with equal channels, which read_mask reads back as grey.
        image.save(buffer, format="WEBP", lossless=True, quality=100, exact=True, **profile)
    elif fmt == "JPEG":
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"JPEG cannot store a {image.mode} image; write it as .png or .tif")
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY, **profile)
    else:
        raise ValueError(f"unknown output format {fmt!r}; choose PNG, TIFF, WEBP or JPEG")
    return buffer.getvalue()


def _png_rgba16(rgba: np.ndarray, icc_profile: bytes | None, text: Mapping[str, str] | None) -> bytes:
    """PNG bytes of (H, W, 4) uint16 RGBA: OpenCV encodes the pixels (Pillow cannot), and the colour
    profile (iCCP) and text (tEXt) chunks, which OpenCV does not write, go in right after the header,
    before the image data, where Pillow puts them and :func:`read_png_text` looks."""
    import cv2

    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgba), cv2.COLOR_RGBA2BGRA),
                               [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgba.shape[1]}x{rgba.shape[0]} 16-bit RGBA PNG")
    data = encoded.tobytes()
    extra = []
    if icc_profile:
        extra.append(_png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    for keyword, value in (text or {}).items():
        _check_text_keyword(keyword)
        try:
            extra.append(_png_chunk(b"tEXt", _text_key(keyword) + value.encode("latin-1")))
        except UnicodeEncodeError:
            raise ValueError(f"PNG text {keyword!r} must be Latin-1 text") from None
    after_header = len(PNG_SIGNATURE) + 12 + int.from_bytes(data[8:12], "big")  # IHDR comes first
    return data[:after_header] + b"".join(extra) + data[after_header:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC of type and data."""
    return (len(payload).to_bytes(4, "big") + kind + payload
            + zlib.crc32(kind + payload).to_bytes(4, "big"))


def keeps_transparency(fmt: str) -> bool:
    """Whether an output in ``fmt`` keeps a palette's transparency: PNG does (its tRNS chunk); a TIFF
    palette holds colours only (WebP and JPEG hold no palette)."""
    return fmt == "PNG"


def _png_text_info(text: Mapping[str, str]) -> PngImagePlugin.PngInfo:
    """Pillow's PngInfo holding ``text`` as tEXt chunks (before the image data, where Pillow puts them)."""
    info = PngImagePlugin.PngInfo()
    for keyword, value in text.items():
        _check_text_keyword(keyword)
        info.add_text(keyword, value)
    return info


def _check_text_keyword(keyword: str) -> None:
    """ValueError unless ``keyword`` can name a PNG text chunk: 1-79 printable characters."""
    if not 1 <= len(keyword) <= 79 or not keyword.isprintable():
        raise ValueError(f"PNG text keyword must be 1-79 printable characters, got {keyword!r}")


# The most bytes read_png_text reads of one matching text chunk; crm's own are a few dozen.
_MAX_TEXT_CHUNK = 65536

# A reader of ``size`` bytes at ``offset`` of one file (fewer at its end): see reader_at.
ReadAt = Callable[[int, int], bytes]


def reader_at(stream: BinaryIO) -> ReadAt:
    """A reader of ``size`` bytes at ``offset`` in ``stream``. For a file it reads the descriptor
    directly (``os.pread``): seeking a buffered file refills its buffer at every stop, so hopping
    over a PNG's 8-KB image-data chunks read about half the file to see their 8-byte headers."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError):  # io.BytesIO (UnsupportedOperation is an OSError)
        descriptor = None
    if descriptor is not None and hasattr(os, "pread"):
        return lambda offset, size: os.pread(descriptor, size, offset)

    def read(offset: int, size: int) -> bytes:
        stream.seek(offset)
        return stream.read(size)

    return read


def png_chunk_headers(read_at: ReadAt) -> Iterator[tuple[int, int, bytes]]:
    """(offset, data length, type) of each chunk of a PNG, from the first after the signature, read
    by ``read_at`` 8 header bytes at a time (their data is skipped, so no pixel is read), until the
    file ends before a whole header. The signature is not checked, nor are the lengths and types:
    the caller stops where it has what it wants, and judges what it finds."""
    offset = len(PNG_SIGNATURE)
    while len(header := read_at(offset, 8)) == 8:
        length, kind = int.from_bytes(header[:4], "big"), header[4:]
        yield offset, length, kind
        offset += 12 + length  # the chunk's header, data and CRC


def _text_key(keyword: str) -> bytes:
    """The first bytes of a tEXt chunk called ``keyword``: its Latin-1 name and the NUL ending it."""
    return keyword.encode("latin-1") + b"\x00"


def _png_text_before_image(read_at: ReadAt, keyword: str, wanted: bytes) -> str | None:
    """:func:`read_png_text` of a PNG read by ``read_at`` whose signature was checked, ``wanted``
    being ``_text_key(keyword)``; its ValueErrors name no file."""
    for offset, length, kind in png_chunk_headers(read_at):
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise ValueError(f"damaged PNG chunk at byte {offset}")
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"tEXt" and length >= len(wanted) and read_at(offset + 8, len(wanted)) == wanted:
            if length > _MAX_TEXT_CHUNK:
                raise ValueError(f"a {length}-byte {keyword!r} text chunk")
            data = read_at(offset + 4, 4 + length + 4)  # type, data and CRC
            if len(data) < 8 + length or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "big"):
                raise ValueError(f"damaged {keyword!r} text chunk (bad CRC)")
            return data[4 + len(wanted):-4].decode("latin-1")
    return None  # ends before any image data: check_output's problem to report


def read_png_text(path: str | Path, keyword: str) -> str | None:
    """The value of the first tEXt chunk called ``keyword`` in the PNG file at ``path``, or None when
    the chunks before its image data hold none (text written after the image data is not looked at).

    Cheap: reads only the 8-byte headers of the chunks before the first IDAT, skipping their data
    (an ICC profile, say), and the data of a chunk whose keyword matches; the image is never
    decoded, so a file with damaged image data still answers. Raises ValueError for a file that is
    not a PNG or whose chunks before the image data are damaged (a bad length, a matching chunk's
    CRC), OSError (FileNotFoundError, ...) when the file cannot be read.
    """
    wanted = _text_key(keyword)  # a keyword Latin-1 cannot spell fails before the file is opened
    # Unbuffered: only the bytes asked for are read (reader_at's pread bypasses any buffer; a
    # seek and read where there is no pread).
    with open(path, "rb", buffering=0) as handle:
        read_at = reader_at(handle)
        if read_at(0, len(PNG_SIGNATURE)) != PNG_SIGNATURE:
            raise ValueError(f"{path}: not a PNG file")
        try:
            return _png_text_before_image(read_at, keyword, wanted)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry to disk where the OS allows it (not on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def is_folder(path: Path) -> bool:
    """Whether ``path`` is a folder; False where it cannot be looked at (Python 3.11 raises when a
    folder on the way cannot be searched), which the write checks then name."""
    try:
        return path.is_dir()
    except OSError:
        return False


def name_max(folder: str | Path) -> int:
    """The longest file name, in bytes, that the file system of ``folder`` (of its nearest existing
    parent, before it is made) allows: its PC_NAME_MAX, or DEFAULT_NAME_MAX where that cannot be
    read (Windows, a folder that cannot be examined)."""
    existing = os.path.abspath(folder)
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        return DEFAULT_NAME_MAX
    return limit if limit and limit > 0 else DEFAULT_NAME_MAX


def name_bytes(name: str) -> int:
    """How many bytes ``name`` takes as a file name: encoded as the file system encoding encodes it
    (UTF-8 on Linux and macOS, where ``é`` takes 2 bytes and a CJK character 3)."""
    return len(os.fsencode(name))


def name_too_long(path: str | Path, kind: str = "file") -> str | None:
    """Why ``path`` cannot be made because its name (a ``kind``: "file" or "folder"), or the name of a
    folder on its way, is longer than :func:`name_max` allows, in words; None when all fit.

    Linux only, where the limit is in bytes of UTF-8 (NAME_MAX): macOS and Windows count characters
    or UTF-16 units, so elsewhere the file system's own error decides."""
    if not sys.platform.startswith("linux"):
        return None
    path = Path(path)
    for part in (path, *path.parents):
        size, limit = name_bytes(part.name), name_max(part.parent)
        if size > limit:
            what = f"its {kind} name" if part == path else "the name of a folder on its way"
            return f"{what} is {size} bytes long, and the file system allows at most {limit}"
    return None


def fitted_name(name: str, room: int) -> str:
    """``name`` when it takes at most ``room`` bytes (:func:`name_bytes`), else a stand-in of at most
    ``room`` bytes that is ``name``'s alone: its beginning, cut between characters, then ``~`` and
    16 hex digits of the sha256 of the whole name (names of temp and lock files, which add to their
    target's name, where the whole would be longer than the folder allows)."""
    if name_bytes(name) <= room:
        return name
    # surrogatepass: a name read from a folder may hold escaped bytes that are no UTF-8.
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_NAME_DIGEST_CHARS]
    budget = room - len("~") - len(digest)
    kept, used = [], 0
    for char in name:
        used += name_bytes(char)
        if used > budget:
            break
        kept.append(char)
    return f"{''.join(kept)}~{digest}"


def name_leaving_room(path: str | Path, added: int) -> str:
    """``path``'s file name, shortened by :func:`fitted_name` where ``added`` more bytes (a prefix or
    suffix of a file made beside it: a lock, a progress record) would be longer than its folder allows."""
    path = Path(path)
    return fitted_name(path.name, name_max(path.parent) - added)


def _temp_target(folder: Path, name: str, limit: int | None = None) -> str:
    """How write_atomic's temp names in ``folder`` name their target ``name``: the name itself, or
    where ``.NAME.<hex>.tmp`` would be longer than ``limit`` (by default the folder's
    :func:`name_max`), :func:`fitted_name`'s stand-in for it."""
    return fitted_name(name, (name_max(folder) if limit is None else limit) - _TEMP_NAME_EXTRA)


def temp_path(target: Path) -> Path:
    """A fresh name for the temp file write_atomic writes before renaming it to ``target``:
    ``.NAME.<12 hex digits>.tmp``, NAME shortened where the whole would not fit (see _temp_target)."""
    return target.parent / f".{_temp_target(target.parent, target.name)}.{uuid.uuid4().hex[:12]}.tmp"


def leftover_temp_files(folder: Path, names: Collection[str], min_age_s: float) -> list[Path]:
    """write_atomic temp files in ``folder`` for targets called one of ``names``, untouched for
    ``min_age_s`` seconds or more: left by writes that were killed. Nothing else ever matches."""
    try:
        # Plain names, not scandir's entries: a `crm refine` per file into a folder of 100,000
        # outputs looked through it in 0.2-0.3 s a run that way, and in 0.09-0.1 s this way.
        entries = os.listdir(folder)
    except OSError:
        return []
    hidden_temps = [name for name in entries if name.startswith(".") and name.endswith(".tmp")]
    if not hidden_temps:
        return []
    limit = name_max(folder)
    targets = {_temp_target(folder, name, limit) for name in names}  # as temp_path names them
    now = time.time()
    found: list[Path] = []
    for name in hidden_temps:
        match = _TEMP_NAME.fullmatch(name)
        if match is None or match.group("target") not in targets:
            continue
        path = folder / name
        try:
            status = path.lstat()
        except OSError:
            continue
        if stat.S_ISREG(status.st_mode) and now - status.st_mtime >= min_age_s:
            found.append(path)
    return sorted(found)


def remove_leftover_temp_files(outputs: Iterable[Path], min_age_s: float) -> list[Path]:
    """Delete the :func:`leftover_temp_files` of ``outputs`` (where write_atomic makes them: beside a
    link's target, for an output that is a link) untouched for ``min_age_s`` seconds or more: writes
    killed half-way. Returns the files removed."""
    names_by_folder: dict[Path, set[str]] = {}
    for output in outputs:
        target = Path(os.path.realpath(output)) if output.is_symlink() else output
        names_by_folder.setdefault(target.parent, set()).add(target.name)
    removed: list[Path] = []
    for folder, names in names_by_folder.items():
        for temp in leftover_temp_files(folder, names, min_age_s):
            try:
                temp.unlink()
            except OSError:
                continue  # gone meanwhile, or not ours to delete: harmless either way
            removed.append(temp)
    return removed


def write_error_reason(target: Path, error: OSError) -> str:
    """Why ``target`` could not be written, in words that name the user's paths (never a temp file)."""
    if isinstance(error, FileExistsError | NotADirectoryError):
        # mkdir or open met a file where a folder should be: name that file.
        for folder in target.parents:
            if folder.exists():
                if not folder.is_dir():
                    return f"{folder} is a file, not a folder"
                break
    reason = error.strerror or str(error) or type(error).__name__
    return reason[0].lower() + reason[1:]


def write_failure(named: Path, error: OSError, target: Path | None = None) -> ImageWriteError:
    """The ImageWriteError of a failed write of ``named`` (``target``: the real path written, a link's
    target; ``named`` by default): its message names ``named`` and the reason (write_error_reason), and
    it keeps ``error``'s errno, so that a caller can tell a full disk (:func:`out_of_space`)."""
    failure = ImageWriteError(f"cannot write {named}: {write_error_reason(target or named, error)}")
    failure.errno = error.errno
    return failure


def out_of_space(error: BaseException) -> bool:
    """Whether ``error`` is a write's that found no room: a full disk (ENOSPC) or a used-up quota (EDQUOT)."""
    return isinstance(error, OSError) and error.errno in OUT_OF_SPACE_ERRNOS


def write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` via a hidden temp file, fsync and rename.

    A symbolic link keeps pointing where it did: the file it names is replaced, not the link. A
    target that is no file to replace (a device such as /dev/null, a FIFO, /dev/stdout on a pipe)
    is written to as it is; renaming over it would put a file in its place.
    Errors are ImageWriteError naming ``target`` (never the temp file) and the reason, with the
    errno of the failure (ENOSPC for a full disk: see :func:`out_of_space`).
    """
    if _is_stream(target):
        try:
            with open(target, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            raise write_failure(target, exc) from None
        return
    named = target
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    temp = temp_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # os.open with 0o666 honours the umask, unlike tempfile.mkstemp's fixed 0o600.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        discard(temp)
        raise write_failure(named, exc, target) from None
    except BaseException:
        discard(temp)
        raise
    _fsync_dir(target.parent)


def _is_stream(target: Path) -> bool:
    """True when ``target`` (its links followed) exists as something other than a file or folder."""
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def discard(temp: Path) -> None:
    """Remove a temp file if it was made; never raises, so the error being handled is the one reported
    (unlinking under a path that is not a folder raises ENOTDIR)."""
    try:
        temp.unlink(missing_ok=True)
    except OSError:
        pass


@dataclass(frozen=True)
class NameFolding:
    """How a disk compares file names: whether two names that differ only in letter case
    (``A.png``, ``a.png``: macOS, Windows), or only in Unicode form (``café`` composed and
    decomposed: macOS), name one file; ``probed`` is False where that could not be learnt and both
    are assumed."""

    case: bool
    unicode_form: bool
    probed: bool = True

    def key(self, name: str) -> str:
        """``name`` as this disk compares it: two names with one key are one file."""
        if self.unicode_form:
            name = unicodedata.normalize("NFC", name)
        # lower(), not casefold(): APFS and NTFS map letter to letter, so Straße and STRASSE are two files.
        return name.lower() if self.case else name


def name_folding(folder: Path) -> NameFolding:
    """How the disk of ``folder`` (of its nearest existing parent, before it is made) compares file
    names, found by making an empty probe file and looking it up under other spellings. Where no
    probe can be made (a read-only or missing folder), both foldings are assumed (``probed`` False):
    the outputs that would then clash are refused, not overwritten."""
    existing = Path(os.path.abspath(folder))
    while not existing.is_dir() and existing.parent != existing:
        existing = existing.parent
    # temp_path's hex digits are lower case, so the "A" is the only capital of the name.
    probe = temp_path(existing / unicodedata.normalize("NFC", "crm-names-A\u00e9"))
    try:
        with open(probe, "x"):
            pass
    except OSError:
        return NameFolding(True, True, probed=False)
    try:
        case = probe.with_name(probe.name.replace("A", "a", 1)).exists()
        unicode_form = probe.with_name(unicodedata.normalize("NFD", probe.name)).exists()
    finally:
        discard(probe)
    return NameFolding(case, unicode_form)


@dataclass(frozen=True)
class OutputCheck:
    """What :func:`check_output` found in an existing output file."""

    # Why it is not a complete image (see check_output), or None when it looks complete.
    problem: str | None
    # The value of the PNG text chunk asked for (read_png_text), or None: no such chunk before the
    # image data, not asked for, not a PNG, or an incomplete one (not looked for).
    text: str | None = None
    # Why the chunks before that PNG's image data cannot be read (a bad length, the chunk's CRC), or None.
    text_problem: str | None = None


def check_output(path: str | Path, text_keyword: str | None = None) -> OutputCheck:
    """Whether an existing output file looks complete (``problem``: why it is not a complete image,
    or None) and, for a complete PNG, the value of its tEXt chunk called ``text_keyword``
    (:func:`read_png_text`), in one opening of the file: its first and last bytes, then the headers
    of the chunks before the image data.

    What is checked: PNG: the signature and the closing IEND chunk; WebP: the RIFF header and its declared
    length; TIFF: the header and the strips or tiles it points to, all within the file; other
    files: not empty.

    Raises FileNotFoundError (NotADirectoryError under a file) when there is no file, OSError when
    it cannot be examined.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return OutputCheck("empty file")
    suffix = path.suffix.lower()
    with open(path, "rb", buffering=0) as handle:
        read_at = reader_at(handle)
        head = read_at(0, 16)
        tail = read_at(max(0, size - len(_PNG_END)), len(_PNG_END))
        if suffix == ".png":
            if not head.startswith(PNG_SIGNATURE):
                return OutputCheck("not a PNG file")
            if tail != _PNG_END:
                return OutputCheck("truncated: no IEND chunk at the end")
            if text_keyword is None:
                return OutputCheck(None)
            wanted = _text_key(text_keyword)  # outside the try: a keyword Latin-1 cannot spell is the caller's error
            try:
                return OutputCheck(None, _png_text_before_image(read_at, text_keyword, wanted))
            except ValueError as exc:
                return OutputCheck(None, text_problem=str(exc))
    if suffix == ".webp":
        if head[:4] != b"RIFF" or head[8:12] != b"WEBP":
            return OutputCheck("not a WebP file")
        declared = int.from_bytes(head[4:8], "little") + 8
        return OutputCheck(None if size >= declared else f"truncated: {size} of {declared} bytes")
    if suffix in (".tif", ".tiff"):
        return OutputCheck(_incomplete_tiff(path, size))
    return OutputCheck(None)


def _incomplete_tiff(path: Path, size: int) -> str | None:
    """check_output's problem for a TIFF: its header decodes and its image data lies within the file."""
    try:
        with warnings_ignored():  # Pillow warns about the damage this function reports
            with Image.open(path) as image:
                if image.format != "TIFF":
                    return f"not a TIFF file ({image.format})"
                tags = image.tag_v2
                offsets = tags.get(273) or tags.get(324) or ()  # StripOffsets, or TileOffsets
                counts = tags.get(279) or tags.get(325) or ()  # StripByteCounts, or TileByteCounts
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"not a readable TIFF ({exc})"
    if not offsets or len(offsets) != len(counts):
        return "no image data"
    end = max(offset + count for offset, count in zip(offsets, counts, strict=True))
    return None if end <= size else f"truncated: image data runs to byte {end} of {size}"


def write_image(path: str | Path, array: np.ndarray, palette: list[int] | None = None,
                icc_profile: bytes | None = None, transparency: int | bytes | None = None) -> None:
    """Write ``array`` atomically in the lossless format its extension names (.png, .tif, .tiff, .webp),
    with ``icc_profile`` embedded when given, and a palette's ``transparency`` where the format keeps
    it (:func:`keeps_transparency`; see encode_image).

    Raises OutputNameError for other extensions, ValueError for an array the format cannot hold
    (see encode_image) and ImageWriteError when the file cannot be written.
    """
    _write_encoded(Path(path), array, palette, output_format(path), icc_profile, transparency)


def write_picture(path: str | Path, rgb: np.ndarray, icc_profile: bytes | None = None) -> None:
    """Write a picture to look at, never a mask (crm compare's strip), atomically in the format its
    extension names (:func:`picture_format`): as :func:`write_image` does, or as JPEG of JPEG_QUALITY;
    ``icc_profile``: that of the photo whose pixels it shows."""
    _write_encoded(Path(path), rgb, None, picture_format(path), icc_profile)


def _write_encoded(target: Path, array: np.ndarray, palette: list[int] | None, fmt: str,
                   icc_profile: bytes | None, transparency: int | bytes | None = None) -> None:
    """Encode ``array`` in ``fmt`` and write it to ``target`` atomically; a ValueError names ``target``."""
    try:
        data = encode_image(array, palette, fmt, icc_profile, transparency=transparency)
    except ValueError as exc:
        raise ValueError(f"{target}: {exc}") from None
    write_atomic(target, data)


def write_png(path: str | Path, array: np.ndarray, palette: list[int] | None = None,
              icc_profile: bytes | None = None, text: Mapping[str, str] | None = None,
              transparency: int | bytes | None = None) -> None:
    """Write ``array`` as a PNG at ``path`` atomically (temp file, fsync, rename); the arrays, ``palette``,
    ``icc_profile``, ``text`` and ``transparency``: see encode_image.

    The name must end in .png (or have no extension), so PNG bytes never sit under another
    format's name; use write_image to pick the format from the extension.
    """
    target = Path(path)
    if target.suffix.lower() not in ("", ".png"):
        raise OutputNameError(f"{target}: the file is written as PNG, so its name must end in .png")
    write_atomic(target, encode_image(array, palette, "PNG", icc_profile, text, transparency))


def write_bytes_stdout(data: bytes) -> None:
    """Write ``data`` (e.g. PNG bytes) to standard output; refuses when stdout is a terminal.

    Raises BrokenPipeError when the reader goes away before the last byte, also part-way.
    """
    if sys.stdout.isatty():
        raise ValueError("refusing to write PNG to a terminal; redirect or use -o FILE")
    try:
        # A pipe whose reader closes part-way takes a short write without an error (the bytes it
        # held, 64 KiB on Linux), and the buffered writer returns that count; the next write of
        # the rest fails with EPIPE, so the loop goes on until all is written or the write fails.
        rest = memoryview(data)
        while rest:
            written = sys.stdout.buffer.write(rest)
            if not written:  # a non-blocking stdout that takes nothing now
                raise OSError("the write took no bytes")
            rest = rest[written:]
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:  # `> /dev/full`, a full disk: say where the write failed
        raise OSError(f"cannot write the image to standard output: {exc.strerror or exc}") from exc
