"""Side-by-side comparison strips: full views with contours, then zoomed crops where masks differ.

Layout (RGB uint8)::

    [ image + coarse contour | image + refined contour | image + GT contour ]   <- common height
    [ crop 1: coarse mask    | refined mask            | GT mask            ]   <- nearest zoom
    [ crop 2 ... ]

Crops are the non-overlapping windows holding the most pixels where the binarised coarse and
refined masks disagree. Pure NumPy + OpenCV.
"""

from __future__ import annotations

import logging

import numpy as np

from .masks import binarize, check_rgb_image
from .outputs import COARSE_COLOR, GT_COLOR, OVERLAY_DIM, REFINED_COLOR, draw_contours

PANEL_HEIGHT = 512
MAX_PANEL_WIDTH = 4 * PANEL_HEIGHT  # a very wide image (a line scan) is fitted into this width instead
MIN_CELL = 256  # crop cells are at least this wide even when the top panels are narrow (a tall image)
GAP = 4
BACKGROUND_COLOR = (24, 24, 24)
WINDOW_COLOR = (255, 220, 0)
TEXT_COLOR = (255, 255, 255)
MASK_ALPHA = 0.5  # weight of the mask colour where a crop's mask is on

Window = tuple[int, int, int, int]  # y0, x0, y1, x1 in full-image pixels

logger = logging.getLogger(__name__)


