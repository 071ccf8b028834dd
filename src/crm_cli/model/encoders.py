"""Encoders: 4-channel (RGB + mask) backbones returning taps at strides 2, 4 and 8.

``resnet50`` and ``mobilenet_v2`` need only torch (ResNet-50 also torchvision); the
``efficientnet_lite0/1/2`` encoders are built with timm, imported when one is built.

Each encoder is registered by name; ``build_encoder(config)`` picks one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EFFICIENTNET_LITE_ENCODERS, ArchConfig
from .mobilenet import mobilenet_v2_features

EncoderFactory = Callable[[ArchConfig], "Encoder"]
_ENCODERS: dict[str, EncoderFactory] = {}


def register_encoder(name: str) -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator that adds an encoder factory to the registry."""

    def wrap(factory: EncoderFactory) -> EncoderFactory:
        _ENCODERS[name] = factory
        return factory

    return wrap


def encoder_names() -> list[str]:
    """Names of all registered encoders."""
    return sorted(_ENCODERS)


def build_encoder(config: ArchConfig) -> Encoder:
    """Build the encoder named by ``config.encoder``."""
    if config.encoder not in _ENCODERS:
        raise ValueError(f"unknown encoder {config.encoder!r}; choose from {encoder_names()}")
    return _ENCODERS[config.encoder](config)


class Encoder(nn.Module):
    """Base class: ``forward(x)`` returns ``(x1, x2, x3)`` at strides 2, 4, 8."""

    out_dims: tuple[int, int, int]

    def widen_stem_from_rgb(self, rgb_weight: torch.Tensor) -> None:
        """Copy 3-channel stem weights into the 4-channel stem; the mask channel starts at zero."""
        stem = self.stem_conv()
        with torch.no_grad():
            stem.weight.zero_()
            stem.weight[:, :3] = rgb_weight

    def stem_conv(self) -> nn.Conv2d:
        """The first convolution, whose input is the 4-channel network input (RGB + mask)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 4, H, W) network input -> the taps at strides 2, 4 and 8 (``out_dims`` channels)."""
        raise NotImplementedError


class ResNet50Encoder(Encoder):
    """The paper's encoder: ResNet-50 layers 1-3, layer3 dilated (stride 8), no layer4."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet50

        net = resnet50(replace_stride_with_dilation=[False, True, False])
        net.conv1 = nn.Conv2d(4, 64, 7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.out_dims = (64, 256, 1024)

    def stem_conv(self) -> nn.Conv2d:
        """conv1, the 7x7 stride-2 stem."""
        return self.conv1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 4, H, W) -> taps after the stem (stride 2), layer1 (4) and the dilated layer3 (8)."""
        x1 = self.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(self.maxpool(x1))
        x3 = self.layer3(self.layer2(x2))
        return x1, x2, x3


class MobileNetV2Encoder(Encoder):
    """MobileNetV2's feature blocks (torchvision layout, see ``mobilenet.py``) with a 4-channel stem.

    Taps: after block 1 (stride 2), block 3 (stride 4) and block 13 (stride 16, 96 ch), the last
    upsampled x2 so the deepest tap sits at stride 8. Blocks 14-18 are not built.
    """

    def __init__(self, width_mult: float = 1.0) -> None:
        super().__init__()
        features = mobilenet_v2_features(width_mult)
        stem = features[0][0]
        features[0][0] = nn.Conv2d(4, stem.out_channels, 3, stride=2, padding=1, bias=False)
        self.stage1 = features[0:2]
        self.stage2 = features[2:4]
        self.stage3 = features[4:14]
        self.out_dims = (
            _last_out_channels(self.stage1),
            _last_out_channels(self.stage2),
            _last_out_channels(self.stage3),
        )

    def stem_conv(self) -> nn.Conv2d:
        """The stem block's 3x3 stride-2 convolution."""
        return self.stage1[0][0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 4, H, W) -> taps at strides 2, 4 and 8 (the stride-16 block upsampled x2)."""
        x1 = self.stage1(x)
        x2 = self.stage2(x1)
        x3 = self.stage3(x2)
        x3 = F.interpolate(x3, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x1, x2, x3


class EfficientNetLiteEncoder(Encoder):
    """timm's ``tf_efficientnet_lite*`` feature blocks (TF 'same' padding, BN eps 1e-3) with a 4-channel stem.

    Taps follow the MobileNetV2 encoder: the ends of the stride-2 and stride-4 stages, and the end
    of the last stride-16 stage (112 channels in lite0, like MobileNetV2's 96-channel block 13),
    upsampled x2 to stride 8. The stride-32 stages are dropped. State-dict keys are timm's
    (``conv_stem``, ``bn1``, ``blocks.S.I...``), so converted ImageNet weights load directly.
    """

    # Reductions of the three taps, as timm's ``feature_info`` reports them.
    TAP_REDUCTIONS = (2, 4, 16)

    def __init__(self, variant: str) -> None:
        super().__init__()
        import timm  # imported here only: timm pulls in torchvision, which MobileNetV2 inference avoids

        self.variant = variant
        net = timm.create_model(f"tf_{variant}", pretrained=False, features_only=True, in_chans=4)
        info = {entry["reduction"]: entry for entry in net.feature_info.get_dicts()}
        # Tap modules are named "blocks.S" (S = stage index); keep the stages up to the deepest tap.
        stages = [int(info[r]["module"].split(".")[1]) for r in self.TAP_REDUCTIONS]
        self.tap_stages = tuple(stages)
        self.conv_stem, self.bn1 = net.conv_stem, net.bn1
        self.blocks = nn.Sequential(*list(net.blocks)[: stages[-1] + 1])
        self.out_dims = tuple(int(info[r]["num_chs"]) for r in self.TAP_REDUCTIONS)  # type: ignore[assignment]

    def stem_conv(self) -> nn.Conv2d:
        """timm's conv_stem, the 3x3 stride-2 stem."""
        return self.conv_stem

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, 4, H, W) -> taps at strides 2, 4 and 8 (the stride-16 stage upsampled x2)."""
        x = self.bn1(self.conv_stem(x))
        taps = []
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index in self.tap_stages:
                taps.append(x)
        x1, x2, x3 = taps
        x3 = F.interpolate(x3, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x1, x2, x3


def _last_out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


@register_encoder("resnet50")
def _build_resnet50(config: ArchConfig) -> Encoder:
    if config.width_mult != 1.0:
        raise ValueError("resnet50 supports width_mult=1.0 only")
    return ResNet50Encoder()


@register_encoder("mobilenet_v2")
def _build_mobilenet_v2(config: ArchConfig) -> Encoder:
    return MobileNetV2Encoder(config.width_mult)


def _efficientnet_lite_factory(variant: str) -> EncoderFactory:
    def build(config: ArchConfig) -> Encoder:
        if config.width_mult != 1.0:
            raise ValueError(f"{variant} supports width_mult=1.0 only")
        return EfficientNetLiteEncoder(variant)

    return build


for _variant in EFFICIENTNET_LITE_ENCODERS:
    register_encoder(_variant)(_efficientnet_lite_factory(_variant))
