"""Session 60. Lines four to six pixels wide in the given mask are kept where the mask's outline is
sharp on the photo: ``morphology.under_seven_pixels`` and ``wide_lines`` by hand,
``schedule.outline_sharpness`` against ``boundary_sharpness`` of each piece alone, ``guard.sharp_lines``
on an exact mask and on the same mask two pixels off, and the shipped weights on ``do_no_harm``'s
lines four pixels wide at 2048x1536, which they erased (IoU 0.80)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import load_benchmark

from crm_cli.guard import LINE_MIN_SHARP_AREA, keep_given_lines, sharp_lines
from crm_cli.metrics import score_pair
from crm_cli.morphology import under_seven_pixels, wide_lines
from crm_cli.schedule import boundary_sharpness, outline_sharpness


def test_under_seven_pixels_by_hand() -> None:
    side = np.zeros((40, 60), bool)
    side[5:11, 5:55] = True  # a bar six pixels tall: every pixel under seven wide
    side[20:27, 5:55] = True  # a bar seven pixels tall: none
    narrow_in, narrow_out = under_seven_pixels(side)
    assert np.count_nonzero(narrow_in) == 6 * 50
    assert np.all(narrow_in[5:11, 5:55])
    assert not narrow_in[20:27].any()
    # The background between the bars (rows 11-19, nine rows) is too wide; beside the bars' ends the
    # background reaches the image's edge (five columns: under seven).
    assert not narrow_out[12:19, 20:40].any()
    assert narrow_out[5:11, 0:5].all() and narrow_out[20:27, 0:5].all()


def test_wide_lines_from_their_area_on() -> None:
    long_enough = LINE_MIN_SHARP_AREA // 5 + 1  # columns of a line five pixels wide
    side = np.zeros((60, 200), bool)
    side[10:15, 20:20 + long_enough] = True
    side[40:45, 20:20 + long_enough - 2] = True  # 10 pixels short of the area
    on_line, off_line = wide_lines(side, LINE_MIN_SHARP_AREA)
    assert np.array_equal(on_line[:30], side[:30])
    assert not on_line[30:].any()
    assert not off_line.any()


def test_solid_shapes_hold_no_wide_line() -> None:
    side = np.zeros((200, 200), bool)
    cv2.circle(side.view(np.uint8), (100, 100), 60, 1, -1)
    side[10:30, 10:190] = True  # a bar twenty pixels tall
    on_line, off_line = wide_lines(side, LINE_MIN_SHARP_AREA)
    assert not on_line.any() and not off_line.any()


def test_outline_sharpness_equals_each_piece_read_alone() -> None:
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    photo = cv2.GaussianBlur(photo, (0, 0), 2.0)
    labels = np.zeros((120, 160), np.int32)
    labels[10:15, 10:150] = 1
    labels[40:100, 30:36] = 2  # more than six pixels from piece 1
    labels[70:90, 100:130] = 3
    photo[labels == 1] = 20
    sharpness = outline_sharpness(photo, labels, 4)
    assert sharpness[0] == 0.0
    for label in (1, 2, 3):
        alone = boundary_sharpness(photo, labels == label, above_noise=False)
        assert sharpness[label] == pytest.approx(alone, rel=1e-5)
    assert sharpness[1] > 10 * sharpness[2]  # the dark bar on the photo, against blurred noise


def test_outline_sharpness_by_hand() -> None:
    """A dark bar (20) across a flat photo (200), rows 15-19, the piece exactly the bar. The 3x3 Sobel
    reads 4 x 180 = 720 on rows 14, 15, 19 and 20 and 0 on every other row. The pieces' distances:
    rows 15 and 19 inside and 14 and 20 outside are 1 (near band, all 720); rows 16-18 inside and 12,
    13, 21 and 22 outside are 2 or 3 (outer band, all 0): 720 / (0 + 1e-6). The same piece two rows
    lower has rows 16, 17, 21 and 22 near (all 0): 0."""
    photo = np.full((40, 80, 3), 200, np.uint8)
    labels = np.zeros((40, 80), np.int32)
    labels[15:20, :] = 1
    photo[labels == 1] = 20
    assert outline_sharpness(photo, labels, 2)[1] == pytest.approx(720 / 1e-6)
    assert outline_sharpness(photo, np.roll(labels, 2, axis=0), 2)[1] == 0.0
    assert outline_sharpness(photo, np.zeros_like(labels), 1).tolist() == [0.0]


def dark_bars_on_texture(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``do_no_harm``'s textured photo (300x400) with dark bars four, five and six pixels tall across
    it and one five pixels wide crossing two of them, and their exact mask."""
    harm = load_benchmark("do_no_harm")
    photo = harm.textured_photo(300, 400, seed)
    mask = np.zeros((300, 400), bool)
    mask[40:44, 30:370] = True
    mask[120:125, 30:370] = True
    mask[200:206, 30:370] = True
    mask[60:220, 300:305] = True
    photo[mask] = 20
    return photo, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_an_exact_mask_of_dark_bars_is_sharp_and_the_same_mask_two_rows_off_is_not(seed: int) -> None:
    photo, mask = dark_bars_on_texture(seed)
    on_line, off_line = sharp_lines(photo, mask)
    np.testing.assert_array_equal(on_line, mask)  # the bars read 12-19
    assert not off_line.any()
    for rows in (2, -2):
        on_shifted, off_shifted = sharp_lines(photo, np.roll(mask, rows, axis=0))
        assert not on_shifted.any() and not off_shifted.any()


def test_a_blurred_photo_s_lines_are_not_sharp() -> None:
    """A network's or an antialiased photo's edge spreads over a few pixels: no rule of this level."""
    photo, mask = dark_bars_on_texture(0)
    on_line, _ = sharp_lines(cv2.GaussianBlur(photo, (0, 0), 1.5), mask)
    assert not on_line.any()


def test_keep_given_lines_keeps_sharp_lines_only_with_the_photo() -> None:
    photo, mask = dark_bars_on_texture(0)
    given = mask.astype(np.float32)
    erased = np.zeros_like(given)  # a refinement that erased every line
    without, none = keep_given_lines(erased, given)
    assert none == 0 and not without.any()
    kept, restored = keep_given_lines(erased, given, image=photo)
    on_line, _ = sharp_lines(photo, mask)
    assert restored == np.count_nonzero(on_line)
    np.testing.assert_array_equal(kept > 0.5, on_line)
    # The same bars as the background's lines (gaps in a mask of everything else) are kept open alike.
    slabs = ~mask
    filled = np.ones_like(given)
    _, gap_restored = keep_given_lines(filled, slabs.astype(np.float32), image=photo)
    assert gap_restored == restored


def test_the_shipped_weights_keep_lines_four_pixels_wide_at_2k(monkeypatch: pytest.MonkeyPatch) -> None:
    """``do_no_harm``'s lines four pixels wide at 2048x1536: the weights erase 5,019 of their pixels
    (IoU 0.80) where the rule is off; with it they erase 294 (0.988), of a line that reads 6.88."""
    from crm_cli import Refiner, engine

    case = load_benchmark("do_no_harm").lines_case(1536, 2048, 4, seed=4)
    refiner = Refiner(device="cpu")
    kept = score_pair((refiner.refine(case.photo, case.mask) * 255).round().astype(np.uint8), case.mask)
    assert kept.iou >= 0.985

    def without_the_photo(*args: object, image: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        return keep_given_lines(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "keep_given_lines", without_the_photo)
    erased = score_pair((refiner.refine(case.photo, case.mask) * 255).round().astype(np.uint8), case.mask)
    assert erased.iou < 0.85
