"""Model definitions only: no files, no images, no devices."""

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


def build_crm(config) -> CRMNet:  # noqa: ANN001 - ArchConfig, kept import-light
    """Build a CRMNet from an :class:`~crm_cli.config.ArchConfig`."""
    return CRMNet(config)
