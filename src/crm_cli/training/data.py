"""Training data: pair listing, held-out split, augmentation and coarse-mask synthesis (DESIGN §3).

Every random choice comes from a ``numpy.random.Generator`` passed in by the caller, so a step's
batch is a pure function of (seed, step) and resumed runs see exactly the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CROP = 224


@dataclass(frozen=True)
class Pair:
    """One training image and its soft ground-truth mask."""

    name: str
    image: Path
    mask: Path


def list_pairs(root: Path) -> list[Pair]:
    """Pairs from ``root/images/**`` + ``root/masks/**`` (same relative stem), sorted by name."""
    from ..pairing import find_pairs

    found, _ = find_pairs(Path(root))
    if not found:
        raise FileNotFoundError(f"no image/mask pairs under {root}/images and {root}/masks")
    return sorted((Pair(p.name, p.image, p.mask) for p in found), key=lambda p: p.name)


def split_pairs(pairs: list[Pair], every: int = 20) -> tuple[list[Pair], list[Pair]]:
    """Fixed split: every ``every``-th pair (sorted order) is held out for validation."""
    train = [p for i, p in enumerate(pairs) if i % every != 0]
    val = [p for i, p in enumerate(pairs) if i % every == 0]
    return train, val


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) and soft GT float32 (H, W) in [0, 1], read as inference reads them."""
    from ..imageio import match_mask_to_image, read_image, read_mask

    image = read_image(pair.image)
    mask, _ = match_mask_to_image(read_mask(pair.mask), image.shape[:2], str(pair.image), str(pair.mask))
    return image, mask.probability()


def random_crop(image: np.ndarray, gt: np.ndarray, rng: np.random.Generator,
                size: int = CROP) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop, reflect-padding sides shorter than ``size``."""
    height, width = gt.shape
    pad_y, pad_x = max(0, size - height), max(0, size - width)
    if pad_y or pad_x:
        top, left = pad_y // 2, pad_x // 2
        border = (top, pad_y - top, left, pad_x - left)
        image = cv2.copyMakeBorder(image, *border, cv2.BORDER_REFLECT_101)
        gt = cv2.copyMakeBorder(gt, *border, cv2.BORDER_REFLECT_101)
        height, width = gt.shape
    y = int(rng.integers(0, height - size + 1))
    x = int(rng.integers(0, width - size + 1))
    return image[y:y + size, x:x + size], gt[y:y + size, x:x + size]


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter (brightness 0.2, contrast 0.05, saturation 0.05) and grayscale with p = 0.1."""
    x = image.astype(np.float32)
    x *= rng.uniform(0.8, 1.2)
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray.mean()) * rng.uniform(0.95, 1.05) + gray.mean()
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray[..., None]) * rng.uniform(0.95, 1.05) + gray[..., None]
    if rng.random() < 0.1:
        gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = np.repeat(gray[..., None], 3, axis=2)
    return np.clip(x, 0, 255).astype(np.uint8)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    from ..metrics import intersection_union

    inter, union = intersection_union(a, b)
    return inter / union if union else 1.0


def simplify_contours(binary: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drop a run of 10% of each contour's points, keep a random 10% of the rest, refill."""
    contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(binary.shape, np.uint8)
    polygons = []
    for contour in contours:
        points = contour[:, 0, :]
        n = len(points)
        if n < 20:
            polygons.append(points)
            continue
        run = max(1, n // 10)
        start = int(rng.integers(0, n))
        keep = np.ones(n, bool)
        keep[(start + np.arange(run)) % n] = False
        rest = np.flatnonzero(keep)
        chosen = np.sort(rng.choice(rest, size=max(3, len(rest) // 10), replace=False))
        polygons.append(points[chosen])
    if polygons:
        cv2.fillPoly(out, [p.reshape(-1, 1, 2).astype(np.int32) for p in polygons], 1)
    return out.astype(bool)


def perturb_locally(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One round: dilate or erode a random rectangle with a random 3-9 px rect/ellipse kernel."""
    height, width = mask.shape
    k = int(rng.integers(3, 10))
    shape = cv2.MORPH_RECT if rng.random() < 0.5 else cv2.MORPH_ELLIPSE
    kernel = cv2.getStructuringElement(shape, (k, k))
    y0, y1 = sorted(rng.integers(0, height + 1, size=2))
    x0, x1 = sorted(rng.integers(0, width + 1, size=2))
    if y1 - y0 < 2 or x1 - x0 < 2:
        return mask
    region = mask[y0:y1, x0:x1].astype(np.uint8)
    op = cv2.dilate if rng.random() < 0.5 else cv2.erode
    out = mask.copy()
    out[y0:y1, x0:x1] = op(region, kernel) > 0
    return out


def synthesize_coarse(gt: np.ndarray, rng: np.random.Generator, max_rounds: int = 60) -> np.ndarray:
    """Coarse mask for a soft GT: contour simplification, then local perturbations until the IoU
    with the GT falls below a target drawn from U(0.8, 1.0). Returns a float32 mask in {0, 1}."""
    binary = gt > 0.5
    target = rng.uniform(0.8, 1.0)
    coarse = simplify_contours(binary, rng) if binary.any() else binary.copy()
    for _ in range(max_rounds):
        if mask_iou(coarse, binary) < target:
            break
        coarse = perturb_locally(coarse, rng)
    return coarse.astype(np.float32)


def make_sample(image: np.ndarray, gt: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented training sample: RGB crop (224, 224, 3), coarse {0,1} and soft GT crops."""
    image, gt = random_crop(image, gt, rng)
    if rng.random() < 0.5:
        image, gt = image[:, ::-1], gt[:, ::-1]
    image = photometric(np.ascontiguousarray(image), rng)
    gt = np.ascontiguousarray(gt)
    return image, synthesize_coarse(gt, rng), gt


class PairCache:
    """Decoded training pairs kept in memory (DUTS-TR fits in about 2.5 GB)."""

    def __init__(self, pairs: list[Pair]) -> None:
        self.pairs = pairs
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (image, gt) for pair ``index``."""
        if index not in self._cache:
            self._cache[index] = load_pair(self.pairs[index])
        return self._cache[index]
