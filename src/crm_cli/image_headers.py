"""A file's header, no pixel decoded: ImageHeader, probe_image, EXIF orientation, lossy compression."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from .decode_messages import caught_pillow_warnings, damaged_tags_note, decode_errors, without_damaged_png_chunks
from .image_limits import check_image_size
from .image_sources import ImageReadError, bytes_path_hint, check_source, file_error, pipe_bytes, source_bytes
from .masks import swaps_axes
from .writing import PNG_SIGNATURE, png_chunk_headers, reader_at, warnings_ignored

_EXIF_ORIENTATION = 0x0112


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


def exif_orientation(image: Image.Image, header_only: bool = False) -> int:
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
    """:func:`exif_orientation` of an image opened (not loaded) from ``stream``, decoding no pixel of a
    PNG unless a text chunk follows its image data (rare; Pillow then decodes it to read them)."""
    if image.format != "PNG" or "exif" in image.info:
        return exif_orientation(image, header_only=True)
    try:
        payload, text_after_image = _png_late_exif(stream)
    except (OSError, ValueError, struct.error):
        return 1
    if payload is not None:
        image.info["exif"] = b"Exif\x00\x00" + payload  # as Pillow's decoder records an eXIf chunk
    elif text_after_image:
        return exif_orientation(image)
    return exif_orientation(image, header_only=True)


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


def tiff_orientation_tag(image: Image.Image) -> int | None:
    """The Orientation tag (1..8) of an opened TIFF; None for other formats or without a valid tag."""
    tags = getattr(image, "tag_v2", None)
    try:
        value = tags.get(_EXIF_ORIENTATION) if tags is not None else None
    except Exception:
        return None  # as in exif_orientation: a broken tag must not make readable pixels unreadable
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


# TIFF compressions that lose detail (tag 259): JPEG, old-style and new, and a DNG's lossy JPEG.
_LOSSY_TIFF_COMPRESSIONS = {6: "JPEG-compressed TIFF", 7: "JPEG-compressed TIFF", 34892: "JPEG-compressed TIFF"}


def lossy_compression(image: Image.Image, stream: BinaryIO) -> str | None:
    """The lossy compression an opened file is stored in, in words ("JPEG", "lossy WebP",
    "JPEG-compressed TIFF", "AVIF"), or None for a lossless one. ``stream`` is the file's bytes (read for
    WebP, whose lossy and lossless kinds Pillow does not tell apart), left where it was."""
    if image.format in ("JPEG", "MPO"):
        return "JPEG"
    if image.format == "TIFF":
        compression = getattr(image, "tag_v2", {}).get(259)
        return _LOSSY_TIFF_COMPRESSIONS.get(compression) if isinstance(compression, int) else None
    if image.format == "WEBP":
        return "lossy WebP" if _webp_lossy(stream) else None
    if image.format in ("AVIF", "HEIF"):  # lossless AVIF exists, but is rare and not told by Pillow
        return image.format
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
    compression (class ids altered by it, :func:`mask_decoding.check_lossy_ids`). 8-bit and unsigned
    16-bit files cannot."""
    mode = header.mode
    if mode in ("I", "F") or mode.startswith(("I;16S", "I;32", "F;")):
        return True
    return as_mask and header.lossy is not None


def probe_image(source: str | Path | bytes, name: str | None = None) -> ImageHeader:
    """Read only the header of an image or mask: its upright size, mode and format.

    Cheap (no pixels are decoded, and for a path only the first blocks are read), so commands
    check every input before loading the model. Raises ImageReadError for a missing, unreadable,
    unrecognised or too large file, and TypeError for a ``source`` that is neither a path nor bytes.
    """
    check_source(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        with bytes_path_hint(source, name):
            data, label = source_bytes(source, name)
            return _probe(io.BytesIO(data), label)
    label = name or str(source)
    if (piped := pipe_bytes(source, label)) is not None:
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
        raise file_error(label, exc) from None


def _probe(stream: BinaryIO, label: str) -> ImageHeader:
    """The header of the file in ``stream``; a PNG that Pillow refuses for a damaged metadata chunk is
    probed without it, as the readers decode it (:func:`decode_messages.without_damaged_png_chunks`)."""
    try:
        return _probe_once(stream, label)
    except ImageReadError:
        stream.seek(0)
        if stream.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:  # read no more of any other refused file
            raise
        stream.seek(0)
        repaired, damaged = without_damaged_png_chunks(stream.read())
        if not damaged:
            raise
    return _probe_once(io.BytesIO(repaired), label)


def _probe_once(stream: BinaryIO, label: str) -> ImageHeader:
    """:func:`_probe`, as the bytes are."""
    # Pillow's warnings (a damaged EXIF block) are said once, by the decode that follows a probe; kept
    # in the header for a check that fails before any decode.
    with decode_errors(label, "image header", stream), caught_pillow_warnings() as pillow_warnings:
        opened = Image.open(stream)
        check_image_size(opened.width, opened.height, label)
        width, height = _stored_size(opened)
        orientation = _header_orientation(opened, stream)
        if swaps_axes(orientation):
            width, height = height, width
        lossy = lossy_compression(opened, stream)
    return ImageHeader(width, height, opened.mode, opened.format or "", orientation, lossy,
                       damaged_tags_note(pillow_warnings, label, opened.format or "", orientation))


def file_long_side(source: str | Path) -> int | None:
    """The longer side in pixels of the photo file ``source``, from its header alone (no pixel
    decoded; orientation does not change it), or None when the header cannot be read."""
    try:
        with open(source, "rb") as handle, warnings_ignored():
            return max(Image.open(handle).size)
    except Exception:  # noqa: BLE001 - unreadable for whatever reason: the caller decides
        return None
