"""The fast decoder (split first layer, separable coordinates, row bands) against the literal one."""

from __future__ import annotations

import math

import pytest
import torch
from reference_decoder import naive_decode

from crm_cli.model import ImplicitDecoder, axis_geometry

PAD = 32


def random_decoder(seed: int, latent_dim: int = 256) -> ImplicitDecoder:
    torch.manual_seed(seed)
    decoder = ImplicitDecoder(latent_dim, 32, 4)
    with torch.no_grad():
        for layer in decoder.layers:
            layer.weight.normal_(0, 1.0 / math.sqrt(layer.in_features))
            layer.bias.normal_(0, 0.5)
    return decoder


def padded_latent_size(n_stage: int, pad: int = PAD, multiple: int = 16) -> int:
    padded = n_stage + 2 * pad
    padded += (-padded) % multiple
    return padded // 2


def test_paper_mlp_shape() -> None:
    decoder = ImplicitDecoder(256, 32, 4)
    assert decoder.layers[0].in_features == 262
    assert sum(p.numel() for p in decoder.parameters()) == 11_617


@pytest.mark.parametrize("ratio", [0.125, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("size", [(37, 53), (64, 31), (101, 77)])
def test_fast_decoder_matches_literal_reference(ratio: float, size: tuple[int, int]) -> None:
    height, width = size
    hs, ws = max(1, round(height * ratio)), max(1, round(width * ratio))
    decoder = random_decoder(seed=hash((ratio, size)) % 1000)
    torch.manual_seed(1)
    latent = torch.randn(2, 256, padded_latent_size(hs), padded_latent_size(ws))
    with torch.no_grad():
        g = decoder.project(latent)
        # A tiny budget forces many row bands.
        fast = decoder.decode(g, (height, width), (hs, ws), PAD, budget_bytes=20_000)
        slow = naive_decode(decoder.layers, latent, (height, width), (hs, ws), PAD)
    assert fast.shape == (2, height, width)
    assert (fast.double() - slow).abs().max().item() <= 1e-4


def test_training_geometry_matches_reference_without_padding() -> None:
    decoder = random_decoder(seed=3)
    latent = torch.randn(1, 256, 12, 12)
    with torch.no_grad():
        g = decoder.project(latent)
        rows = decoder.axis_table(24, 24, 12, 0, axis=0)
        cols = decoder.axis_table(24, 24, 12, 0, axis=1)
        fast = decoder.decode_rows(g, rows, cols, 0, 24)
        slow = naive_decode(decoder.layers, latent, (24, 24), (24, 24), 0)
    assert (fast.double() - slow).abs().max().item() <= 1e-4


def test_point_decoding_equals_dense_decoding() -> None:
    decoder = random_decoder(seed=5, latent_dim=64)
    latent = torch.randn(1, 64, padded_latent_size(20), padded_latent_size(30))
    with torch.no_grad():
        g = decoder.project(latent)
        dense = decoder.decode(g, (40, 60), (20, 30), PAD)
        rows = decoder.axis_table(40, 20, g.shape[1], PAD, axis=0)
        cols = decoder.axis_table(60, 30, g.shape[2], PAD, axis=1)
        ys = torch.tensor([0, 5, 39, 17, 22])
        xs = torch.tensor([0, 59, 3, 30, 31])
        points = decoder.decode_points(g, rows, cols, ys, xs)
    torch.testing.assert_close(points[0], dense[0, ys, xs], rtol=0, atol=1e-5)


def test_training_weights_are_nine_three_three_one() -> None:
    # 224 -> 112 training geometry: the bilinear weights are 3/4 and 1/4 per axis (DESIGN §1).
    _, _, weight, _ = axis_geometry(224, 224, 112, 0, torch.device("cpu"))
    interior = weight[:, 1:-1]
    assert set(torch.unique(torch.round(interior * 4)).tolist()) == {1.0, 3.0}
    w2d = torch.outer(weight[:, 10], weight[:, 11]).flatten().sort().values
    torch.testing.assert_close(w2d, torch.tensor([1, 3, 3, 9]) / 16.0)


def test_weights_sum_to_one_and_rel_coords_in_range() -> None:
    index, rel, weight, coord = axis_geometry(97, 13, 40, PAD, torch.device("cpu"))
    torch.testing.assert_close(weight.sum(0), torch.ones(97))
    assert rel.abs().max() <= 2.0 + 1e-6
    assert index.min() >= 0 and index.max() < 40
    assert coord[0] == pytest.approx(-1 + 1 / 97) and coord[-1] == pytest.approx(1 - 1 / 97)


def test_decoder_gradients_flow_to_latent_and_weights() -> None:
    decoder = random_decoder(seed=7, latent_dim=16)
    latent = torch.randn(1, 16, 8, 8, requires_grad=True)
    g = decoder.project(latent)
    rows = decoder.axis_table(16, 16, 8, 0, axis=0)
    cols = decoder.axis_table(16, 16, 8, 0, axis=1)
    decoder.decode_rows(g, rows, cols, 0, 16).sum().backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0
    assert all(p.grad is not None for p in decoder.parameters())
