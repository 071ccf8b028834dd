"""Synthetic composites with exact ground truth: the thin and sharp structures coarse masks get wrong.

A composite is a background photo with one to three layers drawn over it. Each layer is a shape
(wires, a fence or lattice, a railing, a spoked wheel, a strap or rope, hair-like strands, text,
sharp-cornered polygons) or a foreground cut out of another photo, filled with its own texture.
Textures and backgrounds come from an image library (DUTS-TR in training), often from the same
photo or blended toward the background, so the edges cannot be found by colour alone.

Shapes are rasterised at ``supersample`` x the output resolution by pixel-centre sampling; the
layer's alpha is the exact sub-pixel coverage (area mean), and the image is composited with that
same alpha, ``image = alpha * texture + (1 - alpha) * below``. The GT is the union of the layers'
alphas, so it is exactly what was drawn. Everything random comes from one ``numpy`` generator: the
same seed gives the same sample, byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from .shapes import SHAPES

# Relative frequency of each layer kind in a training composite.
DEFAULT_KINDS: dict[str, float] = {
    "wires": 1.0, "fence": 1.0, "railing": 1.0, "spokes": 0.8, "straps": 1.0, "hair": 1.0,
    "text": 0.8, "polygons": 1.2, "paste": 1.5,
}
THIN_KINDS: dict[str, float] = {k: v for k, v in DEFAULT_KINDS.items() if k != "paste"}


class ImageLibrary(Protocol):
    """Where textures, backgrounds and pasted foregrounds come from."""

    def __len__(self) -> int: ...

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """RGB uint8 (H, W, 3) image and its soft float32 (H, W) foreground mask in [0, 1]."""
        ...


class ArrayLibrary:
    """An in-memory library (tests, small tools): images with optional masks (default: empty)."""

    def __init__(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None) -> None:
        self.images = list(images)
        self.masks = list(masks) if masks is not None else [np.zeros(i.shape[:2], np.float32) for i in images]

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask ``index``."""
        return self.images[index], self.masks[index]


@dataclass
class Composite:
    """One synthetic sample: RGB uint8 image, soft float32 GT in [0, 1] and the kinds drawn."""

    image: np.ndarray
    gt: np.ndarray
    kinds: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- raster
