"""Noise in the photo: how much of it there is, and whether the photo holds anything else.

Noise that is independent from one pixel to the next (a sensor at high gain, ultrasound, X-ray)
adds its own gradient everywhere. ``schedule.BoundaryGeometry`` subtracts that floor from its bands
(a mask on a noisy edge otherwise reads as a mask off the edges), and the engine keeps the mask of a
photo that holds nothing but noise as given (a flat photo's rule). Pure NumPy/OpenCV, no torch.
"""

from __future__ import annotations

import functools
from statistics import NormalDist

import cv2
import numpy as np

# The 3x3 second difference: zero on any plane, so it keeps the noise and little of smooth content.
# White noise of std s gives a residual of std 6 s (the root of the kernel's squares, 36).
_RESIDUAL_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_RESIDUAL_GAIN = 6.0
# white_noise_level is at most this times residual_level (the root of 4/3).
WHITE_NOISE_PER_RESIDUAL = (4.0 / 3.0) ** 0.5
# The median of |x| for a normal x of unit std: the median keeps edges and texture, which hold a
# minority of a photo's pixels, out of the estimate.
_MEDIAN_ABS_NORMAL = 0.6745
# The residual's median is taken on every this-many-th row and column (a 2048x1536 grey image: 0.78 MP).
_SAMPLE_STEP = 2
# A photo larger than the edge alignment measures (which reduces it) has its noise read at full size on
# this many crops per side, each this many px square (16 crops, 1 MP, whatever the photo's size).
NOISE_CROPS_PER_SIDE = 4
NOISE_CROP_SIDE = 256
# photo_is_noise: the photo reduced by this factor in each direction (area averaging of 8x8 pixels,
# which takes independent noise down 8-fold and keeps anything larger than a few cells) ...
NOISE_ONLY_REDUCTION = 8
# ... must stay within this many of the reduced noise's standard deviations (the full-size spread
# over the reduction) of its mean, + NOISE_ONLY_LEVELS, in every channel. Pure noise, normal or uniform
# (averaged, both are near normal), reached 4.2-4.8 of them at 2048x1536 (49,152 cells), 4.2-4.7 at
# 3840x2160 and 4.5-5.2 at 6000x4000 (375,000); do_no_harm's disc 20 levels above noise of std 30
# reached 7.1-7.4 (640x480 to 2048x1536), a 50x50 px square 60 levels above noise of std 10 in a
# 2048x1536 photo 48. Anything finer than the 8x8 cells is averaged away with the noise (stripes one
# pixel wide, sand), and a disc 10 levels above noise of std 30 reaches only 5.4-5.6: such photos read
# as noise, and their masks are kept as given.
NOISE_ONLY_DEVIATIONS = 6.0
NOISE_ONLY_LEVELS = 1.0
# The reduced noise's deviation is also read from the cells themselves (their differences with their
# neighbours), and taken where it is larger, up to this many times the full-size spread over the
# reduction. Noise smoothed within a cell (JPEG's chroma subsampling and its loss of the finest
# frequencies keep each 8x8 block's mean) averages down less than independent noise: its cells deviate
# 1.27-1.32 times as much (pure colour noise as JPEG at quality 75-95, 4:2:0), and read 5.5-6.6 of the
# spread's deviations against 4.2-4.8 as PNG. A photo whose cells vary more than noise (texture,
# content) gains at most this factor: the dev sets' photos read at least 9.3 (11.8 without it).
NOISE_ONLY_MAX_CELL_GAIN = 1.5
# ... on photos of at least this many cells on their short side (128 px): real photos of 64-110 px (a
# COCO instance's crop) have too few cells for their differences to tell content, and a ladybird on a
# twig reduced to 64 px read as noise with the gain (review, session 61).
NOISE_ONLY_GAIN_MIN_CELLS = 16
# How far the deviation of 8-bit cells (means rounded to whole levels) may lie from the exact one:
# half a level at the extreme cell and half at the centre, with room for OpenCV's fixed-point sums.
_ROUNDED_CELL_SLACK = 2.0
# The neighbour differences' mean below their 90th percentile, over the cells' deviation, for
# independent normal cells (a difference has a deviation of root 2 and its top tenth, the cells across
# an object's edge among them, is left out): root 2 x 2 (phi(0) - phi(q)) / 0.9, q the 95th percentile.
_NEIGHBOUR_KEPT = 0.9
_KEPT_QUANTILE = NormalDist().inv_cdf(0.5 + _NEIGHBOUR_KEPT / 2)
_KEPT_MEAN_PER_DEVIATION = (2.0 ** 0.5 * 2.0 * (NormalDist().pdf(0.0) - NormalDist().pdf(_KEPT_QUANTILE))
                            / _NEIGHBOUR_KEPT)


