"""`crm train --workers N` under a low open-files limit (``ulimit -n``): each batch a worker hands over
holds files, and with the hard limit at 16 training failed with "Too many open files" and then waited
for ever on the workers that had started."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_training_damaged import make_pairs, options

from crm_cli import runtime
from crm_cli.training.loader import (
    OPEN_FILES_PER_BATCH,
    OPEN_FILES_PER_WORKER,
    OPEN_FILES_RESERVE,
    PREFETCH_BATCHES,
    open_files_plan,
    resource_plan,
)
from crm_cli.training.loop import Trainer


@pytest.mark.parametrize(("free", "expected"), [
    (None, (2, PREFETCH_BATCHES)),  # no measure: as asked
    (2 * 4 + 8 * 6, (2, 4)),  # both workers' 4 + 8 batches of 6 files: all fit
    (2 * 4 + 8 * 6 - 1, (2, 3)),  # one file short: 7 slots, 3 ahead each
    (2 * 4 + 2 * 6, (2, 1)),  # two slots
    (2 * 4 + 2 * 6 - 1, (1, 2)),  # one slot for two workers; one worker leaves 15 files: 2 batches ahead
    (1 * 4 + 1 * 6 - 1, (0, 1)),  # not one worker with one batch
    (0, (0, 1)),
])
def test_open_files_plan_counts_workers_and_batches(free: int | None, expected: tuple[int, int]) -> None:
    assert (OPEN_FILES_PER_WORKER, OPEN_FILES_PER_BATCH) == (4, 6)  # the hand counts above use these
    assert open_files_plan(2, free) == expected


def test_resource_plan_without_a_worker_cost_is_the_shared_memory_rule() -> None:
    # 5 slots for 3 workers: 3 workers, one batch ahead each; 2 slots: 2 workers.
    assert resource_plan(3, 10, 50) == (3, 1)
    assert resource_plan(3, 10, 20) == (2, 1)
    assert resource_plan(3, 10, 9) == (0, 1)
    assert resource_plan(0, 10, 0) == (0, PREFETCH_BATCHES)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
def test_open_files_left_is_the_limit_less_what_is_open(monkeypatch: pytest.MonkeyPatch) -> None:
    left = runtime.open_files_left()
    limit = runtime.open_files_limit()
    assert left is not None and limit is not None and 0 < left < limit
    with open(__file__) as _first, open(__file__) as _second:
        assert runtime.open_files_left() == left - 2
    monkeypatch.setattr(runtime, "open_files_limit", lambda: None)
    assert runtime.open_files_left() is None


def test_too_few_files_for_workers_trains_the_same_batches_in_process(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    data = make_pairs(tmp_path / "data", 6)
    monkeypatch.setattr(runtime, "open_files_left", lambda: OPEN_FILES_RESERVE + 9)  # not one worker
    trainer = Trainer(options(data, tmp_path / "run", 3, batch=2, workers=2))
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        planned = trainer.batches()
        batches = [made.batch for made in planned]
    assert not hasattr(planned, "_shutdown_workers")  # a plain generator: no loader started
    assert ("this process may open 25 more files (ulimit -n), too few for 2 workers keeping 4 batches ahead"
            in caplog.text and "batches made in the training process (no workers)" in caplog.text)
    monkeypatch.undo()
    alone = Trainer(options(data, tmp_path / "alone", 3, batch=2, workers=0))
    for one, other in zip(batches, [made.batch for made in alone.batches()], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(one, other, strict=True))


def _sleep_ignoring_sigterm() -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a loader worker does
    time.sleep(120)


def test_a_loader_that_fails_to_start_leaves_no_worker_and_trains_in_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # The plan is an estimate: when the loader still runs out of files while starting its workers,
    # those that started are killed (they ignore SIGTERM, so the exit waited on them for ever) and the
    # batches are made in the training process.
    started: list[multiprocessing.Process] = []

    def failing_iter(self: object) -> None:
        worker = multiprocessing.get_context("spawn").Process(target=_sleep_ignoring_sigterm, daemon=True)
        worker.start()
        started.append(worker)
        raise OSError(errno.EMFILE, "Too many open files")

    data = make_pairs(tmp_path / "data", 6)
    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", failing_iter)
    trainer = Trainer(options(data, tmp_path / "run", 3, batch=2, workers=2))
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        batches = [made.batch for made in trainer.batches()]
    assert len(started) == 1 and not started[0].is_alive() and started[0].exitcode is not None
    assert "too few open files for 2 workers" in caplog.text and "no workers" in caplog.text
    assert len(batches) == 3

    def other_failure(self: object) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", other_failure)
    with pytest.raises(PermissionError):
        Trainer(options(data, tmp_path / "other", 3, batch=2, workers=2)).batches()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sets RLIMIT_NOFILE")
def test_train_with_workers_under_a_hard_limit_of_16_files(tmp_path: Path) -> None:
    import resource

    data = make_pairs(tmp_path / "data", 6)

    def sixteen_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))

    command = [sys.executable, "-m", "crm_cli", "train", "--data", str(data), "--out", str(tmp_path / "run"),
               "--steps", "3", "--batch", "2", "--workers", "2", "--threads", "1", "--init", "random",
               "--val-images", "1", "--device", "cpu"]
    result = subprocess.run(command, preexec_fn=sixteen_files, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Too many open files" not in result.stderr
    assert "too few for 2 workers" in result.stderr and "(no workers)" in result.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()
