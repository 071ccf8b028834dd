"""Process-wide settings (OpenMP before torch loads, torch's own after), and memory budgeting.

OpenMP: torch's CPU kernels on Linux run on GNU OpenMP (libgomp). Between parallel regions its
worker threads spin for ``GOMP_SPINCOUNT`` iterations before sleeping; the default (300,000)
suits a machine that runs one such process. Two ``crm`` runs on the same cores then spend much of
their time spinning on cores the other one needs. Measured with ``benchmarks/concurrency.py`` on a
2-core machine (2592x1944 photo, median of 3; a run alone took 2.7-3.0 s with every setting that
spins), two runs at once took this many times one run alone: 300,000 (libgomp) 5.1x; 100,000
11.8x; 30,000 5.5x; 10,000 2.5x; 3,000 1.7x; 1,000 1.4x; passive (``OMP_WAIT_POLICY=PASSIVE``,
no spin) 1.1x, but passive made a run alone 9-14% slower, because every parallel region then
starts with a futex wake-up. 1,000 keeps a run alone as fast as libgomp's default and shares
fairly. libgomp reads these variables once, when it is loaded, so :func:`configure_openmp` must
run before the first ``import torch``; ``crm_cli``'s package ``__init__`` calls it. A value the
user set (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``) is never overridden.

ONNX Runtime: its Python package collects usage telemetry. Measured with onnxruntime 1.32, ``import
onnxruntime`` alone creates ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` (a device id and an
event database) and a ``.ses`` file in the temp folder, and where the home folder cannot be written
it prints an ANSI-coloured warning ("Failed to persist telemetry device ID") on stderr, among crm's
own lines. ``ORT_DISABLE_TELEMETRY=1`` in the environment before that import stops all three
(:func:`configure_onnxruntime`, called with :func:`configure_openmp`); a value the user set wins.

Torch: :func:`configure_torch` makes the settings that belong to a process, not to one Refiner
(CPU threads, cuDNN autotuning); the CLI calls it once before it builds the Refiner.

Building: a ``refiner_spec.RefinerSpec`` is the one recipe for a Refiner, used by the CLI in its own
process and by each Ray actor (``raybatch``), so both make the same settings and load the same model.
The first build in a process imports torch with the cyclic garbage collector paused and then
freezes what was loaded (:func:`collector_paused`): torch creates over 250,000 tracked objects,
and the collector's passes over them took 0.2-0.3 s of the 1.3-1.5 s import on a 2-core CPU, and
another 0.4 s when the interpreter exits. Modules and the model live as long as the process, so
the collector has nothing to find among them.

Pages: NumPy asks the kernel for transparent huge pages (``madvise``) for every array of 4 MB or
more. Where the kernel then has to compact memory to find 2 MB pages, the first write to a large
array stalls: a fresh 278 MB latent (the 4K stage's) took 0.40-0.65 s to fill with huge pages and
0.09-0.11 s without, and huge pages round the resident set up. :func:`configure_numpy_pages` turns
the advice off for the processes crm owns (the CLI's, Ray actors). Whole ``crm refine`` processes,
median of 2-3 runs alternated with the advice on (``NUMPY_MADVISE_HUGEPAGE=1``): generated
6000x4000 3.68-3.79 s and 1.23 GB peak against 4.53-4.54 s and 1.73 GB; the 3840x2160 IS-Net car
2.00-2.07 s (at most 2.10) and 0.81 GB against 1.96-2.20 s (at most 2.68) and 0.96 GB. A
``NUMPY_MADVISE_HUGEPAGE`` the user set is never overridden.

Memory: :func:`estimate_refine_bytes` predicts the peak resident memory of refining an image of
a given size (measured peaks plus a margin), so that a too-large job fails with a clear message
before it allocates anything, instead of being killed by the OS half-way (a 20000x15000
``crm time --size`` used to pass 12 GB of RSS before failing).
"""

from __future__ import annotations

import ctypes
import functools
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from .errors import count_noun

logger = logging.getLogger(__name__)

# Spin iterations before an idle OpenMP thread sleeps (libgomp's default is 300,000; 0 is passive).
# Benchmarks/concurrency.py compares settings: pass --env GOMP_SPINCOUNT=300000 for the old default.
GOMP_SPINCOUNT_DEFAULT = 1_000
# Variables that mean "the user chose an OpenMP wait policy": then crm sets nothing.
OPENMP_USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# ONNX Runtime's switch for its usage telemetry (writes under ~/.cache and the temp folder).
ORT_TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"

