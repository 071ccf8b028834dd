"""Sample values photos and masks share: integers in 0..65535, floats in [0, 1], uint16 to uint8."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .image_sources import ImageReadError


def uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale uint16 values to uint8 with rounding (65535 -> 255, 32768 -> 128), not clipping."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def photo_integers(image: Image.Image, label: str) -> np.ndarray:
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


def integer_mask(decoded: Image.Image, label: str) -> np.ndarray:
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


def unit_floats(decoded: Image.Image, label: str, what: str = "mask") -> np.ndarray:
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
