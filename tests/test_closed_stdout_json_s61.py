"""A ``--json`` record whose reader has gone away (`| true`): one ``error:`` line and exit 1, for every
command that prints one after its work (session 61: click ended these with exit 1 and nothing said)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_scene_files

CLOSED = "error: standard output was closed before the output was written"


def run_with_stdout_closed(args: list[str]) -> tuple[int, str]:
    """Run ``crm ARGS`` with a stdout pipe closed before crm writes to it; (exit code, stderr)."""
    process = subprocess.Popen([sys.executable, "-m", "crm_cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.wait(timeout=120)
    return process.returncode, stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_batch_json_to_a_closed_pipe_says_so_after_writing_its_outputs(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    # Under 96 px: passed through, so no weights are loaded and the test stays quick.
    write_scene_files(pairs, "a_im", "a_seg", size=(48, 64))
    write_scene_files(pairs, "b_im", "b_seg", size=(48, 64))
    out = tmp_path / "out"
    code, stderr = run_with_stdout_closed(["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert code == 1, stderr
    assert error_lines(stderr) == [CLOSED]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert sorted(path.name for path in out.iterdir()) == ["a_mask.png", "b_mask.png"]


@pytest.mark.parametrize("args", [["info", "--json"], ["time", "--size", "120x100", "-n", "1", "--json"]])
def test_other_json_records_to_a_closed_pipe_say_so(tiny_weights: Path, args: list[str]) -> None:
    code, stderr = run_with_stdout_closed([*args, "-w", str(tiny_weights), "-d", "cpu", "--threads", "1"]
                                          if args[0] == "time" else [*args, "-w", str(tiny_weights)])
    assert code == 1, stderr
    assert error_lines(stderr) == [CLOSED]
    assert "Traceback" not in stderr


def test_a_reader_that_stays_gets_the_record(tmp_path: Path) -> None:
    """The mend changes only a closed reader: an open one still gets exactly one JSON line, exit 0."""
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    write_scene_files(pairs, "a_im", "a_seg", size=(48, 64))
    result = subprocess.run([sys.executable, "-m", "crm_cli", "batch", str(pairs), "-o", str(tmp_path / "out"),
                             "-d", "cpu", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1 and '"status": "ok"' in result.stdout
    assert error_lines(result.stderr) == []


def test_info_with_bad_weights_still_names_them_when_stdout_is_closed(tmp_path: Path) -> None:
    """info writes its record before it fails on the weights: the closed stdout's line must not hide why."""
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"abc")
    code, stderr = run_with_stdout_closed(["info", "--json", "-w", str(bad)])
    assert code == 1, stderr
    errors = error_lines(stderr)
    assert errors[0] == CLOSED and len(errors) == 2 and "bad.safetensors" in errors[1], errors
