"""Process-wide settings that must be made before torch loads, and memory budgeting.

OpenMP: torch's CPU kernels on Linux run on GNU OpenMP (libgomp). Between parallel regions its
worker threads spin for ``GOMP_SPINCOUNT`` iterations before sleeping; the default (300,000) is
tuned for a machine that runs one such process. Two ``crm`` runs on the same cores then spend
much of their time spinning on cores the other one needs: on a 2.6K photo, two runs together
took 3.0x the time of one instead of 2x. A fully passive policy (``OMP_WAIT_POLICY=PASSIVE``)
fixed the sharing but made one run alone 29% slower, because every parallel region then starts
with a futex wake-up. A short, bounded spin keeps the fast hand-over between back-to-back
regions and lets waiting threads sleep soon after. libgomp reads these variables once, when it is
loaded, so :func:`configure_openmp` must run before the first ``import torch``; ``crm_cli``'s
package ``__init__`` calls it. A value the user set (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``)
is never overridden.

Memory: :func:`estimate_refine_bytes` predicts the peak resident memory of refining an image of
a given size (measured peaks plus a margin), so that a too-large job fails with a clear message
before it allocates anything, instead of being killed by the OS half-way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

# Spin iterations before an idle OpenMP thread sleeps (libgomp's default is 300,000; 0 is passive).
# Benchmarks/concurrency.py compares settings: pass --env GOMP_SPINCOUNT=300000 for the old default.
GOMP_SPINCOUNT_DEFAULT = 10_000
# Variables that mean "the user chose an OpenMP wait policy": then crm sets nothing.
OPENMP_USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

# Peak resident memory of `crm refine` (torch loaded, shipped model, one image), fitted to
# measured peaks: a fixed part plus bytes per image pixel, by preset family. The ROI presets
# (fast, balanced) keep a few uint8/float32 full-size maps; `quality` also holds a full-size
# latent at the last stage. See README "Limits".
BASE_BYTES = 450 << 20
BYTES_PER_PIXEL_ROI = 48
BYTES_PER_PIXEL_FULL = 110
# Encoder working set per pixel of one (tile + 2 margins)^2 window, fp32 MobileNetV2 activations.
BYTES_PER_TILE_PIXEL = 600
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


def estimate_refine_bytes(height: int, width: int, full_decode: bool = False, tile_size: int = 1024,
                          tile_margin: int = 64) -> int:
    """Predicted peak resident memory (bytes) of refining one height x width image.

    ``full_decode`` is the ``quality`` preset (every stage encoded and decoded in full).
    """
    pixels = int(height) * int(width)
    per_pixel = BYTES_PER_PIXEL_FULL if full_decode else BYTES_PER_PIXEL_ROI
    window = min(int(tile_size) + 2 * int(tile_margin), max(int(height), int(width)) + 2 * int(tile_margin))
    tile = BYTES_PER_TILE_PIXEL * window * window
    return int(MEMORY_MARGIN * (BASE_BYTES + per_pixel * pixels + tile))


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (Linux MemAvailable), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def format_bytes(count: float) -> str:
    """1.6e9 -> "1.6 GB" (decimal units, as `free -h` and most users think of RAM)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 1e3:.0f} kB"
