"""The torch-free CPU backend (ONNX Runtime encoder + NumPy decoder) against the torch backend.

The encoder graph comes from ``onnx_export``; ``onnx_runner.OnnxStageRunner`` must run the very
stages ``stages.StageRunner`` runs, to float rounding, and ``engine.choose_backend`` picks it only
when the weights' sidecar ties an intact exported encoder to them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import coarse_of, make_tiny_model, synthetic_scene

from crm_cli.checkpoint import (
    WeightsError,
    WeightsSidecar,
    default_weights_path,
    load_model,
    onnx_encoder_path,
    sha256_file,
    sidecar_path,
    verify_encoder,
)
from crm_cli.engine import Refiner, choose_backend
from crm_cli.model.decoder import n_latent
from crm_cli.onnx_runner import DecoderPool, NumpyDecoder
from crm_cli.stage_geometry import STAGE_PAD

ATOL = 1e-4  # torch (BatchNorm folded by crm) against ONNX Runtime (BatchNorm folded by ORT)
# The tiny random model's logits stay near 0, so its probabilities move little: 1e-4 would let a
# 0.1% error in the logits through. Measured differences are ~1e-7.
TINY_ATOL = 1e-5


def copy_weights(weights: Path, folder: Path, with_onnx: bool = False) -> Path:
    """Copy a checkpoint, its sidecar (and, with ``with_onnx``, its exported encoder) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / weights.name
    shutil.copyfile(weights, out)
    shutil.copyfile(sidecar_path(weights), sidecar_path(out))
    if with_onnx:
        encoder = weights.with_name(weights.stem + ".encoder.onnx")
        shutil.copyfile(encoder, folder / encoder.name)
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def exported(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny weights with its encoder exported beside it (the session fixture stays untouched)."""
    pytest.importorskip("onnx")
    from crm_cli.onnx_export import export_encoder

    weights = copy_weights(tiny_weights, tmp_path_factory.mktemp("exported"))
    export_encoder(weights)
    return weights


@pytest.fixture(scope="module")
def refiners(exported: Path) -> dict[str, Refiner]:
    """The exported tiny weights on each backend, on the CPU."""
    return {backend: Refiner(exported, device="cpu", backend=backend) for backend in ("onnx", "torch")}


def padded_latent(n_stage: int, pad: int = STAGE_PAD) -> int:
    """Latent cells along an axis of a stage padded by ``pad`` on both sides, up to a multiple of 16."""
    return n_latent(-(-(n_stage + 2 * pad) // 16) * 16)


def float_mask(mask: np.ndarray) -> np.ndarray:
    return (mask.astype(np.float32) / np.float32(255)).astype(np.float32)


# 1. The exported graph -------------------------------------------------------------------------------------------


def test_exported_encoder_matches_torch_on_dynamic_sizes_and_is_recorded_deterministically(
        tiny_weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import onnxruntime

    from crm_cli.onnx_export import export_encoder

    weights = copy_weights(tiny_weights, tmp_path)
    sidecar_before = read_json(sidecar_path(weights))
    assert "onnx" not in sidecar_before
    entry = export_encoder(weights)
    path = tmp_path / "tiny.encoder.onnx"
    assert path.is_file() and entry["file"] == path.name

    sidecar = read_json(sidecar_path(weights))
    assert sidecar["onnx"] == entry
    assert entry["weights_sha256"] == sidecar["sha256"] == sha256_file(weights) == sidecar_before["sha256"]
    assert entry["sha256"] == sha256_file(path)
    assert entry["opset"] == 17
    assert {k: v for k, v in sidecar.items() if k != "onnx"} == sidecar_before  # nothing else changed
    assert onnx_encoder_path(weights) == path

    model, _ = load_model(weights)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    # Neither size is the traced 256 x 256, one is larger: H and W must be dynamic, independently.
    for height, width in ((64, 96), (288, 176)):
        x = torch.randn(1, 4, height, width, generator=generator)
        with torch.no_grad():
            expected = model.encode(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        assert got.shape == expected.shape == (1, height // 2, width // 2, model.decoder.hidden_dim)
        assert expected.std() > 1e-3  # not a degenerate comparison
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(got, expected, atol=1e-4 * float(np.abs(expected).max()), rtol=0)  # to its scale

    import onnx

    # The projection to G is a 1x1 Conv: as an Einsum ONNX Runtime ran it at 30% of the encoder's time.
    op_types = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "Einsum" not in op_types and "Conv" in op_types

    first = path.read_bytes()
    again = export_encoder(weights)
    assert path.read_bytes() == first, "exporting the same weights twice gave different bytes"
    assert again == entry and read_json(sidecar_path(weights)) == sidecar


# 2. The NumPy decoder --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decoders(tiny_weights: Path) -> tuple[NumpyDecoder, torch.nn.Module]:
    model, info = load_model(tiny_weights)
    return NumpyDecoder.from_checkpoint(tiny_weights, info.config), model.decoder


@pytest.mark.parametrize(("n_target", "n_stage", "pad", "axis"), [
    (200, 100, STAGE_PAD, 0),  # enlarging
    (50, 100, STAGE_PAD, 1),  # shrinking
    (100, 100, STAGE_PAD, 1),  # same size
    (37, 91, STAGE_PAD, 0),  # a ratio with no short expansion
    (60, 20, 0, 1),  # no padding: supports clamp onto one cell at both ends
])
def test_numpy_axis_table_equals_torch(decoders, n_target: int, n_stage: int, pad: int,  # noqa: ANN001
                                       axis: int) -> None:
    numpy_decoder, torch_decoder = decoders
    latent = padded_latent(n_stage, pad)
    got = numpy_decoder.axis_table(n_target, n_stage, latent, pad, axis)
    with torch.no_grad():
        expected = torch_decoder.axis_table(n_target, n_stage, latent, pad, axis)
    assert got.index.shape == (2, n_target) and got.term.shape == (2, n_target, torch_decoder.hidden_dim)
    np.testing.assert_array_equal(got.index, expected.index.numpy())
    np.testing.assert_allclose(got.weight, expected.weight.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got.term, expected.term.numpy(), atol=1e-6, rtol=0)
    if pad == 0:
        clamped = got.index[0] == got.index[1]
        assert clamped.any() and (got.weight[:, clamped] == 0.5).all()


def test_numpy_decoder_logits_equal_torch_in_points_dense_and_any_band(decoders) -> None:  # noqa: ANN001
    numpy_decoder, torch_decoder = decoders
    target, stage = (90, 120), (45, 60)
    shape = (padded_latent(stage[0]), padded_latent(stage[1]))  # stage padded to 112 x 128
    assert shape == (56, 64)
    rng = np.random.default_rng(1)
    g = rng.normal(0.0, 1.0, (*shape, torch_decoder.hidden_dim)).astype(np.float32)
    g_torch = torch.from_numpy(g.copy()).unsqueeze(0)
    with torch.no_grad():
        dense_expected = torch_decoder.decode(g_torch, target, stage, STAGE_PAD)[0].numpy()
        rows_t = torch_decoder.axis_table(target[0], stage[0], shape[0], STAGE_PAD, axis=0)
        cols_t = torch_decoder.axis_table(target[1], stage[1], shape[1], STAGE_PAD, axis=1)
        ys = rng.integers(0, target[0], 500)
        xs = rng.integers(0, target[1], 500)
        points_expected = torch_decoder.decode_points(g_torch, rows_t, cols_t, torch.from_numpy(ys),
                                                      torch.from_numpy(xs))[0].numpy()
    assert dense_expected.std() > 1e-3  # the logits vary: not a constant comparison

    dense = numpy_decoder.decode(g, target, stage, STAGE_PAD)
    assert dense.shape == target and dense.dtype == np.float32
    np.testing.assert_allclose(dense, dense_expected, atol=1e-5, rtol=0)

    rows = numpy_decoder.axis_table(target[0], stage[0], shape[0], STAGE_PAD, axis=0)
    cols = numpy_decoder.axis_table(target[1], stage[1], shape[1], STAGE_PAD, axis=1)
    points = numpy_decoder.decode_points(g, rows, cols, ys, xs)
    assert points.shape == (500,)
    np.testing.assert_allclose(points, points_expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(points, dense[ys, xs], atol=1e-5, rtol=0)

    # Row bands of 7 rows (13 bands), of one row, and one band for the whole grid agree, serial or
    # on a pool of threads; so do scattered points in chunks of 7 (the last one short) and in one.
    one_band = numpy_decoder.decode(g, target, stage, STAGE_PAD, chunk=1 << 30)
    scattered_once = numpy_decoder.decode_scattered(g, rows, cols, ys, xs, chunk=1 << 30)
    np.testing.assert_allclose(scattered_once, points, atol=1e-6, rtol=0)
    pool = DecoderPool(workers=3)
    try:
        for chunk in (7 * target[1], 1):
            for on in (None, pool):
                np.testing.assert_allclose(numpy_decoder.decode(g, target, stage, STAGE_PAD, on, chunk), one_band,
                                           atol=1e-6, rtol=0)
        for on in (None, pool):
            np.testing.assert_allclose(numpy_decoder.decode_scattered(g, rows, cols, ys, xs, on, chunk=7),
                                       scattered_once, atol=1e-6, rtol=0)
    finally:
        pool.close()
    np.testing.assert_allclose(one_band, dense, atol=1e-6, rtol=0)
    assert np.array_equal(g_torch[0].numpy(), g), "decoding wrote into the latent"


def test_decoder_pool_runs_every_job_with_one_blas_thread_and_reraises() -> None:
    from threadpoolctl import threadpool_info

    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    seen: dict[int, list[int]] = {}

    def job(start: int) -> None:
        seen[start] = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    pool = DecoderPool(workers=2)
    try:
        assert pool.workers == 2
        pool.run(job, range(0, 50, 5))
        assert sorted(seen) == list(range(0, 50, 5))
        assert all(threads == [1] * len(blas) for threads in seen.values())

        def failing(start: int) -> None:
            if start == 3:
                raise ValueError("chunk 3")

        with pytest.raises(ValueError, match="chunk 3"):
            pool.run(failing, range(6))
    finally:
        pool.close()
    # BLAS is given back its own thread count after the run.
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"] == [
        lib["num_threads"] for lib in blas]


def test_decoder_pools_run_side_by_side_give_blas_back_its_own_count() -> None:
    """Two Refiners decoding in two threads, the first to start ending first: each saved and restored
    the process-wide count, so the second put back the first's 1 and BLAS stayed on one thread."""
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    first_in, second_in, first_may_end, second_may_end = (threading.Event() for _ in range(4))
    inside: list[list[int]] = []

    def first_job(start: int) -> None:
        first_in.set()
        first_may_end.wait(10)
        inside.append(blas_threads())

    def second_job(start: int) -> None:
        second_in.set()
        second_may_end.wait(10)
        inside.append(blas_threads())

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(count == 2 for count in before)
        pools = DecoderPool(workers=1), DecoderPool(workers=1)  # each runs its jobs on the calling thread
        first = threading.Thread(target=pools[0].run, args=(first_job, [0]))
        second = threading.Thread(target=pools[1].run, args=(second_job, [0]))
        first.start()
        assert first_in.wait(10)
        second.start()
        assert second_in.wait(10)
        first_may_end.set()
        first.join(10)
        assert blas_threads() == [1] * len(before)  # the second still decodes
        second_may_end.set()
        second.join(10)
        assert inside == [[1] * len(before)] * 2
        assert blas_threads() == before  # was: [1], for good


# 3. End to end ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "ratios", "guard", "size"), [
    ("auto", None, None, (240, 320)),  # enlarged, mirrored final stage only
    ("auto", None, False, (240, 320)),  # the same without the guard: the model's output shows
    ("fast", None, None, (480, 640)),
    ("balanced", None, None, (480, 640)),
    (None, (0.5, 1.0), None, (480, 640)),  # both stages run (the 0.5 stage is 240 px high)
])
def test_onnx_refiner_equals_torch_refiner(refiners, preset, ratios, guard, size) -> None:  # noqa: ANN001
    onnx_refiner, torch_refiner = refiners["onnx"], refiners["torch"]
    assert (onnx_refiner.backend, torch_refiner.backend) == ("onnx", "torch")
    assert onnx_refiner.device_name == "cpu (onnxruntime)"
    image, gt = synthetic_scene(*size, seed=3)
    coarse = coarse_of(gt, 8)
    got = onnx_refiner.refine_detailed(image, coarse, ratios, preset=preset, guard=guard)
    expected = torch_refiner.refine_detailed(image, coarse, ratios, preset=preset, guard=guard)
    assert got.ratios == expected.ratios and got.schedule == expected.schedule
    assert got.mirrored == expected.mirrored and got.kept_coarse == expected.kept_coarse
    assert [t.encode_s > 0 for t in got.timings] == [t.encode_s > 0 for t in expected.timings]
    assert any(t.encode_s > 0 for t in got.timings)
    assert got.probability.shape == size and got.probability.dtype == np.float32
    assert np.abs(expected.probability - coarse / 255.0).max() > 0.01, "the model changed nothing: a weak test"
    np.testing.assert_allclose(got.probability, expected.probability, atol=TINY_ATOL, rtol=0)
    if ratios is not None:
        assert all(t.encode_s > 0 for t in got.timings)


