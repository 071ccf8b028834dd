"""Training data: pair listing, held-out split, augmentation and coarse-mask synthesis (DESIGN §3).

Every random choice comes from a ``numpy.random.Generator`` passed in by the caller, so a step's
batch is a pure function of (seed, step) and resumed runs see exactly the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..pairing import FilePair, find_pairs
from .coarse import CoarseMix, make_coarse, synthesize_coarse

CROP = 224
# Composites for training: no drawn layer may be (almost) invisible against what lies below it.
MIN_CONTRAST = 16.0


def list_pairs(root: Path) -> list[FilePair]:
    """Pairs from ``root/images/**`` + ``root/masks/**`` (same relative stem), sorted by name; the
    mask of each is its soft ground truth."""
    found, _ = find_pairs(Path(root))
    if not found:
        raise FileNotFoundError(f"no image/mask pairs under {root}/images and {root}/masks")
    return sorted(found, key=lambda p: p.name)


def split_pairs(pairs: list[FilePair], every: int = 20) -> tuple[list[FilePair], list[FilePair]]:
    """Fixed split: every ``every``-th pair (sorted order) is held out for validation."""
    train = [p for i, p in enumerate(pairs) if i % every != 0]
    val = [p for i, p in enumerate(pairs) if i % every == 0]
    return train, val


def load_pair(pair: FilePair) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) and soft GT float32 (H, W) in [0, 1], read as inference reads them."""
    from ..imageio import read_image, read_mask
    from ..masks import match_mask_to_image

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


def make_sample(image: np.ndarray, gt: np.ndarray, rng: np.random.Generator,
                coarse_mix: CoarseMix | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented training sample: RGB crop (224, 224, 3), coarse {0,1} and soft GT crops.

    ``coarse_mix`` None is the paper's recipe (the perturbation only), as before the mix existed."""
    image, gt = random_crop(image, gt, rng)
    if rng.random() < 0.5:
        image, gt = image[:, ::-1], gt[:, ::-1]
    image = photometric(np.ascontiguousarray(image), rng)
    gt = np.ascontiguousarray(gt)
    return image, sample_coarse(gt, image, rng, coarse_mix), gt


def sample_coarse(gt: np.ndarray, image: np.ndarray, rng: np.random.Generator,
                  coarse_mix: CoarseMix | None) -> np.ndarray:
    """The coarse mask of a training crop: the paper's perturbation, or a mode drawn from the mix."""
    if coarse_mix is None:
        return synthesize_coarse(gt, rng)
    return make_coarse(gt, rng, coarse_mix.choose(rng), image=image)


@dataclass(frozen=True)
class DataMix:
    """What training samples are made of: ``synthetic`` is the fraction of composites (thin
    structures and pasted foregrounds, :mod:`.synthesis`) among photo crops; ``coarse`` the
    coarse-mask mix (None = the paper's perturbation only)."""

    synthetic: float = 0.0
    coarse: CoarseMix | None = None


def make_training_sample(library: PairCache, index: int, rng: np.random.Generator,
                         mix: DataMix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample of the mix: a crop of pair ``index``, or a composite drawn from the library."""
    from .synthesis import composite

    if mix.synthetic > 0 and rng.random() < mix.synthetic:
        sample = composite(rng, library, CROP, CROP, fast_strokes=True, min_contrast=MIN_CONTRAST)
        image = photometric(sample.image, rng)
        return image, sample_coarse(sample.gt, image, rng, mix.coarse), sample.gt
    image, gt = library.get(index)
    return make_sample(image, gt, rng, mix.coarse)


class PairCache:
    """Decoded training pairs kept in memory (DUTS-TR fits in about 2.5 GB)."""

    def __init__(self, pairs: list[FilePair]) -> None:
        self.pairs = pairs
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (image, gt) for pair ``index``."""
        if index not in self._cache:
            self._cache[index] = load_pair(self.pairs[index])
        return self._cache[index]
