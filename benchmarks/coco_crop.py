"""`crm coco` on a synthetic 6K image with many small instances: crop path against full-image path.

Builds one 6000x4000 scene with ``--instances`` objects (ellipses, rotated boxes and wobbly blobs,
40-320 px, each in its own colour over a textured background) and a detector-style coarse mask per
object (its box resampled to 28x28 and back, as Mask R-CNN's masks are). Every instance is refined
through ``crm_cli.coco.refine_instance`` (RLE decode, crop, refine, RLE encode) in a crop around its
box; the first ``--full-instances`` are also refined on the whole image (``--full-image``). Reports
time per instance and the mean IoU against the exact masks, coarse and refined, for both paths on
the same instances.

    python benchmarks/coco_crop.py [--size 6000x4000] [--instances 200] [--full-instances 8]
                                   [--preset NAME] [--device cpu] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np
from script_errors import one_line_errors
from sizes import size

DETECTOR_MASK_SIDE = 28


def textured_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour blotches plus fine noise (uint8 RGB)."""
    small = rng.integers(40, 140, size=(max(2, height // 64), max(2, width // 64), 3)).astype(np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-12, 13, size=image.shape, dtype=np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def draw_object(shape: str, centre: tuple[int, int], size: int, rng: np.random.Generator,
                canvas: np.ndarray) -> None:
    """Fill one object of about ``size`` px into ``canvas`` (uint8, 1 inside)."""
    cx, cy = centre
    angle = float(rng.uniform(0, 180))
    if shape == "ellipse":
        axes = (size // 2, max(4, int(size * rng.uniform(0.25, 0.5))))
        cv2.ellipse(canvas, (cx, cy), axes, angle, 0, 360, 1, -1)
    elif shape == "box":
        corners = cv2.boxPoints(((cx, cy), (size, size * rng.uniform(0.3, 0.9)), angle))
        cv2.fillPoly(canvas, [np.round(corners).astype(np.int32)], 1)
    else:
        angles = np.linspace(0, 2 * np.pi, 180, endpoint=False)
        radius = size / 2 * (1 + 0.2 * np.sin(3 * angles + rng.uniform(0, 6)) + 0.08 * np.sin(9 * angles))
        outline = np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], 1)
        cv2.fillPoly(canvas, [np.round(outline).astype(np.int32)], 1)


def scene(height: int, width: int, count: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[tuple, np.ndarray]]]:
    """Image and ``count`` non-overlapping objects as (box (x0, y0, x1, y1), exact mask inside the box).

    Masks are kept box-sized: 200 full-size masks of a 6K image would take 5 GB.
    """
    rng = np.random.default_rng(seed)
    image = textured_background(height, width, rng)
    columns = int(np.ceil(np.sqrt(count * width / height)))
    rows = int(np.ceil(count / columns))
    cell_w, cell_h = width // columns, height // rows
    objects = []
    for k in range(count):
        row, column = divmod(k, columns)
        size = int(min(rng.uniform(40, 320), 0.8 * min(cell_w, cell_h)))
        centre = (column * cell_w + cell_w // 2 + int(rng.integers(-cell_w // 10, cell_w // 10 + 1)),
                  row * cell_h + cell_h // 2 + int(rng.integers(-cell_h // 10, cell_h // 10 + 1)))
        x0, y0 = max(0, centre[0] - size), max(0, centre[1] - size)
        x1, y1 = min(width, centre[0] + size), min(height, centre[1] + size)
        local = np.zeros((y1 - y0, x1 - x0), np.uint8)
        draw_object(("ellipse", "box", "blob")[k % 3], (centre[0] - x0, centre[1] - y0), size, rng, local)
        inside = local > 0
        colour = rng.integers(150, 240, size=3)
        noise = rng.integers(-18, 19, size=(int(inside.sum()), 3))
        image[y0:y1, x0:x1][inside] = np.clip(colour + noise, 0, 255).astype(np.uint8)
        objects.append(((x0, y0, x1, y1), inside))
    return image, objects


def detector_coarse(mask: np.ndarray) -> np.ndarray:
    """The mask as a detector predicts it: its tight box resampled to 28x28 and back, thresholded."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mask[y0:y1, x0:x1].astype(np.float32)
    small = cv2.resize(crop, (DETECTOR_MASK_SIDE, DETECTOR_MASK_SIDE), interpolation=cv2.INTER_AREA)
    up = cv2.resize(small, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) > 0.5
    coarse = np.zeros_like(mask)
    coarse[y0:y1, x0:x1] = up
    return coarse


def local_runs(local: np.ndarray, box: tuple, height: int, width: int) -> np.ndarray:
    """COCO runs of a full-size mask that is ``local`` inside ``box`` and empty elsewhere."""
    from crm_cli.coco import runs_from_columns

    x0, y0, x1, y1 = box
    block = np.zeros((height, x1 - x0), bool)
    block[y0:y1] = local
    return runs_from_columns(block, width, x0)


def local_rle(local: np.ndarray, box: tuple, height: int, width: int) -> dict:
    """Compressed COCO RLE of a full-size mask that is ``local`` inside ``box`` and empty elsewhere."""
    from crm_cli.coco import encode_rle_string

    return {"size": [height, width], "counts": encode_rle_string(local_runs(local, box, height, width))}


def instance_iou(segmentation: dict, exact_runs: np.ndarray, height: int, width: int) -> float:
    """IoU over the whole image of a segmentation against the exact mask's runs, by the library's
    ``crm_cli.coco.score_instance`` (as ``crm score`` scores COCO files; it decodes only a window)."""
    from crm_cli.coco import runs_from_segmentation, score_instance

    return score_instance(runs_from_segmentation(segmentation, height, width), exact_runs, height, width).iou


def refine_all(refiner, image: np.ndarray, segmentations: list, options) -> tuple[list[dict], list[float]]:  # noqa: ANN001
    """Refine each segmentation; returns the refined segmentations and seconds per instance."""
    from crm_cli.coco import refine_instance

    refined, seconds = [], []
    for segmentation in segmentations:
        start = time.perf_counter()
        result = refine_instance(refiner, image, segmentation, options)
        seconds.append(time.perf_counter() - start)
        refined.append(result["segmentation"] if result["status"] == "refined" else segmentation)
    return refined, seconds


@one_line_errors
def main() -> int:
    """Run the comparison and print a table (or JSON)."""
    from crm_cli.coco import RefineOptions
    from crm_cli.devices import resolve_device
    from crm_cli.engine import Refiner
    from crm_cli.presets import DEFAULT_PRESET, PRESETS
    from crm_cli.runtime import configure_torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="6000x4000", type=size, help="WIDTHxHEIGHT of the synthetic image")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--full-instances", type=int, default=8, help="instances also refined on the whole image")
    parser.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    width, height = args.size
    device = resolve_device(args.device)  # before the scene: an absent GPU stops at once

    image, objects = scene(height, width, args.instances)
    segmentations = [local_rle(detector_coarse(exact), box, height, width) for box, exact in objects]
    configure_torch(args.threads, device)
    refiner = Refiner.from_checkpoint(device=args.device)
    preset = PRESETS[args.preset]
    # A corner of at most 256 px, so that a small --size warms up too.
    side_y, side_x = min(256, height), min(256, width)
    warm_up = np.zeros((side_y, side_x), np.uint8)
    warm_up[side_y // 4: 3 * side_y // 4, side_x // 4: 3 * side_x // 4] = 255
    refiner.refine(image[:side_y, :side_x].copy(), warm_up, preset=preset)

    crop, crop_seconds = refine_all(refiner, image, segmentations, RefineOptions(preset=preset))
    subset = min(args.full_instances, args.instances)
    full, full_seconds = refine_all(refiner, image, segmentations[:subset],
                                    RefineOptions(preset=preset, full_image=True))

    exact_runs = [local_runs(exact, box, height, width) for box, exact in objects]

    def ious(found: list[dict]) -> list[float]:
        return [instance_iou(s, runs, height, width) for s, runs in zip(found, exact_runs, strict=False)]

    coarse_iou, crop_iou, full_iou = ious(segmentations), ious(crop), ious(full)
    report = {
        "size": f"{width}x{height}", "instances": args.instances, "preset": args.preset, "device": args.device,
        "threads": args.threads,
        "crop": {"seconds_total": sum(crop_seconds), "ms_per_instance": 1000 * float(np.mean(crop_seconds)),
                 "coarse_iou": float(np.mean(coarse_iou)), "refined_iou": float(np.mean(crop_iou)),
                 "instances_worse_than_coarse": int(sum(r < c for r, c in zip(crop_iou, coarse_iou, strict=True)))},
        "subset": {"instances": subset,
                   "crop_ms_per_instance": 1000 * float(np.mean(crop_seconds[:subset])),
                   "full_ms_per_instance": 1000 * float(np.mean(full_seconds)),
                   "coarse_iou": float(np.mean(coarse_iou[:subset])),
                   "crop_iou": float(np.mean(crop_iou[:subset])), "full_iou": float(np.mean(full_iou))},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    crop, part = report["crop"], report["subset"]
    print(f"{report['size']}, {args.instances} instances, preset {args.preset}, device {args.device}")
    print(f"crop path, all instances : {crop['ms_per_instance']:8.1f} ms/instance, {crop['seconds_total']:.1f} s "
          f"total; IoU {100 * crop['coarse_iou']:.2f} -> {100 * crop['refined_iou']:.2f} "
          f"({crop['instances_worse_than_coarse']} below coarse)")
    ratio = part["full_ms_per_instance"] / part["crop_ms_per_instance"]
    print(f"first {subset} instances      : crop {part['crop_ms_per_instance']:.1f} ms, full image "
          f"{part['full_ms_per_instance']:.1f} ms ({ratio:.1f}x); "
          f"IoU coarse {100 * part['coarse_iou']:.2f}, crop {100 * part['crop_iou']:.2f}, "
          f"full {100 * part['full_iou']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
