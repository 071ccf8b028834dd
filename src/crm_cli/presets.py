"""Speed/quality presets and ratio validation (no torch import)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import DEFAULT_RATIOS


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """Ratios must be in (0, 1] and strictly increasing."""
    values = tuple(float(r) for r in ratios)
    if not values:
        raise ValueError("at least one ratio is needed")
    if any(not 0 < r <= 1 for r in values):
        raise ValueError(f"ratios must be in (0, 1]: {values}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"ratios must increase: {values}")
    return values


@dataclass(frozen=True)
class Preset:
    """A named trade-off between speed and quality."""

    ratios: tuple[float, ...]
    description: str


PRESETS: dict[str, Preset] = {
    "fast": Preset((0.125, 0.25, 0.5), "three stages, the last at half resolution, upsampled"),
    "balanced": Preset(DEFAULT_RATIOS, "the paper's four stages"),
    "quality": Preset(DEFAULT_RATIOS, "the paper's four stages, every stage decoded at full size"),
}
