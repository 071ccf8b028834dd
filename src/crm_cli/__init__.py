"""crm: refine segmentation masks of ultra-high-resolution images with CRM.

The public API is :class:`Refiner` (imported lazily so ``import crm_cli`` stays light)::

    from crm_cli import Refiner
    refiner = Refiner()                 # shipped weights, best device
    probability = refiner.refine(rgb, coarse_mask)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Refiner", "__version__"]

if TYPE_CHECKING:
    from .engine import Refiner


def __getattr__(name: str) -> Any:
    if name == "Refiner":
        from .engine import Refiner

        return Refiner
    raise AttributeError(name)
