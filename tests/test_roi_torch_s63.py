"""Session 63: the torch ROI maps a GPU builds (max-pool dilation, the band's map onto its stage) run
in CPU tests, and the band's map takes the NumPy path's nearest indices, so a GPU encodes the same
tiles as the CPU. torch's own "nearest" works out its scale in float32 and picked another source
index for 752 size pairs under 60 -> 400."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crm_cli.roi import (
    _band,
    _band_to_stage_tensor,
    _nearest_indices,
    _pooled_dilation,
    band_to_stage_array,
    dilate_array,
    roi_band_array,
)
from crm_cli.stage_geometry import STAGE_PAD


def padded_size(n_stage: int) -> int:
    """A stage side padded by STAGE_PAD on both ends and up to a multiple of 16 (the encoder's input)."""
    padded = n_stage + 2 * STAGE_PAD
    return padded + (-padded) % 16


def test_nearest_indices_by_hand() -> None:
    """floor(i n_in / n_out), clipped: 2 -> 82 takes index 1 from output 41 on (41 x 2 / 82 = 1 exactly)."""
    indices = _nearest_indices(82, 2)
    assert indices[40] == 0 and indices[41] == 1 and indices[-1] == 1
    np.testing.assert_array_equal(_nearest_indices(6, 4), [0, 0, 1, 2, 2, 3])


@pytest.mark.parametrize("radius", [0, 1, 2, 4, 7])
def test_pooled_dilation_equals_opencvs(radius: int) -> None:
    """The GPU's max-pool dilation and the CPU's OpenCV one agree, at the map's edges too."""
    rng = np.random.default_rng(radius)
    mask = rng.random((37, 52)) > 0.97
    mask[0, 0] = mask[-1, 25] = mask[10, -1] = True  # pixels on the border
    got = _pooled_dilation(torch.from_numpy(mask), radius).numpy()
    np.testing.assert_array_equal(got, dilate_array(mask, radius))


def test_torch_band_rule_equals_the_arrays() -> None:
    """roi_band's GPU way (the band rule through max-pool dilation) equals roi_band_array."""
    rng = np.random.default_rng(3)
    prob = np.clip(rng.normal(0.5, 0.6, (45, 61)), 0, 1).astype(np.float32)
    prob[prob > 0.6] = 1.0
    prob[prob < 0.4] = 0.0
    for radius in (0, 2, 5):
        got = _band(torch.from_numpy(prob), radius, _pooled_dilation).numpy()
        np.testing.assert_array_equal(got, roi_band_array(prob, radius))


@pytest.mark.parametrize(("band_hw", "stage_hw"), [((2, 2), (82, 94)), ((7, 3), (287, 110)), ((30, 7), (40, 343))])
def test_an_enlarged_band_lands_where_the_cpu_puts_it(band_hw, stage_hw) -> None:  # noqa: ANN001
    """Sizes where torch's float32 nearest picks other rows or columns: the GPU way now equals the CPU's."""
    padded_hw = (padded_size(stage_hw[0]), padded_size(stage_hw[1]))
    torch_nearest = [F.interpolate(torch.arange(n_in, dtype=torch.float32)[None, None, :, None], size=(n_out, 1),
                                   mode="nearest")[0, 0, :, 0].long().numpy()
                     for n_in, n_out in zip(band_hw, stage_hw, strict=True)]
    assert any(not np.array_equal(t, _nearest_indices(n_out, n_in))  # the case is one that differed
               for t, n_in, n_out in zip(torch_nearest, band_hw, stage_hw, strict=True))
    rng = np.random.default_rng(sum(stage_hw))
    for _ in range(20):
        band = np.zeros(band_hw, bool)
        band[rng.integers(0, band_hw[0]), rng.integers(0, band_hw[1])] = True
        band |= rng.random(band_hw) > 0.8
        expected = band_to_stage_array(band, stage_hw, padded_hw, STAGE_PAD)
        got = _band_to_stage_tensor(torch.from_numpy(band), stage_hw, padded_hw, STAGE_PAD).numpy()
        np.testing.assert_array_equal(got, expected)
