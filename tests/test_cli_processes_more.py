"""Process-level behaviour of the commands: stopped by Ctrl-C (SIGINT), SIGTERM or SIGHUP, a
command unwinds, removes the temp file and the lock of the output it was making, says so on
stderr and exits 128 + the signal's number; and ``crm score --json`` prints a failure record as
every other command does.

The signal tests run crm in a child process (a SIGTERM without a handler would end the test
session itself), with the signal sent at a chosen point by a patched ``os.replace``: the moment a
write's temp file is complete and about to be renamed, the worst one to be stopped at."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()

# Runs `crm ARGS...` with os.replace patched to send SIGNAL to the process itself on its N-th call.
DRIVER = """
import os, signal, sys
signum, nth = getattr(signal, sys.argv[1]), int(sys.argv[2])
real_replace, calls = os.replace, []

def replace(*args, **kwargs):
    calls.append(1)
    if len(calls) == nth:
        os.kill(os.getpid(), signum)
    return real_replace(*args, **kwargs)

os.replace = replace
sys.argv = ["crm", *sys.argv[3:]]
from crm_cli.cli import main
main()
"""


def run_crm(*args: str, stop: str | None = None, nth: int = 1) -> subprocess.CompletedProcess:
    """``crm ARGS`` in a child process with SIGINT, SIGTERM and SIGHUP at their defaults (as in a
    terminal), sent ``stop`` at the ``nth`` rename of a finished write when given."""
    def defaults() -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    command = [sys.executable, "-c", DRIVER, stop or "SIGINT", str(nth if stop else 0), *args]
    return subprocess.run(command, capture_output=True, text=True, preexec_fn=defaults, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BIG-layout folder of three small pairs (shipped weights: ONNX on the CPU, no torch import)."""
    root = tmp_path_factory.mktemp("pairs")
    for index in range(3):
        write_scene_files(root, f"p{index}_im", f"p{index}_seg", size=(120, 160), seed=index)
    return root


def hidden(folder: Path) -> list[str]:
    """Temp and lock files (crm's hidden files) left in ``folder``."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


@pytest.mark.parametrize("stop, code, line", [
    ("SIGTERM", 143, "stopped by SIGTERM"),
    ("SIGHUP", 129, "stopped by SIGHUP"),
    ("SIGINT", 130, "interrupted"),
])
def test_a_stopped_batch_leaves_no_temp_or_lock_file_and_a_rerun_finishes(folder: Path, tmp_path: Path,
                                                                         stop: str, code: int, line: str) -> None:
    out = tmp_path / "out"
    args = ("batch", str(folder), "-o", str(out), "-d", "cpu", "--json")
    stopped = run_crm(*args, stop=stop, nth=2)  # while the second output is renamed into place
    assert stopped.returncode == code, stopped.stderr
    assert stopped.stdout == "" and "Traceback" not in stopped.stderr
    assert f"{line}; finished outputs are kept: run the same command again to go on" in stopped.stderr
    assert hidden(out) == []  # was: .p1_mask.png.<hex>.tmp and .p1_mask.png.lock after SIGTERM
    assert sorted(path.name for path in out.iterdir()) == ["p0_mask.png"]
    rerun = run_crm(*args)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 1, 0)
    assert hidden(out) == []


def test_a_refine_stopped_by_sigterm_while_writing_leaves_no_temp_file(folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "refined.png"
    stopped = run_crm("refine", str(folder / "p0_im.jpg"), str(folder / "p0_seg.png"), "-o", str(output),
                      "-d", "cpu", stop="SIGTERM")
    assert stopped.returncode == 143, stopped.stderr  # was -15: killed where it stood
    assert stopped.stderr.splitlines()[-1] == "stopped by SIGTERM"
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temp file


def test_stops_cleanly_keeps_ignored_signals_ignored_and_puts_handlers_back() -> None:
    from crm_cli.cli.common import stops_cleanly

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        term = signal.getsignal(signal.SIGTERM)
        with stops_cleanly():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            if term is signal.SIG_DFL:  # the default is replaced by crm's handler while the command runs
                assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is term
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.parametrize("case", ["missing", "corrupt", "size"])
def test_score_failure_with_json_prints_one_record_like_the_other_commands(folder: Path, tmp_path: Path,
                                                                          case: str) -> None:
    gt = folder / "p0_seg.png"
    pred = {"missing": tmp_path / "nope.png", "corrupt": tmp_path / "corrupt.png",
            "size": tmp_path / "small.png"}[case]
    if case == "corrupt":
        pred.write_bytes(b"not an image")
    if case == "size":
        write_scene_files(tmp_path, "s_im", "small", size=(100, 100))
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 1, result.output
    assert result.stdout.count("\n") == 1, result.stdout  # was: nothing on stdout
    record = json.loads(result.stdout)
    assert list(record) == ["pred", "gt", "status", "error"]
    assert record["pred"] == str(pred) and record["gt"] == str(gt) and record["status"] == "failed"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {record['error']}"]
