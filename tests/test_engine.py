"""Refiner: shapes, dtypes, the empty/full mask rule, tiling, stages, devices and weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import coarse_of, make_tiny_model, synthetic_scene

from crm_cli.checkpoint import WeightsError, load_model
from crm_cli.devices import DeviceError, resolve_device
from crm_cli.engine import Refiner
from crm_cli.stages import pad_stage_input, stage_size


@pytest.fixture(scope="module")
def refiner(device: str) -> Refiner:
    return Refiner.from_model(make_tiny_model(), device=device)


@pytest.mark.parametrize("size", [(64, 64), (67, 93), (130, 41)])
def test_refine_returns_probability_at_input_size(refiner: Refiner, size: tuple[int, int]) -> None:
    image, gt = synthetic_scene(*size)
    prob = refiner.refine(image, coarse_of(gt, 4))
    assert prob.shape == size and prob.dtype == np.float32
    assert np.isfinite(prob).all() and prob.min() >= 0.0 and prob.max() <= 1.0


def test_empty_mask_gives_empty_output_and_full_gives_full(refiner: Refiner) -> None:
    image, _ = synthetic_scene(80, 100)
    assert not refiner.refine(image, np.zeros((80, 100), np.uint8)).any()
    assert (refiner.refine(image, np.full((80, 100), 255, np.uint8)) == 1.0).all()


def test_mask_dtypes_are_equivalent(refiner: Refiner) -> None:
    image, gt = synthetic_scene(72, 88)
    coarse = coarse_of(gt, 4)
    as_uint8 = refiner.refine(image, coarse)
    as_bool = refiner.refine(image, coarse > 0)
    as_uint16 = refiner.refine(image, coarse.astype(np.uint16) * 257)
    np.testing.assert_allclose(as_uint8, as_bool, atol=1e-6)
    np.testing.assert_allclose(as_uint8, as_uint16, atol=1e-6)


@pytest.mark.parametrize("preset", ["auto", "fast", "balanced", "quality"])
def test_the_callers_float_mask_is_used_but_never_written(refiner: Refiner, preset: str) -> None:
    # mask_to_float hands an in-range float32 mask through uncopied; nothing may write into it.
    image, gt = synthetic_scene(72, 88)
    coarse = coarse_of(gt, 4).astype(np.float32) / np.float32(255)
    before = coarse.copy()
    refined = refiner.refine(image, coarse, preset=preset)
    assert np.array_equal(coarse, before) and not np.shares_memory(refined, coarse)
    np.testing.assert_array_equal(refined, refiner.refine(image, coarse_of(gt, 4), preset=preset))


def test_bad_inputs_raise_clear_errors(refiner: Refiner) -> None:
    image, gt = synthetic_scene(64, 64)
    with pytest.raises(ValueError, match="does not match"):
        refiner.refine(image, gt[:60])
    with pytest.raises(ValueError, match="ratios must increase"):
        refiner.refine(image, gt, ratios=(0.5, 0.25))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        refiner.refine(image, gt, ratios=(0.5, 2.0))
    with pytest.raises(ValueError, match="RGB"):
        refiner.refine(image[..., 0], gt)


def test_tiled_encoder_stitches_exactly_when_context_covers_the_image(device: str) -> None:
    model = make_tiny_model()
    image, gt = synthetic_scene(150, 210)
    whole = Refiner.from_model(model, device=device, tile_size=4096)
    # Tiles of 48 px whose margins reach the whole image: stitching must not move any value.
    tiled = Refiner.from_model(model, device=device, tile_size=48, tile_margin=1024)
    coarse = coarse_of(gt, 4)
    np.testing.assert_allclose(tiled.refine(image, coarse, (1.0,)), whole.refine(image, coarse, (1.0,)), atol=1e-5)


def test_keep_stages_returns_each_stage_at_full_size(refiner: Refiner) -> None:
    image, gt = synthetic_scene(64, 96)
    result = refiner.refine_detailed(image, coarse_of(gt, 4), (0.25, 0.5, 1.0), keep_stages=True)
    assert len(result.stages) == 3 and len(result.timings) == 3
    assert all(stage.shape == (64, 96) for stage in result.stages)
    np.testing.assert_array_equal(result.stages[-1], result.probability)


def test_padding_makes_multiples_of_sixteen_with_reflect_or_replicate() -> None:
    x = torch.arange(2 * 4 * 5 * 7, dtype=torch.float32).view(2, 4, 5, 7)
    padded = pad_stage_input(x, pad=3, multiple=16)
    assert padded.shape[-2:] == (16, 16)
    torch.testing.assert_close(padded[:, :, 3:8, 3:10], x)
    tiny = pad_stage_input(torch.ones(1, 4, 2, 3), pad=32)
    assert tiny.shape[-2] % 16 == 0 and tiny.shape[-1] % 16 == 0
    assert stage_size(1000, 3, 0.125) == (125, 1)


def test_explicit_missing_device_is_an_error() -> None:
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="cuda"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    assert resolve_device("CPU").type == "cpu"


def test_checkpoint_round_trip_records_config_and_checks_sha(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    model, info = load_model(tiny_weights)
    assert info.config.encoder == "mobilenet_v2" and len(info.sha256) == 64
    sidecar = json.loads(tiny_weights.with_suffix(".json").read_text())
    assert sidecar["sha256"] == info.sha256 and sidecar["dtype"] == "float16"
    # fp16 storage: the loaded model equals the original up to fp16 rounding.
    original = make_tiny_model()
    for key, value in original.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key].float(), value.float(), atol=2e-3, rtol=2e-3)
    tampered = tmp_path / "bad.safetensors"
    tampered.write_bytes(tiny_weights.read_bytes()[:-1] + b"\x00")
    tampered.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(WeightsError, match="sha256"):
        load_model(tampered)
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a crm checkpoint"):
        load_model(garbage)


def test_refiner_loads_a_checkpoint_file(tiny_weights, device: str) -> None:  # noqa: ANN001
    refiner = Refiner(tiny_weights, device=device)
    image, gt = synthetic_scene(64, 80)
    prob = refiner.refine(image, coarse_of(gt, 4))
    assert prob.shape == (64, 80)
    assert refiner.weights_info.sha256


def test_roi_band_covers_uncertain_pixels_and_the_boundary() -> None:
    from crm_cli.roi import roi_band

    prob = torch.zeros(9, 9)
    prob[:, 5:] = 1.0
    prob[0, 0] = 0.5  # an isolated uncertain pixel
    band = roi_band(prob, radius=1)
    expected = torch.zeros(9, 9, dtype=torch.bool)
    expected[:, 3:7] = True  # edge at columns 4-5, dilated by 1
    expected[0:2, 0:2] = True
    assert torch.equal(band, expected)


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_the_band_rule_on_a_gpu_tensor_equals_the_cpu_arrays(radius: int) -> None:
    # A GPU's band dilates with max-pooling, the CPU's with OpenCV: one rule (roi._band) on both. The
    # GPU path is run here on CPU tensors through the max-pool, which is all it differs by.
    import torch.nn.functional as F

    from crm_cli import roi

    def max_pool_dilate(mask: torch.Tensor, size: int) -> torch.Tensor:
        if size <= 0:
            return mask.clone()
        return F.max_pool2d(mask.float()[None, None], 2 * size + 1, stride=1, padding=size)[0, 0] > 0

    prob = np.random.default_rng(radius).random((40, 56)).astype(np.float32)
    prob[5:30, 8:40] = 1.0
    prob[:4] = 0.0
    on_gpu = roi._band(torch.from_numpy(prob), radius, max_pool_dilate).numpy()
    assert np.array_equal(on_gpu, roi.roi_band_array(prob, radius)) and 0 < on_gpu.sum() < on_gpu.size


def test_roi_stage_equals_full_decoding_inside_the_band_and_keeps_the_rest(device: str) -> None:
    from crm_cli.roi import roi_band
    from crm_cli.stages import resize_probability

    refiner = Refiner.from_model(make_tiny_model(seed=2), device=device)
    image, gt = synthetic_scene(90, 120)
    incoming = torch.from_numpy(coarse_of(gt, 6).astype(np.float32) / 255).view(1, 1, 90, 120).to(device)
    incoming = resize_probability(incoming, (45, 60))
    full, _ = refiner.runner._stage(image, incoming, 0.5, (90, 120), roi=False)
    roi, _ = refiner.runner._stage(image, incoming, 0.5, (90, 120), roi=True)
    upsampled = resize_probability(incoming, (90, 120))
    band = roi_band(upsampled[0, 0], radius=4)
    assert 0 < band.sum() < band.numel()
    torch.testing.assert_close(roi[0, 0][band], full[0, 0][band], atol=1e-5, rtol=0)
    torch.testing.assert_close(roi[0, 0][~band], upsampled[0, 0][~band])


def test_reduced_precision_stays_close_and_non_finite_tiles_fall_back_to_fp32(monkeypatch) -> None:  # noqa: ANN001
    # CPU only: bf16 autocast on the CPU, and the fallback is detected by the CPU autocast flag.
    model = make_tiny_model(seed=4)
    image, gt = synthetic_scene(64, 96)
    coarse = coarse_of(gt, 4)
    reference = Refiner.from_model(model, device="cpu").refine(image, coarse, (0.5, 1.0))
    half = Refiner.from_model(model, device="cpu", precision="bf16")
    np.testing.assert_allclose(half.refine(image, coarse, (0.5, 1.0)), reference, atol=0.05)

    original = model.encode

    def overflowing(x: torch.Tensor) -> torch.Tensor:
        g = original(x)
        return torch.full_like(g, float("nan")) if torch.is_autocast_enabled("cpu") else g

    monkeypatch.setattr(model, "encode", overflowing)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        guarded = half.refine(image, coarse, (0.5, 1.0))
    np.testing.assert_allclose(guarded, reference, atol=1e-6)
    with pytest.raises(ValueError, match="precision"):
        Refiner.from_model(model, device="cpu", precision="int8")


def test_small_objects_are_not_erased_by_the_empty_mask_rule(device: str) -> None:
    refiner = Refiner.from_model(make_tiny_model(), device=device, min_stage_side=64)
    image, _ = synthetic_scene(600, 600)
    line = np.zeros((600, 600), np.uint8)
    line[100:103, 20:560] = 255  # 3 px wide: its 0.125 stage mask never exceeds 0.5
    result = refiner.refine_detailed(image, line, (0.125, 1.0))
    assert result.timings[0].encode_s > 0, "stage 0 was short-cut as empty"
    hole = 255 - line
    assert refiner.refine_detailed(image, hole, (0.125, 1.0)).timings[0].encode_s > 0
    # A 0/1 mask is binary, not a nearly empty soft mask.
    np.testing.assert_array_equal(refiner.refine(image, (line > 0).astype(np.uint8)), refiner.refine(image, line))


def test_roi_encoding_skips_tiles_away_from_the_boundary(monkeypatch, device: str) -> None:  # noqa: ANN001
    from crm_cli.stages import resize_probability

    model = make_tiny_model(seed=6)
    image, gt = synthetic_scene(200, 260)
    incoming = resize_probability(torch.from_numpy(coarse_of(gt, 8).astype(np.float32) / 255).view(1, 1, 200, 260),
                                  (100, 130)).to(device)
    untiled = Refiner.from_model(model, device=device, roi_tile_size=4096)
    tiled = Refiner.from_model(model, device=device, roi_tile_size=32, roi_tile_margin=4096).runner
    calls = []
    original = tiled._encode_tile
    monkeypatch.setattr(tiled, "_encode_tile", lambda x: calls.append(x.shape) or original(x))
    expected, _ = untiled.runner._stage(image, incoming, 1.0, (200, 260), roi=True)
    got, _ = tiled._stage(image, incoming, 1.0, (200, 260), roi=True)
    padded_tiles = ((200 + 64 + 15) // 16 * 16 // 32 + 1) * ((260 + 64 + 15) // 16 * 16 // 32 + 1)
    assert 0 < len(calls) < padded_tiles * 0.8  # the object's interior and the far background are skipped
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # Windows of one tile each: more encoder calls (neighbours are no longer merged), same result.
    counts = []
    for window in (64, 1024):
        windowed = Refiner.from_model(model, device=device, roi_tile_size=64, roi_tile_margin=4096,
                                      roi_window_size=window).runner
        window_calls: list[torch.Size] = []
        encode_tile = windowed._encode_tile
        monkeypatch.setattr(windowed, "_encode_tile",
                            lambda x, f=encode_tile, c=window_calls: c.append(x.shape) or f(x))
        result, _ = windowed._stage(image, incoming, 1.0, (200, 260), roi=True)
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)
        counts.append(len(window_calls))
    assert counts[0] > counts[1] > 0


def test_tile_windows_by_hand() -> None:
    from crm_cli.stages import tile_windows

    needed = torch.zeros(8, 12, dtype=torch.bool)
    needed[1, 2] = needed[3, 5] = needed[6, 1] = needed[7, 11] = True  # tiles (0, 0), (0, 1), (1, 0), (1, 2)
    assert tile_windows(8, 12, 4, needed, run_tiles=2) == [(0, 4, 0, 8), (4, 8, 0, 4), (4, 8, 8, 12)]
    assert tile_windows(8, 12, 4, needed, run_tiles=1) == [(0, 4, 0, 4), (0, 4, 4, 8), (4, 8, 0, 4), (4, 8, 8, 12)]
    # Without a needed map every tile is encoded; the last ones are cut at the input's edge.
    assert tile_windows(6, 10, 4) == [(0, 4, 0, 4), (0, 4, 4, 8), (0, 4, 8, 10), (4, 6, 0, 4), (4, 6, 4, 8),
                                      (4, 6, 8, 10)]
    # A long run is split every run_tiles tiles.
    assert tile_windows(4, 18, 4, torch.ones(4, 18, dtype=torch.bool), run_tiles=2) == [
        (0, 4, 0, 8), (0, 4, 8, 16), (0, 4, 16, 18)]


def test_stages_below_the_minimum_size_are_skipped_but_counted(refiner: Refiner) -> None:
    image, gt = synthetic_scene(96, 200)  # 0.125 -> 12x25 and 0.25 -> 24x50: skipped (under 224 px)
    result = refiner.refine_detailed(image, coarse_of(gt, 4), (0.125, 0.25, 1.0), keep_stages=True)
    assert [t.ratio for t in result.timings] == [0.125, 0.25, 1.0]
    assert result.timings[0].encode_s == 0.0 and result.timings[1].encode_s == 0.0
    assert result.timings[2].encode_s > 0.0
    np.testing.assert_allclose(result.stages[0], coarse_of(gt, 4) / 255.0, atol=1e-6)


def test_tiled_roi_stage_reads_only_encoded_latent_cells(device: str) -> None:
    from crm_cli.roi import roi_band
    from crm_cli.stages import resize_probability

    model = make_tiny_model(seed=2)
    image, gt = synthetic_scene(160, 200)
    incoming = torch.from_numpy(coarse_of(gt, 6).astype(np.float32) / 255).view(1, 1, 160, 200).to(device)
    incoming = resize_probability(incoming, (80, 100))
    # Untiled reference; the tiled ROI stage leaves skipped cells at NaN, so any read of one shows.
    full, _ = Refiner.from_model(model, device=device, tile_size=4096).runner._stage(image, incoming, 0.5, (160, 200))
    tiled = Refiner.from_model(model, device=device, roi_tile_size=32, roi_tile_margin=32).runner
    tiled._unencoded_fill = float("nan")
    encoded = []
    original_encode_tile = tiled._encode_tile
    tiled._encode_tile = lambda x: encoded.append(x.shape) or original_encode_tile(x)  # type: ignore[method-assign]
    roi, _ = tiled._stage(image, incoming, 0.5, (160, 200), roi=True)
    band = roi_band(resize_probability(incoming, (160, 200))[0, 0], radius=4)
    assert 1 < len(encoded) < 5 * 6, "some of the 5 x 6 tiles, not all, are encoded"
    assert torch.isfinite(roi).all()
    # Tiles see only 32 px of context, so they match the untiled pass closely but not exactly.
    assert (roi[0, 0][band] - full[0, 0][band]).abs().max() < 0.05


def test_api_default_is_the_cli_default_preset(device: str) -> None:
    from crm_cli.presets import DEFAULT_PRESET, PRESETS

    refiner = Refiner.from_model(make_tiny_model(seed=6), device=device)
    image, gt = synthetic_scene(160, 200)
    coarse = coarse_of(gt, 6)
    np.testing.assert_array_equal(refiner.refine(image, coarse),
                                  refiner.refine(image, coarse, preset=PRESETS[DEFAULT_PRESET]))


def test_the_minimum_stage_side_decides_which_stages_run(device: str) -> None:
    model = make_tiny_model(seed=7)
    image, gt = synthetic_scene(480, 640)  # stage 0.25 -> 120x160, 0.5 -> 240x320
    coarse = coarse_of(gt, 8)
    default = Refiner.from_model(model, device=device).refine_detailed(image, coarse, (0.25, 0.5, 1.0))
    assert [t.encode_s > 0 for t in default.timings] == [False, True, True]
    lower_limit = Refiner.from_model(model, device=device, min_stage_side=100)
    lower = lower_limit.refine_detailed(image, coarse, (0.25, 0.5, 1.0))
    assert [t.encode_s > 0 for t in lower.timings] == [True, True, True]


def test_after_a_skipped_stage_the_first_stage_that_runs_is_not_restricted_to_the_roi(device: str) -> None:
    refiner = Refiner.from_model(make_tiny_model(seed=8), device=device)
    image, gt = synthetic_scene(480, 640)  # stage 0.25 (120 px) is skipped
    coarse = coarse_of(gt, 8)
    np.testing.assert_array_equal(refiner.refine(image, coarse, (0.25, 0.5, 1.0), roi=True),
                                  refiner.refine(image, coarse, (0.5, 1.0), roi=True))
