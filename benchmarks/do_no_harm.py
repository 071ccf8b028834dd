"""Do no harm: perfect masks given as the coarse mask, and how much of each a refinement keeps.

A refiner that changes little is forgiven, one that damages a good mask is not. Each case here is a
photo with a mask drawn exactly where its object is; the table gives the refined mask's IoU and mBA
against that mask (100 / 100: kept). Generated cases, no data needed (session 55's audit):

- ``lines W``: six dark lines W px wide (1 to 4) on a textured photo; sessions 56 and 58 keep those of 1 to 3 px;
- ``lines W turned``: the 3- and 4-px cases turned on their diagonal (photo and mask transposed). A
  model trained on left-right flips alone can keep a line in one orientation and erase it in the other;
  the pair shows it (session 57: 5,019 pixels of the 4-px lines lost at 2K as drawn, 1,233 turned; the
  3-px lines turned lost 7,104 until session 58 kept them);
- ``text``: white text on a textured photo (the letters' counters are holes of the mask);
- ``disc flat`` / ``disc noise``: a disc on a photo of one flat colour, and on pure noise;
- ``disc under noise``: a disc 20 grey levels above its background under normal noise of std 30
  (session 59: a sensor at high gain, ultrasound);
- ``scene``: ``crm_cli.synthetic``'s scene with its exact mask (thin spikes and a hole).

With ``--big DIR``, each ``*_gt.png`` of a BIG-layout folder is given as its own coarse mask too
(Carvana's ground truth is drawn about 0.7 px inside the photo's edges, so the edge snap moves it).

    python benchmarks/do_no_harm.py [--weights W] [--device cpu] [--sizes 640x480,2048x1536]
                                    [--big DIR] [--limit N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from script_errors import one_line_errors
from sizes import sizes

from crm_cli.evaluation import soft_foreground
from crm_cli.metrics import score_pair
from crm_cli.synthetic import synthetic_scene

DEFAULT_SIZES = "640x480,1024x768,2048x1536"
LINE_WIDTHS = (1, 2, 3, 4, 5, 6)
TURNED_LINE_WIDTHS = (3, 4, 5, 6)
# A case counts as harmed below either score (percent).
HARM_IOU = 99.0
HARM_MBA = 95.0
# ``disc under noise``: the disc's step above its background and the noise's std (grey levels).
DISC_STEP = 20.0
DISC_NOISE = 30.0


@dataclass
class Case:
    """One photo and the perfect mask given as its coarse mask."""

    name: str
    photo: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) uint8 0/255


def textured_photo(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour blotches with fine noise: edges everywhere, none of them the mask's."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    photo = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-12, 13, photo.shape)
    return np.clip(photo.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def lines_case(height: int, width: int, line_width: int, seed: int) -> Case:
    """Six dark lines ``line_width`` px wide drawn on a textured photo, and their exact mask: lines one
    pixel wide widened by a ``line_width`` square (OpenCV's own thick lines are wider than asked)."""
    rng = np.random.default_rng(seed)
    photo = textured_photo(height, width, seed)
    mask = np.zeros((height, width), np.uint8)
    for _ in range(6):
        start = tuple(int(v) for v in rng.integers(0, [width, height]))
        end = tuple(int(v) for v in rng.integers(0, [width, height]))
        cv2.line(mask, start, end, 255, 1)
    if line_width > 1:
        mask = cv2.dilate(mask, np.ones((line_width, line_width), np.uint8))
    photo[mask > 0] = 20
    return Case(f"lines {line_width}", photo, mask)


def turned(case: Case) -> Case:
    """``case`` turned on its diagonal: photo and mask transposed (a width x height photo), named so."""
    return Case(f"{case.name} turned", np.ascontiguousarray(case.photo.transpose(1, 0, 2)),
                np.ascontiguousarray(case.mask.T))


def text_case(height: int, width: int, seed: int) -> Case:
    """White text on a darkened textured photo; letters about a twentieth of the width tall."""
    photo = textured_photo(height, width, seed) // 2
    mask = np.zeros((height, width), np.uint8)
    scale = width / 2048
    for row, words in enumerate(("hello crm", "eoa good dog", "refine me")):
        origin = (int(100 * scale), int((300 + 400 * row) * height / 1536))
        cv2.putText(mask, words, origin, cv2.FONT_HERSHEY_SIMPLEX, 6 * scale, 255, max(1, int(12 * scale)),
                    cv2.LINE_8)
    # OpenCV 5 anti-aliases Hershey text whatever the line type: the letters' edge pixels hold
    # partial values. Keep the covered half, so the photo's white letters and the mask are one shape.
    mask = np.where(mask >= 128, 255, 0).astype(np.uint8)
    photo[mask > 0] = 255
    return Case("text", photo, mask)


def disc_mask(height: int, width: int) -> np.ndarray:
    """A centred disc of a third of the short side in radius, 0/255."""
    mask = np.zeros((height, width), np.uint8)
    cv2.circle(mask, (width // 2, height // 2), min(height, width) // 3, 255, -1)
    return mask


def disc_under_noise(height: int, width: int, step: float = DISC_STEP, noise: float = DISC_NOISE,
                     seed: int = 0) -> Case:
    """A grey photo of a disc ``step`` levels above mid grey under normal noise of std ``noise`` (the
    same in each channel), and the disc's exact mask."""
    mask = disc_mask(height, width)
    grey = 128.0 + step * (mask > 0) + np.random.default_rng(seed).normal(0.0, noise, (height, width))
    photo = np.repeat(np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return Case("disc under noise", photo, mask)


def disc_case(height: int, width: int, kind: str) -> Case:
    """A disc's exact mask on a photo with no content, ``flat`` (mid grey) or ``noise``; or, ``under
    noise``, :func:`disc_under_noise`'s."""
    if kind == "under noise":
        return disc_under_noise(height, width)
    if kind == "flat":
        photo = np.full((height, width, 3), 128, np.uint8)
    else:
        photo = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Case(f"disc {kind}", photo, disc_mask(height, width))


def generated_cases(photo_sizes: list[tuple[int, int]]) -> Iterator[Case]:
    """Every generated case at every (width, height), in a fixed order; the same each run."""
    for width, height in photo_sizes:
        for line_width in LINE_WIDTHS:
            yield lines_case(height, width, line_width, seed=line_width)
        for line_width in TURNED_LINE_WIDTHS:
            yield turned(lines_case(height, width, line_width, seed=line_width))
        yield text_case(height, width, seed=7)
        yield disc_case(height, width, "flat")
        yield disc_case(height, width, "noise")
        yield disc_case(height, width, "under noise")
        photo, mask = synthetic_scene(height, width)
        yield Case("scene", photo, mask)


def big_cases(folder: Path, limit: int) -> Iterator[Case]:
    """Each ``*_gt.png`` of a BIG-layout folder with its ``*_im.jpg``, the ground truth as the mask."""
    truths = sorted(folder.glob("*_gt.png"))
    for truth in truths[:limit] if limit else truths:
        photo = cv2.imread(str(truth.with_name(truth.name[:-len("_gt.png")] + "_im.jpg")), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(truth), cv2.IMREAD_GRAYSCALE)
        if photo is None or mask is None:
            raise FileNotFoundError(f"cannot read {truth} or its photo")
        yield Case(f"ground truth {truth.name[:-len('_gt.png')]}", photo[:, :, ::-1].copy(),
                   np.where(mask > 128, 255, 0).astype(np.uint8))


def score_case(refine: Callable[[np.ndarray, np.ndarray], np.ndarray], case: Case) -> dict[str, object]:
    """The row of one case: its name, size, and the refined mask's IoU and mBA (percent) against the
    given mask, and whether it counts as harmed."""
    refined = np.clip(np.round(refine(case.photo, case.mask) * 255), 0, 255).astype(np.uint8)
    score = score_pair(soft_foreground(refined), case.mask)
    iou, mba = 100 * score.iou, 100 * (score.mba if score.mba is not None else 1.0)
    height, width = case.mask.shape
    return {"case": case.name, "size": f"{width}x{height}", "iou": round(iou, 2), "mba": round(mba, 2),
            "harmed": iou < HARM_IOU or mba < HARM_MBA}


@one_line_errors
def main() -> None:
    """Refine every case with the given weights and print the table (and --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights (default: the shipped default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=sizes, default=DEFAULT_SIZES, help="generated photo sizes, WxH,...")
    parser.add_argument("--big", type=Path, default=None, help="a BIG-layout folder: its ground truths as masks")
    parser.add_argument("--limit", type=int, default=0, help="at most this many of --big's images")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    from crm_cli import Refiner

    refiner = Refiner(args.weights, device=args.device)
    cases = list(generated_cases(args.sizes))
    if args.big is not None:
        cases += list(big_cases(args.big, args.limit))
    print(f"{'case':40} {'size':>10} {'IoU':>7} {'mBA':>7}")
    rows = []
    for case in cases:
        row = score_case(refiner.refine, case)
        rows.append(row)
        flag = "  harmed" if row["harmed"] else ""
        print(f"{row['case']:40} {row['size']:>10} {row['iou']:7.2f} {row['mba']:7.2f}{flag}", flush=True)
    harmed = sum(bool(row["harmed"]) for row in rows)
    print(f"{harmed} of {len(rows)} perfect masks harmed (IoU under {HARM_IOU:g} or mBA under {HARM_MBA:g})")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"weights": args.weights, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
