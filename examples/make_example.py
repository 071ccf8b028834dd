"""Regenerate the shipped example: a procedural 2048x1536 scene, its exact mask and a coarse mask.

The scene is made here (no third-party data): a wobbly object with thin spikes and a hole on a
textured background; the coarse mask imitates a low-resolution segmentation network (the mask on a
56-cell grid, disturbed by smooth noise, upsampled and thresholded).

    python examples/make_example.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from crm_cli.synthetic import coarse_mask, synthetic_scene

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Write scene_im.jpg, scene_gt.png and scene_seg.png (BIG layout) next to this script, or to --out."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    # Parsed even without options, so that --help prints this instead of rewriting the shipped files
    # (another OpenCV's JPEG encoder gives other bytes, and then another refined example).
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write to (default: examples/)")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    image, exact = synthetic_scene(1536, 2048, seed=7)
    coarse = coarse_mask(exact, cells=56, seed=7)
    cv2.imwrite(str(out / "scene_im.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    cv2.imwrite(str(out / "scene_gt.png"), exact)
    cv2.imwrite(str(out / "scene_seg.png"), coarse)


if __name__ == "__main__":
    main()
