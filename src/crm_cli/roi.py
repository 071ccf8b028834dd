"""Region-of-interest maps for CRM* decoding: which pixels to decode and which tiles to encode.

Band rule: a pixel is decoded when it lies within ``radius`` pixels (Chebyshev distance) of a
pixel whose incoming probability is uncertain (between ROI_LOW and ROI_HIGH) or that sits on the
0.5 boundary (its 3x3 neighbourhood holds both sides). Every other pixel keeps the incoming
mask's upsampled value.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROI_LOW, ROI_HIGH = 0.02, 0.98


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of a (H, W) bool map by a (2 radius + 1)^2 square.

    On the CPU this goes through OpenCV: torch's CPU max-pool is about 100x slower at 4K and was
    a third of the whole refinement's time.
    """
    if radius <= 0:
        return mask.clone()
    if mask.device.type == "cpu":
        kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
        grown = cv2.dilate(mask.to(torch.uint8).numpy(), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        return torch.from_numpy(grown).bool()
    pooled = F.max_pool2d(mask.float()[None, None], 2 * radius + 1, stride=1, padding=radius)
    return pooled[0, 0] > 0


def roi_band(prob: torch.Tensor, radius: int) -> torch.Tensor:
    """Bool (H, W) map of the pixels to decode in ROI mode (see the module's band rule)."""
    uncertain = (prob > ROI_LOW) & (prob < ROI_HIGH)
    foreground = prob > 0.5
    # Dilation minus erosion: pixels whose 3x3 neighbourhood holds both sides of the boundary.
    edge = dilate(foreground, 1) & dilate(~foreground, 1)
    return dilate(uncertain | edge, radius)


def band_to_stage_input(band: torch.Tensor, stage_hw: tuple[int, int], padded_hw: tuple[int, int],
                        pad: int) -> torch.Tensor:
    """Where a target-grid band lands on the padded stage input (``pad`` px on top/left), grown by
    4 px (2 latent cells) so that every support cell of a band pixel is encoded."""
    if band.shape[0] >= stage_hw[0] and band.device.type == "cpu":
        # Area averaging is positive exactly where an adaptive max-pool bin holds a band pixel
        # (checked in the tests), and OpenCV does it several times faster.
        area = cv2.resize(band.numpy().astype(np.float32), stage_hw[::-1], interpolation=cv2.INTER_AREA)
        small = torch.from_numpy(area) > 0
    elif band.shape[0] >= stage_hw[0]:
        small = F.adaptive_max_pool2d(band[None, None].float(), stage_hw)[0, 0] > 0
    else:
        small = F.interpolate(band[None, None].float(), size=stage_hw, mode="nearest")[0, 0] > 0
    padded = torch.zeros(padded_hw, dtype=torch.bool, device=band.device)
    padded[pad:pad + stage_hw[0], pad:pad + stage_hw[1]] = small
    return dilate(padded, 4)
