"""engine.resize_map: each axis resized on its own, area average where it shrinks, bilinear where it grows.

Session 64's review found the mode chosen by the height alone: a map shrinking only in width was
sampled bilinearly (one column of three at 3:1) instead of averaged.
"""

from __future__ import annotations

import numpy as np
import pytest

from crm_cli.engine import resize_map


def naive_block_mean(values: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Mean of each run of ``factor`` cells along ``axis`` (an integer shrink, by hand)."""
    moved = np.moveaxis(values, axis, 0)
    means = moved.reshape(moved.shape[0] // factor, factor, *moved.shape[1:]).mean(axis=1)
    return np.moveaxis(means, 0, axis)


def naive_bilinear_axis(values: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation along ``axis`` with pixel centres at i + 0.5, clamped at the ends."""
    moved = np.moveaxis(values.astype(np.float64), axis, 0)
    count = moved.shape[0]
    rows = []
    for target in range(size):
        source = min(max((target + 0.5) * count / size - 0.5, 0.0), count - 1)
        low = int(np.floor(source))
        high = min(low + 1, count - 1)
        weight = source - low
        rows.append((1 - weight) * moved[low] + weight * moved[high])
    return np.moveaxis(np.stack(rows), 0, axis)


def test_a_map_shrinking_only_in_width_is_averaged() -> None:
    stripes = np.tile(np.array([0, 1, 0, 1, 0, 1], np.float32), (4, 1))  # 4 x 6
    shrunk = resize_map(stripes, (4, 2))
    # Columns 0-2 hold 0, 1, 0 and columns 3-5 hold 1, 0, 1: the means are 1/3 and 2/3.
    np.testing.assert_allclose(shrunk, [[1 / 3, 2 / 3]] * 4, atol=1e-6)


def test_a_map_shrinking_only_in_height_is_averaged() -> None:
    stripes = np.tile(np.array([[0], [1], [0], [1], [0], [1]], np.float32), (1, 4))  # 6 x 4
    np.testing.assert_allclose(resize_map(stripes, (2, 4)), [[1 / 3] * 4, [2 / 3] * 4], atol=1e-6)


@pytest.mark.parametrize("shrink_axis", [0, 1])
def test_mixed_resize_averages_one_axis_and_interpolates_the_other(shrink_axis: int) -> None:
    values = np.random.default_rng(7).random((12, 5)).astype(np.float32)
    if shrink_axis == 1:
        values = values.T.copy()  # 5 x 12
    grow_axis = 1 - shrink_axis
    size = [0, 0]
    size[shrink_axis] = values.shape[shrink_axis] // 3
    size[grow_axis] = 8
    expected = naive_bilinear_axis(naive_block_mean(values, shrink_axis, 3), grow_axis, 8)
    resized = resize_map(values, (size[0], size[1]))
    assert resized.shape == tuple(size) and resized.dtype == np.float32
    np.testing.assert_allclose(resized, expected, atol=1e-5)


def test_both_axes_shrinking_average_blocks() -> None:
    values = np.random.default_rng(3).random((9, 6)).astype(np.float32)
    expected = naive_block_mean(naive_block_mean(values, 0, 3), 1, 2)
    np.testing.assert_allclose(resize_map(values, (3, 3)), expected, atol=1e-6)


def test_both_axes_growing_interpolate() -> None:
    values = np.random.default_rng(5).random((3, 4)).astype(np.float32)
    expected = naive_bilinear_axis(naive_bilinear_axis(values, 0, 7), 1, 10)
    np.testing.assert_allclose(resize_map(values, (7, 10)), expected, atol=1e-5)


def test_the_same_size_is_a_float32_copy() -> None:
    mask = np.eye(3, dtype=bool)
    same = resize_map(mask, (3, 3))
    assert same.dtype == np.float32 and same.tolist() == np.eye(3).tolist()
    values = np.ones((2, 2), np.float32)
    assert resize_map(values, (2, 2)) is not values


def test_a_stage_photo_growing_in_height_and_shrinking_in_width_averages_the_width() -> None:
    """resampling.stage_photo chose its filter by the height too (session 62's note): columns were sampled."""
    from crm_cli.resampling import stage_photo

    columns = np.array([0, 90, 30, 120, 60, 210], np.uint8)
    photo = np.repeat(np.tile(columns, (4, 1))[:, :, None], 3, axis=2)  # 4 x 6 x 3, constant down each column
    staged = stage_photo(photo, (6, 2))
    assert staged.shape == (6, 2, 3) and staged.dtype == np.uint8
    # (0 + 90 + 30) / 3 = 40 and (120 + 60 + 210) / 3 = 130 on every row and channel.
    assert (staged[..., 0] == [40, 130]).all() and (staged == staged[..., :1]).all()


def test_area_or_linear_matches_the_naive_reference_per_channel() -> None:
    from crm_cli.resampling import area_or_linear

    values = np.random.default_rng(11).random((4, 9, 3)).astype(np.float32)
    resized = area_or_linear(values, (7, 3))
    for channel in range(3):
        expected = naive_bilinear_axis(naive_block_mean(values[..., channel], 1, 3), 0, 7)
        np.testing.assert_allclose(resized[..., channel], expected, atol=1e-5)


def test_a_stage_photo_at_its_own_size_is_the_photo_itself() -> None:
    from crm_cli.resampling import stage_photo

    photo = np.zeros((5, 7, 3), np.uint8)
    assert stage_photo(photo, (5, 7)) is photo
