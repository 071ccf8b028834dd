"""Decoding images and masks: read_image, read_mask (raw values as ``masks.MaskData``), probe_image.

Every file is decoded by Pillow, so the EXIF orientation is read one way and applied by the same
NumPy code to images and masks. OpenCV is used only for the pixels of 16-bit colour files (Pillow
truncates those to their high byte). What a mask's values mean is masks.py's; encoding and
writing files is writing.py's.
"""

from __future__ import annotations

import io
import logging
import operator
import os
import re
import stat
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from .config import PHOTO_OUTPUT_KINDS
from .masks import LABEL_ID_LIMIT, MaskData, count_colours, swaps_axes
from .writing import WARNING_STATE_LOCK, png_chunk_headers, reader_at, warnings_ignored

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                                   ".pgm", ".ppm", ".pbm", ".pnm")

STDIN_NAME = "<stdin>"
# The label of encoded bytes given without a name: the API's bytes need not be standard input (the
# CLI passes name="<stdin>" with the bytes it reads from standard input).
BYTES_NAME = "<bytes>"
# Bytes longer than this are never taken for a file's path (Linux's PATH_MAX).
_PATH_BYTES_LIMIT = 4096
# The largest image crm reads (width x height), and the longest side. Refining needs about 0.4-0.75 GB
# (onnx, torch) plus 37 bytes per pixel (70 with the `quality` preset; see runtime.estimate_refine_bytes), so
# the 150 MP limit is a 6-7 GB job (11-12 GB with `quality`); the side limit is JPEG's.
MAX_IMAGE_PIXELS = 150_000_000
MAX_IMAGE_SIDE = 65_535
_EXIF_ORIENTATION = 0x0112
# Pillow raises a zoo of exception types on bad input (SyntaxError from some plugins, struct.error
# from truncated headers, ...), not only OSError.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error)


