"""Work done on the box of a small object (session 64): the same values as the whole map's work.

A small object on a large photo (one id of a label map at 4K) is resampled, banded, guarded and
searched for lines on its box alone. Each boxed path is checked here against the same function run
on the whole map (the box switched off), on random small objects, and each test checks that the
boxed path did run.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from crm_cli import boxes, guard, labels, resampling, roi, schedule
from crm_cli.boxes import either_box, grown_box, nonzero_box, worth_boxing
from crm_cli.stage_geometry import STAGE_PAD

NEVER = 1 << 62  # a MIN_BOXED_ELEMENTS no map reaches: the whole map's path


# ----------------------------------------------------------------------------- boxes by hand


def test_nonzero_box_by_hand() -> None:
    values = np.zeros((6, 9), np.float32)
    assert nonzero_box(values) is None
    values[2, 3] = 0.25
    values[4, 7] = 1.0
    assert nonzero_box(values) == (slice(2, 5), slice(3, 8))
    flags = np.zeros((4, 4), bool)
    flags[0, 3] = True
    assert nonzero_box(flags) == (slice(0, 1), slice(3, 4))


def test_grown_box_stops_at_the_map_and_either_box_joins() -> None:
    box = (slice(2, 5), slice(3, 8))
    assert grown_box(box, 2, (6, 9)) == (slice(0, 6), slice(1, 9))
    assert grown_box(box, 0, (6, 9)) == box
    first = np.zeros((6, 9), bool)
    second = np.zeros((6, 9), bool)
    assert either_box(first, second) is None
    first[1, 1] = True
    second[4, 6] = True
    assert either_box(first, second) == (slice(1, 5), slice(1, 7))
    assert either_box(first, np.zeros((6, 9))) == (slice(1, 2), slice(1, 2))


def test_worth_boxing_at_half_the_map() -> None:
    assert worth_boxing((slice(0, 5), slice(0, 10)), (10, 10))  # 50 of 100
    assert worth_boxing((slice(0, 5), slice(0, 11)), (10, 11))  # 55 of 110: half too
    assert not worth_boxing((slice(0, 6), slice(0, 10)), (10, 10))


# ----------------------------------------------------------------------------- random small objects


def small_object(rng: np.random.Generator, shape: tuple[int, int], soft: bool = True) -> np.ndarray:
    """A float32 map that is zero outside a random box of at most a third of each side."""
    height, width = shape
    values = np.zeros(shape, np.float32)
    box_h, box_w = rng.integers(1, max(2, height // 3)), rng.integers(1, max(2, width // 3))
    top, left = rng.integers(0, height - box_h + 1), rng.integers(0, width - box_w + 1)
    patch = rng.random((box_h, box_w)).astype(np.float32)
    values[top:top + box_h, left:left + box_w] = patch if soft else (patch > 0.4)
    return values


class Spy:
    """Counts the calls of a boxed helper that returned a result (the box was used)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        self.used = 0
        original = getattr(module, name)

        def spied(*args: object, **kwargs: object) -> object:
            result = original(*args, **kwargs)
            self.used += result is not None
            return result

        monkeypatch.setattr(module, name, spied)


@pytest.mark.parametrize("factors", [(0.5, 0.5), (0.25, 0.25), (2.0, 2.0), (0.37, 0.5), (1.5, 0.7), (1.0, 0.5),
                                     (2.0, 1.0)])
def test_resize_on_the_box_equals_the_whole_map(monkeypatch: pytest.MonkeyPatch, factors: tuple[float, float]) -> None:
    rng = np.random.default_rng(int(factors[0] * 100 + factors[1] * 10))
    spy = Spy(monkeypatch, resampling, "_resample_held")
    for _ in range(40):
        shape = (int(rng.integers(40, 300)), int(rng.integers(40, 300)))
        values = small_object(rng, shape, soft=bool(rng.integers(0, 2)))
        size = (max(1, round(shape[0] * factors[0])), max(1, round(shape[1] * factors[1])))
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
        boxed = resampling.resize_probability(values, size)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
        whole = resampling.resize_probability(values, size)
        assert boxed.dtype == np.float32 and boxed.shape == size
        np.testing.assert_array_equal(boxed, whole)
    assert spy.used >= 30


