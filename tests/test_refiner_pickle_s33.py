"""A Refiner on the onnx backend pickled and deep-copied (process pools, joblib, Dask).

Before: ``pickle.dumps(Refiner(device="cpu"))`` and ``copy.deepcopy`` raised onnxruntime's own
``TypeError: cannot pickle 'onnxruntime...InferenceSession' object``, where a torch Refiner pickled.
The copy carries its encoder's path and sha256 and reopens that file; a changed or vanished file is
a one-line WeightsError naming it."""

from __future__ import annotations

import copy
import json
import multiprocessing
import pickle
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene

from crm_cli.checkpoint import WeightsError, default_weights_path, sidecar_path
from crm_cli.engine import Refiner

pytest.importorskip("onnxruntime")

# Small tiles, so that even a small image is encoded in tiles into the latent the runner keeps.
SMALL_TILES = {"tile_size": 64, "tile_margin": 8, "roi_tile_size": 32, "roi_tile_margin": 8, "roi_window_size": 64}


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """(image, coarse uint8 0/255) at 96x128."""
    image, gt = synthetic_scene(96, 128, seed=3)
    return image, coarse_of(gt)


def shipped_weights() -> Path:
    """The shipped weights (the test is skipped without them or their exported encoder)."""
    weights = Path(default_weights_path())
    if not weights.exists():
        pytest.skip("no shipped weights")
    return weights


def copied_weights(folder: Path) -> tuple[Path, Path]:
    """The shipped weights, their sidecar and their exported encoder copied into ``folder``, with the
    partner and lone-stage weights their sidecar names (and those weights' own sidecar and encoder):
    (weights, encoder)."""
    weights = shipped_weights()
    sidecar = sidecar_path(weights)
    entries = json.loads(sidecar.read_text())
    encoder = weights.with_name(entries["onnx"]["file"])
    files = [weights, sidecar, encoder]
    for key in ("partner", "lone_stage"):
        if entries.get(key):
            helper = weights.with_name(entries[key]["file"])
            files += [helper, sidecar_path(helper), helper.with_name(json.loads(sidecar_path(helper).read_text())
                                                                    ["onnx"]["file"])]
    for path in files:
        shutil.copyfile(path, folder / path.name)
    return folder / weights.name, folder / encoder.name


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_an_onnx_refiner_pickles_and_deep_copies_with_its_options(how: str,
                                                                  scene: tuple[np.ndarray, np.ndarray]) -> None:
    shipped_weights()
    image, coarse = scene
    # partner_model=False: the shipped weights' own runner refines this photo (their partner would refine
    # a photo this small, and any fixed preset; the pair's copy is the next test's).
    refiner = Refiner(device="cpu", threads=1, partner_model=False, **SMALL_TILES)
    assert refiner.runner.backend == "onnx"
    expected = refiner.refine(image, coarse, preset="quality")
    assert refiner.runner._latent_store is not None  # a kept latent, which the copy must not carry
    twin = pickle.loads(pickle.dumps(refiner)) if how == "pickle" else copy.deepcopy(refiner)
    runner, original = twin.runner, refiner.runner
    assert runner.backend == "onnx" and runner is not original
    assert runner.session is not original.session
    assert runner.decoder_pool is not original.decoder_pool and runner._latent_store is None
    assert twin._lock is not refiner._lock
    assert runner.encoder_path == original.encoder_path and runner.encoder_sha256 == original.encoder_sha256
    assert runner.threads == 1
    assert {name: getattr(runner, name) for name in SMALL_TILES} == {name: getattr(original, name)
                                                                      for name in SMALL_TILES}
    assert twin.device_name == refiner.device_name
    assert twin.refine(image, coarse, preset="quality").tobytes() == expected.tobytes()
    assert refiner.refine(image, coarse, preset="quality").tobytes() == expected.tobytes()


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_the_shipped_pair_copies_with_its_partner(how: str, scene: tuple[np.ndarray, np.ndarray]) -> None:
    weights = shipped_weights()
    if not json.loads(sidecar_path(weights).read_text()).get("partner"):
        pytest.skip("the shipped weights have no partner")
    image, coarse = scene
    refiner = Refiner(device="cpu", threads=1, **SMALL_TILES)
    assert refiner.partner is not None and refiner.partner.backend == "onnx"
    expected = refiner.refine(image, coarse, preset="quality")  # a fixed preset: the partner's
    assert refiner.partner.runner._latent_store is not None and refiner.runner._latent_store is None
    twin = pickle.loads(pickle.dumps(refiner)) if how == "pickle" else copy.deepcopy(refiner)
    assert twin.partner is not None and twin.partner.runner is not refiner.partner.runner
    assert twin.partner.runner.session is not refiner.partner.runner.session
    assert twin.partner.runner._latent_store is None and twin.partner.runner.threads == 1
    assert twin.partner_below_side == refiner.partner_below_side == 1000
    assert twin.partner_weights_info == refiner.partner_weights_info
    assert twin.refine(image, coarse, preset="quality").tobytes() == expected.tobytes()


def test_a_pickled_onnx_refiner_carries_no_encoder_and_no_latent(scene: tuple[np.ndarray, np.ndarray]) -> None:
    # The encoder is reopened from its file, and the kept latent is a buffer: neither travels.
    shipped_weights()
    image, coarse = scene
    refiner = Refiner(device="cpu", **SMALL_TILES)
    refiner.refine(image, coarse, preset="quality")
    assert len(pickle.dumps(refiner)) < refiner.runner.encoder_path.stat().st_size // 4


def test_a_default_cpu_refiner_runs_in_a_spawned_process_pool(scene: tuple[np.ndarray, np.ndarray]) -> None:
    shipped_weights()
    image, coarse = scene
    refiner = Refiner(device="cpu")
    assert refiner.runner.backend == "onnx"
    expected = refiner.refine(image, coarse)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        # The bound method pickles the Refiner itself into the worker.
        result = pool.submit(refiner.refine, image, coarse).result()
    assert result.tobytes() == expected.tobytes()


def test_an_onnx_refiner_whose_encoder_changed_since_pickling_is_refused(tmp_path: Path) -> None:
    weights, encoder = copied_weights(tmp_path)
    refiner = Refiner(weights, device="cpu")
    assert refiner.runner.backend == "onnx"
    data = pickle.dumps(refiner)
    original = encoder.read_bytes()
    encoder.write_bytes(original + b"\0")
    with pytest.raises(WeightsError, match=r"sha256 .* is not that of the exported encoder this Refiner was pickled "
                                           r"with .*the file changed since") as caught:
        pickle.loads(data)
    assert str(encoder) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(WeightsError, match="the file changed since"):
        copy.deepcopy(refiner)
    encoder.write_bytes(original)
    assert pickle.loads(data).runner.encoder_sha256 == refiner.runner.encoder_sha256


def test_an_onnx_refiner_whose_encoder_vanished_since_pickling_is_refused(tmp_path: Path) -> None:
    weights, encoder = copied_weights(tmp_path)
    data = pickle.dumps(Refiner(weights, device="cpu"))
    encoder.unlink()
    with pytest.raises(WeightsError, match="cannot read the exported encoder this Refiner was pickled with") as caught:
        pickle.loads(data)
    assert str(encoder) in str(caught.value) and "\n" not in str(caught.value)
