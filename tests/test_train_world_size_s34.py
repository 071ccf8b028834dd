"""A malformed WORLD_SIZE (torchrun's number of processes) is one clear usage error of ``crm train``,
before the model loads, and one clear ValueError of the library's Trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_train_audit_s33 import options, train, write_pairs

from crm_cli.training import loop


def refusal(value: str) -> str:
    """The message a WORLD_SIZE of ``value`` is refused with."""
    return (f"the environment variable WORLD_SIZE is {value!r}, not a whole number >= 1 (torchrun sets it to the "
            "number of processes training together)")


@pytest.mark.parametrize("value", ["two", "0", "-1", ""])
@pytest.mark.parametrize("device", ["auto", "cuda:1"])
def test_a_malformed_world_size_is_a_usage_error_before_the_model_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, device: str) -> None:
    built: list[object] = []
    monkeypatch.setattr(loop, "initial_model", lambda *args: built.append(args))
    monkeypatch.setenv("WORLD_SIZE", value)
    data = write_pairs(tmp_path / "d", 3)
    out = tmp_path / "run"
    code, stdout, stderr = train("--data", str(data), "--out", str(out), "--device", device)
    assert (code, stdout, built) == (2, "", []), stderr
    assert stderr.splitlines()[0] == f"error: {refusal(value)}", stderr
    assert not out.exists()


def test_the_trainer_refuses_a_malformed_world_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError) as caught:
        loop.Trainer(options(write_pairs(tmp_path / "d", 3), tmp_path / "run"))
    assert str(caught.value) == refusal("two")
