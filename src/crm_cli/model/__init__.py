"""Model definitions only: no files, no images, no devices."""

from ..config import ArchConfig
from .crm import CRMNet, Fusion
from .decoder import AxisTable, ImplicitDecoder, axis_geometry
from .encoders import build_encoder, encoder_names, register_encoder

__all__ = [
    "AxisTable",
    "CRMNet",
    "Fusion",
    "ImplicitDecoder",
    "axis_geometry",
    "build_crm",
    "build_encoder",
    "encoder_names",
    "register_encoder",
]


def build_crm(config: ArchConfig) -> CRMNet:
    """Build a CRMNet (randomly initialised, in training mode) from an :class:`~crm_cli.config.ArchConfig`."""
    return CRMNet(config)
