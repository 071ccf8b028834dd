"""Shape operations on boolean masks with an elliptical disc, shared by the metrics, the guard's region
pass and the edge snap (NumPy + OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

_SQUARE_2X2 = np.ones((2, 2), np.uint8)
_SQUARE_3X3 = np.ones((3, 3), np.uint8)
_SQUARE_4X4 = np.ones((4, 4), np.uint8)
_SQUARE_5X5 = np.ones((5, 5), np.uint8)
_SQUARE_7X7 = np.ones((7, 7), np.uint8)
_SQUARE_11X11 = np.ones((11, 11), np.uint8)


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
    edge = (cv2.dilate(inside, _SQUARE_3X3) != cv2.erode(inside, _SQUARE_3X3)).astype(np.uint8)
    return cv2.dilate(edge, disc(radius)) > 0


# A square of one side lies inside the image: beyond it, each side's filters see the other side (an
# opening's and the 5x5 opening's 0, a closing's 1), on all four edges alike. So a line along the
# image's edge is a line, as it is inside the image (DUTS's own masks leave a row of background there).
_OPENING_EDGE = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
_CLOSING_EDGE = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 1}
# thin_lines refuses a piece when at least this share of its contacts with the other side are with
# pixels of the other side that are narrow too: a dithered edge, not a line across a region. A wire
# one pixel beside an object's edge has half its contacts so.
DITHER_CONTACT_SHARE = 0.75


def _off_even_squares(foreground: np.ndarray, square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) pixels on no even ``square`` (2x2, 4x4) of their own side, as uint8
    maps. Erosion and dilation are anchored at opposite corners; OpenCV's own opening anchors an even
    kernel at its centre for both, which shifts the result by a pixel."""
    inside = np.ascontiguousarray(foreground).view(np.uint8)
    corner = (square.shape[1] - 1, square.shape[0] - 1)
    opened = cv2.dilate(cv2.erode(inside, square, anchor=corner, **_OPENING_EDGE), square, anchor=(0, 0),
                        **_OPENING_EDGE)
    closed = cv2.erode(cv2.dilate(inside, square, anchor=corner, **_CLOSING_EDGE), square, anchor=(0, 0),
                       **_CLOSING_EDGE)
    return cv2.compare(inside, opened, cv2.CMP_GT), cv2.compare(closed, inside, cv2.CMP_GT)


