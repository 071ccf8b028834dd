"""A copy of the weights without their sidecar: the warning says what else is lost (session 33)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from crm_cli import Refiner
from crm_cli.checkpoint import sidecar_path

pytest.importorskip("onnxruntime")

SLOWER = "without it no exported ONNX encoder, the faster CPU backend, is used either"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def test_a_bare_copy_of_weights_with_an_onnx_encoder_says_it_runs_on_the_slower_backend(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The shipped weights run on ONNX Runtime on a CPU; copied without their .json they ran on torch,
    about 2.5 times slower, and the warning only said "not verified"."""
    shipped = Refiner(device="cpu")
    assert shipped.runner.backend == "onnx"
    bare = tmp_path / Path(shipped.weights_info.path).name
    shutil.copyfile(shipped.weights_info.path, bare)
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        copied = Refiner(bare, device="cpu")
    assert copied.runner.backend == "torch"
    assert _warnings(caplog) == [
        f"weights {bare} are not verified: no sidecar with a sha256 ({sidecar_path(bare).name}); {SLOWER}: copy the "
        ".json file (and any .encoder.onnx) that came with the weights beside them"]


def test_the_backend_hint_is_left_out_where_torch_was_asked_for(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    shipped = Refiner(device="cpu")
    bare = tmp_path / Path(shipped.weights_info.path).name
    shutil.copyfile(shipped.weights_info.path, bare)
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        Refiner(bare, device="cpu", backend="torch")
    assert _warnings(caplog) == [f"weights {bare} are not verified: no sidecar with a sha256 "
                                 f"({sidecar_path(bare).name})"]
