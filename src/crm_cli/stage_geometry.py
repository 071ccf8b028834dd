"""What every stage runner shares, torch-free: padding constants, tiles, timings and precisions.

``stages.StageRunner`` (torch) and ``onnx_runner.OnnxStageRunner`` (ONNX Runtime + NumPy) both
build on these, so the two backends pad, tile and report alike.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import PRECISION_NAMES

STAGE_PAD = 32  # reflect padding around every stage input, as the reference does
PAD_MULTIPLE = 16  # padded stage inputs are multiples of this so every encoder tap aligns


@dataclass
class StageTiming:
    """Wall time of one stage, split into encoder and decoder."""

    ratio: float
    encode_s: float
    decode_s: float


# The smallest value of each tile option: a tile is at least one padding multiple (smaller sides
# are rounded up to it anyway), a margin may be 0.
TILE_MINIMUMS: dict[str, int] = {"tile_size": PAD_MULTIPLE, "tile_margin": 0, "decode_budget_mb": 1,
                                 "roi_tile_size": PAD_MULTIPLE, "roi_tile_margin": 0, "roi_window_size": 1}


def whole_number(name: str, value: object, minimum: int) -> int:
    """``value`` as an int when it is a whole number (not a bool) >= ``minimum``; a ValueError
    naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def check_tile_options(options: dict[str, object]) -> None:
    """ValueError for a tile option below its minimum (:data:`TILE_MINIMUMS`) or not a whole
    number, TypeError for an unknown one; run before a model loads so a bad value fails at once."""
    for name, value in options.items():
        if name not in TILE_MINIMUMS:
            raise TypeError(f"unknown tile option {name!r}; the options are {', '.join(TILE_MINIMUMS)}")
        whole_number(name, value, TILE_MINIMUMS[name])


class TiledRunner:
    """The tile and decode options both stage runners hold (see ``stages.StageRunner``'s docstring)."""

    def __init__(self, *, tile_size: int = 1024, tile_margin: int = 64, decode_budget_mb: int = 8,
                 roi_tile_size: int = 192, roi_tile_margin: int = 32, roi_window_size: int = 1024) -> None:
        check_tile_options({"tile_size": tile_size, "tile_margin": tile_margin, "decode_budget_mb": decode_budget_mb,
                            "roi_tile_size": roi_tile_size, "roi_tile_margin": roi_tile_margin,
                            "roi_window_size": roi_window_size})
        self.tile_size = tile_multiple(tile_size)
        self.tile_margin = tile_multiple(tile_margin)
        # Small row bands stay in cache: 8 MB decodes about 5x faster than 256 MB on a 2-core CPU.
        self.decode_budget = decode_budget_mb << 20
        self.roi_tile_size = tile_multiple(roi_tile_size)
        self.roi_tile_margin = tile_multiple(roi_tile_margin)
        self.roi_window_size = roi_window_size
        # Tests set this to NaN to prove that ROI decoding never reads a latent cell it skipped.
        self._unencoded_fill: float | None = None

    def tiling(self, roi: bool) -> tuple[int, int, int]:
        """(tile side, margin, tiles merged into one window at most) of a full stage's encoding, or
        with ``roi`` of an ROI stage's (see :func:`tile_windows`)."""
        if roi:
            return self.roi_tile_size, self.roi_tile_margin, max(1, self.roi_window_size // self.roi_tile_size)
        return self.tile_size, self.tile_margin, 1


def encode_windows(latent: Any, stage_input: Any, windows: Sequence[tuple[int, int, int, int]], margin: int,
                   encode_tile: Callable[[Any], Any]) -> None:
    """Encode each (y0, y1, x0, x1) window of a padded stage input with ``margin`` px of context on
    every side (``encode_tile(stage_input.crop(...))``) and paste the window's own cells into
    ``latent`` (NumPy array or tensor, ``(..., H / 2, W / 2, hidden)``): the context's cells are
    dropped, so a window's cells do not depend on where the tiles were cut."""
    height, width = stage_input.shape
    for y0, y1, x0, x1 in windows:
        cy0, cy1 = max(0, y0 - margin), min(height, y1 + margin)
        cx0, cx1 = max(0, x0 - margin), min(width, x1 + margin)
        part = encode_tile(stage_input.crop(cy0, cy1, cx0, cx1))
        latent[..., y0 // 2:y1 // 2, x0 // 2:x1 // 2, :] = part[
            ..., (y0 - cy0) // 2:(y1 - cy0) // 2, (x0 - cx0) // 2:(x1 - cx0) // 2, :]


def check_precision(precision: str) -> str:
    """``precision`` when it is one of PRECISION_NAMES; ValueError otherwise."""
    if precision not in PRECISION_NAMES:
        raise ValueError(f"precision must be one of {sorted(PRECISION_NAMES)}, got {precision!r}")
    return precision


def tile_multiple(pixels: int) -> int:
    """A tile side rounded up to the padding multiple, so every encoder tap aligns."""
    return int(math.ceil(pixels / PAD_MULTIPLE) * PAD_MULTIPLE)


def occupied_tiles(needed: np.ndarray, tile: int) -> list[list[bool]]:
    """Per (row, column) tile of a (height, width) bool map: whether it holds a needed pixel."""
    height, width = needed.shape
    rows, cols = -(-height // tile), -(-width // tile)
    grid = np.zeros((rows * tile, cols * tile), dtype=bool)
    grid[:height, :width] = needed
    return grid.reshape(rows, tile, cols, tile).any(axis=(1, 3)).tolist()


def tile_windows(height: int, width: int, tile: int, occupied: list[list[bool]] | None = None,
                 run_tiles: int = 1) -> list[tuple[int, int, int, int]]:
    """The (y0, y1, x0, x1) windows that encode a (height, width) input in ``tile`` px tiles.

    With ``occupied`` (per tile, :func:`occupied_tiles`) only occupied tiles are kept, and
    neighbours in a row are merged into one window of up to ``run_tiles`` tiles: each window is
    encoded with its own margin, so a merged one pays that margin once instead of once per tile.
    """
    if occupied is None:
        occupied = [[True] * (-(-width // tile)) for _ in range(-(-height // tile))]
    windows = []
    for row, y0 in enumerate(range(0, height, tile)):
        y1 = min(height, y0 + tile)
        run_start: int | None = None  # x0 of the window being grown
        for col, x0 in enumerate(range(0, width, tile)):
            if not occupied[row][col]:
                if run_start is not None:
                    windows.append((y0, y1, run_start, x0))
                run_start = None
                continue
            if run_start is not None and x0 - run_start >= run_tiles * tile:
                windows.append((y0, y1, run_start, x0))
                run_start = None
            if run_start is None:
                run_start = x0
        if run_start is not None:
            windows.append((y0, y1, run_start, width))
    return windows
