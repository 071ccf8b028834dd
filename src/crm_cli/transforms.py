"""Tensor pre-processing shared by inference and training."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import IMAGENET_MEAN, IMAGENET_STD


def network_input(rgb: torch.Tensor, mask: torch.Tensor, rgb_mean: Sequence[float] = IMAGENET_MEAN,
                  rgb_std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Stack normalised RGB and the mask mapped to [-1, 1] into the 4-channel network input.

    Args:
        rgb: (B, 3, H, W) float in [0, 1].
        mask: (B, 1, H, W) float probability in [0, 1].
        rgb_mean, rgb_std: the encoder's normalisation (``ArchConfig.input_norm``); ImageNet's by default.
    """
    mean = torch.tensor(rgb_mean, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(rgb_std, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return torch.cat([(rgb - mean) / std, mask * 2.0 - 1.0], dim=1)
