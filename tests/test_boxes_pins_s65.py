"""Session 65's mutation review of the boxed paths: pins for the mutants the other tests let through.

Each test names the mutant it pins (see the review's report). The boxed path is compared with the whole
map's (``MIN_BOXED_ELEMENTS`` at 1 and out of reach), or with values worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from crm_cli import boxes, guard, labels
from crm_cli.guard import within_distance

NEVER = 1 << 62  # a MIN_BOXED_ELEMENTS no map reaches: the whole map's path


def test_free_near_reaches_far_on_the_box(monkeypatch: pytest.MonkeyPatch) -> None:
    """G2: free_near's margin must divide free_px by OpenCV's 0.955 axis step (80 px reach 83 px along an axis)."""
    region = np.zeros((260, 260), bool)
    region[130, 130] = True
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
    boxed = guard.free_near(region, 80.0, 0.5)
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
    whole = guard.free_near(region, 80.0, 0.5)
    np.testing.assert_array_equal(boxed, whole)
    # 83 steps of 0.955 are 79.27 px: within 80; 84 steps (80.22 px) are not.
    assert boxed[130, 130 + 83] == 0.0 and boxed[130 - 83, 130] == 0.0
    assert boxed[130, 130 + 84] == np.float32(0.5)


@pytest.mark.parametrize("boxed", [True, False])
def test_region_changes_where_only_the_coarse_mask_is_set(monkeypatch: pytest.MonkeyPatch, boxed: bool) -> None:
    """G12: region_changes's box must hold the coarse mask too, not the proposal alone."""
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1 if boxed else NEVER)
    coarse = np.zeros((80, 90), bool)
    coarse[50:62, 60:75] = True  # erased by the proposal: a whole region of change
    proposal = np.zeros((80, 90), bool)
    assert np.array_equal(guard.region_changes(proposal, coarse, 2), coarse)
    proposal[5:9, 5:9] = True  # and a small blob elsewhere, too thin for the disc of radius 3
    np.testing.assert_array_equal(guard.region_changes(proposal, coarse, 3), coarse)


def test_within_distance_at_zero() -> None:
    """G19: a limit of 0 holds a distance of 0 (distance <= limit); only a negative limit holds nothing."""
    assert within_distance(np.array([0.0, 1.0], np.float32), 0.0).tolist() == [True, False]


def test_within_distance_floors_the_limits_square() -> None:
    """G20: 2.2 px squared is 4.84: the root of 5 (2.236) lies beyond it, the root of 4 within."""
    distances = np.array([2.0, np.sqrt(5.0)], np.float32)
    assert within_distance(distances, 2.2).tolist() == [True, False]


def test_within_distance_is_strict_at_its_threshold() -> None:
    """G21: near 2048 px the next whole square's root rounds onto the threshold: it must stay outside."""
    n = 4197257  # 139**2 + 2044**2; n + 1 = 153**2 + 2043**2
    limit = float(np.sqrt(n + 0.25))
    inside, outside = np.float32(np.sqrt(float(n))), np.float32(np.sqrt(n + 1.0))
    assert outside == np.float32(np.sqrt(n + 0.5))  # the case the strict comparison decides
    assert within_distance(np.array([inside, outside], np.float32), limit).tolist() == [True, False]


def test_within_distance_keeps_an_ulp_low_next_square_outside() -> None:
    """G22: the threshold sits halfway in squares: the root of 863**2 + 1 one ulp low is still beyond 863 px."""
    next_root = np.float32(np.sqrt(863.0 ** 2 + 1.0))
    low = np.nextafter(next_root, np.float32(0.0))
    distances = np.array([863.0, np.nextafter(np.float32(863.0), np.float32(1e9)), low, next_root], np.float32)
    assert within_distance(distances, 863.0).tolist() == [True, True, False, False]


class SameEverywhere:
    """A refiner whose probability is 0.8 on each id's object grown by two pixels: ties where they meet."""

    def refine(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        held = mask > 127
        grown = np.zeros_like(held)
        rows, columns = np.nonzero(held)
        grown[max(0, rows.min() - 2):rows.max() + 3, max(0, columns.min() - 2):columns.max() + 3] = True
        return np.where(grown, np.float32(0.8), np.float32(0.0))


@pytest.mark.parametrize("boxed", [True, False])
def test_label_ties_go_to_the_lower_id(monkeypatch: pytest.MonkeyPatch, boxed: bool) -> None:
    """L2: an exact tie between two ids' probabilities goes to the lower id ('>' over ascending ids)."""
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1 if boxed else NEVER)
    label_map = np.zeros((40, 50), np.uint8)
    label_map[10:20, 10:20] = 7
    label_map[10:20, 22:32] = 4  # two columns of background between them, both ids' at 0.8
    out = labels.refine_labels(SameEverywhere(), np.zeros((40, 50, 3), np.uint8), label_map)
    assert (out[10:20, 20:22] == 4).all()  # the tie: the lower id
    assert (out[10:20, 8:20] == 7).all()  # 4's grown box starts at column 20
    assert (out[10:20, 32:34] == 4).all() and out[30, 40] == 0
