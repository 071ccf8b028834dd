"""Torch-free twins of the stage resampling helpers (NumPy + OpenCV only).

- :func:`resize_probability` reproduces ``F.interpolate(mode="bilinear", align_corners=False,
  antialias=<any axis shrinks>)`` followed by ``clamp_(0, 1)`` on a (1, 1, H, W) float32 map, to
  float32 rounding;
- :func:`pad_stage_input` reproduces the stage padding (``F.pad`` reflect, or replicate when a
  side is too small to reflect) on (H, W) or (H, W, C) arrays of any dtype.

How torch computes the resize (CPU kernels of ``upsample_bilinear2d`` and
``_upsample_bilinear2d_aa`` for float32), which this module mirrors operation by operation:

- Both are separable. An axis whose size does not change is left untouched (an exact copy).
- Plain bilinear (nothing shrinks): ``scale = float32(in) / out``; the source coordinate
  ``scale * (i + 0.5) - 0.5`` is evaluated in float32 *with a fused multiply-add* (one rounding;
  this is what the x86-64 AVX2/AVX512 kernels do; the baseline ``ATEN_CPU_CAPABILITY=default`` kernel
  rounds twice and then differs by up to ~1e-5 on long axes), clamped at 0 below; ``i0 = min(floor(src),
  in - 1)``, ``i1 = min(i0 + 1, in - 1)``, ``l1 = clip(src - i0, 0, 1)``, ``l0 = 1 - l1``.
  The source coordinates of large maps carry float32 rounding of up to ~1e-4 pixel, so matching
  torch needs the same float32 arithmetic, not float64 (or OpenCV's) coordinates.
- Antialiased (used on *both* axes as soon as either axis shrinks): per axis, with
  ``scale = float32(in) / out``, ``support = scale`` if ``scale >= 1`` else ``1`` and
  ``invscale = 1 / scale`` if ``scale >= 1`` else ``1``: ``center = float32(scale * (i + 0.5))``,
  ``xmin = max(trunc(center - support + 0.5), 0)``, ``xsize = min(trunc(center + support + 0.5),
  in) - xmin`` (at most ``2 * ceil(support) + 1`` taps), weight of tap ``j`` =
  ``triangle((xmin + j - center + 0.5) * invscale)`` with ``triangle(x) = max(1 - |x|, 0)``,
  normalised by the float32 sum of the window's weights. Taps that would fall outside the map are
  dropped (not mirrored) and the rest renormalised, so edge outputs are weighted towards the inside.
  On an enlarging axis this is the bilinear kernel again, but computed from float32 distances to a
  float32 centre, which differs from the plain path's fused coordinate by up to ~1e-5 on large
  maps: a mixed resize (one axis up, one down) must use these weights on the enlarging axis too.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .boxes import nonzero_box, worth_a_box, worth_boxing

__all__ = ["pad_stage_input", "resize_probability"]

_F32 = np.float32
# Dtypes cv2.copyMakeBorder pads losslessly (it silently turns int64 into int32, for instance).
_CV2_PAD_DTYPES = frozenset(
    np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.float32, np.float64)
)


def _freeze(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mark cached arrays read-only so no caller can alter a shared table."""
    for array in arrays:
        array.flags.writeable = False
    return arrays


@lru_cache(maxsize=64)
def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, each (n_out, 2), of torch's plain bilinear resize along one axis."""
    scale = _F32(n_in) / _F32(n_out)
    position = np.arange(n_out, dtype=_F32) + _F32(0.5)
    # float32 * float32 is exact in float64, and so is subtracting 0.5 from it (at most 48 significant
    # bits); a single rounding to float32 afterwards is therefore exactly fmaf(scale, position, -0.5).
    src = (np.float64(scale) * position.astype(np.float64) - 0.5).astype(_F32)
    src = np.maximum(src, _F32(0.0))
    first = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    frac = np.clip(src - first.astype(_F32), _F32(0.0), _F32(1.0))
    second = np.minimum(first + 1, n_in - 1)
    index = np.stack([first, second], axis=1)
    weight = np.stack([_F32(1.0) - frac, frac], axis=1).astype(_F32)
    return _freeze(index, weight)


