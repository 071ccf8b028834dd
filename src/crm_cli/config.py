"""Architecture configuration: the spec that travels inside every checkpoint.

This module imports nothing heavy so the CLI can read configs without torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_RATIOS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
# Images whose shorter side is below this are passed through unchanged (with a warning) instead of
# refined. Even the last stage then runs far below the model's 224-px training crop: over 24 small
# scenes (the shipped example and synthetic ones) refinement lost IoU against the ground truth on
# average at 64 px (-0.3) and 48 px (-2.0) and gained from 96 px up (+0.7; +2.1 at 128 px).
MIN_REFINE_SIDE = 96
# Why a pair's mask was written as given without the model (the records' "kept_given", beside
# engine.KEPT_GIVEN_REASONS): its photo is under MIN_REFINE_SIDE, or it is a label map holding none of the
# ids asked for.
SMALL_PHOTO, NO_LABEL = "small_photo", "no_label"
PASSED_THROUGH_REASONS = (SMALL_PHOTO, NO_LABEL)
# What `refine` can write, and how a mask is read (auto detects label maps). Kept here, free of
# heavy imports, so the CLI builds its choices without loading numpy or OpenCV.
OUTPUT_KINDS: tuple[str, ...] = ("soft", "soft16", "binary", "cutout", "overlay")
# The output kinds that carry the photo's own pixels, and so its colour profile.
PHOTO_OUTPUT_KINDS: tuple[str, ...] = ("cutout", "overlay")
# The bit depths a cut-out can be asked for in (pipeline.refine_files' cutout_bits), and the deeper one:
# a 16-bit photo's cut-out in 16 bits, which crm's commands ask for where they write PNG.
CUTOUT_BIT_DEPTHS: tuple[int, ...] = (8, 16)
DEEP_CUTOUT_BITS = 16
MODES: tuple[str, ...] = ("auto", "binary", "labels")

# Encoder precisions (the torch dtypes are stages.PRECISIONS'); named here so the CLI lists them without torch.
PRECISION_NAMES: tuple[str, ...] = ("fp32", "fp16", "bf16")
# Where stages run (engine.choose_backend): torch on any device, or ONNX Runtime + NumPy on a CPU.
BACKEND_CHOICES: tuple[str, ...] = ("auto", "torch", "onnx")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# TF-ported EfficientNet-Lite weights expect RGB scaled to [-1, 1].
UNIT_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
UNIT_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

EFFICIENTNET_LITE_ENCODERS: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def encoder_input_norm(encoder: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The RGB (mean, std) an encoder's ImageNet weights were trained with."""
    if encoder in EFFICIENTNET_LITE_ENCODERS:
        return UNIT_MEAN, UNIT_STD
    return IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ArchConfig:
    """Everything needed to rebuild a CRMNet.

    Attributes:
        encoder: registered encoder name (``resnet50``, ``mobilenet_v2`` or ``efficientnet_lite0/1/2``).
        skip_dims: widths of the 1x1 projections of the stride 2 / 4 / 8 taps.
        latent_dim: channels of the fused latent map F_latent (stride 2).
        fusion: ``conv3x3`` (paper) or ``separable`` (depthwise 3x3 + pointwise, cheaper).
        hidden_dim: width of the implicit MLP.
        hidden_layers: number of hidden layers of the implicit MLP.
        dropout: dropout after the fusion conv, active in training only.
        width_mult: encoder width multiplier (tests use tiny encoders).
        rgb_mean, rgb_std: RGB normalisation of the network input, ``(rgb - mean) / std`` with rgb in
            [0, 1]. ``None`` (and checkpoints written before these keys existed) means the encoder's
            own, see :func:`encoder_input_norm`; the resolved values are stored in every checkpoint.
    """

    encoder: str = "resnet50"
    skip_dims: tuple[int, int, int] = (64, 64, 128)
    latent_dim: int = 256
    fusion: str = "conv3x3"
    hidden_dim: int = 32
    hidden_layers: int = 4
    dropout: float = 0.5
    width_mult: float = 1.0
    rgb_mean: tuple[float, float, float] | None = None
    rgb_std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        default_mean, default_std = encoder_input_norm(self.encoder)
        # Frozen dataclass: resolve the defaults once, so equality and to_dict see the real values.
        object.__setattr__(self, "rgb_mean", _triple(self.rgb_mean, default_mean, "rgb_mean"))
        object.__setattr__(self, "rgb_std", _triple(self.rgb_std, default_std, "rgb_std"))
        if min(self.rgb_std) <= 0:
            raise ValueError(f"rgb_std must be positive, got {self.rgb_std}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the config."""
        data = asdict(self)
        data["skip_dims"] = list(self.skip_dims)
        data["rgb_mean"] = list(self.rgb_mean)
        data["rgb_std"] = list(self.rgb_std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Rebuild a config, refusing unknown keys and values of the wrong type or range (a
        ValueError naming the key) so a bad checkpoint fails loudly."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown architecture keys: {sorted(unknown)}")
        values = dict(data)
        for key, value in values.items():
            _check_value(key, value)
        if "skip_dims" in values:
            values["skip_dims"] = tuple(values["skip_dims"])
        return cls(**values)

    @property
    def input_norm(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(mean, std) of the RGB normalisation, as :func:`crm_cli.transforms.network_input` takes it."""
        return self.rgb_mean, self.rgb_std  # type: ignore[return-value]


FUSIONS: tuple[str, ...] = ("conv3x3", "separable")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_value(key: str, value: Any) -> None:
    """ValueError naming ``key`` when an ArchConfig value read from JSON has the wrong type or range."""
    if key in ("latent_dim", "hidden_dim", "hidden_layers"):
        ok, wanted = _is_integer(value) and value >= 1, "an integer >= 1"
    elif key == "skip_dims":
        ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(_is_integer(v) and v >= 1 for v in value)
        wanted = "3 integers >= 1"
    elif key == "dropout":
        ok, wanted = _is_number(value) and 0 <= value < 1, "a number in [0, 1)"
    elif key == "width_mult":
        ok, wanted = _is_number(value) and value > 0, "a positive number"
    elif key == "encoder":
        ok, wanted = isinstance(value, str) and bool(value), "an encoder name"
    elif key == "fusion":
        ok, wanted = isinstance(value, str) and value in FUSIONS, f"one of {', '.join(FUSIONS)}"
    else:  # rgb_mean, rgb_std
        ok = value is None or (isinstance(value, (list, tuple)) and len(value) == 3
                               and all(_is_number(v) for v in value))
        wanted = "3 numbers (R, G, B) or null"
    if not ok:
        raise ValueError(f"{key} must be {wanted}, got {value!r}")


def _triple(value: Any, default: tuple[float, float, float], name: str) -> tuple[float, float, float]:
    if value is None:
        return default
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (R, G, B), got {len(values)}")
    return values  # type: ignore[return-value]


PRESET_ARCHS: dict[str, ArchConfig] = {
    # The paper configuration (DESIGN §1).
    "resnet50": ArchConfig(),
    # The CPU-friendly configuration: MobileNetV2 taps, narrower fusion.
    "mobilenet_v2": ArchConfig(
        encoder="mobilenet_v2", skip_dims=(32, 32, 64), latent_dim=64, fusion="separable", dropout=0.1
    ),
    # ImageNet EfficientNet-Lite taps (timm's tf_efficientnet_lite*), same head as mobilenet_v2.
    **{
        name: ArchConfig(encoder=name, skip_dims=(32, 32, 64), latent_dim=64, fusion="separable", dropout=0.1)
        for name in EFFICIENTNET_LITE_ENCODERS
    },
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
