"""COCO instance annotations: load, decode, crop, refine, encode and score. No CLI and no torch import.

- ``rle``: COCO run-length encodings (compressed strings, polygons, column windows);
- ``instances``: refine one instance in a crop around its box, and score instances by their RLEs;
- ``files``: load a file, plan the work per image, resume from the sidecar, write atomically.

The names below are the package's API (``from crm_cli import coco; coco.refine_instance(...)``).
"""

from __future__ import annotations

from .files import (
    CocoFileError,
    Plan,
    Sidecar,
    apply_results,
    load_coco,
    load_coco_hashed,
    plan_jobs,
    sidecar_path,
    write_json_atomic,
)
from .instances import (
    MARGIN_FRACTION,
    MIN_MARGIN,
    RefineOptions,
    crop_window,
    iter_image_job,
    refine_image_job,
    refine_instance,
    score_coco,
    score_instance,
)
from .rle import (
    InstanceError,
    decode_columns,
    decode_rle_string,
    decode_segmentation,
    encode_mask,
    encode_rle_string,
    foreground_columns,
    runs_from_columns,
    runs_from_segmentation,
)

__all__ = [
    "MARGIN_FRACTION", "MIN_MARGIN", "CocoFileError", "InstanceError", "Plan", "RefineOptions", "Sidecar",
    "apply_results", "crop_window", "decode_columns", "decode_rle_string", "decode_segmentation", "encode_mask",
    "encode_rle_string", "load_coco_hashed", "foreground_columns", "iter_image_job", "load_coco", "plan_jobs",
    "refine_image_job",
    "refine_instance", "runs_from_columns", "runs_from_segmentation", "score_coco", "score_instance",
    "sidecar_path", "write_json_atomic",
]
