"""A run's batches: each step's deterministic batch (:func:`step_batch`, :class:`StepBatches`), the loader
workers that make them ahead (their plans for shared memory, open files and pids, their setup and teardown),
and the signals a run defers to a step boundary (DEFERRED_SIGNALS), which the workers ignore."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import count_noun, message_of
from .data import CROP, DataMix, PairCache, ReadNotes, UnreadablePairsError, make_training_sample

logger = logging.getLogger(__name__)


def step_batch(cache: PairCache, seed: int, step: int, batch: int, rank: int = 0, world: int = 1,
               mix: DataMix | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's share of the global batch of ``step``: (rgb, coarse, gt) tensors."""
    mix = mix or DataMix()
    rng = np.random.default_rng([seed, step])
    indices = rng.integers(0, len(cache), size=batch)
    sample_seeds = rng.integers(0, 2**63 - 1, size=batch)
    images, coarses, gts = [], [], []
    for k in range(rank, batch, world):
        rgb, coarse, soft = make_training_sample(cache, int(indices[k]), np.random.default_rng(int(sample_seeds[k])),
                                                 mix)
        images.append(rgb)
        coarses.append(coarse)
        gts.append(soft)
    rgb = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return rgb, torch.from_numpy(np.stack(coarses)).unsqueeze(1), torch.from_numpy(np.stack(gts))


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class BatchNotes:
    """What making a batch met besides its samples, for the training process to report: the cache's
    :class:`~.data.ReadNotes`, the library's warnings logged in a loader worker (a photo of several
    frames), and why no batch could be made (no pair can be read; "" when it was)."""

    reads: ReadNotes
    warnings: tuple[str, ...] = ()
    failure: str = ""


class MadeBatch(NamedTuple):
    """A step's batch (None when it could not be made) and its notes. A named tuple, so the data
    loader hands it on (and pins the tensors) as it is."""

    batch: Batch | None
    notes: BatchNotes


# The library's warnings logged in this process while it is a loader worker, until they go back
# with the batch being made: printed by the worker itself, they came out bare, once per worker.
_worker_warnings: list[str] = []


class _WorkerWarnings(logging.Handler):
    """Keeps each warning's message in ``_worker_warnings``."""

    def emit(self, record: logging.LogRecord) -> None:
        _worker_warnings.append(record.getMessage())


# Batches each loader worker makes ahead of the step (DataLoader's prefetch_factor) when shared memory
# holds them: workers hand batches over in /dev/shm, and one that finds it full fails to send its batch
# while the training waits for it for ever.
PREFETCH_BATCHES = 4
# Shared memory counted per batch in flight, over its tensors' bytes: measured with 2 workers, 4
# batches ahead each, 4-sample batches of 4.0 MB, /dev/shm held 20 MB more during the run (1.3 MB
# per batch's 4 MB over); a batch being made or handed over while the others wait doubles it.
SHARED_MEMORY_MARGIN = 2.0


def batch_bytes(samples: int) -> int:
    """Bytes of a batch of ``samples`` training samples (:func:`step_batch`'s float32 RGB, coarse
    and ground-truth crops)."""
    return samples * CROP * CROP * (3 + 1 + 1) * 4


def loader_plan(workers: int, batch_size_bytes: int, free_bytes: int | None) -> tuple[int, int]:
    """(workers, batches each keeps ahead) that fit ``free_bytes`` of shared memory, each batch in
    flight counted ``SHARED_MEMORY_MARGIN`` times (:func:`resource_plan`)."""
    return resource_plan(workers, int(batch_size_bytes * SHARED_MEMORY_MARGIN), free_bytes)


# Open files a loader worker's batch in flight holds in the training process (torch hands each of its
# three tensors over as a file descriptor), counted twice as shared memory's bytes are; and those each
# worker holds besides (its queue's pipe ends). Measured with 2 workers keeping 4 batches ahead: they
# failed to hand batches over ("Too many open files") under ulimit -n 20 and 24, and ran under 32.
OPEN_FILES_PER_BATCH = 6
OPEN_FILES_PER_WORKER = 4
# Open files kept for the training process's own work (logs, checkpoints, the photos it reads).
OPEN_FILES_RESERVE = 16