@pytest.mark.parametrize("roi", [False, True])
def test_mirrored_stage_equals_torch(refiners, roi: bool) -> None:  # noqa: ANN001
    image, gt = synthetic_scene(160, 200, seed=5)
    mask = float_mask(coarse_of(gt, 8))
    onnx_runner, torch_runner = refiners["onnx"].runner, refiners["torch"].runner
    got, _ = onnx_runner._mirrored_stage(image, mask.copy(), 1.0, (160, 200), roi=roi)
    with torch.inference_mode():
        expected, _ = torch_runner._mirrored_stage(image, torch.from_numpy(mask.copy()).view(1, 1, 160, 200), 1.0,
                                                   (160, 200), roi=roi)
        direct, _ = torch_runner._stage(image, torch.from_numpy(mask.copy()).view(1, 1, 160, 200), 1.0, (160, 200),
                                        roi=roi)
    expected = expected[0, 0].numpy()
    assert got.shape == (160, 200) and got.dtype == np.float32
    assert np.abs(expected - direct[0, 0].numpy()).max() > 1e-3  # mirroring matters for this model
    np.testing.assert_allclose(got, expected, atol=TINY_ATOL, rtol=0)


# 4. Tiled ROI ----------------------------------------------------------------------------------------------------


def test_tiled_roi_stage_reads_only_encoded_latent_cells(exported: Path) -> None:
    image, gt = synthetic_scene(160, 200)
    mask = float_mask(coarse_of(gt, 6))
    tiles = {"roi_tile_size": 32, "roi_tile_margin": 32}
    runner = Refiner(exported, device="cpu", backend="onnx", **tiles).runner
    runner._unencoded_fill = float("nan")
    calls = []
    latents = []
    encode_tile, encode = runner._encode_tile, runner._encode
    runner._encode_tile = lambda x: calls.append(x.shape) or encode_tile(x)  # type: ignore[method-assign]

    def recording_encode(x, needed=None):  # noqa: ANN001, ANN202
        g = encode(x, needed)
        latents.append(g.copy())
        return g

    runner._encode = recording_encode  # type: ignore[method-assign]
    got, _ = runner._stage(image, mask, 0.5, (160, 200), roi=True)
    assert got.shape == (160, 200) and np.isfinite(got).all()
    assert len(calls) > 0 and len(latents) == 1
    unset = np.isnan(latents[0]).all(axis=-1)
    # stage 80 x 100, padded 144 x 176: 5 x 6 tiles of 32 px; some, not all, were encoded.
    assert latents[0].shape[:2] == (72, 88)
    assert 0 < unset.mean() < 0.9, f"{unset.mean():.2f} of the latent was left unencoded"
    assert not np.isnan(latents[0][~unset]).any()  # a tile is encoded whole

    # The same tiles on torch (whose skipped cells are NaN too) give the same probability.
    torch_runner = Refiner(exported, device="cpu", backend="torch", **tiles).runner
    torch_runner._unencoded_fill = float("nan")
    with torch.inference_mode():
        expected, _ = torch_runner._stage(image, torch.from_numpy(mask.copy()).view(1, 1, 160, 200), 0.5, (160, 200),
                                          roi=True)
    np.testing.assert_allclose(got, expected[0, 0].numpy(), atol=TINY_ATOL, rtol=0)


