"""Boxes outside which a map is exactly zero: the work of a small object on a large photo (one id of a
label map at 4K) can then be done on its box alone, to the same values as on the whole map."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Box = tuple[slice, slice]

# Below this many values a map is worked on whole: finding its box would cost about as much as it saves.
MIN_BOXED_ELEMENTS = 1 << 16
# A box is only worth it when it holds at most this share of the map.
MAX_BOXED_SHARE = 0.5


def worth_a_box(*shapes: tuple[int, ...]) -> bool:
    """Whether the largest of these (H, W, ...) maps is large enough to look for its box (read at each
    call: setting ``MIN_BOXED_ELEMENTS`` out of reach makes every caller work on whole maps)."""
    return max(shape[0] * shape[1] for shape in shapes) >= MIN_BOXED_ELEMENTS


def nonzero_box(values: np.ndarray) -> Box | None:
    """The smallest (rows, columns) box outside which a (H, W) map is exactly zero (False for a bool
    map); None when all of it is."""
    rows = np.flatnonzero(values.any(axis=1))
    if rows.size == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    columns = np.flatnonzero(values[top:bottom].any(axis=0))
    return slice(top, bottom), slice(int(columns[0]), int(columns[-1]) + 1)


def grown_box(box: Box, margin: int, shape: tuple[int, ...]) -> Box:
    """``box`` grown by ``margin`` pixels on every side, within a map of ``shape``."""
    rows, columns = box
    return (slice(max(rows.start - margin, 0), min(rows.stop + margin, shape[0])),
            slice(max(columns.start - margin, 0), min(columns.stop + margin, shape[1])))


def box_area(box: Box) -> int:
    """How many pixels a box holds."""
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)


def worth_boxing(box: Box, shape: tuple[int, ...]) -> bool:
    """Whether work on ``box`` alone saves enough over the whole (H, W) map of ``shape``."""
    return box_area(box) <= MAX_BOXED_SHARE * shape[0] * shape[1]


def either_box(first: np.ndarray, second: np.ndarray) -> Box | None:
    """The smallest box outside which two (H, W) maps of one shape are both zero; None when both are
    zero everywhere."""
    boxes = [box for box in (nonzero_box(first), nonzero_box(second)) if box is not None]
    if not boxes:
        return None
    return (slice(min(box[0].start for box in boxes), max(box[0].stop for box in boxes)),
            slice(min(box[1].start for box in boxes), max(box[1].stop for box in boxes)))


def on_box(shape: tuple[int, int], dtype: type | np.dtype, find_box: Callable[[], Box | None], margin: int,
           work: Callable[[Box], np.ndarray]) -> np.ndarray | None:
    """A map of ``shape`` that is zero but on a box, where it holds ``work(box)``; None when the caller
    should work on the whole map instead (too small a map to look for a box, or too large a box).

    ``find_box`` gives the box outside which the inputs are zero (None: zero everywhere, so the result
    is all zeros); it is grown by ``margin``, the work's reach, before ``work`` is called on it.
    """
    if not worth_a_box(shape):
        return None
    box = find_box()
    if box is None:
        return np.zeros(shape, dtype)
    box = grown_box(box, margin, shape)
    if not worth_boxing(box, shape):
        return None
    out = np.zeros(shape, dtype)
    out[box] = work(box)
    return out
