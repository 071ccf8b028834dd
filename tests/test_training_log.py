"""The training log (log.csv) and validation records (val.jsonl) across an interruption and a resume:
cut back in one place (Trainer.start_logs), by one rule, the rows kept byte for byte."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY_ARCH, write_training_pairs

from crm_cli.training.loop import RunEnd, Trainer
from crm_cli.training.options import TrainOptions

STEPS, CKPT_EVERY, VAL_EVERY = 5, 2, 3
KILLED_IN = 4  # the step being made when the run is killed: rows 1-3 are logged, last.pt holds step 2


class Killed(BaseException):
    """A kill: nothing of the run's own clean-up (no checkpoint at the stop) happens."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 small image/mask pairs in the DUTS-TR layout."""
    return write_training_pairs(tmp_path_factory.mktemp("duts"), 8, (96, 80), name="s{:02d}")


def _options(data: Path, out: Path) -> TrainOptions:
    return TrainOptions(data=str(data), out=str(out), steps=STEPS, batch=2, seed=5, val_every=VAL_EVERY,
                        ckpt_every=CKPT_EVERY, val_images=2, arch=dict(TINY_ARCH), query_window=32)


def _kill_in_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the run die as a kill would while it makes ``step``, after the steps before it are logged."""
    train_step = Trainer.train_step

    def dying(self: Trainer, batch: object = None) -> dict[str, float]:
        if self.step == step - 1:
            raise Killed
        return train_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", dying)


def _killed_run(data: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run into ``out`` that a kill ends while it makes step KILLED_IN. It ends with
    ``monkeypatch.undo()``, which also undoes any patch the test made before it."""
    _kill_in_step(monkeypatch, KILLED_IN)
    with pytest.raises(Killed):
        Trainer(_options(data, out)).run()
    monkeypatch.undo()


def _steps(path: Path) -> list[int]:
    with open(path, newline="") as handle:
        return [int(row["step"]) for row in csv.DictReader(handle)]


