"""The raster of synthetic layers: a binary canvas sampled at sub-pixel centres, whose coverage is
a layer's exact alpha (see ``synthesis``)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


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
        """Fill the axis-aligned box [x0, x1] x [y0, y1]: the sub-pixels whose centres lie inside it or on
        its edges (corners on the sub-pixel grid put no centre on an edge, so its alpha sum is its area)."""
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