# Peak resident memory of `crm refine` (shipped model, one image): a fixed part, bytes per image
# pixel, and for `quality` the full-stage encoder's working set, which grows with the square of the
# tile (with its margins) and so shrinks with --tile-size. Fitted first with torch loaded, measured with
# /usr/bin/time at 2048x1536 .. 8000x6000: balanced 0.86 / 1.26 / 1.75 / 2.50 GB at 3.1 / 12.6 / 24 / 48
# MP, quality 1.48 / 2.32 / 2.95 GB at 3.1 / 12.6 / 24 MP. On the onnx backend (a CPU's default, no
# torch) whole processes (benchmarks/whole_process.py, session 39) peaked at auto 0.71 / 0.80 / 1.23 /
# 2.10 GB at 8.3 / 12 / 24 / 48 MP and quality 1.86 / 2.06 GB at 8.3 / 12 MP: the same bytes per pixel
# on a fixed part 0.35 GB smaller (torch's import). The estimate takes that smaller part, so a photo is
# refused only when even the leaner backend cannot fit it: a refusal cannot be overridden, and a 4K
# photo refused in a 1 GB container (estimate 1.2 GB) peaked at 0.66 GB there.
BASE_BYTES = 400_000_000
BYTES_PER_PIXEL_ROI = 37
BYTES_PER_PIXEL_FULL = 70
BYTES_PER_TILE_PIXEL = 380
MEMORY_MARGIN = 1.15


