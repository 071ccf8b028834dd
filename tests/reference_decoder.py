"""A literal, slow implementation of CRM's continuous alignment + implicit decoder (DESIGN §1).

It follows the paper step by step, in float64: normalised pixel-centre coordinates, each target
pixel shifted by +-half a feature cell per axis, the nearest (clamped) cell as support, the full
(C + 6)-wide MLP input per support, and area weights taken from the diagonally opposite support.
It shares no code with the production decoder.
"""

from __future__ import annotations

import torch

TIE_SHIFT = 1e-9  # in normalised coordinates: far below a cell (2 / h), far above float64 rounding


def centres(n: int) -> torch.Tensor:
    """Pixel-centre coordinates in (-1, 1) for an axis of length n."""
    return -1.0 + (2.0 * torch.arange(n, dtype=torch.float64) + 1.0) / n


def naive_decode(layers: torch.nn.ModuleList, latent: torch.Tensor, target_hw: tuple[int, int],
                 stage_hw: tuple[int, int], pad: int) -> torch.Tensor:
    """Logits (B, H, W) for a latent F (B, C, h, w) covering a stage input padded by ``pad``.

    The latent grid spans the padded stage input (h = padded height / 2). Target pixels are
    placed in that frame: stage-pixel position ``(i + 0.5) * hs / H + pad``.
    """
    batch, channels, h, w = latent.shape
    height, width = target_hw
    hs, ws = stage_hw
    latent = latent.double()

    def frame_coords(n_target: int, n_stage: int, n_latent: int) -> torch.Tensor:
        stage_pos = (torch.arange(n_target, dtype=torch.float64) + 0.5) * n_stage / n_target + pad
        return -1.0 + 2.0 * stage_pos / (2 * n_latent)  # normalised over the padded extent

    uy, ux = frame_coords(height, hs, h), frame_coords(width, ws, w)
    cy_cells, cx_cells = centres(h), centres(w)
    target_y, target_x = centres(height), centres(width)

    logits_per_support = []
    areas = []
    for vy in (-1, 1):
        for vx in (-1, 1):
            # A tiny shift (as LIIF's): a pixel exactly on a cell's centre has its +-half-cell points exactly
            # on cell edges, where rounding could send both to one neighbour and skip the cell itself.
            sy = (uy + vy / h + TIE_SHIFT).clamp(-1 + 1e-6, 1 - 1e-6)
            sx = (ux + vx / w + TIE_SHIFT).clamp(-1 + 1e-6, 1 - 1e-6)
            # Nearest cell: the cell whose extent contains the shifted point.
            jy = torch.floor((sy + 1) / 2 * h).long().clamp(0, h - 1)
            jx = torch.floor((sx + 1) / 2 * w).long().clamp(0, w - 1)
            rel_y = (uy - cy_cells[jy]) * h  # (H,)
            rel_x = (ux - cx_cells[jx]) * w  # (W,)
            feature = latent[:, :, jy][:, :, :, jx]  # (B, C, H, W)
            grid_y = lambda v: v.view(1, 1, -1, 1).expand(batch, 1, height, width)  # noqa: E731
            grid_x = lambda v: v.view(1, 1, 1, -1).expand(batch, 1, height, width)  # noqa: E731
            inputs = torch.cat([
                feature,
                grid_y(rel_y), grid_x(rel_x),
                grid_y(target_y), grid_x(target_x),
                torch.full((batch, 1, height, width), hs / height, dtype=torch.float64),
                torch.full((batch, 1, height, width), ws / width, dtype=torch.float64),
            ], dim=1).permute(0, 2, 3, 1)  # (B, H, W, C + 6)
            x = inputs
            for k, layer in enumerate(layers):
                x = x @ layer.weight.double().t() + layer.bias.double()
                if k < len(layers) - 1:
                    x = torch.relu(x)
            logits_per_support.append(x[..., 0])
            areas.append((rel_y.view(-1, 1) * rel_x.view(1, -1)).abs() + 1e-9)
    total = sum(areas)
    # Support k is weighted by the area of the diagonally opposite support: 0<->3, 1<->2.
    return sum(logits_per_support[k] * areas[3 - k] / total for k in range(4))
