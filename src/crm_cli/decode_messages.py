"""Pillow's failures and warnings on a file as ImageReadError messages and notes that name the file."""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from .image_limits import bomb_error
from .image_sources import ImageReadError
from .writing import PNG_SIGNATURE, WARNING_STATE_LOCK, png_chunk_headers, warnings_ignored

# Pillow raises a zoo of exception types on bad input (SyntaxError from some plugins, struct.error
# from truncated headers, ...), not only OSError.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error)


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


def without_damaged_png_chunks(data: bytes) -> tuple[bytes, list[str]]:
    """A PNG's bytes without its ancillary chunks (metadata: tEXt, iTXt, eXIf, ...) whose checksum fails,
    and their names; ``data`` itself and [] for any other file, or when none is damaged. Pillow refuses
    the whole file for one ("cannot identify image file"), where libpng only warns. Critical chunks
    (IHDR, PLTE, IDAT, IEND) are kept whatever their checksum: their damage is the image's."""
    import zlib

    if not data.startswith(PNG_SIGNATURE):
        return data, []
    kept, damaged, end = [data[:len(PNG_SIGNATURE)]], [], len(PNG_SIGNATURE)
    for at, length, kind in png_chunk_headers(lambda offset, size: data[offset:offset + size]):
        end = at + 12 + length  # the chunk's header, data and CRC
        if end > len(data):  # cut short: left as it is, for the decoder to judge
            end = at
            break
        ancillary = bool(kind[0] & 0x20)  # a lower-case first letter
        if ancillary and zlib.crc32(data[at + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            damaged.append(kind.decode("latin-1"))
        else:
            kept.append(data[at:end])
    if not damaged:
        return data, []
    kept.append(data[end:])
    return b"".join(kept), damaged


# ISO base media file brands (an 'ftyp' box at the start) of the HEIF family: HEIC (iPhone photos) and AVIF.
_HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"hevc": "HEIC",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def _heif_brand(stream: BinaryIO | None) -> str | None:
    """"HEIC", "HEIF" or "AVIF" for a file of that kind (its 'ftyp' box), which Pillow opens only with a
    plugin (HEIC) or a recent release (AVIF); None for anything else."""
    if stream is None:
        return None
    stream.seek(0)
    head = stream.read(12)
    return _HEIF_BRANDS.get(head[8:12]) if head[4:8] == b"ftyp" else None


def _unrecognised_error(label: str, stream: BinaryIO | None) -> ImageReadError:
    """The error for a file Pillow cannot identify; for a TIFF it names the sample layout it holds."""
    layout = _tiff_layout(stream) if stream is not None else None
    if layout is None:
        if (brand := _heif_brand(stream)) is not None:
            return ImageReadError(f"{label}: an {brand} file, which this installation cannot decode; convert it "
                                  "to PNG, TIFF or JPEG first")
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
def decode_errors(label: str, what: str, stream: BinaryIO | None = None) -> Iterator[None]:
    """Pillow's many failure types as one ImageReadError naming the file (``what`` failed to decode;
    ``stream``, the file's bytes, lets an unidentified TIFF be described)."""
    try:
        yield
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError:
        raise _unrecognised_error(label, stream) from None
    except Image.DecompressionBombError as exc:
        raise bomb_error(label, exc) from None
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"{label}: cannot decode {what} ({exc})") from None


# Formats whose later frames are not other pictures of the same kind: an MPO (a camera JPEG) adds
# previews and depth maps after its main image; a PSD's frames are its layers, and its flattened picture
# is what is read.
_FRAMES_NOT_PAGES = ("MPO", "PSD")


def several_frames_note(opened: Image.Image, label: str) -> str | None:
    """The note for an animated GIF, PNG or WebP or a multi-page TIFF: only its first frame is read,
    which may not be the one meant. None for a file of one frame (or an MPO's previews)."""
    if opened.format in _FRAMES_NOT_PAGES:
        return None
    start = opened.tell()  # 0, but 1 for formats that number their frames from 1
    try:
        # Counting walks through the later frames: their own warnings (corrupt EXIF) are not the
        # first frame's, and the file must be back at its first frame, even when a later one is
        # damaged, or the wrong frame would be decoded.
        with warnings_ignored():
            frames = int(getattr(opened, "n_frames", 1))
    except _DECODE_ERRORS:
        return None  # a damaged later frame: the first is still read, and its own errors reported
    finally:
        if opened.tell() != start:
            opened.seek(start)
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
def caught_pillow_warnings() -> Iterator[list[_PillowWarning]]:
    """Inside, Pillow's UserWarnings (a corrupt EXIF block, a malformed MPO) are not printed in
    Python's format, which names no file, but kept: the yielded list receives each distinct one, for
    :func:`warning_notes`. Other warnings (another thread's too) are passed on as they came.

    ``warnings.catch_warnings`` swaps process-wide state, so decodes in several threads (the API
    invites one Refiner per thread) take turns here, and with :func:`writing.warnings_ignored`'s filters
    (WARNING_STATE_LOCK): interleaved, one thread's exit would leave Python's warning output
    pointing at another's finished list."""
    kept: list[_PillowWarning] = []
    with WARNING_STATE_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every one, not once per source line as by default
        # crm checks the size itself (image_limits.check_image_size), with a message that names the file.
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


def damaged_tags_note(found: list[_PillowWarning], label: str, file_format: str, orientation: int) -> str | None:
    """The note naming the file for damaged tags (an EXIF block; a TIFF's own tags) among the warnings
    of :func:`caught_pillow_warnings`, saying whether an orientation was still applied; None without any."""
    tags = "TIFF tags" if file_format == "TIFF" else "EXIF data"
    details = "; ".join(warning.message.rstrip(".") for warning in found if warning.about_tags)
    if not details:
        return None
    if orientation == 1:
        return f"{label}: damaged {tags} ignored, so no EXIF orientation was applied ({details})"
    return f"{label}: damaged {tags} ({details}); its orientation tag ({orientation}) was still applied"


def warning_notes(found: list[_PillowWarning], label: str, file_format: str, orientation: int) -> list[str]:
    """Notes naming the file for the warnings of :func:`caught_pillow_warnings`: one for damaged tags
    (:func:`damaged_tags_note`), and one for each other warning."""
    damaged = damaged_tags_note(found, label, file_format, orientation)
    return [*([damaged] if damaged else []),
            *(f"{label}: {warning.message}" for warning in found if not warning.about_tags)]
