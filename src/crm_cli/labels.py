"""Multi-object masks: refine every label of a label map (palette indices or 16-bit ids) separately.

Each label becomes a binary coarse mask, is refined on its own, and the refined probabilities are
recombined: a pixel takes the label with the highest probability, or background (0) where every
probability is below 0.5. No file I/O happens here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .boxes import nonzero_box, worth_a_box
from .masks import check_mask_fits
from .photo_memo import held_photo, same_photo

BACKGROUND = 0
FOREGROUND_MIN = 0.5  # a pixel keeps a label only when its best probability reaches this


class SupportsRefine(Protocol):
    """Anything with a ``refine(image, mask) -> probability`` method (the engine, an adapter, a test stand-in)."""

    def refine(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray: ...


def _check_label_map(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"a label map must be 2-D (H, W), got shape {values.shape}")
    if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"a label map must hold integer ids (uint8 or uint16), got {values.dtype}")
    return values


def label_ids(values: np.ndarray, counts: np.ndarray | None = None) -> list[int]:
    """The non-background ids present in a label map, ascending. ``counts``: the map's
    ``np.bincount``, when the caller has it already (``MaskData`` counts a map once)."""
    values = _check_label_map(values)
    if counts is None and values.dtype == np.uint8:
        # bincount is much faster than unique on large 8-bit maps.
        counts = np.bincount(values.ravel(), minlength=256)
    if counts is not None:
        return [int(i) for i in np.flatnonzero(counts) if i != BACKGROUND]
    return [int(i) for i in np.unique(values) if i != BACKGROUND]


def select_labels(present: Sequence[int], labels: Sequence[int]) -> tuple[list[int], list[int]]:
    """Split requested ``labels`` by the ids ``present`` in a map (see :func:`label_ids`): (the ids to
    refine, the requested ids the map does not hold), both ascending. The background (0) is neither."""
    wanted = {int(label) for label in labels} - {BACKGROUND}
    held = set(present)
    return [label for label in present if label in wanted], sorted(wanted - held)


def refine_labels(refiner: SupportsRefine, image: np.ndarray, label_values: np.ndarray,
                  labels: Sequence[int] | None = None, present: Sequence[int] | None = None) -> np.ndarray:
    """Refine each object of a label map and recombine them into a label map of the same dtype.

    Args:
        refiner: a ``Refiner`` (default preset) or any object whose ``refine(image, mask)`` returns a
            probability map; wrap the engine to use another preset.
        image: (H, W, 3) uint8 RGB.
        label_values: (H, W) integer ids; 0 is background.
        labels: only refine these ids (ids absent from the map and 0 are ignored). Pixels of any
            other label are left exactly as they were: refined labels may only claim pixels that
            were background or one of the refined labels.
        present: the map's non-background ids, when the caller has found them already
            (``MaskData.label_ids``); found here otherwise.

    Returns:
        The recombined label map, same shape and dtype as ``label_values``.
    """
    values = _check_label_map(label_values)
    image = held_photo(image)  # every id's refinement gets this very array: its photo-only work is kept
    check_mask_fits(values.shape, image.shape)
    present = label_ids(values) if present is None else list(present)
    targets = present if labels is None else select_labels(present, labels)[0]
    result = values.copy()
    if not targets:
        return result

    best_prob = np.zeros(values.shape, np.float32)
    best_label = np.zeros(values.shape, values.dtype)
    with same_photo(image):  # what each id's refinement reads of the photo alone is worked out once
        for label in targets:
            coarse = (values == label).astype(np.uint8) * 255
            prob = np.asarray(refiner.refine(image, coarse), dtype=np.float32)
            if prob.shape != values.shape:
                raise ValueError(f"refiner returned shape {prob.shape} for a {values.shape} mask")
            # An id's probability is often zero but for its object's surroundings.
            held = nonzero_box(prob) if worth_a_box(prob.shape) else (slice(None), slice(None))
            if held is None:
                continue
            # Strict '>' over ascending ids: exact ties go to the lower id, deterministically.
            better = prob[held] > best_prob[held]
            best_prob[held][better] = prob[held][better]
            best_label[held][better] = label
    best_label[best_prob < FOREGROUND_MIN] = BACKGROUND

    editable = values == BACKGROUND
    for label in targets:
        editable |= values == label
    result[editable] = best_label[editable]
    return result
