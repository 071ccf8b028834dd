"""How often loading reads a checkpoint: ``crm info`` reads the weights file once, .pt or .safetensors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_tiny_model
from typer.testing import CliRunner

import crm_cli.checkpoint as checkpoint
from crm_cli.checkpoint import WeightsError, inspect_checkpoint, load_model, sha256_file, sidecar_path
from crm_cli.cli import app

runner = CliRunner()


def save_training_checkpoint(path: Path, model: Any = None, state: dict[str, Any] | None = None) -> Path:
    """A .pt as ``crm train`` writes its ``last.pt``: config, tensors, step and provenance in one pickle."""
    model = model if model is not None else make_tiny_model(seed=3)
    torch.save({"config": model.config.to_dict(), "model": state if state is not None else model.state_dict(),
                "step": 7, "provenance": {"init": "tests"}}, path)
    return path


@pytest.fixture
def pt_weights(tmp_path: Path) -> Path:
    return save_training_checkpoint(tmp_path / "last.pt")


def count_reads(monkeypatch: pytest.MonkeyPatch, weights: Path) -> list[bool]:
    """Every read of the checkpoint ``weights`` from now on (``checkpoint._read_spec``, the one
    function that opens a checkpoint's contents), as its ``load_tensors`` flag."""
    reads: list[bool] = []
    read: Callable[..., Any] = checkpoint._read_spec

    def counting(path: Path, kind: str, load_tensors: bool) -> Any:
        if Path(path) == weights:
            reads.append(load_tensors)
        return read(path, kind, load_tensors=load_tensors)

    monkeypatch.setattr(checkpoint, "_read_spec", counting)
    return reads


def count_torch_loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every ``torch.load`` from now on, as the path it loaded."""
    loads: list[Path] = []
    load = torch.load

    def counting(path: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(Path(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return loads


def count_kind_reads(monkeypatch: pytest.MonkeyPatch, weights: Path) -> list[Path]:
    """Every read of the head of the checkpoint ``weights`` (``checkpoint.checkpoint_kind``) from now on;
    engine's own name for the function is counted too, where it has one."""
    import crm_cli.engine as engine

    reads: list[Path] = []
    kind: Callable[[Path], str] = checkpoint.checkpoint_kind

    def counting(path: Path) -> str:
        if Path(path) == weights:
            reads.append(Path(path))
        return kind(path)

    monkeypatch.setattr(checkpoint, "checkpoint_kind", counting)
    monkeypatch.setattr(engine, "checkpoint_kind", counting, raising=False)
    return reads


@pytest.fixture(scope="module")
def exported(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny weights (and sidecar) with their encoder exported beside them, for the onnx backend."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from crm_cli.onnx_export import export_encoder

    weights = tmp_path_factory.mktemp("exported") / tiny_weights.name
    weights.write_bytes(tiny_weights.read_bytes())
    sidecar_path(weights).write_text(sidecar_path(tiny_weights).read_text())
    export_encoder(weights)
    return weights


def info_json(weights: Path) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["info", "-w", str(weights), "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_crm_info_reads_a_pt_checkpoint_once(pt_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_tiny_model(seed=3)
    reads = count_reads(monkeypatch, pt_weights)
    loads = count_torch_loads(monkeypatch)
    code, data = info_json(pt_weights)
    assert code == 0
    assert reads == [True] and loads == [pt_weights]  # was two torch.load calls: the spec, then the build
    assert data["default_backend"] == "torch"
    assert data["weights"] == {
        "path": str(pt_weights), "exists": True, "sha256": sha256_file(pt_weights), "sha256_ok": None,
        "sidecar": None, "config": model.config.to_dict(), "provenance": {"init": "tests"},
        "final_stage": {"scale": 1.5, "enlarge_max_pixels": 2_500_000, "mirror_max_pixels": 1_000_000,
                        "min_change_confidence": 0.5, "final_only_certainty": 0.99},
        "onnx": None, "partner": None, "lone_stage": None, "error": None}

    reads.clear()
    loads.clear()
    table = runner.invoke(app, ["info", "-w", str(pt_weights)])
    assert table.exit_code == 0 and "no sidecar hash: not verified" in " ".join(table.stderr.split())
    assert reads == [True] and len(loads) == 1


def test_crm_info_reads_a_safetensors_checkpoint_once(tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unbuilt = inspect_checkpoint(tiny_weights)  # the report without building: what info adds is the build's check
    reads = count_reads(monkeypatch, tiny_weights)
    code, data = info_json(tiny_weights)
    assert code == 0
    assert reads == [True]  # was a metadata read, then a read with the tensors
    assert data["weights"] == unbuilt
    assert data["weights"]["sha256_ok"] is True and data["weights"]["sidecar"] == str(sidecar_path(tiny_weights))


def test_crm_info_on_tensors_that_do_not_fit_reads_once_and_says_what_loading_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = make_tiny_model().state_dict()
    first = next(key for key, value in state.items() if value.is_floating_point())
    state[first] = torch.zeros(1)
    bad = save_training_checkpoint(tmp_path / "bad.pt", state=state)
    with pytest.raises(WeightsError) as loading:
        load_model(bad)
    assert "do not fit their recorded architecture" in str(loading.value)
    reads = count_reads(monkeypatch, bad)
    code, data = info_json(bad)
    assert code == 1 and reads == [True]
    assert data["weights"]["error"] == str(loading.value) and data["default_backend"] is None


def test_crm_info_on_a_hash_mismatch_reads_no_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights that do not match their sidecar are not built, so their tensors need not be read;
    a .pt is one torch.load either way."""
    pt = save_training_checkpoint(tmp_path / "tampered.pt")
    sidecar_path(pt).write_text(json.dumps({"sha256": "0" * 64}))
    reads = count_reads(monkeypatch, pt)
    loads = count_torch_loads(monkeypatch)
    code, data = info_json(pt)
    assert code == 1 and reads == [False] and loads == [pt]
    assert data["weights"]["sha256_ok"] is False and "does not match tampered.json" in data["weights"]["error"]
    assert data["weights"]["config"] == make_tiny_model().config.to_dict()


def test_inspect_checkpoint_without_build_reads_no_tensors(pt_weights: Path, tiny_weights: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    reads = count_reads(monkeypatch, pt_weights)
    assert inspect_checkpoint(pt_weights)["error"] is None and reads == [False]
    reads = count_reads(monkeypatch, tiny_weights)
    assert inspect_checkpoint(tiny_weights)["error"] is None and reads == [False]


def test_crm_info_on_a_corrupt_file_says_what_loading_it_says(tiny_weights: Path, tmp_path: Path) -> None:
    """A file that no longer matches its sidecar's sha256: ``crm info`` fails with the very line a
    load of it raises (was a wording of its own, without the recorded hash)."""
    from crm_cli.engine import Refiner

    corrupt = tmp_path / "corrupt.safetensors"
    content = bytearray(tiny_weights.read_bytes())
    content[-1] ^= 0xFF  # a byte of the last tensor: the file still parses, only its hash changed
    corrupt.write_bytes(bytes(content))
    sidecar_path(corrupt).write_text(sidecar_path(tiny_weights).read_text())
    with pytest.raises(WeightsError) as loading:
        load_model(corrupt)
    with pytest.raises(WeightsError) as refining:
        Refiner(corrupt, device="cpu")
    assert str(refining.value) == str(loading.value)

    table = runner.invoke(app, ["info", "-w", str(corrupt)])
    assert table.exit_code == 1
    assert table.stderr.strip().splitlines()[-1] == f"error: {loading.value}"
    code, data = info_json(corrupt)
    assert code == 1 and data["weights"]["error"] == str(loading.value)


@pytest.mark.parametrize(("encoder", "backend", "runs_on"), [
    (True, "auto", "onnx"), (True, "onnx", "onnx"), (True, "torch", "torch"), (False, "auto", "torch")])
def test_a_model_load_reads_the_checkpoint_kind_once(encoder: bool, backend: str, runs_on: str, exported: Path,
                                                     tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend choice and the load share one read of the file's first bytes (was one each, but
    on the torch backend, which makes no choice)."""
    from crm_cli.engine import Refiner

    weights = exported if encoder else tiny_weights
    monkeypatch.setenv("CRM_WEIGHTS", str(weights))  # the default weights, as `crm refine` without --weights
    reads = count_kind_reads(monkeypatch, weights)
    assert Refiner(device="cpu", backend=backend).backend == runs_on
    assert len(reads) == 1


def test_crm_info_reads_the_checkpoint_kind_once(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = count_kind_reads(monkeypatch, exported)
    code, data = info_json(exported)
    assert code == 0 and data["default_backend"] in ("onnx", "torch")
    assert len(reads) == 1  # was two: the backend choice, then the report


def test_saved_weights_and_sidecar_honour_the_umask_and_leave_no_temp_file(tmp_path: Path) -> None:
    import os
    import stat

    from crm_cli.checkpoint import save_weights

    previous = os.umask(0o022)
    try:
        path = tmp_path / "shared" / "model.safetensors"  # the folder is made too
        digest = save_weights(make_tiny_model(seed=1), path)
    finally:
        os.umask(previous)
    # Readable by the other users of a shared machine, as any file the user makes (safetensors' own
    # writer made it 0600).
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(sidecar_path(path).stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.safetensors"]
    assert json.loads(sidecar_path(path).read_text())["sha256"] == digest == sha256_file(path)
    load_model(path)  # the written file loads and matches its sidecar


def test_saving_the_same_weights_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    from crm_cli.checkpoint import save_weights
    from crm_cli.config import Provenance

    model = make_tiny_model(seed=4)
    provenance = Provenance(command="crm train --out run", data="DATA", steps=3, notes="n")
    digests = {save_weights(model, tmp_path / f"w{index}.safetensors", provenance) for index in range(4)}
    # safetensors writes its metadata keys in a random order; the saved file must not depend on it,
    # so a remade checkpoint (an average, an export) can be checked against a recorded sha256.
    assert len(digests) == 1
    restored, info = load_model(tmp_path / "w3.safetensors")
    assert info.provenance["command"] == "crm train --out run"
    for key, value in model.state_dict().items():
        if value.is_floating_point() and "running_" not in key:
            assert torch.equal(restored.state_dict()[key], value.half().float()), key