def configure_openmp(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Bound OpenMP spin-waiting for this process (and its children) unless the user chose a policy.

    Returns the value set for ``GOMP_SPINCOUNT``, or None when nothing was changed (the user set
    a policy, or torch is already loaded and would ignore it).
    """
    env = os.environ if environ is None else environ
    if any(name in env for name in OPENMP_USER_VARIABLES):
        return None
    if environ is None and "torch" in sys.modules:
        return None
    value = str(GOMP_SPINCOUNT_DEFAULT)
    env["GOMP_SPINCOUNT"] = value
    return value


def configure_onnxruntime(environ: MutableMapping[str, str] | None = None) -> bool:
    """Turn ONNX Runtime's telemetry off for this process (and its children, Ray actors included)
    unless the user set ``ORT_DISABLE_TELEMETRY``; True when it was set here. The import itself
    writes the files, so this must run before it (see the module's docstring)."""
    env = os.environ if environ is None else environ
    if ORT_TELEMETRY_VARIABLE in env:
        return False
    env[ORT_TELEMETRY_VARIABLE] = "1"
    return True


@functools.cache
def _glibc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` through ctypes, or None where the C library has none (not Linux,
    musl, a library that cannot be opened)."""
    if not sys.platform.startswith("linux"):
        return None
    for name in (None, "libc.so.6"):  # None: the C library the process already runs with
        try:
            trim = ctypes.CDLL(name).malloc_trim
        except (OSError, AttributeError):
            continue
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
        return trim
    return None


def release_free_heap() -> bool:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim(0)``); True when it
    ran. Anywhere without glibc it does nothing, and it never raises: it is housekeeping."""
    try:
        trim = _glibc_malloc_trim()
        if trim is None:
            return False
        trim(0)
    except Exception:  # noqa: BLE001 - housekeeping: nothing of the caller's depends on it
        return False
    return True


def configure_numpy_pages(environ: Mapping[str, str] | None = None) -> bool:
    """Stop NumPy from advising huge pages for large arrays in this process (see the module's
    docstring), unless the user chose with ``NUMPY_MADVISE_HUGEPAGE``; True when it was turned off."""
    env = os.environ if environ is None else environ
    if "NUMPY_MADVISE_HUGEPAGE" in env:
        return False
    set_advice = numpy_page_advice_switch()
    if set_advice is None:
        return False
    set_advice(False)
    return True


# Refinements running in several threads at once share NumPy's process-wide advice: the first to
# start turns it off and the last to finish puts back what it found (numpy_pages_unadvised).
_pages_lock = threading.Lock()
_pages_users = 0
_pages_before: bool | None = None


@contextmanager
def numpy_pages_unadvised() -> Iterator[None]:
    """NumPy's huge-page advice off inside the block and put back as it was once no thread is in
    such a block, unless the user chose with ``NUMPY_MADVISE_HUGEPAGE``. ``engine.Refiner`` refines
    inside it, so a Python-API user's process gets the CLI's speed (:func:`configure_numpy_pages`)
    without crm changing the process's setting for good: on this 2-core VM the first refinements of
    a generated 3840x2160 scene in a fresh process took 3.28, 2.10 and 1.95 s with the advice and
    1.41, 1.34 and 1.32 s without (later ones 1.28-1.53 s against 1.30-1.36 s)."""
    global _pages_users, _pages_before
    switch = None if "NUMPY_MADVISE_HUGEPAGE" in os.environ else numpy_page_advice_switch()
    if switch is None:
        yield
        return
    with _pages_lock:
        if _pages_users == 0:
            _pages_before = switch(False)
        _pages_users += 1
    try:
        yield
    finally:
        with _pages_lock:
            _pages_users -= 1
            if _pages_users == 0 and _pages_before is not None:
                switch(_pages_before)
                _pages_before = None


def numpy_page_advice_switch() -> Callable[[bool], bool] | None:
    """NumPy's switch for the huge-page advice (it returns the setting it replaces), or None.

    A private function (the documented control is the variable, read once at import): under
    ``numpy._core`` from NumPy 2, ``numpy.core`` before, where 1.26's ``_core`` holds only stubs."""
    for package in ("_core", "core"):
        try:
            multiarray = importlib.import_module(f"numpy.{package}.multiarray")
        except ImportError:
            continue
        switch = getattr(multiarray, "_set_madvise_hugepage", None)
        if switch is not None:
            return switch
    return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one, bounded by a container's
    CPU quota rounded up (``containers.quota_cpus``; a quota of 1.5 CPUs counts as 2)."""
    from .containers import quota_cpus

    cpus, quota = scheduler_cpus(), quota_cpus()
    return cpus if quota is None else min(cpus, quota)


def scheduler_cpus() -> int:
    """CPUs the scheduler may run this process on (its affinity mask where the OS has one), whatever
    share of their time a container's quota grants."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def quota_limited_threads() -> int | None:
    """The threads to use when none are asked for: None (torch's and ONNX Runtime's own default, one
    per physical core) unless a container's CPU quota allows fewer CPUs than this process may run on,
    then that many (see ``containers``: threads beyond the quota only wait for the next period).
    None too when ``OMP_NUM_THREADS`` is set: torch's default follows it, as the user chose."""
    from .containers import quota_cpus

    if os.environ.get("OMP_NUM_THREADS"):
        return None
    quota = quota_cpus()
    return quota if quota is not None and quota < scheduler_cpus() else None


def usable_threads(threads: int | None) -> int | None:
    """``threads`` bounded by the CPUs this process may run on (:func:`available_cpus`), with a
    warning when it was more: ONNX Runtime starts every intra-op thread when its session loads, so
    ``--threads 100000`` started 100,000 threads (16 GB of memory, minutes before the first tile)
    where more threads than CPUs cannot run any faster. None or 0 (the default) is
    :func:`quota_limited_threads`: None outside a container's CPU quota."""
    if not threads:
        return quota_limited_threads()
    cpus = available_cpus()
    if threads > cpus:
        bound = " (its container's CPU quota)" if cpus < scheduler_cpus() else ""
        logger.warning("%d threads asked for, more than the %s this process may use%s; using %d", threads,
                       count_noun(cpus, "CPU"), bound, cpus)
        return cpus
    return threads


# The open files crm asks for at most (raise_open_files_limit): plenty for DataLoader workers, which
# hold a descriptor per batch in flight, without asking a system for millions.
OPEN_FILES_WANTED = 65_536


def open_files_limit() -> int | None:
    """This process's soft limit of open files; None where there is none (unlimited, or no such limit)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # Windows
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def open_files_left() -> int | None:
    """How many more files this process may open (its soft limit less the descriptors open now);
    None where that cannot be told (no limit, or no /proc/self/fd to count them)."""
    limit = open_files_limit()
    if limit is None:
        return None
    try:
        open_now = len(os.listdir("/proc/self/fd")) - 1  # the listing's own descriptor
    except OSError:
        return None
    return max(0, limit - open_now)


def raise_open_files_limit() -> int | None:
    """Raise this process's soft limit of open files to its hard limit (at most OPEN_FILES_WANTED),
    as a process may without privileges; returns the soft limit now, None where there is none to
    set. Under ``ulimit -n 16`` training's loader workers failed with "Too many open files" and the
    process then waited on them for ever at exit."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
        return soft
    except (OSError, ValueError):
        return None


def configure_torch(threads: int | None = None, device: Any = None) -> None:
    """Process-wide torch settings: ``threads`` CPU threads (None or 0 keeps torch's default, the
    physical cores, unless a container's CPU quota allows fewer: :func:`usable_threads`) and, on a
    CUDA ``device``, cuDNN autotuning (fixed tile shapes make it pay off)."""
    import torch

    threads = usable_threads(threads)
    if threads:
        torch.set_num_threads(threads)
    if device is not None and torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic garbage collector off, then freeze every object that exists
    (``gc.freeze``: later passes, the exit's included, skip them) and restore the collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def estimate_refine_bytes(height: int, width: int, full_decode: bool = False, tile_size: int = 1024,
                          tile_margin: int = 64) -> int:
    """Predicted peak resident memory (bytes) of refining one height x width image, with a margin.

    ``full_decode`` is the ``quality`` preset (every stage encoded and decoded in full).
    """
    pixels = int(height) * int(width)
    if not full_decode:
        return int(MEMORY_MARGIN * (BASE_BYTES + BYTES_PER_PIXEL_ROI * pixels))
    window = min(int(tile_size), max(int(height), int(width))) + 2 * int(tile_margin)
    return int(MEMORY_MARGIN * (BASE_BYTES + BYTES_PER_PIXEL_FULL * pixels + BYTES_PER_TILE_PIXEL * window**2))


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux MemAvailable, capped by what its cgroups'
    memory limits leave, v1 or v2: ``containers.memory_headroom``), or None when unknown (other systems)."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        available = None
    from .containers import memory_headroom

    headroom = memory_headroom()
    if headroom is not None:
        available = headroom if available is None else min(available, headroom)
    return available


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes); None where the
    ``resource`` module is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb(device: Any = None) -> float:
    """Peak GPU memory torch allocated on a CUDA ``device`` (since the last reset), in MiB."""
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20


def format_bytes(count: float) -> str:
    """1.6e9 -> "1.6 GB" (decimal units, as `free -h` and most users think of RAM)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 1e3:.0f} kB"
