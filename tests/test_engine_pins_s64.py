"""Session 64 mutation pins for engine.py, stage_geometry.py and onnx_runner.py: each test names the
mutant it kills (a change that the rest of the suite let through)."""

from __future__ import annotations

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
    """Pins the partner_model=True check dropped (the main weights' WeightsError, or a wrapped TypeError,
    came instead)."""
    with pytest.raises(TypeError, match=r"^partner_model must be a model, a checkpoint path, None or False, not True$"):
        Refiner(tmp_path / "missing.safetensors", device="cpu", partner_model=True)
