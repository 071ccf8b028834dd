"""Reading images and masks, matching their sizes, and writing PNGs atomically.

Every file is decoded by Pillow, so the EXIF orientation is read one way and applied by the same
NumPy code to images and masks. OpenCV is used only for the pixels of 16-bit colour files (Pillow
truncates those to their high byte) and for resizing.
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "OUTPUT_FORMATS",
    "ImageHeader",
    "ImageReadError",
    "ImageWriteError",
    "MaskData",
    "OutputNameError",
    "SizeMismatchError",
    "check_pair_headers",
    "encode_image",
    "encode_png",
    "match_mask_to_image",
    "output_format",
    "probe_image",
    "read_bytes_stdin",
    "read_image",
    "read_mask",
    "write_bytes_stdout",
    "write_image",
    "write_png",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

STDIN_NAME = "<stdin>"
# The largest image crm reads (width x height), and the longest side. Refining needs about 0.75 GB
# plus 37 bytes per pixel (70 with the `quality` preset; see runtime.estimate_refine_bytes), so
# the 150 MP limit is a 6-7 GB job (11-12 GB with `quality`); the side limit is JPEG's.
MAX_IMAGE_PIXELS = 150_000_000
MAX_IMAGE_SIDE = 65_535
# Output extensions and the lossless format each one names.
OUTPUT_FORMATS: dict[str, str] = {".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
_LOSSY_SUFFIXES: dict[str, str] = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
                                   ".jp2": "JPEG 2000", ".avif": "AVIF", ".heic": "HEIC", ".gif": "GIF"}
_EXIF_ORIENTATION = 0x0112
_MASK_KINDS = ("gray8", "gray16", "palette", "alpha", "rgb")
# Pillow raises a zoo of exception types on bad input (SyntaxError from some plugins, struct.error
# from truncated headers, ...), not only OSError.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error)


class ImageReadError(OSError):
    """An input image or mask is missing or cannot be decoded; the message names the file."""


class SizeMismatchError(ValueError):
    """A mask's size does not fit its image; the message names both files and sizes."""


class ImageWriteError(OSError):
    """An output file cannot be written; the message names the user's path, never a temp file."""


class OutputNameError(ValueError):
    """An output name whose extension crm will not write (lossy or unknown): a usage error."""


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, before any pixel is decoded: upright size, mode and format."""

    width: int
    height: int
    mode: str
    format: str

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width), upright (EXIF orientation applied)."""
        return self.height, self.width


@dataclass
class MaskData:
    """A decoded mask: raw values plus how to interpret them.

    ``kind`` is "gray8", "alpha" or "rgb" for uint8 values, "gray16" for uint16 values, and
    "palette" for palette indices (uint8) with ``palette`` holding the 768-entry flat RGB palette.
    """

    values: np.ndarray
    kind: str
    palette: list[int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in _MASK_KINDS:
            raise ValueError(f"unknown mask kind {self.kind!r}; expected one of {', '.join(_MASK_KINDS)}")
        if self.values.ndim != 2:
            raise ValueError(f"mask values must be 2-D, got shape {self.values.shape}")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the mask."""
        return int(self.values.shape[0]), int(self.values.shape[1])

    def probability(self) -> np.ndarray:
        """Foreground probability as float32 (H, W) in [0, 1]; palette: any non-zero index is 1."""
        if self.kind == "palette":
            return (self.values != 0).astype(np.float32)
        if self.values.size and int(self.values.max()) == 1:
            # A 0/1 mask (common from labelling tools) is binary, not a nearly empty soft mask.
            return self.values.astype(np.float32)
        scale = 65535.0 if self.kind == "gray16" else 255.0
        return self.values.astype(np.float32) / np.float32(scale)

    def scoring_values(self) -> np.ndarray:
        """Values for IoU/mBA (which binarise with > 128 on 8-bit): palette indices are class ids,
        not grey levels, so a palette mask scores its foreground (index != 0) as booleans."""
        if self.kind == "palette" or (self.values.size and int(self.values.max()) == 1):
            return self.values != 0  # class ids, or a 0/1 mask
        return self.values

    def is_label_map(self) -> bool:
        """True when the values look like class ids rather than a binary or soft mask."""
        if self.kind == "palette":
            counts = np.bincount(self.values.ravel())
            return int(np.count_nonzero(counts[1:])) > 1
        if self.kind not in ("gray8", "gray16"):
            return False
        # Checking the maximum first keeps this cheap on large soft masks.
        if int(self.values.max()) >= 64:
            return False
        return int(np.count_nonzero(np.bincount(self.values.ravel()))) > 2


# ---------------------------------------------------------------------------------------------
# Loading


def _file_error(label: str, exc: OSError) -> ImageReadError:
    """A one-line message for a file that cannot be opened or read."""
    if isinstance(exc, FileNotFoundError):
        return ImageReadError(f"{label}: no such file")
    if isinstance(exc, IsADirectoryError):
        return ImageReadError(f"{label}: is a directory, not an image file")
    if isinstance(exc, PermissionError):
        return ImageReadError(f"{label}: permission denied")
    return ImageReadError(f"{label}: cannot read file ({exc.strerror or exc})")


def _source_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    """The encoded bytes of ``source`` and the name to use in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or STDIN_NAME
        data = bytes(source)
    else:
        label = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise _file_error(label, exc) from None
    if not data:
        raise ImageReadError(f"{label}: empty file")
    return data, label


def _is_16bit_colour(image: Image.Image) -> bool:
    """True when Pillow would reduce a 16-bit-per-channel colour file to 8 bits by truncation."""
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return False
    # Index access: tiles are plain tuples in older Pillow and named tuples in newer ones.
    args = image.tile[0][3]
    parts = args if isinstance(args, tuple) else (args,)
    return any(isinstance(part, str) and ";16" in part for part in parts)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1..8) of an opened image; 1 when absent or unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        # A broken EXIF block must not make otherwise readable pixels unreadable.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
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


