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


def narrow_pixels(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels under three pixels wide: (those of the foreground, those of the background) that lie on
    no 3x3 square of their own side, as uint8 (H, W) maps (nonzero where narrow). Every pixel of
    :func:`lone_pixels` is one of them."""
    inside = np.ascontiguousarray(foreground).view(np.uint8)
    opened = cv2.morphologyEx(inside, cv2.MORPH_OPEN, _SQUARE_3X3)
    closed = cv2.morphologyEx(inside, cv2.MORPH_CLOSE, _SQUARE_3X3)
    return cv2.compare(inside, opened, cv2.CMP_GT), cv2.compare(closed, inside, cv2.CMP_GT)


def lines_of(narrow: np.ndarray, lone: np.ndarray, min_lone: int, min_area: int) -> np.ndarray:
    """The lines among one side's ``narrow`` pixels (a map of :func:`narrow_pixels`): its 8-connected
    pieces holding at least ``min_lone`` pixels of ``lone`` (that side's map of :func:`lone_pixels`: a
    line one pixel wide; lines cross and touch in small clusters a 2x2 square fits in) or at least
    ``min_area`` pixels in all (a line two pixels wide). Every pixel of such a piece is returned
    (bool (H, W))."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(narrow, connectivity=8)
    lone_at = cv2.findNonZero(lone)  # (x, y) of each: sparse, cheaper than a mask of the whole image
    lone_xy = np.empty((0, 2), np.int32) if lone_at is None else lone_at.reshape(-1, 2)
    lone_labels = labels[lone_xy[:, 1], lone_xy[:, 0]]
    long_enough = (np.bincount(lone_labels, minlength=count) >= min_lone) | (stats[:, cv2.CC_STAT_AREA] >= min_area)
    long_enough[0] = False  # label 0: three pixels wide or more
    if not long_enough.any():
        return np.zeros(narrow.shape, bool)
    return long_enough[labels]


def thin_lines(foreground: np.ndarray, min_lone: int, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """The lines under three pixels wide of each side of ``foreground`` (bool (H, W)): (the
    foreground's, the background's) as bool (H, W) maps, by :func:`lines_of`'s rule. A side with
    fewer narrow pixels than either threshold holds none, which most masks show after four passes
    of a 3x3 filter (a smooth mask's odd corner pixel, a network's short wisps)."""
    narrow_in, narrow_out = narrow_pixels(foreground)
    fewest = min(min_lone, min_area)
    sides = [(narrow, cv2.countNonZero(narrow) >= fewest) for narrow in (narrow_in, narrow_out)]
    if not (sides[0][1] or sides[1][1]):
        empty = np.zeros(foreground.shape, bool)
        return empty, empty
    lone_maps = lone_pixels(foreground)
    return tuple(lines_of(narrow, lone, min_lone, min_area) if any_line else np.zeros(foreground.shape, bool)
                 for (narrow, any_line), lone in zip(sides, lone_maps, strict=True))  # type: ignore[return-value]


def one_pixel_lines(side: np.ndarray, min_pixels: int) -> np.ndarray:
    """Lines about one pixel wide in ``side`` (a bool (H, W) mask), without the odd stray pixel: the
    foreground's :func:`thin_lines` holding at least ``min_pixels`` lone pixels (no area rule)."""
    return thin_lines(np.ascontiguousarray(side, dtype=bool), min_pixels, np.iinfo(np.int32).max)[0]
