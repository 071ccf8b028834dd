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
from crm_cli.training.loop import PREFETCH_BATCHES, Trainer, batch_bytes, loader_plan, step_batch

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