def _decode_16bit_colour(data: bytes, label: str) -> np.ndarray:
    """Full-precision uint16 RGB or RGBA pixels of a 16-bit colour PNG/TIFF, via OpenCV."""
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImageReadError(f"{label}: cannot decode 16-bit colour image")
    code = cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(pixels, code)


def check_image_size(width: int, height: int, label: str) -> None:
    """Raise ImageReadError when an image is larger than crm's documented limits."""
    if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        raise ImageReadError(
            f"{label}: {width}x{height} ({width * height / 1e6:.0f} MP) is larger than crm's limit of "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP and {MAX_IMAGE_SIDE} px per side; downscale or crop it first"
        )


def _bomb_error(label: str, exc: Exception) -> ImageReadError:
    """Pillow's decompression-bomb refusal as crm's size-limit message."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)) / 1e6:.0f} MP" if found else "the image"
    return ImageReadError(
        f"{label}: {size} is larger than crm's limit of {MAX_IMAGE_PIXELS / 1e6:.0f} MP; downscale or crop it first"
    )


def _open(data: bytes, label: str) -> Image.Image:
    """Open (header only) with crm's size limit in place of Pillow's decompression-bomb warning."""
    with warnings.catch_warnings():
        # crm checks the size itself (check_image_size), with a message that names the file.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise _bomb_error(label, exc) from None
    check_image_size(opened.width, opened.height, label)
    return opened


def _decode(source: str | Path | bytes, name: str | None) -> tuple[Image.Image | np.ndarray, int, str]:
    """Open and fully decode ``source``.

    Returns a loaded Pillow image (or, for 16-bit colour files, a uint16 RGB/RGBA array), the EXIF
    orientation still to be applied, and the file label for messages.
    """
    data, label = _source_bytes(source, name)
    try:
        # The BytesIO stays alive with the image, so no copy is needed to detach it from a file.
        opened = _open(data, label)
        wide_colour = _is_16bit_colour(opened)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened.load()
        orientation = _orientation(opened)
        if wide_colour:
            return _decode_16bit_colour(data, label), orientation, label
        return opened, orientation, label
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageReadError(f"{label}: not a recognised image file") from None
    except Image.DecompressionBombError as exc:
        raise _bomb_error(label, exc) from None
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"{label}: cannot decode image ({exc})") from None


def probe_image(source: str | Path | bytes, name: str | None = None) -> ImageHeader:
    """Read only the header of an image or mask: its upright size, mode and format.

    Cheap (no pixels are decoded, and for a path only the first blocks are read), so commands
    check every input before loading the model. Raises ImageReadError for a missing, unreadable,
    unrecognised or too large file.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = _source_bytes(source, name)
        return _probe(io.BytesIO(data), label)
    label = name or str(source)
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


