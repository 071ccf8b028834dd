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




_SQUARE_2X2 = np.ones((2, 2), np.uint8)
_SQUARE_3X3 = np.ones((3, 3), np.uint8)


def lone_pixels(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels one pixel wide: (those of the foreground, those of the background) that lie on no 2x2
    square of their own side, each as a uint8 (H, W) map (nonzero where lone).

    ``foreground`` is a bool or 0/1 uint8 (H, W) mask. The background's squares come from the
    foreground's closing, so the two sides cost four passes of a 2x2 filter in all. Erosion and
    dilation are anchored at opposite corners; OpenCV's own opening anchors an even kernel at its
    centre for both, which shifts the result by a pixel.
    """
    inside = np.ascontiguousarray(foreground).view(np.uint8)
    opened = cv2.dilate(cv2.erode(inside, _SQUARE_2X2, anchor=(1, 1)), _SQUARE_2X2, anchor=(0, 0))
    closed = cv2.erode(cv2.dilate(inside, _SQUARE_2X2, anchor=(1, 1)), _SQUARE_2X2, anchor=(0, 0))
    return cv2.compare(inside, opened, cv2.CMP_GT), cv2.compare(closed, inside, cv2.CMP_GT)


def lines_of(side: np.ndarray, lone: np.ndarray, min_pixels: int) -> np.ndarray:
    """The lines of ``side`` (bool or 0/1 uint8 (H, W)) through its ``lone`` pixels (a map of
    :func:`lone_pixels`): the 8-connected pieces of ``side`` that no 3x3 square covers (under three
    pixels wide; lines cross and touch in small clusters a 2x2 square fits in) holding at least
    ``min_pixels`` lone pixels. Every pixel of such a piece is returned (bool (H, W))."""
    inside = np.ascontiguousarray(side).view(np.uint8)
    narrow = cv2.compare(inside, cv2.morphologyEx(inside, cv2.MORPH_OPEN, _SQUARE_3X3), cv2.CMP_GT)
    count, labels = cv2.connectedComponents(narrow, connectivity=8)
    lone_count = np.bincount(labels[lone > 0], minlength=count)
    long_enough = lone_count >= min_pixels
    long_enough[0] = False  # label 0: three pixels wide or more
    return long_enough[labels]


def one_pixel_lines(side: np.ndarray, min_pixels: int) -> np.ndarray:
    """Lines about one pixel wide in ``side`` (a bool (H, W) mask), without the odd stray pixel:
    :func:`lines_of` its lone pixels (:func:`lone_pixels`), holding at least ``min_pixels`` of them."""
    inside = np.ascontiguousarray(side, dtype=bool)
    lone = lone_pixels(inside)[0]
    if cv2.countNonZero(lone) < max(min_pixels, 1):
        return np.zeros(inside.shape, bool)
    return lines_of(inside, lone, min_pixels)
