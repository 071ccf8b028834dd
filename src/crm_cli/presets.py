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
    """A named trade-off between speed and quality: the stage ratios and two engine switches.

    Attributes:
        ratios: increasing stage ratios.
        roi: stages after the first decode (and encode) only around the uncertain boundary.
        full_decode: decode every stage at full size, as the reference code does.
        description: one line for --help and the README.
    """

    ratios: tuple[float, ...]
    roi: bool
    full_decode: bool
    description: str

    def with_ratios(self, ratios: Sequence[float] | None) -> Preset:
        """The same preset with explicit ratios (``None`` keeps the preset's)."""
        if ratios is None:
            return self
        return Preset(check_ratios(ratios), self.roi, self.full_decode, self.description)

    def engine_options(self) -> dict[str, object]:
        """Keyword arguments for ``Refiner.refine`` / ``refine_detailed``."""
        return {"ratios": self.ratios, "roi": self.roi, "full_decode": self.full_decode}


PRESETS: dict[str, Preset] = {
    "fast": Preset((0.125, 0.25, 0.5), True, False,
                   "three stages; the half-resolution stage is decoded straight at full size; boundary ROI"),
    "balanced": Preset(DEFAULT_RATIOS, True, False,
                       "the paper's four stages; later stages only around the uncertain boundary (CRM*)"),
    "quality": Preset(DEFAULT_RATIOS, False, True,
                      "the paper's four stages, every stage encoded and decoded in full (reference behaviour)"),
}
DEFAULT_PRESET = "balanced"
