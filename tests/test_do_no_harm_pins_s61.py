"""Session 61. Pins that a mutation review of the do-no-harm rules (sessions 56-61) found missing: each test
here failed on a mutant that the suite let through (a threshold moved a step, a rule tied to the wrong
switch, a cap dropped), on inputs where the mutant answers differently."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from crm_cli.guard import holes_on_edges, keep_given_lines, sharp_lines
from crm_cli.morphology import thin_lines
from crm_cli.photo_noise import photo_is_noise

FIXED = ["fast", "balanced", "quality"]


def soft_disc(height: int, width: int, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:height, :width]
    return np.clip((radius - np.hypot(rows - height / 2, cols - width / 2)) / 4 + 0.5, 0, 1).astype(np.float32)


@pytest.mark.parametrize("case", ["flat", "noise"])
def test_fixed_presets_keep_flat_and_noise_photos_masks_by_their_own_rule(
        tiny_weights: Path, caplog: pytest.LogCaptureFixture, case: str) -> None:
    """A flat photo under 64 px is no noise photo (too small to reduce), so only the flat rule keeps it;
    a noise photo is not flat, so only the noise rule does. Each rule must run under the fixed presets."""
    from crm_cli import Refiner

    if case == "flat":
        photo, mask, said = np.full((48, 64, 3), 128, np.uint8), soft_disc(48, 64, 15), "one flat colour"
    else:
        noise = np.random.default_rng(0).normal(0, 20, (128, 128, 3))
        photo, mask, said = np.clip(128 + noise, 0, 255).astype(np.uint8), soft_disc(128, 128, 30), "nothing but noise"
    refiner = Refiner(tiny_weights, device="cpu", threads=1)
    for preset in FIXED:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="crm_cli.engine"):
            np.testing.assert_array_equal(refiner.refine(photo, mask, preset=preset), mask)
        assert said in caplog.text, preset
        assert not np.array_equal(refiner.refine(photo, mask, preset=preset, guard=False), mask)


def smooth_texture(seed: int, std: float, size: int = 128) -> np.ndarray:
    """Normal noise blurred by a Gaussian of sigma 1 (texture a few pixels across), ``std`` levels around 128."""
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), (0, 0), 1.0)
    return np.clip(128 + smooth * std / smooth.std(), 0, 255).astype(np.uint8)


def test_photo_is_noise_just_inside_and_outside_its_limits() -> None:
    # Texture of std 6 passes the 8-bit early check and is stopped only by the cells' gain cap (1.5):
    # uncapped, its cells' own deviation (about 3 times the spread's) would call it noise.
    assert not photo_is_noise(smooth_texture(1, 6.0))
    # Std 12 reads as noise, but within the limits: 5.5 deviations (seed 33) or a gain of 1.3 (seed 13)
    # would call it content.
    assert photo_is_noise(smooth_texture(33, 12.0))
    assert photo_is_noise(smooth_texture(13, 12.0))


def test_line_size_thresholds_in_pixels() -> None:
    """64 one-pixel-wide pixels, 192 under three pixels wide, 480 under seven on a sharp outline."""
    one_pixel = np.zeros((20, 100), np.float32)
    one_pixel[10, 10:60] = 1.0  # 50 pixels: short of 64
    assert keep_given_lines(np.zeros_like(one_pixel), one_pixel)[1] == 0
    two_pixels = np.zeros((20, 150), np.float32)
    two_pixels[8:10, 10:110] = 1.0  # 200 pixels: over 192
    assert keep_given_lines(np.zeros_like(two_pixels), two_pixels)[1] == 200
    photo = np.full((60, 200, 3), 200, np.uint8)
    bar = np.zeros((60, 200), bool)
    bar[20:25, 20:110] = True  # 5 x 90 = 450 pixels, sharp: short of 480
    photo[bar] = 20
    assert keep_given_lines(np.zeros(bar.shape, np.float32), bar.astype(np.float32), image=photo)[1] == 0
    bar[20:25, 110:120] = True  # 500 pixels
    photo[bar] = 20
    assert keep_given_lines(np.zeros(bar.shape, np.float32), bar.astype(np.float32), image=photo)[1] == 500


def test_a_kept_soft_line_keeps_the_higher_probability() -> None:
    """A foreground line takes the larger of the given and refined values: the refinement's 0.95 over a
    given 0.7 stays 0.95 (the side of 0.5 is the same either way, so only soft outputs show it)."""
    given = np.zeros((20, 100), np.float32)
    given[10, 10:90] = 0.7
    out, restored = keep_given_lines(np.full_like(given, 0.95), given)
    assert restored == 0 and out[10, 50] == np.float32(0.95)
    out, restored = keep_given_lines(np.full_like(given, 0.2), given)
    assert restored == 80 and out[10, 50] == np.float32(0.7)


@pytest.mark.parametrize(("darkening", "kept"), [(0.62, 0), (0.64, 1800)])
def test_sharp_lines_threshold_within_two_hundredths(darkening: float, kept: int) -> None:
    """session 60's bar on do_no_harm's texture: darkening 0.62 reads 3.256, 0.64 reads 3.378 (limit 3.3)."""
    from conftest import load_benchmark

    photo = load_benchmark("do_no_harm").textured_photo(120, 400, 0).astype(np.float32)
    mask = np.zeros((120, 400), bool)
    mask[58:63, 20:380] = True
    photo[mask] = darkening * 20 + (1 - darkening) * photo[mask]
    assert int(sharp_lines(photo.round().astype(np.uint8), mask)[0].sum()) == kept


def test_dither_contact_share_both_ways() -> None:
    # A rough edge (teeth every third pixel) with a wire two rows below: the background gap between them is
    # a line (252 pixels); under a share of 0.5 it would be taken for dither.
    side = np.zeros((40, 160), bool)
    side[:20] = True
    side[20, ::3] = True
    side[22, 5:155] = True
    assert int(thin_lines(side, 64, 192, 288)[1].sum()) == 252
    # A dithered band whose density falls from 0.7 to 0.3: no line on either side (under 0.9, 692 pixels).
    side = np.zeros((60, 200), bool)
    side[:30] = True
    side[26:34] = np.random.default_rng(1).random((8, 200)) < np.linspace(0.7, 0.3, 8)[:, None]
    on, off = thin_lines(side, 64, 192, 288)
    assert not on.any() and not off.any()


def test_holes_on_edges_reads_the_outer_band_to_eight_pixels() -> None:
    """A hole whose outline lies on its edge, with texture from 4 px outside on: the texture in the outer
    band (4-8 px) lowers its alignment to 3.1, under 5, so it is filled; a crop margin short of the band
    would have missed the texture and kept the hole."""
    rng = np.random.default_rng(1)
    photo = np.full((80, 80, 3), 60, np.uint8)
    texture = rng.integers(0, 256, (80, 80, 1)).astype(np.uint8).repeat(3, 2)
    far = np.ones((80, 80), bool)
    far[16:64, 16:64] = False
    photo[far] = texture[far]
    photo[20:60, 20:60] = 200
    filled = np.zeros((80, 80), bool)
    filled[20:60, 20:60] = True
    assert not holes_on_edges(photo, filled).any()


def test_a_label_map_keeps_no_probability_map_per_id(tiny_weights: Path) -> None:
    """An audit measured 36 MB a label at 3840x2160 held until the map was written (50 ids: 2.34 GB, 255
    would be about 9.7 GB): PresetRefiner kept every id's whole refinement. Now only its record is kept
    (15 ids at 4K: 1.15 GB -> 0.73 GB peak, the same output)."""
    from conftest import rectangles_scene

    from crm_cli import Refiner
    from crm_cli.labels import refine_labels
    from crm_cli.pipeline import PresetRefiner
    from crm_cli.presets import PRESETS

    image, labels = rectangles_scene()
    per_label = PresetRefiner(Refiner(tiny_weights, device="cpu", threads=1), PRESETS["balanced"])
    refined = refine_labels(per_label, image, labels)
    assert refined.shape == labels.shape and len(per_label.details) == 2
    assert all(detail.probability.size == 0 and not detail.stages for detail in per_label.details)
    assert all(detail.ratios for detail in per_label.details)  # the record itself is kept
