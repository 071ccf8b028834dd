"""Procedural test scenes: an image with fine structure, its exact mask and a coarse mask.

Used by ``crm time --size``, the benchmarks and the shipped example; no external data.
"""

from __future__ import annotations

import cv2
import numpy as np


def synthetic_scene(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image and its exact 0/255 mask: a textured object with thin spikes and a hole."""
    rng = np.random.default_rng(seed)
    # Background: smooth colour gradient plus low-frequency blotches and fine noise.
    small = rng.integers(40, 140, size=(max(2, height // 64), max(2, width // 64), 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    image = np.clip(image.astype(np.int16) + rng.integers(-12, 13, size=image.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    cy, cx = height / 2, width / 2
    radius = 0.3 * min(height, width)
    angles = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    wobble = 1 + 0.12 * np.sin(5 * angles + rng.uniform(0, 6)) + 0.05 * np.sin(13 * angles)
    outline = np.stack([cx + radius * wobble * np.cos(angles), cy + radius * wobble * np.sin(angles)], 1)
    cv2.fillPoly(mask, [outline.astype(np.int32)], 255, lineType=cv2.LINE_8)
    # Thin spikes (hair-like structure) and a hole: what coarse masks lose.
    thickness = max(1, min(height, width) // 400)
    for angle in rng.uniform(0, 2 * np.pi, size=24):
        start = (cx + 0.9 * radius * np.cos(angle), cy + 0.9 * radius * np.sin(angle))
        length = radius * rng.uniform(0.25, 0.5)
        end = (start[0] + length * np.cos(angle), start[1] + length * np.sin(angle))
        cv2.line(mask, tuple(int(v) for v in start), tuple(int(v) for v in end), 255, thickness)
    cv2.circle(mask, (int(cx + radius * 0.2), int(cy - radius * 0.1)), int(radius * 0.18), 0, -1)
    colour = rng.integers(150, 230, size=3)
    stripes = (np.sin(np.arange(width) / max(2.0, width / 300)) * 25).astype(np.int16)
    body = np.clip(colour[None, None, :] + stripes[None, :, None], 0, 255).astype(np.uint8)
    body = np.broadcast_to(body, image.shape)
    image = np.where(mask[..., None] > 0, body, image)
    return image, mask


def coarse_mask(mask: np.ndarray, cells: int = 56, seed: int = 0) -> np.ndarray:
    """Imitate a low-resolution segmentation: the mask on a ``cells``-wide grid, noisy, upsampled."""
    rng = np.random.default_rng(seed)
    height, width = mask.shape
    small_w = cells
    small_h = max(2, round(cells * height / width))
    small = cv2.resize(mask.astype(np.float32) / 255.0, (small_w, small_h), interpolation=cv2.INTER_AREA)
    noise = cv2.resize(rng.normal(0, 0.15, size=(max(2, small_h // 4), max(2, small_w // 4))).astype(np.float32),
                       (small_w, small_h), interpolation=cv2.INTER_CUBIC)
    up = cv2.resize(small + noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return ((up > 0.5) * 255).astype(np.uint8)
