"""Session 58. Lines three pixels wide in the given mask are kept too: ``morphology.under_four_pixels`` and
``thin_lines``' third level by hand, ``guard.keep_given_lines`` with it, and the shipped weights on
``do_no_harm``'s case that showed the loss (lines three pixels wide turned on their diagonal)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import load_benchmark

from crm_cli.guard import LINE_MIN_AREA, LINE_MIN_PIXELS, LINE_MIN_WIDE_AREA, keep_given_lines
from crm_cli.metrics import score_pair
from crm_cli.morphology import lines_of, narrow_pixels, thin_lines, under_four_pixels


def wide_lines(side: np.ndarray) -> np.ndarray:
    """The foreground's lines by the shipped thresholds, all three levels."""
    return thin_lines(side, LINE_MIN_PIXELS, LINE_MIN_AREA, LINE_MIN_WIDE_AREA)[0]


def test_under_four_pixels_by_hand() -> None:
    side = np.zeros((20, 30), bool)
    side[2:5, 2:28] = True  # a band three rows tall: no 4x4 square fits
    side[9:13, 2:28] = True  # four rows: every pixel lies on a 4x4 square
    inside, outside = under_four_pixels(side)
    assert (inside > 0).sum() == 3 * 26 and (inside[2:5, 2:28] > 0).all()
    # The background: squares lie inside the image, so above the first band (rows 0-1) and in the two
    # columns either side of each band, the pixels down to row 4 and from row 9 on are under four wide;
    # rows 5-8 (four rows) and rows 13-19 (seven) are not.
    expected = np.zeros_like(side)
    expected[0:2] = True
    expected[2:5, [0, 1, 28, 29]] = True
    expected[9:13, [0, 1, 28, 29]] = True
    np.testing.assert_array_equal(outside > 0, expected)
    # Every pixel under three pixels wide is under four.
    narrow_in, narrow_out = narrow_pixels(side)
    assert not ((narrow_in > 0) & ~(inside > 0)).any() and not ((narrow_out > 0) & ~(outside > 0)).any()


def test_a_line_three_pixels_wide_is_a_line_from_its_area_on() -> None:
    long = LINE_MIN_WIDE_AREA // 3  # three rows of this many: LINE_MIN_WIDE_AREA pixels
    side = np.zeros((30, 140), bool)
    side[3:6, 10:10 + long] = True
    side[15:18, 10:10 + long - 1] = True  # three pixels short
    lines = wide_lines(side)
    expected = np.zeros_like(side)
    expected[3:6, 10:10 + long] = True
    np.testing.assert_array_equal(lines, expected)
    # Without the third level (None) neither band is a line: under three pixels wide they are not.
    assert not thin_lines(side, LINE_MIN_PIXELS, LINE_MIN_AREA)[0].any()
    wide_in, wide_out = under_four_pixels(side)
    with pytest.raises(ValueError, match="together"):  # a lone map without its threshold would keep every piece
        lines_of(side, wide_in, wide_out, LINE_MIN_WIDE_AREA, lone=wide_in)


def test_lines_three_pixels_wide_that_cross_are_kept_whole() -> None:
    """Two such lines crossing at a narrow angle make a knot five or six pixels wide; joined through
    pixels under seven pixels wide, the knot belongs to the lines (through pixels under five, as the
    lower levels join, its 56 pixels would be left to the model)."""
    drawn = np.zeros((200, 200), np.uint8)
    cv2.line(drawn, (0, 70), (199, 130), 1, 1)
    cv2.line(drawn, (0, 130), (199, 70), 1, 1)
    side = cv2.dilate(drawn, np.ones((3, 3), np.uint8)) > 0
    np.testing.assert_array_equal(wide_lines(side), side)
    wide_in, wide_out = under_four_pixels(side)
    joined_narrowly = lines_of(side, wide_in, wide_out, LINE_MIN_WIDE_AREA)
    assert (side & ~joined_narrowly).sum() == 56


def test_solid_shapes_and_wide_bands_hold_no_line_three_pixels_wide() -> None:
    side = np.zeros((160, 120), bool)
    rows, cols = np.mgrid[:160, :120]
    side |= (rows - 40) ** 2 + (cols - 30) ** 2 <= 400  # a disc
    side[10:150, 70:74] = True  # a band four pixels wide: 560 pixels, twice LINE_MIN_WIDE_AREA
    side[5:15, 90:115] = True  # a rectangle
    on_line, off_line = thin_lines(side, LINE_MIN_PIXELS, LINE_MIN_AREA, LINE_MIN_WIDE_AREA)
    assert not on_line.any() and not off_line.any()
    side[10:150, 73] = False  # three pixels wide: a line
    assert thin_lines(side, LINE_MIN_PIXELS, LINE_MIN_AREA, LINE_MIN_WIDE_AREA)[0].sum() == 3 * 140


def test_a_gap_three_pixels_wide_between_two_slats_is_kept_open() -> None:
    """A slat fence: the background between two slats is a line of the background side, and the
    refinement that filled it is put back to the given side; the slats themselves are wide."""
    given = np.zeros((140, 40), np.float32)
    given[10:130, 8:18] = 1.0
    given[10:130, 21:31] = 1.0  # a gap of columns 18-20
    probability = given.copy()
    probability[10:130, 18:21] = 0.8  # the refinement filled the gap
    out, restored = keep_given_lines(probability, given)
    np.testing.assert_array_equal(out, given)
    assert restored == 3 * 120
    # With the level off, the filled gap stays filled.
    kept, none = keep_given_lines(probability, given, min_wide_area=None)
    np.testing.assert_array_equal(kept, probability)
    assert none == 0


@pytest.mark.parametrize("turned", [False, True])
def test_the_shipped_weights_keep_lines_three_pixels_wide_either_way(turned: bool) -> None:
    """``do_no_harm``'s lines three pixels wide at 1024x768, as drawn and turned on their diagonal:
    turned, the weights erase stretches of them (IoU 0.973 before this level); with it both read 0.999."""
    from crm_cli import Refiner

    harm = load_benchmark("do_no_harm")
    case = harm.lines_case(768, 1024, 3, seed=3)
    if turned:
        case = harm.turned(case)
    refiner = Refiner(device="cpu")
    kept = score_pair((refiner.refine(case.photo, case.mask) * 255).round().astype(np.uint8), case.mask)
    assert kept.iou >= 0.999
