"""Decoding images and masks: read_image, read_mask (raw values as ``masks.MaskData``), probe_image.

Every file is decoded by Pillow, so the EXIF orientation is read one way and applied by the same
NumPy code to images and masks. OpenCV is used only for the pixels of 16-bit colour files (Pillow
truncates those to their high byte). What a mask's values mean is masks.py's; encoding and
writing files is writing.py's.

This module holds the reading API and the decode they share; its parts live in: image_sources (a
source's bytes, ImageReadError), image_limits (size limits), decode_messages (Pillow's failures and
warnings as messages), image_headers (probe_image, EXIF orientation, lossy compression), wide_colour
(16-bit colour via OpenCV), sample_values, photo_depth (a photo's scale and its notes) and
mask_decoding (a mask's values).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .config import PHOTO_OUTPUT_KINDS
from .decode_messages import (
    caught_pillow_warnings,
    decode_errors,
    several_frames_note,
    warning_notes,
    without_damaged_png_chunks,
)
from .image_headers import apply_orientation, exif_orientation, lossy_compression, tiff_orientation_tag
from .image_headers import probe_image as probe_image  # public API: crm_cli.imageio.probe_image
from .image_limits import open_image_bytes
from .image_sources import ImageReadError, bytes_path_hint, source_bytes  # ImageReadError: public API here too
from .mask_decoding import check_lossy_ids, decoded_mask_data
from .masks import MaskData
from .photo_depth import check_photo_bits, decoded_rgb16, decoded_stored_bits, decoded_takes_photo_bits, image_pixels
from .sample_values import check_signed_bytes
from .wide_colour import check_same_pixels, decode_16bit_colour, is_16bit_colour, laid_out_as, wide_separate_planes
from .writing import warnings_ignored

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                                   ".pgm", ".ppm", ".pbm", ".pnm", ".avif")


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
    lossy: str | None = None  # the lossy compression the file is stored in (:func:`image_headers.lossy_compression`)
    # A 16-bit colour PNG's transparent key colour (tRNS) as the alpha OpenCV made of it (uint16), kept apart
    # from ``pixels``: it is the mask only where the colours cannot be (mask_decoding.decoded_mask_data).
    key_alpha: np.ndarray | None = None


def _decode(source: str | Path | bytes, name: str | None) -> _Decoded:
    """Open and fully decode ``source``, keeping notes for the log: several frames, and Pillow's
    warnings (a damaged EXIF block) as lines naming the file."""
    with bytes_path_hint(source, name):
        data, label = source_bytes(source, name)
        return _decode_data(data, label)


def _decode_data(data: bytes, label: str) -> _Decoded:
    """:func:`_decode` of the encoded bytes ``data``, named ``label`` in messages. A PNG that Pillow
    refuses for a damaged metadata chunk is read without it, with a note."""
    try:
        return _decode_data_once(data, label)
    except ImageReadError:
        repaired, damaged = without_damaged_png_chunks(data)
        if not damaged:
            raise
    decoded = _decode_data_once(repaired, label)
    chunks = ", ".join(dict.fromkeys(damaged))
    note = f"{label}: its PNG metadata ({chunks}) failed its checksum and was ignored"
    return replace(decoded, notes=(*decoded.notes, note))


def _decode_data_once(data: bytes, label: str) -> _Decoded:
    """:func:`_decode_data`, as the bytes are."""
    with decode_errors(label, "image", io.BytesIO(data)):
        with caught_pillow_warnings() as pillow_warnings:
            # The BytesIO stays alive with the image, so no copy is needed to detach it from a file.
            opened = open_image_bytes(data, label)
            wide_colour = is_16bit_colour(opened)
            tiff_orientation = tiff_orientation_tag(opened)
            frames_note = several_frames_note(opened, label)
            opened.load()
            if tiff_orientation is None:
                orientation = pending = exif_orientation(opened)
            else:
                # Newer Pillow turns a TIFF upright while loading it and drops the tag; older Pillow
                # leaves both to crm.
                orientation = tiff_orientation
                pending = orientation if tiff_orientation_tag(opened) == orientation else 1
        notes = [frames_note] if frames_note else []
        notes += warning_notes(pillow_warnings, label, opened.format or "", orientation)
        check_signed_bytes(opened, label)
        profile = opened.info.get("icc_profile") or None
        lossy = lossy_compression(opened, io.BytesIO(data))
        if wide_separate_planes(opened):
            raise ImageReadError(f"{label}: a 16-bit colour TIFF with separate colour planes (PlanarConfiguration "
                                 "2) is not read correctly here; save it with the planes interleaved (tifffile: "
                                 "planarconfig='contig')")
        if not wide_colour:
            return _Decoded(opened, orientation, pending, label, profile, tuple(notes), lossy)
        pixels = decode_16bit_colour(data, label)
        if orientation != 1:
            pixels = laid_out_as(pixels, opened, orientation)
        check_same_pixels(pixels, opened, label)
        key_alpha = None
        if pixels.shape[2] == 4 and "A" not in opened.mode:  # Pillow sees no alpha channel: a tRNS key colour
            pixels, key_alpha = np.ascontiguousarray(pixels[..., :3]), np.ascontiguousarray(pixels[..., 3])
        return _Decoded(pixels, orientation, pending, label, profile, tuple(notes), lossy, key_alpha)


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
    ``photo_depth.PHOTO_MIN_LEVELS`` levels is stretched from black to white instead (:func:`photo_depth._flattened`).
    Each of these readings, several frames and a damaged EXIF block is logged as a warning on the
    ``crm_cli.imageio`` logger (:func:`read_image_noted` returns the notes instead).
    ``photo_bits`` (one of photo_depth.PHOTO_BITS_CHOICES) reads every 16-bit photo on that scale instead, as
    the frames of one sequence need: values above 2**photo_bits - 1 are clipped, with a note, and
    nothing is stretched; 8-bit and floating-point files ignore it.

    Raises:
        ImageReadError: (an OSError; ``crm_cli.ImageReadError``) the file is missing, a folder or
            unreadable; the file or bytes are empty, not a recognised image, truncated or corrupt;
            its values are out of range (a float photo outside [0, 1] or NaN, integers outside
            0..65535); it is larger than crm's size limit (``image_limits.MAX_IMAGE_PIXELS``,
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
    pixels, note = image_pixels(decoded.pixels, decoded.label, photo_bits)
    profile = decoded.icc_profile
    rgb_profile = profile if profile is not None and profile[16:20] == _ICC_RGB else None
    notes = [*decoded.notes, *([note] if note else [])]
    stored_bits = decoded_stored_bits(decoded.pixels)
    pixels16 = None
    if keep_16bit and stored_bits == 16:
        pixels16 = apply_orientation(decoded_rgb16(decoded.pixels, decoded.label), decoded.pending)
    return Photo(apply_orientation(pixels, decoded.pending), decoded.orientation, notes, rgb_profile,
                 stored_bits, decoded_takes_photo_bits(decoded.pixels), pixels16)


def file_takes_photo_bits(source: str | Path) -> bool:
    """Whether ``photo_bits`` shapes the pixels of the photo file ``source`` (:attr:`Photo.takes_photo_bits`
    of its reading: a 16-bit file, a 32-bit integer TIFF), told from its header alone, no pixel decoded
    (about 0.07 ms for a JPEG). True when the header cannot be read: the caller then takes the file for one whose
    pixels depend on the scale, and reading it reports what is wrong."""
    try:
        with open(source, "rb") as handle, warnings_ignored():
            opened = Image.open(handle)
            return decoded_takes_photo_bits(opened) or is_16bit_colour(opened)  # OpenCV decodes the latter
    except Exception:  # noqa: BLE001 - unreadable for whatever reason: see above
        return True


def read_mask(source: str | Path | bytes, name: str | None = None) -> MaskData:
    """Read a mask file (or encoded bytes) keeping its raw values, upright by EXIF orientation.

    16- and 32-bit integer files become uint16 (32-bit values must fit 0..65535), floating-point
    files (32-bit TIFF probability maps) stay float32 and must lie in [0, 1], palette files keep
    indices and palette (and the palette's transparency, ``MaskData.transparency``) unless their
    colours are grey or a binary colour mask (:func:`mask_decoding._palette_mask`), RGBA and LA cut-outs use their
    alpha when it varies, as do palette, grey and RGB files whose transparent index or colour (GIF,
    PNG tRNS) draws the mask (:func:`mask_decoding._transparency_draws_the_mask`), a colour-coded label map
    (exact colours of several hues in regions of their own) is one object, every colour but black, and other
    colour masks use their brightest channel (one channel when R == G == B). A 16-bit grey TIFF stored with
    0 as white is turned over.
    A JPEG mask that would read as class ids (:func:`mask_decoding.check_lossy_ids`) is refused. Several frames
    and a damaged EXIF block are logged as warnings on the ``crm_cli.imageio`` logger
    (:func:`read_mask_noted` returns them instead); what the values mean (an 8-bit mask saved in a
    16-bit file, a photo given as a mask) is ``masks.py``'s to say, when the mask is fitted to a photo.

    Raises:
        ImageReadError: (an OSError; ``crm_cli.ImageReadError``) the file is missing, a folder or
            unreadable; the file or bytes are empty, not a recognised image, truncated or corrupt;
            its values are out of range (integers outside 0..65535, floats outside [0, 1] or NaN, a
            signed 8-bit TIFF's negatives); a floating-point or 32-bit TIFF stored with 0 as white; a JPEG,
            lossy WebP or AVIF mask of class ids; larger than crm's size limit. The message names the file.
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
    mask = decoded_mask_data(decoded.pixels, decoded.label, decoded.key_alpha, lossy=decoded.lossy is not None)
    check_lossy_ids(mask, decoded.lossy, decoded.label)
    upright = replace(mask, values=apply_orientation(mask.values, decoded.pending), orientation=decoded.orientation)
    return upright, list(decoded.notes)
