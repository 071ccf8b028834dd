"""Turn a refined probability map into the file the user asked for (pure NumPy + OpenCV).

Kinds:
    soft     uint8 round(p * 255)
    soft16   uint16 round(p * 65535)
    binary   uint8 0/255, foreground where p > threshold (default 0.5)
    cutout   RGBA uint8: the image's RGB with alpha = the soft uint8 mask; RGBA uint16 (alpha
             round(p * 65535)) when the image given is (H, W, 3) uint16, a 16-bit photo's own values
    overlay  RGB uint8: dimmed image with the coarse (red) and refined (green) contours
"""

from __future__ import annotations

import numpy as np

from .config import OUTPUT_KINDS
from .masks import binarize, check_rgb_image

DEFAULT_THRESHOLD = 0.5
COARSE_COLOR: tuple[int, int, int] = (255, 0, 0)
REFINED_COLOR: tuple[int, int, int] = (0, 255, 0)
GT_COLOR: tuple[int, int, int] = (0, 160, 255)
OVERLAY_DIM = 0.6  # image brightness under the contours, so both colours stand out


def contour_thickness(height: int, width: int) -> int:
    """Contour line width for an image: 1 px up to ~1K, about 1 px more per 1000 px of H + W."""
    return max(1, round((height + width) / 1000))


def draw_contours(canvas: np.ndarray, mask: np.ndarray, color: tuple[int, int, int],
                  thickness: int) -> np.ndarray:
    """Draw the outer and hole boundaries of a boolean mask onto an RGB uint8 canvas, in place."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    # LINE_8, not anti-aliased, so every contour pixel has exactly the contour colour.
    cv2.drawContours(canvas, contours, -1, color, thickness, lineType=cv2.LINE_8)
    return canvas


def _check_probability(probability: np.ndarray) -> np.ndarray:
    prob = np.asarray(probability, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"probability map must be 2-D (H, W), got shape {prob.shape}")
    return np.clip(prob, 0.0, 1.0)


def _need_image(image: np.ndarray | None, shape: tuple[int, int], kind: str) -> np.ndarray:
    if image is None:
        raise ValueError(f"output kind {kind!r} needs the image")
    return check_rgb_image(image, shape)


def _check_rgb16(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 16-bit cut-out's photo: (H, W, 3) uint16 of the probability's size; ValueError otherwise."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"a 16-bit image must be (H, W, 3) uint16 RGB, got {image.dtype} {image.shape}")
    if image.shape[:2] != tuple(shape):
        raise ValueError(f"image size {image.shape[1]}x{image.shape[0]} does not match mask size "
                         f"{shape[1]}x{shape[0]}")
    return np.ascontiguousarray(image)


def render_overlay(image: np.ndarray, probability: np.ndarray, coarse: np.ndarray | None = None,
                   threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Dimmed RGB image with the coarse contour in red and the refined (p > threshold) one in green."""
    prob = _check_probability(probability)
    image = _need_image(image, prob.shape, "overlay")
    height, width = prob.shape
    thickness = contour_thickness(height, width)
    canvas = (image.astype(np.float32) * OVERLAY_DIM).round().astype(np.uint8)
    if coarse is not None:
        coarse = np.asarray(coarse)
        if coarse.shape[:2] != prob.shape:
            raise ValueError(f"coarse mask size {coarse.shape[1]}x{coarse.shape[0]} does not match "
                             f"{width}x{height}")
        draw_contours(canvas, binarize(coarse), COARSE_COLOR, thickness)
    # Refined last, so it stays visible where the two contours coincide.
    draw_contours(canvas, prob > threshold, REFINED_COLOR, thickness)
    return canvas


def effective_rendering(kind: str, threshold: float | None) -> tuple[str, float | None]:
    """(output kind, threshold) as :func:`render_output` applies them, so that options making the same
    pixels are equal: ``soft`` with a threshold is ``binary``; binary and overlay outputs cut at
    DEFAULT_THRESHOLD without one; soft, soft16 and cut-out outputs are not cut without one (None).
    A given threshold comes back as given (a NumPy float keeps its precision in the comparison)."""
    if kind == "soft" and threshold is not None:
        kind = "binary"
    if threshold is None and kind in ("binary", "overlay"):
        threshold = DEFAULT_THRESHOLD
    return kind, threshold


def check_rendering(kind: str, threshold: float | None) -> None:
    """ValueError for an output kind not in ``OUTPUT_KINDS`` or a threshold outside [0, 1]: what
    :func:`render_output` refuses, for a caller to check before it refines."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {kind!r}; choose from {', '.join(OUTPUT_KINDS)}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")


def render_output(kind: str, probability: np.ndarray, image: np.ndarray | None = None,
                  coarse: np.ndarray | None = None, threshold: float | None = None) -> np.ndarray:
    """Render a probability map (H, W) in [0, 1] as one of ``OUTPUT_KINDS``.

    Args:
        kind: one of ``OUTPUT_KINDS``.
        probability: float map; values outside [0, 1] are clipped.
        image: (H, W, 3) uint8 RGB, required by ``cutout`` and ``overlay``; ``cutout`` also takes
            uint16 RGB (a 16-bit photo's values) and then returns a 16-bit RGBA image.
        coarse: the coarse mask, drawn by ``overlay`` when given.
        threshold: binarisation threshold. Given with ``soft`` it selects ``binary``; with
            ``soft16`` or ``cutout`` the probability is binarised first (0/65535, a hard alpha).
    """
    check_rendering(kind, threshold)
    prob = _check_probability(probability)
    kind, limit = effective_rendering(kind, threshold)
    if limit is not None and kind in ("soft16", "cutout"):
        prob = (prob > limit).astype(np.float32)
    if kind == "soft":
        return np.round(prob * 255.0).astype(np.uint8)
    if kind == "soft16":
        return np.round(prob * 65535.0).astype(np.uint16)
    if kind == "binary":
        return (prob > limit).astype(np.uint8) * 255
    if kind == "cutout":
        if image is not None and np.asarray(image).dtype == np.uint16:
            rgb16 = _check_rgb16(image, prob.shape)
            return np.dstack([rgb16, np.round(prob * 65535.0).astype(np.uint16)])
        rgb = _need_image(image, prob.shape, kind)
        alpha = np.round(prob * 255.0).astype(np.uint8)
        return np.dstack([rgb, alpha])
    return render_overlay(image, prob, coarse, limit)
