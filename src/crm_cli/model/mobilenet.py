"""MobileNetV2's feature blocks, built here so that inference never imports torchvision.

Importing torchvision costs about 1.4 s of a 6 s ``crm refine`` on a 2-core CPU. The modules below
have the same structure, names and widths as ``torchvision.models.mobilenet_v2().features``, so
state dicts are interchangeable (a test checks keys, shapes and outputs against torchvision).
"""

from __future__ import annotations

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s), from the MobileNetV2 paper.
BLOCK_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def round_channels(value: float, divisor: int = 8) -> int:
    """Width rounding of MobileNet: nearest multiple of ``divisor``, never more than 10% below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU6, children named 0, 1, 2."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )
        self.out_channels = cout


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear projection (1x1), with a skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(cin * expansion)
        layers: list[nn.Module] = [] if expansion == 1 else [ConvBNReLU6(cin, hidden, kernel=1)]
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout
        self.out_channels = cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output, plus ``x`` itself when the block keeps the shape (stride 1, same width)."""
        y = self.conv(x)
        return x + y if self.use_res_connect else y


def mobilenet_v2_features(width_mult: float = 1.0) -> nn.Sequential:
    """All 19 feature blocks (stem, 17 inverted residuals, last 1x1 conv), randomly initialised."""
    cin = round_channels(STEM_CHANNELS * width_mult)
    blocks: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
    for expansion, channels, repeats, stride in BLOCK_SETTINGS:
        cout = round_channels(channels * width_mult)
        for k in range(repeats):
            blocks.append(InvertedResidual(cin, cout, stride if k == 0 else 1, expansion))
            cin = cout
    blocks.append(ConvBNReLU6(cin, round_channels(LAST_CHANNELS * max(1.0, width_mult)), kernel=1))
    features = nn.Sequential(*blocks)
    _initialise(features)
    return features


def _initialise(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan out), unit BatchNorm: a sane start without ImageNet weights."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
