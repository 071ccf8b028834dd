"""Region-of-interest maps for CRM* decoding: which pixels to decode and which tiles to encode.

Band rule: a pixel is decoded when it lies within ``radius`` pixels (Chebyshev distance) of a
pixel whose incoming probability is uncertain (between ROI_LOW and ROI_HIGH) or that sits on the
0.5 boundary (its 3x3 neighbourhood holds both sides). Every other pixel keeps the incoming
mask's upsampled value.

The ``*_array`` functions work on NumPy maps (the torch-free CPU path, and torch's CPU path
through them); the others take torch tensors, on any device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .boxes import Box, grown_box, nonzero_box, on_box, worth_a_box, worth_boxing

if TYPE_CHECKING:
    import torch

ROI_LOW, ROI_HIGH = 0.02, 0.98


def dilate_array(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a (H, W) bool map by a (2 radius + 1)^2 square, through OpenCV."""
    if radius <= 0:
        return mask.copy()
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    grown = cv2.dilate(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return grown.astype(bool)


def roi_band_array(prob: np.ndarray, radius: int) -> np.ndarray:
    """Bool (H, W) map of the pixels to decode in ROI mode (see the module's band rule)."""
    # Nothing is uncertain and no boundary lies outside the nonzero box. Seeds lie within 1 px of a nonzero
    # pixel, the band within radius of a seed; 2 px more keep the box's own edge out of both (there the
    # complement's dilation would read the box's border).
    band = on_box(prob.shape, bool, lambda: nonzero_box(prob), radius + 2,
                  lambda box: _band(prob[box], radius, dilate_array))
    return _band(prob, radius, dilate_array) if band is None else band


def _band(prob: Any, radius: int, dilate_by: Callable[[Any, int], Any]) -> Any:
    """The module's band rule on a probability map (array or tensor), with that type's ``dilate_by``."""
    uncertain = (prob > ROI_LOW) & (prob < ROI_HIGH)
    foreground = prob > 0.5
    # Dilation minus erosion: pixels whose 3x3 neighbourhood holds both sides of the boundary.
    edge = dilate_by(foreground, 1) & dilate_by(~foreground, 1)
    return dilate_by(uncertain | edge, radius)


def _place_in_padding(small: np.ndarray, padded_hw: tuple[int, int], pad: int, origin: tuple[int, int] = (0, 0),
                      window: Box | None = None) -> np.ndarray:
    """``small`` placed ``pad`` px from the top/left of a padded map (and ``origin`` further, when it is
    a box of the stage), grown by 4 px (2 latent cells) so that every support cell of a band pixel is
    encoded. With a ``window`` (a box of the padded map that holds ``small`` grown by 4 px), only the
    window is dilated."""
    padded = np.zeros(padded_hw, dtype=bool)
    top, left = origin[0] + pad, origin[1] + pad
    padded[top:top + small.shape[0], left:left + small.shape[1]] = small
    if window is None:
        return dilate_array(padded, 4)
    padded[window] = dilate_array(padded[window], 4)
    return padded


def _nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each output index under nearest resizing (torch's "nearest" rule)."""
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


def pools_band(band_hw: tuple[int, int], stage_hw: tuple[int, int]) -> bool:
    """Whether a band is max-pooled onto its stage (the stage is no larger along some axis), else
    sampled by nearest indices (larger along both). Nearest sampling along a shrinking axis would
    skip band pixels, and with them the latent cells they read (session 62's review: a band 20x90
    onto a stage 21x40 lost 177 of 300 lone pixels that way)."""
    return stage_hw[0] <= band_hw[0] or stage_hw[1] <= band_hw[1]


def _adaptive_any(band: np.ndarray, stage_hw: tuple[int, int]) -> np.ndarray:
    """torch's ``adaptive_max_pool2d`` of a bool map, exactly: stage cell i of an axis of n_out
    pools band indices [floor(i n_in / n_out), ceil((i + 1) n_in / n_out)), through running counts."""
    pooled = band
    for axis, n_out in enumerate(stage_hw):
        n_in = pooled.shape[axis]
        cells = np.arange(n_out)
        starts, ends = cells * n_in // n_out, -(-(cells + 1) * n_in // n_out)
        counts = np.cumsum(pooled, axis=axis, dtype=np.int32)
        counts = np.concatenate([np.zeros_like(counts.take([0], axis=axis)), counts], axis=axis)
        pooled = counts.take(ends, axis=axis) > counts.take(starts, axis=axis)
    return pooled


def _whole_multiples(band_hw: tuple[int, int], stage_hw: tuple[int, int]) -> tuple[int, int] | None:
    """Each axis's band pixels per stage cell, when the band is a whole multiple of the stage along both."""
    if any(n_out < 1 or n_in % n_out for n_in, n_out in zip(band_hw, stage_hw, strict=True)):
        return None
    return band_hw[0] // stage_hw[0], band_hw[1] // stage_hw[1]


def _boxed_band_to_stage(band: np.ndarray, stage_hw: tuple[int, int], padded_hw: tuple[int, int],
                         pad: int) -> np.ndarray | None:
    """:func:`band_to_stage_array` worked on the box of the band's pixels, when the band is a whole
    multiple of its stage (a stage cell is then exactly a block of band pixels, and area averaging
    is positive exactly where the block holds one); None when it does not apply or saves nothing."""
    steps = _whole_multiples(band.shape, stage_hw)
    if steps is None or not worth_a_box(band.shape):
        return None
    box = nonzero_box(band)
    if box is None:
        return np.zeros(padded_hw, dtype=bool)
    # The stage cells whose block holds a band pixel, then those cells grown as _place_in_padding grows them.
    cells: Box = tuple(slice(held.start // step, -(-held.stop // step))  # type: ignore[assignment]
                       for held, step in zip(box, steps, strict=True))
    grown = grown_box((slice(cells[0].start + pad, cells[0].stop + pad),
                       slice(cells[1].start + pad, cells[1].stop + pad)), 4, padded_hw)
    if not worth_boxing(grown, padded_hw):
        return None
    (rows, columns), (row_step, column_step) = cells, steps
    blocks = band[rows.start * row_step:rows.stop * row_step, columns.start * column_step:columns.stop * column_step]
    small = blocks.reshape(rows.stop - rows.start, row_step, columns.stop - columns.start, column_step).any(axis=(1, 3))
    return _place_in_padding(small, padded_hw, pad, (rows.start, columns.start), grown)


def band_to_stage_array(band: np.ndarray, stage_hw: tuple[int, int], padded_hw: tuple[int, int],
                        pad: int) -> np.ndarray:
    """Where a target-grid band lands on the padded stage input (``pad`` px on top/left), grown by
    4 px (2 latent cells) so that every support cell of a band pixel is encoded."""
    boxed = _boxed_band_to_stage(band, stage_hw, padded_hw, pad)
    if boxed is not None:
        return boxed
    if stage_hw[0] <= band.shape[0] and stage_hw[1] <= band.shape[1]:
        # Area averaging is positive exactly where an adaptive max-pool bin holds a band pixel
        # (checked in the tests), and OpenCV does it several times faster.
        area = cv2.resize(band.astype(np.float32), stage_hw[::-1], interpolation=cv2.INTER_AREA)
        small = area > 0
    elif pools_band(band.shape, stage_hw):  # one axis shrinks, the other grows (a rounding's odd pixel)
        small = _adaptive_any(band, stage_hw)
    else:
        small = band[np.ix_(_nearest_indices(stage_hw[0], band.shape[0]), _nearest_indices(stage_hw[1], band.shape[1]))]
    return _place_in_padding(small, padded_hw, pad)


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a (H, W) bool tensor by a (2 radius + 1)^2 square.

    On the CPU this goes through OpenCV (:func:`dilate_array`): torch's CPU max-pool is about 100x
    slower at 4K and was a third of the whole refinement's time.
    """
    import torch

    if mask.device.type == "cpu":
        return torch.from_numpy(dilate_array(mask.numpy(), radius))
    return _pooled_dilation(mask, radius)


def _pooled_dilation(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """:func:`dilate` by torch's max-pool, on any device (the GPU's way; tests run it on the CPU)."""
    import torch.nn.functional as F

    if radius <= 0:
        return mask.clone()
    pooled = F.max_pool2d(mask.float()[None, None], 2 * radius + 1, stride=1, padding=radius)
    return pooled[0, 0] > 0


def roi_band(prob: torch.Tensor, radius: int) -> torch.Tensor:
    """Bool (H, W) tensor of the pixels to decode in ROI mode (see the module's band rule)."""
    import torch

    if prob.device.type == "cpu":
        return torch.from_numpy(roi_band_array(prob.numpy(), radius))
    return _band(prob, radius, _pooled_dilation)


def band_to_stage_input(band: torch.Tensor, stage_hw: tuple[int, int], padded_hw: tuple[int, int],
                        pad: int) -> torch.Tensor:
    """:func:`band_to_stage_array` for a bool tensor, on any device."""
    import torch

    if band.device.type == "cpu":
        return torch.from_numpy(band_to_stage_array(band.numpy(), stage_hw, padded_hw, pad))
    return _band_to_stage_tensor(band, stage_hw, padded_hw, pad)


def _band_to_stage_tensor(band: torch.Tensor, stage_hw: tuple[int, int], padded_hw: tuple[int, int],
                          pad: int) -> torch.Tensor:
    """:func:`band_to_stage_array` in torch, on any device (the GPU's way; tests run it on the CPU).
    The nearest indices are the NumPy path's own: torch's "nearest" works out its scale in float32 and
    picks another source index for some sizes (752 size pairs under 60 -> 400), which would encode
    other tiles on a GPU than on the CPU."""
    import torch
    import torch.nn.functional as F

    if pools_band(tuple(band.shape), stage_hw):
        small = F.adaptive_max_pool2d(band[None, None].float(), stage_hw)[0, 0] > 0
    else:
        rows, cols = (torch.from_numpy(_nearest_indices(n_out, n_in)).to(band.device)
                      for n_out, n_in in zip(stage_hw, band.shape, strict=True))
        small = band[rows][:, cols]
    padded = torch.zeros(padded_hw, dtype=torch.bool, device=band.device)
    padded[pad:pad + stage_hw[0], pad:pad + stage_hw[1]] = small
    return _pooled_dilation(padded, 4)
