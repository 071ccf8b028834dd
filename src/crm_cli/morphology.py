"""Shape operations on boolean masks with an elliptical disc, shared by the metrics, the guard's region
pass and the edge snap (NumPy + OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

_SQUARE_2X2 = np.ones((2, 2), np.uint8)
_SQUARE_3X3 = np.ones((3, 3), np.uint8)
_SQUARE_5X5 = np.ones((5, 5), np.uint8)


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


def lone_pixels(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels one pixel wide: (those of the foreground, those of the background) that lie on no 2x2
    square of their own side, each as a uint8 (H, W) map (nonzero where lone).

    ``foreground`` is a bool or 0/1 uint8 (H, W) mask. The background's squares come from the
    foreground's closing, so the two sides cost four passes of a 2x2 filter in all. Erosion and
    dilation are anchored at opposite corners; OpenCV's own opening anchors an even kernel at its
    centre for both, which shifts the result by a pixel.
    """
    inside = np.ascontiguousarray(foreground).view(np.uint8)
    opened = cv2.dilate(cv2.erode(inside, _SQUARE_2X2, anchor=(1, 1), **_OPENING_EDGE), _SQUARE_2X2, anchor=(0, 0),
                        **_OPENING_EDGE)
    closed = cv2.erode(cv2.dilate(inside, _SQUARE_2X2, anchor=(1, 1), **_CLOSING_EDGE), _SQUARE_2X2, anchor=(0, 0),
                       **_CLOSING_EDGE)
    return cv2.compare(inside, opened, cv2.CMP_GT), cv2.compare(closed, inside, cv2.CMP_GT)


def narrow_pixels(foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels under three pixels wide: (those of the foreground, those of the background) that lie on
    no 3x3 square of their own side, as uint8 (H, W) maps (nonzero where narrow). Every pixel of
    :func:`lone_pixels` is one of them."""
    inside = np.ascontiguousarray(foreground).view(np.uint8)
    opened = cv2.morphologyEx(inside, cv2.MORPH_OPEN, _SQUARE_3X3, **_OPENING_EDGE)
    closed = cv2.morphologyEx(inside, cv2.MORPH_CLOSE, _SQUARE_3X3, **_CLOSING_EDGE)
    return cv2.compare(inside, opened, cv2.CMP_GT), cv2.compare(closed, inside, cv2.CMP_GT)


def lines_of(side: np.ndarray, narrow: np.ndarray, lone: np.ndarray, other_narrow: np.ndarray, min_lone: int,
             min_area: int) -> np.ndarray:
    """The lines of one side of a mask (``side``, bool or 0/1 uint8 (H, W)), from its ``narrow`` and
    ``lone`` maps and the other side's narrow map (:func:`narrow_pixels`, :func:`lone_pixels`).

    Lines cross and touch in knots a 2x2 or 3x3 square fits in, so a line is a piece of the narrow
    pixels joined through the pixels within two pixels of them that are under five pixels wide. It holds at least
    ``min_lone`` lone pixels (a line one pixel wide) or ``min_area`` narrow ones (two pixels wide),
    and under ``DITHER_CONTACT_SHARE`` of its contacts with the other side touch narrow pixels of that
    side (a dithered edge interleaves narrow pixels of both sides; a line crosses a region). Every
    pixel of such a piece is returned (bool (H, W)).
    """
    inside = np.ascontiguousarray(side).view(np.uint8)
    slim = cv2.compare(inside, cv2.morphologyEx(inside, cv2.MORPH_OPEN, _SQUARE_5X5, **_OPENING_EDGE), cv2.CMP_GT)
    joined = cv2.bitwise_and(slim, cv2.dilate(narrow, _SQUARE_5X5))
    count, labels = cv2.connectedComponents(joined, connectivity=8)
    rows, cols = np.nonzero(labels)
    at = labels[rows, cols]
    lone_count = np.bincount(at, weights=lone[rows, cols] > 0, minlength=count)
    narrow_count = np.bincount(at, weights=narrow[rows, cols] > 0, minlength=count)
    long_enough = (lone_count >= min_lone) | (narrow_count >= min_area)
    long_enough[0] = False  # label 0: not near a narrow pixel, or five pixels wide or more
    if not long_enough.any():
        return np.zeros(inside.shape, bool)
    # Each pixel's neighbours on the other side, and those of them that are narrow.
    other = cv2.boxFilter(1 - inside, cv2.CV_16U, (3, 3), normalize=False)
    other_thin = cv2.boxFilter((other_narrow > 0).view(np.uint8), cv2.CV_16U, (3, 3), normalize=False)
    contacts = np.bincount(at, weights=other[rows, cols], minlength=count)
    thin_contacts = np.bincount(at, weights=other_thin[rows, cols], minlength=count)
    long_enough &= thin_contacts < DITHER_CONTACT_SHARE * np.maximum(contacts, 1)
    return long_enough[labels]


def thin_lines(foreground: np.ndarray, min_lone: int, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """The lines under three pixels wide of each side of ``foreground`` (bool (H, W)): (the
    foreground's, the background's) as bool (H, W) maps, by :func:`lines_of`'s rule. A side with
    fewer narrow pixels than either threshold holds none, which most masks show after four passes
    of a 3x3 filter (a smooth mask's odd corner pixel, a network's short wisps)."""
    inside = np.ascontiguousarray(foreground, dtype=bool)
    narrow_in, narrow_out = narrow_pixels(inside)
    fewest = min(min_lone, min_area)
    searched = [cv2.countNonZero(narrow) >= fewest for narrow in (narrow_in, narrow_out)]
    empty = np.zeros(inside.shape, bool)
    if not any(searched):
        return empty, empty
    lone_in, lone_out = lone_pixels(inside)
    lines_in = lines_of(inside, narrow_in, lone_in, narrow_out, min_lone, min_area) if searched[0] else empty
    lines_out = lines_of(~inside, narrow_out, lone_out, narrow_in, min_lone, min_area) if searched[1] else empty
    return lines_in, lines_out

