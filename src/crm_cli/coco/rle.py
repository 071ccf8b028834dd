"""COCO run-length encodings: compressed RLE strings, polygons, and column windows of a mask.

Masks are column-major runs that start with a run of zeros. An instance is decoded only inside a
window of columns around it, so a small object in a 6K image never costs a full-size mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


class InstanceError(ValueError):
    """One instance cannot be refined (empty polygon, box outside the image, bad RLE)."""


MAX_RUN = 2**53  # a longer run (no image has that many pixels) marks a broken RLE before numpy's int64 overflows


def decode_rle_string(counts: str | bytes) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string (the ``counts`` of a compressed RLE).

    Each run is a variable-length number of 5-bit groups offset by 48 ('0'); bit 0x20 says another
    group follows and bit 0x10 of the last group is the sign. From the fourth run on (index 3), the
    stored value is the difference to the run two places back.
    """
    try:
        text = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    except UnicodeEncodeError as exc:
        raise InstanceError(f"invalid character {exc.object[exc.start]!r} in compressed RLE string") from None
    runs: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise InstanceError("truncated compressed RLE string")
            group = text[position] - 48
            if not 0 <= group < 64:
                raise InstanceError(f"invalid character {chr(text[position])!r} in compressed RLE string")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            # pycocotools writes a run of up to MAX_RUN in at most 11 groups; more only make Python's
            # ever longer integers slower (a string of a few MB took minutes), so stop here.
            if more and shift > 55:
                raise InstanceError(f"compressed RLE string holds a run of more than {MAX_RUN} pixels")
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    if runs and max(max(runs), -min(runs)) > MAX_RUN:  # no image has that many pixels; int64 could not hold it
        raise InstanceError(f"compressed RLE string holds a run of more than {MAX_RUN} pixels")
    return np.asarray(runs, dtype=np.int64)


def encode_rle_string(runs: Sequence[int] | np.ndarray) -> str:
    """The compressed COCO RLE string of run lengths (inverse of decode_rle_string)."""
    values = [int(v) for v in runs]
    out = bytearray()
    for index, run in enumerate(values):
        value = run - values[index - 2] if index > 2 else run
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            out.append(group + 48)
    return out.decode("ascii")


