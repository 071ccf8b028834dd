"""The guard's distances are exact: a one-ulp error of OpenCV's precise transform changes no value.

Session 64 saw ``cv2.distanceTransform(..., DIST_MASK_PRECISE)`` return 50.010002 for the root of 2501
in about one process in ten, so the guard's pulled values differed in their last bit between runs.
These tests inject such errors and check that nothing downstream moves.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from crm_cli import guard
from crm_cli.guard import apply_guard, exact_distances, keep_precise_boundary, within_distance


def ulp_off(values: np.ndarray, seed: int) -> np.ndarray:
    """``values`` with about half of them moved one float32 ulp up or down."""
    rng = np.random.default_rng(seed)
    direction = rng.choice([-np.inf, np.inf], size=values.shape).astype(np.float32)
    moved = np.nextafter(values, direction).astype(np.float32)
    return np.where(rng.random(values.shape) < 0.5, moved, values)


def inject_ulp_errors(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """From here on, guard's OpenCV distance transform errs by one ulp on about half its finite distances."""
    exact = cv2.distanceTransform
    calls = iter(range(seed * 1000, seed * 1000 + 1000))

    def noisy(*args: object, **kwargs: object) -> np.ndarray:
        values = exact(*args, **kwargs)
        finite = values < 1e6  # a single-sided map's "no boundary" value is left as it is
        return np.where(finite, ulp_off(values, next(calls)), values)

    monkeypatch.setattr(guard.cv2, "distanceTransform", noisy)


def test_exact_distances_by_hand() -> None:
    root_2501 = np.float32(np.sqrt(2501.0))
    values = np.array([50.010002, np.nextafter(root_2501, np.float32(0)), 2.0000002, 1.9999999,
                       np.nextafter(np.float32(np.sqrt(2.0)), np.float32(9)), 0.0], np.float32)
    expected = np.array([root_2501, root_2501, 2.0, 2.0, np.float32(np.sqrt(2.0)), 0.0], np.float32)
    exact = exact_distances(values)
    assert exact.dtype == np.float32
    assert exact.tobytes() == expected.tobytes()
    # A single-sided map's huge distance stays huge.
    assert exact_distances(np.array([2.0 ** 64], np.float32))[0] == np.float32(2.0 ** 64)


def test_exact_distances_for_every_whole_square_up_to_1024_px() -> None:
    squares = np.arange(1 << 20, dtype=np.float64)
    roots = np.sqrt(squares).astype(np.float32)  # correctly rounded: what an exact transform returns
    for values in (roots, np.nextafter(roots, np.float32(0)), np.nextafter(roots, np.float32(1e9))):
        assert exact_distances(values.astype(np.float32)).tobytes() == roots.tobytes()


def test_within_distance_by_hand() -> None:
    two_up = np.nextafter(np.float32(2.0), np.float32(3.0))
    distances = np.array([1.0, np.sqrt(2.0), 2.0, two_up, np.sqrt(5.0), np.sqrt(8.0)], np.float32)
    assert within_distance(distances, 2.0).tolist() == [True, True, True, True, False, False]
    # 2.45 squared is 6.0025: the root of 6 (2.449) lies within, the root of 8 not.
    assert within_distance(np.array([np.sqrt(6.0), np.sqrt(8.0)], np.float32), 2.45).tolist() == [True, False]
    assert within_distance(distances, 0.0).tolist() == [False] * 6
    assert within_distance(distances, -1.0).tolist() == [False] * 6


def _disagreeing_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A disc as the coarse side and a probability that disagrees with it over a wide ring."""
    rng = np.random.default_rng(seed)
    side = np.zeros((90, 110), np.uint8)
    cv2.circle(side, (55, 45), 30, 1, -1)
    prob = np.zeros((90, 110), np.float32)
    cv2.circle(prob, (57, 44), 38, 1.0, -1)
    prob = np.clip(prob * rng.uniform(0.6, 1.0, prob.shape) + rng.uniform(0, 0.3, prob.shape), 0, 1)
    return prob.astype(np.float32), side.astype(bool)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_guard_gives_the_same_values_under_ulp_errors(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    prob, side = _disagreeing_pair(seed)
    clean, clean_restored = apply_guard(prob, side, 4.0)
    inject_ulp_errors(monkeypatch, seed)
    noisy, noisy_restored = apply_guard(prob, side, 4.0)
    assert noisy_restored == clean_restored
    assert noisy.tobytes() == clean.tobytes()
    # The guard did pull values by distance here (the test is not vacuous).
    assert np.count_nonzero(clean != prob) > 100


def test_the_precise_boundary_band_is_the_same_under_ulp_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    side = np.zeros((40, 50), bool)
    side[10:30, 12:40] = True
    prob = np.zeros((40, 50), np.float32)
    prob[11:31, 12:41] = 0.9  # moved by one pixel: below the minimum shift
    coarse_values = side.astype(np.float32)
    inject_ulp_errors(monkeypatch, 7)
    out, _, kept, _ = keep_precise_boundary(prob, side, coarse_values, min_shift=5.0, band_px=2.0)
    assert kept
    # The band is every pixel within 2 px (distances 1, the root of 2, and 2) of the other side.
    rows, columns = np.indices(side.shape)
    outside_rows, outside_columns = np.nonzero(~side)
    inside_rows, inside_columns = np.nonzero(side)
    band = np.zeros(side.shape, bool)
    for row, column in zip(rows.ravel(), columns.ravel(), strict=True):
        other_rows, other_columns = (
            (outside_rows, outside_columns) if side[row, column] else (inside_rows, inside_columns))
        band[row, column] = ((other_rows - row) ** 2 + (other_columns - column) ** 2).min() <= 4
    assert np.array_equal(out[band], coarse_values[band])
    assert np.array_equal(out[~band], prob[~band])
