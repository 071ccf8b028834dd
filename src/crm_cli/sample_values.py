"""Sample values photos and masks share: integers in 0..65535, floats in [0, 1], uint16 to uint8."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .image_sources import ImageReadError


def uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale uint16 values to uint8 with rounding (65535 -> 255, 32768 -> 128), not clipping."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


# TIFF's PhotometricInterpretation tag, and its value for grey stored with 0 as white (MONOCHROME1 scanners,
# some X-ray detectors). Pillow inverts such 1- to 8-bit files as it decodes them, but not 16-bit or
# floating-point ones.
PHOTOMETRIC_TAG = 262
WHITE_IS_ZERO = 0


def white_is_zero(image: Image.Image) -> bool:
    """Whether a decoded TIFF stores its grey levels with 0 as white (PhotometricInterpretation 0)."""
    tags = getattr(image, "tag_v2", None)
    return image.format == "TIFF" and tags is not None and tags.get(PHOTOMETRIC_TAG) == WHITE_IS_ZERO


# TIFF's MaxSampleValue tag: the black level of a white-is-zero file that holds fewer than 16 bits.
MAX_SAMPLE_VALUE_TAG = 281
# The scales a 16-bit file's values may stand on: 8-bit values saved in a 16-bit file, a 10-, 12- or 14-bit
# sensor's, or all 16 bits (photo_depth reads photos on them; PHOTO_BITS_CHOICES).
STORED_BITS: tuple[int, ...] = (8, 10, 12, 14, 16)


def _upright_levels(image: Image.Image, values: np.ndarray, label: str) -> np.ndarray:
    """16-bit ``values`` with 0 as black: those of a white-is-zero TIFF turned over on their own scale
    (top - v: the file's MaxSampleValue, else the least of 8, 10, 12, 14 and 16 bits that holds its values,
    so that a 12-bit detector's frame stays 12-bit), which Pillow leaves as stored; a wider white-is-zero
    file is refused, its white level being unknown."""
    if not white_is_zero(image):
        return values
    if values.dtype != np.uint16:
        raise _white_is_zero_refusal(label)
    given = image.tag_v2.get(MAX_SAMPLE_VALUE_TAG)
    given = given[0] if isinstance(given, tuple) and given else given
    high = int(values.max()) if values.size else 0
    if isinstance(given, int) and high <= given <= 65535:
        top = given
    else:
        top = next(2 ** bits - 1 for bits in STORED_BITS if high <= 2 ** bits - 1)
    return np.subtract(np.uint16(top), values)


def _white_is_zero_refusal(label: str) -> ImageReadError:
    """The error of a white-is-zero file wider than 16 bits (32-bit integers, floats): its white level is unknown."""
    return ImageReadError(f"{label}: its grey levels are stored with 0 as white (TIFF PhotometricInterpretation 0), "
                          "which crm reads in 1- to 16-bit files only; save it with 0 as black")


# TIFF's SampleFormat tag, and its value for signed integers.
SAMPLE_FORMAT_TAG = 339
SIGNED_INTEGER = 2


def check_signed_bytes(image: Image.Image, label: str) -> None:
    """Refuse a signed 8-bit TIFF holding negative values, which Pillow decodes as unsigned bytes (-1 as
    255): the values wrapped around would read as other values in silence. One holding none reads right."""
    tags = getattr(image, "tag_v2", None)
    if image.format != "TIFF" or tags is None or image.mode not in ("L", "RGB"):
        return
    if SIGNED_INTEGER not in tuple(tags.get(SAMPLE_FORMAT_TAG) or ()):
        return
    values = np.asarray(image).view(np.int8)
    low, high = int(values.min()), int(values.max())
    if low < 0:
        raise ImageReadError(f"{label}: this signed 8-bit TIFF holds values below 0 (from {low} to {high}), which "
                             "crm does not read; shift or rescale them to 0..255 first")


def photo_integers(image: Image.Image, label: str) -> np.ndarray:
    """uint16 values of an I;16* or 32-bit "I" photo. Values outside 0..65535 (a signed TIFF's
    negatives, a 32-bit count) have no place on any scale crm reads photos on: clipping them would
    turn every negative pixel black in silence (the air and soft tissue of a CT slice), so such a
    photo is refused, naming the file, as a float photo outside [0, 1] is."""
    values = _upright_levels(image, np.asarray(image), label)
    if values.dtype == np.uint16:
        return values
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise ImageReadError(f"{label}: an integer image must hold values from 0 to 65535; its values run from "
                             f"{low} to {high} (window or rescale it to 0..65535 first)")
    return values.astype(np.uint16)


def integer_mask(decoded: Image.Image, label: str) -> np.ndarray:
    """uint16 values of a 16- or 32-bit integer mask (Pillow modes I;16* and I). 32-bit values must
    fit 0..65535, so that the 8- and 16-bit scales of :func:`masks.uint16_full_scale` apply."""
    values = _upright_levels(decoded, np.asarray(decoded), label)
    if values.dtype == np.uint16:
        return values
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise ImageReadError(f"{label}: an integer mask must hold values from 0 to 255 (8-bit scale) or "
                             f"65535 (16-bit scale); its values run from {low} to {high}")
    return values.astype(np.uint16)


# Float masks from other tools may overshoot [0, 1] by rounding; more than this is another scale.
FLOAT_MASK_TOLERANCE = 1e-3


def unit_floats(decoded: Image.Image, label: str, what: str = "mask") -> np.ndarray:
    """The float32 values of a floating-point ``what`` (a mask's probability map, e.g. a 32-bit
    TIFF, or an image's grey levels), checked to be finite and within [0, 1] (rounding overshoot clipped)."""
    if white_is_zero(decoded):
        raise _white_is_zero_refusal(label)
    values = np.asarray(decoded, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ImageReadError(f"{label}: the floating-point {what} holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -FLOAT_MASK_TOLERANCE or high > 1.0 + FLOAT_MASK_TOLERANCE:
        held = "probabilities in [0, 1]" if what == "mask" else "values in [0, 1] (1 = white)"
        raise ImageReadError(f"{label}: a floating-point {what} must hold {held}; "
                             f"its values run from {low:g} to {high:g}")
    return np.clip(values, 0.0, 1.0)