def runs_from_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Run lengths (column-major, starting with zeros) of a polygon list, uncompressed or compressed RLE.

    Raises:
        InstanceError: an empty or malformed polygon, an RLE of another size, or counts that do not
            add up to the image.
    """
    if isinstance(segmentation, list):
        return _polygon_runs(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if not isinstance(size, list | tuple) or list(size) != [height, width]:
            raise InstanceError(f"RLE size {size} does not match the image size [{height}, {width}] (height, width)")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            # Whole numbers written as floats (100.0) are read as pycocotools reads them.
            whole = [whole_number(c) for c in counts]
            if not all(c is not None and c >= 0 for c in whole):
                raise InstanceError("uncompressed RLE counts must be non-negative integers")
            if whole and max(whole) > MAX_RUN:
                raise InstanceError(f"uncompressed RLE holds a run of more than {MAX_RUN} pixels")
            runs = np.asarray(whole, dtype=np.int64)
        elif isinstance(counts, str | bytes):
            runs = decode_rle_string(counts)
            if runs.size and runs.min() < 0:
                raise InstanceError("compressed RLE string decodes to a negative run")
        else:
            raise InstanceError(f"RLE counts must be a list or a string, not {type(counts).__name__}")
        if runs.size and int(runs.max()) > height * width:  # also keeps the sum below from overflowing
            raise InstanceError(f"RLE holds a run of {int(runs.max())} pixels, more than the {height}x{width} "
                                "image has")
        if int(runs.sum()) != height * width:
            raise InstanceError(f"RLE runs add up to {int(runs.sum())} pixels, not {height}x{width}")
        return runs
    if segmentation is None:
        raise InstanceError("the annotation has no segmentation")
    if isinstance(segmentation, dict):
        raise InstanceError(f"an RLE segmentation needs 'size' and 'counts'; this one has "
                            f"{', '.join(repr(k) for k in segmentation) or 'no key'}")
    raise InstanceError(f"unknown segmentation format ({type(segmentation).__name__})")


def _polygon_runs(polygons: list, height: int, width: int) -> np.ndarray:
    """Runs of a polygon list, rasterised by pycocotools.

    A part with fewer than 3 points (fewer than 6 coordinates) encloses no pixel, and pycocotools
    adds nothing for it beside other parts, so it is left out; an instance of such parts only
    fails. A part with an odd number of coordinates fails: pycocotools would drop its last value
    in silence, and which value is the stray one cannot be told. A point more than the image's
    size beyond its edge fails too: the polygon was drawn for another image or scale, and
    pycocotools would rasterise its whole outline, which takes gigabytes (and crashes the
    process) for a coordinate in the hundreds of millions.
    """
    from pycocotools import mask as mask_utils

    if not polygons:
        raise InstanceError("empty polygon list")
    if all(is_number(v) for v in polygons):
        raise InstanceError(f"the segmentation is one flat list of {len(polygons)} numbers; COCO polygons are a "
                            "list of lists of x, y coordinates ([[x1, y1, x2, y2, ...], ...])")
    checked: list[list[float]] = []
    degenerate: list[int] = []
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list):
            raise InstanceError(f"polygon {k} is {type(polygon).__name__}, not a list of x, y coordinates")
        try:
            values = [float(v) for v in polygon if is_number(v)]
        except OverflowError:  # an int beyond float range
            values = [math.inf]
        if len(values) != len(polygon) or not all(math.isfinite(v) for v in values):
            raise InstanceError(f"polygon {k} has non-numeric or non-finite coordinates")
        if len(values) % 2:
            raise InstanceError(f"polygon {k} has {len(values)} coordinates, an odd number (they are x, y pairs)")
        if len(values) < 6:
            degenerate.append(len(values))
            continue
        xs, ys = values[0::2], values[1::2]
        for axis, coordinates, size in (("x", xs, width), ("y", ys, height)):
            low, high = min(coordinates), max(coordinates)
            if low < -size or high > 2 * size:
                far = low if low < -size else high
                raise InstanceError(f"polygon {k} has {axis} = {far:g}, more than the image's size beyond the edge "
                                    f"of the {width}x{height} image (drawn for another image or scale?)")
        checked.append(values)
    if not checked:
        if len(degenerate) == 1:
            raise InstanceError(f"polygon 0 has {degenerate[0]} coordinates (needs an even number, at least 6)")
        raise InstanceError(f"none of the {len(degenerate)} polygons has 3 points or more (they have "
                            f"{', '.join(map(str, degenerate))} coordinates)")
    merged = mask_utils.merge(mask_utils.frPyObjects(checked, height, width))
    runs = decode_rle_string(merged["counts"])
    if int(runs.sum()) != height * width:  # a run of 2**32 pixels or more wrapped around
        raise InstanceError(f"the polygons cannot be rasterised on a {width}x{height} image: pycocotools' 32-bit "
                            "run lengths overflowed")
    return runs


def is_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number (an int or a float, not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def whole_number(value: Any) -> int | None:
    """``value`` as an int when it is a JSON number with a whole value (``3`` or ``3.0``); None for
    anything else: a fraction, NaN, an infinity (``1e400`` reads so), a bool, a string, null.

    The one rule for counts, sizes and sides read from a COCO file.
    """
    if not is_number(value):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    return int(value)


def foreground_columns(runs: np.ndarray, height: int) -> tuple[int, int] | None:
    """(first, last + 1) column holding foreground, or None for an empty mask."""
    ends = np.cumsum(runs)
    ones = (np.arange(runs.size) % 2 == 1) & (runs > 0)
    if not ones.any():
        return None
    first = int((ends - runs)[ones].min())
    last = int(ends[ones].max()) - 1
    return first // height, last // height + 1


def decode_columns(runs: np.ndarray, height: int, x0: int, x1: int) -> np.ndarray:
    """The (height, x1 - x0) boolean block of columns x0..x1-1, decoding nothing else."""
    ends = np.cumsum(runs)
    starts = ends - runs
    low, high = x0 * height, x1 * height
    lengths = np.clip(ends, low, high) - np.clip(starts, low, high)
    values = np.arange(runs.size) % 2 == 1
    flat = np.repeat(values, lengths)
    return flat.reshape(x1 - x0, height).T


def runs_from_columns(block: np.ndarray, width: int, x0: int) -> np.ndarray:
    """Full-image run lengths of a mask that is zero outside columns x0..x0+block_width-1.

    ``block`` is (height, columns) boolean and spans the full image height.
    """
    height, columns = block.shape
    flat = np.asarray(block, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.asarray([height * width], dtype=np.int64)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    lengths = np.diff(np.concatenate([[0], changes, [flat.size]])).astype(np.int64)
    if flat[0]:
        lengths = np.concatenate([[0], lengths])  # an RLE starts with a (possibly empty) run of zeros
    lengths[0] += x0 * height
    trailing = (width - x0 - columns) * height
    if lengths.size % 2:  # ends with zeros
        lengths[-1] += trailing
    elif trailing:
        lengths = np.concatenate([lengths, [trailing]])
    return lengths


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A full (H, W) mask as a compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    height, width = mask.shape
    return {"size": [height, width], "counts": encode_rle_string(runs_from_columns(mask > 0, width, 0))}


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A segmentation (polygons or RLE) as a full (H, W) boolean mask."""
    return decode_columns(runs_from_segmentation(segmentation, height, width), height, 0, width)
