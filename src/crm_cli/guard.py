"""The trust region: changes far from the coarse mask's boundary need strong evidence from the model.

Within ``distance`` pixels of the coarse boundary the refined probability is kept as it is. Beyond
it, the refined logit is pulled towards the coarse side by up to ``strength`` (reached at twice the
distance), so a pixel far inside the coarse object only turns background when the model is very
sure (p < sigmoid(-strength), about 1% for the default), and likewise outside. The pull is smooth
in distance, so the guard adds no seams. Pure NumPy/OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np

from .boxes import Box, either_box, grown_box, nonzero_box, on_box, worth_a_box, worth_boxing
from .morphology import disc, thin_lines, wide_lines
from .schedule import HOLE_EDGE_ALIGNMENT, BoundaryGeometry, edge_map, outline_sharpness

# Logit pull far from the boundary: log(99), so a far flip needs the model at 99% (or 1%).
GUARD_CERTAINTY = 0.99
GUARD_STRENGTH = float(np.log(99.0))
_EPS = 1e-6
# holes_on_edges reads each region's alignment on its box grown by this (the outer band ends 8 px out).
HOLE_WINDOW_MARGIN = 10
# keep_precise_boundary undoes the changes within this distance (px) of the coarse boundary.
SHIFT_BAND_PX = 2.0
# keep_given_lines keeps the given mask's lines one pixel wide with at least this many pixels, and
# those two pixels wide with at least LINE_MIN_AREA pixels. A network's mask upsampled from its
# working size has no such lines; the IS-Net 1024 cars' stray wisps, mostly wrong, hold at most 47
# pixels one pixel wide, and their pieces under three pixels wide at most 117 pixels (session 56).
LINE_MIN_PIXELS = 64
LINE_MIN_AREA = 192
# And those three pixels wide with at least this many pixels under four pixels wide (session 58: the
# model erased a third of such lines at 2K in one orientation). Of the dev sets' coarse masks only 24
# hold such a piece (one IS-Net 1024 car, two thin-set masks, 21 IS-Net masks of thin photos), and
# keeping them moved those sets' means by at most 0.014 mBA.
LINE_MIN_WIDE_AREA = 288
# And lines four to six pixels wide (pieces under seven pixels wide with at least this many such
# pixels: a line five pixels wide 96 px long) whose outline is sharp on the photo all along it
# (``schedule.outline_sharpness``: nine in ten outline pixels score at least LINE_MIN_SHARPNESS), as
# on a mask drawn on the photo's own pixels. At 2K and 4K the model erased stretches of such lines
# drawn on a textured photo (do_no_harm.py: IoU 80-97 at 2048x1536, 74-97 at 3840x2160); they read
# 3.76-8.48. Every such piece of the dev sets' coarse masks reads at most 2.86 (an IS-Net mask of a
# thin-set composite, whose pasted edges are hard), and a strip with only one side on an edge, away
# from the image's border, at most 0.91 (session 60; probes in HISTORY).
LINE_MIN_SHARP_AREA = 480
LINE_MIN_SHARPNESS = 3.3
# The given mask's lines are looked for in its foreground's box grown by this much: more than the
# widest filter that finds them (the 11x11 join of wide lines, then outline_sharpness's 4 px box and
# its 7x7 window), so that a box's edge reads like the background beyond it.
LINE_SEARCH_MARGIN = 24


def certainty_pull(certainty: float) -> float:
    """The guard's ``strength`` under which a far pixel changes side only where the model is at least
    ``certainty`` sure (0.5 <= certainty < 1): the logit of ``certainty``; ValueError outside that range."""
    if not 0.5 <= certainty < 1:
        raise ValueError(f"a certainty must be at least 0.5 and below 1, not {certainty!r}")
    if certainty == GUARD_CERTAINTY:
        return GUARD_STRENGTH  # log 99 itself: the logit of 0.99 in floats is one ulp off
    return float(np.log(certainty / (1.0 - certainty)))


def boundary_distance(coarse: np.ndarray) -> np.ndarray:
    """Float32 (H, W): each pixel's distance (px) to the nearest pixel of the other coarse side."""
    inside = np.ascontiguousarray(coarse, dtype=np.uint8)
    outside = np.ascontiguousarray(1 - inside)
    # A single-sided mask has no boundary: distanceTransform would report a huge distance
    # everywhere, which is the right meaning here.
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_out = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.where(inside > 0, d_in, d_out)


