"""The onnx backend builds its encoder session from the very bytes it verified.

Before: ``verify_encoder`` hashed the exported encoder's file, then ``onnxruntime.InferenceSession``
was given its path and read it again; a file replaced between the two reads was run unverified (a
re-export, another model's encoder copied over it). Unpickling a Refiner had the same gap. Here the
file is replaced at the last moment, when ONNX Runtime is asked for the session: the session must
still run the bytes that were checked."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_tiny_model

from crm_cli.checkpoint import read_sidecar, save_weights
from crm_cli.engine import Refiner

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def exported_tiny(folder: Path, seed: int) -> tuple[Path, Path]:
    """Tiny weights of ``seed`` with their encoder exported beside them: (weights, encoder)."""
    from crm_cli.onnx_export import export_encoder

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "tiny.safetensors"
    save_weights(make_tiny_model(seed), weights)
    entry = export_encoder(weights)
    return weights, weights.with_name(entry["file"])


@pytest.fixture(scope="module")
def other_encoder(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The exported encoder of other weights (same architecture, another seed): a valid graph that is
    not the one the sidecar of ``exported_tiny(..., 0)`` records."""
    _, encoder = exported_tiny(tmp_path_factory.mktemp("other"), seed=1)
    return encoder.read_bytes()


def latent(session: Any) -> np.ndarray:
    """The encoder's output for a fixed (1, 4, 64, 64) input."""
    x = np.random.default_rng(0).standard_normal((1, 4, 64, 64)).astype(np.float32)
    return session.run(None, {"x": x})[0]


def replaced_when_opened(monkeypatch: pytest.MonkeyPatch, encoder: Path, replacement: bytes) -> list[object]:
    """Make ``onnxruntime.InferenceSession`` overwrite ``encoder`` with ``replacement`` just before it
    builds the session (after every check crm makes); returns what each call was given to load."""
    real = onnxruntime.InferenceSession
    given: list[object] = []

    def replacing(source: object, *args: object, **kwargs: object) -> object:
        encoder.write_bytes(replacement)
        given.append(source)
        return real(source, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", replacing)
    return given


def test_a_refiner_runs_the_encoder_bytes_it_verified(tmp_path: Path, other_encoder: bytes,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    weights, encoder = exported_tiny(tmp_path, seed=0)
    verified = encoder.read_bytes()
    expected = latent(onnxruntime.InferenceSession(verified, providers=["CPUExecutionProvider"]))
    replaced = latent(onnxruntime.InferenceSession(other_encoder, providers=["CPUExecutionProvider"]))
    assert not np.allclose(expected, replaced)  # the replacement would be noticed

    given = replaced_when_opened(monkeypatch, encoder, other_encoder)
    refiner = Refiner(weights, device="cpu", backend="onnx")
    assert encoder.read_bytes() == other_encoder  # the file did change under the load
    np.testing.assert_array_equal(latent(refiner.runner.session), expected)
    assert given == [verified]
    assert refiner.runner.encoder_sha256 == read_sidecar(weights)["onnx"]["sha256"]


def test_an_unpickled_refiner_runs_the_encoder_bytes_it_checked(tmp_path: Path, other_encoder: bytes,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    weights, encoder = exported_tiny(tmp_path, seed=0)
    verified = encoder.read_bytes()
    refiner = Refiner(weights, device="cpu", backend="onnx")
    expected = latent(refiner.runner.session)
    data = pickle.dumps(refiner)

    given = replaced_when_opened(monkeypatch, encoder, other_encoder)
    twin = pickle.loads(data)  # the sha256 check passes on the file as it was, then it is replaced
    assert encoder.read_bytes() == other_encoder
    np.testing.assert_array_equal(latent(twin.runner.session), expected)
    assert given == [verified]
    assert twin.runner.encoder_sha256 == refiner.runner.encoder_sha256


def sha256_calls_over(monkeypatch: pytest.MonkeyPatch, data: bytes) -> list[bytes]:
    """Record every ``hashlib.sha256(data)`` call given exactly ``data`` (the modules call it through
    ``hashlib``, so patching the module attribute sees them all); returns the growing record."""
    import hashlib

    real = hashlib.sha256
    calls: list[bytes] = []

    def counting(*args: Any, **kwargs: Any) -> Any:
        if args and bytes(args[0]) == data:
            calls.append(bytes(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "sha256", counting)
    return calls


def test_building_an_onnx_refiner_hashes_the_encoder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights, encoder = exported_tiny(tmp_path, seed=0)
    calls = sha256_calls_over(monkeypatch, encoder.read_bytes())
    refiner = Refiner(weights, device="cpu", backend="onnx")
    assert len(calls) == 1  # verify_encoder's; the runner keeps that digest
    assert refiner.runner.encoder_sha256 == read_sidecar(weights)["onnx"]["sha256"]
    # Unpickling still verifies the file it reopens: one hash more.
    twin = pickle.loads(pickle.dumps(refiner))
    assert len(calls) == 2 and twin.runner.encoder_sha256 == refiner.runner.encoder_sha256


def test_verify_encoder_returns_the_bytes_and_their_digest(tmp_path: Path) -> None:
    from crm_cli.checkpoint import verify_encoder

    weights, encoder = exported_tiny(tmp_path, seed=0)
    data, digest = verify_encoder(encoder, weights)
    assert data == encoder.read_bytes()
    assert digest == read_sidecar(weights)["onnx"]["sha256"]


def test_the_runner_hashes_only_bytes_it_was_not_given_a_digest_of(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.checkpoint import checked_info
    from crm_cli.onnx_runner import NumpyDecoder, OnnxStageRunner

    weights, encoder = exported_tiny(tmp_path, seed=0)
    data = encoder.read_bytes()
    expected = read_sidecar(weights)["onnx"]["sha256"]
    config = checked_info(weights).config
    decoder = NumpyDecoder.from_checkpoint(weights, config)
    calls = sha256_calls_over(monkeypatch, data)
    given = OnnxStageRunner(encoder, decoder, config, encoder_data=data, encoder_sha256=expected)
    assert given.encoder_sha256 == expected and calls == []
    hashed = OnnxStageRunner(encoder, decoder, config, encoder_data=data)
    assert hashed.encoder_sha256 == expected and len(calls) == 1
    # A digest without the bytes it is of is not trusted: the bytes read here are hashed.
    read = OnnxStageRunner(encoder, decoder, config, encoder_sha256="0" * 64)
    assert read.encoder_sha256 == expected and len(calls) == 2
