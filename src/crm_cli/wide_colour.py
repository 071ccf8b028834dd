"""16-bit colour files (Pillow truncates them): told from the header, decoded by OpenCV, cross-checked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
from PIL import Image

from .image_headers import apply_orientation, inverse_orientation
from .image_sources import ImageReadError
from .masks import swaps_axes


def is_16bit_colour(image: Image.Image) -> bool:
    """True when Pillow would reduce a 16-bit-per-channel colour file to 8 bits by truncation."""
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return False
    # Index access: tiles are plain tuples in older Pillow and named tuples in newer ones.
    args = image.tile[0][3]
    parts = args if isinstance(args, tuple) else (args,)
    return any(isinstance(part, str) and ";16" in part for part in parts)


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


def decode_16bit_colour(data: bytes, label: str) -> np.ndarray:
    """Full-precision uint16 RGB or RGBA pixels of a 16-bit colour PNG/TIFF, via OpenCV."""
    with _opencv_quiet():
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImageReadError(f"{label}: cannot decode 16-bit colour image")
    code = cv2.COLOR_BGR2RGB if pixels.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(pixels, code)


def wide_separate_planes(image: Image.Image) -> bool:
    """Whether ``image`` is a TIFF of more than 8 bits a sample that stores each colour in a plane of
    its own (PlanarConfiguration 2, as tifffile writes a (3, H, W) uint16 array): OpenCV scrambles
    such files, and Pillow reads the uncompressed ones wrongly too (8-bit ones read right)."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or tags.get(284) != 2:
        return False
    bits = tags.get(258, (8,))
    return max(bits if isinstance(bits, tuple) else (bits,)) > 8


def check_same_pixels(pixels: np.ndarray, loaded: Image.Image, label: str) -> None:
    """ImageReadError unless OpenCV's 16-bit ``pixels`` (laid out as ``loaded``) agree with Pillow's
    8-bit reading of the same file (its top 8 bits): a layout OpenCV decodes wrongly would otherwise
    be refined as noise, without a word."""
    eight = np.asarray(loaded)
    # The colour channels: a 16-bit PNG with a transparent colour (tRNS) is RGBA to OpenCV, RGB to Pillow.
    colours = (pixels[..., :3] >> 8).astype(np.int16)
    if eight.shape[:2] != pixels.shape[:2] or eight.ndim != 3 or np.abs(colours - eight[..., :3]).mean() > 1.0:
        raise ImageReadError(f"{label}: its 16-bit colour pixels decode differently in OpenCV and Pillow, so neither "
                             "can be trusted; save it as a 16-bit PNG, or an interleaved (contiguous) TIFF")


def laid_out_as(pixels: np.ndarray, loaded: Image.Image, orientation: int) -> np.ndarray:
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