def test_resize_of_a_zero_map_and_of_a_lone_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
    zeros = resampling.resize_probability(np.zeros((50, 60), np.float32), (25, 30))
    assert zeros.shape == (25, 30) and not zeros.any()
    lone = np.zeros((8, 8), np.float32)
    lone[2, 2] = 1.0
    # Doubling: output 4 reads source 1 and 2 at 0.25 / 0.75 (torch's bilinear), output 5 reads 2 and 3 at
    # 0.75 / 0.25; along both axes the pixel spreads over outputs 3-6 with weights 0.25, 0.75, 0.75, 0.25.
    enlarged = resampling.resize_probability(lone, (16, 16))
    spread = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    expected = np.zeros((16, 16), np.float32)
    expected[3:7, 3:7] = np.outer(spread, spread)
    np.testing.assert_allclose(enlarged, expected, atol=1e-7)


def test_band_on_the_box_equals_the_whole_map(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    boxed_runs = 0
    for _ in range(120):
        shape = (int(rng.integers(30, 260)), int(rng.integers(30, 260)))
        prob = small_object(rng, shape, soft=bool(rng.integers(0, 2)))
        if rng.random() < 0.3:
            prob[prob > 0] = rng.choice([1.0, 0.97, 0.015])  # hard, nearly sure, or below ROI_LOW
        radius = int(rng.integers(0, 9))
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
        boxed = roi.roi_band_array(prob, radius)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
        whole = roi.roi_band_array(prob, radius)
        np.testing.assert_array_equal(boxed, whole)
        boxed_runs += worth_boxing(grown_box(nonzero_box(prob), radius + 2, shape), shape)
    assert boxed_runs >= 60


def naive_band_to_stage(band: np.ndarray, stage_hw: tuple[int, int], padded_hw: tuple[int, int]) -> np.ndarray:
    """A stage cell holds the band when its block of band pixels does, then 4 px of Chebyshev growth."""
    steps = (band.shape[0] // stage_hw[0], band.shape[1] // stage_hw[1])
    small = np.zeros(stage_hw, bool)
    for i in range(stage_hw[0]):
        for j in range(stage_hw[1]):
            small[i, j] = band[i * steps[0]:(i + 1) * steps[0], j * steps[1]:(j + 1) * steps[1]].any()
    padded = np.zeros(padded_hw, bool)
    padded[STAGE_PAD:STAGE_PAD + stage_hw[0], STAGE_PAD:STAGE_PAD + stage_hw[1]] = small
    grown = np.zeros_like(padded)
    for y, x in zip(*np.nonzero(padded), strict=True):
        grown[max(0, y - 4):y + 5, max(0, x - 4):x + 5] = True
    return grown


@pytest.mark.parametrize("steps", [(1, 1), (2, 2), (3, 2), (4, 4)])
def test_band_onto_its_stage_on_the_box(monkeypatch: pytest.MonkeyPatch, steps: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(steps))
    spy = Spy(monkeypatch, roi, "_boxed_band_to_stage")
    for _ in range(25):
        stage_hw = (int(rng.integers(20, 90)), int(rng.integers(20, 90)))
        band = small_object(rng, (stage_hw[0] * steps[0], stage_hw[1] * steps[1])) > 0.7
        padded_hw = (stage_hw[0] + 2 * STAGE_PAD + 16, stage_hw[1] + 2 * STAGE_PAD + 16)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
        boxed = roi.band_to_stage_array(band, stage_hw, padded_hw, STAGE_PAD)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
        whole = roi.band_to_stage_array(band, stage_hw, padded_hw, STAGE_PAD)
        np.testing.assert_array_equal(boxed, whole)
        np.testing.assert_array_equal(boxed, naive_band_to_stage(band, stage_hw, padded_hw))
    assert spy.used >= 15


def test_a_band_not_a_whole_multiple_of_its_stage_is_not_boxed() -> None:
    band = np.zeros((300, 301), bool)
    band[10, 10] = True
    assert roi._boxed_band_to_stage(band, (150, 150), (256, 256), STAGE_PAD) is None
    assert roi._whole_multiples((300, 300), (150, 100)) == (2, 3)
    assert roi._whole_multiples((300, 301), (150, 150)) is None


def test_guard_on_the_box_equals_the_whole_map(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(21)
    spy = Spy(monkeypatch, guard, "_guarded")
    boxed_runs = 0
    for _ in range(80):
        shape = (int(rng.integers(40, 260)), int(rng.integers(40, 260)))
        side = small_object(rng, shape, soft=False) > 0
        prob = np.roll(small_object(rng, shape), int(rng.integers(-3, 4)), axis=0)
        prob[side & (rng.random(shape) < 0.5)] = 0.9
        free_px = float(rng.choice([0.0, 0.5, 2.0, 3.7, 9.0]))
        base = rng.random(shape).astype(np.float32) if rng.random() < 0.3 else float(rng.choice([0.0, 0.4]))
        strength = float(rng.choice([guard.GUARD_STRENGTH, 2.0]))
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
        before = spy.used
        boxed, boxed_restored = guard.apply_guard(prob, side, free_px, strength, base)
        boxed_runs += spy.used - before == 1 and prob.size > 0
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
        whole, whole_restored = guard.apply_guard(prob, side, free_px, strength, base)
        # OpenCV's precise distance transform itself differs by an ulp now and then between processes
        # (50.01 / 50.010002 on the same input), on the whole map as on a box: hence the tolerance.
        np.testing.assert_allclose(boxed, whole, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(boxed > 0.5, whole > 0.5)
        np.testing.assert_array_equal(boxed == 0, whole == 0)
        assert boxed_restored == whole_restored
    assert boxed_runs >= 40


def drawn_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Rectangles, lines one to six pixels wide and gaps as wide, around one point (some cut by the edge)."""
    height, width = shape
    mask = np.zeros(shape, np.uint8)
    cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
    for _ in range(int(rng.integers(1, 6))):
        ends = [(int(cx + rng.integers(-50, 50)), int(cy + rng.integers(-50, 50))) for _ in range(2)]
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.rectangle(mask, ends[0], ends[1], 1, -1)
        else:
            cv2.line(mask, ends[0], ends[1], int(kind == 1), int(rng.integers(1, 7)))
    return mask > 0


def test_given_lines_on_the_box_equal_the_whole_map(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(31)
    kept_somewhere = 0
    for _ in range(60):
        shape = (int(rng.integers(150, 320)), int(rng.integers(150, 320)))
        foreground = drawn_mask(rng, shape)
        given = foreground.astype(np.float32)
        prob = cv2.GaussianBlur(given, (0, 0), float(rng.choice([0.8, 2.5])))
        image = (foreground[..., None] * rng.integers(30, 200) + rng.integers(0, 20, shape + (3,))).astype(np.uint8)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
        boxed, boxed_restored = guard.keep_given_lines(prob, given, foreground, image=image)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
        whole, whole_restored = guard.keep_given_lines(prob, given, foreground, image=image)
        np.testing.assert_array_equal(boxed, whole)
        assert boxed_restored == whole_restored
        kept_somewhere += boxed_restored > 0
    assert kept_somewhere >= 5  # lines the blur had erased came back, on the box as on the whole


def test_a_line_near_the_box_edge_is_kept_on_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-pixel line at the far end of the given foreground's box, the photo 500x500 (boxed)."""
    foreground = np.zeros((500, 500), bool)
    foreground[200:260, 200:260] = True
    foreground[100, 150:400] = True  # 250 px of lone pixels: a line (LINE_MIN_PIXELS 64)
    given = foreground.astype(np.float32)
    prob = given.copy()
    prob[100] = 0.1  # the model erased it
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
    out, restored = guard.keep_given_lines(prob, given, foreground)
    assert restored == 250
    assert (out[100, 150:400] == 1.0).all()
    np.testing.assert_array_equal(out[101:], prob[101:])


def naive_detail_loss(mask: np.ndarray, radius: int) -> float:
    """detail_loss's rule on the whole mask, its edge from the four neighbours pixel by pixel."""
    m = mask.astype(np.uint8)
    height, width = m.shape
    perimeter = 0
    for y in range(height):
        for x in range(width):
            if m[y, x] and any(0 <= y + dy < height and 0 <= x + dx < width and not m[y + dy, x + dx]
                               for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))):
                perimeter += 1
    if radius <= 0 or perimeter == 0:
        return 0.0
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    opened = cv2.morphologyEx(m, cv2.MORPH_OPEN, kernel, borderType=cv2.BORDER_REPLICATE)
    closed = cv2.morphologyEx(m, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    return (np.count_nonzero(opened != m) + np.count_nonzero(closed != m)) / perimeter


@pytest.mark.parametrize("boxed", [True, False])
def test_detail_loss_by_hand_and_against_the_whole_mask(monkeypatch: pytest.MonkeyPatch, boxed: bool) -> None:
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1 if boxed else NEVER)
    mask = np.zeros((40, 60), bool)
    mask[10:20, 10:30] = True  # perimeter 2 * 20 + 2 * 8 = 56 pixels
    mask[25, 10:30] = True  # a one-pixel line of 20: its own edge, gone in the opening by 3x3
    assert schedule.detail_loss(mask, 1) == pytest.approx(20 / 76)
    rng = np.random.default_rng(41)
    for _ in range(15):
        shape = (int(rng.integers(20, 70)), int(rng.integers(20, 70)))
        drawn = drawn_mask(rng, shape)
        radius = int(rng.integers(0, 5))
        assert schedule.detail_loss(drawn, radius) == pytest.approx(naive_detail_loss(drawn, radius), abs=0)


class ZeroOutside:
    """A refiner whose probability is a blur of the coarse mask: zero away from each id's object."""

    def refine(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        values = (mask > 127).astype(np.float32)
        return np.clip(cv2.blur(values, (5, 5)) * 1.2, 0.0, 1.0)


@pytest.mark.parametrize("boxed", [True, False])
def test_label_recombination_on_each_ids_box(monkeypatch: pytest.MonkeyPatch, boxed: bool) -> None:
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1 if boxed else NEVER)
    rng = np.random.default_rng(51)
    label_map = np.zeros((120, 160), np.uint8)
    for label in (3, 5, 9):
        y, x = rng.integers(0, 100), rng.integers(0, 140)
        label_map[y:y + 30, x:x + 30] = label
    image = np.zeros((120, 160, 3), np.uint8)
    refiner = ZeroOutside()
    out = labels.refine_labels(refiner, image, label_map)
    # The same recombination, written out on the whole map.
    best_prob = np.zeros(label_map.shape, np.float32)
    best_label = np.zeros(label_map.shape, np.uint8)
    for label in (3, 5, 9):
        prob = refiner.refine(image, (label_map == label).astype(np.uint8) * 255)
        better = prob > best_prob
        best_prob[better] = prob[better]
        best_label[better] = label
    best_label[best_prob < labels.FOREGROUND_MIN] = 0
    np.testing.assert_array_equal(out, best_label)
    assert set(np.unique(out)) == {0, 3, 5, 9}


def test_free_near_on_the_box_equals_the_whole_map(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(61)
    boxed_runs = 0
    for _ in range(60):
        shape = (int(rng.integers(40, 300)), int(rng.integers(40, 300)))
        region = small_object(rng, shape) > 0.6
        free_px = float(rng.choice([0.0, 1.0, 2.5, 7.3, 16.0]))
        base = float(rng.choice([0.0, 0.35, 1.0]))
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
        boxed = guard.free_near(region, free_px, base)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
        whole = guard.free_near(region, free_px, base)
        assert boxed.dtype == whole.dtype == np.float32
        np.testing.assert_array_equal(boxed, whole)
        box = nonzero_box(region)
        boxed_runs += box is not None and worth_boxing(grown_box(box, int(np.ceil(free_px / 0.95)) + 2, shape), shape)
    assert boxed_runs >= 25


def test_free_near_by_hand() -> None:
    region = np.zeros((9, 9), bool)
    region[4, 4] = True
    near = guard.free_near(region, 1.0, 0.5)
    # OpenCV's 3x3 L2 steps: 0.955 to the four neighbours (within 1), 1.3693 to the diagonals (not).
    expected = np.full((9, 9), 0.5, np.float32)
    expected[4, 4] = expected[3, 4] = expected[5, 4] = expected[4, 3] = expected[4, 5] = 0.0
    np.testing.assert_array_equal(near, expected)


def test_region_changes_on_the_box_equal_the_whole_map(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(71)
    found = 0
    for _ in range(60):
        shape = (int(rng.integers(60, 300)), int(rng.integers(60, 300)))
        coarse = drawn_mask(rng, shape)
        proposal = coarse.copy()
        for _ in range(int(rng.integers(1, 4))):  # blobs added or cut out, some large enough for the disc
            y, x = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
            cv2.circle(proposal.view(np.uint8), (x, y), int(rng.integers(1, 14)), int(rng.integers(0, 2)), -1)
        radius = int(rng.integers(0, 6))
        attached = float(rng.choice([1.0, 0.6]))
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
        boxed = guard.region_changes(proposal, coarse, radius, attached)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
        whole = guard.region_changes(proposal, coarse, radius, attached)
        np.testing.assert_array_equal(boxed, whole)
        found += bool(whole.any())
    assert found >= 15