def test_latent_buffer_is_kept_and_reused_across_stages(exported: Path) -> None:
    image, gt = synthetic_scene(160, 200)
    mask = float_mask(coarse_of(gt, 6))
    tiles = {"tile_size": 64, "tile_margin": 16, "roi_tile_size": 32, "roi_tile_margin": 32}
    runner = Refiner(exported, device="cpu", backend="onnx", **tiles).runner
    big = runner._latent_buffer((10, 20, 4))
    small = runner._latent_buffer((5, 6, 4))
    assert small.shape == (5, 6, 4) and np.shares_memory(big, small)  # no new block for a smaller latent
    bigger = runner._latent_buffer((11, 20, 4))
    assert bigger.shape == (11, 20, 4) and not np.shares_memory(big, bigger)
    # Tiled stages, dense and ROI, one after the other in the same buffer, equal fresh runners' stages.
    for ratio, roi in ((1.0, False), (0.5, True), (1.0, True), (0.5, False)):
        fresh = Refiner(exported, device="cpu", backend="onnx", **tiles).runner
        again, _ = runner._stage(image, mask, ratio, (160, 200), roi=roi)
        expected, _ = fresh._stage(image, mask, ratio, (160, 200), roi=roi)
        np.testing.assert_array_equal(again, expected)
    assert runner._latent_store is not None


