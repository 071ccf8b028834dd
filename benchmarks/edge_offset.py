"""Where masks' boundaries lie relative to the image's edges, in pixels.

Pixels are grouped in one-pixel layers by their signed distance from the mask's boundary (-0.5 is
the mask's outermost layer, +0.5 the first layer outside it), and the grey image's Sobel gradient
magnitude is averaged per layer over all images. Far from the boundary (4.5-6.5 px) each side has
its own texture level; that is subtracted on its side, and the centroid of what is left within
3.5 px is the offset: 0 when the boundaries lie on the image's edges, positive when the edges lie
outside the masks (drawn tight), negative when inside (drawn loose).

    python benchmarks/edge_offset.py FOLDER [--pred REFINED] [--limit 24]

FOLDER is in BIG layout (``*_im``, ``*_seg``, ``*_gt``); the ground truths and the coarse masks are
measured, and the refined masks in REFINED (``crm eval FOLDER -o REFINED``) with ``--pred``. A
ground truth that is drawn tight makes a refiner that follows the image's edges look too large.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from script_errors import one_line_errors

from crm_cli.guard import boundary_distance
from crm_cli.imageio import read_image, read_mask
from crm_cli.masks import binarize, match_mask_to_image
from crm_cli.pairing import scan_pairs
from crm_cli.score_pairs import scan_predictions

# Layer centres -6.5 .. +6.5: the near ones give the centroid, the far ones each side's texture level.
LAYERS = np.arange(-6.5, 7.0, 1.0)
NEAR = np.abs(LAYERS) <= 3.5
FAR = (np.abs(LAYERS) >= 4.5) & (np.abs(LAYERS) <= 6.5)


def gradient_magnitude(image: np.ndarray) -> np.ndarray:
    """Float32 (H, W): the Sobel gradient magnitude of the grey image (RGB uint8 in)."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))


def layer_sums(magnitude: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per layer of ``LAYERS``: the summed gradient magnitude and the pixel count (a binary mask)."""
    inside = np.asarray(mask).astype(bool)
    signed = np.where(inside, 0.5 - boundary_distance(inside), boundary_distance(inside) - 0.5)
    index = np.rint(signed - LAYERS[0]).astype(np.int64)
    valid = (index >= 0) & (index < len(LAYERS)) & np.isfinite(signed)
    sums = np.bincount(index[valid], weights=magnitude[valid], minlength=len(LAYERS))
    counts = np.bincount(index[valid], minlength=len(LAYERS)).astype(np.float64)
    return sums, counts


def mean_profile(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The mean gradient per layer (0 for an empty layer)."""
    return sums / np.maximum(counts, 1.0)


def edge_offset(sums: np.ndarray, counts: np.ndarray) -> float | None:
    """The centroid (px) of the near layers' gradient above each side's far texture level."""
    profile = mean_profile(sums, counts)
    level = np.zeros(len(LAYERS))
    for side in (LAYERS < 0, LAYERS > 0):
        far = FAR & side & (counts > 0)
        level[side] = profile[far].mean() if far.any() else 0.0
    excess = np.clip(profile - level, 0.0, None) * (NEAR & (counts > 0))
    if excess.sum() <= 0:
        return None
    return float((excess * LAYERS).sum() / excess.sum())


def edge_contrast(sums: np.ndarray, counts: np.ndarray) -> float:
    """The near layers' highest mean gradient over the far layers' mean: about 1 for a boundary
    that does not follow the image's edges (a blocky coarse mask), whose offset means nothing."""
    profile = mean_profile(sums, counts)
    near, far = NEAR & (counts > 0), FAR & (counts > 0)
    return float(profile[near].max() / max(profile[far].mean(), 1e-6)) if near.any() and far.any() else 0.0


def measure(items: list[tuple[Path, list[Path]]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Layer sums and counts per kind of mask, over ``(image, [one mask per kind])`` items; each
    image is read and differentiated once for all its masks."""
    kinds = len(items[0][1])
    totals = [(np.zeros(len(LAYERS)), np.zeros(len(LAYERS))) for _ in range(kinds)]
    for image_path, mask_paths in items:
        image = read_image(image_path)
        magnitude = gradient_magnitude(image)
        for (sums, counts), mask_path in zip(totals, mask_paths, strict=True):
            mask, _ = match_mask_to_image(read_mask(mask_path), image.shape[:2], str(image_path), str(mask_path))
            more_sums, more_counts = layer_sums(magnitude, binarize(mask.scoring_values()))
            sums += more_sums
            counts += more_counts
    return totals


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    """Print one row per kind of mask: images, offset (px), contrast and the near layers' mean gradient."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="BIG-layout folder (*_im, *_seg, *_gt)")
    parser.add_argument("--pred", type=Path, help="refined masks of the folder's pairs (crm eval -o)")
    parser.add_argument("--limit", type=int, default=0, help="measure every k-th pair, about this many (0: all)")
    args = parser.parse_args(argv)

    triples = [pair for pair in scan_pairs(args.folder).pairs if pair.gt is not None]
    if not triples:
        raise SystemExit(f"{args.folder}: no image/mask/GT triples")
    if args.limit and len(triples) > args.limit:
        triples = triples[:: len(triples) // args.limit][: args.limit]
    kinds = ["ground truth", "coarse"]
    items = [(t.image, [t.gt, t.mask]) for t in triples]
    if args.pred is not None:
        refined = {p.name: p.pred for p in scan_predictions(args.pred, args.folder).pairs}
        missing = [t.name for t in triples if t.name not in refined]
        if missing:
            raise SystemExit(f"{args.pred}: no refined mask for {len(missing)} of the {len(triples)} pairs "
                             f"measured ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                             f"write them with crm eval {args.folder} -o {args.pred}")
        kinds.append("refined")
        for (_, masks), t in zip(items, triples, strict=True):
            masks.append(refined[t.name])
    print("| masks | images | edge offset (px) | contrast | " + " | ".join(f"{x:+.1f}" for x in LAYERS[NEAR]) + " |")
    print("|---|---|---|---|" + "---|" * int(NEAR.sum()))
    for kind, (sums, counts) in zip(kinds, measure(items), strict=True):
        offset = edge_offset(sums, counts)
        shown = "n/a" if offset is None else f"{offset:+.2f}"
        layers = " | ".join(f"{v:.1f}" for v in mean_profile(sums, counts)[NEAR])
        print(f"| {kind} | {len(items)} | {shown} | {edge_contrast(sums, counts):.2f} | {layers} |")


if __name__ == "__main__":
    main()