def _probe(stream: io.BufferedIOBase, label: str) -> ImageHeader:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(stream)
        check_image_size(opened.width, opened.height, label)
        width, height = opened.size
        if _orientation(opened) in (5, 6, 7, 8):
            width, height = height, width
        return ImageHeader(width, height, opened.mode, opened.format or "")
    except ImageReadError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageReadError(f"{label}: not a recognised image file") from None
    except Image.DecompressionBombError as exc:
        raise _bomb_error(label, exc) from None
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"{label}: cannot decode image header ({exc})") from None


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale uint16 values to uint8 with rounding (65535 -> 255, 32768 -> 128), not clipping."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _wide_int_to_uint16(image: Image.Image) -> np.ndarray:
    """uint16 values of an I;16* or 32-bit "I" image (the latter clipped to 0..65535)."""
    values = np.asarray(image)
    if values.dtype != np.uint16:
        values = np.clip(values, 0, 65535).astype(np.uint16)
    return values


def _image_pixels(decoded: Image.Image | np.ndarray, label: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) pixels of a decoded image, before orientation."""
    if isinstance(decoded, np.ndarray):
        return _to_uint8(decoded[..., :3])
    mode = decoded.mode
    if mode.startswith("I;16") or mode == "I":
        gray = _to_uint8(_wide_int_to_uint16(decoded))
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        raise ImageReadError(f"{label}: floating-point images are not supported")
    if mode == "RGB":
        return np.asarray(decoded)
    # Covers 1, L, LA, La, P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV; alpha is dropped.
    return np.asarray(decoded.convert("RGB"))


def read_image(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """Read an image file (or encoded bytes) as upright RGB uint8 (H, W, 3).

    ``name`` labels the source in error messages (default: the path, or "<stdin>" for bytes).
    """
    decoded, orientation, label = _decode(source, name)
    return _apply_orientation(_image_pixels(decoded, label), orientation)


def _is_constant(array: np.ndarray) -> bool:
    """True when every pixel of (H, W[, C]) equals the first one."""
    return bool((array == array[0, 0]).all())


def _colour_mask(rgb: np.ndarray, alpha: np.ndarray | None) -> MaskData:
    """The mask of an RGB(A) array (uint8 or uint16) by the alpha / equal-channel / luminance rules."""
    wide = rgb.dtype == np.uint16
    # A cut-out (crm's own -k cutout, or a photo cut-out) carries the shape in its alpha channel.
    # A constant alpha carries no shape (e.g. an opaque black mask), so then the colour decides.
    if alpha is not None and not _is_constant(alpha):
        return MaskData(alpha, "gray16") if wide else MaskData(alpha, "alpha")
    red = rgb[..., 0]
    if (red == rgb[..., 1]).all() and (red == rgb[..., 2]).all():
        return MaskData(np.ascontiguousarray(red), "gray16" if wide else "gray8")
    luma = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return MaskData(_to_uint8(luma) if wide else luma, "rgb")


def _mask_data(decoded: Image.Image | np.ndarray, label: str) -> MaskData:
    """Mask values of a decoded file, before orientation."""
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
        return MaskData(_wide_int_to_uint16(decoded), "gray16")
    if mode in ("P", "PA"):
        indices = np.asarray(decoded)
        if indices.ndim == 3:
            indices = indices[..., 0]
        palette = list(decoded.getpalette("RGB") or [])
        palette = (palette + [0] * 768)[:768]
        return MaskData(np.ascontiguousarray(indices), "palette", palette)
    if mode in ("LA", "La"):
        gray_alpha = np.asarray(decoded.convert("LA"))
        gray, alpha = gray_alpha[..., 0], gray_alpha[..., 1]
        if _is_constant(gray) and not _is_constant(alpha):
            return MaskData(np.ascontiguousarray(alpha), "alpha")
        return MaskData(np.ascontiguousarray(gray), "gray8")
    if mode == "F":
        raise ImageReadError(f"{label}: floating-point masks are not supported")
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(decoded.convert("RGBA"))
        return _colour_mask(rgba[..., :3], rgba[..., 3])
    rgb = decoded if mode == "RGB" else decoded.convert("RGB")
    return _colour_mask(np.asarray(rgb), None)


def read_mask(source: str | Path | bytes, name: str | None = None) -> MaskData:
    """Read a mask file (or encoded bytes) keeping its raw values, upright by EXIF orientation.

    16-bit files stay uint16, palette files keep indices and palette, RGBA cut-outs with a uniform
    colour use alpha, colour masks use luminance (one channel when R == G == B).
    """
    decoded, orientation, label = _decode(source, name)
    mask = _mask_data(decoded, label)
    mask.values = _apply_orientation(mask.values, orientation)
    return mask


# ---------------------------------------------------------------------------------------------
# Size matching


def _same_aspect(small_hw: tuple[int, int], large_hw: tuple[int, int]) -> bool:
    """True when ``small_hw`` is ``large_hw`` times one common scale, each side within 1% or 1 px."""
    scale = (small_hw[0] + small_hw[1]) / (large_hw[0] + large_hw[1])
    for small, large in zip(small_hw, large_hw, strict=True):
        expected = large * scale
        if abs(small - expected) > max(1.0, 0.01 * expected):
            return False
    return True


def match_mask_to_image(
    mask: MaskData, image_hw: tuple[int, int], image_name: str, mask_name: str
) -> tuple[MaskData, bool]:
    """Fit ``mask`` to an image of size ``image_hw`` = (height, width).

    Returns (mask, False) when sizes are equal, (upsampled mask, True) when the mask is a smaller
    copy with the same aspect ratio, and raises SizeMismatchError otherwise.
    """
    mask_h, mask_w = mask.values.shape[:2]
    image_h, image_w = int(image_hw[0]), int(image_hw[1])
    if (mask_h, mask_w) == (image_h, image_w):
        return mask, False
    smaller = mask_h <= image_h and mask_w <= image_w
    if not (smaller and _same_aspect((mask_h, mask_w), (image_h, image_w))):
        raise SizeMismatchError(
            f"mask {mask_name} is {mask_w}x{mask_h} but image {image_name} is {image_w}x{image_h}; "
            "a mask must have the image's size or be a smaller copy with the same aspect ratio"
        )
    # Interpolating class ids would invent labels in between, so those use nearest neighbour.
    nearest = mask.kind == "palette" or mask.is_label_map()
    interpolation = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
    resized = cv2.resize(mask.values, (image_w, image_h), interpolation=interpolation)
    palette = list(mask.palette) if mask.palette is not None else None
    return MaskData(resized.astype(mask.values.dtype, copy=False), mask.kind, palette), True


def check_pair_headers(image: ImageHeader, mask: ImageHeader, image_name: str, mask_name: str) -> bool:
    """Apply :func:`match_mask_to_image`'s size rule to two headers, before decoding anything.

    Returns True when the mask will be upsampled; raises SizeMismatchError when it cannot fit.
    """
    if mask.shape == image.shape:
        return False
    smaller = mask.height <= image.height and mask.width <= image.width
    if not (smaller and _same_aspect(mask.shape, image.shape)):
        raise SizeMismatchError(
            f"mask {mask_name} is {mask.width}x{mask.height} but image {image_name} is {image.width}x{image.height}; "
            "a mask must have the image's size or be a smaller copy with the same aspect ratio"
        )
    return True


# ---------------------------------------------------------------------------------------------
# Writing


def output_format(path: str | Path) -> str:
    """The lossless format an output name asks for: "PNG", "TIFF" or "WEBP" (by extension).

    Raises OutputNameError for lossy (JPEG, ...) or unknown extensions, naming the allowed ones.
    """
    suffix = Path(path).suffix.lower()
    if suffix in OUTPUT_FORMATS:
        return OUTPUT_FORMATS[suffix]
    allowed = ", ".join(OUTPUT_FORMATS)
    if suffix in _LOSSY_SUFFIXES:
        raise OutputNameError(f"{path}: {_LOSSY_SUFFIXES[suffix]} is lossy and would alter the mask; "
                              f"name the output {allowed}")
    what = f"unknown extension {suffix!r}" if suffix else "no extension"
    raise OutputNameError(f"{path}: {what}; name the output {allowed}")


def _to_pil(array: np.ndarray, palette: list[int] | None) -> Image.Image:
    """A Pillow image that saves ``array`` losslessly; ValueError for unsupported arrays."""
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
        # Filling a new P image keeps the indices verbatim; converting an L image would remap them.
        image = Image.new("P", (array.shape[1], array.shape[0]))
        image.frombytes(np.ascontiguousarray(array).tobytes())
        image.putpalette(entries)
        return image
    if array.ndim == 2 and array.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(array))
    if array.ndim == 2 and array.dtype == np.uint16:
        return Image.fromarray(np.ascontiguousarray(array).astype("<u2", copy=False))
    if array.ndim == 3 and array.dtype == np.uint8 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array))
    raise ValueError(
        f"cannot encode array of dtype {array.dtype} and shape {array.shape}; expected (H, W) "
        "uint8/uint16 or (H, W, 3|4) uint8"
    )


def encode_image(array: np.ndarray, palette: list[int] | None = None, fmt: str = "PNG") -> bytes:
    """Losslessly encoded bytes of a mask or image array in ``fmt`` ("PNG", "TIFF" or "WEBP").

    Arrays: (H, W) uint8 or uint16, (H, W, 3) RGB or (H, W, 4) RGBA uint8; with ``palette`` (flat
    RGB list) a palette image whose indices are the uint8 array values. WebP holds 8-bit grey,
    RGB and RGBA only, so a 16-bit or palette array raises ValueError there.
    """
    image = _to_pil(array, palette)
    buffer = io.BytesIO()
    if fmt == "PNG":
        image.save(buffer, format="PNG")
    elif fmt == "TIFF":
        image.save(buffer, format="TIFF", compression="tiff_adobe_deflate")
    elif fmt == "WEBP":
        if image.mode not in ("L", "RGB", "RGBA"):
            kind = "a palette (label map)" if image.mode == "P" else "16-bit values"
            raise ValueError(f"WebP cannot store {kind} losslessly; write it as .png or .tif")
        # Lossless WebP stores grey as RGB with equal channels, which read_mask reads back as grey.
        image.save(buffer, format="WEBP", lossless=True, quality=100, exact=True)
    else:
        raise ValueError(f"unknown output format {fmt!r}; choose PNG, TIFF or WEBP")
    return buffer.getvalue()


def encode_png(array: np.ndarray, palette: list[int] | None = None) -> bytes:
    """PNG bytes of a (H, W) uint8/uint16 (16-bit PNG), (H, W, 3) RGB or (H, W, 4) RGBA uint8 array.

    With ``palette`` (flat RGB list), writes a palette PNG whose indices are the uint8 array values.
    """
    return encode_image(array, palette, "PNG")


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


def _write_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` via a hidden temp file, fsync and rename.

    Errors are ImageWriteError naming ``target`` (never the temp file) and the reason.
    """
    temp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
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
        temp.unlink(missing_ok=True)
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ImageWriteError(f"cannot write {target}: {reason[0].lower() + reason[1:]}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def write_image(path: str | Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Write ``array`` atomically in the lossless format its extension names (.png, .tif, .tiff, .webp).

    Raises OutputNameError for other extensions, ValueError for an array the format cannot hold
    (see encode_image) and ImageWriteError when the file cannot be written.
    """
    target = Path(path)
    try:
        data = encode_image(array, palette, output_format(target))
    except OutputNameError:
        raise
    except ValueError as exc:
        raise ValueError(f"{target}: {exc}") from None
    _write_atomic(target, data)


def write_png(path: str | Path, array: np.ndarray, palette: list[int] | None = None) -> None:
    """Write ``array`` as a PNG at ``path`` atomically (temp file, fsync, rename); see encode_png.

    The name must end in .png (or have no extension), so PNG bytes never sit under another
    format's name; use write_image to pick the format from the extension.
    """
    target = Path(path)
    if target.suffix.lower() not in ("", ".png"):
        raise OutputNameError(f"{target}: the file is written as PNG, so its name must end in .png")
    _write_atomic(target, encode_png(array, palette))


# ---------------------------------------------------------------------------------------------
# Standard streams


def read_bytes_stdin() -> bytes:
    """All bytes of standard input (an encoded image); refuses to wait on an interactive terminal."""
    if sys.stdin is None:
        raise ImageReadError(f"{STDIN_NAME}: standard input is closed")
    if sys.stdin.isatty():
        raise ValueError("refusing to read an image from a terminal; pipe a file in or pass a path")
    return sys.stdin.buffer.read()


def write_bytes_stdout(data: bytes) -> None:
    """Write ``data`` (e.g. PNG bytes) to standard output; refuses when stdout is a terminal."""
    if sys.stdout.isatty():
        raise ValueError("refusing to write PNG to a terminal; redirect or use -o FILE")
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
