"""File-level refinement shared by ``refine``, ``batch`` and ``eval``: read, check, refine, render.

This layer knows about files and output kinds; the engine knows only arrays.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .imageio import MaskData, match_mask_to_image, read_image, read_mask
from .presets import Preset

Source = str | Path | bytes


@dataclass
class PairResult:
    """What refining one pair produced: the array to write, its palette and notes for the log."""

    output: np.ndarray
    palette: list[int] | None
    mode: str
    seconds: float
    probability: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def source_name(source: Source, fallback: str = "<stdin>") -> str:
    """A printable name for a path or an in-memory file."""
    return fallback if isinstance(source, bytes) else str(source)


def choose_mode(mask: MaskData, mode: str) -> str:
    """``auto`` becomes ``labels`` for label maps and ``binary`` otherwise."""
    if mode == "auto":
        return "labels" if mask.is_label_map() else "binary"
    if mode not in ("binary", "labels"):
        raise ValueError(f"unknown mode {mode!r}; choose auto, binary or labels")
    return mode


def read_pair(image_source: Source, mask_source: Source, image_name: str | None = None,
              mask_name: str | None = None) -> tuple[np.ndarray, MaskData, list[str]]:
    """Read an image and its mask, bringing a smaller same-aspect mask up to the image size.

    Returns:
        (RGB uint8 image, mask, notes for the log).
    """
    image_name = image_name or source_name(image_source)
    mask_name = mask_name or source_name(mask_source)
    image = read_image(image_source, name=image_name)
    mask = read_mask(mask_source, name=mask_name)
    mask, resized = match_mask_to_image(mask, image.shape[:2], image_name, mask_name)
    notes = [f"{mask_name}: upsampled to the image size {image.shape[1]}x{image.shape[0]}"] if resized else []
    return image, mask, notes


def refine_files(refiner, image_source: Source, mask_source: Source, preset: Preset, *,  # noqa: ANN001
                 mode: str = "auto", labels: Sequence[int] | None = None, output_kind: str = "soft",
                 threshold: float | None = None, image_name: str | None = None,
                 mask_name: str | None = None) -> PairResult:
    """Refine one image/mask pair from files (or encoded bytes) and render the requested output.

    Raises:
        ImageReadError: a file is missing or cannot be decoded (the message names it).
        SizeMismatchError: image and mask sizes differ and the mask cannot be upsampled.
    """
    from .labels import refine_labels
    from .outputs import render_output

    image, mask, notes = read_pair(image_source, mask_source, image_name, mask_name)
    chosen = choose_mode(mask, mode)
    start = time.perf_counter()
    if chosen == "labels":
        if output_kind not in ("soft", "binary"):
            notes.append(f"label maps are written as label images; --output-kind {output_kind} ignored")
        options = preset.engine_options()
        ratios = options.pop("ratios")
        refined = refine_labels(refiner, image, mask.values, ratios, labels=labels, engine_options=options)
        return PairResult(refined, mask.palette, chosen, time.perf_counter() - start, notes=notes)
    coarse = mask.probability()
    probability = refiner.refine(image, coarse, **preset.engine_options())
    seconds = time.perf_counter() - start
    output = render_output(output_kind, probability, image=image, coarse=coarse, threshold=threshold)
    return PairResult(output, None, chosen, seconds, probability=probability, notes=notes)
