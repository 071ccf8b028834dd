"""Pins from the session-63 mutation review of how the engine decides what to run: the ``auto``
schedule's thresholds and rules (schedule.py), ratio parsing and presets, stage geometry, the edge
snap, the noise estimate, the photo memo and device selection. Each test names what it guards."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_auto import LADDER, notched_disc, with_whiskers

import crm_cli.schedule as schedule_module
from crm_cli.schedule import (
    SHARP_BOUNDARY_MIN,
    SMALL_DETAIL_TOLERANCE,
    SMALL_FINAL_SCALE,
    SMALL_KEEP_DETAIL,
    SMALL_MIN_SHIFT,
    FinalStage,
    choose_schedule,
    edge_alignment,
    mask_trust,
    photo_noise_level,
    stage_pixels,
    stage_radius,
    stage_size,
    trust_from_alignment,
)


def grey_photo(grey: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(grey, np.uint8)[..., None], 3, axis=2)


def one_whisker(height: int = 240, width: int = 320) -> np.ndarray:
    """test_auto's smooth ellipse with a single 2-px whisker 90 px long: detail at 0.5 of 0.141."""
    smooth, _ = with_whiskers(height, width)
    mask = smooth.copy()
    mask[height // 2 - height // 4 - 30:height // 2, width // 2 - 1:width // 2 + 1] = True
    return mask


# --------------------------------------------------------------------------- schedule: stage sizes
def test_stage_size_rounds_to_the_nearest_pixel() -> None:
    """stage_size rounds (not truncates) each side: 999 x 0.25 = 249.75 is 250 px."""
    assert stage_size(999, 1001, 0.25) == (250, 250)
    assert stage_pixels(999, 1001, 0.25) == 62500
    assert stage_size(3, 3, 0.125) == (1, 1)  # 0.375 rounds to 0: at least one pixel


def test_a_stage_exactly_min_side_long_fits() -> None:
    """A coarse stage whose short side is exactly min_side runs (stage_fits: at least min_side)."""
    mask = np.zeros((896, 1200), bool)
    mask[200:700, 300:900] = True
    # 0.25 x 896 = 224 exactly; 0.125 x 896 = 112 does not fit.
    assert choose_schedule(mask, LADDER, None, min_side=224).ratios == (0.25, 0.5, SMALL_FINAL_SCALE)
    assert choose_schedule(mask, LADDER, None, min_side=225).ratios == (0.5, SMALL_FINAL_SCALE)


def test_stage_radius_by_hand() -> None:
    """stage_radius is round(1 / ratio), at least 1: a stage at 0.75 or 1 keeps 3x3 structures."""
    assert [stage_radius(r) for r in (0.125, 0.25, 0.5, 0.75, 1.0)] == [8, 4, 2, 1, 1]


# --------------------------------------------------------------------------- schedule: choices
def test_detail_equal_to_the_tolerance_may_start_there() -> None:
    """A first stage may destroy up to the tolerance, inclusive: a blocky mask under tolerance 0 still
    starts at the coarsest fitting stage."""
    mask = np.zeros((1200, 1800), bool)
    mask[200:1000, 300:1500] = True
    schedule = choose_schedule(mask, LADDER, None, min_side=224, tolerance=0.0)
    assert schedule.detail[0.25] == 0.0 and schedule.ratios == (0.25, 0.5, SMALL_FINAL_SCALE)


def test_small_image_detail_below_its_own_tolerance_earns_no_trust() -> None:
    """On a small photo the detail probe is read against SMALL_DETAIL_TOLERANCE (0.3), not the 2K
    DETAIL_TOLERANCE: one whisker (0.14) on a flat photo earns no trust."""
    mask = one_whisker()
    flat = np.full((240, 320, 3), 128, np.uint8)
    schedule = choose_schedule(mask, LADDER, flat, min_side=224)
    assert 0.05 < schedule.detail[0.5] <= SMALL_DETAIL_TOLERANCE
    assert schedule.alignment == 0.0 and schedule.trust == 0.0 and schedule.ratios == (SMALL_FINAL_SCALE,)


def test_no_image_means_no_trust_even_for_a_detailed_mask() -> None:
    """Without an image nothing is measured and the trust is 0, however detailed the mask."""
    _, whiskers = with_whiskers(240, 320)
    schedule = choose_schedule(whiskers, LADDER, None, min_side=224)
    assert schedule.alignment is None and schedule.trust == 0.0 and schedule.min_shift == 0.0
    flat = np.full((240, 320, 3), 128, np.uint8)
    assert choose_schedule(whiskers, LADDER, flat, min_side=224).trust == 1.0  # measured: detailed


def test_min_shift_applies_at_exactly_the_keep_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small photo's mask whose probe reads exactly SMALL_KEEP_DETAIL gets the min_shift (at least)."""
    mask = one_whisker()
    flat = np.full((240, 320, 3), 128, np.uint8)
    detail = choose_schedule(mask, LADDER, flat, min_side=224).detail[0.5]
    assert detail >= SMALL_KEEP_DETAIL
    monkeypatch.setattr(schedule_module, "SMALL_KEEP_DETAIL", detail)
    assert choose_schedule(mask, LADDER, flat, min_side=224).min_shift == SMALL_MIN_SHIFT


def test_trust_equal_to_the_sharp_boundary_limit_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A soft boundary loses its trust only when that trust is below SHARP_BOUNDARY_MAX_TRUST, not at it."""
    _, disc = notched_disc(0)
    grey = cv2.GaussianBlur(np.where(disc, 200, 60).astype(np.float32), (0, 0), 1.5).astype(np.uint8)
    photo = grey_photo(grey)
    defocused = choose_schedule(disc, LADDER, photo, min_side=224)
    assert defocused.sharpness is not None and defocused.sharpness < SHARP_BOUNDARY_MIN and defocused.trust == 1.0
    monkeypatch.setattr(schedule_module, "SHARP_BOUNDARY_MAX_TRUST", 1.0)
    assert choose_schedule(disc, LADDER, photo, min_side=224).trust == 1.0


def test_fixed_preset_trust_of_a_small_noisy_photo_matches_auto() -> None:
    """mask_trust reads a small photo's alignment as it is (no noise floor), as choose_schedule does."""
    from conftest import load_benchmark

    case = load_benchmark("do_no_harm").disc_under_noise(240, 320, 20, 30)
    photo, mask = case.photo, case.mask > 0
    unfloored = edge_alignment(photo, mask, above_noise=False)
    assert edge_alignment(photo, mask) > 2 * unfloored  # the floor would change it a lot
    assert mask_trust(photo, mask, LADDER, 224) == trust_from_alignment(unfloored, small=True) == 0.0
    assert choose_schedule(mask, LADDER, photo, min_side=224).trust == 0.0


# --------------------------------------------------------------------------- schedule: measures
def test_the_alignment_reduces_the_mask_by_area_averaging() -> None:
    """A large photo's mask is reduced by area (a 1-px line becomes half a pixel: gone), not sampled."""
    photo = np.full((1024, 4096, 3), 60, np.uint8)
    mask = np.zeros((1024, 4096), bool)
    mask[:, 2048::8] = True  # 1-px lines on even columns: the 2x reduction averages each to 0.5
    photo[mask] = 200
    assert edge_alignment(photo, mask) == 0.0


def test_a_disc_under_noise_reads_a_bounded_alignment() -> None:
    """Above the noise floor the outer band is taken as at least NOISE_MIN_EXCESS of the floor: do_no_harm's
    disc (20 levels over noise of std 30) reads 5.77 at 1024x768, not millions."""
    from conftest import load_benchmark

    case = load_benchmark("do_no_harm").disc_under_noise(768, 1024, 20, 30)
    assert edge_alignment(case.photo, case.mask > 0) == pytest.approx(5.7705, abs=0.01)


def test_the_alignment_above_the_noise_is_never_negative() -> None:
    """Where the near band is quieter than the noise floor, the alignment reads 0, not below it."""
    rng = np.random.default_rng(0)
    height, width = 600, 800
    grey = np.clip(128 + rng.normal(0, 20, (height, width)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:height, :width]
    radius = np.hypot(yy - height / 2, xx - width / 2)
    grey[(radius > 195) & (radius < 205)] = 128  # a flat ring along the boundary, noise elsewhere
    assert edge_alignment(grey_photo(grey), radius < 200) == 0.0


def test_noise_level_of_a_one_level_checkerboard_by_hand() -> None:
    """photo_noise_level's residual bound is root(4/3) x the residual: a +-1 checkerboard (residual
    16 / (6 x 0.6745) = 3.95, nothing at half size) reads its white level 4.57, over NOISE_MIN_LEVEL."""
    yy, xx = np.mgrid[:64, :64]
    grey = np.where((yy + xx) % 2 == 1, 129, 127)
    expected = 16 / (6 * 0.6745) * (4 / 3) ** 0.5
    assert photo_noise_level(grey_photo(grey)) == pytest.approx(expected, rel=1e-4)


# --------------------------------------------------------------------------- schedule: weights hints
def test_final_stage_hints_accept_their_inclusive_limits() -> None:
    """A sidecar's scale of exactly 1 and min_change_confidence of exactly 1 are valid."""
    assert FinalStage.from_hints({"scale": 1}) == FinalStage(scale=1.0)
    assert FinalStage.from_hints({"min_change_confidence": 1}) == FinalStage(min_change_confidence=1.0)
    assert FinalStage.from_hints({"final_only_certainty": 0.5}).final_only_certainty == 0.5


# --------------------------------------------------------------------------- presets
def test_the_record_names_snap_only_when_it_is_on() -> None:
    """Preset.record: 'snap' appears when on and is left out when off (records before session 42)."""
    from crm_cli.presets import PRESETS

    assert PRESETS["auto"].record()["snap"] is True
    assert "snap" not in PRESETS["fast"].overridden(snap=False).record()


def test_numpy_1_bool_is_taken_as_a_switch() -> None:
    """overridden() takes NumPy 1.x's bool (its type is named 'bool_'; pyproject allows numpy>=1.24)."""
    from crm_cli.presets import PRESETS

    numpy1_false = type("bool_", (), {"__bool__": lambda self: False})()
    assert PRESETS["auto"].overridden(guard=numpy1_false).guard is False
    with pytest.raises(TypeError, match="guard must be True, False or None"):
        PRESETS["auto"].overridden(guard="False")


# --------------------------------------------------------------------------- stage geometry
def test_tile_options_take_their_minimum_and_refuse_bools() -> None:
    """whole_number accepts the minimum itself (tile_margin 0, tile_size 16) and refuses True/False."""
    from crm_cli.stage_geometry import TiledRunner, check_tile_options, whole_number

    assert whole_number("tile_size", 16, 16) == 16 and TiledRunner(tile_margin=0, roi_tile_margin=0).tile_margin == 0
    check_tile_options({"tile_margin": 0, "decode_budget_mb": 1, "roi_window_size": 1})
    for value in (True, False):  # ints to Python, so only the bool check stops them at minimum 0
        with pytest.raises(ValueError, match="tile_margin must be a whole number >= 0"):
            whole_number("tile_margin", value, 0)
        with pytest.raises(ValueError, match="tile_margin must be a whole number"):
            TiledRunner(tile_margin=value)


def test_tile_windows_by_hand() -> None:
    """tile_windows: runs of at most run_tiles tiles, and a run cut short by an empty tile is still encoded."""
    from crm_cli.stage_geometry import tile_windows

    assert tile_windows(16, 64, 16, None, 1) == [(0, 16, 0, 16), (0, 16, 16, 32), (0, 16, 32, 48), (0, 16, 48, 64)]
    assert tile_windows(16, 64, 16, None, 2) == [(0, 16, 0, 32), (0, 16, 32, 64)]
    occupied = [[True, False, True], [True, True, False], [False, False, False]]
    assert tile_windows(40, 48, 16, occupied, 2) == [(0, 16, 0, 16), (0, 16, 32, 48), (16, 32, 0, 32)]


def test_decode_budget_is_in_mebibytes() -> None:
    """decode_budget_mb is MiB: 8 is 8 << 20 bytes of decoder row band."""
    from crm_cli.stage_geometry import TiledRunner

    assert TiledRunner(decode_budget_mb=8).decode_budget == 8 * 1024 * 1024
    assert TiledRunner(decode_budget_mb=1).decode_budget == 1 << 20


# --------------------------------------------------------------------------- stages
def test_pad_stage_input_reaches_a_multiple_for_any_pad() -> None:
    """pad_stage_input pads pad px on each side and rounds the whole (not pad on one side) up to the multiple."""
    import torch

    from crm_cli.stages import pad_stage_input

    # 10 + 2 x 4 = 18 -> 32: 4 on top/left, 4 + 14 on bottom/right.
    padded = pad_stage_input(torch.zeros(1, 1, 10, 10), pad=4, multiple=16)
    assert tuple(padded.shape[-2:]) == (32, 32)


def test_a_stage_as_small_as_its_pad_is_replicated_not_reflected() -> None:
    """A 32-px stage (pad 32 needs a larger side to reflect) pads by replicating its border, not an error."""
    import torch

    from crm_cli.stages import pad_stage_input

    for width in (32, 64):  # 32 rows, each of the two sides
        x = torch.arange(32 * width, dtype=torch.float32).view(1, 1, 32, width)
        for padded in (pad_stage_input(x), pad_stage_input(x.transpose(2, 3))):
            assert tuple(sorted(padded.shape[-2:])) == (96, width + 64)
            assert float(padded[0, 0, 0, 0]) == 0.0
            assert float(padded[0, 0, -1, -1]) == float(x[0, 0, -1, -1])


def test_resize_probability_antialiases_when_either_side_shrinks() -> None:
    """A map shrunk in width while its height grows is still antialiased: 1-in-3 stripes read about 1/3."""
    import torch

    from crm_cli.stages import resize_probability

    x = torch.zeros(1, 1, 8, 12)
    x[0, 0, :, ::3] = 1.0
    resized = resize_probability(x, (16, 3))
    assert tuple(resized.shape) == (1, 1, 16, 3)
    assert torch.allclose(resized, torch.full_like(resized, 1 / 3), atol=0.06)


# --------------------------------------------------------------------------- photo noise
def test_the_cells_own_deviation_gains_at_most_its_cap() -> None:
    """photo_is_noise takes the cells' own deviation only up to NOISE_ONLY_MAX_CELL_GAIN x spread / 8: a
    128-px mosaic of 8x8 cells at 127/129 (spread 1.0, cells deviating 2.15) with one cell at 132 is no noise."""
    from crm_cli.photo_noise import photo_is_noise

    cells = np.where(np.add.outer(np.arange(16), np.arange(16)) % 2 == 1, 129, 127).astype(np.uint8)
    cells[5, 7] = 132  # 4 levels off the mean: beyond 6 x 1.5 x 1.0 / 8 + 1 = 2.1, within 6 x 2.15 + 1
    photo = grey_photo(np.kron(cells, np.ones((8, 8), np.uint8)))
    assert not photo_is_noise(photo)
    cells[5, 7] = 129  # the plain mosaic stays within the capped limit
    assert photo_is_noise(grey_photo(np.kron(cells, np.ones((8, 8), np.uint8))))


# --------------------------------------------------------------------------- devices
def test_an_explicit_gpu_index_equal_to_the_count_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_device('cuda:1') with one GPU present is a DeviceError (indices run 0 to count - 1), never a device."""
    import torch

    from crm_cli.devices import DeviceError, resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("CRM_DEVICE", raising=False)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match=r"only 1 CUDA GPU is present \(cuda:0\)"):
        resolve_device("cuda:1")


def test_auto_picks_mps_where_there_is_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """--device auto takes Apple MPS when present and CUDA is not; CUDA first when both; else the CPU."""
    import torch

    import crm_cli.devices as devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda torch_module: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda torch_module: False)
    assert devices.resolve_device("auto") == torch.device("cpu")


# The review's bug: FinalStage.from_hints took NaN (Python's json reads a sidecar's NaN), and int(Infinity)
# escaped as OverflowError, not the ValueError that resolve_final_stage turns into a one-line WeightsError.
@pytest.mark.parametrize("text", ['{"scale": NaN}', '{"min_change_confidence": NaN}',
                                  '{"enlarge_max_pixels": Infinity}'])
def test_a_sidecar_final_stage_that_is_not_finite_is_a_value_error(text: str) -> None:
    """A sidecar's final_stage value of NaN or Infinity is refused as a ValueError (a one-line WeightsError)."""
    import json

    with pytest.raises(ValueError, match="final_stage"):
        FinalStage.from_hints(json.loads(text))
