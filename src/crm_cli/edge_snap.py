"""Edge snapping: a guided filter pulls a refined mask's boundary onto the photo's edges.

The model's final stage places a boundary to within a pixel or two; a grey-guided filter (He, Sun
and Tang's local linear model: inside each small window the mask is fitted as a * grey + b) moves
it onto the photo's strongest nearby edge. Only pixels within ``radius`` of the mask's boundary may
change, only where the photo is not flat, and never the pixels of a part thinner than the filter's
window (a strand, a slat, a gap between slats), which the window's average would erase. Photos
smaller than ``SNAP_MIN_SIDE`` on their long side keep the model's boundary: at that scale the
window spans real detail (measured in docs/HISTORY.md, session 42). NumPy + OpenCV only, so both backends share it.
"""

from __future__ import annotations

import cv2
import numpy as np

from .morphology import near_boundary, thin_parts

SNAP_RADIUS = 2  # px: the filter's window is (2r+1)^2; pixels within r of a boundary pixel may change
SNAP_EPS = 1e-3  # on grey in [0, 1]: edges of contrast well under sqrt(eps) ~ 0.03 are smoothed over
SNAP_MIN_SIDE = 1000  # px, long side
# Grey variance a window needs before its pixels may move: a std of 0.016, about 4 levels of 255.
# Where the photo is flatter there is no edge to snap to, and the filter would only blur the mask
# (rounding a rectangle's corners on a flat background).
SNAP_MIN_VARIANCE = 2.5e-4
# Noise that is independent from pixel to pixel fills every window with variance, and the filter took
# it for edges: a disc's exact mask under noise of std 30 (the disc 20 levels up), which the trust
# region held where it was, came back frayed by the snap alone (2048x1536: 99.93 / 96.52). On a photo
# with such noise of std s (grey levels, photo_noise), a window needs a variance of at least
# (SNAP_NOISE_DEVIATIONS * s / 255)^2 before its pixels may move: 100 / 99.99 there. At 2 the snap
# also stopped on strong edges beside the boundary (blocky shapes on a noisy background: IoU
# 0.9989 -> 0.9968), at 1.5 0.9987, at 1 the disc kept 97.90 mBA; raising the filter's eps as well
# changed little (97.90 -> 98.96 at 1).
SNAP_NOISE_DEVIATIONS = 1.5
TILE = 256  # px: the filter runs only on tiles that hold some of the boundary


def snap_radius(height: int, width: int) -> int:
    """The filter radius for a photo of this size: ``SNAP_RADIUS``, or 0 (no snapping) below
    ``SNAP_MIN_SIDE`` px on the long side."""
    return SNAP_RADIUS if max(height, width) >= SNAP_MIN_SIDE else 0


def box_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window around each pixel, borders mirrored (OpenCV's BORDER_REFLECT)."""
    size = 2 * radius + 1
    return cv2.boxFilter(values, -1, (size, size), borderType=cv2.BORDER_REFLECT)


def window_statistics(grey: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ``grey`` (float32) over the (2r+1)^2 window around each pixel."""
    mean = box_mean(grey, radius)
    return mean, box_mean(grey * grey, radius) - mean * mean


def guided_filter(guide: np.ndarray, values: np.ndarray, radius: int, eps: float,
                  guide_statistics: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Grey-guided filter of ``values`` (both float32 (H, W)): per window, the least-squares
    ``a * guide + b`` with ``a`` damped by ``eps``; each pixel averages the fits of its windows.
    ``guide_statistics``: the guide's :func:`window_statistics`, when the caller has them already."""
    mean_guide, variance = guide_statistics if guide_statistics is not None else window_statistics(guide, radius)
    mean_values = box_mean(values, radius)
    covariance = box_mean(guide * values, radius) - mean_guide * mean_values
    slope = covariance / (variance + np.float32(eps))
    offset = mean_values - slope * mean_guide
    return box_mean(slope, radius) * guide + box_mean(offset, radius)


def least_window_variance(noise: float) -> float:
    """The least window variance (grey in [0, 1]) for a photo whose pixel-to-pixel noise has std
    ``noise`` grey levels: ``(SNAP_NOISE_DEVIATIONS * noise / 255)^2``."""
    return (SNAP_NOISE_DEVIATIONS * noise / 255.0) ** 2


def snap_to_edges(image: np.ndarray, probability: np.ndarray, radius: int = SNAP_RADIUS,
                  eps: float = SNAP_EPS, noise: float = 0.0) -> np.ndarray:
    """A new float32 probability map whose boundary follows ``image``'s edges.

    ``image``: (H, W, 3) uint8 RGB; ``probability``: (H, W) float32 in [0, 1]. Near the boundary
    (``near_boundary``), where the photo is not flat (``window_statistics``' variance at least
    ``SNAP_MIN_VARIANCE``) and outside thin parts (``thin_parts``) the value is the guided filter's,
    clipped to [0, 1]; everywhere else it is ``probability``'s own. ``radius`` 0 returns a copy.
    ``noise``: the std (grey levels) of the photo's pixel-to-pixel noise; it raises the least variance
    to :func:`least_window_variance`. The work is done tile by tile, only where the mask has
    a boundary, so a 6000x4000 photo holds no whole-image float copy of its grey.
    """
    snapped = np.array(probability, dtype=np.float32, order="C", copy=True)
    if radius <= 0:
        return snapped
    least_variance = max(SNAP_MIN_VARIANCE, least_window_variance(noise))
    foreground = probability > 0.5
    height, width = foreground.shape
    # Every step reads at most 2r px around a pixel (the filter: windows up to r away, each over
    # pixels up to r from its centre; the opening: an erosion and a dilation by r), so a halo of 2r
    # makes a tile's own pixels what the whole image would give them.
    halo = 2 * radius
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            bottom, right = min(top + TILE, height), min(left + TILE, width)
            y0, x0 = max(top - halo, 0), max(left - halo, 0)
            y1, x1 = min(bottom + halo, height), min(right + halo, width)
            side = foreground[y0:y1, x0:x1]
            if side.all() or not side.any():
                continue  # no boundary within the halo: nothing here may move
            inner = (slice(top - y0, bottom - y0), slice(left - x0, right - x0))
            movable = (near_boundary(side, radius) & ~thin_parts(side, radius))[inner]
            if not movable.any():
                continue
            grey = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
            grey = grey.astype(np.float32) / np.float32(255)
            statistics = window_statistics(grey, radius)
            movable &= statistics[1][inner] >= least_variance
            if not movable.any():
                continue
            # Each tile reads the model's values, never a neighbour's snapped ones.
            source = np.ascontiguousarray(probability[y0:y1, x0:x1], dtype=np.float32)
            filtered = guided_filter(grey, source, radius, eps, statistics)[inner]
            window = snapped[top:bottom, left:right]
            window[movable] = np.clip(filtered[movable], 0.0, 1.0)
    return snapped
