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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

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


# ---------------------------------------------------------------------------------------------- geometry
def ellipse_points(center: Sequence[float], rx: float, ry: float, angle: float = 0.0, n: int = 96) -> np.ndarray:
    """``n`` points on an ellipse (angle in radians)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=1)


def bezier(points: np.ndarray, n: int) -> np.ndarray:
    """``n`` points on the Bezier curve with the given control points (de Casteljau)."""
    t = np.linspace(0, 1, n)[:, None, None]
    ctrl = np.broadcast_to(np.asarray(points, np.float64)[None], (n, *np.shape(points))).copy()
    while ctrl.shape[1] > 1:
        ctrl = (1 - t) * ctrl[:, :-1] + t * ctrl[:, 1:]
    return ctrl[:, 0]


def wander(rng: np.random.Generator, start: Sequence[float], heading: float, length: float, step: float,
           bend: float) -> np.ndarray:
    """A smooth random curve of ``length`` px: the heading turns by a smooth random amount, about
    ``bend`` x pi radians in total (0 = straight, 1 = curls)."""
    n = max(2, int(length / step) + 1)
    knots = rng.normal(0, 1, size=4)
    rate = np.interp(np.linspace(0, 3, n), np.arange(4), knots)
    angles = heading + np.cumsum(rate) / n * bend * np.pi
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * step
    return np.asarray(start, np.float64) + np.concatenate([[[0.0, 0.0]], np.cumsum(steps[:-1], axis=0)])


def edge_point(rng: np.random.Generator, height: int, width: int, margin: float) -> np.ndarray:
    """A random point just outside one of the four image edges."""
    side = int(rng.integers(0, 4))
    along = rng.uniform(0, 1)
    if side == 0:
        return np.array([along * width, -margin])
    if side == 1:
        return np.array([along * width, height + margin])
    if side == 2:
        return np.array([-margin, along * height])
    return np.array([width + margin, along * height])


def _width(rng: np.random.Generator, low: float, high: float, scale: float) -> float:
    """A stroke width, log-uniform in [low, high] px at crop scale, times ``scale``, at least 1 px."""
    return max(1.0, float(np.exp(rng.uniform(np.log(low), np.log(high)))) * scale)


def _affine(rng: np.random.Generator, center: Sequence[float], rotate: float, squash: float) -> np.ndarray:
    """A 2x3 affine: rotation by up to ``rotate`` rad and a squash to [squash, 1] along one axis."""
    angle = rng.uniform(-rotate, rotate)
    c, s = np.cos(angle), np.sin(angle)
    sx, sy = (rng.uniform(squash, 1.0), 1.0) if rng.random() < 0.5 else (1.0, rng.uniform(squash, 1.0))
    shear = rng.uniform(-0.2, 0.2)
    linear = np.array([[c, -s], [s, c]]) @ np.array([[sx, shear], [0, sy]])
    offset = np.asarray(center) - linear @ np.asarray(center)
    return np.concatenate([linear, offset[:, None]], axis=1)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points) @ matrix[:, :2].T + matrix[:, 2]


# ---------------------------------------------------------------------------------------------- shapes
def draw_wires(p: Painter, rng: np.random.Generator, scale: float) -> None:
    """1-5 long sagging cables from edge to edge, 1-4 px; sometimes a parallel bundle."""
    h, w = p.height, p.width
    for _ in range(int(rng.integers(1, 6))):
        a, b = edge_point(rng, h, w, 4), edge_point(rng, h, w, 4)
        if np.hypot(*(b - a)) < 0.5 * min(h, w):
            b = np.array([w, h]) - a
        mid = (a + b) / 2 + rng.normal(0, 0.2, 2) * min(h, w)
        ctrl = np.array([a, (a + mid) / 2 + rng.normal(0, 0.1, 2) * min(h, w), mid, b])
        curve = bezier(ctrl, int(np.hypot(*(b - a)) / 4) + 8)
        width = _width(rng, 1.0, 4.0, scale)
        copies = int(rng.integers(2, 5)) if rng.random() < 0.25 else 1
        normal = np.array([-(b - a)[1], (b - a)[0]]) / max(np.hypot(*(b - a)), 1e-6)
        gap = rng.uniform(3, 12) * scale + width
        for k in range(copies):
            p.stroke(curve + normal * gap * k, width)


def _region(rng: np.random.Generator, h: int, w: int) -> tuple[float, float, float, float]:
    """A random axis-aligned box covering 40-100% of each side."""
    rw, rh = rng.uniform(0.4, 1.0) * w, rng.uniform(0.4, 1.0) * h
    x0, y0 = rng.uniform(0, w - rw), rng.uniform(0, h - rh)
    return x0, y0, x0 + rw, y0 + rh


def draw_fence(p: Painter, rng: np.random.Generator, scale: float) -> None:
    """A lattice (chain link, diamond or square grid) of 1-5 px bars, clipped to a box, maybe framed."""
    h, w = p.height, p.width
    x0, y0, x1, y1 = _region(rng, h, w)
    spacing = rng.uniform(7, 36) * scale
    width = _width(rng, 1.0, 5.0, scale)
    theta = rng.uniform(0, np.pi)
    phi = rng.choice([np.pi / 2, rng.uniform(np.pi / 4, np.pi / 2)])
    for direction in (theta, theta + phi):
        p.stripes((x0, y0, x1, y1), direction, spacing, width, rng.uniform(0, spacing))
    if rng.random() < 0.6:
        frame = _width(rng, 2.0, 12.0, scale)
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        p.stroke(corners, frame, closed=True)


def draw_railing(p: Painter, rng: np.random.Generator, scale: float) -> None:
    """Parallel slats (3-12 px, gaps 3-40 px) between two rails, under a mild affine distortion."""
    h, w = p.height, p.width
    x0, y0, x1, y1 = _region(rng, h, w)
    slat = _width(rng, 3.0, 12.0, scale)
    gap = _width(rng, 3.0, 40.0, scale)
    rail = _width(rng, 4.0, 12.0, scale)
    matrix = _affine(rng, ((x0 + x1) / 2, (y0 + y1) / 2), 0.3, 0.7)
    if rng.random() < 0.3:  # horizontal slats: swap the roles of x and y
        matrix = matrix @ np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
        x0, y0, x1, y1 = y0, x0, y1, x1
    x = x0 + rng.uniform(0, gap)
    while x < x1:
        p.bar(*_apply(matrix, np.array([[x + slat / 2, y0], [x + slat / 2, y1]])), slat)
        x += slat + gap
    for y in (y0 + rail / 2, y1 - rail / 2) if rng.random() < 0.8 else (y0 + rail / 2,):
        p.bar(*_apply(matrix, np.array([[x0 - rail, y], [x1 + rail, y]])), rail)


def draw_spokes(p: Painter, rng: np.random.Generator, scale: float) -> None:
    """One or two wheels: rim, optional tyre, hub and 6-36 spokes of 1-4 px, seen at an angle."""
    h, w = p.height, p.width
    for _ in range(int(rng.integers(1, 3))):
        radius = rng.uniform(0.2, 0.45) * min(h, w)
        centre = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
        matrix = _affine(rng, centre, np.pi, 0.55)
        n_rim = max(64, int(radius))
        rim = _apply(matrix, ellipse_points(centre, radius, radius, n=n_rim))
        p.stroke(rim, _width(rng, 2.0, 10.0, scale), closed=True)
        if rng.random() < 0.5:
            tyre = _width(rng, 4.0, 12.0, scale)
            p.stroke(_apply(matrix, ellipse_points(centre, radius + tyre, radius + tyre, n=n_rim)), tyre, closed=True)
        hub = radius * rng.uniform(0.05, 0.12)
        p.convex(_apply(matrix, ellipse_points(centre, hub, hub, n=32)))
        n = int(rng.integers(6, 37))
        spoke = _width(rng, 1.0, 4.0, scale)
        cross = rng.uniform(0, 0.6) if rng.random() < 0.5 else 0.0
        start = rng.uniform(0, 2 * np.pi)
        for k in range(n):
            a = start + 2 * np.pi * k / n
            b = a + (cross if k % 2 else -cross)
            inner = centre + hub * 0.8 * np.array([np.cos(b), np.sin(b)])
            outer = centre + radius * np.array([np.cos(a), np.sin(a)])
            p.bar(*_apply(matrix, np.array([inner, outer])), spoke)


def draw_straps(p: Painter, rng: np.random.Generator, scale: float) -> None:
    """A bag with a strap loop (4-12 px), or 1-3 ropes across the image."""
    h, w = p.height, p.width
    s = min(h, w)
    if rng.random() < 0.6:
        bw, bh = rng.uniform(0.25, 0.55) * w, rng.uniform(0.2, 0.45) * h
        bx, by = rng.uniform(0, w - bw), rng.uniform(0.35 * h, h - bh)
        body = np.array([[bx, by], [bx + bw, by], [bx + bw, by + bh], [bx, by + bh]])
        body[:2, 0] += np.array([1, -1]) * rng.uniform(0, 0.15) * bw  # a trapezoid, sharp corners
        p.convex(body)
        for _ in range(int(rng.integers(1, 3))):
            strap = _width(rng, 4.0, 12.0, scale)
            a = body[0] + np.array([rng.uniform(0.05, 0.3) * bw, strap / 2])
            b = body[1] - np.array([rng.uniform(0.05, 0.3) * bw, -strap / 2])
            rise = rng.uniform(0.3, 1.0) * by
            ctrl = np.array([a, a + [-0.1 * bw, -rise], b + [0.1 * bw, -rise], b])
            p.stroke(bezier(ctrl, 80), strap)
    else:
        for _ in range(int(rng.integers(1, 4))):
            a, b = edge_point(rng, h, w, 8), edge_point(rng, h, w, 8)
            ctrl = np.array([a, rng.uniform(0, 1, 2) * [w, h], rng.uniform(0, 1, 2) * [w, h], b])
            curve = bezier(ctrl, int(np.hypot(*(b - a)) / 3) + 16)
            width = _width(rng, 3.0, 12.0, scale)
            p.stroke(curve, width)
            if rng.random() < 0.3 and width > 4:  # a loose end hanging off the rope
                p.stroke(wander(rng, curve[len(curve) // 2], rng.uniform(0, 2 * np.pi), 0.2 * s, 2.0, 0.3),
                         width * 0.6)


def draw_hair(p: Painter, rng: np.random.Generator, scale: float) -> None:
    """A head-like blob with 60-300 curly or straight strands of 1-2.5 px growing out of it."""
    h, w = p.height, p.width
    s = min(h, w)
    rx, ry = rng.uniform(0.1, 0.25) * s, rng.uniform(0.1, 0.25) * s
    centre = np.array([rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h])
    tilt = rng.uniform(0, np.pi)
    p.convex(ellipse_points(centre, rx, ry, tilt))
    width = _width(rng, 1.0, 2.5, scale)
    bend = rng.uniform(0.05, 1.0)
    spread = rng.uniform(0.3, 1.0)  # fraction of the outline that grows hair
    start = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(60, 301))):
        t = start + rng.uniform(0, 2 * np.pi * spread)
        root = centre + np.array([rx * np.cos(t) * np.cos(tilt) - ry * np.sin(t) * np.sin(tilt),
                                  rx * np.cos(t) * np.sin(tilt) + ry * np.sin(t) * np.cos(tilt)]) * 0.9
        heading = np.arctan2(root[1] - centre[1], root[0] - centre[0]) + rng.normal(0, 0.4)
        strand = wander(rng, root, heading, rng.uniform(0.05, 0.35) * s, max(1.5, 2.0 * scale), bend)
        p.stroke(strand, width * rng.uniform(0.7, 1.0) if width > 1.4 else width)


_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
          cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789&%#"


def draw_text(p: Painter, rng: np.random.Generator, scale: float) -> None:
    """1-4 lines of random words, capitals 5-25% of the short side tall, strokes 1-12 px."""
    h, w = p.height, p.width
    for _ in range(int(rng.integers(1, 5))):
        height = rng.uniform(0.05, 0.25) * min(h, w)
        word = "".join(rng.choice(list(_LETTERS), size=int(rng.integers(2, 9))))
        thickness = min(_width(rng, 1.0, 12.0, scale), height / 3)
        origin = (rng.uniform(-0.1, 0.6) * w, rng.uniform(0.15, 1.0) * h)
        angle = rng.uniform(-30, 30) if rng.random() < 0.5 else 0.0
        p.text(word, origin, _FONTS[int(rng.integers(0, len(_FONTS)))], height, thickness, angle)


def draw_polygons(p: Painter, rng: np.random.Generator, scale: float) -> None:
    """1-5 sharp-cornered shapes: axis-aligned rectangles and frames, rotated boxes, polygons, stars."""
    h, w = p.height, p.width
    s = min(h, w)
    for _ in range(int(rng.integers(1, 6))):
        size = rng.uniform(0.1, 0.6) * s
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        kind = rng.random()
        if kind < 0.35:  # axis-aligned rectangle, sometimes a frame or a thin bar, on integer pixels
            bw, bh = round(size * rng.uniform(0.3, 1.5)), round(size * rng.uniform(0.3, 1.5))
            if rng.random() < 0.3:
                if rng.random() < 0.5:
                    bw = round(_width(rng, 1.0, 12.0, scale))
                else:
                    bh = round(_width(rng, 1.0, 12.0, scale))
            x0, y0 = round(cx - bw / 2), round(cy - bh / 2)
            p.rect(x0, y0, x0 + bw, y0 + bh)
            border = round(_width(rng, 2.0, 12.0, scale))
            if rng.random() < 0.3 and min(bw, bh) > 2 * border + 2:
                p.rect(x0 + border, y0 + border, x0 + bw - border, y0 + bh - border, value=False)
        elif kind < 0.55:  # rotated rectangle
            angle = rng.uniform(0, np.pi)
            u = np.array([np.cos(angle), np.sin(angle)])
            v = np.array([-u[1], u[0]])
            a, b = size * rng.uniform(0.2, 0.8), size * rng.uniform(0.2, 0.8)
            c = np.array([cx, cy])
            p.convex(np.array([c - a * u - b * v, c + a * u - b * v, c + a * u + b * v, c - a * u + b * v]))
        elif kind < 0.8:  # convex polygon
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 8))))
            radii = size * rng.uniform(0.3, 0.6)
            p.convex(np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1))
        else:  # star or other non-convex polygon
            n = int(rng.integers(4, 9))
            angles = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False) + rng.uniform(0, np.pi)
            radii = np.where(np.arange(2 * n) % 2 == 0, size * 0.5, size * rng.uniform(0.15, 0.35))
            p.polygon(np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1))


SHAPES: dict[str, Callable[[Painter, np.random.Generator, float], None]] = {
    "wires": draw_wires, "fence": draw_fence, "railing": draw_railing, "spokes": draw_spokes,
    "straps": draw_straps, "hair": draw_hair, "text": draw_text, "polygons": draw_polygons,
}


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
    difference = float(np.abs(texture[where] - below[where]).mean())
    if difference >= minimum:
        return texture
    sign = 1.0 if texture[where].mean() >= below[where].mean() else -1.0
    if (sign > 0 and below[where].mean() > 200) or (sign < 0 and below[where].mean() < 55):
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
