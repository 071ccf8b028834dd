"""One refinement stage: pad the stage input, encode it (tiled), decode it in full or only in a band.

``StageRunner`` holds a model on a device with the runtime options (precision, memory format, tile
sizes, decode budget) and runs single stages; ``engine.Refiner`` chains the stages of a schedule.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import IMAGENET_MEAN, IMAGENET_STD, PRECISION_NAMES
from .resampling import stage_photo
from .roi import band_to_stage_input, roi_band
from .schedule import stage_size
from .stage_geometry import (
    PAD_MULTIPLE,
    STAGE_PAD,
    StageTiming,
    TiledRunner,
    check_precision,
    encode_windows,
)
from .stage_geometry import tile_windows as _tile_windows
from .transforms import network_input

__all__ = ["PAD_MULTIPLE", "STAGE_PAD", "StageInput", "StageRunner", "StageTiming", "check_precision",
           "pad_stage_input", "resize_probability", "tile_windows"]

PRECISIONS = dict(zip(PRECISION_NAMES, (torch.float32, torch.float16, torch.bfloat16), strict=True))


def pad_stage_input(x: torch.Tensor, pad: int = STAGE_PAD, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Pad ``pad`` px on top/left and at least ``pad`` on bottom/right up to a size multiple."""
    height, width = x.shape[-2:]
    extra_y = (-(height + 2 * pad)) % multiple
    extra_x = (-(width + 2 * pad)) % multiple
    amounts = (pad, pad + extra_x, pad, pad + extra_y)
    # Reflect needs each pad smaller than the side; tiny stages fall back to replicate.
    mode = "reflect" if max(pad + extra_y, 0) < height and max(pad + extra_x, 0) < width else "replicate"
    return F.pad(x, amounts, mode=mode)


class StageInput:
    """A padded stage input held as uint8 RGB plus the float mask.

    The normalised 4-channel network input is built per crop, so a ROI stage converts only the
    tiles it encodes, and a 6K stage never holds a full float copy of the image.
    """

    def __init__(self, rgb: np.ndarray, mask: torch.Tensor, device: torch.device,
                 input_norm: tuple[Sequence[float], Sequence[float]] = (IMAGENET_MEAN, IMAGENET_STD)) -> None:
        rgb_tensor = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1).unsqueeze(0)
        self.rgb = pad_stage_input(rgb_tensor)
        self.mask = pad_stage_input(mask)
        self.input_norm = input_norm  # the encoder's RGB (mean, std), from its ArchConfig

    @property
    def shape(self) -> tuple[int, int]:
        """Padded (height, width)."""
        return tuple(self.rgb.shape[-2:])  # type: ignore[return-value]

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """The (1, 4, y1 - y0, x1 - x0) network input for a window of the padded stage."""
        rgb = self.rgb[:, :, y0:y1, x0:x1].float().div_(255.0)
        return network_input(rgb, self.mask[:, :, y0:y1, x0:x1], *self.input_norm)