class Painter:
    """A binary coverage canvas at ``supersample`` x resolution.

    Coordinates are output pixels with the edge convention: pixel (row i, column j) spans
    [j, j + 1) x [i, i + 1), so its centre is (j + 0.5, i + 0.5). A sub-pixel is set when its centre
    lies inside the shape; :meth:`alpha` averages the sub-pixels of each output pixel. An
    axis-aligned rectangle with corners on the sub-pixel grid therefore has an alpha sum equal to
    its area.
    """

    def __init__(self, height: int, width: int, supersample: int = 4, fast_strokes: bool = False) -> None:
        self.height, self.width, self.ss = height, width, supersample
        self.fast_strokes = fast_strokes
        self.canvas = np.zeros((height * supersample, width * supersample), np.uint8)

    def _window(self, xmin: float, xmax: float, ymin: float, ymax: float):
        """Sub-pixel slices covering a box, and the centre coordinates (output pixels) inside it."""
        ss = self.ss
        c0, c1 = max(0, int(np.floor(xmin * ss))), min(self.canvas.shape[1], int(np.ceil(xmax * ss)) + 1)
        r0, r1 = max(0, int(np.floor(ymin * ss))), min(self.canvas.shape[0], int(np.ceil(ymax * ss)) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        xs = ((np.arange(c0, c1) + 0.5) / ss)[None, :]
        ys = ((np.arange(r0, r1) + 0.5) / ss)[:, None]
        return (slice(r0, r1), slice(c0, c1)), xs, ys

    def _set(self, window: tuple[slice, slice], inside: np.ndarray, value: bool) -> None:
        view = self.canvas[window]
        if value:
            view[inside] = 1
        else:
            view[inside] = 0

    def convex(self, points: np.ndarray, value: bool = True) -> None:
        """Fill a convex polygon (vertices in order, either orientation)."""
        pts = np.asarray(points, np.float64)
        area2 = float(np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1]))
        if abs(area2) < 1e-12:
            return
        found = self._window(pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max())
        if found is None:
            return
        window, xs, ys = found
        inside = np.ones((ys.shape[0], xs.shape[1]), bool)
        sign = 1.0 if area2 > 0 else -1.0
        for a, b in zip(pts, np.roll(pts, -1, axis=0), strict=True):
            inside &= sign * ((b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])) >= 0
        self._set(window, inside, value)

    def rect(self, x0: float, y0: float, x1: float, y1: float, value: bool = True) -> None:
        """Fill the axis-aligned box [x0, x1) x [y0, y1)."""
        self.convex(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]), value)

    def bar(self, p0: Sequence[float], p1: Sequence[float], width: float, value: bool = True) -> None:
        """A flat-ended bar of ``width`` centred on the segment p0-p1 (a rotated rectangle)."""
        a, b = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
        d = b - a
        length = float(np.hypot(*d))
        if length == 0:
            return
        n = np.array([-d[1], d[0]]) / length * (width / 2)
        self.convex(np.array([a + n, b + n, b - n, a - n]), value)

    def capsule(self, p0: Sequence[float], p1: Sequence[float], radius: float, value: bool = True) -> None:
        """All points within ``radius`` of the segment p0-p1 (a bar with round ends)."""
        x0, y0 = float(p0[0]), float(p0[1])
        dx, dy = float(p1[0]) - x0, float(p1[1]) - y0
        found = self._window(min(x0, x0 + dx) - radius, max(x0, x0 + dx) + radius,
                             min(y0, y0 + dy) - radius, max(y0, y0 + dy) + radius)
        if found is None:
            return
        window, xs, ys = found
        length2 = dx * dx + dy * dy
        t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / length2, 0, 1) if length2 > 0 else 0.0
        inside = (xs - x0 - t * dx) ** 2 + (ys - y0 - t * dy) ** 2 <= radius * radius
        self._set(window, inside, value)

    def stroke(self, points: np.ndarray, width: float, closed: bool = False, value: bool = True) -> None:
        """A polyline of ``width`` with round joins and ends.

        Exact mode: one capsule per segment (pixel-centre sampling). Fast mode: OpenCV's thick
        polyline on the sub-pixel grid, several times faster for hair; OpenCV draws an odd number of
        sub-pixels (thickness t >= 2 gives 2 * ceil(t / 2) + 1), so the width is ``width`` rounded to
        sub-pixels and then down to an odd count, at most 1 sub-pixel less."""
        pts = np.asarray(points, np.float64)
        if self.fast_strokes:
            ss = self.ss
            fixed = np.round((pts * ss - 0.5) * 16).astype(np.int32).reshape(-1, 1, 2)
            thickness = max(1, 2 * ((round(width * ss) - 1) // 2))
            cv2.polylines(self.canvas, [fixed], closed, int(value), thickness, cv2.LINE_8, 4)
            return
        if closed:
            pts = np.concatenate([pts, pts[:1]])
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            self.capsule(a, b, width / 2, value)

    def stripes(self, box: tuple[float, float, float, float], angle: float, spacing: float, width: float,
                phase: float = 0.0) -> None:
        """Parallel lines inside ``box`` = (x0, y0, x1, y1): the points whose signed distance along the
        normal of direction ``angle``, minus ``phase``, modulo ``spacing`` is below ``width``."""
        x0, y0, x1, y1 = box
        found = self._window(x0, x1, y0, y1)
        if found is None:
            return
        window, xs, ys = found
        across = (xs * -np.sin(angle) + ys * np.cos(angle) - phase) % spacing
        inside = (across < width) & (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
        self._set(window, inside, True)

    def polygon(self, points: np.ndarray, value: bool = True) -> None:
        """Fill any simple polygon (OpenCV scan conversion at the sub-pixel grid, 1/16 precision)."""
        pts = (np.asarray(points, np.float64) * self.ss - 0.5) * 16
        cv2.fillPoly(self.canvas, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], int(value), cv2.LINE_8, 4)

    def text(self, text: str, origin: tuple[float, float], font: int, height: float, thickness: float,
             angle: float = 0.0) -> None:
        """Hershey text whose capitals are about ``height`` px tall, rotated by ``angle`` degrees."""
        ss = self.ss
        (_, base_h), _ = cv2.getTextSize("H", font, 1.0, 1)
        scale = height * ss / max(base_h, 1)
        thick = max(1, round(thickness * ss))
        layer = np.zeros_like(self.canvas)
        org = (round(origin[0] * ss), round(origin[1] * ss))
        cv2.putText(layer, text, org, font, scale, 1, thick, cv2.LINE_8)
        if angle:
            matrix = cv2.getRotationMatrix2D((float(org[0]), float(org[1])), angle, 1.0)
            layer = cv2.warpAffine(layer, matrix, (layer.shape[1], layer.shape[0]), flags=cv2.INTER_NEAREST)
        self.canvas |= layer

    def alpha(self) -> np.ndarray:
        """Coverage per output pixel, float32 in [0, 1] (multiples of 1 / supersample^2)."""
        ss = self.ss
        return self.canvas.reshape(self.height, ss, self.width, ss).mean(axis=(1, 3), dtype=np.float32)



# ---------------------------------------------------------------------------------------------- textures
def crop_resized(image: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random crop (50-100% of each side, aspect kept near the target's), flipped maybe, resized."""
    ih, iw = image.shape[:2]
    target = width / height
    fraction = rng.uniform(0.5, 1.0)
    ch = max(2, int(ih * fraction))
    cw = max(2, min(iw, int(ch * target)))
    ch = max(2, min(ih, int(cw / target)))
    y, x = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    crop = image[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_LINEAR)


def solid_texture(rng: np.random.Generator, height: int, width: int, colour: np.ndarray) -> np.ndarray:
    """A colour with a linear shading ramp and mild grain, float32 (H, W, 3)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.normal(size=2)
    ramp = (xs * direction[0] + ys * direction[1]) / max(height, width) * rng.uniform(0, 60)
    out = colour[None, None, :].astype(np.float32) + ramp[..., None]
    grain = cv2.resize(rng.normal(0, rng.uniform(1, 8), size=(max(2, height // 2), max(2, width // 2), 3))
                       .astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return out + grain


def foreground_texture(rng: np.random.Generator, library: ImageLibrary, background: np.ndarray,
                       background_index: int) -> np.ndarray:
    """A texture for one layer, float32 (H, W, 3): another photo, the background's own photo shifted,
    or a plain colour; often blended toward the background so the edge is low-contrast."""
    height, width = background.shape[:2]
    choice = rng.random()
    if choice < 0.45:
        texture = crop_resized(library.get(int(rng.integers(0, len(library))))[0], rng, height, width)
        texture = texture.astype(np.float32)
    elif choice < 0.6:
        texture = crop_resized(library.get(background_index)[0], rng, height, width).astype(np.float32)
    else:
        if rng.random() < 0.5:
            colour = rng.uniform(0, 255, size=3)
        else:
            colour = background.reshape(-1, 3).mean(axis=0) + rng.normal(0, 30, size=3)
        texture = solid_texture(rng, height, width, colour)
    if rng.random() < 0.3:
        t = rng.uniform(0.2, 0.6)
        texture = (1 - t) * texture + t * background
    return np.clip(texture, 0, 255)


def paste_layer(rng: np.random.Generator, library: ImageLibrary, height: int,
                width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A photo's foreground (its soft mask as alpha), rescaled and placed: (alpha, texture) or None."""
    image, mask = library.get(int(rng.integers(0, len(library))))
    ys, xs = np.nonzero(mask > 0.5)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    fit = min(height / (y1 - y0), width / (x1 - x0)) * rng.uniform(0.5, 1.0)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
        x0, x1 = image.shape[1] - x1, image.shape[1] - x0
    # Map the object's box to a random place in the canvas; pixels outside the photo get alpha 0.
    ty = rng.uniform(0, max(0.0, height - (y1 - y0) * fit)) - y0 * fit
    tx = rng.uniform(0, max(0.0, width - (x1 - x0) * fit)) - x0 * fit
    matrix = np.array([[fit, 0, tx], [0, fit, ty]], np.float64)
    alpha = cv2.warpAffine(np.ascontiguousarray(mask, np.float32), matrix, (width, height),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    texture = cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    return np.clip(alpha, 0, 1), texture.astype(np.float32)


def ensure_contrast(texture: np.ndarray, below: np.ndarray, where: np.ndarray, minimum: float) -> np.ndarray:
    """``texture`` shifted in brightness (away from ``below``) until their mean absolute difference
    over ``where`` is at least ``minimum`` grey levels, as far as [0, 255] allows. Draws no random numbers."""
    if not where.any():
        return texture
    fg, bg = texture[where], below[where]
    difference = float(np.abs(fg - bg).mean())
    if difference >= minimum:
        return texture
    bg_mean = float(bg.mean())
    sign = 1.0 if fg.mean() >= bg_mean else -1.0
    if (sign > 0 and bg_mean > 200) or (sign < 0 and bg_mean < 55):
        sign = -sign  # no room on that side
    return np.clip(texture + sign * (minimum - difference), 0, 255)


# ---------------------------------------------------------------------------------------------- composite
def _choose(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    p = np.array([weights[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def composite(rng: np.random.Generator, library: ImageLibrary, height: int, width: int, *,
              kinds: dict[str, float] | None = None, layers: tuple[int, int] = (1, 3),
              width_scale: float = 1.0, supersample: int = 4, max_tries: int = 8,
              anchor: dict[str, float] | None = None, fast_strokes: bool = False,
              min_contrast: float = 0.0) -> Composite:
    """One composite: a background from the library and ``layers`` drawn layers over it.

    ``width_scale`` multiplies every stroke width and spacing (1 = the 224-px training crop scale).
    ``anchor``, if given, sets the kind weights of the first layer (e.g. a pasted object that the
    thin layers then cross). ``fast_strokes`` draws polylines with OpenCV (see :meth:`Painter.stroke`).
    ``min_contrast`` (grey levels) shifts a drawn layer's texture away from what lies below it when
    their mean absolute difference under the shape is smaller, so no layer is invisible; 0 = off.
    A draw whose GT covers under 0.5% or over 85% of the image is discarded and redrawn.
    """
    kinds = kinds or DEFAULT_KINDS
    sample: Composite | None = None
    for _ in range(max_tries):
        background_index = int(rng.integers(0, len(library)))
        background = crop_resized(library.get(background_index)[0], rng, height, width).astype(np.float32)
        image, gt = background.copy(), np.zeros((height, width), np.float32)
        drawn = []
        for layer in range(int(rng.integers(layers[0], layers[1] + 1))):
            kind = _choose(rng, anchor if anchor and layer == 0 else kinds)
            if kind == "paste":
                pasted = paste_layer(rng, library, height, width)
                if pasted is None:
                    continue
                alpha, texture = pasted
            else:
                painter = Painter(height, width, supersample, fast_strokes)
                SHAPES[kind](painter, rng, width_scale)
                alpha = painter.alpha()
                texture = foreground_texture(rng, library, background, background_index)
                if min_contrast > 0:
                    texture = ensure_contrast(texture, image, alpha > 0.5, min_contrast)
            a = alpha[..., None]
            image = a * texture + (1 - a) * image
            gt = alpha + (1 - alpha) * gt
            drawn.append(kind)
        sample = Composite(np.clip(np.rint(image), 0, 255).astype(np.uint8), gt, drawn)
        if 0.005 <= float(gt.mean()) <= 0.85:
            return sample
    assert sample is not None
    return sample


def composite_from_seed(seed: int | Sequence[int], library: ImageLibrary, height: int, width: int,
                        **kwargs) -> Composite:
    """:func:`composite` with a generator seeded by ``seed``: the same seed gives the same sample."""
    return composite(np.random.default_rng(seed), library, height, width, **kwargs)
