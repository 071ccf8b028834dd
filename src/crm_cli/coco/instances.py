"""Refining COCO instances in crops around their boxes, and scoring instances by their RLEs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ContinuedText, failure_text, out_of_memory_message
from .rle import (
    InstanceError,
    decode_columns,
    encode_rle_string,
    foreground_columns,
    runs_from_columns,
    runs_from_segmentation,
    whole_number,
)

if TYPE_CHECKING:
    from ..metrics import DatasetScore
    from ..presets import Preset

MIN_MARGIN = 32  # pixels of context around an instance's box, at least
MARGIN_FRACTION = 0.25  # ... or this fraction of the box's longer side, whichever is larger


@dataclass(frozen=True)
class RefineOptions:
    """How instances are refined.

    Attributes:
        preset: the refine settings (None: the engine's default preset).
        min_area: instances whose coarse mask has fewer pixels are left as they are.
        min_margin: context around the box, at least this many pixels ...
        margin_fraction: ... or this fraction of the box's longer side.
        full_image: refine every instance on the whole image instead of a crop (for comparisons).
        photo_bits: the scale of 16-bit images (``imageio.read_image``), None for each file's own.
    """

    preset: Preset | None = None
    min_area: float = 0.0
    min_margin: int = MIN_MARGIN
    margin_fraction: float = MARGIN_FRACTION
    full_image: bool = False
    photo_bits: int | None = None

    def fingerprint(self) -> dict[str, Any]:
        """What decides a refined mask (resuming across different values would mix results)."""
        crop = "full image" if self.full_image else [self.min_margin, self.margin_fraction]
        # The preset's switches under the key earlier versions wrote, so their partial runs still resume.
        fingerprint = {"engine_options": {} if self.preset is None else self.preset.record(), "crop": crop}
        if self.photo_bits is not None:  # named only when fixed, so the partial runs of earlier versions resume
            fingerprint["photo_bits"] = self.photo_bits
        if self.min_area:  # which instances are kept as they are; named only when set, as photo_bits
            fingerprint["min_area"] = self.min_area
        return fingerprint


def crop_window(box: tuple[int, int, int, int], height: int, width: int, min_margin: int = MIN_MARGIN,
                margin_fraction: float = MARGIN_FRACTION) -> tuple[int, int, int, int]:
    """The box ``(x0, y0, x1, y1)`` (exclusive ends) grown by max(min_margin, fraction x longer side),
    clipped to the image."""
    x0, y0, x1, y1 = box
    margin = max(min_margin, math.ceil(margin_fraction * max(x1 - x0, y1 - y0)))
    return max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)


def _check_bbox(bbox: Any, height: int, width: int) -> None:
    """A COCO box ``[x, y, w, h]`` that lies wholly outside the image marks a bad instance (an empty or
    missing box is not checked: the segmentation decides)."""
    if not (isinstance(bbox, list) and len(bbox) == 4):
        return
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
        return
    if w > 0 and h > 0 and (x >= width or y >= height or x + w <= 0 or y + h <= 0):
        raise InstanceError(f"bbox {bbox} lies outside the {width}x{height} image")


def refine_instance(refiner: Any, image: np.ndarray, segmentation: Any, options: RefineOptions,
                    bbox: Any = None) -> dict[str, Any]:
    """Refine one instance of ``image`` and return its outcome.

    Returns:
        ``{"status": "refined", "segmentation": compressed RLE, "area": int, "bbox": [x, y, w, h]}``,
        or ``{"status": "skipped", "reason": ...}`` (below ``min_area``, or refined to nothing).

    Raises:
        InstanceError: the instance is malformed or covers no pixel of the image.
    """
    height, width = image.shape[:2]
    runs = runs_from_segmentation(segmentation, height, width)
    _check_bbox(bbox, height, width)
    columns = foreground_columns(runs, height)
    if columns is None:
        raise InstanceError("the segmentation covers no pixel of the image")
    area = int(runs[1::2].sum())
    if area < options.min_area:
        return {"status": "skipped", "reason": "min_area"}
    band = decode_columns(runs, height, *columns)
    rows = np.flatnonzero(band.any(axis=1))
    box = (columns[0], int(rows[0]), columns[1], int(rows[-1]) + 1)
    if options.full_image:
        x0, y0, x1, y1 = 0, 0, width, height
    else:
        x0, y0, x1, y1 = crop_window(box, height, width, options.min_margin, options.margin_fraction)
    coarse = decode_columns(runs, height, x0, x1)[y0:y1]  # a transposed (column-major) view
    probability = refiner.refine(np.ascontiguousarray(image[y0:y1, x0:x1]),
                                 np.ascontiguousarray(coarse, dtype=np.uint8) * 255, preset=options.preset)
    refined = np.asarray(probability) > 0.5
    if not refined.any():
        return {"status": "skipped", "reason": "refined_empty"}
    block = np.zeros((height, x1 - x0), dtype=bool)
    block[y0:y1] = refined
    new_rows = np.flatnonzero(refined.any(axis=1))
    new_cols = np.flatnonzero(refined.any(axis=0))
    return {
        "status": "refined",
        "segmentation": {"size": [height, width], "counts": encode_rle_string(runs_from_columns(block, width, x0))},
        "area": int(np.count_nonzero(refined)),
        "bbox": [float(x0 + new_cols[0]), float(y0 + new_rows[0]),
                 float(new_cols[-1] - new_cols[0] + 1), float(new_rows[-1] - new_rows[0] + 1)],
    }


_ORIENTATION_WORDS = {2: "mirrored", 3: "rotated 180°", 4: "flipped upside down", 5: "transposed",
                      6: "rotated 90° clockwise", 7: "transverse", 8: "rotated 90° counter-clockwise"}


def annotated_pixels(image: np.ndarray, orientation: int, height: int | None, width: int | None,
                     name: str) -> tuple[np.ndarray, str | None]:
    """The pixels an image's annotations are drawn on, by the file's ``width`` and ``height``, and
    a note for the log when the EXIF orientation decided it.

    ``image`` is upright (EXIF ``orientation`` applied). The file's size is the reference: an image
    whose tag turns it by 90° and whose stored size (not its upright one) is the file's was
    annotated on its stored pixels (as tools that ignore the tag do; crm's mask files follow the
    same rule), so those are returned. A flip or a 180° turn, or a square image, keeps the size,
    which then cannot tell: the upright pixels are used (as OpenCV, detectron2 and mmdetection
    read them), with a note. No size in the file: the upright pixels.

    Raises:
        InstanceError: neither the upright nor the stored size is the file's.
    """
    from ..image_headers import apply_orientation, inverse_orientation
    from ..masks import swaps_axes

    upright = tuple(image.shape[:2])
    if height is None or width is None:
        return image, None
    if upright != (height, width):
        if swaps_axes(orientation) and upright[::-1] == (height, width):
            stored = apply_orientation(image, inverse_orientation(orientation))  # undo the tag
            return stored, (f"{name}: the annotation file's size {width}x{height} is the image as stored, before "
                            f"its EXIF rotation ({_ORIENTATION_WORDS[orientation]}); its instances are refined "
                            "on the stored pixels")
        applied = f" (upright, by its EXIF orientation {orientation})" if orientation != 1 else ""
        raise InstanceError(f"{name}: the image is {upright[1]}x{upright[0]}{applied} but the annotation file says "
                            f"{width}x{height}")
    if orientation != 1 and (not swaps_axes(orientation) or height == width):
        return image, (f"{name}: EXIF orientation {orientation} ({_ORIENTATION_WORDS.get(orientation, '?')}) keeps "
                       "the image's size, so the annotation file cannot tell whether its instances were drawn "
                       "on the stored or the upright pixels; taken as drawn on the upright ones")
    return image, None


def instance_error(exc: Exception) -> str | None:
    """The error of one instance that the others outlive, by crm batch's rule for a pair
    (evaluation.pair_failure), less an OSError: refining an instance reads and writes no file, so
    one is the run's. Worded as: a ValueError (an InstanceError, or a value the engine rejects) in
    its own words; running out of memory (a MemoryError, torch's, OpenCV's) as crm refine words it
    (errors.out_of_memory_message); any other RuntimeError named by its type. None for anything
    else, which stops the run."""
    from ..evaluation import pair_failure

    if isinstance(exc, OSError) or pair_failure(exc) is None:
        return None
    if isinstance(exc, ValueError):
        return str(exc)
    if (shortage := out_of_memory_message(exc)) is not None:
        return shortage
    if not str(exc).strip():
        return type(exc).__name__
    message = failure_text(exc)
    named = f"{type(exc).__name__}: {message}"
    return ContinuedText(named) if isinstance(message, ContinuedText) else named


def iter_image_job(refiner: Any, job: dict[str, Any], options: RefineOptions) -> Iterator[dict[str, Any]]:
    """Read one image and refine the instances of ``job`` (a JSON-able dict made by plan_jobs),
    yielding each instance's result as soon as it is known.

    Every instance gets a result ``{"index", "id", "status", "seconds", ...}``; a bad instance (see
    instance_error: running out of memory on one too) or an unreadable or too large image gives
    ``status: failed`` with an ``error`` and never raises. The image's notes for the log (a 16-bit
    photo read on a smaller scale) ride on its first result as ``"notes"``.
    """
    from ..imageio import read_image_noted

    def finish(instance: dict[str, Any], outcome: dict[str, Any], start: float) -> dict[str, Any]:
        return {"index": instance["index"], "id": instance["id"], **outcome,
                "seconds": round(time.perf_counter() - start, 4)}

    start = time.perf_counter()
    try:
        image, orientation, notes = read_image_noted(job["image"], name=job["name"], photo_bits=options.photo_bits)
        image, note = annotated_pixels(image, orientation, job.get("height"), job.get("width"), job["name"])
        if note:
            notes.append(note)
    except Exception as exc:  # noqa: BLE001 - a bad or too large image fails its instances, the rest is raised
        error = str(exc) if isinstance(exc, (OSError, ValueError)) else out_of_memory_message(exc)
        if error is None:
            raise
        for instance in job["instances"]:
            yield finish(instance, {"status": "failed", "error": error}, start)
        return
    for instance in job["instances"]:
        start = time.perf_counter()
        try:
            outcome = refine_instance(refiner, image, instance["segmentation"], options, instance.get("bbox"))
        except Exception as exc:  # noqa: BLE001 - an instance's own failure (instance_error) is taken, the rest raised
            if (error := instance_error(exc)) is None:
                raise
            outcome = {"status": "failed", "error": error}
        result = finish(instance, outcome, start)
        if notes:  # the first result only
            result["notes"], notes = notes, []
        yield result


def refine_image_job(refiner: Any, job: dict[str, Any], options: RefineOptions) -> dict[str, Any]:
    """All results of :func:`iter_image_job` as one JSON-able ``{"results": [...]}`` (a Ray job's result)."""
    return {"results": list(iter_image_job(refiner, job, options))}


def score_instance(pred_runs: np.ndarray, gt_runs: np.ndarray, height: int, width: int, name: str = ""):  # noqa: ANN201
    """IoU and mBA of one instance pair, as ``metrics.score_pair`` gives on the full masks.

    Only a window around both masks is decoded: it reaches past the largest boundary radius, so
    the boundary bands (and every pixel where the masks differ) lie inside it.
    """
    from ..metrics import ImageScore, boundary_accuracy, boundary_radii, intersection_union

    radii = boundary_radii(height, width)
    spans = [c for c in (foreground_columns(pred_runs, height), foreground_columns(gt_runs, height)) if c]
    if not spans:
        return ImageScore(name=name, intersection=0, union=0, mba=None)
    x0, x1 = min(s[0] for s in spans), max(s[1] for s in spans)
    rows = np.flatnonzero((decode_columns(pred_runs, height, x0, x1) | decode_columns(gt_runs, height, x0, x1))
                          .any(axis=1))
    pad = radii[-1] + 2
    x0, x1 = max(0, x0 - pad), min(width, x1 + pad)
    y0, y1 = max(0, int(rows[0]) - pad), min(height, int(rows[-1]) + 1 + pad)
    pred = decode_columns(pred_runs, height, x0, x1)[y0:y1]
    gt = decode_columns(gt_runs, height, x0, x1)[y0:y1]
    intersection, union = intersection_union(pred, gt)
    return ImageScore(name=name, intersection=intersection, union=union, mba=boundary_accuracy(pred, gt, radii))


def score_coco(pred: dict[str, Any], gt: dict[str, Any],
               on_error: Callable[[dict[str, Any]], None] | None = None) -> DatasetScore:
    """Score predicted instances against ground-truth instances matched by annotation id.

    Crowd regions of the ground truth are not scored. Sizes come from the ground truth's images.

    Args:
        on_error: called with ``{"id", "image_id", "error"}`` for an instance that cannot be scored
            (it has no prediction, its image is not listed or has no whole positive size, or its
            ground truth or its prediction cannot be decoded), which is then left out and scoring
            goes on; the instances without a prediction come first. Without it, such an instance
            raises ValueError.

    Raises:
        ValueError: a prediction of another ``image_id`` than its ground truth's (the two files are
            of other images); without ``on_error``, an instance without a prediction or that cannot
            be scored.
    """
    from ..metrics import DatasetScore
    from .files import image_index, is_json_id

    images = image_index(gt["images"])
    scores = DatasetScore()
    missing: list[dict] = []  # filled only with on_error: without it an instance missing raises
    pairs = pair_coco_annotations(pred["annotations"], gt["annotations"], missing=missing if on_error else None)
    if on_error is not None:
        for annotation in missing:
            on_error({"id": annotation.get("id"), "image_id": annotation.get("image_id"),
                      "error": "no prediction with the same annotation id"})
    for gt_annotation, pred_annotation in pairs:
        image_id = gt_annotation.get("image_id")
        image = images.get(image_id) if is_json_id(image_id) else None
        decoded = _decoded_pair(gt_annotation, pred_annotation, image)
        if isinstance(decoded, str):
            failure = {"id": gt_annotation.get("id"), "image_id": image_id, "error": decoded}
            if on_error is None:
                raise ValueError(f"annotation {failure['id']} (image_id {image_id!r}): {decoded}")
            on_error(failure)
            continue
        gt_runs, pred_runs, height, width = decoded
        name = f"{image.get('file_name', image.get('id'))}#{gt_annotation.get('id')}"
        scores.add(score_instance(pred_runs, gt_runs, height, width, name))
    return scores


def _decoded_pair(gt_annotation: dict[str, Any], pred_annotation: dict[str, Any],
                  image: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray, int, int] | str:
    """The ground truth's and the prediction's runs at their image's size, and that height and
    width; or why the instance cannot be scored. Raises ValueError for a prediction of another
    ``image_id`` (the two files are of other images: every score would be meaningless)."""
    if image is None:
        return "its image_id is not in the ground truth's 'images'"
    height, width = _size(image.get("height")), _size(image.get("width"))
    if height is None or width is None:
        return (f"its image needs a whole positive 'height' and 'width', not {image.get('height')!r} "
                f"and {image.get('width')!r}")
    image_id = gt_annotation.get("image_id")
    pred_image_id = pred_annotation.get("image_id", image_id)
    if pred_image_id != image_id:
        raise ValueError(f"annotation {gt_annotation.get('id')}: image_id {pred_image_id!r} in the predictions "
                         f"but {image_id!r} in the ground truth (are the two files of the same images?)")
    runs = []
    for side, annotation in (("ground truth", gt_annotation), ("prediction", pred_annotation)):
        try:
            runs.append(runs_from_segmentation(annotation.get("segmentation"), height, width))
        except InstanceError as exc:
            return f"{side}: {exc}"
        except (ValueError, OverflowError) as exc:  # pycocotools on a size such as 10**30
            return f"{side}: cannot be decoded at the image's size {width}x{height} ({exc})"
    return runs[0], runs[1], height, width


def _size(value: Any) -> int | None:
    """An image side for scoring: a whole positive number (10.5 would score on a cut-off image, and
    pycocotools raises OverflowError for a negative one); None otherwise."""
    side = whole_number(value)
    return side if side is not None and side > 0 else None


def pair_coco_annotations(pred: list, gt: list, missing: list | None = None) -> list[tuple[dict, dict]]:
    """Pair ground-truth COCO annotations with the predictions of the same annotation ``id``.

    Crowd regions (``iscrowd``) of the ground truth are left out, and so are predictions without an
    ``id``. Raises ValueError for an ``id`` that cannot name an annotation (a list or an object, by
    the rule ``image_id`` follows), for duplicate prediction ids and, listing them, for ground-truth
    instances without a prediction; with ``missing``, those instances are appended to it instead
    (each a failure of its own, the others still paired).
    """
    from ..pairing_hints import listed
    from .files import is_json_id

    def usable(annotation: dict, index: int, side: str) -> bool:
        key = annotation.get("id")
        if key is not None and not is_json_id(key):
            raise ValueError(f"{side}: annotation #{index} has id {key!r}; an annotation id must be a number "
                             "or a string")
        return key is not None

    by_id: dict = {}
    for index, annotation in enumerate(pred):
        if not isinstance(annotation, dict) or not usable(annotation, index, "predictions"):
            continue
        key = annotation["id"]
        if key in by_id:
            raise ValueError(f"predictions: annotation id {key!r} appears more than once")
        by_id[key] = annotation
    pairs: list[tuple[dict, dict]] = []
    unpaired: list[dict] = []
    instances = [(index, a) for index, a in enumerate(gt) if isinstance(a, dict) and not a.get("iscrowd")]
    for index, annotation in instances:
        found = by_id.get(annotation.get("id")) if usable(annotation, index, "ground truth") else None
        if found is None:
            unpaired.append(annotation)
        else:
            pairs.append((annotation, found))
    if missing is not None:
        missing.extend(unpaired)
    elif unpaired:
        raise ValueError(f"{len(unpaired)} of {len(instances)} ground-truth instances have no prediction "
                         f"with the same annotation id: {listed([str(a.get('id')) for a in unpaired])}")
    return pairs
