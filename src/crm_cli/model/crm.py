"""CRMNet: encoder + multi-scale fusion to a stride-2 latent + the implicit decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ArchConfig
from .decoder import ImplicitDecoder
from .encoders import build_encoder


def _conv_bn_relu(cin: int, cout: int, kernel: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Fusion(nn.Module):
    """Project the three taps, upsample to the stride-2 grid, concatenate and mix with a 3x3."""

    def __init__(self, in_dims: tuple[int, int, int], config: ArchConfig) -> None:
        super().__init__()
        self.projections = nn.ModuleList(
            _conv_bn_relu(cin, cout, 1) for cin, cout in zip(in_dims, config.skip_dims, strict=True)
        )
        concat = sum(config.skip_dims)
        if config.fusion == "conv3x3":
            self.mix = _conv_bn_relu(concat, config.latent_dim, 3)
        elif config.fusion == "separable":
            self.mix = nn.Sequential(
                _conv_bn_relu(concat, concat, 3, groups=concat), _conv_bn_relu(concat, config.latent_dim, 1)
            )
        else:
            raise ValueError(f"unknown fusion {config.fusion!r}")
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, taps: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The encoder's taps (strides 2, 4, 8) -> F_latent (B, latent_dim, H/2, W/2) on the first tap's grid."""
        size = taps[0].shape[-2:]
        parts = []
        for tap, projection in zip(taps, self.projections, strict=True):
            x = projection(tap)
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            parts.append(x)
        return self.dropout(self.mix(torch.cat(parts, dim=1)))


class CRMNet(nn.Module):
    """The Continuous Refinement Model.

    ``encode(x)`` maps a (B, 4, H, W) input (normalised RGB + mask in [-1, 1]) to the projected
    latent G (B, H/2, W/2, hidden); ``decoder.decode`` queries it at any target resolution.
    """

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config)
        self.fusion = Fusion(self.encoder.out_dims, config)
        self.decoder = ImplicitDecoder(config.latent_dim, config.hidden_dim, config.hidden_layers)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """F_latent (B, latent_dim, H/2, W/2)."""
        return self.fusion(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Projected latent G (B, H/2, W/2, hidden), ready for decoding."""
        return self.decoder.project(self.latent(x))

    def forward(self, x: torch.Tensor, window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """Training geometry: logits on the input's own grid, no padding.

        Args:
            x: (B, 4, H, W) network input.
            window: optional (top, bottom, left, right) query window; default the whole grid.

        Returns:
            (B, bottom - top, right - left) logits.
        """
        g = self.encode(x)
        height, width = x.shape[-2:]
        top, bottom, left, right = window or (0, height, 0, width)
        rows = self.decoder.axis_table(height, height, g.shape[1], 0, axis=0)
        cols = self.decoder.axis_table(width, width, g.shape[2], 0, axis=1).narrow(left, right)
        return self.decoder.decode_rows(g, rows, cols, top, bottom)
