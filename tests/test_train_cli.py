"""``crm train`` as a user meets it: exit codes, one-line errors, Ctrl-C, literal paths."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import write_training_pairs
from typer.testing import CliRunner

from crm_cli.cli import app


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 small image/mask pairs in the DUTS-TR layout."""
    return write_training_pairs(tmp_path_factory.mktemp("duts"), 12)


def train(*args: str) -> tuple[int, str, str]:
    """Run ``crm train`` with small settings; (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, ["train", "--batch", "2", "--query-window", "32", "--init", "random",
                                      "--val-images", "2", *args])
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_usage_errors_exit_2_naming_the_option(pairs: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "run")
    cases = {
        "--data": ["--data", str(empty), "--out", out],
        "--coarse-mix": ["--data", str(pairs), "--out", out, "--coarse-mix", "paper=x"],
        "--val-set": ["--data", str(pairs), "--out", out, "--val-set", f"a={tmp_path / 'missing'}"],
        "--encoder": ["--data", str(pairs), "--out", out, "--encoder", "resnet5"],
        "--val-ratios": ["--data", str(pairs), "--out", out, "--val-ratios", "0.5,2"],
    }
    for option, args in cases.items():
        code, stdout, stderr = train(*args)
        assert code == 2, (option, stderr)
        assert stdout == ""
        assert stderr.startswith("error: ") and option in stderr.splitlines()[0], stderr
    assert "the weight of paper must be a number" in train(*cases["--coarse-mix"])[2]
    code, _, stderr = train("--data", str(pairs), "--out", out, "--coarse-mix", "paper=0.5,network=0.5")
    assert code == 2 and "--coarse-mix" in stderr and "--network-masks" in stderr
    for ratios in ("1,0.5", "0.5,,1"):  # decreasing, or an empty entry training.loop would not read
        assert train("--data", str(pairs), "--out", out, "--val-ratios", ratios)[0] == 2
    assert not (tmp_path / "run").exists()


def test_nan_float_options_exit_2_naming_the_option(pairs: Path, tmp_path: Path) -> None:
    # click's range checks compare, and every comparison with NaN is false, so NaN slipped through them.
    for option in ("--lr", "--synthetic", "--zoom", "--transpose", "--max-minutes", "--boundary-weight"):
        code, stdout, stderr = train("--data", str(pairs), "--out", str(tmp_path / "run"), "--steps", "1",
                                     option, "nan")
        assert code == 2 and stdout == "", (option, stderr)
        assert stderr.startswith("error: ") and f"'{option}'" in stderr.splitlines()[0], stderr
    assert not (tmp_path / "run").exists()


def test_unreadable_checkpoint_exits_1_naming_it(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"")
    code, _, stderr = train("--data", str(pairs), "--out", str(out), "--steps", "2", "--resume")
    assert code == 1
    assert stderr.splitlines() == [f"error: {out / 'last.pt'}: not a readable training checkpoint (the file ends "
                                   "early); remove it to start over, or copy back a good one"]


def test_ctrl_c_saves_the_step_it_finishes_exits_130_and_says_how_to_resume(pairs: Path, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.training.loop import Trainer

    out = tmp_path / "runs [a]"  # brackets Rich would read as markup
    args = ["--data", str(pairs), "--out", str(out), "--steps", "3", "--ckpt-every", "2", "--val-every", "3"]
    train_step = Trainer.train_step

    def interrupted_step(self: Trainer, batch: object = None) -> dict[str, float]:
        if self.step == 0:  # Ctrl-C in the middle of step 1, before any checkpoint
            signal.raise_signal(signal.SIGINT)
        return train_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    code, stdout, stderr = train(*args)
    assert code == 130 and stdout == ""
    assert "interrupted: finishing the step in progress to save it; Ctrl-C again to quit at once" in stderr
    assert f"interrupted at step 1: {out / 'last.pt'} holds step 1; continue with --resume" in stderr
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1
    monkeypatch.setattr(Trainer, "train_step", train_step)
    code, stdout, stderr = train(*args, "--resume")
    assert code == 0 and stdout == ""
    assert f"resumed from {out / 'last.pt'} at step 1" in stderr
    assert f"done: {out / 'model.safetensors'}" in stderr
    log = (out / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log] == ["step", "1", "2", "3"]


# `crm train ARGS` with SIGTERM at its system default, sent to itself during step 1 (a scheduler's
# pre-emption); a child process, so that a SIGTERM nobody handles ends only it.
SIGTERM_DRIVER = """
import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from crm_cli.training.loop import Trainer
train_step = Trainer.train_step

