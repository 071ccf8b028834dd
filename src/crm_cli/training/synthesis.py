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

from .painter import Painter
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
