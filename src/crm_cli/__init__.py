"""crm: refine segmentation masks of ultra-high-resolution images with CRM.

The public API is :class:`Refiner` (imported lazily so ``import crm_cli`` stays light)::

    from crm_cli import Refiner
    refiner = Refiner()                 # shipped weights, best device
    probability = refiner.refine(rgb, coarse_mask)

The errors a caller can catch are importable from here too, each as lazily as ``Refiner``:
``ImageReadError`` (an OSError: a file missing or not decodable), ``SizeMismatchError`` (a
ValueError: a mask of another size than its image), ``WeightsError`` and ``DeviceError`` (both
RuntimeErrors: weights missing, corrupt or not matching their sha256; a device not present) and
``ImageWriteError`` (an OSError: an output not written).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .runtime import configure_onnxruntime, configure_openmp

__version__ = "0.1.0"
# The error classes live beside the code that raises them, in modules that import NumPy or Pillow,
# so they are looked up on first use (__getattr__), as Refiner is. `from crm_cli import *` imports
# them all: it already imports the engine (NumPy, OpenCV) for Refiner, and they add Pillow (~40 ms).
_LAZY_NAMES = {
    "Refiner": "engine",
    "ImageReadError": "imageio",
    "SizeMismatchError": "masks",
    "WeightsError": "checkpoint",
    "DeviceError": "devices",
    "ImageWriteError": "writing",
}
# Spelled out (not built from _LAZY_NAMES) so that linters and type checkers read it.
__all__ = ["DeviceError", "ImageReadError", "ImageWriteError", "Refiner", "SizeMismatchError", "WeightsError",
           "__version__"]

# Before anything imports torch: a short bounded OpenMP spin, so concurrent crm processes share
# cores fairly (see runtime.py). Every entry point (the CLI, `import crm_cli.engine`, the lazy
# `crm_cli.Refiner`) imports this package first. A user's own OMP_WAIT_POLICY/GOMP_SPINCOUNT wins.
configure_openmp()
# Before anything imports onnxruntime: no telemetry files under ~/.cache or $TMPDIR, and no warning
# on stderr when the home folder is read-only (see runtime.py). A user's own ORT_DISABLE_TELEMETRY wins.
configure_onnxruntime()

if TYPE_CHECKING:
    from .checkpoint import WeightsError
    from .devices import DeviceError
    from .engine import Refiner
    from .imageio import ImageReadError
    from .masks import SizeMismatchError
    from .writing import ImageWriteError


def __getattr__(name: str) -> Any:
    """``Refiner`` and the error classes, imported from their modules on first use."""
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Looked up on every use, not cached here: a test that patches engine.Refiner is seen through crm_cli.
    return getattr(importlib.import_module(f".{module_name}", __name__), name)


def __dir__() -> list[str]:
    """The module's names, the lazy ones included (for completion in a REPL)."""
    return sorted({*globals(), *_LAZY_NAMES})