def terminated_step(self, batch=None):
    if self.step == 0:
        if group:  # from another process to the whole group, as `timeout` and schedulers do
            os.system(f"kill -TERM -{os.getpgid(0)}")  # (the workers take one from their parent as a stop)
        else:
            os.kill(os.getpid(), signal.SIGTERM)
    return train_step(self, batch)

Trainer.train_step = terminated_step
group = sys.argv[1] == "group"
sys.argv = ["crm", "train", *sys.argv[2:]]
from crm_cli.cli import main
main()
"""


@pytest.mark.parametrize("workers, to", [(0, "process"), (1, "group")])
def test_sigterm_saves_the_step_it_finishes_and_exits_143(pairs: Path, tmp_path: Path, workers: int, to: str) -> None:
    import subprocess
    import sys

    out = tmp_path / "run"
    args = ["--data", str(pairs), "--out", str(out), "--steps", "3", "--ckpt-every", "2", "--val-every", "3",
            "--batch", "2", "--query-window", "32", "--init", "random", "--val-images", "2", "--threads", "1",
            "--workers", str(workers)]
    done = subprocess.run([sys.executable, "-c", SIGTERM_DRIVER, to, *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, start_new_session=True)
    assert done.returncode == 143, done.stderr[-2000:]  # was -15: killed in the middle of step 1
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert "stopped by SIGTERM: finishing the step in progress to save it" in done.stderr
    assert f"stopped by SIGTERM at step 1: {out / 'last.pt'} holds step 1; continue with --resume" in done.stderr
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1


# `crm train ARGS` on a terminal that is closed during step 0: it waits there until it got the stop
# (a SIGHUP the test sends its process group, as the shell does for its jobs when the terminal goes),
# then until the test closed the terminal (the kernel's SIGHUP, a second one) before it goes on.
SIGHUP_DRIVER = """
import os, signal, sys, time
signal.signal(signal.SIGHUP, signal.SIG_DFL)
from crm_cli.training.loop import Trainer
train_step = Trainer.train_step

def hung_up_step(self, batch=None):
    if self.step == 0:
        os.close(os.open(marker + ".started", os.O_CREAT | os.O_WRONLY))
        deadline = time.monotonic() + 120
        while not os.path.exists(marker + ".closed") and time.monotonic() < deadline:
            time.sleep(0.05)
    return train_step(self, batch)

