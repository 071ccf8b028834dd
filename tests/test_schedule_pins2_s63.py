"""Pins from the second wave of the session-63 mutation review (the stage runner, the edge snap and
the noise estimate): mutants that the existing tests, test_schedule_pins_s63.py included, let
through. Each test names what it guards."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import make_tiny_model, synthetic_scene

from crm_cli.stages import StageInput, StageRunner


# --------------------------------------------------------------------------- stages
def test_a_stage_wider_than_one_tile_is_tiled_even_when_it_is_short(monkeypatch: pytest.MonkeyPatch) -> None:
    """_encode tiles a stage input longer than the tile side in either direction, not only in both."""
    model = make_tiny_model(seed=1)
    runner = StageRunner(model, torch.device("cpu"), tile_size=128, tile_margin=16)
    whole = StageRunner(model, torch.device("cpu"), tile_size=4096)
    for height, width in ((24, 200), (200, 24)):
        image, gt = synthetic_scene(height, width)
        mask = torch.from_numpy(gt.astype(np.float32) / 255).view(1, 1, height, width)
        x = StageInput(image, mask, runner.device, model.config.input_norm)
        assert min(x.shape) <= 128 < max(x.shape)
        shapes: list[tuple[int, int]] = []
        original = runner._encode_tile
        monkeypatch.setattr(runner, "_encode_tile",
                            lambda t, f=original, c=shapes: c.append(tuple(t.shape[-2:])) or f(t))
        with torch.inference_mode():
            tiled = runner._encode(x)
            reference = whole._encode(x)
        monkeypatch.undo()
        assert len(shapes) > 1, "one encoder call for a stage longer than a tile"
        assert max(max(shape) for shape in shapes) <= 128 + 2 * 16  # a tile and its margins at most
        assert tiled.shape == reference.shape


def test_a_nearly_full_stage_mask_is_refined_not_short_cut() -> None:
    """Only an exactly full stage mask (min 1.0) skips the network; one of 0.995 everywhere is refined."""
    runner = StageRunner(make_tiny_model(seed=3), torch.device("cpu"))
    image, _ = synthetic_scene(48, 64)
    with torch.inference_mode():
        out, timing = runner._stage(image, torch.full((1, 1, 48, 64), 0.995), 1.0, (48, 64))
        full, full_timing = runner._stage(image, torch.ones(1, 1, 48, 64), 1.0, (48, 64))
    assert timing.encode_s > 0 and not bool((out == 1.0).all())
    assert full_timing.encode_s == 0.0 and bool((full == 1.0).all())


# --------------------------------------------------------------------------- edge snap
def step_photo(height: int = 40, width: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A grey photo dark left of column 20 and bright from it, and a mask whose edge is 2 px off (column 18)."""
    photo = np.full((height, width, 3), 40, np.uint8)
    photo[:, 20:] = 200
    probability = np.zeros((height, width), np.float32)
    probability[:, 18:] = 1.0
    return photo, probability


def test_a_window_exactly_at_the_least_variance_may_move() -> None:
    """snap_to_edges moves pixels whose window variance is at least (>=) the noise's least variance."""
    from crm_cli.edge_snap import SNAP_NOISE_DEVIATIONS, snap_to_edges, window_statistics

    photo, probability = step_photo()
    grey = photo[..., 0].astype(np.float32) / np.float32(255)
    variance = window_statistics(grey, 2)[1]
    moved = snap_to_edges(photo, probability, radius=2) != probability
    assert moved.any()
    top = float(variance[moved].max())
    # The noise whose least window variance, (1.5 noise / 255)^2, is that largest variance (in float32).
    noise = np.sqrt(np.float64(top)) * 255.0 / SNAP_NOISE_DEVIATIONS
    assert np.float32((SNAP_NOISE_DEVIATIONS * noise / 255.0) ** 2) == np.float32(top)
    at_limit = snap_to_edges(photo, probability, radius=2, noise=noise) != probability
    assert at_limit.any() and (variance[at_limit] == np.float32(top)).all()


