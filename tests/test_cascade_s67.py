"""crm train --cascade: a share of the samples gets the model's own half-size refinement as its coarse mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, write_training_pairs
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.config import ArchConfig
from crm_cli.model import build_crm
from crm_cli.training.loop import Trainer, cascade_choice, cascaded_masks
from crm_cli.training.options import OBJECTIVE_FIELDS, TrainOptions
from crm_cli.transforms import network_input


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_pairs(tmp_path_factory.mktemp("data"), 6, lambda k: (120 + 8 * k, 150), name="c{:02d}")


def _options(data: Path, out: Path, cascade: float, steps: int = 3) -> TrainOptions:
    return TrainOptions(data=str(data), out=str(out), encoder="mobilenet_v2", steps=steps, batch=2, seed=5,
                        val_every=1000, ckpt_every=1000, val_images=2, arch=dict(TINY_ARCH), query_window=96,
                        cascade=cascade)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_crm(ArchConfig.from_dict(dict(TINY_ARCH)))
    with torch.no_grad():  # BN statistics away from their defaults, so eval mode is told from train mode
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def _block_mean(x: np.ndarray) -> np.ndarray:
    """Naive 2x2 block means of (..., H, W) with even sides."""
    return 0.25 * (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2])


def _antialiased_half(x: np.ndarray) -> np.ndarray:
    """Naive halving of (H, W) with even sides by a triangle filter twice as wide as a pixel (bilinear,
    antialiased), taps outside the map dropped and the rest renormalised, one output pixel at a time."""
    h, w = x.shape

    def weights(n_in: int, i: int) -> np.ndarray:
        centre = (i + 0.5) * 2
        taps = np.array([max(0.0, 1 - abs(j + 0.5 - centre) / 2) for j in range(n_in)])
        return taps / taps.sum()

    col_weights = [weights(w, j) for j in range(w // 2)]
    out = np.zeros((h // 2, w // 2), np.float64)
    for i in range(h // 2):
        row_weights = weights(h, i)
        for j in range(w // 2):
            out[i, j] = row_weights @ x @ col_weights[j]
    return out


def _enlarge_twice(x: np.ndarray) -> np.ndarray:
    """Naive pixel-centred bilinear enlargement of (h, w) to (2h, 2w), edges clamped, loop by loop."""
    h, w = x.shape
    out = np.zeros((2 * h, 2 * w), np.float64)
    for i in range(2 * h):
        y = min(max((i + 0.5) / 2 - 0.5, 0.0), h - 1)
        y0 = int(np.floor(y))
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(2 * w):
            xx = min(max((j + 0.5) / 2 - 0.5, 0.0), w - 1)
            x0 = int(np.floor(xx))
            x1, fx = min(x0 + 1, w - 1), xx - x0
            top = (1 - fx) * x[y0, x0] + fx * x[y0, x1]
            bottom = (1 - fx) * x[y1, x0] + fx * x[y1, x1]
            out[i, j] = (1 - fy) * top + fy * bottom
    return out


def test_choice_is_a_function_of_seed_and_step_with_the_share_asked() -> None:
    assert not cascade_choice(12, 0.0, 3, 10).any()
    assert cascade_choice(12, 1.0, 3, 10).all()
    torch.testing.assert_close(cascade_choice(12, 0.5, 3, 10), cascade_choice(12, 0.5, 3, 10))
    draws = torch.stack([cascade_choice(12, 0.5, 3, step) for step in range(200)])
    assert 0.45 < draws.float().mean().item() < 0.55
    assert len({tuple(row.tolist()) for row in draws}) > 150  # steps draw anew
    assert not torch.equal(draws, torch.stack([cascade_choice(12, 0.5, 4, step) for step in range(200)]))


def test_choice_leaves_the_global_random_stream_alone() -> None:
    torch.manual_seed(11)
    expected = torch.rand(4)
    torch.manual_seed(11)
    cascade_choice(12, 0.5, 3, 7)
    torch.testing.assert_close(torch.rand(4), expected)


def test_cascaded_masks_match_a_naive_reference_and_keep_the_others() -> None:
    model = _model()
    generator = torch.Generator().manual_seed(2)
    rgb = torch.rand(3, 3, 32, 48, generator=generator)
    coarse = (torch.rand(3, 1, 32, 48, generator=generator) > 0.5).float()
    chosen = torch.tensor([True, False, True])
    out = cascaded_masks(model, rgb, coarse, chosen, model.config.input_norm)
    assert out.shape == coarse.shape and out.dtype == coarse.dtype and not out.requires_grad
    torch.testing.assert_close(out[1], coarse[1], rtol=0, atol=0)  # not chosen: the coarse mask itself
    assert torch.equal(coarse, (coarse > 0.5).float())  # the batch's own tensor is not written to
    model.eval()
    for k in (0, 2):
        small_rgb = torch.from_numpy(_block_mean(rgb[k].numpy())).unsqueeze(0)
        small_mask = torch.from_numpy(_antialiased_half(coarse[k, 0].double().numpy())).float()[None, None]
        # The engine's reduction, not a 2x2 block mean (session 67's): the reference tells them apart.
        assert np.abs(small_mask[0, 0].numpy() - _block_mean(coarse[k, 0].numpy())).max() > 0.1
        with torch.no_grad():
            prob = torch.sigmoid(model(network_input(small_rgb, small_mask, *model.config.input_norm)))[0]
        expected = _enlarge_twice(prob.double().numpy())
        np.testing.assert_allclose(out[k, 0].numpy(), expected, atol=1e-5)
        assert 0 < out[k].min() and out[k].max() < 1  # soft, as a stage's output is


def test_cascade_pass_runs_in_eval_mode_and_restores_the_mode() -> None:
    model = _model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rgb, coarse = torch.rand(2, 3, 16, 16), torch.ones(2, 1, 16, 16)
    first = cascaded_masks(model, rgb, coarse, torch.tensor([True, True]), model.config.input_norm)
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():  # BN running statistics untouched
        assert torch.equal(value, before[key]), key
    torch.testing.assert_close(first, cascaded_masks(model, rgb, coarse, torch.tensor([True, True]),
                                                     model.config.input_norm))
    model.eval()
    cascaded_masks(model, rgb, coarse, torch.tensor([True, False]), model.config.input_norm)
    assert not model.training


def test_nothing_chosen_returns_the_coarse_masks_untouched() -> None:
    model = _model()
    coarse = torch.rand(2, 1, 8, 8)
    assert cascaded_masks(model, torch.rand(2, 3, 8, 8), coarse, torch.tensor([False, False]),
                          model.config.input_norm) is coarse


def test_train_step_feeds_the_cascaded_masks(tiny_dataset: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import crm_cli.training.loop as loop

    seen: list[torch.Tensor] = []
    real = loop.cascaded_masks

    def spy(model: torch.nn.Module, rgb: torch.Tensor, coarse: torch.Tensor, chosen: torch.Tensor,
            norm: tuple) -> torch.Tensor:
        seen.append(chosen.clone())
        return real(model, rgb, coarse, chosen, norm)

    monkeypatch.setattr(loop, "cascaded_masks", spy)
    off = Trainer(_options(tiny_dataset, tmp_path / "off", 0.0))
    off.train_step()
    assert seen == []  # off: not called, so runs from before the option are unchanged
    on = Trainer(_options(tiny_dataset, tmp_path / "on", 1.0))
    batch = on.step_batches[0].batch
    loss_on = on.train_step(batch)["loss"]
    assert len(seen) == 1 and seen[0].all()
    same = Trainer(_options(tiny_dataset, tmp_path / "same", 0.0))
    assert same.train_step(batch)["loss"] != pytest.approx(loss_on)  # other input masks, another loss
    again = Trainer(_options(tiny_dataset, tmp_path / "again", 1.0))
    assert again.train_step(batch)["loss"] == pytest.approx(loss_on, abs=0)  # deterministic


def test_resume_refuses_another_cascade_share(tiny_dataset: Path, tmp_path: Path) -> None:
    assert "cascade" in OBJECTIVE_FIELDS
    first = Trainer(_options(tiny_dataset, tmp_path / "r", 0.5))
    first.train_step()
    first.save_checkpoint()
    with pytest.raises(ValueError, match="--cascade 0.5.*resume with the same objective"):
        Trainer(_options(tiny_dataset, tmp_path / "r", 0.0)).resume()
    assert Trainer(_options(tiny_dataset, tmp_path / "r", 0.5)).resume()


def test_resume_with_cascade_is_exact(tiny_dataset: Path, tmp_path: Path) -> None:
    straight = Trainer(_options(tiny_dataset, tmp_path / "a", 0.5, steps=4))
    for _ in range(4):
        straight.train_step()
    first = Trainer(_options(tiny_dataset, tmp_path / "b", 0.5, steps=4))
    for _ in range(2):
        first.train_step()
    first.save_checkpoint()
    resumed = Trainer(_options(tiny_dataset, tmp_path / "b", 0.5, steps=4))
    assert resumed.resume()
    for _ in range(2):
        resumed.train_step()
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.parametrize("value", ["-0.1", "1.5", "nan"])
def test_cli_refuses_a_share_outside_zero_to_one(tiny_dataset: Path, tmp_path: Path, value: str) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "o"),
                                      "--cascade", value])
    assert result.exit_code == 2, result.output
    assert "--cascade" in result.output
