"""Coarse masks for training and validation: the paper's perturbation and masks like real ones.

Modes (mixed by :class:`CoarseMix`):

- ``paper``: CRM's recipe (DESIGN §3): contour simplification, then local dilations/erosions until
  the IoU with the GT falls below a target drawn from U(0.8, 1.0).
- ``lowres``: a segmentation network working at low resolution: the GT reduced to a coarse grid,
  disturbed by smooth noise, brought back with bicubic interpolation and thresholded at 0.5.
- ``sam``: a mask that is fine but wrong in the ways SAM and IS-Net are: thin parts missing, gaps
  between slats merged, the boundary a round trip through a low-resolution logit grid, speckle along
  low-contrast stretches of the boundary, small holes and extra blobs.
- ``clean``: the GT itself, which the model must learn to leave alone.
- ``network``: a real network's mask of the same photo, made offline (``crm train --network-masks``)
  and cropped with it. Its share of the photo crops is drawn from the photos that have such a mask;
  composites, which have none, draw from the other modes.

Every function draws only from the ``numpy`` generator it is given, so a mask is a pure function of
(GT, image, generator state).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

from ..synthetic import coarse_mask as lowres_network_mask

MODES = ("paper", "lowres", "sam", "clean", "network")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    from ..metrics import intersection_union

    inter, union = intersection_union(a, b)
    return inter / union if union else 1.0


# ---------------------------------------------------------------------------------------------- paper
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


# ---------------------------------------------------------------------------------------------- lowres
def lowres_coarse(gt: np.ndarray, rng: np.random.Generator, cells: tuple[float, float]) -> np.ndarray:
    """A low-resolution network's mask: the GT on a grid of U(cells) cells along its long side,
    smooth noise, bicubic back, threshold 0.5 (the carvana-dev recipe). float32 in {0, 1}."""
    height, width = gt.shape
    n = float(rng.uniform(*cells))
    # coarse_mask counts cells along the width; convert so that ``n`` is along the long side.
    along_width = max(2, round(n * width / max(height, width)))
    seed = int(rng.integers(0, 2**31 - 1))
    gt8 = np.clip(np.rint(gt * 255), 0, 255).astype(np.uint8)
    return (lowres_network_mask(gt8, cells=along_width, seed=seed) > 127).astype(np.float32)


# ---------------------------------------------------------------------------------------------- sam
def smooth_field(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Gaussian noise on a grid of ``cell``-px cells, bicubic-upsampled, rescaled to unit std."""
    gh, gw = max(2, round(height / cell)), max(2, round(width / cell))
    field = cv2.resize(rng.normal(size=(gh, gw)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def random_region(rng: np.random.Generator, height: int, width: int, coverage: float) -> np.ndarray:
    """A blobby boolean region covering about ``coverage`` of the image."""
    field = smooth_field(rng, height, width, max(height, width) / rng.uniform(2, 6))
    return field >= np.quantile(field, 1 - coverage)


def _disk(size: float) -> np.ndarray:
    k = max(1, int(round(size)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def low_contrast(image: np.ndarray, scale: float) -> np.ndarray:
    """Per pixel, how flat the image is around it: 1 - gradient magnitude normalised by its 90th
    percentile, smoothed at ``scale`` px, in [0, 1]."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    magnitude = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    magnitude = cv2.GaussianBlur(magnitude, (0, 0), max(0.5, scale))
    return 1 - np.clip(magnitude / max(float(np.quantile(magnitude, 0.9)), 1e-6), 0, 1)


def sam_like_coarse(gt: np.ndarray, rng: np.random.Generator, image: np.ndarray | None = None,
                    cell: float | None = None) -> np.ndarray:
    """A fine mask with SAM-like errors. ``cell`` is the px size of the simulated logit grid
    (SAM: long side / 256); every error scales with it. Returns float32 in {0, 1}."""
    height, width = gt.shape
    cell = float(rng.uniform(1.0, 4.0)) if cell is None else float(cell)
    out = gt > 0.5
    if not out.any():
        return out.astype(np.float32)
    # Thin parts missing: an opening removes what is thinner than its kernel, here in part of the image.
    if rng.random() < 0.75:
        opened = cv2.morphologyEx(out.astype(np.uint8), cv2.MORPH_OPEN, _disk(rng.uniform(0.5, 1.5) * cell)) > 0
        out = np.where(random_region(rng, height, width, rng.uniform(0.2, 0.7)), opened, out)
    # Gaps merged: a closing fills gaps narrower than its kernel.
    if rng.random() < 0.75:
        closed = cv2.morphologyEx(out.astype(np.uint8), cv2.MORPH_CLOSE, _disk(rng.uniform(0.75, 2.0) * cell)) > 0
        out = np.where(random_region(rng, height, width, rng.uniform(0.2, 0.6)), closed, out)
    # The logit grid: area down to cells, smooth noise on the logits, bilinear up, threshold.
    gh, gw = max(2, round(height / cell)), max(2, round(width / cell))
    small = cv2.resize(out.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    small += smooth_field(rng, gh, gw, rng.uniform(3, 10)) * rng.uniform(0.03, 0.12)
    out = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
    # Speckle near the boundary where the image is flat (or, without an image, in random stretches).
    if rng.random() < 0.7:
        radius = rng.uniform(1.5, 5.0) * cell
        kernel = _disk(2 * radius + 1)
        binary = out.astype(np.uint8)
        band = (cv2.dilate(binary, kernel) > 0) & ~(cv2.erode(binary, kernel) > 0)
        flat = low_contrast(image, cell) if image is not None else (smooth_field(rng, height, width, 16 * cell) > 0)
        noise = smooth_field(rng, height, width, rng.uniform(0.7, 2.0) * cell)
        flips = band & (flat > rng.uniform(0.4, 0.8)) & (noise > rng.uniform(0.8, 1.6))
        out ^= flips
    # Small holes inside and extra blobs outside.
    inside = cv2.distanceTransform(out.astype(np.uint8), cv2.DIST_L2, 3)
    outside = cv2.distanceTransform((~out).astype(np.uint8), cv2.DIST_L2, 3)
    canvas = out.astype(np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        r = rng.uniform(1.0, 5.0) * cell
        ys, xs = np.nonzero(inside > r + 1)
        if len(ys):
            k = int(rng.integers(0, len(ys)))
            cv2.ellipse(canvas, (int(xs[k]), int(ys[k])), (max(1, round(r)), max(1, round(r * rng.uniform(0.4, 1)))),
                        rng.uniform(0, 180), 0, 360, 0, -1)
    for _ in range(int(rng.integers(0, 4))):
        r = rng.uniform(1.5, 8.0) * cell
        ys, xs = np.nonzero((outside > 0) & (outside < 12 * cell))
        if len(ys):
            k = int(rng.integers(0, len(ys)))
            cv2.ellipse(canvas, (int(xs[k]), int(ys[k])), (max(1, round(r)), max(1, round(r * rng.uniform(0.3, 1)))),
                        rng.uniform(0, 180), 0, 360, 1, -1)
    return canvas.astype(np.float32)


# ---------------------------------------------------------------------------------------------- mix
@dataclass(frozen=True)
class CoarseMix:
    """Relative weights of the coarse-mask modes."""

    paper: float = 0.35
    lowres: float = 0.2
    sam: float = 0.3
    clean: float = 0.15
    network: float = 0.0

    @classmethod
    def parse(cls, text: str) -> CoarseMix:
        """``"paper=0.4,sam=0.4,clean=0.2"``: unnamed modes get weight 0; empty text = defaults."""
        if not text.strip():
            return cls()
        weights = dict.fromkeys(MODES, 0.0)
        for part in text.split(","):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in weights:
                raise ValueError(f"coarse mix: expected MODE=WEIGHT with MODE in {', '.join(MODES)}, got {part!r}")
            try:
                weights[name] = float(value)
            except ValueError:
                raise ValueError(f"coarse mix: the weight of {name} must be a number, got {value.strip()!r}") from None
        if any(v < 0 for v in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"coarse mix: weights must be >= 0 and not all 0, got {text!r}")
        return cls(**weights)

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))

    def network_share(self) -> float:
        """The fraction of samples that the ``network`` mode should get."""
        return self.network / sum(getattr(self, m) for m in MODES)

    def without_network(self) -> CoarseMix:
        """The same mix with the ``network`` weight removed (the others keep their ratios)."""
        weights = {m: getattr(self, m) for m in MODES if m != "network"}
        if sum(weights.values()) <= 0:
            weights["sam"] = 1.0
        return CoarseMix(**weights)

    def choose(self, rng: np.random.Generator) -> str:
        """Draw a mode by weight."""
        weights = np.array([getattr(self, m) for m in MODES], np.float64)
        return MODES[int(rng.choice(len(MODES), p=weights / weights.sum()))]


def make_coarse(gt: np.ndarray, rng: np.random.Generator, mode: str, image: np.ndarray | None = None,
                sam_cell: float | None = None, lowres_cells: tuple[float, float] = (20, 72)) -> np.ndarray:
    """The coarse mask of ``mode`` for a soft GT, float32 in {0, 1}.

    ``lowres_cells`` is the grid along the long side of *this* array: 20-72 on a 224 crop is a 3-11 px
    cell, what one stage of the pipeline sees of a 40-72 cell mask of a 2K photo."""
    if mode == "paper":
        return synthesize_coarse(gt, rng)
    if mode == "lowres":
        return lowres_coarse(gt, rng, lowres_cells)
    if mode == "sam":
        return sam_like_coarse(gt, rng, image, sam_cell)
    if mode == "clean":
        return (gt > 0.5).astype(np.float32)
    raise ValueError(f"unknown coarse mode {mode!r}; choose from {', '.join(MODES)}")