class ImageReadError(OSError):
    """An input image or mask is missing or cannot be decoded; the message names the file."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, before any pixel is decoded: upright size, mode, format and the
    EXIF orientation that makes it upright (1 = none)."""

    width: int
    height: int
    mode: str
    format: str
    orientation: int = 1
    lossy: str | None = None  # the lossy compression it is stored in (:func:`lossy_compression`), None if none
    # The decode's note on a damaged EXIF block or TIFF tags, when the header shows one: said by a size
    # check that fails on this header (the decode that says it otherwise is never reached).
    damaged_tags: str | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width), upright (EXIF orientation applied)."""
        return self.height, self.width


def _file_error(label: str, exc: OSError) -> ImageReadError:
    """A one-line message for a file that cannot be opened or read."""
    if isinstance(exc, FileNotFoundError):
        return ImageReadError(f"{label}: no such file")
    if isinstance(exc, IsADirectoryError):
        return ImageReadError(f"{label}: is a directory, not an image file")
    if isinstance(exc, PermissionError):
        return ImageReadError(f"{label}: permission denied")
    return ImageReadError(f"{label}: cannot read file ({exc.strerror or exc})")


def _check_source(source: object) -> None:
    """TypeError for a ``source`` that is neither a path nor encoded bytes (an array or a PIL image
    given to a reader: os.stat's own wording would not say what was wrong)."""
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        raise TypeError(f"an image source must be a path (str or os.PathLike) or the file's encoded bytes, "
                        f"not {type(source).__module__}.{type(source).__qualname__}")


def _source_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    """The encoded bytes of ``source`` and the name to use in messages."""
    _check_source(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or BYTES_NAME
        data = bytes(source)
    else:
        label = name or str(source)
        data = _pipe_bytes(source, label)
        if data is None:
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise _file_error(label, exc) from None
    if not data:
        raise ImageReadError(f"{label}: empty file")
    return data, label


def _spells_existing_path(source: bytes | bytearray | memoryview) -> bool:
    """Whether ``source`` (bytes that are no image) reads as the path of an existing file: short,
    without NUL, and there (``os.listdir(b".")`` gives such bytes)."""
    size = source.nbytes if isinstance(source, memoryview) else len(source)
    if not 0 < size <= _PATH_BYTES_LIMIT:
        return False
    data = bytes(source)
    return b"\0" not in data and os.path.isfile(data)


@contextmanager
def _bytes_path_hint(source: str | Path | bytes, name: str | None) -> Iterator[None]:
    """An ImageReadError raised inside, when ``source`` is bytes an API caller gave (not standard
    input, which the CLI names STDIN_NAME) that spell an existing file's path, says that bytes are
    read as encoded image data and how to read the file instead."""
    try:
        yield
    except ImageReadError as exc:
        if (name == STDIN_NAME or not isinstance(source, (bytes, bytearray, memoryview))
                or not _spells_existing_path(source)):
            raise
        raise ImageReadError(f"{exc}; bytes are read as encoded image data, but these spell the path of an "
                             "existing file: to read that file, pass its path as a str or Path "
                             "(os.fsdecode(path))") from None


# A pipe given as a path (`<(cat mask.png)`, a FIFO, /dev/stdin fed by a pipe) can be read only
# once, but every input is probed before it is decoded: its bytes are kept here after the first
# read, by path and inode (so a new pipe behind a reused /dev/fd/N name is read afresh). Only the
# last few are kept: a pair needs two, and a long-running process must not hoard every pipe it read.
_PIPE_BYTES: dict[tuple[str, int, int], bytes] = {}
_PIPES_KEPT = 4


def _pipe_bytes(path: str | Path, label: str) -> bytes | None:
    """All bytes of ``path`` when it is a pipe or FIFO (read once, then kept for every later read
    of the same path); None for a regular file or anything else."""
    try:
        info = os.stat(path)
    except OSError:
        return None  # the ordinary open reports it
    if not stat.S_ISFIFO(info.st_mode):
        return None
    key = (os.fspath(path), info.st_dev, info.st_ino)
    if key not in _PIPE_BYTES:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise _file_error(label, exc) from None
        while len(_PIPE_BYTES) >= _PIPES_KEPT:
            del _PIPE_BYTES[next(iter(_PIPE_BYTES))]  # the oldest (dicts keep insertion order)
        _PIPE_BYTES[key] = data
    return _PIPE_BYTES[key]


def _is_16bit_colour(image: Image.Image) -> bool:
    """True when Pillow would reduce a 16-bit-per-channel colour file to 8 bits by truncation."""
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return False
    # Index access: tiles are plain tuples in older Pillow and named tuples in newer ones.
    args = image.tile[0][3]
    parts = args if isinstance(args, tuple) else (args,)
    return any(isinstance(part, str) and ";16" in part for part in parts)


def _orientation(image: Image.Image, header_only: bool = False) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or unreadable.

    With ``header_only`` no pixel is decoded: the base class's getexif reads only what the header
    gave (EXIF, text chunks, XMP), whereas a PNG's own getexif decodes the whole image to reach the
    chunks after the image data.
    """
    getexif = Image.Image.getexif if header_only else type(image).getexif
    try:
        value = getexif(image).get(_EXIF_ORIENTATION, 1)
    except Exception:
        # A broken EXIF block must not make otherwise readable pixels unreadable.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _png_late_exif(stream: BinaryIO) -> tuple[bytes | None, bool]:
    """Walk a PNG's chunk headers (writing.png_chunk_headers: their data is skipped, so no pixel is
    decoded) for an eXIf chunk, which may follow the image data. Returns (its payload or None,
    whether a text chunk, which can also carry an orientation, follows the image data)."""
    read_at = reader_at(stream)
    seen_image_data = text_after_image = False
    for offset, length, chunk_type in png_chunk_headers(read_at):
        if chunk_type == b"eXIf":
            payload = read_at(offset + 8, length)
            return (payload if len(payload) == length else None), text_after_image
        if chunk_type == b"IEND":
            break
        seen_image_data |= chunk_type == b"IDAT"
        text_after_image |= seen_image_data and chunk_type in _PNG_TEXT_CHUNKS
    return None, text_after_image


def _header_orientation(image: Image.Image, stream: BinaryIO) -> int:
    """:func:`_orientation` of an image opened (not loaded) from ``stream``, decoding no pixel of a
    PNG unless a text chunk follows its image data (rare; Pillow then decodes it to read them)."""
    if image.format != "PNG" or "exif" in image.info:
        return _orientation(image, header_only=True)
    try:
        payload, text_after_image = _png_late_exif(stream)
    except (OSError, ValueError, struct.error):
        return 1
    if payload is not None:
        image.info["exif"] = b"Exif\x00\x00" + payload  # as Pillow's decoder records an eXIf chunk
    elif text_after_image:
        return _orientation(image)
    return _orientation(image, header_only=True)


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip the first two axes of ``array`` so it displays upright (EXIF semantics)."""
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
        array = array.swapaxes(0, 1)
    elif orientation == 6:
        array = np.rot90(array, -1)
    elif orientation == 7:
        array = array[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        array = np.rot90(array, 1)
    array = np.ascontiguousarray(array)
    # Arrays viewed from Pillow images are read-only; callers get arrays they may modify.
    return array if array.flags.writeable else array.copy()


# OpenCV's log level is one setting of the process: decodes that lower it hold this lock, so two
# threads never restore each other's level.
_OPENCV_LOG_LOCK = threading.Lock()


@contextmanager
def _opencv_quiet() -> Iterator[None]:
    """Inside, OpenCV logs errors only: its warnings (libtiff's ``TIFFReadDirectory`` notes on the
    tags of an RGBA TIFF that cv2 itself wrote) would reach stderr as lines that are not crm's. A
    file OpenCV cannot decode still fails: imdecode returns None. The level is restored after."""
    from cv2.utils import logging as cv_logging

    with _OPENCV_LOG_LOCK:
        level = cv_logging.getLogLevel()
        cv_logging.setLogLevel(min(level, cv_logging.LOG_LEVEL_ERROR))
        try:
            yield
        finally:
            cv_logging.setLogLevel(level)


def _decode_16bit_colour(data: bytes, label: str) -> np.ndarray:
    """Full-precision uint16 RGB or RGBA pixels of a 16-bit colour PNG/TIFF, via OpenCV."""
    with _opencv_quiet():
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImageReadError(f"{label}: cannot decode 16-bit colour image")
    code = cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(pixels, code)


def _wide_separate_planes(image: Image.Image) -> bool:
    """Whether ``image`` is a TIFF of more than 8 bits a sample that stores each colour in a plane of
    its own (PlanarConfiguration 2, as tifffile writes a (3, H, W) uint16 array): OpenCV scrambles
    such files, and Pillow reads the uncompressed ones wrongly too (8-bit ones read right)."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or tags.get(284) != 2:
        return False
    bits = tags.get(258, (8,))
    return max(bits if isinstance(bits, tuple) else (bits,)) > 8


def _check_same_pixels(pixels: np.ndarray, loaded: Image.Image, label: str) -> None:
    """ImageReadError unless OpenCV's 16-bit ``pixels`` (laid out as ``loaded``) agree with Pillow's
    8-bit reading of the same file (its top 8 bits): a layout OpenCV decodes wrongly would otherwise
    be refined as noise, without a word."""
    eight = np.asarray(loaded)
    # The colour channels: a 16-bit PNG with a transparent colour (tRNS) is RGBA to OpenCV, RGB to Pillow.
    colours = (pixels[..., :3] >> 8).astype(np.int16)
    if eight.shape[:2] != pixels.shape[:2] or eight.ndim != 3 or np.abs(colours - eight[..., :3]).mean() > 1.0:
        raise ImageReadError(f"{label}: its 16-bit colour pixels decode differently in OpenCV and Pillow, so neither "
                             "can be trusted; save it as a 16-bit PNG, or an interleaved (contiguous) TIFF")


def _megapixels(pixels: int) -> str:
    """``7_000_000`` -> "7 MP"; under one megapixel with two decimals ("0.13 MP")."""
    megapixels = pixels / 1e6
    return f"{megapixels:.0f} MP" if megapixels >= 1 else f"{megapixels:.2f} MP"


def _megapixels_over(pixels: int, limit: int) -> str:
    """:func:`_megapixels` of ``pixels``, more than ``limit``, never shown as the limit's own text:
    where rounding makes them equal (150,400,000 and 150,000,000 both "150 MP"), with the fewest
    decimals, rounded down, that show it larger ("150.4 MP"; 150,000,001 is "150.000001 MP")."""
    shown = _megapixels(pixels)
    if pixels <= limit or shown != _megapixels(limit):
        return shown
    for decimals in range(1, 7):
        unit = 10 ** (6 - decimals)  # pixels per last shown decimal
        if pixels // unit * unit > limit:
            whole, fraction = divmod(pixels // unit, 10**decimals)
            return f"{whole}.{fraction:0{decimals}d} MP"
    return shown  # not reached: at six decimals every pixel shows


def _size_limit_error(label: str, width: int, height: int) -> ImageReadError:
    """The one message for an image over crm's size limits: its size, and the limit(s) it exceeds."""
    limits = []
    if width * height > MAX_IMAGE_PIXELS:
        limits.append(_megapixels(MAX_IMAGE_PIXELS))
    if max(width, height) > MAX_IMAGE_SIDE:
        limits.append(f"{MAX_IMAGE_SIDE} px per side")
    return ImageReadError(f"{label}: {width}x{height} ({_megapixels_over(width * height, MAX_IMAGE_PIXELS)}) is "
                          f"larger than crm's limit of {' and of '.join(limits)}; downscale or crop it first")


def check_image_size(width: int, height: int, label: str) -> None:
    """Raise ImageReadError when an image is larger than crm's documented limits (naming its size
    and only the limits it exceeds)."""
    if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise _size_limit_error(label, width, height)


def _bomb_size(exc: Exception) -> tuple[int, int] | None:
    """The (width, height) that made Pillow refuse an image as a decompression bomb. Its message
    gives only the pixel count; the size is the ``size`` argument of Pillow's check, the frame where
    the error was raised. None when that is not found (another Pillow version)."""
    trace = exc.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    size = trace.tb_frame.f_locals.get("size") if trace is not None else None
    if isinstance(size, tuple) and len(size) == 2 and all(isinstance(side, int) for side in size):
        return size
    return None


def _bomb_error(label: str, exc: Exception) -> ImageReadError:
    """Pillow's decompression-bomb refusal as crm's size-limit message."""
    if (size := _bomb_size(exc)) is not None:
        width, height = size
        if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
            return _size_limit_error(label, width, height)
        # Within crm's limits: the process has lowered Pillow's own (PIL.Image.MAX_IMAGE_PIXELS).
        return ImageReadError(f"{label}: {width}x{height} ({_megapixels(width * height)}) is larger than the "
                              "limit set by PIL.Image.MAX_IMAGE_PIXELS in this process")
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size_text = _megapixels_over(int(found.group(1)), MAX_IMAGE_PIXELS) if found else "the image"
    return ImageReadError(f"{label}: {size_text} is larger than crm's limit of {_megapixels(MAX_IMAGE_PIXELS)}; "
                          "downscale or crop it first")


def _open(data: bytes, label: str) -> Image.Image:
    """Open (header only) with crm's size limit in place of Pillow's decompression-bomb warning."""
    # crm checks the size itself (check_image_size), with a message that names the file.
    with warnings_ignored(Image.DecompressionBombWarning):
        try:
            opened = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise _bomb_error(label, exc) from None
    check_image_size(opened.width, opened.height, label)
    return opened


_TIFF_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating-point"}


def _tiff_layout(stream: BinaryIO) -> tuple[int, int, int] | None:
    """(channels, bits per sample, TIFF SampleFormat) of the first image of a TIFF, read from its
    tags; None when ``stream`` holds no readable TIFF directory."""
    from PIL import TiffImagePlugin

    def first(value: int | tuple[int, ...]) -> int:
        return int(value[0]) if isinstance(value, tuple) else int(value)

    try:
        stream.seek(0)
        header = stream.read(8)
        if header[:4] not in (b"II*\x00", b"MM\x00*"):
            return None
        tags = TiffImagePlugin.ImageFileDirectory_v2(header)
        stream.seek(tags.next)
        with warnings_ignored():  # Pillow warns about a corrupt directory; None says it
            tags.load(stream)
        if 256 not in tags or 258 not in tags:  # no width or bits per sample: not a usable directory
            return None
        return first(tags.get(277, 1)), first(tags[258]), first(tags.get(339, 1))
    except Exception:
        return None


def _unrecognised_error(label: str, stream: BinaryIO | None) -> ImageReadError:
    """The error for a file Pillow cannot identify; for a TIFF it names the sample layout it holds."""
    layout = _tiff_layout(stream) if stream is not None else None
    if layout is None:
        return ImageReadError(f"{label}: not a recognised image file")
    channels, bits, sample_format = layout
    kind = _TIFF_SAMPLE_FORMATS.get(sample_format, f"sample format {sample_format}")
    message = (f"{label}: this TIFF's sample format ({channels} channel{'s' if channels != 1 else ''} of "
               f"{bits}-bit {kind}) is not supported")
    if sample_format == 3:
        # Said of masks and photos alike: the file is refused before anyone knows which it is.
        message += "; crm reads floating-point masks and photos only as 32-bit single-channel TIFFs"
    return ImageReadError(message)


@contextmanager
def _decode_errors(label: str, what: str, stream: BinaryIO | None = None) -> Iterator[None]:
    """Pillow's many failure types as one ImageReadError naming the file (``what`` failed to decode;
    ``stream``, the file's bytes, lets an unidentified TIFF be described)."""
    try:
        yield
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError:
        raise _unrecognised_error(label, stream) from None
    except Image.DecompressionBombError as exc:
        raise _bomb_error(label, exc) from None
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"{label}: cannot decode {what} ({exc})") from None


@dataclass(frozen=True)
class _Decoded:
    """A fully decoded file: its pixels (a loaded Pillow image or, for 16-bit colour files, a uint16
    RGB/RGBA array), the file's EXIF orientation, the part of it still to apply to those pixels
    (1 when the decoder turned them upright itself), the file label for messages and the notes of
    decoding it."""

    pixels: Image.Image | np.ndarray
    orientation: int
    pending: int
    label: str
    icc_profile: bytes | None = None  # the file's embedded colour profile, if any
    notes: tuple[str, ...] = ()  # for the log: several frames, a damaged EXIF block
    lossy: str | None = None  # the lossy compression the file is stored in (:func:`lossy_compression`)


def _tiff_orientation(image: Image.Image) -> int | None:
    """The Orientation tag (1..8) of an opened TIFF; None for other formats or without a valid tag."""
    tags = getattr(image, "tag_v2", None)
    try:
        value = tags.get(_EXIF_ORIENTATION) if tags is not None else None
    except Exception:
        return None  # as in _orientation: a broken tag must not make readable pixels unreadable
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _stored_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image's pixels as its file stores them. Newer Pillow (13 here)
    reports a TIFF's size already turned by its Orientation tag; the tags keep the stored size."""
    tags = getattr(image, "tag_v2", None)
    try:
        width, height = tags[256], tags[257]  # ImageWidth, ImageLength
    except (TypeError, KeyError):
        return image.size
    return (width, height) if isinstance(width, int) and isinstance(height, int) else image.size


# Orientations 6 and 8 undo each other; every other one undoes itself.
_INVERSE_ORIENTATION = {6: 8, 8: 6}


def inverse_orientation(orientation: int) -> int:
    """The EXIF orientation whose :func:`apply_orientation` undoes ``orientation``'s."""
    return _INVERSE_ORIENTATION.get(orientation, orientation)


def _laid_out_as(pixels: np.ndarray, loaded: Image.Image, orientation: int) -> np.ndarray:
    """OpenCV's 16-bit ``pixels`` of a file with EXIF ``orientation``, laid out as Pillow loaded it.

    Which formats each library turns upright itself differs between their versions (OpenCV 5 turns
    TIFFs upright, newer Pillow too), so the layout is found by comparing with Pillow's 8-bit pixels,
    which are the high bytes of the 16-bit ones.
    """
    reference = np.asarray(loaded)[..., :3].astype(np.int16)
    inverse = inverse_orientation(orientation)
    turned_shape = pixels.shape[1::-1] if swaps_axes(orientation) else pixels.shape[:2]
    fitting = [pixels] if pixels.shape[:2] == reference.shape[:2] else []
    if turned_shape == reference.shape[:2]:  # built only when they fit: each is a full-size copy
        fitting += [apply_orientation(pixels, o) for o in dict.fromkeys((orientation, inverse))]
    if not fitting:
        return pixels
    return min(fitting, key=lambda c: float(np.abs((c[..., :3] >> 8).astype(np.int16) - reference).mean()))


# Formats whose later frames are not other pictures of the same kind: an MPO (a camera JPEG) adds
# previews and depth maps after its main image.
_FRAMES_NOT_PAGES = ("MPO",)


def _several_frames_note(opened: Image.Image, label: str) -> str | None:
    """The note for an animated GIF, PNG or WebP or a multi-page TIFF: only its first frame is read,
    which may not be the one meant. None for a file of one frame (or an MPO's previews)."""
    if opened.format in _FRAMES_NOT_PAGES:
        return None
    try:
        # Counting walks through the later frames: their own warnings (corrupt EXIF) are not the
        # first frame's, and the file must be back at its first frame, even when a later one is
        # damaged, or the wrong frame would be decoded.
        with warnings_ignored():
            frames = int(getattr(opened, "n_frames", 1))
    except _DECODE_ERRORS:
        return None  # a damaged later frame: the first is still read, and its own errors reported
    finally:
        if opened.tell() != 0:
            opened.seek(0)
    if frames > 1:
        return f"{label}: holds {frames} frames (an animation or a multi-page file); only the first is read"
    return None


@dataclass(frozen=True)
class _PillowWarning:
    """One of Pillow's warnings while a file was read: its message (blanks tidied) and whether it is
    about the file's tags (an EXIF block, a TIFF's own tags), where the orientation is kept."""

    message: str
    about_tags: bool


@contextmanager
def _pillow_warnings() -> Iterator[list[_PillowWarning]]:
    """Inside, Pillow's UserWarnings (a corrupt EXIF block, a malformed MPO) are not printed in
    Python's format, which names no file, but kept: the yielded list receives each distinct one, for
    :func:`_warning_notes`. Other warnings (another thread's too) are passed on as they came.

    ``warnings.catch_warnings`` swaps process-wide state, so decodes in several threads (the API
    invites one Refiner per thread) take turns here, and with :func:`writing.warnings_ignored`'s filters
    (WARNING_STATE_LOCK): interleaved, one thread's exit would leave Python's warning output
    pointing at another's finished list."""
    kept: list[_PillowWarning] = []
    with WARNING_STATE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every one, not once per source line as by default
        # crm checks the size itself (check_image_size), with a message that names the file.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield kept
        finally:
            others = []
            for warning in caught:
                if not (issubclass(warning.category, UserWarning) and "PIL" in Path(warning.filename).parts):
                    others.append(warning)
                    continue
                message = " ".join(str(warning.message).split())
                # Pillow parses EXIF blocks with its TIFF tag reader, whose messages do not all say "EXIF".
                about_tags = "exif" in message.lower() or Path(warning.filename).stem == "TiffImagePlugin"
                if (found := _PillowWarning(message, about_tags)) not in kept:
                    kept.append(found)
    for warning in others:  # shown as they came, once Python's own warning output is back
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _damaged_tags_note(found: list[_PillowWarning], label: str, file_format: str, orientation: int) -> str | None:
    """The note naming the file for damaged tags (an EXIF block; a TIFF's own tags) among the warnings
    of :func:`_pillow_warnings`, saying whether an orientation was still applied; None without any."""
    tags = "TIFF tags" if file_format == "TIFF" else "EXIF data"
    details = "; ".join(warning.message.rstrip(".") for warning in found if warning.about_tags)
    if not details:
        return None
    if orientation == 1:
        return f"{label}: damaged {tags} ignored, so no EXIF orientation was applied ({details})"
    return f"{label}: damaged {tags} ({details}); its orientation tag ({orientation}) was still applied"


def _warning_notes(found: list[_PillowWarning], label: str, file_format: str, orientation: int) -> list[str]:
    """Notes naming the file for the warnings of :func:`_pillow_warnings`: one for damaged tags
    (:func:`_damaged_tags_note`), and one for each other warning."""
    damaged = _damaged_tags_note(found, label, file_format, orientation)
    return [*([damaged] if damaged else []),
            *(f"{label}: {warning.message}" for warning in found if not warning.about_tags)]


def _decode(source: str | Path | bytes, name: str | None) -> _Decoded:
    """Open and fully decode ``source``, keeping notes for the log: several frames, and Pillow's
    warnings (a damaged EXIF block) as lines naming the file."""
    with _bytes_path_hint(source, name):
        data, label = _source_bytes(source, name)
        return _decode_data(data, label)


def _decode_data(data: bytes, label: str) -> _Decoded:
    """:func:`_decode` of the encoded bytes ``data``, named ``label`` in messages."""
    with _decode_errors(label, "image", io.BytesIO(data)):
        with _pillow_warnings() as pillow_warnings:
            # The BytesIO stays alive with the image, so no copy is needed to detach it from a file.
            opened = _open(data, label)
            wide_colour = _is_16bit_colour(opened)
            tiff_orientation = _tiff_orientation(opened)
            frames_note = _several_frames_note(opened, label)
            opened.load()
            if tiff_orientation is None:
                orientation = pending = _orientation(opened)
            else:
                # Newer Pillow turns a TIFF upright while loading it and drops the tag; older Pillow
                # leaves both to crm.
                orientation = tiff_orientation
                pending = orientation if _tiff_orientation(opened) == orientation else 1
        notes = [frames_note] if frames_note else []
        notes += _warning_notes(pillow_warnings, label, opened.format or "", orientation)
        profile = opened.info.get("icc_profile") or None
        lossy = lossy_compression(opened, io.BytesIO(data))
        if _wide_separate_planes(opened):
            raise ImageReadError(f"{label}: a 16-bit colour TIFF with separate colour planes (PlanarConfiguration "
                                 "2) is not read correctly here; save it with the planes interleaved (tifffile: "
                                 "planarconfig='contig')")
        if not wide_colour:
            return _Decoded(opened, orientation, pending, label, profile, tuple(notes), lossy)
        pixels = _decode_16bit_colour(data, label)
        if orientation != 1:
            pixels = _laid_out_as(pixels, opened, orientation)
        _check_same_pixels(pixels, opened, label)
        return _Decoded(pixels, orientation, pending, label, profile, tuple(notes), lossy)


def probe_image(source: str | Path | bytes, name: str | None = None) -> ImageHeader:
    """Read only the header of an image or mask: its upright size, mode and format.

    Cheap (no pixels are decoded, and for a path only the first blocks are read), so commands
    check every input before loading the model. Raises ImageReadError for a missing, unreadable,
    unrecognised or too large file, and TypeError for a ``source`` that is neither a path nor bytes.
    """
    _check_source(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        with _bytes_path_hint(source, name):
            data, label = _source_bytes(source, name)
            return _probe(io.BytesIO(data), label)
    label = name or str(source)
    if (piped := _pipe_bytes(source, label)) is not None:
        # A pipe's contents, not bytes the caller gave: no hint about paths given as bytes.
        if not piped:
            raise ImageReadError(f"{label}: empty file")
        return _probe(io.BytesIO(piped), label)
    try:
        with open(source, "rb") as handle:
            if not handle.read(1):
                raise ImageReadError(f"{label}: empty file")
            handle.seek(0)
            return _probe(handle, label)
    except ImageReadError:
        raise
    except OSError as exc:
        raise _file_error(label, exc) from None


def _probe(stream: BinaryIO, label: str) -> ImageHeader:
    # Pillow's warnings (a damaged EXIF block) are said once, by the decode that follows a probe; kept
    # in the header for a check that fails before any decode.
    with _decode_errors(label, "image header", stream), _pillow_warnings() as pillow_warnings:
        opened = Image.open(stream)
        check_image_size(opened.width, opened.height, label)
        width, height = _stored_size(opened)
        orientation = _header_orientation(opened, stream)
        if swaps_axes(orientation):
            width, height = height, width
        lossy = lossy_compression(opened, stream)
    return ImageHeader(width, height, opened.mode, opened.format or "", orientation, lossy,
                       _damaged_tags_note(pillow_warnings, label, opened.format or "", orientation))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale uint16 values to uint8 with rounding (65535 -> 255, 32768 -> 128), not clipping."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _photo_integers(image: Image.Image, label: str) -> np.ndarray:
    """uint16 values of an I;16* or 32-bit "I" photo. Values outside 0..65535 (a signed TIFF's
    negatives, a 32-bit count) have no place on any scale crm reads photos on: clipping them would
    turn every negative pixel black in silence (the air and soft tissue of a CT slice), so such a
    photo is refused, naming the file, as a float photo outside [0, 1] is."""
    values = np.asarray(image)
    if values.dtype == np.uint16:
        return values
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise ImageReadError(f"{label}: an integer image must hold values from 0 to 65535; its values run from "
                             f"{low} to {high} (window or rescale it to 0..65535 first)")
    return values.astype(np.uint16)


# Bits a 16-bit photo may really hold: 8-bit values saved in a 16-bit file (the slip that
# masks.uint16_full_scale handles for masks) or a 10-, 12- or 14-bit sensor's; on the 16-bit scale
# they would be almost black, and the model would see no edges. The scale follows the largest value,
# so a dark 16-bit photo whose values all stay under 16384 reads brighter than it was drawn.
_PHOTO_BIT_DEPTHS = (8, 10, 12, 14)
# The scales a caller can fix for every 16-bit photo it reads (``photo_bits``; the CLI's --photo-bits):
# the frames of one sequence then share a scale, whatever each frame's largest value (a highlight
# over 4095 in one frame of a 12-bit shot would read it as 14-bit, 4x darker than the others).
PHOTO_BITS_CHOICES: tuple[int, ...] = (8, 10, 12, 14, 16)
# How the notes name what fixes the scale: the API's keyword; the CLI shows them with its option's name
# (:func:`cli_note`).
_API_OPTION = "photo_bits={bits}"
_CLI_OPTION = "--photo-bits {bits}"
# Appended to each note of a scale chosen by a file's own values: what fixes it for a sequence.
_FIXED_SCALE_HINT = "the scale follows each file's values, so frames of one sequence can differ: {option} fixes it"
# The end of the note of a photo clipped to a fixed scale (:func:`_fixed_scale_to_uint8`).
_CLIPPED = " ({option}); clipped to white"


def _option_endings(option: str) -> tuple[str, ...]:
    """The endings of the notes that name the option fixing the scale, as ``option`` spells it: the
    fixed-scale hint, then the clip note's for each scale of PHOTO_BITS_CHOICES."""
    return (_FIXED_SCALE_HINT.format(option=option.format(bits="N")),
            *(_CLIPPED.format(option=option.format(bits=bits)) for bits in PHOTO_BITS_CHOICES))


# Each ending as the API writes it, with the CLI's in its place.
_CLI_ENDINGS = tuple(zip(_option_endings(_API_OPTION), _option_endings(_CLI_OPTION), strict=True))
# The hint as the readers write it: "... photo_bits=N fixes it".
_API_SCALE_HINT = _FIXED_SCALE_HINT.format(option=_API_OPTION.format(bits="N"))
# The hint's first part alone, for a command that has no option to fix the scale.
_SCALE_WITHOUT_FIX = _FIXED_SCALE_HINT.split(":", 1)[0]


# How a 16-bit photo's cut-out keeps its 16 bits, ending the note on an 8-bit one (pipeline.cutout_depth_note),
# as the API and as the CLI say it.
CUTOUT_16BIT_API_HINT = "; refine_files(..., cutout_bits=16) keeps 16 bits, written as PNG"
_CUTOUT_16BIT_CLI_HINT = "; name the output .png to keep 16 bits"


def cli_note(note: str, has_photo_bits: bool = True) -> str:
    """``note`` (of a reader, or a pair's notes) as the CLI shows it: a note ending with the API's name
    of the option that fixes a 16-bit photo's scale (``photo_bits=12``) ends with the CLI's instead
    (``--photo-bits 12``); any other note is returned as it is. Only the ending that the readers write
    is replaced, so a file named ``photo_bits=12.png`` keeps its name. For a command without
    ``--photo-bits`` (``has_photo_bits`` False: crm train) the hint that names it is left off. The note on
    a 16-bit photo's 8-bit cut-out names ``cutout_bits=16`` in the API and a .png output in the CLI."""
    if not has_photo_bits and note.endswith(_API_SCALE_HINT):
        return note[: len(note) - len(_API_SCALE_HINT)] + _SCALE_WITHOUT_FIX
    for api, cli in (*_CLI_ENDINGS, (CUTOUT_16BIT_API_HINT, _CUTOUT_16BIT_CLI_HINT)):
        if note.endswith(api):
            return note[: len(note) - len(api)] + cli
    return note


def check_photo_bits(photo_bits: int | None) -> int | None:
    """``photo_bits`` as an int of PHOTO_BITS_CHOICES, or None (each 16-bit photo read on the scale of
    its own largest value); ValueError for anything else."""
    if photo_bits is None:
        return None
    if not isinstance(photo_bits, bool):
        try:
            bits = operator.index(photo_bits)
        except TypeError:
            bits = None
        if bits in PHOTO_BITS_CHOICES:
            return bits
    raise ValueError(f"photo_bits must be None (each file's own scale) or one of "
                     f"{', '.join(map(str, PHOTO_BITS_CHOICES))}, got {photo_bits!r}")


def _photo_to_uint8(values: np.ndarray, label: str, photo_bits: int | None = None) -> tuple[np.ndarray, str | None]:
    """uint16 photo values as uint8, white at the top of the fewest bits of _PHOTO_BIT_DEPTHS that
    hold the largest value (65535 when none do), and the note for a photo read on a smaller scale.
    A photo that reading would flatten is stretched instead (:func:`_flattened`). With ``photo_bits``
    the scale is that one, for every photo (:func:`_fixed_scale_to_uint8`)."""
    if photo_bits is not None:
        return _fixed_scale_to_uint8(values, label, photo_bits)
    top = int(values.max()) if values.size else 0
    white = next(((1 << bits) - 1 for bits in _PHOTO_BIT_DEPTHS if top < 1 << bits), 65535)
    if white == 65535 or top == 0:  # an all-black photo is black on any scale: no note
        scaled, note = _to_uint8(values), None
    else:
        scaled = ((values.astype(np.uint32) * 255 + white // 2) // white).astype(np.uint8)
        note = (f"{label}: a 16-bit image whose largest value is {top}, read as {white.bit_length()}-bit "
                f"values ({white} = white); {_API_SCALE_HINT}")
    if not _flattened(lambda: values, scaled):
        if white == 65535 and top != 0:
            note = _few_above_note(values, label)
        return scaled, note
    low = int(values.min())
    span = top - low
    stretched = (((values.astype(np.uint32) - low) * 255 + span // 2) // span).astype(np.uint8)
    return stretched, f"{_stretch_note(label, f'{low} to {top}', white, scaled)}; {_API_SCALE_HINT}"


# A photo read on the 16-bit scale all but this share of whose pixels fit 12 bits (or 10) is most likely a
# frame of that scale with a few hot or saturated pixels (one hot pixel in a 12-bit X-ray frame put it
# on the 16-bit scale, 16 times darker, and the model kept its coarse mask).
FEW_ABOVE_SHARE = 1e-3


def _few_above_note(values: np.ndarray, label: str) -> str | None:
    """The note for a photo read on the 16-bit scale whose pixels, all but FEW_ABOVE_SHARE of them,
    fit the 12-bit scale (10-bit when they fit that): on the 16-bit scale they read almost black
    (at most 16 of 255). None otherwise. The reading is not changed: a dark 16-bit photo with a few
    bright lamps is read as it is."""
    brightest = values.max(axis=-1) if values.ndim == 3 else values  # one pass over a colour photo
    count = brightest.size
    note = None
    for bits in (12, 10):
        white = (1 << bits) - 1
        over = int(np.count_nonzero(brightest > white))
        if over > FEW_ABOVE_SHARE * count:
            break
        darkest = (white * 255 + 32767) // 65535
        note = (f"{label}: a 16-bit image read on the 16-bit scale for {over} pixel{'s' if over != 1 else ''} "
                f"above {white} ({100 * over / count:.2g}% of them); the rest hold {bits}-bit values and read "
                f"almost black (at most {darkest} of 255): a {bits}-bit frame with hot or saturated pixels? "
                f"{_API_SCALE_HINT}")
    return note


def _fixed_scale_to_uint8(values: np.ndarray, label: str, bits: int) -> tuple[np.ndarray, str | None]:
    """uint16 photo values (H, W) or (H, W, 3) as uint8 on the ``bits``-bit scale (white = 2**bits - 1,
    value / white * 255, rounded), never stretched: a scale fixed for a sequence must not move with
    a frame's values. Values above white are clipped to it, with a note counting the pixels clipped."""
    white = (1 << bits) - 1
    wide = values.astype(np.uint32)
    note = None
    if values.size and int(values.max()) > white:
        over = values > white
        clipped = int(np.count_nonzero(over.any(axis=-1) if over.ndim == 3 else over))
        asked = _CLIPPED.format(option=_API_OPTION.format(bits=bits))  # " (photo_bits=12); clipped to white"
        note = (f"{label}: {clipped} pixel{'s hold values' if clipped != 1 else ' holds a value'} above {white}, "
                f"the white of the {bits}-bit scale asked for{asked}")
        np.minimum(wide, white, out=wide)
    wide *= 255
    wide += white // 2
    wide //= white
    return wide.astype(np.uint8), note


# A photo whose 8-bit reading leaves fewer grey levels than this between its darkest and brightest
# pixel is too flat for the model to see edges in (a synthetic scene with its levels squeezed into
# 32 levels: the default weights unsure of every change, coarse mask kept; 48 or more: refined).
PHOTO_MIN_LEVELS = 64


def _flattened(levels: Callable[[], np.ndarray], scaled: np.ndarray) -> bool:
    """True when reading a photo's 16-bit (or 16-bit quantised float) values, ``levels()``, as the
    uint8 ``scaled`` squeezed them into fewer than PHOTO_MIN_LEVELS grey levels and merged at least
    two of the file's values into each: a narrow window of a wider scale (a 16-bit CT or X-ray
    slice with values 30000-34000, data shifted by 32768 from a signed scale, a float photo within
    [0.4, 0.6]), whose contrast the 8-bit reading destroys. 8-bit values saved in a wider file keep
    their levels, so they are read as they are. ``levels`` is called only for such a narrow photo."""
    if not scaled.size or int(scaled.max()) - int(scaled.min()) + 1 >= PHOTO_MIN_LEVELS:
        return False
    return _distinct(levels(), 65536) >= 2 * _distinct(scaled, 256)


def _distinct(values: np.ndarray, size: int) -> int:
    """How many distinct values an unsigned integer array holds, all below ``size`` (a table of
    seen values: no int64 copy of the image, as np.bincount would make)."""
    seen = np.zeros(size, bool)
    seen[values] = True
    return int(np.count_nonzero(seen))


def _stretch_note(label: str, span: str, white: int | float, scaled: np.ndarray) -> str:
    """The warning for a photo read with its values stretched from black to white."""
    scale = "[0, 1]" if isinstance(white, float) else f"0..{white}"
    levels = int(scaled.max()) - int(scaled.min()) + 1
    return (f"{label}: its values run from {span} only, {levels} levels of 256 on the {scale} scale; "
            "read with that range stretched from black to white")


def _float_photo_to_uint8(values: np.ndarray, label: str) -> tuple[np.ndarray, str | None]:
    """A float photo's values in [0, 1] as uint8 (the rule of float masks: 1 = white), stretched
    from black to white where that reading would flatten them (:func:`_flattened`)."""
    gray = (values * np.float32(255) + np.float32(0.5)).astype(np.uint8)
    if not _flattened(lambda: (values * np.float32(65535) + np.float32(0.5)).astype(np.uint16), gray):
        return gray, None
    low, high = float(values.min()), float(values.max())
    stretched = ((values - np.float32(low)) * np.float32(255 / (high - low)) + np.float32(0.5)).astype(np.uint8)
    return stretched, _stretch_note(label, f"{low:.4g} to {high:.4g}", 1.0, gray)


def _image_pixels(decoded: Image.Image | np.ndarray, label: str,
                  photo_bits: int | None = None) -> tuple[np.ndarray, str | None]:
    """RGB uint8 (H, W, 3) pixels of a decoded image, before orientation, and a note on how they
    were scaled (or None). ``photo_bits``: the scale of 16-bit (and 32-bit integer) values, None for
    each file's own (:func:`_photo_to_uint8`); 8-bit and floating-point files ignore it."""
    if isinstance(decoded, np.ndarray):
        return _photo_to_uint8(decoded[..., :3], label, photo_bits)
    mode = decoded.mode
    if mode.startswith("I;16") or mode == "I":
        gray, note = _photo_to_uint8(_photo_integers(decoded, label), label, photo_bits)
        return np.repeat(gray[..., None], 3, axis=2), note
    if mode == "F":
        gray, note = _float_photo_to_uint8(_unit_floats(decoded, label, "image"), label)
        return np.repeat(gray[..., None], 3, axis=2), note
    if mode == "RGB":
        return np.asarray(decoded), None
    # Covers 1, L, LA, La, P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV; alpha is dropped.
    # Pillow warns, naming no file, when a palette photo's transparency (PNG tRNS) is dropped
    # converting it to RGB; a photo's alpha is always dropped, so there is nothing to say.
    with warnings_ignored(UserWarning):
        return np.asarray(decoded.convert("RGB")), None


def log_notes(notes: Sequence[str]) -> None:
    """Log each note as a warning on this module's logger (the ``crm_cli`` hierarchy), as the readers
    whose callers get no notes back do."""
    for note in notes:
        logger.warning("%s", note)


def read_image(source: str | Path | bytes, name: str | None = None, *, photo_bits: int | None = None) -> np.ndarray:
    """Read an image file (or encoded bytes) as upright RGB uint8 (H, W, 3).

    Bytes are a file's encoded contents, never its path (pass a path as str or Path); ``name``
    labels the source in error messages (default: the path, or "<bytes>" for bytes).
    16-bit files holding fewer bits (8, 10, 12 or 14) are read on that scale; floating-point files
    must hold values in [0, 1]; integer files values in 0..65535 (a signed TIFF's negatives are
    refused, not clipped). A 16-bit or float photo that this reading would squeeze into fewer than
    ``PHOTO_MIN_LEVELS`` levels is stretched from black to white instead (:func:`_flattened`).
    Each of these readings, several frames and a damaged EXIF block is logged as a warning on the
    ``crm_cli.imageio`` logger (:func:`read_image_noted` returns the notes instead).
    ``photo_bits`` (one of PHOTO_BITS_CHOICES) reads every 16-bit photo on that scale instead, as
    the frames of one sequence need: values above 2**photo_bits - 1 are clipped, with a note, and
    nothing is stretched; 8-bit and floating-point files ignore it.

    Raises:
        ImageReadError: (an OSError; ``crm_cli.ImageReadError``) the file is missing, a folder or
            unreadable; the file or bytes are empty, not a recognised image, truncated or corrupt;
            its values are out of range (a float photo outside [0, 1] or NaN, integers outside
            0..65535); it is larger than crm's size limit (``MAX_IMAGE_PIXELS``,
            ``MAX_IMAGE_SIDE``). The message names the file (or ``name``).
        ValueError: a ``photo_bits`` outside PHOTO_BITS_CHOICES.
        TypeError: a ``source`` that is neither a path (str, Path) nor bytes.
        MemoryError: too little memory to decode it.

    ImageReadError is the file's fault (a bad upload), the others the caller's or the machine's.
    """
    return read_image_oriented(source, name, photo_bits=photo_bits)[0]


def read_image_oriented(source: str | Path | bytes, name: str | None = None, *,
                        photo_bits: int | None = None) -> tuple[np.ndarray, int]:
    """:func:`read_image` plus the file's EXIF orientation, which it applied (1 = none); the notes
    are logged, as by read_image."""
    image, orientation, notes = read_image_noted(source, name, photo_bits=photo_bits)
    log_notes(notes)
    return image, orientation


def read_image_noted(source: str | Path | bytes, name: str | None = None, *,
                     photo_bits: int | None = None) -> tuple[np.ndarray, int, list[str]]:
    """:func:`read_image_oriented`, with the notes returned instead of logged (a 16-bit image read
    on a smaller scale or clipped to ``photo_bits``, a narrow window stretched, several frames, a
    damaged EXIF block), for a caller that shows them itself. Raises as :func:`read_image` does."""
    photo = read_photo(source, name, photo_bits=photo_bits)
    return photo.pixels, photo.orientation, photo.notes


@dataclass
class Photo:
    """A photo as :func:`read_photo` reads it: upright RGB uint8 pixels, the EXIF orientation its
    file carried (applied), notes for the log, the file's ICC colour profile where it describes
    RGB colours (None otherwise), for outputs that carry the photo's pixels, the bits per channel
    the file stored them in (8 for 8 bits or fewer; 16; 32 for floating-point and 32-bit integer
    files), which the uint8 pixels may hold less of, and whether ``photo_bits`` shapes them (integer
    samples of more than 8 bits; see :func:`file_takes_photo_bits`)."""

    pixels: np.ndarray
    orientation: int
    notes: list[str]
    rgb_profile: bytes | None = None
    stored_bits: int = 8
    takes_photo_bits: bool = False
    # The file's own 16-bit values as upright RGB uint16 (grey repeated), for a 16-bit cut-out; only
    # when read_photo was asked for them (keep_16bit) and the file stored 16-bit integers.
    pixels16: np.ndarray | None = None

    def profile_for(self, output_kind: str) -> bytes | None:
        """The colour profile to write with an output of ``output_kind``: the photo's RGB profile for
        one that carries its pixels (``config.PHOTO_OUTPUT_KINDS``: cut-out, overlay), None for a mask."""
        return self.rgb_profile if output_kind in PHOTO_OUTPUT_KINDS else None


# An ICC profile's colour space, bytes 16-19 of its header. A CMYK or grey file's profile does not
# describe the RGB pixels crm reads it as, so only an RGB one is carried to an output.
_ICC_RGB = b"RGB "


def read_photo(source: str | Path | bytes, name: str | None = None, *, photo_bits: int | None = None,
               keep_16bit: bool = False) -> Photo:
    """:func:`read_image_noted`'s reading (notes returned, not logged; ``photo_bits``: see
    :func:`read_image`), as a :class:`Photo` that also keeps the file's RGB colour profile (a Display
    P3 or Adobe RGB photo's), so that a cut-out or overlay shows the same colours, and how many bits
    per channel the file stored. ``keep_16bit``: also keep a 16-bit file's own values
    (:attr:`Photo.pixels16`, unscaled by ``photo_bits``), for a cut-out in 16 bits.

    Raises:
        ImageReadError: (an OSError) a file missing, unreadable, empty, truncated, corrupt, out of
            range or too large, as :func:`read_image` lists; the message names it.
        ValueError: a ``photo_bits`` outside PHOTO_BITS_CHOICES.
        TypeError: a ``source`` that is neither a path nor bytes.
        MemoryError: too little memory to decode it.
    """
    photo_bits = check_photo_bits(photo_bits)
    decoded = _decode(source, name)
    pixels, note = _image_pixels(decoded.pixels, decoded.label, photo_bits)
    profile = decoded.icc_profile
    rgb_profile = profile if profile is not None and profile[16:20] == _ICC_RGB else None
    notes = [*decoded.notes, *([note] if note else [])]
    stored_bits = _stored_bits(decoded.pixels)
    pixels16 = None
    if keep_16bit and stored_bits == 16:
        pixels16 = apply_orientation(_rgb16(decoded.pixels, decoded.label), decoded.pending)
    return Photo(apply_orientation(pixels, decoded.pending), decoded.orientation, notes, rgb_profile,
                 stored_bits, _takes_photo_bits(decoded.pixels), pixels16)


def _rgb16(decoded: Image.Image | np.ndarray, label: str) -> np.ndarray:
    """RGB uint16 (H, W, 3) of a decoded 16-bit file, before orientation: OpenCV's colour pixels (alpha
    dropped) or a 16-bit grey image repeated in three channels, its values as stored."""
    if isinstance(decoded, np.ndarray):
        return np.ascontiguousarray(decoded[..., :3], dtype=np.uint16)
    return np.repeat(_photo_integers(decoded, label)[..., None], 3, axis=2)


def _takes_photo_bits(decoded: Image.Image | np.ndarray) -> bool:
    """Whether ``photo_bits`` shapes a decoded photo's pixels, as :func:`_image_pixels` reads them: OpenCV's
    16-bit colour pixels and Pillow's 16- and 32-bit integer modes; 8-bit and floating-point files ignore it."""
    if isinstance(decoded, np.ndarray):
        return True
    return decoded.mode.startswith("I;16") or decoded.mode == "I"


def file_takes_photo_bits(source: str | Path) -> bool:
    """Whether ``photo_bits`` shapes the pixels of the photo file ``source`` (:attr:`Photo.takes_photo_bits`
    of its reading: a 16-bit file, a 32-bit integer TIFF), told from its header alone, no pixel decoded
    (about 0.07 ms for a JPEG). True when the header cannot be read: the caller then takes the file for one whose
    pixels depend on the scale, and reading it reports what is wrong."""
    try:
        with open(source, "rb") as handle, warnings_ignored():
            opened = Image.open(handle)
            return _takes_photo_bits(opened) or _is_16bit_colour(opened)  # OpenCV decodes the latter
    except Exception:  # noqa: BLE001 - unreadable for whatever reason: see above
        return True


def file_long_side(source: str | Path) -> int | None:
    """The longer side in pixels of the photo file ``source``, from its header alone (no pixel
    decoded; orientation does not change it), or None when the header cannot be read."""
    try:
        with open(source, "rb") as handle, warnings_ignored():
            return max(Image.open(handle).size)
    except Exception:  # noqa: BLE001 - unreadable for whatever reason: the caller decides
        return None


def _stored_bits(decoded: Image.Image | np.ndarray) -> int:
    """Bits per channel of a decoded photo's file: 16 for OpenCV's 16-bit colour pixels and 16-bit
    grey, 32 for floating-point and 32-bit integer files, 8 for the rest (1-bit and palette too)."""
    if isinstance(decoded, np.ndarray):
        return 8 * decoded.dtype.itemsize
    # Older Pillow opens a 16-bit grey PNG as "I" (newer as "I;16"), and a 16-bit PGM as "I": neither
    # format holds more than 16 bits.
    if decoded.mode.startswith("I;16") or (decoded.mode == "I" and decoded.format in ("PNG", "PPM")):
        return 16
    return 32 if decoded.mode in ("I", "F") else 8


def _is_constant(array: np.ndarray) -> bool:
    """True when every pixel of (H, W[, C]) equals the first one."""
    return bool((array == array[0, 0]).all())


def _colour_mask(rgb: np.ndarray, alpha: np.ndarray | None) -> MaskData:
    """The mask of an RGB(A) array (uint8 or uint16) by the alpha / equal-channel / brightest-channel rules;
    a colour mask keeps a sample of its colours, by which a photo read as the mask is told (``masks.photo_note``,
    which counts them: a read that never asks does not pay for it)."""
    wide = rgb.dtype == np.uint16
    # A cut-out (crm's own -k cutout, or a photo cut-out) carries the shape in its alpha channel.
    # A constant alpha carries no shape (e.g. an opaque black mask), so then the colour decides.
    if alpha is not None and not _is_constant(alpha):
        return MaskData(alpha, "gray16") if wide else MaskData(alpha, "alpha")
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    if (red == green).all() and (red == blue).all():
        return MaskData(np.ascontiguousarray(red), "gray16" if wide else "gray8")
    # A colour mask (a red or blue object on black) is as strong as its brightest channel; by
    # luminance pure red would read 0.30 and pure blue 0.11, below the 0.5 of foreground.
    brightest = np.maximum(np.maximum(red, green), blue)
    return MaskData(_to_uint8(brightest) if wide else brightest, "rgb", colours=count_colours(rgb))


def _palette_alpha(transparency: int | bytes | None) -> np.ndarray:
    """The alpha (uint8, 256 entries) of each palette entry under ``transparency`` as Pillow reads it
    (one transparent index, or the alpha bytes of the first entries; those past them are opaque)."""
    alpha = np.full(256, 255, np.uint8)
    if isinstance(transparency, bytes):
        given = np.frombuffer(transparency[:256], np.uint8)
        alpha[:given.size] = given
    elif isinstance(transparency, int) and 0 <= transparency < 256:
        alpha[transparency] = 0
    return alpha


def _palette_mask(indices: np.ndarray, palette: list[int], transparency: int | bytes | None = None) -> MaskData:
    """The mask of a palette image from its indices and its palette (as stored, 3 values per entry).

    - Exactly two used entries, one black, are a binary mask whose other entry is the object,
      whatever its colour: read by index when black is index 0 (a VOC class on background; VOC's
      car is grey), otherwise renumbered 0 = black, 1 = the object.
    - Every used entry grey (R = G = B): the colours are an 8-bit grey mask (a quantised black and
      white or soft mask), unless each colour equals its index, which reads the same as indices.
    - Otherwise the indices are label ids (VOC style).
    Entries missing from a short palette have no colour, so their indices are ids. The palette's
    ``transparency`` (Pillow's ``info["transparency"]``) is kept wherever the palette is, renumbered
    with it, so that a label map is written back with it.
    """
    full_palette = (palette + [0] * 768)[:768]
    if not isinstance(transparency, int | bytes):
        transparency = None
    by_index = MaskData(np.ascontiguousarray(indices), "palette", full_palette, transparency=transparency)
    used = np.flatnonzero(np.bincount(indices.ravel(), minlength=256))
    if int(used[-1]) >= len(palette) // 3:
        return by_index
    colours = np.array(full_palette, np.uint8).reshape(256, 3)
    used_colours = colours[used]
    black = ~used_colours.any(axis=1)
    two_tone = used.size == 2 and bool(black.any())
    if two_tone and black[0] and used[0] == 0:
        return by_index  # index != 0 is already the object
    if (used_colours == used_colours[:, :1]).all():
        if (used_colours[:, 0] == used).all():
            return by_index
        return MaskData(colours[:, 0][indices], "gray8")
    if two_tone:
        # Black has a non-zero index, so index != 0 would make it the object: renumber as
        # 0 = black, 1 = the object, keeping its colour for a label-map output.
        foreground = int(used[~black][0])
        binary = (indices == foreground).astype(np.uint8)
        # The two entries kept keep their alpha; None when both are opaque.
        alpha = _palette_alpha(transparency)[[int(used[black][0]), foreground]]
        renumbered = bytes(alpha.tolist()) if int(alpha.min()) < 255 else None
        return MaskData(binary, "palette", [0, 0, 0, *colours[foreground].tolist()] + [0] * 762,
                        transparency=renumbered)
    return by_index


def _integer_mask(decoded: Image.Image, label: str) -> np.ndarray:
    """uint16 values of a 16- or 32-bit integer mask (Pillow modes I;16* and I). 32-bit values must
    fit 0..65535, so that the 8- and 16-bit scales of :func:`masks.uint16_full_scale` apply."""
    values = np.asarray(decoded)
    if values.dtype == np.uint16:
        return values
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise ImageReadError(f"{label}: an integer mask must hold values from 0 to 255 (8-bit scale) or "
                             f"65535 (16-bit scale); its values run from {low} to {high}")
    return values.astype(np.uint16)


# Float masks from other tools may overshoot [0, 1] by rounding; more than this is another scale.
FLOAT_MASK_TOLERANCE = 1e-3


def _unit_floats(decoded: Image.Image, label: str, what: str = "mask") -> np.ndarray:
    """The float32 values of a floating-point ``what`` (a mask's probability map, e.g. a 32-bit
    TIFF, or an image's grey levels), checked to be finite and within [0, 1] (rounding overshoot clipped)."""
    values = np.asarray(decoded, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ImageReadError(f"{label}: the floating-point {what} holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -FLOAT_MASK_TOLERANCE or high > 1.0 + FLOAT_MASK_TOLERANCE:
        held = "probabilities in [0, 1]" if what == "mask" else "values in [0, 1] (1 = white)"
        raise ImageReadError(f"{label}: a floating-point {what} must hold {held}; "
                             f"its values run from {low:g} to {high:g}")
    return np.clip(values, 0.0, 1.0)


def _transparency_alpha(decoded: Image.Image) -> np.ndarray | None:
    """The alpha channel that a PNG tRNS chunk or a GIF's transparent index gives a 1, L, P or RGB
    image (Pillow keeps it aside, in ``info``), or None when it has none."""
    if decoded.info.get("transparency") is None or decoded.mode not in ("1", "L", "P", "RGB"):
        return None
    with_alpha = decoded.convert("LA" if decoded.mode in ("1", "L") else "RGBA")
    return np.ascontiguousarray(np.asarray(with_alpha)[..., -1])


def _hides_only_background(mask: MaskData, alpha: np.ndarray) -> bool:
    """True when ``alpha`` makes exactly the mask's 0 (background) pixels transparent and every other
    pixel opaque: it then draws the shape the values draw, and the values say more (soft levels)."""
    zero = mask.values == 0
    return bool(((alpha == 0) == zero).all() and (alpha[~zero] == 255).all())


def _transparency_draws_the_mask(mask: MaskData, alpha: np.ndarray) -> bool:
    """Whether a transparency kept beside the colours (tRNS, GIF) is the mask rather than the values:
    when the values draw nothing (a white object on a transparent white), or when they are a photo's
    colours (LABEL_ID_LIMIT or more levels: a cut-out quantised to a palette or saved with a key
    colour) that the transparency does not merely follow. A binary mask, class ids (a VOC void
    index made transparent) and soft levels keep their values, whatever is transparent."""
    if _is_constant(alpha):
        return False
    if mask.distinct_values == 1:
        return True
    return mask.distinct_values >= LABEL_ID_LIMIT and not _hides_only_background(mask, alpha)


def _mask_data(decoded: Image.Image | np.ndarray, label: str) -> MaskData:
    """Mask values of a decoded file, before orientation, by the colour rules, except where a
    transparency (tRNS, GIF) draws the mask instead (:func:`_transparency_draws_the_mask`)."""
    mask = _colour_mask_data(decoded, label)
    alpha = _transparency_alpha(decoded) if isinstance(decoded, Image.Image) else None
    if alpha is not None and _transparency_draws_the_mask(mask, alpha):
        return MaskData(alpha, "alpha")
    return mask


def _colour_mask_data(decoded: Image.Image | np.ndarray, label: str) -> MaskData:
    """Mask values of a decoded file by its colours (and alpha channel), before orientation."""
    if isinstance(decoded, np.ndarray):
        alpha = decoded[..., 3] if decoded.shape[2] == 4 else None
        return _colour_mask(decoded[..., :3], alpha)
    mode = decoded.mode
    # Never convert("L") here: it clips 16-bit values and maps palette indices to luminance.
    if mode == "1":
        return MaskData(np.asarray(decoded.convert("L")), "gray8")
    if mode == "L":
        return MaskData(np.asarray(decoded), "gray8")
    if mode.startswith("I;16") or mode == "I":
        return MaskData(_integer_mask(decoded, label), "gray16")
    if mode in ("P", "PA"):
        indices = np.asarray(decoded)
        if indices.ndim == 3:
            indices = indices[..., 0]
        transparency = decoded.info.get("transparency") if mode == "P" else None
        return _palette_mask(indices, list(decoded.getpalette("RGB") or []), transparency)
    if mode in ("LA", "La"):
        # The RGBA rule: a cut-out's shape is in its alpha whenever that varies.
        gray_alpha = np.asarray(decoded.convert("LA"))
        gray, alpha = gray_alpha[..., 0], gray_alpha[..., 1]
        if not _is_constant(alpha):
            return MaskData(np.ascontiguousarray(alpha), "alpha")
        return MaskData(np.ascontiguousarray(gray), "gray8")
    if mode == "F":
        return MaskData(_unit_floats(decoded, label), "float")
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(decoded.convert("RGBA"))
        return _colour_mask(rgba[..., :3], rgba[..., 3])
    rgb = decoded if mode == "RGB" else decoded.convert("RGB")
    return _colour_mask(np.asarray(rgb), None)


# TIFF compressions that lose detail (tag 259): JPEG, old-style and new, and a DNG's lossy JPEG.
_LOSSY_TIFF_COMPRESSIONS = {6: "JPEG-compressed TIFF", 7: "JPEG-compressed TIFF", 34892: "JPEG-compressed TIFF"}


def lossy_compression(image: Image.Image, stream: BinaryIO) -> str | None:
    """The lossy compression an opened file is stored in, in words ("JPEG", "lossy WebP",
    "JPEG-compressed TIFF"), or None for a lossless one. ``stream`` is the file's bytes (read for
    WebP, whose lossy and lossless kinds Pillow does not tell apart), left where it was."""
    if image.format in ("JPEG", "MPO"):
        return "JPEG"
    if image.format == "TIFF":
        compression = getattr(image, "tag_v2", {}).get(259)
        return _LOSSY_TIFF_COMPRESSIONS.get(compression) if isinstance(compression, int) else None
    if image.format == "WEBP":
        return "lossy WebP" if _webp_lossy(stream) else None
    return None


def _webp_lossy(stream: BinaryIO) -> bool:
    """Whether a WebP file's (first) image is lossy: its image chunk is ``VP8 `` (``VP8L`` is
    lossless). Only the chunks' headers are read, skipping their contents (a large ICC profile)."""
    import struct

    where = stream.tell()
    try:
        stream.seek(12)  # past "RIFF", the size and "WEBP"
        for _ in range(64):
            header = stream.read(8)
            if len(header) < 8:
                return False
            fourcc, size = header[:4], struct.unpack("<I", header[4:])[0]
            if fourcc in (b"VP8 ", b"VP8L"):
                return fourcc == b"VP8 "
            if fourcc == b"ANMF":  # an animation's frame: its image chunks follow a 16-byte frame header
                stream.seek(16, io.SEEK_CUR)
                continue
            stream.seek(size + (size & 1), io.SEEK_CUR)
        return False
    finally:
        stream.seek(where)


def refusal_needs_decoding(header: ImageHeader, as_mask: bool) -> bool:
    """Whether a file :func:`probe_image` accepted can still be refused by its values once decoded:
    32-bit, signed or floating-point files (values out of range), and as a mask one stored with lossy
    compression (class ids altered by it, :func:`_check_lossy_ids`). 8-bit and unsigned 16-bit files
    cannot."""
    mode = header.mode
    if mode in ("I", "F") or mode.startswith(("I;16S", "I;32", "F;")):
        return True
    return as_mask and header.lossy is not None


def _check_lossy_ids(mask: MaskData, lossy: str | None, label: str) -> None:
    """Refuse a mask in a lossy format (JPEG, lossy WebP, JPEG-compressed TIFF) that reads as a label
    map: lossy compression turns the edges of a 0/1 mask or of class ids into other small values (0/1
    becomes 0, 1 and 2), which would be refined as extra labels. A 0-255 mask only gets blurred edges,
    which a soft mask may have."""
    if lossy is None:
        return
    if mask.kind == "gray8" and mask.is_label_map():
        compression = "JPEG's lossy compression" if lossy == "JPEG" else "its lossy compression"
        raise ImageReadError(
            f"{label}: a {lossy} mask of small values (0 to {mask.maximum}: a 0/1 mask or class ids?), which "
            f"{compression} has altered at the edges; save the mask as PNG (0/255 for one object)")


def read_mask(source: str | Path | bytes, name: str | None = None) -> MaskData:
    """Read a mask file (or encoded bytes) keeping its raw values, upright by EXIF orientation.

    16- and 32-bit integer files become uint16 (32-bit values must fit 0..65535), floating-point
    files (32-bit TIFF probability maps) stay float32 and must lie in [0, 1], palette files keep
    indices and palette (and the palette's transparency, ``MaskData.transparency``) unless their
    colours are grey or a binary colour mask (:func:`_palette_mask`), RGBA and LA cut-outs use their
    alpha when it varies, as do palette, grey and RGB files whose transparent index or colour (GIF,
    PNG tRNS) draws the mask (:func:`_transparency_draws_the_mask`), and colour masks use their
    brightest channel (one channel when R == G == B).
    A JPEG mask that would read as class ids (:func:`_check_lossy_ids`) is refused. Several frames
    and a damaged EXIF block are logged as warnings on the ``crm_cli.imageio`` logger
    (:func:`read_mask_noted` returns them instead); what the values mean (an 8-bit mask saved in a
    16-bit file, a photo given as a mask) is ``masks.py``'s to say, when the mask is fitted to a photo.

    Raises:
        ImageReadError: (an OSError; ``crm_cli.ImageReadError``) the file is missing, a folder or
            unreadable; the file or bytes are empty, not a recognised image, truncated or corrupt;
            its values are out of range (integers outside 0..65535, floats outside [0, 1] or NaN); a
            JPEG mask of class ids; larger than crm's size limit. The message names the file.
        TypeError: a ``source`` that is neither a path (str, Path) nor bytes.
        MemoryError: too little memory to decode it.

    A mask of another size than its photo is no error here: fitting it is ``pipeline``'s
    (``masks.SizeMismatchError``), or the engine's for arrays.
    """
    mask, notes = read_mask_noted(source, name)
    log_notes(notes)
    return mask


def read_mask_noted(source: str | Path | bytes, name: str | None = None) -> tuple[MaskData, list[str]]:
    """:func:`read_mask`, with the notes of reading the file (several frames, a damaged EXIF block)
    returned instead of logged, for a caller that shows them itself. Raises as :func:`read_mask` does."""
    decoded = _decode(source, name)
    mask = _mask_data(decoded.pixels, decoded.label)
    _check_lossy_ids(mask, decoded.lossy, decoded.label)
    upright = replace(mask, values=apply_orientation(mask.values, decoded.pending), orientation=decoded.orientation)
    return upright, list(decoded.notes)


def read_bytes_stdin() -> bytes:
    """All bytes of standard input (an encoded image); refuses to wait on an interactive terminal."""
    if sys.stdin is None:
        raise ImageReadError(f"{STDIN_NAME}: standard input is closed")
    if sys.stdin.isatty():
        raise ValueError("refusing to read an image from a terminal; pipe a file in or pass a path")
    return sys.stdin.buffer.read()

