"""The shapes of synthetic layers: wires, fences, railings, spokes, straps, hair, text and polygons.

Each ``draw_*`` function draws one kind of structure with a ``painter.Painter`` at a random place,
size and angle from the generator it is given; ``SHAPES`` names them for the composite's mix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from .painter import Painter


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
