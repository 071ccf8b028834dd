"""`crm train --workers N` where /dev/shm is small (a container's 64 MB): the loader keeps as many
batches in flight as shared memory holds, instead of failing to hand one over and waiting for ever."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
from test_training_damaged import make_pairs, options

from crm_cli import containers
from crm_cli.training import loop
from crm_cli.training.data import CROP, PairCache, list_pairs
from crm_cli.training.loader import PREFETCH_BATCHES, batch_bytes, loader_plan, step_batch
from crm_cli.training.loop import Trainer

MB = 1 << 20


def test_batch_bytes_is_what_a_batch_holds(tmp_path: Path) -> None:
    cache = PairCache(list_pairs(make_pairs(tmp_path / "data", 3)))
    rgb, coarse, gt = step_batch(cache, seed=0, step=0, batch=3)
    assert batch_bytes(3) == rgb.nbytes + coarse.nbytes + gt.nbytes == 3 * CROP * CROP * 5 * 4


@pytest.mark.parametrize(("free_mb", "expected"), [
    (None, (2, PREFETCH_BATCHES)),  # nothing to measure: as asked
    (200, (2, 4)),  # 2 x 4 batches of 12 MB, each counted twice: 192 MB fit
    (150, (2, 3)),  # 6 slots: 3 ahead each
    (64, (2, 1)),  # Docker's default: 2 slots, one batch ahead each
    (40, (1, 1)),  # one slot: one worker
    (20, (0, 1)),  # not one batch: made in the training process
])
def test_loader_plan_fits_shared_memory(free_mb: int | None, expected: tuple[int, int]) -> None:
    free = None if free_mb is None else free_mb * MB
    assert loader_plan(2, 12 * MB, free) == expected


def test_loader_plan_leaves_no_workers_alone() -> None:
    assert loader_plan(0, 12 * MB, 0) == (0, PREFETCH_BATCHES)


def test_a_small_shared_memory_trains_the_same_batches_with_a_warning(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    data = make_pairs(tmp_path / "data", 6)
    made: list[tuple[int, int]] = []
    real_plan = loop.loader_plan

    def recorded_plan(workers: int, size: int, free: int | None) -> tuple[int, int]:
        made.append(real_plan(workers, size, free))
        return made[-1]

    monkeypatch.setattr(loop, "loader_plan", recorded_plan)
    monkeypatch.setattr(containers, "shared_memory_free", lambda: 3 * batch_bytes(2))  # one slot (x2 margin)
    trainer = Trainer(options(data, tmp_path / "run", 3, batch=2, workers=2))
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        batches = [made_batch.batch for made_batch in trainer.batches()]
    assert made == [(1, 1)]
    assert ("too little for 2 workers keeping 4 batches of 2.0 MB ahead: 1 worker keeping 1 batch ahead"
            in caplog.text)
    assert "docker run --shm-size" in caplog.text
    monkeypatch.setattr(containers, "shared_memory_free", lambda: 0)
    caplog.clear()
    alone = Trainer(options(data, tmp_path / "alone", 3, batch=2, workers=2))
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        in_process = [made_batch.batch for made_batch in alone.batches()]
    assert made[-1] == (0, 1) and "batches made in the training process (no workers)" in caplog.text
    assert "shared memory (/dev/shm) is missing, read-only or full, too little for 2 workers" in caplog.text
    for one, other in zip(batches, in_process, strict=True):
        assert all((a == b).all() for a, b in zip(one, other, strict=True))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX shared memory in /dev/shm is Linux's")
def test_shared_memory_free_reads_the_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    free = containers.shared_memory_free(tmp_path)
    assert free is not None and free > 0
    assert containers.shared_memory_free(tmp_path / "missing") == 0  # no /dev/shm: no workers
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only one, for a root user too
    assert containers.shared_memory_free(tmp_path) == 0


ORPHAN_DRIVER = """
import multiprocessing, os, sys, time
from crm_cli.training.loader import _end_with_parent

def child(parent, path):
    open(path + ".before", "w").close()
    _end_with_parent(parent)
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    parent = os.getpid() if sys.argv[2] == "mine" else 1
    multiprocessing.get_context("spawn").Process(target=child, args=(parent, sys.argv[1])).start()
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("parent", ["mine", "gone"])
def test_a_loader_worker_ends_with_its_training_process(tmp_path: Path, parent: str) -> None:
    # Workers ignore SIGTERM, and a training process killed (SIGKILL, the OOM killer) while they were
    # starting left them running for good. Now the kernel kills them with it, and one whose training
    # process is gone by the time it starts ends at once.
    import signal
    import subprocess
    import time

    started, script = tmp_path / "worker.pid", tmp_path / "driver.py"
    script.write_text(ORPHAN_DRIVER)  # a file: a spawned child imports its function from __main__
    driver = subprocess.Popen([sys.executable, str(script), str(started), parent])
    try:
        deadline = time.monotonic() + 120
        awaited = started if parent == "mine" else tmp_path / "worker.pid.before"
        while not awaited.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if parent == "gone":  # the parent it was told of is not its own: it ends before writing
            time.sleep(3)
            assert awaited.exists() and not started.exists()
            return
        worker = int(started.read_text())
        assert _alive(worker)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker)
    finally:
        driver.kill()
        driver.wait(timeout=30)
