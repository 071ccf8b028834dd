"""The inference engine: ``Refiner`` loads a model once and refines many image/mask pairs.

Multi-resolution schedule (DESIGN §2): for each ratio s, the image and the current mask are
resized to s x full size, padded, encoded once, and the implicit decoder is queried on the grid the
next stage consumes (the full grid for the last stage). Each stage's soft output is the next
stage's mask.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import default_weights_path, load_model
from .config import IMAGENET_MEAN, IMAGENET_STD
from .devices import describe_device, resolve_device
from .guard import apply_guard
from .masks import check_mask_fits, check_rgb_image, mask_to_float
from .model.fold import fold_batchnorm
from .presets import Preset, get_preset
from .roi import band_to_stage_input, roi_band
from .schedule import choose_schedule, edge_alignment, guard_distance, trust_from_alignment
from .transforms import network_input

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Stages whose input would be smaller than this (shorter side) are skipped, except the last. The
# model was trained on 224-px crops; on a smaller stage the whole object is tiny and it fills holes
# or erases thin parts (carvana-dev: skipping the 160-px stage gained 0.4 IoU and 0.8 mBA).
MIN_STAGE_SIDE = 224
STAGE_PAD = 32  # reflect padding around every stage input, as the reference does
PAD_MULTIPLE = 16  # padded stage inputs are multiples of this so every encoder tap aligns
# With the guard on, the first stage is decoded only within this many free distances of the coarse boundary.
GUARD_BAND = 3


@dataclass
class StageTiming:
    """Wall time of one stage, split into encoder and decoder."""

    ratio: float
    encode_s: float
    decode_s: float


@dataclass
class RefineResult:
    """Final probability map plus optional per-stage maps and timings."""

    probability: np.ndarray
    stages: list[np.ndarray] = field(default_factory=list)
    timings: list[StageTiming] = field(default_factory=list)
    ratios: tuple[float, ...] = ()  # the schedule that was run (chosen per image by ``auto``)
    guard_px: float | None = None  # the trust region's free distance, when the guard was on
    trust: float = 0.0  # 0..1: how much evidence the guard asked for right at the coarse boundary
    guard_restored: int = 0  # pixels whose side of 0.5 the guard kept as in the coarse mask


def stage_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """Stage-input size for a ratio (at least 1 pixel per side)."""
    return max(1, round(height * ratio)), max(1, round(width * ratio))


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


class Refiner:
    """Load a CRM checkpoint once; refine any number of (image, mask) pairs.

    Example:
        >>> refiner = Refiner()  # shipped weights, best device
        >>> prob = refiner.refine(rgb, coarse)  # float32 (H, W) in [0, 1]
    """

    def __init__(self, weights: str | Path | None = None, device: str = "auto", *,
                 model: torch.nn.Module | None = None, tile_size: int = 1024, tile_margin: int = 64,
                 decode_budget_mb: int = 8, roi_tile_size: int = 256, roi_tile_margin: int = 32,
                 precision: str = "fp32", threads: int | None = None, fold_bn: bool = True,
                 channels_last: bool | None = None, min_stage_side: int = MIN_STAGE_SIDE) -> None:
        """Args (besides the obvious): ``tile_size``/``tile_margin`` bound full-stage encoding,
        ``roi_tile_size``/``roi_tile_margin`` the tiles of ROI stages; ``fold_bn`` folds BatchNorm
        into the convolutions of a loaded model; ``channels_last`` (NHWC) defaults to on for CUDA
        and CPU; stages (but the last) whose input is shorter than ``min_stage_side`` are skipped."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        self.precision = precision
        self.min_stage_side = min_stage_side
        owns_model = model is None
        if model is None:
            model, self.weights_info = load_model(weights or default_weights_path())
        else:
            self.weights_info = {"path": None, "sha256": "", "config": model.config.to_dict(), "provenance": {}}
        self.model = model.to(self.device).eval()
        # A borrowed model (training-time validation) is left exactly as it was given.
        if owns_model and fold_bn:
            fold_batchnorm(self.model)
        if channels_last is None:
            # NHWC suits tensor cores, and oneDNN's CPU depthwise kernels: 25% faster at 4K.
            channels_last = self.device.type in ("cuda", "cpu")
        self.channels_last = owns_model and channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if owns_model and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed tile shapes make autotuning pay off
        self.tile_size = int(math.ceil(tile_size / PAD_MULTIPLE) * PAD_MULTIPLE)
        self.tile_margin = int(math.ceil(tile_margin / PAD_MULTIPLE) * PAD_MULTIPLE)
        # Small row bands stay in cache: 8 MB decodes about 5x faster than 256 MB on a 2-core CPU.
        self.decode_budget = decode_budget_mb << 20
        self.roi_tile_size = int(math.ceil(roi_tile_size / PAD_MULTIPLE) * PAD_MULTIPLE)
        self.roi_tile_margin = int(math.ceil(roi_tile_margin / PAD_MULTIPLE) * PAD_MULTIPLE)
        # Tests set this to NaN to prove that ROI decoding never reads a latent cell it skipped.
        self._unencoded_fill: float | None = None

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

    @classmethod
    def from_model(cls, model: torch.nn.Module, device: str = "auto", **kwargs) -> Refiner:
        """Wrap an in-memory model (for training-time validation and tests)."""
        return cls(model=model, device=device, **kwargs)

    @property
    def device_name(self) -> str:
        """Human-readable device description."""
        return describe_device(self.device)

    # ------------------------------------------------------------------ stages
    def _encode(self, x: StageInput, needed: torch.Tensor | None = None) -> torch.Tensor:
        """Projected latent for a padded stage input, tiled with overlap when it is large.

        Args:
            x: the padded stage input.
            needed: optional (Hp, Wp) bool map; tiles without a needed pixel are not encoded.
                Their latent cells are left uninitialised (untouched pages cost no memory), so a
                caller must only read cells that ``needed`` covers.
        """
        height, width = x.shape
        tile, margin = (self.roi_tile_size, self.roi_tile_margin) if needed is not None else (
            self.tile_size, self.tile_margin)
        if height <= tile and width <= tile:
            return self._encode_tile(x.crop(0, height, 0, width))
        hidden = self.model.decoder.hidden_dim
        shape = (1, height // 2, width // 2, hidden)
        if self._unencoded_fill is None:
            g = torch.empty(shape, device=self.device)
        else:
            g = torch.full(shape, self._unencoded_fill, device=self.device)
        for y0 in range(0, height, tile):
            y1 = min(height, y0 + tile)
            cy0, cy1 = max(0, y0 - margin), min(height, y1 + margin)
            for x0 in range(0, width, tile):
                x1 = min(width, x0 + tile)
                if needed is not None and not bool(needed[y0:y1, x0:x1].any()):
                    continue
                cx0, cx1 = max(0, x0 - margin), min(width, x1 + margin)
                part = self._encode_tile(x.crop(cy0, cy1, cx0, cx1))
                g[:, y0 // 2:y1 // 2, x0 // 2:x1 // 2] = part[
                    :, (y0 - cy0) // 2:(y1 - cy0) // 2, (x0 - cx0) // 2:(x1 - cx0) // 2
                ]
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
        if (hs, ws) != (height, width):
            interpolation = cv2.INTER_AREA if hs < height else cv2.INTER_LINEAR
            stage_rgb = cv2.resize(image, (ws, hs), interpolation=interpolation)
        else:
            stage_rgb = image
        x = StageInput(stage_rgb, stage_mask, self.device, self.model.config.input_norm)
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

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def refine_detailed(self, image: np.ndarray, mask: np.ndarray, ratios: Sequence[float] | None = None,
                        roi: bool | None = None, full_decode: bool | None = None, *, adaptive: bool | None = None,
                        guard: bool | None = None, preset: Preset | str | None = None,
                        keep_stages: bool = False) -> RefineResult:
        """Refine and also return the schedule, timings and (with ``keep_stages``) every stage.

        Settings come from ``preset`` (a name or a Preset; default ``auto``); explicit ``ratios``
        fix the stages (no per-image choice), and the other keywords override single switches.
        With ``keep_stages`` each stage is decoded at full resolution, as the reference code does;
        otherwise intermediate stages are decoded only at the size the next stage consumes (unless
        ``full_decode``).
        """
        settings = get_preset(preset).with_ratios(ratios)
        overrides = {"roi": roi, "full_decode": full_decode, "adaptive": adaptive, "guard": guard}
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        image = check_rgb_image(image)
        mask = mask_to_float(mask)
        check_mask_fits(mask.shape, image.shape)
        height, width = mask.shape
        foreground = mask > 0.5
        ratios = settings.ratios
        first_band = None
        trust = 0.0
        if settings.adaptive:
            schedule = choose_schedule(foreground, ratios, image if settings.guard else None,
                                       min_side=self.min_stage_side)
            ratios, free_px, trust = schedule.ratios, schedule.guard_px, schedule.trust
        else:
            runs = [r for r in ratios[:-1] if min(stage_size(height, width, r)) >= self.min_stage_side]
            free_px = guard_distance((runs or ratios[-1:])[0])
            if settings.guard and foreground.any() and not foreground.all():
                trust = trust_from_alignment(edge_alignment(image, foreground))
        if settings.guard and settings.roi:
            # Beyond GUARD_BAND x the free distance the guard needs near-certainty to change anything,
            # so the first stage is decoded only inside that band (the rest keeps the coarse mask).
            first_band = GUARD_BAND * free_px
        result = RefineResult(probability=np.empty(0, np.float32), ratios=ratios,
                              guard_px=free_px if settings.guard else None, trust=trust if settings.guard else 0.0)
        if not foreground.any() or foreground.all():
            # Empty mask -> empty output, full mask -> full output: there is no boundary to refine.
            result.probability = foreground.astype(np.float32)
            result.stages = [result.probability] * len(ratios) if keep_stages else []
            result.timings = [StageTiming(r, 0.0, 0.0) for r in ratios]
            return result
        current = torch.from_numpy(mask).to(self.device).view(1, 1, height, width)
        stages_run = 0  # the first stage that runs sees the whole image (or the guard's band)
        for k, ratio in enumerate(ratios):
            last = k == len(ratios) - 1
            if not last and min(stage_size(height, width, ratio)) < self.min_stage_side:
                result.timings.append(StageTiming(ratio, 0.0, 0.0))
                if keep_stages:
                    result.stages.append(resize_probability(current, (height, width))[0, 0].float().cpu().numpy())
                continue
            at_full_size = last or keep_stages or settings.full_decode
            target = (height, width) if at_full_size else stage_size(height, width, ratios[k + 1])
            if stages_run == 0:
                current, timing = self._stage(image, current, ratio, target, roi=first_band is not None,
                                              band_px=first_band)
            else:
                current, timing = self._stage(image, current, ratio, target, roi=settings.roi)
            stages_run += 1
            result.timings.append(timing)
            if keep_stages and not last:
                result.stages.append(current[0, 0].float().cpu().numpy())
        result.probability = current[0, 0].float().cpu().numpy()
        if settings.guard:
            result.probability, result.guard_restored = apply_guard(result.probability, foreground, free_px,
                                                                    base=trust)
        if keep_stages:
            result.stages.append(result.probability)
        return result

    def refine(self, image: np.ndarray, mask: np.ndarray, ratios: Sequence[float] | None = None,
               roi: bool | None = None, full_decode: bool | None = None, *, adaptive: bool | None = None,
               guard: bool | None = None, preset: Preset | str | None = None) -> np.ndarray:
        """Refine a coarse mask; returns a float32 probability map (H, W) in [0, 1].

        Args:
            image: (H, W, 3) uint8 RGB.
            mask: (H, W) coarse mask: uint8 0-255, uint16, bool or float in [0, 1].
            ratios: fixed increasing stage ratios (the last one is usually 1.0) instead of the
                preset's per-image choice.
            roi, full_decode, adaptive, guard: override one switch of the preset (see ``Preset``).
            preset: ``"auto"`` (default), ``"fast"``, ``"balanced"``, ``"quality"`` or a Preset.
        """
        return self.refine_detailed(image, mask, ratios, roi, full_decode, adaptive=adaptive, guard=guard,
                                    preset=preset).probability


def resize_probability(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (1, 1, h, w) map, antialiased when shrinking."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    shrink = size[0] < mask.shape[-2] or size[1] < mask.shape[-1]
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=shrink).clamp_(0, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