@lru_cache(maxsize=64)
def _antialias_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights, each (n_out, taps), of torch's antialiased bilinear resize along one axis."""
    scale = _F32(n_in) / _F32(n_out)
    if scale >= 1.0:
        support = scale
        invscale = _F32(1.0 / np.float64(scale))
    else:
        support = _F32(1.0)
        invscale = _F32(1.0)
    max_taps = int(np.ceil(np.float64(support))) * 2 + 1
    # The centre is computed in double and stored as float; the bounds add 0.5 in double and truncate.
    center = (np.float64(scale) * (np.arange(n_out, dtype=np.float64) + 0.5)).astype(_F32)
    low = np.trunc((center - support).astype(np.float64) + 0.5).astype(np.intp)
    high = np.trunc((center + support).astype(np.float64) + 0.5).astype(np.intp)
    xmin = np.maximum(low, 0)
    xsize = np.clip(np.minimum(high, n_in) - xmin, 0, max_taps)

    weight = np.zeros((n_out, max_taps), dtype=_F32)
    total = np.zeros(n_out, dtype=_F32)
    for j in range(max_taps):
        # (j + xmin) - center in float32, then (+ 0.5) * invscale in double, rounded to float32.
        distance = (xmin + j).astype(_F32) - center
        argument = np.abs(((distance.astype(np.float64) + 0.5) * np.float64(invscale)).astype(_F32))
        tap = np.where((argument < 1.0) & (j < xsize), _F32(1.0) - argument, _F32(0.0)).astype(_F32)
        weight[:, j] = tap
        total += tap  # float32, summed in tap order like torch
    nonzero = total != 0
    weight[nonzero] /= total[nonzero, None]

    index = np.minimum(xmin[:, None] + np.arange(max_taps), n_in - 1)
    used = weight.any(axis=0)  # a tap that is zero for every output adds exactly nothing: drop it
    return _freeze(np.ascontiguousarray(index[:, used]), np.ascontiguousarray(weight[:, used]))


# Rows of work per block: about 1 MiB of float32 per block keeps the gathered scratch in cache, which is
# more than twice as fast as whole-array temporaries at 4K sizes.
_BLOCK_ELEMENTS = 1 << 18


