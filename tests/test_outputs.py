"""Output kinds and comparison strips, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from crm_cli.compare import GAP, PANEL_HEIGHT, compare_strip, difference_windows
from crm_cli.outputs import COARSE_COLOR, OUTPUT_KINDS, REFINED_COLOR, render_output

PROB = np.array([[0.0, 0.5, 1.0, 0.25], [1.5, -0.1, 0.2, 0.75]], np.float32)


def test_soft_soft16_binary_values() -> None:
    soft = render_output("soft", PROB)
    assert soft.dtype == np.uint8 and soft.shape == PROB.shape
    np.testing.assert_array_equal(soft, [[0, 128, 255, 64], [255, 0, 51, 191]])
    soft16 = render_output("soft16", PROB)
    assert soft16.dtype == np.uint16
    np.testing.assert_array_equal(soft16, [[0, 32768, 65535, 16384], [65535, 0, 13107, 49151]])
    binary = render_output("binary", PROB)
    assert binary.dtype == np.uint8
    # p > threshold is required, so exactly 0.5 is background.
    np.testing.assert_array_equal(binary, [[0, 0, 255, 0], [255, 0, 0, 255]])
    np.testing.assert_array_equal(render_output("binary", PROB, threshold=0.2),
                                  [[0, 255, 255, 255], [255, 0, 0, 255]])


def test_threshold_with_soft_means_binary() -> None:
    np.testing.assert_array_equal(render_output("soft", PROB, threshold=0.5), render_output("binary", PROB))
    np.testing.assert_array_equal(render_output("soft", PROB, threshold=0.1), (PROB > 0.1) * 255)


def test_threshold_binarises_soft16_and_the_cutout_alpha() -> None:
    sixteen = render_output("soft16", PROB, threshold=0.3)
    assert sixteen.dtype == np.uint16
    np.testing.assert_array_equal(sixteen, (PROB > 0.3) * 65535)
    image = np.full(PROB.shape + (3,), 7, np.uint8)
    cutout = render_output("cutout", PROB, image=image, threshold=0.3)
    np.testing.assert_array_equal(cutout[..., 3], (PROB > 0.3) * 255)
    np.testing.assert_array_equal(cutout[..., :3], image)


def test_cutout_alpha_is_the_soft_mask() -> None:
    rng = np.random.default_rng(0)
    prob = rng.random((20, 30), dtype=np.float32)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cutout = render_output("cutout", prob, image)
    assert cutout.dtype == np.uint8 and cutout.shape == (20, 30, 4)
    np.testing.assert_array_equal(cutout[..., :3], image)
    np.testing.assert_array_equal(cutout[..., 3], render_output("soft", prob))


def test_overlay_draws_both_contours() -> None:
    image = np.full((64, 80, 3), 200, np.uint8)
    coarse = np.zeros((64, 80), np.uint8)
    coarse[10:30, 10:30] = 255
    prob = np.zeros((64, 80), np.float32)
    prob[35:55, 45:70] = 0.9
    overlay = render_output("overlay", prob, image, coarse)
    assert overlay.dtype == np.uint8 and overlay.shape == (64, 80, 3)

    red = (overlay == COARSE_COLOR).all(axis=2)
    green = (overlay == REFINED_COLOR).all(axis=2)
    coarse_ring = np.zeros_like(red)
    coarse_ring[10:30, 10:30] = True
    coarse_ring[11:29, 11:29] = False
    refined_ring = np.zeros_like(red)
    refined_ring[35:55, 45:70] = True
    refined_ring[36:54, 46:69] = False
    np.testing.assert_array_equal(red, coarse_ring)
    np.testing.assert_array_equal(green, refined_ring)
    # Everywhere else the image is dimmed, not recoloured.
    rest = ~(red | green)
    assert (overlay[rest] == 120).all()


def test_overlay_line_width_scales_with_size() -> None:
    image = np.zeros((2000, 3000, 3), np.uint8)
    prob = np.zeros((2000, 3000), np.float32)
    prob[500:1500, 500:2500] = 1.0
    green = (render_output("overlay", prob, image) == REFINED_COLOR).all(axis=2)
    assert green[1000, 490:510].sum() >= 4


def test_bad_arguments() -> None:
    assert OUTPUT_KINDS == ("soft", "soft16", "binary", "cutout", "overlay")
    with pytest.raises(ValueError, match="unknown output kind"):
        render_output("jpeg", PROB)
    with pytest.raises(ValueError, match="needs the image"):
        render_output("cutout", PROB)
    with pytest.raises(ValueError, match="does not match"):
        render_output("overlay", PROB, np.zeros((3, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="threshold"):
        render_output("binary", PROB, threshold=2.0)


def blob_masks(height: int = 128, width: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Refined: a large box. Coarse: the same plus a 12x12 blob centred at (70, 100) and a 6x6 one."""
    refined = np.zeros((height, width), np.uint8)
    refined[20:50, 20:60] = 255
    coarse = refined.copy()
    coarse[64:76, 94:106] = 255
    coarse[110:116, 10:16] = 255
    return coarse, refined


def test_difference_windows_centre_on_differences() -> None:
    coarse, refined = blob_masks()
    windows = difference_windows(coarse > 0, refined > 0, count=3, size=32)
    assert len(windows) == 2  # only two regions differ
    (y0, x0, y1, x1), (v0, u0, v1, u1) = windows
    assert (y1 - y0, x1 - x0) == (32, 32)
    assert abs((y0 + y1) / 2 - 70) <= 1 and abs((x0 + x1) / 2 - 100) <= 1
    assert v0 <= 110 and v1 >= 116 and u0 <= 10 and u1 >= 16
    # Identical masks fall back to the mask's boundary.
    assert difference_windows(refined > 0, refined > 0, count=1, size=16)


def test_compare_strip_layout_and_crops() -> None:
    coarse, refined = blob_masks()
    image = np.full((128, 160, 3), 100, np.uint8)
    strip = compare_strip(image, coarse, refined, crops=1, crop_size=32)
    assert strip.dtype == np.uint8 and strip.ndim == 3 and strip.shape[2] == 3
    panel_w = round(160 * PANEL_HEIGHT / 128)
    assert strip.shape[1] == 2 * panel_w + GAP
    assert strip.shape[0] == PANEL_HEIGHT + GAP + panel_w  # one row of square crop cells

    # The crop is centred on the blob: coarse covers its centre (red blend), refined does not.
    cy = PANEL_HEIGHT + GAP + panel_w // 2
    np.testing.assert_array_equal(strip[cy, panel_w // 2], [178, 50, 50])
    np.testing.assert_array_equal(strip[cy, panel_w + GAP + panel_w // 2], [100, 100, 100])

    with_gt = compare_strip(image, coarse, refined, refined, crops=2, crop_size=32)
    assert with_gt.shape[1] == 3 * panel_w + 2 * GAP
    assert with_gt.shape[0] == PANEL_HEIGHT + 2 * (GAP + panel_w)
    assert compare_strip(image, coarse, refined, crops=0).shape[0] == PANEL_HEIGHT


def test_compare_strip_rejects_mismatched_masks() -> None:
    with pytest.raises(ValueError, match="refined"):
        compare_strip(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)), np.zeros((8, 9)))
