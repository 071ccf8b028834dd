"""Label maps: seconds per id with each object worked on its box, against the whole photo per id.

A label map's ids are refined one by one on the whole photo (their stage grids are the photo's). A
small object's probability is zero outside its surroundings, so the resampling, the ROI band, the
guard and the line search work on the box outside which it is zero (``crm_cli.boxes``); this script
times ``labels.refine_labels`` with those boxes and with ``boxes.MIN_BOXED_ELEMENTS`` out of reach
(every map worked whole, as before session 64), in one process with the shipped weights, and checks
that both give the same label map.

    python benchmarks/label_maps.py                            # 3840x2160, 10 ids
    python benchmarks/label_maps.py --sizes 1920x1080,3840x2160 --ids 5,20 --repeat 3

The photo is a grid of ``crm_cli.synthetic`` scenes, one per id, each object's coarse mask its
low-resolution imitation; the objects fill about a third of their cells. Run it on a quiet machine
and compare rows of one run only.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import numpy as np
from sizes import sizes

from crm_cli import boxes
from crm_cli.labels import refine_labels
from crm_cli.synthetic import coarse_mask, synthetic_scene

NEVER = 1 << 62


def label_scene(height: int, width: int, ids: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(RGB photo, uint8 label map): ``ids`` synthetic objects on a grid of cells, each id the coarse
    mask of its own object (ids 1 to ``ids``, at most 255)."""
    if not 1 <= ids <= 255:
        raise ValueError(f"between 1 and 255 ids, not {ids}")
    columns = math.ceil(math.sqrt(ids * width / height))
    rows = math.ceil(ids / columns)
    cell_h, cell_w = height // rows, width // columns
    rng = np.random.default_rng(seed)
    photo = np.clip(rng.normal(90, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    label_map = np.zeros((height, width), np.uint8)
    for index in range(ids):
        top, left = (index // columns) * cell_h, (index % columns) * cell_w
        image, mask = synthetic_scene(cell_h, cell_w, seed=seed + index)
        photo[top:top + cell_h, left:left + cell_w] = image
        label_map[top:top + cell_h, left:left + cell_w][coarse_mask(mask, seed=seed + index) > 0] = index + 1
    return photo, label_map


def timed(refiner: object, photo: np.ndarray, label_map: np.ndarray, repeat: int) -> tuple[float, np.ndarray]:
    """Median seconds of ``repeat`` refinements of the label map, and its result."""
    seconds, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = refine_labels(refiner, photo, label_map)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when the boxed and the whole results differ."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=sizes, default=sizes("3840x2160"), help="WIDTHxHEIGHT,... (3840x2160)")
    parser.add_argument("--ids", default="10", help="how many ids, comma-separated counts (10)")
    parser.add_argument("--repeat", type=int, default=1, help="refinements per row, the median is shown (1)")
    parser.add_argument("--weights", default=None, help="checkpoint (the shipped default)")
    args = parser.parse_args(argv)
    try:
        counts = [int(item) for item in args.ids.split(",") if item.strip()]
    except ValueError:
        parser.error(f"--ids takes counts such as 5,20, not {args.ids!r}")
    from crm_cli import Refiner

    refiner = Refiner(args.weights, device="cpu")
    print(f"weights: {args.weights or 'shipped'}; device: {refiner.device_name}", file=sys.stderr)
    print("| size | ids | boxed s | per id | whole s | per id | speed-up | same map |")
    print("|---|---|---|---|---|---|---|---|")
    same_everywhere = True
    default_min = boxes.MIN_BOXED_ELEMENTS
    for width, height in args.sizes:
        for count in counts:
            photo, label_map = label_scene(height, width, count)
            refine_labels(refiner, photo, label_map)  # warm-up: tap tables, the encoder's arena
            boxes.MIN_BOXED_ELEMENTS = default_min
            boxed_s, boxed = timed(refiner, photo, label_map, args.repeat)
            boxes.MIN_BOXED_ELEMENTS = NEVER
            try:
                whole_s, whole = timed(refiner, photo, label_map, args.repeat)
            finally:
                boxes.MIN_BOXED_ELEMENTS = default_min
            same = bool(np.array_equal(boxed, whole))
            same_everywhere &= same
            print(f"| {width}x{height} | {count} | {boxed_s:.2f} | {boxed_s / count:.2f} | {whole_s:.2f} | "
                  f"{whole_s / count:.2f} | {whole_s / boxed_s:.2f}x | {'yes' if same else 'NO'} |", flush=True)
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
