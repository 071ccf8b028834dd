"""Our MobileNetV2 blocks against torchvision's: same state-dict keys, shapes and outputs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from crm_cli.model.mobilenet import mobilenet_v2_features, round_channels


def test_round_channels_by_hand() -> None:
    assert [round_channels(v) for v in (32, 8, 16 * 0.25, 24 * 0.25, 96 * 0.25, 1280 * 0.5, 20, 13)] == \
        [32, 8, 8, 8, 24, 640, 24, 16]


@pytest.mark.parametrize("width_mult", [1.0, 0.25, 0.75])
def test_features_match_torchvision(width_mult: float) -> None:
    torchvision_models = pytest.importorskip("torchvision.models")
    reference = torchvision_models.mobilenet_v2(width_mult=width_mult).features.eval()
    ours = mobilenet_v2_features(width_mult).eval()
    ref_state, our_state = reference.state_dict(), ours.state_dict()
    assert list(our_state) == list(ref_state)
    assert all(our_state[k].shape == ref_state[k].shape for k in ref_state)
    for value in ref_state.values():
        if value.is_floating_point():
            value.uniform_(0.5, 1.0) if value.dim() == 1 else value.normal_(0.0, 0.1)
    ours.load_state_dict(ref_state, strict=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-4, rtol=1e-4)


def test_building_the_shipped_encoder_does_not_import_torchvision() -> None:
    code = ("import sys; from crm_cli.checkpoint import default_weights_path, load_model; "
            "load_model(default_weights_path()); print('torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
