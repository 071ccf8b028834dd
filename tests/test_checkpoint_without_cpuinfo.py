"""Loading fp16 weights where torch cannot read the CPU's description (/proc hidden in a sandbox)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crm_cli.checkpoint import _as_float32, load_model


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.float32])
def test_as_float32_equals_torchs_conversion(dtype: torch.dtype) -> None:
    values = torch.tensor([0.0, -0.0, 1.0, -2.5, 65504.0, 6.1e-5, 3.0e-8, float("inf"), float("-inf")]).to(dtype)
    converted = _as_float32(values)
    assert converted.dtype == torch.float32
    assert torch.equal(converted, values.float())
    nan = _as_float32(torch.tensor([float("nan")], dtype=dtype))
    assert torch.isnan(nan).all()


def test_as_float32_leaves_integers_and_float32_alone() -> None:
    counts = torch.tensor([3, 4], dtype=torch.int64)
    single = torch.tensor([0.5])
    assert _as_float32(counts) is counts and _as_float32(single) is single


def test_fp16_weights_load_when_torch_cannot_convert_halves(tiny_weights: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # With /proc hidden, torch's CPU half-to-float conversion raised "Failed to initialize cpuinfo!"
    # and crm said the shipped weights "do not fit their recorded architecture".
    expected, _ = load_model(tiny_weights)

    def no_cpuinfo(self: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("Failed to initialize cpuinfo!")

    monkeypatch.setattr(torch.Tensor, "float", no_cpuinfo)
    model, _ = load_model(tiny_weights)
    loaded, reference = model.state_dict(), expected.state_dict()
    assert all(torch.equal(loaded[key], reference[key]) for key in reference)
    assert all(value.dtype == torch.float32 for value in loaded.values() if value.is_floating_point())
