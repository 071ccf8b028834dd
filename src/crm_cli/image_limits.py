"""crm's size limits (MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE), their messages, and opening a file under them."""

from __future__ import annotations

import io
import re

from PIL import Image

from .image_sources import ImageReadError
from .writing import warnings_ignored

# The largest image crm reads (width x height), and the longest side. Refining needs about 0.4-0.75 GB
# (onnx, torch) plus 37 bytes per pixel (70 with the `quality` preset; see runtime.estimate_refine_bytes), so
# the 150 MP limit is a 6-7 GB job (11-12 GB with `quality`); the side limit is JPEG's.
MAX_IMAGE_PIXELS = 150_000_000
MAX_IMAGE_SIDE = 65_535


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


def bomb_error(label: str, exc: Exception) -> ImageReadError:
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


def open_image_bytes(data: bytes, label: str) -> Image.Image:
    """Open (header only) with crm's size limit in place of Pillow's decompression-bomb warning."""
    # crm checks the size itself (check_image_size), with a message that names the file.
    with warnings_ignored(Image.DecompressionBombWarning):
        try:
            opened = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise bomb_error(label, exc) from None
    check_image_size(opened.width, opened.height, label)
    return opened