# 5. Choosing the backend -----------------------------------------------------------------------------------------


def test_choose_backend_without_an_exported_encoder(tiny_weights: Path, tmp_path: Path) -> None:
    weights = copy_weights(tiny_weights, tmp_path)
    assert choose_backend(weights, "cpu", "fp32", "auto") is None
    assert choose_backend(weights, "cpu", "fp32", "torch") is None
    with pytest.raises(WeightsError) as error:
        choose_backend(weights, "cpu", "fp32", "onnx")
    assert str(weights) in str(error.value) and "python -m crm_cli.onnx_export" in str(error.value)
    with pytest.raises(WeightsError, match="onnx_export"):
        Refiner(weights, device="cpu", backend="onnx")
    assert Refiner(weights, device="cpu").backend == "torch"


def test_choose_backend_rules_after_export(exported: Path, tmp_path: Path) -> None:
    encoder = exported.with_name("tiny.encoder.onnx")
    assert choose_backend(exported, "cpu", "fp32", "auto") == encoder
    assert choose_backend(exported, "CPU", "fp32", "onnx") == encoder
    assert choose_backend(exported, "cpu", "fp32", "torch") is None
    assert choose_backend(exported, "cpu", "fp16", "auto") is None
    assert choose_backend(exported, "cpu", "bf16", "auto") is None
    with pytest.raises(ValueError, match="fp32"):
        choose_backend(exported, "cpu", "fp16", "onnx")
    with pytest.raises(ValueError, match="CPU only"):
        choose_backend(exported, "cuda", "fp32", "onnx")
    assert choose_backend(exported, "cuda", "fp32", "auto") is None
    with pytest.raises(ValueError, match="unknown backend"):
        choose_backend(exported, "cpu", "fp32", "tensorrt")
    with pytest.raises(ValueError, match="unknown backend"):
        Refiner(exported, device="cpu", backend="tensorrt")
    with pytest.raises(ValueError, match="in-memory"):
        Refiner.from_model(make_tiny_model(), backend="onnx")
    assert Refiner.from_model(make_tiny_model(), device="cpu").backend == "torch"

    # A sidecar whose ONNX entry was made from other weights: auto falls back, onnx refuses.
    stale = copy_weights(exported, tmp_path / "stale", with_onnx=True)
    sidecar = read_json(sidecar_path(stale))
    sidecar["onnx"]["weights_sha256"] = "0" * 64
    sidecar_path(stale).write_text(json.dumps(sidecar))
    assert onnx_encoder_path(stale) is None
    assert choose_backend(stale, "cpu", "fp32", "auto") is None
    assert Refiner(stale, device="cpu").backend == "torch"
    with pytest.raises(WeightsError, match="no ONNX encoder"):
        choose_backend(stale, "cpu", "fp32", "onnx")

    # The named file is gone: auto falls back.
    missing = copy_weights(exported, tmp_path / "missing")
    assert onnx_encoder_path(missing) is None and choose_backend(missing, "cpu", "fp32", "auto") is None

    # The ONNX file's bytes were altered: its sidecar's sha256 no longer matches.
    altered = copy_weights(exported, tmp_path / "altered", with_onnx=True)
    altered_onnx = altered.with_name("tiny.encoder.onnx")
    data = bytearray(altered_onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    altered_onnx.write_bytes(bytes(data))
    assert choose_backend(altered, "cpu", "fp32", "onnx") == altered_onnx  # the hash is checked when loading
    with pytest.raises(WeightsError) as error:
        verify_encoder(altered_onnx, altered)
    assert str(altered_onnx) in str(error.value) and "does not match" in str(error.value)
    with pytest.raises(WeightsError) as checked:  # the engine's check, on the sidecar it read once
        verify_encoder(altered_onnx, WeightsSidecar(altered))
    assert str(checked.value) == str(error.value)
    verify_encoder(exported.with_name("tiny.encoder.onnx"), exported)
    with pytest.raises(WeightsError) as error:
        Refiner(altered, device="cpu", backend="onnx")
    assert "tiny.encoder.onnx" in str(error.value) and "sha256" in str(error.value)


def sidecar_reads(monkeypatch: pytest.MonkeyPatch, weights: Path) -> list[Path]:
    """Every read of the sidecar of ``weights`` from now on, by any module (all go through Path.read_text)."""
    side = sidecar_path(weights)
    reads: list[Path] = []
    read_text = Path.read_text

    def counting(self: Path, *args: object, **kwargs: object) -> str:
        if self == side:
            reads.append(self)
        return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting)
    return reads