def _block_rows(width: int) -> int:
    """How many rows of ``width`` float32 values make one cache-sized block."""
    return max(1, _BLOCK_ELEMENTS // max(width, 1))


def _resample_rows(values: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted sum of gathered rows: out[i] = sum_k weight[i, k] * values[index[i, k]], in tap order."""
    n_out, width = index.shape[0], values.shape[1]
    out = np.empty((n_out, width), dtype=_F32)
    step = _block_rows(width)
    scratch = np.empty((min(step, n_out), width), dtype=_F32)
    for start in range(0, n_out, step):
        stop = min(start + step, n_out)
        block, spare = out[start:stop], scratch[: stop - start]
        np.take(values, index[start:stop, 0], axis=0, out=block)
        block *= weight[start:stop, 0, None]
        for k in range(1, index.shape[1]):
            np.take(values, index[start:stop, k], axis=0, out=spare)
            spare *= weight[start:stop, k, None]
            block += spare
    return out


def _resample_columns(values: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted sum of gathered columns: out[:, i] = sum_k weight[i, k] * values[:, index[i, k]], in tap order."""
    height, n_out = values.shape[0], index.shape[0]
    out = np.empty((height, n_out), dtype=_F32)
    step = _block_rows(max(n_out, values.shape[1]))
    scratch = np.empty((min(step, height), n_out), dtype=_F32)
    for start in range(0, height, step):
        stop = min(start + step, height)
        source, block, spare = values[start:stop], out[start:stop], scratch[: stop - start]
        np.take(source, index[:, 0], axis=1, out=block)
        block *= weight[None, :, 0]
        for k in range(1, index.shape[1]):
            np.take(source, index[:, k], axis=1, out=spare)
            spare *= weight[None, :, k]
            block += spare
    return out


Taps = tuple[np.ndarray, np.ndarray]


def _axis_reach(taps: Taps | None, held: slice) -> tuple[slice, slice, Taps | None] | None:
    """Along one axis whose source is zero outside ``held``: (the outputs that read a held value, the
    source those outputs read, their taps re-indexed into that source), or None when no output does.

    Every output outside the first slice reads zeros only, and ``0 * w + 0 * w ...`` is exactly 0;
    every output inside it is computed from the same taps in the same order as on the whole axis.
    """
    if taps is None:  # an axis that keeps its size: output i is source i
        return held, held, None
    index, weight = taps
    reads = np.flatnonzero(((index >= held.start) & (index < held.stop)).any(axis=1))
    if reads.size == 0:
        return None
    first, last = int(reads[0]), int(reads[-1]) + 1
    index = index[first:last]
    low, high = int(index.min()), int(index.max()) + 1
    return slice(first, last), slice(low, high), (index - low, weight[first:last])


def _separable(source: np.ndarray, rows: Taps | None, columns: Taps | None, columns_first: bool) -> np.ndarray:
    """``source`` resampled along the axes whose taps are given, columns or rows first."""
    if rows is None:  # a resize changes at least one axis
        return _resample_columns(source, *columns)
    if columns is None:
        return _resample_rows(source, *rows)
    if columns_first:
        return _resample_rows(_resample_columns(source, *columns), *rows)
    return _resample_columns(_resample_rows(source, *rows), *columns)


def _resample_held(source: np.ndarray, size: tuple[int, int], rows: Taps | None, columns: Taps | None,
                   columns_first: bool) -> np.ndarray | None:
    """:func:`_separable`'s result clipped to [0, 1], computed on the box where ``source`` is nonzero
    (zeros elsewhere); None when the box reaches too many outputs to be worth it."""
    box = nonzero_box(source)
    if box is None:
        return np.zeros(size, dtype=_F32)
    reach_rows, reach_columns = _axis_reach(rows, box[0]), _axis_reach(columns, box[1])
    if reach_rows is None or reach_columns is None:
        return np.zeros(size, dtype=_F32)
    out_rows, source_rows, box_rows = reach_rows
    out_columns, source_columns, box_columns = reach_columns
    if not worth_boxing((out_rows, out_columns), size):
        return None
    out = np.zeros(size, dtype=_F32)
    held = _separable(source[source_rows, source_columns], box_rows, box_columns, columns_first)
    np.clip(held, 0.0, 1.0, out=out[out_rows, out_columns])
    return out


def resize_probability(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float32 (H, W) map to ``size`` = (height, width) like torch's bilinear, antialiased when shrinking.

    Matches ``F.interpolate(mode="bilinear", align_corners=False, antialias=shrink).clamp_(0, 1)`` where
    ``shrink`` is true when either axis gets smaller (then both axes use the antialiased kernel). Returns
    ``values`` itself when the size is unchanged, else a new float32 array clipped to [0, 1]. A large map
    that is zero outside a small box is resampled on the box alone (the same values).
    """
    if values.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {values.shape}")
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"output size must be positive, got {tuple(size)}")
    in_height, in_width = values.shape
    if (in_height, in_width) == (height, width):
        return values
    if in_height < 1 or in_width < 1:
        raise ValueError(f"cannot resize an empty map of shape {values.shape}")
    source = np.asarray(values, dtype=_F32)

    shrink = height < in_height or width < in_width
    taps = _antialias_taps if shrink else _linear_taps
    # An axis that keeps its size is an exact copy in torch: skip it.
    rows = taps(in_height, height) if height != in_height else None
    columns = taps(in_width, width) if width != in_width else None
    columns_first = True
    if rows is not None and columns is not None:
        # Torch does columns first; the order only moves float32 rounding (~1e-7), so take the cheaper one.
        # Column gathers cost about twice as much per element as contiguous row gathers. The choice is
        # made on the whole map, so that a box's values are the whole map's.
        row_taps, column_taps = rows[0].shape[1], columns[0].shape[1]
        columns_first = (2 * column_taps * in_height * width + row_taps * height * width
                         <= row_taps * height * in_width + 2 * column_taps * height * width)

    # A small object on a large photo (one id of a label map at 4K) costs its box, not the photo.
    if worth_a_box(source.shape, (height, width)):
        held = _resample_held(source, (height, width), rows, columns, columns_first)
        if held is not None:
            return held
    out = _separable(source, rows, columns, columns_first)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def area_or_linear(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) or (H, W, C) ``values`` resized by OpenCV to ``size`` = (height, width), each axis on its
    own: area average along an axis that shrinks, bilinear along one that grows."""
    (height, width), (to_height, to_width) = values.shape[:2], size
    if to_height <= height and to_width <= width:
        return cv2.resize(values, (to_width, to_height), interpolation=cv2.INTER_AREA)
    if to_height >= height and to_width >= width:
        return cv2.resize(values, (to_width, to_height), interpolation=cv2.INTER_LINEAR)
    # One axis shrinks and the other grows: OpenCV's area mode would interpolate both, so the
    # shrinking axis is averaged first, then the other is interpolated.
    shrunk_hw = (to_height, width) if to_height < height else (height, to_width)
    shrunk = cv2.resize(values, (shrunk_hw[1], shrunk_hw[0]), interpolation=cv2.INTER_AREA)
    return cv2.resize(shrunk, (to_width, to_height), interpolation=cv2.INTER_LINEAR)


def stage_photo(image: np.ndarray, stage_hw: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) uint8 photo at a stage's (height, width) (:func:`area_or_linear`; the photo itself
    when the sizes agree). Both stage runners' photo input."""
    if tuple(stage_hw) == image.shape[:2]:
        return image
    return area_or_linear(image, (stage_hw[0], stage_hw[1]))


def pad_stage_input(values: np.ndarray, pad: int = 32, multiple: int = 16) -> np.ndarray:
    """Pad (H, W) or (H, W, C) to multiples of ``multiple``: ``pad`` on top/left, at least ``pad`` on bottom/right.

    Reflects without repeating the edge pixel (torch ``F.pad(mode="reflect")``) when every pad amount is smaller
    than the side it pads, else replicates the edge on all sides; keeps the dtype.
    """
    if values.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {values.shape}")
    if pad < 0 or multiple < 1:
        raise ValueError(f"pad must be >= 0 and multiple >= 1, got pad={pad}, multiple={multiple}")
    height, width = values.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"cannot pad an empty array of shape {values.shape}")
    bottom = pad + (-(height + 2 * pad)) % multiple
    right = pad + (-(width + 2 * pad)) % multiple
    reflect = bottom < height and right < width  # bottom/right >= pad, so this covers top/left too

    channels = values.shape[2] if values.ndim == 3 else 1
    if values.dtype in _CV2_PAD_DTYPES and channels <= 4:
        border = cv2.BORDER_REFLECT_101 if reflect else cv2.BORDER_REPLICATE
        padded = cv2.copyMakeBorder(np.ascontiguousarray(values), pad, bottom, pad, right, border)
        # cv2 returns (H, W) for a single-channel (H, W, 1) input: restore the channel axis.
        return padded.reshape((height + pad + bottom, width + pad + right) + values.shape[2:])
    widths = ((pad, bottom), (pad, right)) + ((0, 0),) * (values.ndim - 2)
    return np.pad(values, widths, mode="reflect" if reflect else "edge")
