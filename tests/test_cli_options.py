"""Options shared by several commands: one rule per option, the same usage error (exit 2, naming
the option) in every command that takes it, and strict JSON on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from command_lines import command_inputs
from command_lines import command_line as any_command_line
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.cli.output import emit_json
from crm_cli.stage_geometry import PAD_MULTIPLE

runner = CliRunner()


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A pair, a BIG-layout folder and a one-instance COCO file, all tiny."""
    return command_inputs(tmp_path)


def command_line(command: str, paths: dict[str, Path], tiny_weights: Path) -> list[str]:
    """A complete ``crm COMMAND`` line that would run on the CPU, so only the option under test can fail."""
    return any_command_line(command, paths, "-w", str(tiny_weights), "-d", "cpu")


def assert_usage_error(result, option: str, record: bool = False) -> None:  # noqa: ANN001 - click's Result
    """Exit 2 and one error line naming ``option``; stdout empty, or with ``record`` (a usage error of
    the command's own checks, under --json) the failure record of that error, on one line."""
    assert result.exit_code == 2, result.output
    if record:
        assert result.stdout.count("\n") == 1, result.stdout
        failure = json.loads(result.stdout)
        assert failure["status"] == "failed" and f"'{option}'" in failure["error"], failure
    else:
        assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"'{option}'" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["refine", "batch", "eval", "time", "coco"])
@pytest.mark.parametrize("ratios", ["0.5,,1", "0.5,1,", ",", "0.5,x", "1,0.5", "0,1"])
def test_bad_ratios_are_a_usage_error_naming_the_option(command: str, ratios: str, inputs, tiny_weights) -> None:  # noqa: ANN001
    result = runner.invoke(app, [*command_line(command, inputs, tiny_weights), "--ratios", ratios, "--json"])
    assert_usage_error(result, "--ratios", record=True)  # crm's own check: each command prints its record
    assert not inputs["out"].exists()


@pytest.mark.parametrize("command", ["refine", "batch", "eval", "score"])
@pytest.mark.parametrize("threshold", ["nan", "NaN", "-0.1", "1.5"])
def test_a_threshold_outside_0_1_is_a_usage_error(command: str, threshold: str, inputs, tiny_weights) -> None:  # noqa: ANN001
    # NaN passes click's range check (every comparison with it is false); score then printed NaN,
    # which is not JSON, and refine failed with exit 1 after loading the model.
    result = runner.invoke(app, [*command_line(command, inputs, tiny_weights), "-t", threshold, "--json"])
    assert_usage_error(result, "--threshold")


@pytest.mark.parametrize("command", ["refine", "batch"])
@pytest.mark.parametrize("labels", ["3,,7", "3,", ",", "x", "-1"])
def test_bad_label_lists_are_a_usage_error(command: str, labels: str, inputs, tiny_weights) -> None:  # noqa: ANN001
    result = runner.invoke(app, [*command_line(command, inputs, tiny_weights), "--labels", labels])
    assert_usage_error(result, "--labels")


def test_emit_json_writes_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    emit_json({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}, "e": "NaN"})
    text = capsys.readouterr().out
    parsed = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert parsed == {"a": None, "b": [1.5, None], "c": {"d": None}, "e": "NaN"}


@pytest.mark.parametrize("command", ["refine", "batch", "eval", "time", "coco"])
def test_help_says_what_0_threads_and_odd_tile_sizes_mean(command: str) -> None:
    # Both are accepted: --threads 0 is the default (as in `crm train`), and a tile side is rounded
    # up to the encoder's padding multiple (stage_geometry.tile_multiple); the help says so.
    text = " ".join(runner.invoke(app, [command, "--help"], terminal_width=200).output.split())
    assert "[default: 0, the physical cores, or a container's CPU quota rounded up]" in text
    assert f"rounded up to a multiple of {PAD_MULTIPLE}" in text