def _residual_samples(grey: np.ndarray) -> np.ndarray:
    """The second difference's magnitudes of a float32 grey image, on every ``_SAMPLE_STEP``-th row and
    column inside its border (none for an image under 4 px on a side)."""
    if min(grey.shape) < 4:
        return np.empty(0, np.float32)
    residual = cv2.filter2D(grey, cv2.CV_32F, _RESIDUAL_KERNEL, borderType=cv2.BORDER_REFLECT)
    return np.abs(residual[1:-1:_SAMPLE_STEP, 1:-1:_SAMPLE_STEP]).ravel()


def _level(samples: np.ndarray) -> float:
    """The std that white noise alone would give, read off the samples' median; 0 for no samples."""
    if samples.size == 0:
        return 0.0
    middle = samples.size // 2
    return float(np.partition(samples, middle)[middle]) / (_RESIDUAL_GAIN * _MEDIAN_ABS_NORMAL)


def _halved(grey: np.ndarray) -> np.ndarray:
    """``grey`` (float32) reduced 2x by averaging 2x2 pixels (an odd last row or column is left out)."""
    height, width = grey.shape
    even = grey[: height // 2 * 2, : width // 2 * 2]
    return cv2.resize(even, (width // 2, height // 2), interpolation=cv2.INTER_AREA)


def _white_from_levels(full: float, half: float) -> float:
    return float(np.sqrt(max(0.0, full * full - half * half) * 4.0 / 3.0))


def residual_level(grey: np.ndarray) -> float:
    """The second difference's level at full size alone (texture and fine edges raise it too), at
    half the cost of :func:`white_noise_level`, which is at most ``WHITE_NOISE_PER_RESIDUAL`` times it."""
    return PhotoNoise([np.asarray(grey, dtype=np.float32)]).residual


def white_noise_level(grey: np.ndarray) -> float:
    """The std (grey levels) of the noise in ``grey`` (H, W) that is independent from pixel to pixel.

    Such noise halves when 2x2 pixels are averaged; texture and edges barely change. So the residual
    level at full size (s1) and at half size (s2) give the noise as the root of 4/3 (s1² - s2²): pure
    noise of std s reads s; fine texture is partly read as noise (DUTS photos of grass: 12.6 of a
    residual level of 24.7; of wood: 0.2 of 14.6). Noise smoothed over a pixel or two (a camera's
    demosaicing, JPEG) halves less and reads low. 0 for an image under 8 px on a side.
    """
    return PhotoNoise([np.asarray(grey, dtype=np.float32)]).white


def noise_crops(image: np.ndarray) -> list[np.ndarray]:
    """Up to ``NOISE_CROPS_PER_SIDE``² grey float32 crops of ``NOISE_CROP_SIDE`` px (or the photo's side,
    if shorter) of an (H, W, 3) uint8 photo, spread evenly over it: its noise at full size, at a cost
    that does not grow with the photo."""
    height, width = image.shape[:2]
    crop_height, crop_width = min(NOISE_CROP_SIDE, height), min(NOISE_CROP_SIDE, width)
    tops = np.unique(np.linspace(0, height - crop_height, NOISE_CROPS_PER_SIDE).round().astype(int))
    lefts = np.unique(np.linspace(0, width - crop_width, NOISE_CROPS_PER_SIDE).round().astype(int))
    crops = []
    for top in tops:
        for left in lefts:
            crop = np.ascontiguousarray(image[top: top + crop_height, left: left + crop_width])
            crops.append(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32))
    return crops


class PhotoNoise:
    """The pixel-to-pixel noise of one photo at full size, read lazily from grey float32 pieces of it
    (the whole grey photo, or :func:`noise_crops`): :attr:`residual` first, :attr:`white` only when
    asked (it reads every piece again at half size)."""

    def __init__(self, pieces: list[np.ndarray]) -> None:
        self.pieces = pieces
        self._residual: float | None = None
        self._white: float | None = None

    @property
    def residual(self) -> float:
        """:func:`residual_level` over all the pieces; an upper bound of :attr:`white` over
        ``WHITE_NOISE_PER_RESIDUAL``."""
        if self._residual is None:
            self._residual = _level(np.concatenate([_residual_samples(piece) for piece in self.pieces]))
        return self._residual

    @property
    def white(self) -> float:
        """:func:`white_noise_level` over all the pieces (pieces under 8 px on a side count at full
        size only)."""
        if self._white is None:
            full = self.residual
            pieces = [piece for piece in self.pieces if min(piece.shape) >= 8]
            if full == 0.0 or not pieces:
                self._white = 0.0
            else:
                half = _level(np.concatenate([_residual_samples(_halved(piece)) for piece in pieces]))
                self._white = _white_from_levels(full, half)
        return self._white


@functools.cache
def noise_gradient(blur_sigma: float = 0.0) -> float:
    """The mean Sobel gradient magnitude (x and y combined) that white noise of unit std gives after a
    Gaussian blur of ``blur_sigma`` px (0: none): the kernel's own gain (its impulse response's root sum
    of squares) times the mean of a Rayleigh variable, the root of pi/2 (unblurred: the root of 12
    times that, 4.34)."""
    impulse = np.zeros((41, 41), np.float32)
    impulse[20, 20] = 1.0
    if blur_sigma > 0:
        impulse = cv2.GaussianBlur(impulse, (0, 0), blur_sigma)
    response = cv2.Sobel(impulse, cv2.CV_32F, 1, 0)
    return float(np.sqrt(np.square(response, dtype=np.float64).sum()) * np.sqrt(np.pi / 2))


@functools.lru_cache(maxsize=8)
def reduced_noise_gradient(blur_sigma: float, full_size: tuple[int, int], reduced_size: tuple[int, int]) -> float:
    """:func:`noise_gradient` for white noise of unit std at ``full_size`` (height, width) reduced to
    ``reduced_size`` by area averaging, as the edge alignment reduces a photo, before the blur.

    A reduction by a factor that is not whole averages pixels unevenly and leaves the noise
    correlated, in a pattern that repeats over as many pixels as the factor's fraction needs (2049 to
    2048: the whole row), so the gain is measured on a seeded noise field of exactly that size reduced
    the same way (about 0.1 s at 6000x4000; the last few sizes are kept). It is at most
    ``noise_gradient(blur_sigma)`` over the reduction (measured from 1.0005 to 2.93)."""
    if tuple(full_size) == tuple(reduced_size):
        return noise_gradient(blur_sigma)
    field = np.random.default_rng(0).standard_normal(full_size, dtype=np.float32)
    reduced = cv2.resize(field, (reduced_size[1], reduced_size[0]), interpolation=cv2.INTER_AREA)
    del field
    if blur_sigma > 0:
        reduced = cv2.GaussianBlur(reduced, (0, 0), blur_sigma)
    magnitude = cv2.magnitude(cv2.Sobel(reduced, cv2.CV_32F, 1, 0), cv2.Sobel(reduced, cv2.CV_32F, 0, 1))
    inner = magnitude[8:-8, 8:-8] if min(magnitude.shape) > 32 else magnitude
    return float(inner.mean())


def photo_is_noise(image: np.ndarray) -> bool:
    """Whether an (H, W, C) uint8 photo holds nothing coarser than its pixel-to-pixel noise (each
    channel, reduced ``NOISE_ONLY_REDUCTION``-fold, stays within ``NOISE_ONLY_DEVIATIONS`` of the reduced
    noise's deviations of its mean, + ``NOISE_ONLY_LEVELS``): a mask drawn on it has nothing to be
    refined against. The reduced noise's deviation is the full-size spread over the reduction, or the
    cells' own (:func:`cell_deviation`) where larger, up to ``NOISE_ONLY_MAX_CELL_GAIN`` times it.
    Detail finer than the reduction's cells is averaged away with the noise. False for a photo under 8
    reduced cells on a side."""
    factor = NOISE_ONLY_REDUCTION
    height, width = image.shape[:2]
    if min(height, width) < 8 * factor:
        return False
    whole = image[: height // factor * factor, : width // factor * factor]
    _, full_spread = cv2.meanStdDev(whole)
    spreads = full_spread.ravel()
    # Too few cells tell noise from content by their neighbours: small photos keep the spread alone.
    cell_gain = NOISE_ONLY_MAX_CELL_GAIN if min(height, width) // factor >= NOISE_ONLY_GAIN_MIN_CELLS else 1.0
    # A photo with content shows it far beyond the widest limit already in 8-bit cells (rounded, so
    # within a level of the exact means either way): most photos end here, at a third of the cost.
    rounded = cv2.resize(whole, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    for channel, spread in zip(cv2.split(rounded.reshape(rounded.shape[0], rounded.shape[1], -1)), spreads,
                               strict=True):
        widest = NOISE_ONLY_DEVIATIONS * cell_gain * spread / factor + NOISE_ONLY_LEVELS
        if _farthest_from_mean(channel) - _ROUNDED_CELL_SLACK > widest:
            return False
    for channel, spread in zip(cv2.split(cell_means(whole, factor)), spreads, strict=True):
        independent = spread / factor
        deviation = independent
        if cell_gain > 1.0:
            deviation = min(max(cell_deviation(channel), independent), cell_gain * independent)
        if _farthest_from_mean(channel) > NOISE_ONLY_DEVIATIONS * deviation + NOISE_ONLY_LEVELS:
            return False
    return True


def _farthest_from_mean(channel: np.ndarray) -> float:
    """How far the cell farthest from a 2-D ``channel``'s mean lies from it, either way."""
    lowest, highest, _, _ = cv2.minMaxLoc(channel)
    centre = float(channel.mean())
    return max(highest - centre, centre - lowest)


def cell_means(image: np.ndarray, factor: int) -> np.ndarray:
    """The means of ``image``'s ``factor`` x ``factor`` cells (its sides whole multiples of ``factor``),
    float32 (H / factor, W / factor, C), to 1/256 of a level: a cell's deviation of a third of a level
    decides whether faint noise reads as noise, and an 8-bit reduction rounds it to whole levels. The
    uint8 ``image`` is reduced in 16 bits (its levels x 256), a strip of rows at a time, so a 6000x4000
    photo never holds a wider copy of itself (about 30 ms there, against 10 ms in 8 bits)."""
    height, width = image.shape[:2]
    pixels = image.reshape(height, width, -1)
    cells = np.empty((height // factor, width // factor, pixels.shape[2]), np.float32)
    rows = factor * 64
    for top in range(0, height, rows):
        strip = pixels[top: top + rows].astype(np.uint16) << 8
        reduced = cv2.resize(strip, (width // factor, strip.shape[0] // factor), interpolation=cv2.INTER_AREA)
        cells[top // factor: (top + strip.shape[0]) // factor] = reduced.reshape(-1, width // factor, pixels.shape[2])
    cells /= np.float32(256.0)
    return cells


def cell_deviation(cells: np.ndarray) -> float:
    """The standard deviation of independent normal values that would give ``cells`` (a 2-D array,
    at least 2x2) the differences they have with their right and lower neighbours: the mean of those
    differences' magnitudes below their 90th percentile, so that the few across an object's edge do
    not count, over what that mean is for unit normal values."""
    values = np.asarray(cells, dtype=np.float32)  # cell_means' own are float32 already: no copy
    gaps = np.concatenate([np.abs(np.diff(values, axis=0)).ravel(), np.abs(np.diff(values, axis=1)).ravel()])
    kept = max(1, int(_NEIGHBOUR_KEPT * gaps.size))
    return float(np.partition(gaps, kept - 1)[:kept].mean()) / _KEPT_MEAN_PER_DEVIATION
