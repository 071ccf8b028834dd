"""Run refinement jobs on Ray Data: ``map_batches`` over an actor pool, one model per actor.

This module is an executor only: the caller gives JSON-able jobs and a ``work(refiner, job)``
function that returns a JSON-able result (``crm batch`` writes a PNG and reports the outcome,
``crm coco`` refines the instances of one image). Workers read inputs and write outputs
themselves, so on a cluster every node must see the same paths (shared storage). Ray is an
optional extra and is imported only when a command asks for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .checkpoint import WeightsError
from .refiner_spec import RefinerSpec

RAY_EXTRA = "pip install 'crm-cli[ray]'"
DEFAULT_CPU_THREADS = 4  # torch threads per CPU actor when --threads is not given
MAX_BLOCKS = 4096  # one Ray Data block per job up to this many (finer progress and resume)

Work = Callable[[Any, dict[str, Any]], dict[str, Any]]


class RayUnavailableError(RuntimeError):
    """Ray (the ``ray`` extra) is not installed."""


class RayRunError(RuntimeError):
    """Ray could not start, connect or finish the jobs (actor crash, lost node, bad address)."""

    exit_code = 1


class RayAddressError(RayRunError):
    """An address Ray cannot read ("host:port:x"): the ``--ray`` value the user gave, a usage error."""

    exit_code = 2


def require_ray() -> None:
    """Raise RayUnavailableError, naming the extra to install, when Ray Data cannot be imported."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailableError(f"--ray needs Ray, an optional extra: {RAY_EXTRA} ({exc})") from None


@dataclass(frozen=True)
class ActorPlan:
    """Size of the actor pool and what each actor reserves."""

    actors: int
    num_cpus: float
    num_gpus: float
    threads: int | None

    def describe(self) -> str:
        """One line for the log."""
        if self.num_gpus:
            return f"{self.actors} actor(s), one GPU each"
        return f"{self.actors} actor(s), {self.threads} CPU thread(s) each"