@pytest.mark.parametrize(("backend", "taken"), [("auto", "onnx"), ("onnx", "onnx"), ("torch", "torch")])
def test_one_refiner_build_reads_the_sidecar_once(exported: Path, backend: str, taken: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    reads = sidecar_reads(monkeypatch, exported)
    refiner = Refiner(str(exported), device="cpu", backend=backend)
    assert refiner.backend == taken and refiner.weights_info.verified
    assert len(reads) == 1


def test_crm_info_reads_the_sidecar_once(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crm_cli.devices as devices_module
    from crm_cli.cli.info import gather_info

    # As on a machine without a GPU, where auto takes the onnx backend.
    monkeypatch.setattr(devices_module, "accelerator_possible", lambda: False)
    reads = sidecar_reads(monkeypatch, exported)
    report = gather_info(exported)
    assert report["default_backend"] == "onnx" and report["weights"]["onnx"]["used"]
    assert report["weights"]["error"] is None and report["weights"]["sha256_ok"]
    assert len(reads) == 1


def test_a_weights_sidecar_stands_for_its_path_and_is_read_once(exported: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every loading function takes a WeightsSidecar where it takes a path, with the same results;
    one WeightsSidecar passed to all of them reads the sidecar file once."""
    from crm_cli.checkpoint import checked_info, inspect_checkpoint, inspect_encoder, read_spec, verify_sha256

    encoder = exported.with_name("tiny.encoder.onnx")
    by_path = (onnx_encoder_path(exported), verify_sha256(exported), read_spec(exported), checked_info(exported),
               inspect_encoder(exported), inspect_checkpoint(exported, build=True), load_model(exported)[1],
               choose_backend(exported, "cpu", "fp32", "onnx"))
    reads = sidecar_reads(monkeypatch, exported)
    side = WeightsSidecar(str(exported))
    verify_encoder(encoder, side)
    by_sidecar = (onnx_encoder_path(side), verify_sha256(side), read_spec(side), checked_info(side),
                  inspect_encoder(side), inspect_checkpoint(side, build=True), load_model(side)[1],
                  choose_backend(side, "cpu", "fp32", "onnx"))
    assert by_sidecar == by_path and by_path[0] == encoder
    assert len(reads) == 1
    assert WeightsSidecar.of(side) is side and WeightsSidecar.of(str(exported)).weights == exported


# 6. A process that refines on the onnx backend never imports torch -----------------------------------------------


def test_torch_only_options_keep_auto_on_torch(exported: Path) -> None:
    assert Refiner(exported, device="cpu").backend == "onnx"  # the API's default is auto
    assert Refiner(exported, device="cpu", backend="torch").backend == "torch"
    assert Refiner(exported, device="cpu", backend="auto", channels_last=False).backend == "torch"
    assert Refiner(exported, device="cpu", backend="auto", fold_bn=False).backend == "torch"
    with pytest.raises(ValueError, match="torch backend"):
        Refiner(exported, device="cpu", backend="onnx", channels_last=True)


def test_cli_auto_backend_is_onnx_for_every_command_on_a_cpu(exported: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from crm_cli.cli import app

    image, gt = synthetic_scene(120, 160)
    folder = tmp_path / "pairs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_im.png"), image[..., ::-1])
    cv2.imwrite(str(folder / "a_seg.png"), gt)
    cv2.imwrite(str(folder / "a_gt.png"), gt)
    runner = CliRunner()
    common = ["-w", str(exported), "-d", "cpu"]
    one = runner.invoke(app, ["refine", str(folder / "a_im.png"), str(folder / "a_seg.png"), "-o",
                              str(tmp_path / "one.png"), *common])
    assert one.exit_code == 0, one.output
    assert "device: cpu" in one.stderr and "onnxruntime" in one.stderr
    for argv in (["batch", str(folder), "-o", str(tmp_path / "out")], ["eval", str(folder)],
                 ["time", str(folder / "a_im.png"), str(folder / "a_seg.png")]):
        many = runner.invoke(app, [*argv, *common])
        assert many.exit_code == 0, many.output
        assert "device: cpu (onnxruntime)" in many.stderr, argv[0]
    for conflict in (["--precision", "fp16"], ["-d", "cuda"]):
        refused = runner.invoke(app, ["refine", str(folder / "a_im.png"), str(folder / "a_seg.png"), "-o",
                                      str(tmp_path / "no.png"), *common, "--backend", "onnx", *conflict])
        assert refused.exit_code == 2 and "--backend onnx runs" in refused.stderr
        assert "device:" not in refused.stderr and not (tmp_path / "no.png").exists()
    forced = runner.invoke(app, ["batch", str(folder), "-o", str(tmp_path / "out2"), "--backend", "torch", *common])
    assert forced.exit_code == 0 and "device: cpu" in forced.stderr and "onnxruntime" not in forced.stderr
    np.testing.assert_allclose(cv2.imread(str(tmp_path / "out" / "a_mask.png"), cv2.IMREAD_UNCHANGED),
                               cv2.imread(str(tmp_path / "out2" / "a_mask.png"), cv2.IMREAD_UNCHANGED), atol=1)


def test_cli_refine_on_the_onnx_backend_never_imports_torch(exported: Path, tmp_path: Path) -> None:
    weights = copy_weights(exported, tmp_path / "weights", with_onnx=True)
    image, gt = synthetic_scene(96, 128, seed=1)
    image_path, mask_path, out = tmp_path / "img.jpg", tmp_path / "mask.png", tmp_path / "out.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(mask_path), coarse_of(gt, 8))
    argv = ["crm", "refine", str(image_path), str(mask_path), "-o", str(out), "--backend", "onnx", "-d", "cpu",
            "-w", str(weights)]
    code = (
        "import sys\n"
        "from crm_cli.cli import main\n"
        f"sys.argv = {argv!r}\n"
        "status = 0\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "print('torch' in sys.modules, status)\n"
        "sys.exit(status)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False 0", done.stdout
    assert "device: cpu" in done.stderr and "onnxruntime" in done.stderr, done.stderr
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written is not None and written.shape == (96, 128) and written.dtype == np.uint8
    # The same refinement in this process on torch writes the same mask (the PNG is thresholded).
    expected = Refiner(weights, device="cpu", backend="torch").refine(image, coarse_of(gt, 8))
    assert np.mean((written > 127) != (expected > 0.5)) < 1e-3


# 7. The shipped weights ------------------------------------------------------------------------------------------


def test_shipped_weights_ship_a_matching_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRM_WEIGHTS", raising=False)
    weights = default_weights_path()
    encoder = weights.with_name(weights.stem + ".encoder.onnx")
    if not weights.is_file() or not encoder.is_file():
        pytest.skip(f"no shipped ONNX encoder at {encoder}")
    sidecar = read_json(sidecar_path(weights))
    assert sidecar["onnx"]["weights_sha256"] == sidecar["sha256"]
    assert sidecar["onnx"]["file"] == encoder.name and sidecar["onnx"]["sha256"] == sha256_file(encoder)
    assert onnx_encoder_path(weights) == encoder
    assert choose_backend(None, "cpu", "fp32", "auto") == encoder

    onnx_refiner = Refiner(device="cpu", backend="onnx")
    torch_refiner = Refiner(device="cpu", backend="torch")
    assert (onnx_refiner.backend, torch_refiner.backend) == ("onnx", "torch")
    image, gt = synthetic_scene(240, 320, seed=2)
    coarse = coarse_of(gt, 8)
    changed = []
    # Under auto the guard may keep the coarse mask of this synthetic scene; without it the model's output shows.
    for guard in (None, False):
        got = onnx_refiner.refine_detailed(image, coarse, preset="auto", guard=guard)
        expected = torch_refiner.refine_detailed(image, coarse, preset="auto", guard=guard)
        assert got.schedule == expected.schedule and got.mirrored == expected.mirrored
        assert got.kept_coarse == expected.kept_coarse
        np.testing.assert_allclose(got.probability, expected.probability, atol=ATOL, rtol=0)
        changed.append(np.abs(expected.probability - coarse / 255.0).max())
    assert changed[-1] > 0.01, "the model changed nothing: a weak test"
