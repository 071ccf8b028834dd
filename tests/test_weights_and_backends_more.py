"""Weights files and backends as a user meets them: an ONNX encoder that ONNX Runtime cannot load,
``--threads`` beyond the CPUs, two exports of one encoder at once, and ``crm train --init`` with
files that are not ImageNet weights. Each is one clear line (or a bounded run), never a traceback."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
from pathlib import Path

import cv2
import pytest
from conftest import TINY_ARCH, flat, make_tiny_model, synthetic_scene, write_scene_files
from typer.testing import CliRunner

from crm_cli.checkpoint import WeightsError, read_sidecar, sha256_file, write_sidecar
from crm_cli.cli import app


def _copy_weights(tiny_weights: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / tiny_weights.name
    shutil.copy(tiny_weights, weights)
    shutil.copy(tiny_weights.with_suffix(".json"), weights.with_suffix(".json"))
    return weights


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny weights with their encoder exported beside them."""
    from crm_cli.checkpoint import save_weights
    from crm_cli.onnx_export import export_encoder

    weights = tmp_path_factory.mktemp("exported") / "tiny.safetensors"
    save_weights(make_tiny_model(), weights)
    export_encoder(weights)
    return weights


def test_an_encoder_onnx_runtime_cannot_load_is_one_line_naming_it(tiny_weights: Path, tmp_path: Path) -> None:
    # A sidecar entry without the encoder's sha256 (written by hand, or by a tool that did not record
    # it) and a file ONNX Runtime cannot parse (cut short, or from a newer exporter): ONNX Runtime's
    # own InvalidProtobuf / Fail escaped every handler as a traceback.
    from crm_cli.engine import Refiner

    weights = _copy_weights(tiny_weights, tmp_path / "w")
    encoder = weights.with_name("tiny.encoder.onnx")
    encoder.write_bytes(b"not an onnx graph")
    sidecar = read_sidecar(weights)
    sidecar["onnx"] = {"file": encoder.name, "weights_sha256": sha256_file(weights)}
    write_sidecar(weights, sidecar)
    with pytest.raises(WeightsError, match="ONNX Runtime cannot load") as error:
        Refiner(weights, "cpu", backend="onnx")
    assert str(error.value).startswith(f"{encoder}: ") and "\n" not in str(error.value)

    image, mask = write_scene_files(tmp_path / "scene", size=(112, 128))
    for backend in ("auto", "onnx"):
        result = CliRunner().invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"),
                                          "-w", str(weights), "-d", "cpu", "--backend", backend])
        assert result.exit_code == 1, (backend, result.output)
        assert "Traceback" not in result.output
        assert flat(result.stderr).startswith(f"error: {encoder}: ONNX Runtime cannot load"), result.stderr
        assert not (tmp_path / "out.png").exists()