def lone_pixels(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels one pixel wide: (those of the foreground, those of the background) that lie on no 2x2
    square of their own side, each as a uint8 (H, W) map (nonzero where lone).

    ``foreground`` is a bool or 0/1 uint8 (H, W) mask. The background's squares come from the
    foreground's closing, so the two sides cost four passes of a 2x2 filter in all.
    """
    return _off_even_squares(foreground, _SQUARE_2X2)


def under_four_pixels(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels under four pixels wide: (those of the foreground, those of the background) on no 4x4
    square of their own side, as uint8 (H, W) maps. ``foreground`` is a bool or 0/1 uint8 (H, W) mask.
    Every pixel of :func:`narrow_pixels` is one of them."""
    return _off_even_squares(foreground, _SQUARE_4X4)


def narrow_pixels(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels under three pixels wide: (those of the foreground, those of the background) that lie on
    no 3x3 square of their own side, as uint8 (H, W) maps (nonzero where narrow). Every pixel of
    :func:`lone_pixels` is one of them."""
    return _off_odd_squares(foreground, _SQUARE_3X3)


def under_seven_pixels(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels under seven pixels wide: (those of the foreground, those of the background) on no 7x7
    square of their own side, as uint8 (H, W) maps. Every pixel of :func:`under_four_pixels` is one
    of them."""
    return _off_odd_squares(foreground, _SQUARE_7X7)


def _off_odd_squares(foreground: np.ndarray, square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) pixels on no odd ``square`` of their own side, as uint8 maps (an odd
    square's centre anchor serves the erosion and the dilation alike)."""
    inside = np.ascontiguousarray(foreground).view(np.uint8)
    opened = cv2.morphologyEx(inside, cv2.MORPH_OPEN, square, **_OPENING_EDGE)
    closed = cv2.morphologyEx(inside, cv2.MORPH_CLOSE, square, **_CLOSING_EDGE)
    return cv2.compare(inside, opened, cv2.CMP_GT), cv2.compare(closed, inside, cv2.CMP_GT)


def lines_of(side: np.ndarray, narrow: np.ndarray, other_narrow: np.ndarray, min_area: int,
             lone: np.ndarray | None = None, min_lone: int | None = None,
             join: np.ndarray = _SQUARE_5X5) -> np.ndarray:
    """The lines of one side of a mask (``side``, bool or 0/1 uint8 (H, W)), from its ``narrow`` map
    (the pixels under a width, :func:`narrow_pixels` or :func:`under_four_pixels`) and the other
    side's map of the same width.

    Lines cross and touch in knots wider than themselves, so a line is a piece of the narrow pixels
    joined through the pixels near them that are under ``join``'s side wide (within two pixels and under
    five for the default 5x5 square). It holds at least ``min_area`` narrow pixels, or at least
    ``min_lone`` of ``lone`` (:func:`lone_pixels`: a line one pixel wide), and under
    ``DITHER_CONTACT_SHARE`` of its contacts with the other side touch narrow pixels of that side (a
    dithered edge interleaves narrow pixels of both sides; a line crosses a region). Every pixel of
    such a piece is returned (bool (H, W)). ``lone`` and ``min_lone`` come together or not at all.
    """
    if (lone is None) != (min_lone is None):
        raise ValueError("lines_of takes lone and min_lone together")
    inside = np.ascontiguousarray(side).view(np.uint8)
    slim = cv2.compare(inside, cv2.morphologyEx(inside, cv2.MORPH_OPEN, join, **_OPENING_EDGE), cv2.CMP_GT)
    joined = cv2.bitwise_and(slim, cv2.dilate(narrow, join))
    count, labels = cv2.connectedComponents(joined, connectivity=8)
    if count < 2:
        return np.zeros(inside.shape, bool)
    points = cv2.findNonZero(joined)  # the labelled pixels as (x, y), several times np.nonzero's speed
    cols, rows = points.reshape(-1, 2).T
    at = labels[rows, cols]
    narrow_count = np.bincount(at, weights=narrow[rows, cols] > 0, minlength=count)
    long_enough = narrow_count >= min_area
    if lone is not None and min_lone is not None:
        long_enough |= np.bincount(at, weights=lone[rows, cols] > 0, minlength=count) >= min_lone
    long_enough[0] = False  # label 0: not near a narrow pixel, or too wide
    if not long_enough.any():
        return np.zeros(inside.shape, bool)
    # Each pixel's neighbours on the other side, and those of them that are narrow.
    other = cv2.boxFilter(1 - inside, cv2.CV_16U, (3, 3), normalize=False)
    other_thin = cv2.boxFilter((other_narrow > 0).view(np.uint8), cv2.CV_16U, (3, 3), normalize=False)
    contacts = np.bincount(at, weights=other[rows, cols], minlength=count)
    thin_contacts = np.bincount(at, weights=other_thin[rows, cols], minlength=count)
    long_enough &= thin_contacts < DITHER_CONTACT_SHARE * np.maximum(contacts, 1)
    return long_enough[labels]


def thin_lines(foreground: np.ndarray, min_lone: int, min_area: int,
               min_wide_area: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The lines of each side of ``foreground`` (bool (H, W)): (the foreground's, the background's) as
    bool (H, W) maps, by :func:`lines_of`'s rule: pieces under three pixels wide with ``min_lone``
    pixels one pixel wide or ``min_area`` pixels in all and, with ``min_wide_area``, pieces under four
    pixels wide with that many pixels (joined through knots under seven pixels wide). A side with fewer
    narrow pixels than a level's threshold holds no line of that level, which most masks show after a
    few passes of a small filter (a smooth mask's odd corner pixel, a network's short wisps)."""
    inside = np.ascontiguousarray(foreground, dtype=bool)
    lines = [np.zeros(inside.shape, bool), np.zeros(inside.shape, bool)]
    narrow_in, narrow_out = narrow_pixels(inside)
    fewest = min(min_lone, min_area)
    searched = [cv2.countNonZero(narrow) >= fewest for narrow in (narrow_in, narrow_out)]
    if any(searched):
        lone_in, lone_out = lone_pixels(inside)
        if searched[0]:
            lines[0] = lines_of(inside, narrow_in, narrow_out, min_area, lone_in, min_lone)
        if searched[1]:
            lines[1] = lines_of(~inside, narrow_out, narrow_in, min_area, lone_out, min_lone)
    if min_wide_area is not None:
        wide = _lines_under_width(inside, under_four_pixels(inside), min_wide_area, _SQUARE_7X7)
        lines[0] |= wide[0]
        lines[1] |= wide[1]
    return lines[0], lines[1]


def _lines_under_width(inside: np.ndarray, narrow: tuple[np.ndarray, np.ndarray], min_area: int,
                       join: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lines_of` on each side of ``inside`` (bool (H, W)) from ``narrow`` (the foreground's and
    the background's pixels under a width), skipping a side with fewer than ``min_area`` of them."""
    lines = [np.zeros(inside.shape, bool), np.zeros(inside.shape, bool)]
    narrow_in, narrow_out = narrow
    for index, (side, own, other) in enumerate(((inside, narrow_in, narrow_out), (~inside, narrow_out, narrow_in))):
        if cv2.countNonZero(own) >= min_area:
            lines[index] = lines_of(side, own, other, min_area, join=join)
    return lines[0], lines[1]


def wide_lines(foreground: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """The lines under seven pixels wide of each side of ``foreground`` (bool (H, W)): (the
    foreground's, the background's) as bool (H, W) maps, by :func:`lines_of`'s rule with at least
    ``min_area`` pixels under seven pixels wide, joined through knots under eleven pixels wide."""
    inside = np.ascontiguousarray(foreground, dtype=bool)
    return _lines_under_width(inside, under_seven_pixels(inside), min_area, _SQUARE_11X11)