def test_a_probability_of_exactly_one_half_is_background_to_the_snap() -> None:
    """snap_to_edges reads the mask's foreground as probability > 0.5: a map of 0 and 0.5 has no boundary."""
    from crm_cli.edge_snap import snap_to_edges

    photo, probability = step_photo()
    half = probability * np.float32(0.5)
    np.testing.assert_array_equal(snap_to_edges(photo, half, radius=2), half)
    assert (snap_to_edges(photo, half * 2, radius=2) != half * 2).any()


# --------------------------------------------------------------------------- noise
def test_the_residual_needs_4_px_on_each_side() -> None:
    """residual_level is 0 for an image under 4 px on a side, however noisy, and reads one of 4 px."""
    from crm_cli.photo_noise import residual_level

    rng = np.random.default_rng(0)
    assert residual_level(rng.normal(128, 20, (3, 40))) == 0.0
    assert residual_level(rng.normal(128, 20, (40, 3))) == 0.0
    assert residual_level(rng.normal(128, 20, (4, 40))) > 0.0


def test_the_noise_level_takes_the_upper_median_of_an_even_count() -> None:
    """_level reads the median of an even number of samples as the upper middle one (size // 2)."""
    from crm_cli.photo_noise import _level

    assert _level(np.array([4.0, 1.0, 3.0, 2.0], np.float32)) == pytest.approx(3.0 / (6.0 * 0.6745), rel=1e-6)
    assert _level(np.array([5.0, 1.0, 3.0], np.float32)) == pytest.approx(3.0 / (6.0 * 0.6745), rel=1e-6)


def test_a_piece_8_px_on_a_side_is_read_at_half_size_too() -> None:
    """white_noise_level of an 8x8 image is the root of 4/3 (s1^2 - s2^2) with s2 read at 4x4, not 0."""
    from crm_cli.photo_noise import _halved, _white_from_levels, residual_level, white_noise_level

    piece = np.random.default_rng(3).normal(128, 20, (8, 8)).astype(np.float32)
    expected = _white_from_levels(residual_level(piece), residual_level(_halved(piece)))
    assert expected > 0.0
    assert white_noise_level(piece) == pytest.approx(expected, rel=1e-6)
    assert white_noise_level(piece[:7]) == 0.0  # 7 px: read at full size only


def test_a_photo_of_exactly_16_cells_on_its_short_side_takes_the_cells_gain() -> None:
    """photo_is_noise takes the cells' own deviation from 16 cells (128 px) on the short side on, not from 17."""
    from crm_cli.photo_noise import photo_is_noise

    def mosaic(rows: int) -> np.ndarray:
        # 8x8 cells at 127/129 in a checkerboard (spread about 1.0, cells deviating 2.15) and one at 130:
        # 2.0 off the mean, beyond 6 x 1.0 / 8 + 1 = 1.75, within 6 x 1.5 x 1.0 / 8 + 1 = 2.13.
        cells = np.where(np.add.outer(np.arange(rows), np.arange(16)) % 2 == 1, 129, 127).astype(np.uint8)
        cells[5, 7] = 130
        grey = np.kron(cells, np.ones((8, 8), np.uint8))
        return np.repeat(grey[..., None], 3, axis=2)

    assert photo_is_noise(mosaic(16))
    assert not photo_is_noise(mosaic(15))  # 120 px: the spread alone


def test_noise_crops_of_a_small_photo_are_not_repeated() -> None:
    """noise_crops of a photo shorter than a crop on one side or both takes each crop once, at its full width."""
    from crm_cli.photo_noise import noise_crops

    photo = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    assert [crop.shape for crop in noise_crops(photo)] == [(100, 100)]
    wide = np.random.default_rng(0).integers(0, 256, (100, 600, 3), dtype=np.uint8)
    crops = noise_crops(wide)
    assert [crop.shape for crop in crops] == [(100, 256)] * 4
    # Rows 0-99; columns from 0, 115, 229 and 344 (600 - 256 in thirds, rounded).
    np.testing.assert_array_equal(crops[1], cv2.cvtColor(wide[:, 115:371], cv2.COLOR_RGB2GRAY).astype(np.float32))
    tall = np.random.default_rng(0).integers(0, 256, (257, 100, 3), dtype=np.uint8)
    assert [crop.shape for crop in noise_crops(tall)] == [(256, 100)] * 2  # tops 0 and 1 only