Trainer.train_step = hung_up_step
marker = sys.argv[1]
sys.argv = ["crm", "train", *sys.argv[2:]]
from crm_cli.cli import main
main()
"""


def _controlling_terminal() -> None:
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # stdin is the terminal; the child leads a new session


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this system")
@pytest.mark.parametrize("workers", [0, 1])
def test_a_closed_terminal_saves_the_step_it_finishes_and_exits_129(pairs: Path, tmp_path: Path,
                                                                     workers: int) -> None:
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    marker = tmp_path / "marker"
    args = ["--data", str(pairs), "--out", str(out), "--steps", "3", "--ckpt-every", "2", "--val-every", "3",
            "--batch", "2", "--query-window", "32", "--init", "random", "--val-images", "2", "--threads", "1",
            "--workers", str(workers)]
    terminal, child_end = pty.openpty()
    child = subprocess.Popen([sys.executable, "-c", SIGHUP_DRIVER, str(marker), *args], stdin=child_end,
                             stdout=subprocess.PIPE, stderr=child_end, start_new_session=True,
                             preexec_fn=_controlling_terminal)
    os.close(child_end)
    seen = b""

    def read_until(text: bytes, what: str) -> None:
        nonlocal seen
        deadline = time.monotonic() + 120
        while text not in seen:
            assert time.monotonic() < deadline and child.poll() is None, f"no {what}: {seen[-2000:]!r}"
            if select.select([terminal], [], [], 0.1)[0]:
                seen += os.read(terminal, 65536)

    try:
        deadline = time.monotonic() + 120
        while not Path(f"{marker}.started").exists():
            assert time.monotonic() < deadline and child.poll() is None, seen[-2000:]
            if select.select([terminal], [], [], 0.1)[0]:
                seen += os.read(terminal, 65536)
        os.killpg(child.pid, signal.SIGHUP)  # the shell's, to every job of the terminal
        read_until(b"stopped by SIGHUP: finishing the step in progress to save it", "stop line")
        os.close(terminal)  # the kernel's SIGHUP to the session; writes to the terminal now fail
        terminal = -1
        time.sleep(0.5)
        Path(f"{marker}.closed").touch()
        stdout, _ = child.communicate(timeout=300)
    finally:
        if terminal >= 0:
            os.close(terminal)
        if child.poll() is None:
            child.kill()
    assert child.returncode == 129  # was -1: killed by the first SIGHUP in the middle of step 0
    assert stdout == b""
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1  # the second SIGHUP did not cut it short


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this system")
def test_only_a_terminal_gone_after_sighup_is_forgiven() -> None:
    import errno
    from types import SimpleNamespace

    from crm_cli.cli.train import terminal_gone_after_sighup

    def raised(trainer: object, error: OSError) -> bool:
        try:
            with terminal_gone_after_sighup(trainer):
                raise error
        except OSError:
            return True
        return False

    hung_up = SimpleNamespace(interrupted=True, stop_signal=signal.SIGHUP)
    assert not raised(hung_up, OSError(errno.EIO, "Input/output error"))
    assert not raised(hung_up, OSError(errno.EPIPE, "Broken pipe"))
    assert raised(hung_up, OSError(errno.ENOSPC, "No space left on device"))  # a full disk while saving
    assert raised(SimpleNamespace(interrupted=True, stop_signal=signal.SIGINT), OSError(errno.EIO, "I/O"))
    assert raised(SimpleNamespace(interrupted=False, stop_signal=signal.SIGINT), OSError(errno.EIO, "I/O"))
    assert raised(None, OSError(errno.EIO, "I/O"))


def test_a_second_ctrl_c_quits_at_once_without_saving(pairs: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.training.loop import Trainer

    out = tmp_path / "run"
    train_step = Trainer.train_step

    def twice_interrupted_step(self: Trainer, batch: object = None) -> dict[str, float]:
        if self.step == 1:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return train_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", twice_interrupted_step)
    code, stdout, stderr = train("--data", str(pairs), "--out", str(out), "--steps", "3", "--ckpt-every", "2")
    assert code == 130 and stdout == ""
    assert "interrupted at step 1: no checkpoint was written yet; run the command again to start over" in stderr
    assert not (out / "last.pt").exists()


def test_resume_without_a_checkpoint_says_it_starts_anew(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    code, _, stderr = train("--data", str(pairs), "--out", str(out), "--steps", "1", "--resume")
    assert code == 0
    assert f"warning: --resume: {out / 'last.pt'} does not exist; starting a new run" in stderr
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1


def test_the_data_folder_is_walked_once_and_paired_as_before(pairs: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import pairing
    from crm_cli.training.data import list_pairs, split_pairs
    from crm_cli.training.loop import Trainer

    train_pairs, held_out = split_pairs(list_pairs(pairs))
    walks: list[Path] = []
    scan_pairs = pairing.scan_pairs

    def counting(root: Path, exclude: Path | None = None, **options: str) -> pairing.Pairing[pairing.FilePair]:
        walks.append(Path(root))
        return scan_pairs(root, exclude, **options)

    trainers: list[Trainer] = []
    run = Trainer.run

    def keep(self: Trainer, *args: object, **kwargs: object) -> object:
        trainers.append(self)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(pairing, "scan_pairs", counting)
    monkeypatch.setattr(Trainer, "run", keep)
    code, _, stderr = train("--data", str(pairs), "--out", str(tmp_path / "run"), "--steps", "1")
    assert code == 0, stderr
    assert walks == [pairs]
    assert trainers[0].cache.pairs == train_pairs and trainers[0].val_pairs == held_out[:2]


def test_encoder_choices_are_the_registered_encoders(pairs: Path, tmp_path: Path) -> None:
    from crm_cli.config import PRESET_ARCHS
    from crm_cli.model import encoder_names

    # Every registered encoder has the preset a run is built from, and only those are offered.
    assert sorted(PRESET_ARCHS) == encoder_names()
    help_text = CliRunner().invoke(app, ["train", "--help"]).stdout
    assert f"--encoder <{'|'.join(encoder_names())}>" in help_text
    code, stdout, stderr = train("--data", str(pairs), "--out", str(tmp_path / "run"), "--encoder", "resnet5")
    assert code == 2 and stdout == ""
    first = stderr.splitlines()[0]
    assert first.startswith("error: ") and "'--encoder'" in first and "'resnet5'" in first
    assert all(f"'{name}'" in first for name in encoder_names()), first
    assert not (tmp_path / "run").exists()


def test_a_known_encoder_trains_under_its_own_name(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, _, stderr = train("--data", str(pairs), "--out", str(out), "--steps", "1", "--encoder", "MobileNet_V2")
    assert code == 0, stderr
    assert "training mobilenet_v2 on" in stderr
    options = torch.load(out / "last.pt", weights_only=True)["options"]
    assert options["encoder"] == "mobilenet_v2" and type(options["encoder"]) is str
