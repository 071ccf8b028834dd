"""How a process builds its Refiner (weights, device, tiling, precision, threads): a small picklable
spec that a Ray driver checks and hands to its actors, each of which builds the model once."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from .runtime import collector_paused, configure_numpy_pages, configure_torch


@dataclass(frozen=True)
class RefinerSpec:
    """How a process builds its Refiner: weights, device, tiling, precision and CPU threads."""

    weights: str | None = None
    device: str = "auto"
    tile_size: int = 1024
    precision: str = "fp32"
    threads: int | None = None
    backend: str = "auto"  # or "torch", "onnx": engine.choose_backend

    def check(self) -> None:
        """Raise ``checkpoint.WeightsError`` now for weights that could not be loaded (the file
        is read, not the tensors), so a Ray driver fails before starting any actor."""
        from .checkpoint import default_weights_path, lone_stage_weights, partner_weights, read_spec

        weights = self.weights or default_weights_path()
        read_spec(weights)
        # Missing partner or lone-stage weights, or a bad entry, fail every actor too.
        for named in (partner_weights(weights), lone_stage_weights(weights)):
            if named is not None:
                read_spec(named.path)

    def build(self) -> Any:
        """Make the process-wide settings and load the model on this process's device (an
        ``engine.Refiner``, loaded once per process)."""
        configure_numpy_pages()
        if "torch" in sys.modules:
            return self._build()
        with collector_paused():
            return self._build()

    def _build(self) -> Any:
        from .engine import Refiner

        refiner = Refiner.from_checkpoint(self.weights, device=self.device, tile_size=self.tile_size,
                                          precision=self.precision, backend=self.backend, threads=self.threads)
        if refiner.backend == "torch":  # the onnx backend never imports torch
            configure_torch(self.threads, refiner.runner.device)
        return refiner
