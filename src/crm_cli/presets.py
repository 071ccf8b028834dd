"""Speed/quality presets: the one carrier of refine options (no torch import)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .config import DEFAULT_RATIOS


def split_items(text: str, what: str) -> list[str]:
    """The comma-separated items of ``text``, stripped; ValueError naming ``what`` for an empty item
    (``"0.5,,1"``, a trailing comma, an empty text): most likely a typo, so never silently dropped."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"{what} must be comma-separated, with no empty item; got {text!r}")
    return items


def check_ratios(ratios: Sequence[float] | str) -> tuple[float, ...]:
    """The stage ratios as floats, checked: at least one, each in (0, 1], strictly increasing.

    A string is read as the CLI's ``--ratios``: comma-separated, "0.5,1", spaces allowed, no empty
    item (``"0.5,,1"`` or a trailing comma is most likely a typo, so never silently dropped).
    ``Preset`` checks its ratios here, so ``--ratios`` (a usage error on the CLI) and the API's
    ``ratios=`` raise the same ValueError for each broken rule.
    """
    if isinstance(ratios, str):
        items: Sequence[float | str] = split_items(ratios, "ratios")
        example = '"0.5,1"'
    else:
        items, example = ratios, "(0.5, 1)"
    try:
        values = tuple(float(item) for item in items)
    except (TypeError, ValueError):
        raise ValueError(f"ratios must be numbers, e.g. {example}; got {ratios!r}") from None
    if not values:
        raise ValueError("at least one ratio is needed")
    if any(not 0 < value <= 1 for value in values):  # NaN too: every comparison with it is false
        raise ValueError(f"ratios must be in (0, 1]: {values}")
    if any(later <= earlier for earlier, later in zip(values, values[1:], strict=False)):
        raise ValueError(f"ratios must increase: {values}")
    return values


@dataclass(frozen=True)
class Preset:
    """A named trade-off between speed and quality, validated on construction.

    Attributes:
        ratios: increasing stage ratios; with ``adaptive`` the ladder a per-image schedule is cut from.
        roi: stages after the first decode (and encode) only around the uncertain boundary.
        full_decode: decode every stage at full size, as the reference code does.
        adaptive: choose the first stage per image from the detail the coarse mask holds (schedule.py).
        guard: the trust region: changes far from the coarse boundary need strong evidence (guard.py);
            with it, unsure changes are not taken, and under ``auto``'s own schedule the region pass runs
            (keeping holes whose outline lies on the photo's edges).
        keep_given: what no refinement may damage is kept as given, under every preset: the mask's lines
            one to three pixels wide, those four to six wide whose outline the photo's edges follow,
            and the whole mask of a photo of one flat colour or of nothing but noise. Setting ``guard``
            through :meth:`overridden` sets it too: ``guard=False`` is the model's own answer, untouched.
        snap: pull the final boundary onto the photo's edges (edge_snap.py; photos of 1000 px and up).
        description: one line for --help and the README.
    """

    ratios: tuple[float, ...]
    roi: bool
    full_decode: bool
    adaptive: bool = False
    guard: bool = False
    keep_given: bool = True
    snap: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", check_ratios(self.ratios))

    def with_ratios(self, ratios: Sequence[float] | str | None) -> Preset:
        """The same preset with explicit, fixed ratios (``None`` keeps the preset's)."""
        if ratios is None:
            return self
        return replace(self, ratios=ratios, adaptive=False)  # __post_init__ checks them

    def record(self) -> dict[str, Any]:
        """The ratios and switches as JSON values, for the records that let batch and coco runs resume.
        ``snap`` is named only when on: the records written before the edge snap (session 42) have no
        such key, and a run without the snap makes the same pixels they describe. ``keep_given`` is
        named only where it differs from ``guard`` (a fixed preset since session 61): before it, the
        guard alone carried it."""
        fields = {key: value for key, value in asdict(self).items() if key != "description"}
        if not fields["snap"]:
            del fields["snap"]
        if fields["keep_given"] == fields["guard"]:
            del fields["keep_given"]
        return json.loads(json.dumps(fields, default=str))

    def overridden(self, ratios: Sequence[float] | str | None = None, **switches: bool | None) -> Preset:
        """The preset with explicit ``ratios`` (see with_ratios) and single switches (``roi``,
        ``full_decode``, ``adaptive``, ``guard``, ``keep_given``, ``snap``) replaced; ``None`` keeps the
        preset's value. ``guard`` sets ``keep_given`` alike, unless that is given too. A switch that is
        neither a bool nor NumPy's bool is a TypeError: ``guard="False"`` would be true."""
        for name, on in switches.items():
            # NumPy's bool (``numpy.bool``, ``numpy.bool_`` before NumPy 2) is taken; NumPy is not imported here.
            if on is not None and not (isinstance(on, bool) or type(on).__name__ in ("bool", "bool_")):
                raise TypeError(f"{name} must be True, False or None, got {type(on).__name__} {on!r}")
        chosen = {name: bool(on) for name, on in switches.items() if on is not None}
        if "guard" in chosen:
            chosen.setdefault("keep_given", chosen["guard"])
        return replace(self.with_ratios(ratios), **chosen)


PRESETS: dict[str, Preset] = {
    "auto": Preset(DEFAULT_RATIOS, roi=True, full_decode=False, adaptive=True, guard=True,
                   description="per image: start at the coarsest stage that keeps the mask's detail; "
                               "boundary ROI; far changes need strong evidence"),
    "fast": Preset((0.125, 0.25, 0.5), roi=True, full_decode=False,
                   description="three stages; the half-resolution stage is decoded straight at full size; "
                               "boundary ROI"),
    "balanced": Preset(DEFAULT_RATIOS, roi=True, full_decode=False,
                       description="the paper's four stages; later stages only around the uncertain boundary "
                                   "(CRM*)"),
    "quality": Preset(DEFAULT_RATIOS, roi=False, full_decode=True,
                      description="the paper's four stages, every stage encoded and decoded in full "
                                  "(reference behaviour)"),
}
DEFAULT_PRESET = "auto"


def get_preset(preset: Preset | str | None = None) -> Preset:
    """A preset by name, in any case (``None`` = the default), or the given Preset itself."""
    if isinstance(preset, Preset):
        return preset
    name = DEFAULT_PRESET if preset is None else preset
    if isinstance(name, str):  # "Auto" and " fast " as the device and backend names are taken
        name = name.strip().lower()
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
