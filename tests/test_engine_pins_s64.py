"""Session 64 mutation pins for engine.py, stage_geometry.py and onnx_runner.py: each test names the
mutant it kills (a change that the rest of the suite let through)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene

from crm_cli.checkpoint import sidecar_path
from crm_cli.engine import Refiner
from crm_cli.onnx_runner import OnnxStageRunner
from crm_cli.stage_geometry import (
    StageTiming,
    TiledRunner,
    check_tile_options,
    encode_windows,
    occupied_tiles,
    tile_multiple,
    tile_windows,
)

# 1. stage_geometry -----------------------------------------------------------------------------------------------


def test_tile_sides_and_margins_round_up_to_the_padding_multiple() -> None:
    """Pins tile_multiple rounding to nearest (17 -> 16) and a tile margin kept unrounded (5)."""
    assert [tile_multiple(n) for n in (0, 1, 16, 17, 24, 1000)] == [0, 16, 16, 32, 32, 1008]
    runner = TiledRunner(tile_size=1000, tile_margin=5, roi_tile_size=17, roi_tile_margin=1)
    assert (runner.tile_size, runner.tile_margin) == (1008, 16)
    assert (runner.roi_tile_size, runner.roi_tile_margin) == (32, 16)


def test_decode_budget_is_in_megabytes() -> None:
    """Pins decode_budget_mb << 10 (kilobytes)."""
    assert TiledRunner(decode_budget_mb=8).decode_budget == 8 * 1024 * 1024


def test_roi_windows_merge_as_many_tiles_as_the_window_holds_and_at_least_one() -> None:
    """Pins max(2, window // tile): a window smaller than two tiles merges none."""
    assert TiledRunner(roi_tile_size=192, roi_tile_margin=32, roi_window_size=100).tiling(roi=True) == (192, 32, 1)
    assert TiledRunner(roi_tile_size=192, roi_window_size=200).tiling(roi=True)[2] == 1
    assert TiledRunner(roi_tile_size=64, roi_window_size=200).tiling(roi=True)[2] == 3
    assert TiledRunner(tile_size=100, tile_margin=10).tiling(roi=False) == (112, 16, 1)


def test_an_unknown_tile_option_is_named_before_anything_loads(tmp_path: Path) -> None:
    """Pins check_tile_options skipping unknown names (the runner's own TypeError came only after loading)."""
    with pytest.raises(TypeError, match=r"unknown tile option 'tile_sizes'; the options are tile_size"):
        check_tile_options({"tile_size": 64, "tile_sizes": 512})
    # Missing weights would be a WeightsError: the option is refused first.
    with pytest.raises(TypeError, match="unknown tile option"):
        Refiner(tmp_path / "missing.safetensors", device="cpu", tile_sizes=512)


def test_occupied_tiles_has_one_entry_per_tile() -> None:
    """Pins rows = height // tile + 1 (an extra row and column when the sides are tile multiples)."""
    needed = np.zeros((8, 12), bool)
    needed[5, 9] = True
    assert occupied_tiles(needed, 4) == [[False, False, False], [False, False, True]]
    assert occupied_tiles(np.ones((9, 5), bool), 4) == [[True, True], [True, True], [True, True]]


class _RecordingInput:
    """A padded stage input whose crops are their own bounds (so the encoder sees where it was cut)."""

    def __init__(self, height: int, width: int) -> None:
        self.shape = (height, width)
        self.crops: list[tuple[int, int, int, int]] = []

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> tuple[int, int, int, int]:
        self.crops.append((y0, y1, x0, x1))
        return (y0, y1, x0, x1)


def _cell_ids(bounds: tuple[int, int, int, int]) -> np.ndarray:
    """An 'encoding' of a crop: each latent cell holds its global cell id (row * 100 + column)."""
    y0, y1, x0, x1 = bounds
    rows = np.arange(y0 // 2, y1 // 2)[:, None, None]
    cols = np.arange(x0 // 2, x1 // 2)[None, :, None]
    return (rows * 100 + cols).astype(np.float32)


def test_encode_windows_crops_each_window_with_its_margin_and_pastes_its_own_cells() -> None:
    """Pins a margin cut short on one side, and window cells taken from the wrong place in the crop."""
    stage = _RecordingInput(48, 48)
    latent = np.full((24, 24, 1), -1.0, np.float32)
    windows = tile_windows(48, 48, 16)
    encode_windows(latent, stage, windows, 8, _cell_ids)
    assert len(stage.crops) == 9
    assert stage.crops[0] == (0, 24, 0, 24)  # clipped at the top-left
    assert stage.crops[4] == (8, 40, 8, 40)  # the middle window: 8 px of context on every side
    assert stage.crops[8] == (24, 48, 24, 48)  # clipped at the bottom-right
    np.testing.assert_array_equal(latent[..., 0], np.arange(24)[:, None] * 100 + np.arange(24)[None, :])


# 2. onnx_runner --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny weights with its encoder exported beside it."""
    pytest.importorskip("onnx")
    from crm_cli.onnx_export import export_encoder

    weights = tmp_path_factory.mktemp("exported") / tiny_weights.name
    shutil.copyfile(tiny_weights, weights)
    shutil.copyfile(sidecar_path(tiny_weights), sidecar_path(weights))
    export_encoder(weights)
    return weights


@pytest.fixture(scope="module")
def onnx_runner(exported: Path) -> OnnxStageRunner:
    """The onnx backend's runner, with tiles small enough that a 96x120 stage is tiled."""
    runner = Refiner(exported, device="cpu", backend="onnx", tile_size=64, tile_margin=16).runner
    assert isinstance(runner, OnnxStageRunner)
    return runner


def test_onnx_as_array_resizes_to_the_size_asked() -> None:
    """Pins OnnxStageRunner.as_array ignoring ``size`` (the engine's skipped stages rely on it)."""
    small = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    resized = OnnxStageRunner.as_array(None, small, (4, 6))  # type: ignore[arg-type]
    assert resized.shape == (4, 6) and resized.dtype == np.float32
    np.testing.assert_array_equal(resized[:, 0], 0.0)
    np.testing.assert_array_equal(resized[:, -1], 1.0)
    assert OnnxStageRunner.as_array(None, small) is small  # type: ignore[arg-type]


def test_a_latent_of_the_same_size_reuses_the_kept_block(onnx_runner: OnnxStageRunner) -> None:
    """Pins a fresh block allocated when the kept one is exactly large enough (<= for <)."""
    first = onnx_runner._latent_buffer((6, 10, 8))
    again = onnx_runner._latent_buffer((10, 6, 8))
    assert again.shape == (10, 6, 8) and np.shares_memory(first, again)


def test_release_memory_lets_the_kept_latent_go(onnx_runner: OnnxStageRunner) -> None:
    """Pins OnnxStageRunner.release_memory keeping the latent buffer."""
    image, gt = synthetic_scene(96, 120)
    mask = coarse_of(gt, 6).astype(np.float32) / np.float32(255)
    onnx_runner._stage(image, mask, 1.0, (96, 120))  # 160 x 192 padded: tiled, so the buffer is used
    assert onnx_runner._latent_store is not None
    assert onnx_runner.release_memory() is True
    assert onnx_runner._latent_store is None


def test_a_full_stage_mask_is_answered_without_the_model(onnx_runner: OnnxStageRunner) -> None:
    """Pins the all-ones short cut of OnnxStageRunner._stage dropped (the model ran and left it below 1)."""
    image, _ = synthetic_scene(40, 56)
    for fill in (0.0, 1.0):
        prob, timing = onnx_runner._stage(image, np.full((40, 56), fill, np.float32), 0.5, (40, 56), roi=False)
        assert prob.dtype == np.float32 and (prob == fill).all()
        assert (timing.ratio, timing.encode_s, timing.decode_s) == (0.5, 0.0, 0.0)


def test_a_stage_input_wider_than_a_tile_is_tiled_even_when_it_is_low(exported: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins ``height <= tile or width <= tile`` for ``and`` (a long strip encoded in one piece)."""
    runner = Refiner(exported, device="cpu", backend="onnx", tile_size=96, tile_margin=16).runner
    calls: list[tuple[int, ...]] = []
    encode_tile = runner._encode_tile
    monkeypatch.setattr(runner, "_encode_tile", lambda x: calls.append(x.shape) or encode_tile(x))
    image, gt = synthetic_scene(20, 200)
    mask = coarse_of(gt, 4).astype(np.float32) / np.float32(255)
    prob, _ = runner._stage(image, mask, 1.0, (20, 200))
    # Padded 96 x 272: three windows of 96, 96 and 80 columns, each with up to 16 px of context.
    assert [shape[2:] for shape in calls] == [(96, 112), (96, 128), (96, 96)]
    assert prob.shape == (20, 200)


def test_the_mirrored_stage_adds_both_runs_timings(onnx_runner: OnnxStageRunner,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins _mirrored_stage reporting the first run's decode time only."""
    image, _ = synthetic_scene(8, 10)
    mask = np.zeros((8, 10), np.float32)
    mask[:, :3] = 1.0
    seen: list[np.ndarray] = []

    def stage(image: np.ndarray, mask: np.ndarray, ratio: float, target_hw: tuple[int, int], roi: bool = False,
              band_px: float | None = None) -> tuple[np.ndarray, StageTiming]:
        seen.append(mask)
        return mask.copy(), StageTiming(ratio, 1.0 + len(seen), 10.0 * len(seen))

    monkeypatch.setattr(onnx_runner, "_stage", stage)
    prob, timing = onnx_runner._mirrored_stage(image, mask, 0.5, (8, 10))
    assert (timing.ratio, timing.encode_s, timing.decode_s) == (0.5, 5.0, 30.0)
    np.testing.assert_array_equal(seen[1], mask[:, ::-1])  # the second run sees the mirrored mask
    np.testing.assert_array_equal(prob, mask)  # mirrored back before the average


def test_a_stage_times_its_encoder_and_decoder_apart(onnx_runner: OnnxStageRunner,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins StageTiming(ratio, decode, encode): the two times swapped."""
    from types import SimpleNamespace

    from crm_cli import onnx_runner as module

    clock = iter([100.0, 101.0, 104.0])  # start, encoded, decoded
    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    image, gt = synthetic_scene(40, 56)
    mask = coarse_of(gt, 4).astype(np.float32) / np.float32(255)
    _, timing = onnx_runner._stage(image, mask, 1.0, (40, 56))
    assert (timing.ratio, timing.encode_s, timing.decode_s) == (1.0, 1.0, 3.0)


def test_stages_of_one_photo_with_the_same_height_keep_their_own_padded_photo(onnx_runner: OnnxStageRunner) -> None:
    """Pins the padded photo memoized by stage height alone (a strip's 0.25 and 0.5 stages are both 1 px high)."""
    from crm_cli.photo_memo import same_photo

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (2, 160, 3)).astype(np.uint8)
    mask = np.zeros((2, 160), np.float32)
    mask[:, :70] = 1.0
    alone = [onnx_runner._stage(image, mask, ratio, (2, 160))[0] for ratio in (0.25, 0.5)]
    with same_photo(image):
        shared = [onnx_runner._stage(image, mask, ratio, (2, 160))[0] for ratio in (0.25, 0.5)]
    for got, expected in zip(shared, alone, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_an_onnx_refiner_of_relative_weights_opens_its_encoder_from_anywhere(
        exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the encoder path kept relative: a copy unpickled in another directory no longer finds it."""
    import pickle

    monkeypatch.chdir(exported.parent)
    refiner = Refiner(exported.name, device="cpu", backend="onnx")
    assert refiner.runner.encoder_path == exported.with_name("tiny.encoder.onnx")
    data = pickle.dumps(refiner)
    monkeypatch.chdir(tmp_path)
    assert pickle.loads(data).runner.encoder_path.is_file()


# 3. engine -------------------------------------------------------------------------------------------------------


def test_a_fixed_schedule_with_the_guard_frees_the_first_fitting_stages_distance() -> None:
    """Pins plan_schedule taking the guard distance of the last ratio instead of the first stage that runs."""
    from crm_cli.engine import plan_schedule
    from crm_cli.presets import get_preset

    image, gt = synthetic_scene(240, 320)
    foreground = coarse_of(gt, 8) > 0
    settings = get_preset("fast").overridden((0.125, 0.25, 1.0), guard=True)
    plan = plan_schedule(settings, image, foreground, min_side=50)  # 0.125 -> 30 x 40: skipped
    assert plan.guard_px == 32.0 and not plan.final_only  # GUARD_CELLS / 0.25
    alone = plan_schedule(settings, image, foreground, min_side=100)  # no coarse stage fits
    assert alone.guard_px == 16.0 and alone.final_only  # MIN_FREE_PX


def test_resize_map_averages_areas_when_shrinking_and_interpolates_when_enlarging() -> None:
    """Pins resize_map always bilinear (a 3:1 shrink then samples one pixel of three), and (h, w) swapped."""
    from crm_cli.engine import resize_map

    stripes = np.tile(np.array([0, 1, 0, 1, 0, 1], np.float32), (3, 1))  # 3 x 6
    shrunk = resize_map(stripes, (1, 2))
    assert shrunk.shape == (1, 2)
    np.testing.assert_allclose(shrunk, [[1 / 3, 2 / 3]], atol=1e-6)
    grown = resize_map(np.array([[0.0, 1.0]], np.float32), (1, 4))
    np.testing.assert_allclose(grown, [[0.0, 0.25, 0.75, 1.0]], atol=1e-6)
    same = resize_map(np.eye(2, dtype=bool), (2, 2))
    assert same.dtype == np.float32 and same.tolist() == [[1.0, 0.0], [0.0, 1.0]]


def test_the_onnx_backend_takes_the_default_device(exported: Path) -> None:
    """Pins the onnx backend refusing device "auto" (the API's default) as if it were a GPU."""
    from crm_cli.engine import choose_backend

    encoder = exported.with_name("tiny.encoder.onnx")
    assert choose_backend(exported, "auto", "fp32", "onnx") == encoder
    assert choose_backend(exported, "cpu:0", "fp32", "onnx") == encoder
    assert Refiner(exported, backend="onnx").backend == "onnx"


@pytest.mark.parametrize(("possible", "devices", "on_cpu"), [
    (False, None, True),  # no driver: the CPU, torch not asked
    (True, ["cpu"], True),  # a driver and a CPU-only torch
    (True, ["cuda:0", "cpu"], False),  # a GPU torch can use
    (True, ImportError("no torch"), True),  # a driver and no torch to run a GPU with
    (True, OSError("libcudart"), True),
])
def test_auto_is_the_cpu_unless_torch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch, possible: bool,
                                                 devices: object, on_cpu: bool) -> None:
    """Pins _on_cpu's answers: any() for all() over torch's devices, and an import failure taken for a GPU."""
    import crm_cli.devices as devices_module
    from crm_cli.engine import _on_cpu

    def available() -> list[str]:
        if isinstance(devices, Exception):
            raise devices
        assert devices is not None, "torch was asked although no GPU is possible"
        return devices  # type: ignore[return-value]

    monkeypatch.setattr(devices_module, "accelerator_possible", lambda: possible)
    monkeypatch.setattr(devices_module, "available_devices", available)
    assert _on_cpu("auto") is on_cpu
    assert _on_cpu("cpu") is True and _on_cpu("cuda") is False


def test_partner_model_true_is_refused_before_the_weights_load(tmp_path: Path) -> None:
    """Pins the partner_model=True check dropped (the weights' WeightsError, or a wrapped TypeError, came first)."""
    with pytest.raises(TypeError, match=r"^partner_model must be a model, a checkpoint path, None or False, not True$"):
        Refiner(tmp_path / "missing.safetensors", device="cpu", partner_model=True)


@pytest.fixture(scope="module")
def tiny_refiner() -> Refiner:
    """A tiny random model on torch, on the CPU."""
    from conftest import make_tiny_model

    return Refiner.from_model(make_tiny_model(seed=3), device="cpu")


class _StageLog:
    """Records every stage a runner runs: (kind, ratio, target, roi, band_px)."""

    def __init__(self, runner: object, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, float, tuple[int, int], bool, float | None]] = []
        for kind in ("_stage", "_mirrored_stage"):
            original = getattr(runner, kind)

            def run(image: np.ndarray, mask: object, ratio: float, target_hw: tuple[int, int], roi: bool = False,
                    band_px: float | None = None, kind: str = kind, original: object = original) -> object:
                self.calls.append((kind, ratio, tuple(target_hw), roi, band_px))
                return original(image, mask, ratio, target_hw, roi=roi, band_px=band_px)  # type: ignore[operator]

            monkeypatch.setattr(runner, kind, run)


def test_an_empty_image_is_refused_whichever_side_is_zero(tiny_refiner: Refiner) -> None:
    """Pins the empty-image check needing both sides to be 0."""
    for height, width in ((0, 5), (5, 0)):
        with pytest.raises(ValueError, match=rf"^image is empty \({width}x{height}\)$"):
            tiny_refiner.refine(np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8))


def test_a_mask_at_one_half_has_no_foreground(tiny_refiner: Refiner) -> None:
    """Pins ``mask >= 0.5`` as the foreground (a mask of 0.5 and 0 is empty, as refine's docstring says)."""
    image, _ = synthetic_scene(48, 64)
    mask = np.zeros((48, 64), np.float32)
    mask[10:30, 20:40] = 0.5
    result = tiny_refiner.refine_detailed(image, mask)
    assert result.kept_given == "no_boundary"
    assert result.probability.dtype == np.float32 and not result.probability.any()


def test_full_decode_decodes_every_stage_at_full_size(tiny_refiner: Refiner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins full_decode ignored by _run_stages (intermediate stages decoded at the next stage's size)."""
    refiner = Refiner.from_model(tiny_refiner.runner.model, device="cpu", min_stage_side=0)
    log = _StageLog(refiner.runner, monkeypatch)
    image, gt = synthetic_scene(64, 96)
    coarse = coarse_of(gt, 4)
    refiner.refine(image, coarse, (0.25, 0.5, 1.0), roi=False, full_decode=True, guard=False)
    assert [call[2] for call in log.calls] == [(64, 96)] * 3
    log.calls.clear()
    refiner.refine(image, coarse, (0.25, 0.5, 1.0), roi=False, full_decode=False, guard=False)
    assert [call[2] for call in log.calls] == [(32, 48), (64, 96), (64, 96)]


def test_the_first_stage_is_decoded_whole_unless_a_band_is_set(tiny_refiner: Refiner,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins settings.roi used for the first stage too, and a first band drawn with roi off."""
    refiner = Refiner.from_model(tiny_refiner.runner.model, device="cpu", min_stage_side=0)
    log = _StageLog(refiner.runner, monkeypatch)
    image, gt = synthetic_scene(64, 96)
    coarse = coarse_of(gt, 4)
    refiner.refine(image, coarse, (0.25, 0.5, 1.0), roi=True, guard=False)
    assert [(call[3], call[4]) for call in log.calls] == [(False, None), (True, None), (True, None)]
    log.calls.clear()
    refiner.refine(image, coarse, (0.5, 1.0), roi=False, guard=True)  # the guard, but no ROI: no band
    assert [(call[3], call[4]) for call in log.calls] == [(False, None), (False, None)]
    log.calls.clear()
    result = refiner.refine_detailed(image, coarse, (0.5, 1.0), roi=True, guard=True)
    assert result.guard_px is not None
    assert [(call[3], call[4]) for call in log.calls] == [(True, 3 * result.guard_px), (True, None)]


def test_only_the_last_stage_is_mirrored(tiny_refiner: Refiner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins every stage of a mirrored schedule run mirrored."""
    import crm_cli.engine as engine
    from crm_cli.schedule import Schedule

    refiner = Refiner.from_model(tiny_refiner.runner.model, device="cpu", min_stage_side=0)
    log = _StageLog(refiner.runner, monkeypatch)
    monkeypatch.setattr(engine, "plan_schedule",
                        lambda *args: Schedule((0.25, 0.5, 1.0), 32.0, 0.0, mirror=True))
    image, gt = synthetic_scene(64, 96)
    result = refiner.refine_detailed(image, coarse_of(gt, 4), snap=False)
    assert result.mirrored
    assert [call[:2] for call in log.calls[:3]] == [("_stage", 0.25), ("_stage", 0.5), ("_mirrored_stage", 1.0)]
    assert [call[1] for call in log.calls if call[0] == "_mirrored_stage"] == [1.0]  # (it runs _stage twice)


def test_a_change_confidence_right_at_the_threshold_is_half_taken_not_kept_coarse(
        tiny_refiner: Refiner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins kept_coarse = confidence <= threshold."""
    import crm_cli.engine as engine

    threshold = tiny_refiner.final_stage.min_change_confidence
    monkeypatch.setattr(engine, "change_confidence", lambda probability, reference: threshold)
    image, gt = synthetic_scene(64, 96)
    result = tiny_refiner.refine_detailed(image, coarse_of(gt, 4), snap=False)
    assert result.change_confidence == threshold
    assert result.change_weight == 0.5 and not result.kept_coarse


def test_no_boundary_shift_is_measured_without_a_min_shift(tiny_refiner: Refiner) -> None:
    """Pins keep_precise_boundary run with a min_shift of 0 (fixed schedules set none)."""
    image, gt = synthetic_scene(64, 96)
    result = tiny_refiner.refine_detailed(image, coarse_of(gt, 4), (0.5, 1.0))
    assert result.boundary_shift is None and not result.boundary_kept


def test_a_host_memory_shortage_inside_a_refinement_is_a_memory_error(tiny_refiner: Refiner,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins refine_detailed passing torch's CPU allocator RuntimeError through as it is."""
    text = "[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: you tried 9 GB"

    def short(*args: object, **kwargs: object) -> None:
        raise RuntimeError(text)

    monkeypatch.setattr(tiny_refiner, "_refine_detailed", short)
    image, gt = synthetic_scene(16, 16)
    with pytest.raises(MemoryError, match="^DefaultCPUAllocator: can't allocate memory: you tried 9 GB$") as caught:
        tiny_refiner.refine(image, gt)
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_a_torch_refiner_loaded_here_runs_channels_last_on_the_cpu(tiny_weights: Path) -> None:
    """Pins channels_last on by default for CUDA only (the CPU's oneDNN kernels gain from it too)."""
    from conftest import make_tiny_model

    assert Refiner(tiny_weights, device="cpu", backend="torch").runner.channels_last is True
    assert Refiner(tiny_weights, device="cpu", backend="torch", channels_last=False).runner.channels_last is False
    assert Refiner.from_model(make_tiny_model(), device="cpu").runner.channels_last is False


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.mark.parametrize(("problem", "warned"), [("not installed", False),
                                                 ("it does not import (OSError: libgomp.so.1)", True)])
def test_auto_without_a_working_onnxruntime_takes_torch_and_says_why_only_if_installed(
        exported: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, problem: str,
        warned: bool) -> None:
    """Pins the fallback warning given for "not installed" too, and the encoder named missing when it is there."""
    import crm_cli.engine as engine

    monkeypatch.setattr(engine, "onnxruntime_problem", lambda: problem)
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert engine.choose_backend(exported, "cpu", "fp32", "auto") is None
        assert Refiner(exported, device="cpu").backend == "torch"
    expected = f"onnxruntime is installed, but {problem}: refining with torch (slower on a CPU)"
    assert _warnings(caplog) == ([expected] * 2 if warned else [])


def test_a_missing_encoder_is_not_warned_of_where_it_would_not_run(exported: Path, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Pins the missing-encoder warning given for a reduced precision, which the onnx backend never runs."""
    weights = tmp_path / exported.name
    shutil.copyfile(exported, weights)
    shutil.copyfile(sidecar_path(exported), sidecar_path(weights))  # names tiny.encoder.onnx, not copied
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert Refiner(weights, device="cpu", precision="bf16").backend == "torch"
    assert len(_warnings(caplog)) == 1 and _warnings(caplog)[0].startswith("precision bf16 is much slower")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert Refiner(weights, device="cpu").backend == "torch"
    assert len(_warnings(caplog)) == 1 and "the exported encoder tiny.encoder.onnx that its sidecar names is missing" \
        in _warnings(caplog)[0]


def test_a_reduced_precision_is_warned_of_once_with_a_partner(tiny_weights: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Pins the partner's build warning again of the precision that the Refiner's own warning named."""
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        refiner = Refiner(tiny_weights, device="cpu", backend="torch", precision="bf16", partner_model=tiny_weights)
    assert refiner.partner is not None
    assert [text.split(" is much")[0] for text in _warnings(caplog)] == ["precision bf16"]


def test_release_memory_empties_the_partners_encoder_arena_too(exported: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins Refiner.release_memory leaving the partner's ONNX Runtime arena as it was."""
    refiner = Refiner(exported, device="cpu", backend="onnx", partner_model=exported)
    assert refiner.partner is not None and refiner.partner.runner is not refiner.runner
    released: list[str] = []
    for name, runner in (("main", refiner.runner), ("partner", refiner.partner.runner)):
        monkeypatch.setattr(runner, "release_memory", lambda name=name: released.append(name) or True)
    refiner.release_memory()
    assert released == ["main", "partner"]


def test_read_only_inputs_are_copied_when_only_the_partner_runs_on_torch(exported: Path, tiny_weights: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the copy made for a torch main model only (a torch partner runs the region pass on the same arrays)."""
    import crm_cli.engine as engine

    refiner = Refiner(exported, device="cpu", partner_model=tiny_weights)  # no encoder beside the partner: torch
    assert refiner.backend == "onnx" and refiner.partner is not None and refiner.partner.backend == "torch"
    planned: list[np.ndarray] = []
    plan_schedule = engine.plan_schedule

    def recording(settings: object, image: np.ndarray, *rest: object) -> object:
        planned.append(image)
        return plan_schedule(settings, image, *rest)

    monkeypatch.setattr(engine, "plan_schedule", recording)
    image, gt = synthetic_scene(48, 64)
    image.flags.writeable = False
    result = refiner.refine_detailed(image, coarse_of(gt, 4))
    assert not result.by_partner and len(planned) == 1  # auto's own refinement, by the main model
    assert not np.shares_memory(planned[0], image) and planned[0].flags.writeable


def _region_pass(refiner: Refiner, monkeypatch: pytest.MonkeyPatch, removed: slice, added: slice | None,
                 holes: slice | None) -> tuple[object, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """_correct_regions on a 20 x 20 mask whose top 10 rows are foreground (200 px: at most 40 may
    change, REGION_MAX_SHARE), with the region pass proposing to remove the ``removed`` rows and add
    the ``added`` ones, every change taken as a region, and the ``holes`` rows lying on the photo's edges."""
    import crm_cli.engine as engine
    from crm_cli.engine import RefineResult
    from crm_cli.presets import get_preset

    mask = np.zeros((20, 20), np.float32)
    mask[:10] = 1.0
    proposal = mask.copy()
    proposal[removed] = 0.0
    changed = np.zeros((20, 20), bool)
    changed[removed] = True
    if added is not None:
        proposal[added] = 1.0
        changed[added] = True
    on_edges = np.zeros((20, 20), bool)
    if holes is not None:
        on_edges[holes] = True
    monkeypatch.setattr(refiner, "_run_stages", lambda *args, **kwargs: proposal.copy())
    monkeypatch.setattr(engine, "apply_guard", lambda probability, *args, **kwargs: (probability, 0))
    monkeypatch.setattr(engine, "region_changes", lambda proposed, foreground, radius, attached: changed.copy())
    monkeypatch.setattr(engine, "holes_on_edges", lambda image, filled: on_edges & filled)
    result = RefineResult(probability=np.empty(0, np.float32))
    image = np.zeros((20, 20, 3), np.uint8)
    return result, refiner._correct_regions(image, mask, mask > 0.5, (1.0,), get_preset("auto"), result)


def test_a_region_pass_changing_exactly_the_largest_share_is_taken(tiny_refiner: Refiner,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins ``proposed_pixels >= most_pixels`` refusing a pass of exactly REGION_MAX_SHARE."""
    result, (corrected, binary, taken) = _region_pass(tiny_refiner, monkeypatch, slice(0, 2), None, None)
    assert (result.region_pixels, result.region_refused, result.holes_kept) == (40, 0, 0)  # 40 = 0.2 x 200
    assert taken is not None and np.count_nonzero(taken) == 40 and taken[:2].all()
    assert not corrected[:2].any() and corrected[2:10].all() and np.array_equal(binary, corrected > 0.5)


def test_holes_on_the_edges_are_left_open_when_the_removals_are_exactly_the_largest_share(
        tiny_refiner: Refiner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins ``count(taken & ~proposed) < most_pixels``: the holes kept open no longer counted out."""
    result, (corrected, _, taken) = _region_pass(tiny_refiner, monkeypatch, slice(0, 2), slice(15, 17),
                                                 slice(15, 17))
    assert (result.region_pixels, result.region_refused, result.holes_kept) == (40, 0, 40)
    assert taken is not None and not taken[15:17].any() and not corrected[15:17].any()
    refused, (kept, _, none) = _region_pass(tiny_refiner, monkeypatch, slice(0, 3), None, None)  # 60 px > 40
    assert (refused.region_pixels, refused.region_refused) == (0, 60) and none is None and kept[:10].all()


def test_an_empty_mask_costs_no_look_at_the_photo(tiny_refiner: Refiner, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins plan_schedule measuring trust and noise for a mask with no boundary (an empty video frame)."""
    import crm_cli.engine as engine

    measured: list[object] = []
    monkeypatch.setattr(engine, "trust_and_noise", lambda *args: measured.append(args) or (0.0, None))
    image, gt = synthetic_scene(48, 64)
    for mask in (np.zeros((48, 64), np.uint8), np.full((48, 64), 255, np.uint8)):
        result = tiny_refiner.refine_detailed(image, mask, (0.5, 1.0), guard=True)
        assert result.kept_given == "no_boundary" and result.trust == 0.0
    assert measured == []
    tiny_refiner.refine_detailed(image, coarse_of(gt, 4), (0.5, 1.0), guard=True)
    assert len(measured) == 1


def test_the_partners_region_pass_runs_in_the_partners_inference_context(exported: Path, tiny_weights: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins Refiner._inference entering the main runner's context only (a torch partner beside an onnx
    main model then ran its region pass with autograd on)."""
    import torch

    import crm_cli.engine as engine
    from crm_cli.schedule import Schedule

    refiner = Refiner(exported, device="cpu", partner_model=tiny_weights, min_stage_side=0)
    assert refiner.backend == "onnx" and refiner.partner is not None and refiner.partner.backend == "torch"
    partner_runner = refiner.partner.runner
    modes: list[bool] = []
    stage = partner_runner._stage

    def recording(*args: object, **kwargs: object) -> object:
        modes.append(torch.is_inference_mode_enabled())
        return stage(*args, **kwargs)

    monkeypatch.setattr(partner_runner, "_stage", recording)
    monkeypatch.setattr(engine, "plan_schedule",
                        lambda *args: Schedule((1.0,), 16.0, 0.0, regions=(0.25, 0.5), final_only=True))
    image, gt = synthetic_scene(96, 128)
    result = refiner.refine_detailed(image, coarse_of(gt, 4), snap=False)
    assert result.regions == (0.25, 0.5) and not result.by_partner
    assert modes == [True, True]
