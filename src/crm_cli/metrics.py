"""IoU and mBA exactly as CascadePSP's evaluation defines them (DESIGN §4). NumPy + OpenCV only."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .masks import binarize

N_RADII = 5



def boundary_radii(height: int, width: int) -> list[int]:
    """r_i = 1 + int((max_r - 1) / 5 * i) with max_r = (H + W) / 300, for i = 0..4."""
    max_r = (height + width) / 300
    return [1 + int((max_r - 1) / N_RADII * i) for i in range(N_RADII)]


def boundary_band(gt: np.ndarray, radius: int) -> np.ndarray:
    """Pixels where the morphological gradient of the binary GT (elliptical kernel) is non-zero."""
    import cv2

    from .morphology import disc

    return cv2.morphologyEx(gt.astype(np.uint8), cv2.MORPH_GRADIENT, disc(radius)) > 0


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """(|pred & gt|, |pred | gt|) of two boolean masks."""
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def boundary_accuracy(pred: np.ndarray, gt: np.ndarray, radii: list[int] | None = None) -> float | None:
    """mBA of one image: mean over 5 radii of the accuracy inside the GT boundary band.

    ``radii`` default to the image's own (``boundary_radii``); a caller scoring a window of a larger
    image passes the full image's. Returns None when the GT has no boundary (empty or full mask).
    """
    correct = pred == gt
    accuracies = []
    for radius in boundary_radii(*gt.shape) if radii is None else radii:
        band = boundary_band(gt, radius)
        total = int(np.count_nonzero(band))
        if total == 0:
            return None
        accuracies.append(np.count_nonzero(correct & band) / total)
    return float(np.mean(accuracies))


@dataclass
class ImageScore:
    """Scores of one prediction against its ground truth."""

    name: str
    intersection: int
    union: int
    mba: float | None

    @property
    def iou(self) -> float:
        """Per-image IoU (1.0 when both masks are empty)."""
        return self.intersection / self.union if self.union else 1.0


def score_pair(pred: np.ndarray, gt: np.ndarray, name: str = "") -> ImageScore:
    """Score one prediction (any mask dtype) against one GT of the same size, both (H, W) arrays
    (ValueError otherwise: an (H, W, 1) mask would broadcast against an (H, W) one)."""
    for role, mask in (("prediction", pred), ("ground truth", gt)):
        if np.ndim(mask) != 2:
            raise ValueError(f"{name or 'prediction'}: the {role} must be an (H, W) mask, not of shape "
                             f"{tuple(np.shape(mask))}")
    if pred.shape != gt.shape:
        raise ValueError(f"{name or 'prediction'}: size {pred.shape[1]}x{pred.shape[0]} does not match "
                         f"ground truth {gt.shape[1]}x{gt.shape[0]}")
    pred_b, gt_b = binarize(pred), binarize(gt)
    inter, union = intersection_union(pred_b, gt_b)
    return ImageScore(name=name, intersection=inter, union=union, mba=boundary_accuracy(pred_b, gt_b))


@dataclass
class DatasetScore:
    """Dataset IoU (sum of intersections / sum of unions) and mBA (mean over images with a boundary)."""

    images: list[ImageScore] = field(default_factory=list)

    def add(self, score: ImageScore) -> None:
        """Append one image's score."""
        self.images.append(score)

    @property
    def iou(self) -> float:
        """Sum of intersections over sum of unions (1.0 when every mask is empty)."""
        union = sum(s.union for s in self.images)
        return sum(s.intersection for s in self.images) / union if union else 1.0

    @property
    def mba(self) -> float | None:
        """Mean of the per-image mBA over images that have a GT boundary; None if none has one."""
        values = [s.mba for s in self.images if s.mba is not None]
        return float(np.mean(values)) if values else None

    @property
    def no_boundary(self) -> int:
        """How many images have no GT boundary (empty or full GT), so no mBA."""
        return sum(1 for s in self.images if s.mba is None)

    def to_dict(self) -> dict:
        """The JSON shape of ``crm score --json``."""
        return {
            "iou": self.iou,
            "mba": self.mba,
            "n": len(self.images),
            "images": [{"name": s.name, "iou": s.iou, "mba": s.mba} for s in self.images],
        }