def exact_distances(values: np.ndarray) -> np.ndarray:
    """Float32 Euclidean pixel distances made exact: the square root of the nearest whole squared distance.

    OpenCV's precise transform now and then returns a value one ulp off between processes (50.010002
    for the square root of 2501 in about one run in ten), which would make the guard's values differ
    in their last bit from run to run; a distance in pixels is always the root of a whole number.
    Exact up to 1,024 px even from values one ulp off (every whole square up to 2**20 is tested); farther,
    a float32 distance no longer pins its square, but the guard's ramp ends at twice its free distance
    (128 px for the default ladder's first stage, 0.125).
    """
    squared = np.rint(np.square(values, dtype=np.float64))
    return np.sqrt(squared).astype(np.float32)


def within_distance(distance: np.ndarray, limit: float) -> np.ndarray:
    """``distance <= limit`` for :func:`boundary_distance` values, decided as their whole squares would:
    the threshold sits halfway (in squares) between the last distance within the limit and the next."""
    if limit < 0:
        return np.zeros(np.shape(distance), dtype=bool)
    return distance < np.float32(np.sqrt(np.floor(limit * limit) + 0.5))


def candidate_distance(side: np.ndarray, candidates: np.ndarray, saturation: float) -> np.ndarray:
    """:func:`boundary_distance` at the flat indices ``candidates``, exact up to ``saturation``.

    The transforms run only on the candidates' bounding box grown by ``saturation``: a boundary
    pixel outside it is farther than that from every candidate, and beyond ``saturation`` the
    guard's weight no longer depends on the distance (a cropped distance is never shorter).
    """
    height, width = side.shape
    rows, cols = np.divmod(candidates, width)
    margin = int(np.ceil(saturation)) + 1
    top, bottom = max(0, int(rows.min()) - margin), min(height, int(rows.max()) + margin + 1)
    left, right = max(0, int(cols.min()) - margin), min(width, int(cols.max()) + margin + 1)
    crop = boundary_distance(side[top:bottom, left:right])
    return exact_distances(crop[rows - top, cols - left])


def guard_weight(distance: np.ndarray, free_px: float, base: float | np.ndarray = 0.0) -> np.ndarray:
    """``base`` within ``free_px`` of the boundary, rising linearly to 1 at twice that distance."""
    if free_px <= 0:
        return np.ones_like(distance, dtype=np.float32)
    ramp = np.clip((distance - free_px) / free_px, 0.0, 1.0)
    return (base + (1.0 - base) * ramp).astype(np.float32)


def free_near(region: np.ndarray, free_px: float, base: float) -> np.ndarray:
    """A ``base`` map for :func:`apply_guard`: ``base`` everywhere except within ``free_px`` of
    ``region`` (bool (H, W)), where it is 0 and changes near the boundary are free."""
    out = np.full(region.shape, np.float32(base))
    window: Box = (slice(None), slice(None))
    if worth_a_box(region.shape):
        box = nonzero_box(region)
        if box is None:
            return out
        # OpenCV's 3x3 L2 steps (0.955 along an axis, 1.3693 diagonally) make a distance at least 0.955
        # times the farthest axis's offset: beyond this margin no pixel is within free_px.
        box = grown_box(box, int(np.ceil(free_px / 0.95)) + 2, region.shape)
        if worth_boxing(box, region.shape):
            window = box
    near = cv2.distanceTransform((~region[window]).astype(np.uint8), cv2.DIST_L2, 3) <= free_px
    out[window][near] = np.float32(0.0)
    return out