def _without_timing(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def test_resume_keeps_the_rows_up_to_its_checkpoint_byte_for_byte_and_logs_each_step_once(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = tmp_path / "straight"
    assert Trainer(_options(data, straight)).run() is RunEnd.FINISHED

    out = tmp_path / "run"
    _killed_run(data, out, monkeypatch)
    log = out / "log.csv"
    assert _steps(log) == [1, 2, 3]
    with open(log, "ab") as handle:  # and the kill cut the next row short
        handle.write(b"4,0.0001")
    first = log.read_bytes().splitlines(keepends=True)
    assert first[0].endswith(b"\r\n")  # csv's own line ends, which a rewrite as text would change

    resumed = Trainer(_options(data, out))
    assert resumed.resume() and resumed.step == CKPT_EVERY
    assert log.read_bytes() == b"".join(first)  # resume() only reads: run() cuts the log back
    assert resumed.run() is RunEnd.FINISHED

    final = log.read_bytes().splitlines(keepends=True)
    assert final[: 1 + CKPT_EVERY] == first[: 1 + CKPT_EVERY]  # the header and rows 1-2, byte for byte
    assert _steps(log) == list(range(1, STEPS + 1))
    assert all(line.endswith(b"\r\n") for line in final)
    assert _without_timing(log) == _without_timing(straight / "log.csv")
    records = [json.loads(line)["step"] for line in (out / "val.jsonl").read_text().splitlines()]
    assert records == [3, 5]
    assert (out / "val.jsonl").read_text() == (straight / "val.jsonl").read_text()


def test_a_fresh_run_starts_a_new_log(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    options = _options(data, out)
    options.val_sets = [f"gone={data}"]
    _kill_in_step(monkeypatch, 2)  # before the first checkpoint: a log row, no last.pt
    with pytest.raises(Killed):
        Trainer(options).run()
    monkeypatch.undo()
    assert _steps(out / "log.csv") == [1] and not (out / "last.pt").exists()
    (out / "val.jsonl").write_text('{"step": 1, "iou": 0.5}\n')

    options = _options(data, out)
    options.steps = 1
    assert Trainer(options).run() is RunEnd.FINISHED
    with open(out / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["1"]
    assert not any(column.startswith("gone_") for column in rows[0])  # this run's columns, not the old run's
    # The old record of step 1 is gone; the one left is this run's validation at its last step.
    assert [json.loads(line)["step"] for line in (out / "val.jsonl").read_text().splitlines()] == [1]
    assert "iou" not in json.loads((out / "val.jsonl").read_text())


def test_cutting_back_keeps_line_ends_and_drops_a_row_cut_between_them(tmp_path: Path) -> None:
    from crm_cli.training.logs import truncate_log

    log = tmp_path / "log.csv"
    log.write_bytes(b"step,loss\r\n1,0.1\r\n2,0.2\r\n3,0.3\r")
    truncate_log(log, 5)
    assert log.read_bytes() == b"step,loss\r\n1,0.1\r\n2,0.2\r\n"
    truncate_log(log, 1)
    assert log.read_bytes() == b"step,loss\r\n1,0.1\r\n"


def test_a_header_cut_short_is_no_header(tmp_path: Path) -> None:
    from crm_cli.training.logs import check_logged_val_sets

    log = tmp_path / "log.csv"
    log.write_bytes(b"step,lo")  # a kill while the header was written: rows would be appended to it
    assert check_logged_val_sets(log, []) is None
    log.write_bytes(b"step,loss\r\n")
    assert check_logged_val_sets(log, []) == ["step", "loss"]


def test_a_resumed_run_whose_header_was_cut_short_starts_a_whole_log(data: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cut"
    _killed_run(data, out, monkeypatch)
    (out / "log.csv").write_bytes(b"step,lo")  # as if the kill had come while the header was written
    resumed = Trainer(_options(data, out))
    assert resumed.resume() and resumed.step == CKPT_EVERY
    assert resumed.run() is RunEnd.FINISHED
    with open(out / "log.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == resumed.log_columns()  # the run's own columns, not the cut ones
    assert _steps(out / "log.csv") == list(range(CKPT_EVERY + 1, STEPS + 1))


def test_a_resume_reads_the_log_twice_and_goes_on_as_a_straight_run(data: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """resume() reads the header alone (other --val-set names are refused before any step); run()
    reads the whole log once, for the header it checks again and the rows it cuts back."""
    import builtins
    import os

    straight = tmp_path / "straight"
    assert Trainer(_options(data, straight)).run() is RunEnd.FINISHED
    out = tmp_path / "run"
    _killed_run(data, out, monkeypatch)
    log = out / "log.csv"
    first = log.read_bytes().splitlines(keepends=True)

    opened: list[str] = []  # the modes log.csv is opened in
    real_open, real_path_open = builtins.open, Path.open

    def counting_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if isinstance(file, (str, os.PathLike)) and Path(file) == log:
            opened.append(mode)
        return real_open(file, mode, *args, **kwargs)

    def counting_path_open(path: Path, mode: str = "r", *args: object, **kwargs: object) -> object:
        if path == log:
            opened.append(mode)
        return real_path_open(path, mode, *args, **kwargs)

    # Path.open reaches the file through io.open on 3.11+ and through a reference bound at import on
    # 3.10, which patching io.open misses; builtins.open is a name of its own that Path.open never uses.
    monkeypatch.setattr(Path, "open", counting_path_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    resumed = Trainer(_options(data, out))
    assert resumed.resume() and opened == ["r"]
    assert resumed.run() is RunEnd.FINISHED
    assert opened == ["r", "rb", "a"]  # and the cut-back log written to a new file, then renamed over it
    monkeypatch.undo()

    final = log.read_bytes().splitlines(keepends=True)
    assert final[: 1 + CKPT_EVERY] == first[: 1 + CKPT_EVERY]  # the header and rows 1-2, byte for byte
    assert _without_timing(log) == _without_timing(straight / "log.csv")
    assert (out / "val.jsonl").read_bytes() == (straight / "val.jsonl").read_bytes()


def test_run_checks_the_header_it_reads_even_after_resume_did(data: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    _killed_run(data, out, monkeypatch)
    resumed = Trainer(_options(data, out))
    assert resumed.resume()
    log = out / "log.csv"
    lines = log.read_bytes().splitlines(keepends=True)
    other = b",".join([lines[0].rstrip(b"\r\n"), b"gone_coarse_iou\r\n"])  # changed after resume() read it
    log.write_bytes(other + b"".join(lines[1:]))
    with pytest.raises(ValueError, match="validates on sets gone, but this one is without gone"):
        resumed.run()
    assert log.read_bytes() == other + b"".join(lines[1:])  # nothing cut back, nothing appended