def default_crop_size(height: int, width: int) -> int:
    """Crop side: an eighth of the short side, kept within 16..256 px (and the image)."""
    return min(height, width, max(16, min(256, min(height, width) // 8)))


def _positions(length: int, size: int, stride: int) -> np.ndarray:
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return np.asarray(starts, dtype=np.int64)


def _overlaps(a: Window, b: Window) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def difference_windows(coarse: np.ndarray, refined: np.ndarray, count: int, size: int) -> list[Window]:
    """Up to ``count`` non-overlapping ``size`` x ``size`` windows with the most differing pixels.

    Windows are picked greedily by the number of pixels where the two boolean masks differ, then
    shifted to centre on the differing pixels they hold (when that keeps them apart). When the masks
    agree everywhere the boundary of ``refined`` is used instead, so the crops still show edges.
    """
    import cv2

    coarse, refined = np.asarray(coarse, bool), np.asarray(refined, bool)
    height, width = refined.shape
    size = max(1, min(size, height, width))
    score = coarse != refined
    if not score.any():
        kernel = np.ones((3, 3), np.uint8)
        score = cv2.morphologyEx(refined.astype(np.uint8), cv2.MORPH_GRADIENT, kernel) > 0
    if count <= 0 or not score.any():
        return []
    stride = max(1, size // 8)
    ys, xs = _positions(height, size, stride), _positions(width, size, stride)
    table = cv2.integral(score.astype(np.uint8)).astype(np.int64)
    y0, x0 = ys[:, None], xs[None, :]
    sums = table[y0 + size, x0 + size] - table[y0, x0 + size] - table[y0 + size, x0] + table[y0, x0]

    chosen: list[Window] = []
    while len(chosen) < count:
        iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
        if sums[iy, ix] <= 0:
            break
        top, left = int(ys[iy]), int(xs[ix])
        window = (top, left, top + size, left + size)
        inside_y, inside_x = np.nonzero(score[top:top + size, left:left + size])
        cy, cx = top + int(inside_y.mean()), left + int(inside_x.mean())
        ny = min(max(0, cy - size // 2), height - size)
        nx = min(max(0, cx - size // 2), width - size)
        centred = (ny, nx, ny + size, nx + size)
        if not any(_overlaps(centred, other) for other in chosen):
            window = centred
        chosen.append(window)
        blocked = ((ys[:, None] < window[2]) & (ys[:, None] + size > window[0])
                   & (xs[None, :] < window[3]) & (xs[None, :] + size > window[1]))
        sums[blocked] = -1
    return chosen


def _label(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    """White text with a dark outline, readable on any background."""
    import cv2

    thickness = max(1, round(scale * 2))
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, TEXT_COLOR, thickness, cv2.LINE_AA)


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    height, width = size
    shrink = height < mask.shape[0]
    resized = cv2.resize(mask.astype(np.uint8) * 255, (width, height),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)
    return resized > 127


def _blend(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = out[mask] * (1 - MASK_ALPHA) + np.asarray(color, np.float32) * MASK_ALPHA
    return out.round().astype(np.uint8)


def _row(cells: list[np.ndarray], width: int) -> np.ndarray:
    """Cells side by side with gaps, centred on a background row ``width`` wide."""
    height = max(cell.shape[0] for cell in cells)
    row = np.empty((height, width, 3), np.uint8)
    row[:] = BACKGROUND_COLOR
    used = sum(cell.shape[1] for cell in cells) + GAP * (len(cells) - 1)
    x = max(0, (width - used) // 2)
    for cell in cells:
        row[:cell.shape[0], x:x + cell.shape[1]] = cell
        x += cell.shape[1] + GAP
    return row


def compare_strip(image: np.ndarray, coarse: np.ndarray, refined: np.ndarray, gt: np.ndarray | None = None,
                  crops: int = 3, crop_size: int | None = None,
                  panel_height: int = PANEL_HEIGHT) -> np.ndarray:
    """Build the comparison strip (RGB uint8) for one image.

    Args:
        image: (H, W, 3) uint8 RGB.
        coarse, refined, gt: (H, W) masks of any dtype (uint8/uint16/bool/float probability);
            binarised with the evaluation's > 128 (8-bit scale) rule. ``gt`` adds a third column.
        crops: number of zoomed crops below the full views (0 for none).
        crop_size: crop side in full-image pixels (default: :func:`default_crop_size`).
        panel_height: height of the full views in the top row.
    """
    import cv2

    image = check_rgb_image(image)
    height, width = image.shape[:2]
    named = [("coarse", coarse, COARSE_COLOR), ("refined", refined, REFINED_COLOR)]
    if gt is not None:
        named.append(("GT", gt, GT_COLOR))
    masks = []
    for name, mask, _ in named:
        mask = np.asarray(mask)
        if mask.shape[:2] != (height, width) or mask.ndim != 2:
            raise ValueError(f"{name} mask shape {mask.shape} does not match image size {width}x{height}")
        masks.append(binarize(mask))
    size = default_crop_size(height, width) if crop_size is None else max(1, min(crop_size, height, width))
    windows = difference_windows(masks[0], masks[1], crops, size)
    if len(windows) < crops:
        what = "pixel where the masks differ" if (masks[0] != masks[1]).any() else "pixel of the refined boundary"
        where = f"no other {size}x{size} window apart from {'it' if len(windows) == 1 else 'them'}" if windows \
            else f"no {size}x{size} window"
        logger.warning("%d of the %d crops asked for: %s holds a %s", len(windows), crops, where, what)

    # Top row: contours drawn at panel scale so they stay visible on downscaled 4K images. The
    # panels are panel_height tall unless that would make them wider than MAX_PANEL_WIDTH: a 300x1
    # (width x height) image scaled to 512 px tall would be a 153,600-px-wide panel.
    panel_height = max(1, panel_height)
    scale = min(panel_height / height, max(MAX_PANEL_WIDTH, panel_height) / width)
    panel_h = max(1, round(height * scale))
    panel_w = max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(image, (panel_w, panel_h), interpolation=interpolation)
    small = (small.astype(np.float32) * OVERLAY_DIM).round().astype(np.uint8)
    text_scale = max(0.4, panel_h / 512 * 0.8)
    margin = max(4, round(panel_h / 40))
    panels = []
    for (name, _, color), mask in zip(named, masks, strict=True):
        panel = small.copy()
        draw_contours(panel, _resize_mask(mask, (panel_h, panel_w)), color, max(1, round(panel_h / 256)))
        for number, (y0, x0, y1, x1) in enumerate(windows, start=1):
            p0 = (int(x0 * scale), int(y0 * scale))
            p1 = (min(panel_w - 1, int(np.ceil(x1 * scale))), min(panel_h - 1, int(np.ceil(y1 * scale))))
            cv2.rectangle(panel, p0, p1, WINDOW_COLOR, 1, cv2.LINE_8)
            _label(panel, str(number), (p0[0] + 2, max(p0[1] - 3, margin)), text_scale * 0.7)
        _label(panel, name, (margin, margin + round(20 * text_scale)), text_scale)
        panels.append(panel)
    # Crop rows: square cells as wide as a top panel (capped for very wide images, at least MIN_CELL
    # for very tall ones), masks blended over the full-resolution pixels.
    cell = max(1, min(max(panel_w, MIN_CELL), round(1.5 * panel_height)))
    cells_width = (cell + GAP) * len(panels) - GAP if windows else 0
    strip_width = max(panel_w * len(panels) + GAP * (len(panels) - 1), cells_width)
    rows = [_row(panels, strip_width)]

    for number, (y0, x0, y1, x1) in enumerate(windows, start=1):
        cells = []
        for (name, _, color), mask in zip(named, masks, strict=True):
            view = _blend(image[y0:y1, x0:x1], mask[y0:y1, x0:x1], color)
            zoom = cv2.INTER_AREA if cell < view.shape[0] else cv2.INTER_NEAREST
            view = cv2.resize(view, (cell, cell), interpolation=zoom)
            _label(view, f"#{number} {name}", (margin, margin + round(20 * text_scale)), text_scale)
            cells.append(view)
        rows.append(_row(cells, strip_width))

    gap_row = np.empty((GAP, strip_width, 3), np.uint8)
    gap_row[:] = BACKGROUND_COLOR
    parts: list[np.ndarray] = []
    for row in rows:
        if parts:
            parts.append(gap_row)
        parts.append(row)
    return np.ascontiguousarray(np.vstack(parts))
