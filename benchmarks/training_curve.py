"""Draw a training run's curve as a PNG (OpenCV only): loss and learning rate, then validation scores.

Top panel: the per-step loss (light) and its moving average (dark) on a log axis, with the steps
where the learning rate drops marked. Bottom panel: refined mBA (solid) and IoU (thin) of every
validation set in the log (columns ``refined_mba`` and ``NAME_refined_mba``), with each set's coarse
mBA as a dashed line of the same colour.

    python benchmarks/training_curve.py RUN/log.csv [-o benchmarks/training_curve.png] [--width 1200]
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import cv2
import numpy as np

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
           (227, 119, 194), (127, 127, 127)]  # RGB
INK, GRID, FONT = (40, 40, 40), (225, 225, 225), cv2.FONT_HERSHEY_SIMPLEX


def read_log(path: Path) -> dict[str, np.ndarray]:
    """Columns of the CSV log as float arrays (NaN where a cell is empty)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no rows")
    return {key: np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])
            for key in rows[0]}


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values."""
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, len(values) + 1)
    start = np.maximum(0, index - window)
    return (cumulative[index] - cumulative[start]) / (index - start)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= min((m for m in (1, 2, 5, 10) if m * step >= raw), default=10)
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step + 1e-9) + 1)]


class Panel:
    """A plot area inside the canvas with data-to-pixel mapping."""

    def __init__(self, canvas: np.ndarray, box: tuple[int, int, int, int], x_range: tuple[float, float],
                 y_range: tuple[float, float], log_y: bool = False) -> None:
        self.canvas, self.box, self.log_y = canvas, box, log_y
        self.x0, self.x1 = x_range
        self.y0, self.y1 = (math.log10(y_range[0]), math.log10(y_range[1])) if log_y else y_range

    def point(self, x: float, y: float) -> tuple[int, int]:
        left, top, right, bottom = self.box
        yv = math.log10(y) if self.log_y else y
        px = left + (x - self.x0) / max(self.x1 - self.x0, 1e-12) * (right - left)
        py = bottom - (yv - self.y0) / max(self.y1 - self.y0, 1e-12) * (bottom - top)
        return round(px), round(py)

    def frame(self, title: str, y_ticks: list[float], y_format: str) -> None:
        left, top, right, bottom = self.box
        for value in nice_ticks(self.x0, self.x1, 6):
            x, _ = self.point(value, 10 ** self.y0 if self.log_y else self.y0)
            cv2.line(self.canvas, (x, top), (x, bottom), GRID, 1)
            cv2.putText(self.canvas, f"{value:g}", (x - 14, bottom + 20), FONT, 0.45, INK, 1, cv2.LINE_AA)
        for value in y_ticks:
            _, y = self.point(self.x0, value)
            if top <= y <= bottom:
                cv2.line(self.canvas, (left, y), (right, y), GRID, 1)
                cv2.putText(self.canvas, format(value, y_format), (8, y + 5), FONT, 0.45, INK, 1, cv2.LINE_AA)
        cv2.rectangle(self.canvas, (left, top), (right, bottom), INK, 1)
        cv2.putText(self.canvas, title, (left, top - 10), FONT, 0.55, INK, 1, cv2.LINE_AA)

    def line(self, xs: np.ndarray, ys: np.ndarray, colour: tuple[int, int, int], thickness: int = 1,
             dashed: bool = False) -> None:
        keep = np.isfinite(ys) & ((ys > 0) if self.log_y else True)
        pts = np.array([self.point(x, y) for x, y in zip(xs[keep], ys[keep], strict=True)], np.int32)
        if len(pts) == 1:
            cv2.circle(self.canvas, tuple(int(v) for v in pts[0]), thickness + 2, colour, -1, cv2.LINE_AA)
        elif dashed:
            for a, b in zip(pts[:-1], pts[1:], strict=True):
                length = max(1.0, float(np.hypot(*(b - a))))
                for t in np.arange(0, length, 12):
                    p = a + (b - a) * t / length
                    q = a + (b - a) * min(t + 6, length) / length
                    cv2.line(self.canvas, tuple(int(v) for v in p), tuple(int(v) for v in q), colour, thickness,
                             cv2.LINE_AA)
        elif len(pts) > 1:
            cv2.polylines(self.canvas, [pts.reshape(-1, 1, 2)], False, colour, thickness, cv2.LINE_AA)
        if len(pts) > 1 and not dashed:
            cv2.circle(self.canvas, tuple(int(v) for v in pts[-1]), thickness + 1, colour, -1, cv2.LINE_AA)


def validation_sets(log: dict[str, np.ndarray]) -> list[str]:
    """Prefixes of the validation sets with any score in the log ('' = the held-out DUTS pairs)."""
    prefixes = [key[: -len("refined_mba")] for key in log if key.endswith("refined_mba")]
    return [p for p in prefixes if np.isfinite(log[p + "refined_mba"]).any()]


def draw(log: dict[str, np.ndarray], width: int = 1200, height: int = 800, smooth: int = 50) -> np.ndarray:
    """The curve image, RGB uint8 (height, width, 3)."""
    canvas = np.full((height, width, 3), 255, np.uint8)
    steps = log["step"]
    x_range = (0.0, float(max(steps.max(), 1)))
    left, right = 70, width - 190
    split = height // 2
    loss = log["loss"]
    positive = loss[np.isfinite(loss) & (loss > 0)]
    low, high = (float(positive.min()), float(positive.max())) if len(positive) else (0.1, 1.0)
    low, high = low * 0.9, high * 1.1
    top_panel = Panel(canvas, (left, 40, right, split - 40), x_range, (low, high), log_y=True)
    decades = [10.0 ** e * m for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
               for m in (1, 2, 5)]
    top_panel.frame("training loss (log) - light: per step, dark: moving average", decades, ".3g")
    if "lr" in log:
        drops = np.flatnonzero(np.diff(log["lr"]) < 0)
        for k in drops:
            x, _ = top_panel.point(float(steps[k + 1]), high)
            cv2.line(canvas, (x, 40), (x, split - 40), (250, 180, 180), 1)
            cv2.putText(canvas, f"lr {log['lr'][k + 1]:.2g}", (x + 4, 56), FONT, 0.4, (200, 60, 60), 1, cv2.LINE_AA)
    top_panel.line(steps, loss, (190, 200, 225), 1)
    top_panel.line(steps, moving_average(np.nan_to_num(loss, nan=float(np.nanmean(loss))), smooth), (20, 60, 150), 2)
    sets = validation_sets(log)
    values = [log[p + k] * 100 for p in sets for k in ("refined_mba", "coarse_mba", "refined_iou")]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    v_low, v_high = (float(finite.min()) - 1, float(finite.max()) + 1) if len(finite) else (0.0, 100.0)
    bottom_panel = Panel(canvas, (left, split + 30, right, height - 40), x_range, (v_low, v_high))
    bottom_panel.frame("validation (%) - solid: refined mBA, thin: refined IoU, dashed: coarse mBA",
                       nice_ticks(v_low, v_high, 6), "g")
    for k, prefix in enumerate(sets):
        colour = COLOURS[k % len(COLOURS)]
        bottom_panel.line(steps, log[prefix + "refined_mba"] * 100, colour, 2)
        bottom_panel.line(steps, log[prefix + "refined_iou"] * 100, colour, 1)
        bottom_panel.line(steps, log[prefix + "coarse_mba"] * 100, colour, 1, dashed=True)
        last = log[prefix + "refined_mba"][np.isfinite(log[prefix + "refined_mba"])][-1] * 100
        label = f"{prefix.rstrip('_') or 'duts-heldout'} {last:.1f}"
        cv2.putText(canvas, label, (right + 12, split + 50 + 22 * k), FONT, 0.5, colour, 1, cv2.LINE_AA)
    if not sets:
        cv2.putText(canvas, "no validation yet", (left + 20, split + 70), FONT, 0.6, INK, 1, cv2.LINE_AA)
    cv2.putText(canvas, "step", (right - 30, height - 8), FONT, 0.45, INK, 1, cv2.LINE_AA)
    return canvas


def main() -> None:
    """Read the log, draw, write the PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="a run's log.csv, or the run folder")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("training_curve.png"))
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--smooth", type=int, default=50, help="moving-average window in steps")
    args = parser.parse_args()
    path = args.log / "log.csv" if args.log.is_dir() else args.log
    if not path.is_file():
        raise SystemExit(f"{path}: no such file (give a run's log.csv, or the run folder)")
    image = draw(read_log(path), args.width, args.height, args.smooth)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.output), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"could not write {args.output}")
    print(args.output)


if __name__ == "__main__":
    main()