def open_files_plan(workers: int, free_files: int | None) -> tuple[int, int]:
    """(workers, batches each keeps ahead) that fit ``free_files`` more open files (:func:`resource_plan`)."""
    return resource_plan(workers, OPEN_FILES_PER_BATCH, free_files, OPEN_FILES_PER_WORKER)


# Processes and threads a loader worker takes under a pids limit: itself, its queue's feeder thread and
# a few of torch's, and OpenBLAS's pool, one per CPU (measured on 2 CPUs: 5). Those kept for the
# training process's own new threads (the progress bar's, a CUDA pin-memory thread) and the resource
# tracker. A worker that cannot start its feeder thread dies with its first batch.
PIDS_PER_WORKER_BASE = 4
PIDS_RESERVE = 8


def pids_plan(workers: int, pids_free: int | None, cpus: int) -> tuple[int, int]:
    """(workers, batches each keeps ahead) whose processes and threads fit ``pids_free`` more (a
    container's pids limit), each worker taking PIDS_PER_WORKER_BASE + ``cpus``; (0, 1) when none fits."""
    if workers <= 0 or pids_free is None:
        return workers, PREFETCH_BATCHES
    fitting = min(workers, max(0, pids_free - PIDS_RESERVE) // (PIDS_PER_WORKER_BASE + cpus))
    return (fitting, PREFETCH_BATCHES) if fitting else (0, 1)


def resource_plan(workers: int, batch_cost: int, free: int | None, worker_cost: int = 0) -> tuple[int, int]:
    """(workers, batches each keeps ahead) that fit ``free`` units of a resource (shared memory's bytes,
    open files), each batch in flight costing ``batch_cost`` and each worker ``worker_cost`` besides:
    ``workers`` keeping PREFETCH_BATCHES ahead where they fit; else fewer batches ahead, down to one;
    else fewer workers; (0, 1) when not one worker with one batch fits (the batches are then made in the
    training process). ``free`` None: no measure, as asked."""
    if workers <= 0 or free is None:
        return workers, PREFETCH_BATCHES
    for count in range(workers, 0, -1):
        slots = (free - count * worker_cost) // batch_cost
        if slots >= count * PREFETCH_BATCHES:
            return count, PREFETCH_BATCHES
        if slots >= count:
            return count, slots // count
    return 0, 1


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is that step's batch (:func:`step_batch`) with its notes, so DataLoader workers
    can make batches ahead of training while each batch stays a pure function of (seed, step)."""

    def __init__(self, cache: PairCache, seed: int, batch: int, rank: int, world: int, mix: DataMix,
                 steps: int) -> None:
        self.cache, self.seed, self.batch, self.rank, self.world, self.mix = cache, seed, batch, rank, world, mix
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> MadeBatch:
        batch: Batch | None = None
        failure = ""
        try:
            batch = step_batch(self.cache, self.seed, step, self.batch, self.rank, self.world, self.mix)
        except UnreadablePairsError as exc:  # returned, not raised: a worker's error reaches the user wrapped
            failure = message_of(exc)  # its lines stay lines (errors.ContinuedText)
        warnings = tuple(_worker_warnings)
        _worker_warnings.clear()
        return MadeBatch(batch, BatchNotes(self.cache.take_notes(), warnings, failure))


# prctl's option that names the signal a process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> None:
    """Have the kernel kill this loader worker when the training process ``parent`` dies (Linux).

    Workers ignore SIGTERM and SIGINT (see below), and torch's watchdog compares the parent's pid
    with the one it saw when the worker started: a training process killed (SIGKILL, the OOM
    killer) while its workers were still starting left them running for good, about 575 MB each,
    with pid 1 as their parent. A parent already gone before this runs ends the worker here."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl to be had: torch's watchdog alone
        return
    if os.getppid() != parent:
        os._exit(0)


def single_threaded_worker(parent: int, _: int) -> None:
    """A DataLoader worker's setup (its ``worker_init_fn``, with the training process's pid bound):
    it ends with its parent, runs OpenCV on one thread and sends the library's warnings back."""
    _end_with_parent(parent)
    # Each worker makes one batch at a time; OpenCV's own thread pool would only oversubscribe the CPUs.
    import cv2

    cv2.setNumThreads(1)
    # The library's warnings go back with the batches (StepBatches), to be shown once, as the training
    # process shows its own.
    package = logging.getLogger("crm_cli")
    package.addHandler(_WorkerWarnings(logging.WARNING))
    package.propagate = False
    # Workers are born ignoring Ctrl-C, SIGTERM and SIGHUP only when the loader starts on the main
    # thread (loop.Trainer.batches); one started from another thread (an API user's) would die of a Ctrl-C,
    # a SIGTERM sent to the process group (`timeout`, a scheduler) or a closed terminal's SIGHUP. They
    # still end with the loader, which stops them through its queues, or with the training process
    # (the loader's watchdog).
    for signum in DEFERRED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


# The signals a run defers to the next step boundary (loop.Trainer.ctrl_c_at_step_boundaries), with the
# handler each has when nobody else took it: Python's own for SIGINT, the system's for SIGTERM and
# SIGHUP (which Windows lacks).
HANGUP_SIGNAL = getattr(signal, "SIGHUP", None)
DEFAULT_HANDLERS: dict[int, Any] = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
if HANGUP_SIGNAL is not None:
    DEFAULT_HANDLERS[HANGUP_SIGNAL] = signal.SIG_DFL
DEFERRED_SIGNALS = tuple(DEFAULT_HANDLERS)


def in_main_thread() -> bool:
    """Whether this is the main thread, the only one allowed to set signal handlers."""
    return threading.current_thread() is threading.main_thread()


@contextmanager
def workers_stopped_after(batches: Iterator[MadeBatch]) -> Iterator[Iterator[MadeBatch]]:
    """``batches``, whose data loader's worker processes are shut down when the block is left.

    They would stop when the loader's iterator is collected, but a traceback can keep it: the run's
    frame in a stop's KeyboardInterrupt that a caller holds, or the loader's own frames in a
    reference cycle after an error from inside it (a worker's unreadable pair). At the exit
    multiprocessing then waits for workers that ignore its SIGTERM (see :meth:`~.loop.Trainer.batches`),
    and the process hung.

    A worker that dies while being stopped (an abort in a library's C++ teardown, "terminate called
    without an active exception", seen under load) changes none of the steps taken, so that is one
    warning, not an error: it must neither fail a finished run nor hide the error that stopped one
    (too many damaged pairs)."""
    try:
        yield batches
    finally:
        shutdown = getattr(batches, "_shutdown_workers", None)  # torch's multi-process iterator
        if shutdown is not None:
            try:
                shutdown()
            except RuntimeError as exc:
                if not str(exc).startswith(_WORKER_DIED):
                    raise
                # Neutral: the block is left at the run's end, by --stop-at or --max-minutes, or by an error or
                # Ctrl-C, which the caller reports; in each case the steps taken are as they were.
                logger.warning("a data loader worker ended abnormally while being stopped (%s); the steps the run "
                               "took are not affected", exc)


def plan_words(workers: int, ahead: int) -> str:
    """A loader plan in words, for the warning that says why it is smaller than asked."""
    if not workers:
        return "batches made in the training process (no workers)"
    return f"{count_noun(workers, 'worker')} keeping {ahead} batch{'es' if ahead != 1 else ''} ahead"


def kill_children_since(before: set[Any]) -> None:
    """Kill (SIGKILL: loader workers ignore SIGTERM) and reap the child processes started since
    ``before`` (``multiprocessing.active_children()`` then)."""
    for child in set(multiprocessing.active_children()) - before:
        child.kill()
        child.join(timeout=10)


def disarm_half_built_iterator(exc: BaseException) -> None:
    """Mark the DataLoader iterator whose ``__init__`` raised ``exc`` (found in its traceback) as shut
    down: its workers are gone (:func:`kill_children_since`), and its ``__del__`` would otherwise
    print an ignored AttributeError traceback over attributes it never set."""
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    tb = exc.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, _MultiProcessingDataLoaderIter):
            candidate._shutdown = True
        tb = tb.tb_next


# How torch's DataLoader words a worker that died (killed by a signal, or exited unexpectedly).
_WORKER_DIED = "DataLoader worker"
