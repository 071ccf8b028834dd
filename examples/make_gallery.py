"""Regenerate the README gallery: refine the shipped example and draw before/after pictures.

    python examples/make_gallery.py [--weights PATH] [--device cpu]

Writes examples/gallery/compare.jpg (the `crm compare` strip: coarse | refined | GT with zoomed
crops where coarse and refined differ most) and examples/gallery/overlay.jpg (coarse contour in
red, refined in green), plus examples/scene_refined.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from crm_cli.checkpoint import WeightsError
from crm_cli.compare import compare_strip
from crm_cli.devices import DeviceError
from crm_cli.engine import Refiner
from crm_cli.imageio import read_image, read_mask
from crm_cli.outputs import render_output
from crm_cli.writing import write_png

HERE = Path(__file__).resolve().parent


def save_jpeg(path: Path, rgb: np.ndarray, max_width: int = 1600) -> None:
    """Downscale to at most ``max_width`` and write a JPEG (keeps the repository small)."""
    if rgb.shape[1] > max_width:
        height = round(rgb.shape[0] * max_width / rgb.shape[1])
        rgb = cv2.resize(rgb, (max_width, height), interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])


def main() -> None:
    """Refine the example with the shipped (or given) weights and write the gallery pictures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    image = read_image(HERE / "scene_im.jpg")
    coarse = read_mask(HERE / "scene_seg.png").probability()
    gt = read_mask(HERE / "scene_gt.png").values
    try:
        refiner = Refiner(args.weights, device=args.device)
    except (DeviceError, WeightsError) as exc:  # the user's to fix: one line, as crm says it
        raise SystemExit(f"error: {exc}") from None
    probability = refiner.refine(image, coarse)
    refined = render_output("soft", probability)
    write_png(HERE / "scene_refined.png", refined)
    save_jpeg(HERE / "gallery" / "compare.jpg", compare_strip(image, coarse, refined, gt, crops=3))
    save_jpeg(HERE / "gallery" / "overlay.jpg", render_output("overlay", probability, image=image, coarse=coarse))


if __name__ == "__main__":
    main()