def tile_windows(height: int, width: int, tile: int, needed: torch.Tensor | None = None,
                 run_tiles: int = 1) -> list[tuple[int, int, int, int]]:
    """:func:`stage_geometry.tile_windows` for a (height, width) bool tensor ``needed`` (or all tiles)."""
    occupied = None
    if needed is not None:
        # One reduction for all tiles (and one device sync), not one .any() per tile.
        rows, cols = -(-height // tile), -(-width // tile)
        grid = torch.zeros(rows * tile, cols * tile, dtype=torch.bool, device=needed.device)
        grid[:height, :width] = needed
        occupied = grid.view(rows, tile, cols, tile).any(dim=3).any(dim=1).tolist()
    return _tile_windows(height, width, tile, occupied, run_tiles)


class StageRunner(TiledRunner):
    """Runs single stages of one model on one device; holds only the runtime options.

    Args (besides the obvious): ``tile_size``/``tile_margin`` bound full-stage encoding,
    ``roi_tile_size``/``roi_tile_margin`` the tiles of ROI stages (neighbours in a row are encoded
    as one window up to ``roi_window_size`` px wide), ``decode_budget_mb`` the decoder's row bands;
    with ``channels_last`` the model is converted to NHWC.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, *, precision: str = "fp32",
                 channels_last: bool = False, **tiles: int) -> None:
        super().__init__(**tiles)
        self.device = device
        self.precision = check_precision(precision)
        self.model = model.to(device).eval()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    # The interface engine.Refiner drives a runner through (onnx_runner.OnnxStageRunner has the same).
    backend = "torch"

    @property
    def device_name(self) -> str:
        """Human-readable device description."""
        from .devices import describe_device

        return describe_device(self.device)

    def inference(self) -> Any:
        """The context every refinement runs in: no autograd bookkeeping."""
        return torch.inference_mode()

    def stage_mask(self, mask: np.ndarray) -> torch.Tensor:
        """A float32 (H, W) mask as this runner's stage mask: (1, 1, H, W) on its device."""
        return torch.from_numpy(mask).to(self.device).view(1, 1, *mask.shape)

    def as_array(self, current: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
        """A stage mask (resized to ``size`` first, when given) as a float32 (H, W) array."""
        if size is not None:
            current = resize_probability(current, size)
        return current[0, 0].float().cpu().numpy()

    def _encode_tile(self, x: torch.Tensor) -> torch.Tensor:
        """Encode one tile, under autocast when a reduced precision was asked for.

        A non-finite result in reduced precision is recomputed in fp32 (fp16 overflows were seen
        in peer tools), so the output never carries NaN.
        """
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "fp32":
            return self.model.encode(x)
        with torch.autocast(self.device.type, dtype=PRECISIONS[self.precision]):
            g = self.model.encode(x)
        if not bool(torch.isfinite(g).all()):
            warnings.warn(f"{self.precision} produced non-finite features; recomputed this tile in fp32",
                          RuntimeWarning, stacklevel=2)
            return self.model.encode(x)
        return g.float()


    def _encode(self, x: StageInput, needed: torch.Tensor | None = None) -> torch.Tensor:
        """Projected latent for a padded stage input, tiled with overlap when it is large.

        Args:
            x: the padded stage input.
            needed: optional (Hp, Wp) bool map; tiles without a needed pixel are not encoded.
                Their latent cells are left uninitialised (untouched pages cost no memory), so a
                caller must only read cells that ``needed`` covers.
        """
        height, width = x.shape
        tile, margin, run_tiles = self.tiling(roi=needed is not None)
        if height <= tile and width <= tile:
            return self._encode_tile(x.crop(0, height, 0, width))
        hidden = self.model.decoder.hidden_dim
        shape = (1, height // 2, width // 2, hidden)
        if self._unencoded_fill is None:
            g = torch.empty(shape, device=self.device)
        else:
            g = torch.full(shape, self._unencoded_fill, device=self.device)
        encode_windows(g, x, tile_windows(height, width, tile, needed, run_tiles), margin, self._encode_tile)
        return g

    def _stage(self, image: np.ndarray, mask: torch.Tensor, ratio: float, target_hw: tuple[int, int],
               roi: bool = False, band_px: float | None = None) -> tuple[torch.Tensor, StageTiming]:
        """One refinement stage: returns the probability (1, 1, *target_hw) and its timing.

        With ``roi`` only pixels near the incoming mask's uncertain boundary are decoded (the
        paper's CRM*); the others keep the incoming mask's upsampled value. ``band_px`` widens
        that band to a full-resolution distance (default: two stage pixels).
        """
        height, width = image.shape[:2]
        hs, ws = stage_size(height, width, ratio)
        stage_mask = resize_probability(mask, (hs, ws))
        start = time.perf_counter()
        # Only an exactly constant stage mask short-cuts: a small object can be faint after shrinking.
        if float(stage_mask.max()) == 0.0:
            return torch.zeros(1, 1, *target_hw, device=self.device), StageTiming(ratio, 0.0, 0.0)
        if float(stage_mask.min()) == 1.0:
            return torch.ones(1, 1, *target_hw, device=self.device), StageTiming(ratio, 0.0, 0.0)
        x = StageInput(stage_photo(image, (hs, ws)), stage_mask, self.device, self.model.config.input_norm)
        decoder = self.model.decoder
        if roi:
            prob = resize_probability(mask, target_hw).clone()
            radius = math.ceil(2 * target_hw[0] / hs)
            if band_px is not None:
                radius = max(radius, math.ceil(band_px * target_hw[0] / height))
            band = roi_band(prob[0, 0], radius=radius)
            g = self._encode(x, needed=band_to_stage_input(band, (hs, ws), x.shape, STAGE_PAD))
        else:
            g = self._encode(x)
        _sync(self.device)
        encoded = time.perf_counter()
        if roi:
            ys, xs = torch.nonzero(band, as_tuple=True)
            rows = decoder.axis_table(target_hw[0], hs, g.shape[1], STAGE_PAD, axis=0)
            cols = decoder.axis_table(target_hw[1], ws, g.shape[2], STAGE_PAD, axis=1)
            chunk = max(1, self.decode_budget // (decoder.hidden_dim * 4 * 4))
            flat = prob.view(-1)
            for k in range(0, ys.numel(), chunk):
                y, x_ = ys[k:k + chunk], xs[k:k + chunk]
                flat[y * target_hw[1] + x_] = torch.sigmoid(decoder.decode_points(g, rows, cols, y, x_)[0])
        else:
            logits = decoder.decode(g, target_hw, (hs, ws), STAGE_PAD, self.decode_budget)
            prob = torch.sigmoid_(logits).unsqueeze(1)
        del g, x
        _sync(self.device)
        return prob, StageTiming(ratio, encoded - start, time.perf_counter() - encoded)

    def _mirrored_stage(self, image: np.ndarray, mask: torch.Tensor, ratio: float, target_hw: tuple[int, int],
                        roi: bool = False, band_px: float | None = None) -> tuple[torch.Tensor, StageTiming]:
        """:meth:`_stage` averaged with the same stage on the left-right mirrored image and mask.

        The model is not mirror-symmetric, and its two answers err differently near the boundary;
        the mean of the two is closer to the truth (``auto`` uses it by photo size, see
        ``schedule.FinalStage``).
        """
        direct, first = self._stage(image, mask, ratio, target_hw, roi=roi, band_px=band_px)
        mirrored, second = self._stage(np.ascontiguousarray(image[:, ::-1]), torch.flip(mask, dims=[3]), ratio,
                                       target_hw, roi=roi, band_px=band_px)
        probability = (direct + torch.flip(mirrored, dims=[3])) / 2
        return probability, StageTiming(ratio, first.encode_s + second.encode_s, first.decode_s + second.decode_s)


def resize_probability(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of an (N, 1, h, w) map, antialiased when shrinking."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    shrink = size[0] < mask.shape[-2] or size[1] < mask.shape[-1]
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=shrink).clamp_(0, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

