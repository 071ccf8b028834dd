"""Masks and text matching shared by the ``crm score`` tests (a helper module, not a test file)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def squash(text: str) -> str:
    """Remove all whitespace: Rich may wrap long lines under CliRunner."""
    return "".join(text.split())


def square(top: int, left: int, side: int, shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    """A uint8 mask of ``shape``: 255 on the ``side`` x ``side`` square at (``top``, ``left``), 0 elsewhere."""
    mask = np.zeros(shape, np.uint8)
    mask[top:top + side, left:left + side] = 255
    return mask


def write_mask(path: Path, mask: np.ndarray) -> Path:
    """Write ``mask`` at ``path`` (its folders made), by OpenCV as a user's tool would; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask)
    return path


GT = square(10, 10, 20)  # rows and columns 10..29: 400 px
SHIFTED = square(12, 10, 20)  # GT two rows down: intersection 18 * 20 = 360, union 440
