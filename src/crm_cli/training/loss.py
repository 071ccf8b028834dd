"""The CRM training loss: BCE + L1 + L2 + gradient L1 (DESIGN §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSS_WEIGHTS = {"bce": 1.0, "l1": 0.5, "l2": 0.5, "grad": 2.0}


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


def crm_loss(logits: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its terms for logits (B, H, W) against a soft GT (B, H, W) in [0, 1]."""
    prob = torch.sigmoid(logits)
    terms = {
        "bce": F.binary_cross_entropy_with_logits(logits, (gt > 0.5).to(logits.dtype)),
        "l1": (prob - gt).abs().mean(),
        "l2": (prob - gt).pow(2).mean(),
        "grad": (gradient_magnitude(prob) - gradient_magnitude(gt)).abs().mean(),
    }
    total = sum(LOSS_WEIGHTS[k] * v for k, v in terms.items())
    return total, {k: float(v.detach()) for k, v in terms.items()}
