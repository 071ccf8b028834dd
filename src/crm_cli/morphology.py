"""Shape operations on boolean masks with an elliptical disc, shared by the metrics, the guard's region
pass and the edge snap (NumPy + OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np


def disc(radius: int) -> np.ndarray:
    """OpenCV's elliptical structuring element of ``radius``: a (2r+1)x(2r+1) uint8 disc."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def thin_parts(foreground: np.ndarray, radius: int) -> np.ndarray:
    """Pixels of either side (foreground or background) that no disc of ``radius`` inside that side
    covers: the parts an opening by the disc would remove."""
    inside = foreground.astype(np.uint8)
    element = disc(radius)
    thick_inside = cv2.morphologyEx(inside, cv2.MORPH_OPEN, element) > 0
    thick_outside = cv2.morphologyEx(1 - inside, cv2.MORPH_OPEN, element) > 0
    return np.where(foreground, ~thick_inside, ~thick_outside)


def near_boundary(foreground: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` px (elliptical disc) of a pixel that has a neighbour on the other side.

    Not :func:`crm_cli.metrics.boundary_band` (the morphological gradient by the disc, as mBA
    defines it): that band holds ``radius`` pixels on each side of a straight boundary, this one
    ``radius + 1``, since its boundary pixels are the first pixel of each side.
    """
    inside = foreground.astype(np.uint8)
    square = np.ones((3, 3), np.uint8)
    edge = (cv2.dilate(inside, square) != cv2.erode(inside, square)).astype(np.uint8)
    return cv2.dilate(edge, disc(radius)) > 0
