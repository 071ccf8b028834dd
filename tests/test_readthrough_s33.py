"""Mends of the closing read of session 33."""

from __future__ import annotations

import pytest

from crm_cli.engine import choose_backend
from crm_cli.training.distributed import torchrun_device_problem

pytest.importorskip("onnxruntime")


def test_choose_backend_spells_devices_as_everywhere_else() -> None:
    """cpu:0 is the CPU for devices.device_name and torch; choose_backend read it as another device
    and left the CPU's faster onnx backend unused."""
    onnx = choose_backend(None, "cpu")
    assert onnx is not None
    assert choose_backend(None, "cpu:0") == choose_backend(None, " CPU ") == onnx
    assert choose_backend(None, "cpu:0", backend="onnx") == onnx


def test_torchrun_device_problem_reads_any_spelling_of_a_gpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert torchrun_device_problem(" CUDA:01 ") is not None
    assert torchrun_device_problem("cuda") is None and torchrun_device_problem("auto") is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_device_problem("cuda:1") is None
