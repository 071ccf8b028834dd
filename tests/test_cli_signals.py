"""Process-level behaviour of the commands: stopped by Ctrl-C (SIGINT), SIGTERM or SIGHUP, a
command unwinds, removes the temp file and the lock of the output it was making, says so on
stderr and exits 128 + the signal's number.

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

# Runs `crm ARGS...` with SIGINT, SIGTERM and SIGHUP at their defaults (as in a terminal) and
# os.replace patched to send SIGNAL to the process itself on its N-th call. "SIGTERM+SIGHUP" sends
# the second one when the cleanup that follows the first removes its first file.
DRIVER = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signals = [getattr(signal, name) for name in sys.argv[1].split("+")]
nth = int(sys.argv[2])
real_replace, real_unlink, calls = os.replace, os.unlink, []

def replace(*args, **kwargs):
    calls.append(1)
    if len(calls) == nth:
        os.kill(os.getpid(), signals.pop(0))
    return real_replace(*args, **kwargs)

def unlink(*args, **kwargs):
    if 0 < nth <= len(calls) and signals:
        os.kill(os.getpid(), signals.pop(0))
    return real_unlink(*args, **kwargs)

os.replace, os.unlink = replace, unlink
sys.argv = ["crm", *sys.argv[3:]]
from crm_cli.cli import main
main()
"""


