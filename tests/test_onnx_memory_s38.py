"""The onnx backend's release_memory empties ONNX Runtime's CPU arena, which glibc's malloc_trim
cannot reach: one tiny encoding under the arena-shrink run option, on the same session, so the
outputs that follow are byte-identical to those before."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene

from crm_cli import engine
from crm_cli.checkpoint import sidecar_path
from crm_cli.engine import Refiner
from crm_cli.onnx_runner import OnnxStageRunner

# ONNX Runtime's run option (and its value for the CPU's arena) that frees the arena's unused regions.
ARENA_SHRINK_OPTION = "memory.enable_memory_arena_shrinkage"
ARENA_SHRINK_CPU = "cpu:0"

# Small tiles, so that a 96x120 refinement encodes in several tiles and uses the kept latent.
TILES = {"tile_size": 64, "tile_margin": 16, "roi_tile_size": 32, "roi_tile_margin": 32}


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


class RecordingSession:
    """An ONNX Runtime session that records the input shape and run options of every run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.runs: list[tuple[tuple[int, ...], Any]] = []

    def run(self, outputs: Any, feeds: dict[str, np.ndarray], run_options: Any = None) -> Any:
        self.runs.append((feeds["x"].shape, run_options))
        return self.session.run(outputs, feeds, run_options)


def shrink_flag(run_options: Any) -> str | None:
    """The arena-shrink entry of ONNX Runtime run options (None: no options, or no such entry)."""
    if run_options is None:
        return None
    try:
        return run_options.get_run_config_entry(ARENA_SHRINK_OPTION)
    except RuntimeError:  # ONNX Runtime's answer for an entry never set
        return None


def onnx_refiner(weights: Path) -> Refiner:
    refiner = Refiner(weights, device="cpu", backend="onnx", **TILES)
    assert isinstance(refiner.runner, OnnxStageRunner)
    return refiner


def scene() -> tuple[np.ndarray, np.ndarray]:
    image, gt = synthetic_scene(96, 120)
    return image, (coarse_of(gt, 6).astype(np.float32) / np.float32(255)).astype(np.float32)


def test_release_memory_runs_one_tiny_encoding_with_the_arena_shrink_flag(exported: Path) -> None:
    refiner = onnx_refiner(exported)
    runner = refiner.runner
    recorder = RecordingSession(runner.session)
    runner.session = recorder
    image, mask = scene()
    refiner.refine(image, mask, preset="quality")
    refinement_runs = len(recorder.runs)
    assert refinement_runs > 1 and all(shrink_flag(options) is None for _, options in recorder.runs)

    assert runner.release_memory() is True
    assert runner.session is recorder  # the same session: nothing is rebuilt
    assert len(recorder.runs) == refinement_runs + 1
    shape, options = recorder.runs[-1]
    assert shrink_flag(options) == ARENA_SHRINK_CPU
    assert shape == (1, 4, 80, 80)  # a one-pixel stage, padded: the smallest input a stage has

    refiner.refine(image, mask, preset="quality")  # the normal path carries no flag afterwards
    assert all(shrink_flag(options) is None for _, options in recorder.runs[refinement_runs + 1:])


@pytest.mark.parametrize("preset", ["quality", "balanced"])
def test_outputs_are_byte_identical_after_release_memory(exported: Path, preset: str) -> None:
    refiner = onnx_refiner(exported)
    image, mask = scene()
    before = refiner.refine_detailed(image, mask, preset=preset, keep_stages=True)
    assert refiner.runner.release_memory() is True
    after = refiner.refine_detailed(image, mask, preset=preset, keep_stages=True)
    assert after.probability.tobytes() == before.probability.tobytes()
    assert len(after.stages) == len(before.stages)
    for stage_after, stage_before in zip(after.stages, before.stages, strict=True):
        assert stage_after.tobytes() == stage_before.tobytes()
    fresh = onnx_refiner(exported).refine(image, mask, preset=preset)
    assert after.probability.tobytes() == fresh.tobytes()


def test_a_release_that_fails_is_false_not_an_error(exported: Path) -> None:
    class FailingSession:
        def run(self, *args: Any) -> Any:
            raise RuntimeError("onnxruntime failed")

    runner = onnx_refiner(exported).runner
    runner.session = FailingSession()
    assert runner.release_memory() is False


def test_refiner_release_memory_empties_the_encoder_arena_then_trims(exported: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Refiner.release_memory on the onnx backend: the arena first, then glibc's trim."""
    refiner = onnx_refiner(exported)
    events: list[str] = []
    recorder = RecordingSession(refiner.runner.session)
    refiner.runner.session = recorder
    release_arena = OnnxStageRunner.release_memory

    def recorded_release(runner: OnnxStageRunner) -> bool:
        events.append("arena")
        return release_arena(runner)

    monkeypatch.setattr(OnnxStageRunner, "release_memory", recorded_release)
    monkeypatch.setattr(engine, "release_free_heap", lambda: events.append("trim") or True)
    assert refiner.release_memory() is True
    assert events == ["arena", "trim"]
    assert [shrink_flag(options) for _, options in recorder.runs] == [ARENA_SHRINK_CPU]
