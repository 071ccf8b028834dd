"""Exact inference speed-ups checked against their slow references: OpenCV dilation against
torch's max-pool, and BatchNorm folding against the unfolded network."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_model

from crm_cli.config import ArchConfig
from crm_cli.model import build_crm
from crm_cli.model.fold import fold_batchnorm
from crm_cli.roi import band_to_stage_input, dilate, roi_band


def reference_dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilation as a square max-pool (implicit -inf padding at the borders)."""
    return F.max_pool2d(mask.float()[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0] > 0


@pytest.mark.parametrize("radius", [0, 1, 2, 5])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (40, 61)])
def test_dilate_matches_max_pool(radius: int, shape: tuple[int, int]) -> None:
    generator = torch.Generator().manual_seed(radius * 100 + shape[1])
    mask = torch.rand(shape, generator=generator) > 0.97
    mask[0, -1] = True  # a corner pixel: the border must not wrap or replicate
    grown = dilate(mask, radius)
    assert grown.dtype == torch.bool and grown.shape == mask.shape
    assert torch.equal(grown, reference_dilate(mask, radius))


def test_dilate_of_one_pixel_is_a_clipped_square() -> None:
    mask = torch.zeros(6, 8, dtype=torch.bool)
    mask[1, 6] = True
    grown = dilate(mask, 2)
    expected = torch.zeros(6, 8, dtype=torch.bool)
    expected[0:4, 4:8] = True  # rows -1..3 and columns 4..8 clipped to the map
    assert torch.equal(grown, expected)


def test_roi_band_matches_the_max_pool_formulation() -> None:
    generator = torch.Generator().manual_seed(3)
    prob = (torch.rand(33, 47, generator=generator) > 0.5).float()
    prob[10:20, 10:20] = 0.4
    binary = (prob > 0.5).float()[None, None]
    uncertain = ((prob > 0.02) & (prob < 0.98)).float()[None, None]
    edge = F.max_pool2d(binary, 3, 1, 1) + F.max_pool2d(-binary, 3, 1, 1)
    expected = F.max_pool2d(torch.maximum(uncertain, edge), 7, 1, 3)[0, 0] > 0
    assert torch.equal(roi_band(prob, radius=3), expected)


def test_band_to_stage_input_places_the_band_inside_the_padding() -> None:
    band = torch.zeros(40, 40, dtype=torch.bool)
    band[20, 20] = True  # lands on stage cell (10, 10) at ratio 0.5
    needed = band_to_stage_input(band, (20, 20), (52, 52), pad=8)
    ys, xs = torch.nonzero(needed, as_tuple=True)
    assert (int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())) == (14, 22, 14, 22)


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)


def _count_batchnorm(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_folding_batchnorm_keeps_the_mobilenet_latent() -> None:
    model = make_tiny_model(seed=5)
    _randomise_batchnorm(model)
    folded = copy.deepcopy(model)
    count = fold_batchnorm(folded)
    assert count == _count_batchnorm(model) and _count_batchnorm(folded) == 0
    x = torch.randn(2, 4, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded.encode(x), model.encode(x), atol=1e-5, rtol=1e-4)


def test_folding_batchnorm_covers_resnet_bottlenecks() -> None:
    torch.manual_seed(0)
    model = build_crm(ArchConfig(dropout=0.0)).eval()
    _randomise_batchnorm(model)
    folded = copy.deepcopy(model)
    assert fold_batchnorm(folded) == _count_batchnorm(model)
    assert _count_batchnorm(folded) == 0
    x = torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded.encode(x), model.encode(x), atol=1e-4, rtol=1e-3)


def test_folding_refuses_a_model_in_training_mode() -> None:
    model = make_tiny_model().train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model)