def run_crm(*args: str, stop: str | None = None, nth: int = 1) -> subprocess.CompletedProcess:
    """``crm ARGS`` in a child process, sent ``stop`` at the ``nth`` rename of a finished write when
    given (see DRIVER)."""
    command = [sys.executable, "-c", DRIVER, stop or "SIGINT", str(nth if stop else 0), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


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


@pytest.mark.parametrize("stops", ["SIGHUP+SIGHUP", "SIGTERM+SIGHUP", "SIGTERM+SIGTERM", "SIGINT+SIGINT",
                                   "SIGTERM+SIGINT", "SIGINT+SIGTERM"])
def test_a_second_stop_signal_during_the_cleanup_does_not_cut_it_short(folder: Path, tmp_path: Path,
                                                                       stops: str) -> None:
    """A closed terminal sends SIGHUP twice (the shell, then the kernel), and an impatient user
    presses Ctrl-C twice: the second one, arriving while the first one's cleanup removes the temp
    file, is ignored (a second Ctrl-C used to leave the output's lock and could print a traceback)."""
    out = tmp_path / "out"
    first = getattr(signal, stops.split("+")[0])
    stopped = run_crm("batch", str(folder), "-o", str(out), "-d", "cpu", stop=stops, nth=2)
    assert stopped.returncode == 128 + first, stopped.stderr  # was: killed by the second signal
    assert "Traceback" not in stopped.stderr and "Exception ignored" not in stopped.stderr
    assert hidden(out) == [] and sorted(path.name for path in out.iterdir()) == ["p0_mask.png"]


# A command ending with CODE, then a shutdown that hangs (an atexit handler standing for a thread
# joined at exit) and meets another SIGNAL: the process must end at once, with CODE.
SHUTDOWN_DRIVER = """
import atexit, os, signal, sys, time
import crm_cli.cli as cli
code, stop = int(sys.argv[1]), getattr(signal, sys.argv[2])
for name in ("SIGINT", "SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, name), signal.default_int_handler if name == "SIGINT" else signal.SIG_DFL)

def hanging_shutdown():
    print("shutting down", flush=True)
    os.kill(os.getpid(), stop)
    time.sleep(30)
    print("slept", flush=True)  # a shutdown that was not ended at once gets here

atexit.register(hanging_shutdown)

def ended():
    print("the command's output", end="")
    raise SystemExit(code)

cli.registered_app = lambda: ended
cli.main()
"""


@pytest.mark.parametrize("code, stop", [(130, "SIGINT"), (143, "SIGTERM"), (129, "SIGINT"), (130, "SIGTERM")])
def test_another_stop_while_a_stopped_process_exits_ends_it_at_once_with_its_code(code: int, stop: str) -> None:
    """The interpreter's shutdown (joining threads) met a second Ctrl-C with a traceback, or hung
    where only it could end it; a second SIGTERM made the exit code the signal's own."""
    ended = subprocess.run([sys.executable, "-c", SHUTDOWN_DRIVER, str(code), stop], capture_output=True, text=True,
                           timeout=120)
    assert ended.returncode == code
    # What was printed before stays, and the hanging shutdown never woke: no clock read, which a slow
    # machine could push past any bound.
    assert ended.stdout == "the command's outputshutting down\n"
    assert "Traceback" not in ended.stderr and "Exception ignored" not in ended.stderr


def test_a_command_that_was_not_stopped_leaves_the_stop_signals_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import crm_cli.cli as cli

    names = ("SIGINT", "SIGTERM", "SIGHUP")
    saved = {name: signal.getsignal(getattr(signal, name)) for name in names}
    try:
        for code in (0, 1, 2):
            for name in names:
                signal.signal(getattr(signal, name), signal.SIG_DFL)

            def ended(code: int = code) -> None:
                raise SystemExit(code)

            monkeypatch.setattr(cli, "registered_app", lambda ended=ended: ended)
            with pytest.raises(SystemExit) as end:
                cli.main()
            assert end.value.code == code
            assert all(signal.getsignal(getattr(signal, name)) is signal.SIG_DFL for name in names), code
    finally:
        for name, handler in saved.items():
            signal.signal(getattr(signal, name), handler)


def test_a_stopped_overwrite_run_does_not_promise_to_go_on(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stopped = run_crm("batch", str(folder), "-o", str(out), "-d", "cpu", "--overwrite", stop="SIGTERM", nth=2)
    assert stopped.returncode == 143, stopped.stderr
    assert stopped.stderr.splitlines()[-1] == "stopped by SIGTERM"  # a rerun with --overwrite redoes all


def test_a_stop_hidden_behind_an_error_of_its_cleanup_still_exits_128_plus_n() -> None:
    """A terminal that hung up makes Rich's progress raise OSError on its way out, over the stop."""
    import typer

    from crm_cli.cli.stops import Terminated, stops_cleanly

    with pytest.raises(typer.Exit) as stopped, stops_cleanly():
        try:
            raise Terminated(signal.SIGHUP)
        finally:
            raise OSError(5, "Input/output error")
    assert stopped.value.exit_code == 129
    with pytest.raises(OSError), stops_cleanly():  # an error with no stop behind it stays as it is
        raise OSError(5, "Input/output error")


def test_stops_cleanly_keeps_ignored_signals_ignored_and_puts_handlers_back() -> None:
    from crm_cli.cli.stops import stops_cleanly

    previous_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    previous_term = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a terminal
    try:
        with stops_cleanly():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # crm's handler meanwhile
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGHUP, previous_hup)
        signal.signal(signal.SIGTERM, previous_term)


def _stopped_then_broken(*args: object, **kwargs: object) -> None:
    """A stop signal, then an error of the cleanup it set off (a terminal that hung up)."""
    from crm_cli.cli.stops import Terminated

    try:
        raise Terminated(signal.SIGTERM)
    finally:
        raise OSError(5, "Input/output error")


def test_an_error_raised_while_a_stop_unwinds_is_not_taken_for_a_failure(folder: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither batch's per-pair handler nor the one-line error handler may take it: batch went on
    with the other pairs (stop signals ignored by then) and --json printed a failure record."""
    import typer

    from crm_cli.cli.failures import user_errors
    from crm_cli.cli.stops import stops_cleanly

    records: list[str] = []
    with pytest.raises(typer.Exit) as stopped, stops_cleanly(), user_errors(records.append):
        _stopped_then_broken()
    assert stopped.value.exit_code == 143 and records == []

    from typer.testing import CliRunner

    from crm_cli.cli import app

    monkeypatch.setattr("crm_cli.writing.write_png", _stopped_then_broken)
    result = CliRunner().invoke(app, ["batch", str(folder), "-o", str(tmp_path / "out"), "-d", "cpu", "--json"])
    assert result.exit_code == 143, result.output
    assert result.stdout == "" and "stopped by SIGTERM" in result.stderr
    assert "failed" not in result.stderr