def plan_actors(resources: dict[str, float], device: str, threads: int | None, jobs: int) -> ActorPlan:
    """One actor per GPU when the cluster has GPUs (and the device allows CUDA); otherwise CPU
    actors of ``threads`` cores each (default min(4, cluster CPUs)). Never more actors than jobs."""
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if device == "cuda" and gpus < 1:
        raise RayRunError("--device cuda, but the Ray cluster has no GPUs")
    if device in ("auto", "cuda") and gpus >= 1:
        return ActorPlan(max(1, min(gpus, jobs)), 1, 1, threads)
    per_actor = max(1, min(threads or DEFAULT_CPU_THREADS, cpus))
    return ActorPlan(max(1, min(cpus // per_actor, jobs)), per_actor, 0, per_actor)


# A result crosses from an actor to the driver as JSON, which would make a library's many-line message
# (errors.ContinuedText) a plain str, and its lines escaped into one: it travels tagged instead.
_CONTINUED_KEY = "__crm_continued_text__"


def _tagged(value: object) -> object:
    """``value`` with each ContinuedText in it (nested) as ``{_CONTINUED_KEY: text}``."""
    from .errors import ContinuedText

    if isinstance(value, ContinuedText):
        return {_CONTINUED_KEY: str(value)}
    if isinstance(value, dict):
        return {key: _tagged(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_tagged(item) for item in value]
    return value


def _continued_text(record: dict) -> object:
    """json.loads' object_hook: a tagged ContinuedText back as one."""
    from .errors import ContinuedText

    if len(record) == 1 and _CONTINUED_KEY in record:
        return ContinuedText(record[_CONTINUED_KEY])
    return record


class _RefineActor:
    """A Ray Data callable class: builds the Refiner once, then runs ``work`` on each job."""

    def __init__(self, spec: RefinerSpec, work: Work) -> None:
        # Ray forwards a worker's stdout to the driver's stdout, which carries only data (--json).
        sys.stdout = sys.stderr
        self.refiner = spec.build()
        self.work = work

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = [json.dumps(_tagged(self.work(self.refiner, json.loads(job)))) for job in batch["job"]]
        return {"index": np.asarray(batch["index"]), "result": np.asarray(results, dtype=object)}


def connect(address: str, quiet: bool = False) -> bool:
    """Join the cluster at ``address`` (``local`` starts a private instance on this machine).

    Returns True when this call started the connection (the caller shuts it down), False when
    Ray was already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return False
    options = {"include_dashboard": False} if address == "local" else {}  # only when starting Ray here
    # ray.init puts its own SIGTERM handler (sys.exit) in place of the command's, which stops it
    # cleanly (cli.stops.stops_cleanly); the command's is put back.
    on_term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        ray.init(address=address, logging_level=logging.ERROR if quiet else logging.WARNING, log_to_driver=not quiet,
                 **options)
    except ValueError as exc:  # the address is the only value given here that is not crm's own
        raise RayAddressError(f"cannot connect to Ray at {address!r}: {exc}") from None
    except (ConnectionError, RuntimeError) as exc:
        raise RayRunError(f"cannot connect to Ray at {address!r}: {exc}") from None
    except OSError as exc:  # the machine's: no /dev/shm, a read-only temp folder, no process to be had
        raise RayRunError(f"cannot start Ray at {address!r}: {exc} (Ray needs a writable temp folder, /dev/shm "
                          "and room for its processes)") from None
    except SystemExit as exc:
        # A SIGTERM while Ray was starting met Ray's handler: it goes to the command's instead.
        if exc.code == signal.SIGTERM and on_term is not None and on_term is not signal.SIG_DFL:
            signal.signal(signal.SIGTERM, on_term)
            signal.raise_signal(signal.SIGTERM)
        raise
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    return True


@contextlib.contextmanager
def ray_run(address: str, jobs: Sequence[dict[str, Any]], work: Work, spec: RefinerSpec, *, quiet: bool = False,
            log: Callable[[str], None] | None = None) -> Iterator[Iterator[tuple[int, dict[str, Any]]]]:
    """Run ``work(refiner, job)`` for every job on a Ray actor pool: ``with ray_run(...) as results``
    gives ``(job index, result)`` pairs as results arrive (not in job order).

    Inside the ``with``, ``sys.stdout`` is stderr (see below): print data after it. Leaving it (at
    the end, by break or by an exception) shuts Ray down, when this call started it, and gives
    stdout back.

    Raises:
        RayUnavailableError: Ray is not installed (on entry).
        RayRunError: Ray failed: on entry (connection, bad weights), or while iterating (actor
            start-up, a crashed worker).
    """
    require_ray()
    if not jobs:
        yield iter(())
        return
    try:
        spec.check()
    except WeightsError as exc:  # one line in the driver, not a traceback from every actor
        raise RayRunError(str(exc)) from None
    # The driver prints the cluster's error messages ("(raylet) A worker died ...") on whatever
    # sys.stdout is at that moment, from a thread of its own; stdout carries only data. So while
    # Ray runs here, from ray.init to the shutdown, sys.stdout is stderr.
    with contextlib.redirect_stdout(sys.stderr), _connected(address, quiet):
        # Closed before the shutdown: a loop left early must not read from a Ray that is gone.
        with contextlib.closing(_results(_dataset(jobs, work, spec, log))) as results:
            yield results


@contextlib.contextmanager
def _connected(address: str, quiet: bool) -> Iterator[None]:
    """:func:`connect` for the duration of the block; shut down after it if this call started Ray."""
    import ray

    started = connect(address, quiet)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _dataset(jobs: Sequence[dict[str, Any]], work: Work, spec: RefinerSpec,
             log: Callable[[str], None] | None) -> Any:
    """The Ray dataset of the jobs' results, mapped over an actor pool sized to the cluster."""
    import ray
    import ray.data

    plan = plan_actors(ray.cluster_resources(), spec.device, spec.threads, len(jobs))
    if log is not None:
        log(f"ray: {plan.describe()}")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command draws its own progress on stderr
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-dataset INFO lines and a progress-bar notice
    rows = [{"index": index, "job": json.dumps(job)} for index, job in enumerate(jobs)]
    return ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS)).map_batches(
        _RefineActor, fn_constructor_args=(replace(spec, threads=plan.threads), work), batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=plan.actors), num_cpus=plan.num_cpus, num_gpus=plan.num_gpus)


def _results(dataset: Any) -> Generator[tuple[int, dict[str, Any]], None, None]:
    """``(job index, result)`` for each row of ``dataset``; Ray's failures raised as RayRunError."""
    import ray

    try:
        for row in dataset.iter_rows():
            yield int(row["index"]), json.loads(row["result"], object_hook=_continued_text)
    except (ray.exceptions.RayError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()
        raise RayRunError(f"Ray job failed: {first[-1] if first else type(exc).__name__}") from None