def apply_guard(probability: np.ndarray, coarse: np.ndarray, free_px: float,
                strength: float = GUARD_STRENGTH, base: float | np.ndarray = 0.0) -> tuple[np.ndarray, int]:
    """Pull far-from-boundary pixels of ``probability`` towards the binary ``coarse`` mask.

    Args:
        probability: (H, W) float refined probability in [0, 1].
        coarse: (H, W) binary coarse mask (bool or 0/1) of the same size.
        free_px: distance from the coarse boundary within which changes are free.
        strength: the logit pull at twice ``free_px`` and beyond.
        base: the fraction of that pull applied near the boundary too (0 = changes there are free);
            a float, or a float32 (H, W) map of it.

    Returns:
        (guarded probability as float32, number of pixels whose side of 0.5 the guard restored).
    """
    prob = np.asarray(probability, dtype=np.float32)
    side = np.asarray(coarse).astype(bool)
    if prob.shape != side.shape:
        raise ValueError(f"probability {prob.shape} and coarse mask {side.shape} differ in size")
    if worth_a_box(prob.shape):
        # A pixel that is 0 in both maps leans its full 0.5 towards its side: never a candidate, and the
        # distances of those that are need the boundary within twice free_px of them (candidate_distance).
        box = either_box(prob, side)
        if box is None:
            return prob.copy(), 0
        box = grown_box(box, int(np.ceil(2.0 * free_px)) + 2, prob.shape)
        if worth_boxing(box, prob.shape):
            out = np.zeros_like(prob)
            out[box], restored = _guarded(prob[box], side[box], free_px, strength,
                                          base[box] if np.ndim(base) else base)
            return out, restored
    return _guarded(prob, side, free_px, strength, base)


