"""crm: refine segmentation masks of ultra-high-resolution images with CRM.

The public API is :class:`Refiner` (imported lazily so ``import crm_cli`` stays light)::

    from crm_cli import Refiner
    refiner = Refiner()                 # shipped weights, best device
    probability = refiner.refine(rgb, coarse_mask)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .runtime import configure_onnxruntime, configure_openmp

__version__ = "0.1.0"
__all__ = ["Refiner", "__version__"]

# Before anything imports torch: a short bounded OpenMP spin, so concurrent crm processes share
# cores fairly (see runtime.py). Every entry point (the CLI, `import crm_cli.engine`, the lazy
# `crm_cli.Refiner`) imports this package first. A user's own OMP_WAIT_POLICY/GOMP_SPINCOUNT wins.
configure_openmp()
# Before anything imports onnxruntime: no telemetry files under ~/.cache or $TMPDIR, and no warning
# on stderr when the home folder is read-only (see runtime.py). A user's own ORT_DISABLE_TELEMETRY wins.
configure_onnxruntime()

if TYPE_CHECKING:
    from .engine import Refiner


def __getattr__(name: str) -> Any:
    if name == "Refiner":
        from .engine import Refiner

        return Refiner
    raise AttributeError(name)
