"""benchmarks/forward_args.py: the ``--`` split that choose_checkpoint.py and whole_process.py share."""

from __future__ import annotations

import pytest
from conftest import load_benchmark

forward_args = load_benchmark("forward_args")


@pytest.mark.parametrize(("argv", "own", "forwarded"), [
    ([], [], []),
    (["--pair", "a", "b"], ["--pair", "a", "b"], []),
    (["runs/x", "--set", "s=d", "--", "--device", "cpu"], ["runs/x", "--set", "s=d"], ["--device", "cpu"]),
    (["--", "-w", "w", "--", "x"], [], ["-w", "w", "--", "x"]),  # only the first -- splits
    (["--repeat", "2", "--"], ["--repeat", "2"], []),
])
def test_arguments_after_the_first_double_dash_are_forwarded(argv: list[str], own: list[str],
                                                               forwarded: list[str]) -> None:
    assert forward_args.split_forwarded(argv) == (own, forwarded)


def test_both_benchmarks_use_the_shared_split() -> None:
    for name in ("choose_checkpoint", "whole_process"):
        module = load_benchmark(name)
        assert module.split_forwarded.__module__ == "forward_args"