def test_crm_info_exits_1_for_an_encoder_onnx_runtime_cannot_load(tiny_weights: Path, tmp_path: Path) -> None:
    # Every onnx run refuses such an encoder; `crm info` said it was fine and exited 0.
    weights = _copy_weights(tiny_weights, tmp_path / "w")
    encoder = weights.with_name("tiny.encoder.onnx")
    encoder.write_bytes(b"not an onnx graph")
    sidecar = read_sidecar(weights)
    sidecar["onnx"] = {"file": encoder.name, "weights_sha256": sha256_file(weights)}
    write_sidecar(weights, sidecar)
    result = CliRunner().invoke(app, ["info", "-w", str(weights), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)["weights"]  # stdout holds the JSON only
    assert report["error"].startswith(f"{encoder}: ONNX Runtime cannot load")
    assert report["onnx"]["error"] == report["error"]
    assert flat(result.stderr) == f"error: {flat(report['error'])}"


def test_threads_beyond_the_cpus_are_bounded_with_a_warning(exported: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # ONNX Runtime starts every intra-op thread when the session loads: --threads 100000 started
    # 100,000 threads (16 GB resident, minutes before the first tile) on a 2-core machine.
    from crm_cli.engine import Refiner
    from crm_cli.runtime import available_cpus

    cpus = available_cpus()
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        refiner = Refiner(exported, "cpu", backend="onnx", threads=cpus + 3)
    runner = refiner.runner
    assert runner.session.get_session_options().intra_op_num_threads == cpus
    assert runner.threads == cpus and runner.decoder_pool.workers == cpus
    assert any(f"more than the {cpus} CPUs" in record.getMessage() for record in caplog.records)
    # Up to the CPUs, the number given is used as it was, without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        one = Refiner(exported, "cpu", backend="onnx", threads=1)
    assert one.runner.session.get_session_options().intra_op_num_threads == 1
    assert not [record for record in caplog.records if "CPUs" in record.getMessage()]


def test_an_export_never_takes_another_exports_temp_file(exported: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Two exports of the same weights at once both wrote "<out>.tmp": one renamed the other's
    # half-written file into place and recorded its sha256, so the sidecar vouched for a cut graph.
    import onnxruntime

    from crm_cli.onnx_export import export_encoder

    weights = _copy_weights(exported, tmp_path / "w")
    out = weights.with_name("tiny.encoder.onnx")
    shared = out.with_name(out.name + ".tmp")  # the name the other export writes
    real_replace = os.replace

    def racing_replace(src: os.PathLike, dst: os.PathLike) -> None:
        if Path(dst) == out and shared.exists():  # the other export truncates and rewrites it now
            shared.write_bytes(shared.read_bytes()[: shared.stat().st_size // 2])
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", racing_replace)
    entry = export_encoder(weights)
    monkeypatch.setattr(os, "replace", real_replace)
    data = out.read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert data == exported.with_name("tiny.encoder.onnx").read_bytes()  # the export is deterministic
    onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # a whole graph
    assert not list(out.parent.glob("*.tmp"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 small image/mask pairs in the DUTS-TR layout."""
    root = tmp_path_factory.mktemp("duts")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for k in range(6):
        image, mask = synthetic_scene(64, 64, seed=k)
        cv2.imwrite(str(root / "images" / f"p{k:02d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"p{k:02d}.png"), mask)
    return root


def _train(pairs: Path, out: Path, init: str, *more: str):  # noqa: ANN202 - click's Result
    return CliRunner().invoke(app, ["train", "--data", str(pairs), "--out", str(out), "--steps", "1",
                                    "--batch", "2", "--query-window", "32", "--val-images", "1",
                                    "--synthetic", "0", "--init", init, *more])


class _Unsafe:
    """A pickled object torch's weights_only loader refuses."""


def test_train_init_that_is_not_imagenet_weights_is_one_line_naming_it(pairs: Path, tmp_path: Path,
                                                                       tiny_weights: Path) -> None:
    import torch

    model = make_tiny_model()
    crm_pt = tmp_path / "last.pt"  # a crm training checkpoint: config + model (as a run's last.pt)
    torch.save({"config": dict(TINY_ARCH), "model": model.state_dict(), "step": 3}, crm_pt)
    renamed = tmp_path / "crm_weights.bin"  # crm safetensors under another name
    shutil.copy(tiny_weights, renamed)
    unsafe = tmp_path / "unsafe.pt"
    with open(unsafe, "wb") as handle:
        pickle.dump({"model": _Unsafe()}, handle, protocol=2)
    a_list = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], a_list)
    json_file = tmp_path / "notes.json"
    json_file.write_text(json.dumps({"a": 1}))
    cases = {
        crm_pt: "a crm checkpoint, not ImageNet weights",
        renamed: "a crm checkpoint, not ImageNet weights",
        unsafe: "not ImageNet weights for mobilenet_v2 (not a torch file of plain tensors)",
        a_list: "not ImageNet weights for mobilenet_v2",
        json_file: "not ImageNet weights for mobilenet_v2",
        tmp_path: "is a directory",
        tmp_path / "absent.pt": "no such file",
        tmp_path / "absent.safetensors": "no such file",
    }
    for path, reason in cases.items():
        out = tmp_path / f"run_{path.name}"
        result = _train(pairs, out, str(path))
        assert result.exit_code == 1, (path, result.output)
        assert "Traceback" not in result.output and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and flat(lines[0]).startswith(f"error: --init {path}: {reason}"), (path, result.stderr)
        assert not (out / "last.pt").exists()


def test_train_init_with_imagenet_weights_still_trains(pairs: Path, tmp_path: Path) -> None:
    import torch

    from crm_cli.model.mobilenet import mobilenet_v2_features

    torch.manual_seed(1)
    features = tmp_path / "mobilenet_v2_features.pt"  # torchvision's MobileNetV2 features layout
    torch.save(mobilenet_v2_features(1.0).state_dict(), features)
    result = _train(pairs, tmp_path / "run", str(features))
    assert result.exit_code == 0, result.output
    assert f"init {features} sha256=" in flat(result.stderr)
    assert (tmp_path / "run" / "model.safetensors").is_file()