def _guarded(prob: np.ndarray, side: np.ndarray, free_px: float, strength: float,
             base: float | np.ndarray) -> tuple[np.ndarray, int]:
    """:func:`apply_guard` on checked float32 ``prob`` and bool ``side`` maps of one shape."""
    sign = np.where(side, np.float32(1.0), np.float32(-1.0))
    # Only pixels that lean against their coarse side by more than the pull can flip or move; the
    # rest (the vast majority, far from the boundary) are left bit-identical.
    logit_floor = np.float32(strength)
    lean = (prob - 0.5) * sign
    candidates = np.flatnonzero(lean < np.float32(1.0 / (1.0 + np.exp(-strength)) - 0.5))
    if candidates.size == 0:
        return prob.copy(), 0
    distance = candidate_distance(side, candidates, 2.0 * free_px)
    if np.ndim(base):
        base = np.asarray(base, dtype=np.float32).ravel()[candidates]
    weight = guard_weight(distance, free_px, base)
    moving = weight > 0
    out = prob.copy()
    if not moving.any():
        return out, 0
    idx = candidates[moving]
    p = np.clip(out.ravel()[idx], _EPS, 1 - _EPS)
    logit = np.log(p / (1 - p)) + weight[moving] * logit_floor * sign.ravel()[idx]
    guarded = (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    before = p > 0.5
    after = guarded > 0.5
    out.ravel()[idx] = guarded
    return out, int(np.count_nonzero(before != after))


def region_changes(proposal: np.ndarray, coarse: np.ndarray, min_radius: int,
                   max_attached: float = 1.0) -> np.ndarray:
    """Where ``proposal`` differs from ``coarse`` by whole regions: bool (H, W).

    A connected region of change is kept, entire, when a disc of radius ``min_radius`` fits inside
    it somewhere (a missing part or a shadow taken for the object, not a boundary moved by a few px
    or a thin part erased) and when less than ``max_attached`` of its outline borders unchanged
    pixels of its own coarse side (:func:`attached_fraction`). This is how a precise mask takes a
    coarse stage's corrections without its blurred boundary (the region pass, schedule.py).
    """
    side = np.asarray(coarse).astype(bool)
    proposed = np.asarray(proposal).astype(bool)
    if min_radius > 0:
        # Only pixels on the proposal or the coarse mask can change; the box's margin keeps its own edge
        # out of the erosion and of the regions' outlines (attached_fraction reads one pixel around them).
        kept = on_box(side.shape, bool, lambda: either_box(proposed, side), min_radius + 2,
                      lambda box: _changed_regions(proposed[box], side[box], min_radius, max_attached))
        if kept is not None:
            return kept
    return _changed_regions(proposed, side, min_radius, max_attached)


def _changed_regions(proposed: np.ndarray, side: np.ndarray, min_radius: int, max_attached: float) -> np.ndarray:
    """:func:`region_changes` on bool maps of one shape."""
    changed = (proposed != side).astype(np.uint8)
    if min_radius <= 0:
        return changed.astype(bool)
    # OpenCV's default border: a region cut by the image's edge is as thick as it would be beyond it.
    cores = cv2.erode(changed, disc(min_radius))
    if not cores.any():
        return np.zeros(changed.shape, bool)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(changed, connectivity=8)
    kept = [int(k) for k in np.unique(labels[cores > 0]) if k > 0]
    if max_attached < 1.0:
        kept = [k for k in kept if attached_fraction(labels, k, stats[k], side, changed) < max_attached]
    return np.isin(labels, kept)


def holes_on_edges(image: np.ndarray, filled: np.ndarray,
                   min_alignment: float = HOLE_EDGE_ALIGNMENT) -> np.ndarray:
    """The regions of ``filled`` (bool (H, W): holes of the mask a region pass would fill) whose
    outline lies on ``image``'s edges: bool (H, W), each connected region whole or not at all.

    A region counts when the edge alignment along its outline (``schedule.BoundaryGeometry``, the
    region as the mask, read on a crop that holds its bands) is at least ``min_alignment``: the photo
    changes there as the mask does. That is a heuristic, measured on the dev sets (schedule.py): such
    a hole is most often the photo's own (a letter's counter, background seen through a gap), but an
    object's part of another colour that the mask left out (a dark window) reads the same.
    """
    # Every region's window lies within the holes' box grown by the window's margin, clipped as on the
    # whole map; so do the regions and their labels.
    found = on_box(filled.shape, bool, lambda: nonzero_box(filled), HOLE_WINDOW_MARGIN,
                   lambda box: _holes_on_edges(image[box], filled[box], min_alignment))
    return _holes_on_edges(image, filled, min_alignment) if found is None else found


def _holes_on_edges(image: np.ndarray, filled: np.ndarray, min_alignment: float) -> np.ndarray:
    """:func:`holes_on_edges` on the whole of ``filled``."""
    found = np.zeros(filled.shape, bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(filled.astype(np.uint8), connectivity=8)
    height, width = filled.shape
    margin = HOLE_WINDOW_MARGIN
    for label in range(1, count):
        x, y, w, h = (int(v) for v in stats[label, :4])
        rows = slice(max(0, y - margin), min(height, y + h + margin))
        cols = slice(max(0, x - margin), min(width, x + w + margin))
        region = labels[rows, cols] == label
        if BoundaryGeometry(image[rows, cols], region, above_noise=False).alignment() >= min_alignment:
            found[rows, cols] |= region
    return found


def attached_fraction(labels: np.ndarray, label: int, box: np.ndarray, coarse: np.ndarray,
                      changed: np.ndarray) -> float:
    """The share of region ``label``'s outline (its 8-neighbours outside it) that lies on unchanged
    pixels of the region's own coarse side.

    About 0 for a hole filled or a blob cut off the object (letters behind a car): they border the
    other side. 1 for a hole punched into the object or a part grown out of it; about 0.5 for a band
    shaved off or added along the boundary. ``box`` is the region's (x, y, w, h, area) stats row.
    """
    x, y, w, h = (int(v) for v in box[:4])
    height, width = labels.shape
    rows = slice(max(0, y - 1), min(height, y + h + 1))
    cols = slice(max(0, x - 1), min(width, x + w + 1))
    region = labels[rows, cols] == label
    ring = (cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~region
    own_side = coarse[rows, cols][region].mean() >= 0.5
    attached = ring & (coarse[rows, cols] == own_side) & (changed[rows, cols] == 0)
    return float(np.count_nonzero(attached)) / max(1, int(np.count_nonzero(ring)))


def change_confidence(probability: np.ndarray, reference: np.ndarray) -> float | None:
    """How sure the model is where it changed the mask: the mean of |2p - 1| over the pixels whose
    side of 0.5 differs from the binary ``reference`` (1 = certain, 0 = a coin toss); None when none
    changed side."""
    changed = (np.asarray(probability) > 0.5) != np.asarray(reference, dtype=bool)
    if not changed.any():
        return None
    return float(np.abs(2.0 * np.asarray(probability, np.float32)[changed] - 1.0).mean())


def change_weight(confidence: float, threshold: float, ramp: float) -> float:
    """The share of a refinement to take, given its change confidence: 0 below ``threshold - ramp``,
    1 above ``threshold + ramp``, linear between (0.5 at the threshold); 1 when the threshold is 0 or
    less (no gate), and a hard cut at the threshold when ``ramp`` is 0 or less."""
    if threshold <= 0.0:
        return 1.0
    # The ramp stays within [0, 1]: a threshold near 0 or 1 narrows it rather than take part of a
    # change of no confidence, or never all of a certain one.
    ramp = min(ramp, threshold, 1.0 - threshold)
    if ramp <= 0.0:
        return 0.0 if confidence < threshold else 1.0
    return float(min(1.0, max(0.0, (confidence - threshold + ramp) / (2.0 * ramp))))


def boundary_shift(refined: np.ndarray, coarse: np.ndarray) -> float:
    """How far a refinement moved the boundary on average: pixels whose side differs between the
    binary ``refined`` and ``coarse`` masks, per boundary pixel of ``coarse`` (0 without boundary)."""
    side = np.asarray(coarse).astype(bool)
    perimeter = int(np.count_nonzero(edge_map(side)))
    if perimeter == 0:
        return 0.0
    return float(np.count_nonzero(np.asarray(refined).astype(bool) != side)) / perimeter


def keep_precise_boundary(probability: np.ndarray, coarse: np.ndarray, coarse_values: np.ndarray,
                          min_shift: float, band_px: float = SHIFT_BAND_PX) -> tuple[np.ndarray, float, bool, int]:
    """Undo small moves of a precise boundary.

    When the refined mask moved the ``coarse`` boundary by less than ``min_shift`` px on average
    (:func:`boundary_shift`), the pixels within ``band_px`` of that boundary take the soft
    ``coarse_values`` back; changes farther away (a hole filled, a blob removed) stay.

    Returns:
        (probability, the mean shift measured, whether the boundary was kept, pixels whose side of
        0.5 was restored).
    """
    prob = np.asarray(probability, dtype=np.float32)
    side = np.asarray(coarse).astype(bool)
    shift = boundary_shift(prob > 0.5, side)
    if shift >= min_shift:
        return prob, shift, False, 0
    band = within_distance(boundary_distance(side), band_px)
    out = prob.copy()
    out[band] = np.asarray(coarse_values, dtype=np.float32)[band]
    restored = int(np.count_nonzero((out[band] > 0.5) != (prob[band] > 0.5)))
    return out, shift, True, restored


def sharp_lines(image: np.ndarray, foreground: np.ndarray, min_area: int = LINE_MIN_SHARP_AREA,
                min_sharpness: float = LINE_MIN_SHARPNESS) -> tuple[np.ndarray, np.ndarray]:
    """The lines four to six pixels wide of each side of ``foreground`` (bool (H, W)) whose outline is
    sharp on ``image`` ((H, W, 3) uint8): (the foreground's, the background's) as bool (H, W) maps.

    A line is a piece of ``morphology.wide_lines`` (at least ``min_area`` pixels under seven pixels
    wide); it counts when ``schedule.outline_sharpness`` reads at least ``min_sharpness`` on it: the
    photo changes exactly where the mask does nearly all along its outline, and not a pixel or two
    beside it, as on a network's mask, nor on one side only."""
    found = []
    for lines in wide_lines(foreground, min_area):
        if not lines.any():
            found.append(lines)
            continue
        count, labels = cv2.connectedComponents(lines.view(np.uint8), connectivity=8)
        sharp = outline_sharpness(image, labels, count) >= min_sharpness
        found.append(sharp[labels])
    return found[0], found[1]


def keep_given_lines(probability: np.ndarray, given: np.ndarray, given_foreground: np.ndarray | None = None,
                     min_lone: int = LINE_MIN_PIXELS, min_area: int = LINE_MIN_AREA,
                     min_wide_area: int | None = LINE_MIN_WIDE_AREA,
                     image: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Keep the lines one to three pixels wide that the given mask draws, on either side of it, and
    with the photo (``image``, (H, W, 3) uint8) those four to six pixels wide whose outline is sharp on
    it (:func:`sharp_lines`).

    The model cannot draw a line one pixel wide, and at 2K not always one two or three pixels wide: it
    erases them, with confidence, even where the photo shows them (a wire, a crack, an outline). A mask
    holding such a line (``morphology.thin_lines``: a piece under three pixels wide with at least
    ``min_lone`` pixels one pixel wide, or at least ``min_area`` pixels, or one under four pixels wide
    with at least ``min_wide_area``; None: no such level) was drawn at full size, so on
    its pixels the refined ``probability`` keeps at least the given value's side: the larger of the
    two on a foreground line, the smaller on a background one. Both are probabilities in [0, 1] of the
    same (H, W) shape (the engine's float form of a mask, not its 0-255 file values);
    ``given_foreground`` is ``given > 0.5`` where the caller holds it already. Wider lines are drawn
    by networks too, so only an outline that the photo's edges follow exactly vouches for them.

    Returns:
        (probability as float32, pixels whose side of 0.5 was restored).
    """
    prob = np.asarray(probability, dtype=np.float32)
    values = np.asarray(given, dtype=np.float32)
    if prob.shape != values.shape:
        raise ValueError(f"probability {prob.shape} and given mask {values.shape} differ in size")
    foreground = values > 0.5 if given_foreground is None else given_foreground
    if image is not None and image.shape[:2] != prob.shape:
        raise ValueError(f"image {image.shape[:2]} and probability {prob.shape} differ in size")
    window: Box = (slice(None), slice(None))
    if worth_a_box(prob.shape):
        # Every line lies within LINE_SEARCH_MARGIN of the given foreground (a background line is a gap
        # in it), and beyond that margin the filters read as much background as on the whole photo.
        box = nonzero_box(foreground)
        if box is not None and worth_boxing(box := grown_box(box, LINE_SEARCH_MARGIN, prob.shape), prob.shape):
            window = box
    on_line, off_line = given_lines(foreground[window], min_lone, min_area, min_wide_area,
                                    None if image is None else image[window])
    if not (on_line.any() or off_line.any()):
        return prob, 0
    out = prob.copy()
    kept, refined, drawn = out[window], prob[window], values[window]
    kept[on_line] = np.maximum(refined[on_line], drawn[on_line])
    kept[off_line] = np.minimum(refined[off_line], drawn[off_line])
    lines = on_line | off_line
    return out, int(np.count_nonzero((kept[lines] > 0.5) != (refined[lines] > 0.5)))


def given_lines(foreground: np.ndarray, min_lone: int = LINE_MIN_PIXELS, min_area: int = LINE_MIN_AREA,
                min_wide_area: int | None = LINE_MIN_WIDE_AREA,
                image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The lines :func:`keep_given_lines` keeps in a given mask's ``foreground`` (bool (H, W)): (the
    foreground's, the background's) as bool (H, W) maps, those four to six pixels wide only with
    ``image``."""
    on_line, off_line = thin_lines(foreground, min_lone, min_area, min_wide_area)
    if image is not None:
        sharp_on, sharp_off = sharp_lines(image, foreground)
        on_line |= sharp_on
        off_line |= sharp_off
    return on_line, off_line
