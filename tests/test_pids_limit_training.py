"""`crm train --workers N` under a container's pids limit: each loader worker takes a process and
several threads, and a worker that could not start its queue's feeder thread died with its first
batch (a torch traceback, or a training that waited for ever)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from test_containers import V1_MOUNTS, v2_tree, write
from test_training_damaged import make_pairs, options

from crm_cli import containers
from crm_cli.training.loader import PIDS_PER_WORKER_BASE, PIDS_RESERVE, PREFETCH_BATCHES, pids_plan
from crm_cli.training.loop import Trainer


def test_pids_left_v2_is_the_smallest_along_the_parents(tmp_path: Path) -> None:
    root = v2_tree(tmp_path)
    base = "sys/fs/cgroup/kubepods"
    write(root, f"{base}/pids.max", "100\n")
    write(root, f"{base}/pids.current", "90\n")  # 10 left above
    write(root, f"{base}/pod1/c1/pids.max", "max\n")  # no limit of its own
    write(root, f"{base}/pod1/c1/pids.current", "7\n")
    assert containers.pids_left(root) == 10
    write(root, f"{base}/pod1/c1/pids.max", "12\n")
    assert containers.pids_left(root) == 5
    write(root, f"{base}/pod1/c1/pids.current", "15\n")  # over: nothing left
    assert containers.pids_left(root) == 0


def test_pids_left_v1_and_none_without_a_limit(tmp_path: Path) -> None:
    root = tmp_path
    mounts = V1_MOUNTS.format(cpu_root="/", memory_root="/") + (
        "44 31 0:40 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n")
    write(root, "proc/self/mountinfo", mounts)
    write(root, "proc/self/cgroup", "7:pids:/docker/abc\n12:memory:/docker/abc\n0::/\n")
    assert containers.pids_left(root) is None  # no files: no limit known
    write(root, "sys/fs/cgroup/pids/docker/abc/pids.max", "30\n")
    write(root, "sys/fs/cgroup/pids/docker/abc/pids.current", "4\n")
    assert containers.pids_left(root) == 26


@pytest.mark.parametrize(("free", "cpus", "expected"), [
    (None, 2, (2, PREFETCH_BATCHES)),  # no limit: as asked
    (8 + 2 * 6, 2, (2, PREFETCH_BATCHES)),  # the reserve and two workers of 4 + 2 each
    (8 + 2 * 6 - 1, 2, (1, PREFETCH_BATCHES)),
    (8 + 6 - 1, 2, (0, 1)),  # not one worker: made in the training process
    (8 + 2 * 20, 16, (2, PREFETCH_BATCHES)),  # OpenBLAS starts a thread per CPU in each worker
    (8 + 2 * 20 - 1, 16, (1, PREFETCH_BATCHES)),
])
def test_pids_plan_counts_each_workers_threads(free: int | None, cpus: int, expected: tuple[int, int]) -> None:
    assert (PIDS_RESERVE, PIDS_PER_WORKER_BASE) == (8, 4)  # the hand counts above use these
    assert pids_plan(2, free, cpus) == expected
    assert pids_plan(0, 0, cpus) == (0, PREFETCH_BATCHES)


def test_a_pids_limit_too_small_for_workers_trains_the_same_batches_in_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    data = make_pairs(tmp_path / "data", 6)
    monkeypatch.setattr(containers, "pids_left", lambda: 9)
    trainer = Trainer(options(data, tmp_path / "run", 3, batch=2, workers=2))
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        planned = trainer.batches()
        batches = [made.batch for made in planned]
    assert not hasattr(planned, "_shutdown_workers")  # no loader started
    assert ("this process may start 9 more processes and threads (a container's pids limit), too few for 2 "
            "workers: batches made in the training process (no workers)") in caplog.text
    monkeypatch.undo()
    alone = Trainer(options(data, tmp_path / "alone", 3, batch=2, workers=0))
    for one, other in zip(batches, [made.batch for made in alone.batches()], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(one, other, strict=True))
