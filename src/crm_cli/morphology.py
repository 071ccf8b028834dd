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



def one_pixel_lines(side: np.ndarray, min_pixels: int) -> np.ndarray:
    """Lines about one pixel wide in ``side`` (a bool (H, W) mask), without the odd stray pixel.

    A pixel is one pixel wide where no 2x2 square of ``side`` holds it. Lines cross and touch in
    small clusters such a square fits in, so the lines are the 8-connected pieces of ``side`` that
    no 3x3 square covers (under three pixels wide) holding at least ``min_pixels`` pixels one pixel
    wide; every pixel of such a piece is returned.

    The 2x2 opening is built from an erosion and a dilation anchored at opposite corners; OpenCV's
    own opening anchors an even kernel at its centre for both, which shifts the result by a pixel.
    """
    inside = side.astype(np.uint8)
    square = np.ones((2, 2), np.uint8)
    covered = cv2.dilate(cv2.erode(inside, square, anchor=(1, 1)), square, anchor=(0, 0))
    lone = (inside > 0) & (covered == 0)
    if not lone.any():
        return lone
    narrow = ((inside > 0) & (cv2.morphologyEx(inside, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) == 0))
    count, labels = cv2.connectedComponents(narrow.astype(np.uint8), connectivity=8)
    lone_pixels = np.bincount(labels[lone], minlength=count)
    long_enough = lone_pixels >= min_pixels
    long_enough[0] = False  # label 0: wider than two pixels
    return long_enough[labels]
