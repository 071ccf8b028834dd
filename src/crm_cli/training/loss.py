"""The CRM training loss: BCE + L1 + L2 + gradient L1 (DESIGN §3), optionally weighted toward the
ground truth's boundary."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_WEIGHTS = {"bce": 1.0, "l1": 0.5, "l2": 0.5, "grad": 2.0}
BOUNDARY_RADIUS = 3  # px: the band around the ground truth's boundary that ``boundary_weight`` stresses


def gradient_magnitude(prob: torch.Tensor) -> torch.Tensor:
    """sqrt(gx^2 + gy^2 + 1e-4) of a 3x3 box-blurred map, with Sobel kernels divided by 4.

    Args:
        prob: (B, H, W) map.
    """
    x = F.avg_pool2d(prob.unsqueeze(1), 3, stride=1, padding=1, count_include_pad=False)
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=prob.device) / 4.0
    kernels = torch.stack([sobel_x, sobel_x.t()]).unsqueeze(1).to(prob.dtype)
    grads = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    return torch.sqrt(grads.pow(2).sum(1) + 1e-4)


def boundary_band(gt: torch.Tensor, radius: int = BOUNDARY_RADIUS) -> torch.Tensor:
    """1 where a (2 radius + 1)² square around the pixel holds both sides of ``gt > 0.5``, else 0.

    Args:
        gt: (B, H, W) soft ground truth.
    """
    binary = (gt > 0.5).to(gt.dtype).unsqueeze(1)
    size = 2 * radius + 1
    # max_pool2d pads with -inf, so the crop's own border is not taken for a boundary.
    grown = F.max_pool2d(binary, size, stride=1, padding=radius)
    shrunk = -F.max_pool2d(-binary, size, stride=1, padding=radius)
    return (grown - shrunk).squeeze(1)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum()


def crm_loss(logits: torch.Tensor, gt: torch.Tensor,
             boundary_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms for logits (B, H, W) against a soft GT (B, H, W) in [0, 1].

    With ``boundary_weight`` w > 0, the per-pixel terms (BCE, L1, L2) weigh a pixel of
    :func:`boundary_band` 1 + w times as much as any other (a weighted mean, so a crop with no
    boundary scores as before); the gradient term already lives on boundaries and is unchanged.
    """
    prob = torch.sigmoid(logits)
    weights = 1.0 + boundary_weight * boundary_band(gt) if boundary_weight > 0 else None
    bce = F.binary_cross_entropy_with_logits(logits, (gt > 0.5).to(logits.dtype), reduction="none")
    terms = {
        "bce": _weighted_mean(bce, weights),
        "l1": _weighted_mean((prob - gt).abs(), weights),
        "l2": _weighted_mean((prob - gt).pow(2), weights),
        "grad": (gradient_magnitude(prob) - gradient_magnitude(gt)).abs().mean(),
    }
    total = sum(LOSS_WEIGHTS[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
