"""Architecture configuration: the spec that travels inside every checkpoint.

This module imports nothing heavy so the CLI can read configs without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_RATIOS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchConfig:
    """Everything needed to rebuild a CRMNet.

    Attributes:
        encoder: registered encoder name (``resnet50`` or ``mobilenet_v2``).
        skip_dims: widths of the 1x1 projections of the stride 2 / 4 / 8 taps.
        latent_dim: channels of the fused latent map F_latent (stride 2).
        fusion: ``conv3x3`` (paper) or ``separable`` (depthwise 3x3 + pointwise, cheaper).
        hidden_dim: width of the implicit MLP.
        hidden_layers: number of hidden layers of the implicit MLP.
        dropout: dropout after the fusion conv, active in training only.
        width_mult: encoder width multiplier (tests use tiny encoders).
    """

    encoder: str = "resnet50"
    skip_dims: tuple[int, int, int] = (64, 64, 128)
    latent_dim: int = 256
    fusion: str = "conv3x3"
    hidden_dim: int = 32
    hidden_layers: int = 4
    dropout: float = 0.5
    width_mult: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the config."""
        data = asdict(self)
        data["skip_dims"] = list(self.skip_dims)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Rebuild a config, refusing unknown keys so a bad checkpoint fails loudly."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown architecture keys: {sorted(unknown)}")
        values = dict(data)
        if "skip_dims" in values:
            values["skip_dims"] = tuple(int(v) for v in values["skip_dims"])
        return cls(**values)

    @property
    def decoder_input_dim(self) -> int:
        """Width of the implicit MLP input: feature + rel. coord + coord + rel. cell."""
        return self.latent_dim + 6


PRESET_ARCHS: dict[str, ArchConfig] = {
    # The paper configuration (DESIGN §1).
    "resnet50": ArchConfig(),
    # The CPU-friendly configuration: MobileNetV2 taps, narrower fusion.
    "mobilenet_v2": ArchConfig(
        encoder="mobilenet_v2", skip_dims=(32, 32, 64), latent_dim=64, fusion="separable", dropout=0.1
    ),
}


@dataclass
class Provenance:
    """How a checkpoint was made; stored beside the weights."""

    command: str = ""
    data: str = ""
    steps: int = 0
    init: str = ""
    scores: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
