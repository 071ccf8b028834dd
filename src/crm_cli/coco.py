"""COCO instance annotations: load, decode, crop, refine, encode and score. No CLI and no torch import.

Masks are handled as COCO run-length encodings (column-major runs that start with a run of zeros).
An instance is decoded only inside a window of columns around it, refined in a crop around its box
and encoded straight back into a full-image RLE, so a small object in a 6K image never costs a
full-size mask. Annotation files are loaded with the standard ``json`` module; only the
``segmentation``, ``area`` and ``bbox`` of refined instances are replaced, so every other value is
written back exactly as it was read.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .metrics import DatasetScore
    from .presets import Preset

MIN_MARGIN = 32  # pixels of context around an instance's box, at least
MARGIN_FRACTION = 0.25  # ... or this fraction of the box's longer side, whichever is larger
SIDECAR_SUFFIX = ".partial.jsonl"
SIDECAR_VERSION = 1
FSYNC_SECONDS = 2.0  # the sidecar is flushed after every record and fsynced at most this often


class CocoFileError(ValueError):
    """The annotation file cannot be used at all (not JSON, or not COCO instances)."""


class InstanceError(ValueError):
    """One instance cannot be refined (empty polygon, box outside the image, bad RLE)."""


# ---------------------------------------------------------------------------------------------
# Run-length encoding


def decode_rle_string(counts: str | bytes) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string (the ``counts`` of a compressed RLE).

    Each run is a variable-length number of 5-bit groups offset by 48 ('0'); bit 0x20 says another
    group follows and bit 0x10 of the last group is the sign. From the third run on, the stored
    value is the difference to the run two places back.
    """
    text = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    runs: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise InstanceError("truncated compressed RLE string")
            group = text[position] - 48
            if not 0 <= group < 64:
                raise InstanceError(f"invalid character {chr(text[position])!r} in compressed RLE string")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return np.asarray(runs, dtype=np.int64)


def encode_rle_string(runs: Sequence[int] | np.ndarray) -> str:
    """The compressed COCO RLE string of run lengths (inverse of decode_rle_string)."""
    values = [int(v) for v in runs]
    out = bytearray()
    for index, run in enumerate(values):
        value = run - values[index - 2] if index > 2 else run
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            out.append(group + 48)
    return out.decode("ascii")


def runs_from_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Run lengths (column-major, starting with zeros) of a polygon list, uncompressed or compressed RLE.

    Raises:
        InstanceError: an empty or malformed polygon, an RLE of another size, or counts that do not
            add up to the image.
    """
    if isinstance(segmentation, list):
        return _polygon_runs(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        size = segmentation["size"]
        if list(size) != [height, width]:
            raise InstanceError(f"RLE size {size} does not match the image size [{height}, {width}] (height, width)")
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
                raise InstanceError("uncompressed RLE counts must be non-negative integers")
            runs = np.asarray(counts, dtype=np.int64)
        elif isinstance(counts, str | bytes):
            runs = decode_rle_string(counts)
            if runs.size and runs.min() < 0:
                raise InstanceError("compressed RLE string decodes to a negative run")
        else:
            raise InstanceError(f"RLE counts must be a list or a string, not {type(counts).__name__}")
        if int(runs.sum()) != height * width:
            raise InstanceError(f"RLE runs add up to {int(runs.sum())} pixels, not {height}x{width}")
        return runs
    if segmentation is None:
        raise InstanceError("the annotation has no segmentation")
    raise InstanceError(f"unknown segmentation format ({type(segmentation).__name__})")


def _polygon_runs(polygons: list, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not polygons:
        raise InstanceError("empty polygon list")
    checked: list[list[float]] = []
    for k, polygon in enumerate(polygons):
        if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
            count = len(polygon) if isinstance(polygon, list) else type(polygon).__name__
            raise InstanceError(f"polygon {k} has {count} coordinates (needs an even number, at least 6)")
        values = [float(v) for v in polygon if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(values) != len(polygon) or not all(math.isfinite(v) for v in values):
            raise InstanceError(f"polygon {k} has non-numeric or non-finite coordinates")
        checked.append(values)
    merged = mask_utils.merge(mask_utils.frPyObjects(checked, height, width))
    return decode_rle_string(merged["counts"])


def foreground_columns(runs: np.ndarray, height: int) -> tuple[int, int] | None:
    """(first, last + 1) column holding foreground, or None for an empty mask."""
    ends = np.cumsum(runs)
    ones = (np.arange(runs.size) % 2 == 1) & (runs > 0)
    if not ones.any():
        return None
    first = int((ends - runs)[ones].min())
    last = int(ends[ones].max()) - 1
    return first // height, last // height + 1


def decode_columns(runs: np.ndarray, height: int, x0: int, x1: int) -> np.ndarray:
    """The (height, x1 - x0) boolean block of columns x0..x1-1, decoding nothing else."""
    ends = np.cumsum(runs)
    starts = ends - runs
    low, high = x0 * height, x1 * height
    lengths = np.clip(ends, low, high) - np.clip(starts, low, high)
    values = np.arange(runs.size) % 2 == 1
    flat = np.repeat(values, lengths)
    return flat.reshape(x1 - x0, height).T


def runs_from_columns(block: np.ndarray, width: int, x0: int) -> np.ndarray:
    """Full-image run lengths of a mask that is zero outside columns x0..x0+block_width-1.

    ``block`` is (height, columns) boolean and spans the full image height.
    """
    height, columns = block.shape
    flat = np.asarray(block, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return np.asarray([height * width], dtype=np.int64)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    lengths = np.diff(np.concatenate([[0], changes, [flat.size]])).astype(np.int64)
    if flat[0]:
        lengths = np.concatenate([[0], lengths])  # an RLE starts with a (possibly empty) run of zeros
    lengths[0] += x0 * height
    trailing = (width - x0 - columns) * height
    if lengths.size % 2:  # ends with zeros
        lengths[-1] += trailing
    elif trailing:
        lengths = np.concatenate([lengths, [trailing]])
    return lengths


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """A full (H, W) mask as a compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    height, width = mask.shape
    return {"size": [height, width], "counts": encode_rle_string(runs_from_columns(mask > 0, width, 0))}


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A segmentation (polygons or RLE) as a full (H, W) boolean mask."""
    return decode_columns(runs_from_segmentation(segmentation, height, width), height, 0, width)


# ---------------------------------------------------------------------------------------------
# Refinement of one instance


@dataclass(frozen=True)
class RefineOptions:
    """How instances are refined.

    Attributes:
        preset: the refine settings (None: the engine's default preset).
        min_area: instances whose coarse mask has fewer pixels are left as they are.
        min_margin: context around the box, at least this many pixels ...
        margin_fraction: ... or this fraction of the box's longer side.
        full_image: refine every instance on the whole image instead of a crop (for comparisons).
    """

    preset: Preset | None = None
    min_area: float = 0.0
    min_margin: int = MIN_MARGIN
    margin_fraction: float = MARGIN_FRACTION
    full_image: bool = False

    def fingerprint(self) -> dict[str, Any]:
        """What decides a refined mask (resuming across different values would mix results)."""
        crop = "full image" if self.full_image else [self.min_margin, self.margin_fraction]
        # The preset's switches under the key earlier versions wrote, so their partial runs still resume.
        switches = {} if self.preset is None else {k: v for k, v in asdict(self.preset).items() if k != "description"}
        return {"engine_options": json.loads(json.dumps(switches, default=str)), "crop": crop}


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
    except (TypeError, ValueError):
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


def refine_image_job(refiner: Any, job: dict[str, Any], options: RefineOptions,
                     on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Read one image and refine the instances of ``job`` (a JSON-able dict made by plan_jobs).

    Every instance gets a result ``{"index", "id", "status", "seconds", ...}``; a bad instance or an
    unreadable image gives ``status: failed`` with an ``error`` and never raises. ``on_result`` is
    called with each result as soon as it is known (the plain path records progress with it).
    """
    from .imageio import read_image

    results: list[dict[str, Any]] = []

    def finish(instance: dict[str, Any], outcome: dict[str, Any], start: float) -> None:
        result = {"index": instance["index"], "id": instance["id"], **outcome,
                  "seconds": round(time.perf_counter() - start, 4)}
        results.append(result)
        if on_result is not None:
            on_result(result)

    start = time.perf_counter()
    try:
        image = read_image(job["image"], name=job["name"])
        expected = (job.get("height"), job.get("width"))
        if None not in expected and tuple(image.shape[:2]) != expected:
            raise InstanceError(f"{job['name']}: the image is {image.shape[1]}x{image.shape[0]} but the annotation "
                                f"file says {expected[1]}x{expected[0]} (EXIF orientation is applied)")
    except (OSError, ValueError) as exc:
        for instance in job["instances"]:
            finish(instance, {"status": "failed", "error": str(exc)}, start)
        return {"results": results}
    for instance in job["instances"]:
        start = time.perf_counter()
        try:
            outcome = refine_instance(refiner, image, instance["segmentation"], options, instance.get("bbox"))
        except ValueError as exc:  # InstanceError, or a value the engine rejects
            outcome = {"status": "failed", "error": str(exc)}
        except RuntimeError as exc:  # e.g. out of memory on one huge instance: report it, go on
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        finish(instance, outcome, start)
    return {"results": results}


# ---------------------------------------------------------------------------------------------
# Files: load, plan, resume, write


def load_coco(path: str | Path) -> dict[str, Any]:
    """Read a COCO instances file (numbers and key order are kept exactly as ``json`` reads them)."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise CocoFileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise CocoFileError(f"{path}: not a COCO instances file (needs 'images' and 'annotations' lists)")
    return data


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 4 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(4 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Plan:
    """The work of one run: per-image jobs plus what was decided without refining."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    failed: list[dict[str, Any]] = field(default_factory=list)  # results of instances that cannot start
    resumed: int = 0

    @property
    def instances(self) -> int:
        """Instances to refine in this run."""
        return sum(len(job["instances"]) for job in self.jobs)


def plan_jobs(data: dict[str, Any], images_dir: Path, category_ids: Iterable[int] | None = None,
              done: Iterable[int] = ()) -> Plan:
    """Group the instances to refine by image.

    Crowd regions, instances of other categories and those already ``done`` (annotation indices
    from the sidecar) are left out; an instance whose image is not listed fails.
    """
    plan = Plan()
    wanted = set(category_ids) if category_ids else None
    finished = set(done)
    images = {image.get("id"): image for image in data["images"] if isinstance(image, dict)}
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            plan.failed.append({"index": index, "id": None, "status": "failed", "error": "not a JSON object"})
            continue
        if index in finished:
            plan.resumed += 1
            continue
        reason = None
        if annotation.get("iscrowd"):
            reason = "crowd"
        elif wanted is not None and annotation.get("category_id") not in wanted:
            reason = "category"
        if reason:
            plan.skipped[reason] = plan.skipped.get(reason, 0) + 1
            continue
        image_id = annotation.get("image_id")
        image = images.get(image_id)
        if image is None or not isinstance(image.get("file_name"), str):
            problem = "not in 'images'" if image is None else "has no file_name"
            plan.failed.append({"index": index, "id": annotation.get("id"), "status": "failed",
                                "error": f"image_id {image_id!r} {problem}"})
            continue
        by_image.setdefault(image_id, []).append({"index": index, "id": annotation.get("id"),
                                                  "segmentation": annotation.get("segmentation"),
                                                  "bbox": annotation.get("bbox")})
    for image_id, instances in by_image.items():
        image = images[image_id]
        plan.jobs.append({"image": str((images_dir / image["file_name"]).absolute()), "name": image["file_name"],
                          "image_id": image_id, "height": _as_int(image.get("height")),
                          "width": _as_int(image.get("width")), "instances": instances})
    return plan


def _as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def sidecar_path(output: str | Path) -> Path:
    """Where progress of a run writing ``output`` is recorded: ``OUTPUT.partial.jsonl``."""
    output = Path(output)
    return output.with_name(output.name + SIDECAR_SUFFIX)


class Sidecar:
    """Append-only record of finished instances, so an interrupted run continues where it stopped.

    Line 1 is a header with the fingerprint of the input and settings; each further line is one
    refined (or deliberately kept) instance. A torn last line is ignored on reading.
    """

    def __init__(self, output: str | Path, fingerprint: dict[str, Any]) -> None:
        self.path = sidecar_path(output)
        self.header = {"crm_coco_sidecar": SIDECAR_VERSION, **json.loads(json.dumps(fingerprint, default=str))}
        self._handle = None
        self._last_sync = 0.0

    def load(self) -> tuple[dict[int, dict[str, Any]], str | None]:
        """Results recorded by an earlier run with the same fingerprint, by annotation index, and a
        note when an existing sidecar was ignored."""
        if not self.path.exists():
            return {}, None
        results: dict[int, dict[str, Any]] = {}
        with self.path.open("rb") as handle:
            lines = handle.read().splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except json.JSONDecodeError:
            header = None
        if header != self.header:
            return {}, f"{self.path}: progress from a different input or settings; starting over"
        for line in lines[1:]:
            try:
                record = json.loads(line)
                results[int(record["index"])] = record
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line torn by an interruption
        return results, None

    def open(self, keep: dict[int, dict[str, Any]]) -> None:
        """Start recording; rewrite the file with the header and the ``keep`` records."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with temp.open("w", encoding="utf-8") as handle:
            handle.write(json.dumps(self.header) + "\n")
            for record in keep.values():
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, self.path)
        self._handle = self.path.open("a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        """Record one finished instance (flushed now, fsynced every few seconds)."""
        assert self._handle is not None, "open() first"
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        now = time.monotonic()
        if now - self._last_sync > FSYNC_SECONDS:
            os.fsync(self._handle.fileno())
            self._last_sync = now

    def close(self) -> None:
        """Flush and close (the file stays for the next run)."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        """Close and delete: the output is complete."""
        self.close()
        self.path.unlink(missing_ok=True)


def apply_results(data: dict[str, Any], results: Iterable[dict[str, Any]]) -> int:
    """Put refined segmentations, areas and boxes into ``data`` in place; returns how many.

    Only those three keys of refined instances change. ``area`` keeps its JSON type (an integer area
    stays an integer).
    """
    annotations = data["annotations"]
    count = 0
    for result in results:
        if result.get("status") != "refined":
            continue
        annotation = annotations[result["index"]]
        annotation["segmentation"] = result["segmentation"]
        area = result["area"]
        annotation["area"] = area if isinstance(annotation.get("area"), int) else float(area)
        annotation["bbox"] = result["bbox"]
        count += 1
    return count


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as compact UTF-8 JSON: temp file, fsync, rename (readers never see half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with temp.open("wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------
# Scoring


def score_instance(pred_runs: np.ndarray, gt_runs: np.ndarray, height: int, width: int, name: str = ""):  # noqa: ANN201
    """IoU and mBA of one instance pair, as ``metrics.score_pair`` gives on the full masks.

    Only a window around both masks is decoded: it reaches past the largest boundary radius, so
    the boundary bands (and every pixel where the masks differ) lie inside it.
    """
    from .metrics import ImageScore, boundary_band, boundary_radii, intersection_union

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
    correct = pred == gt
    accuracies = []
    for radius in radii:
        band = boundary_band(gt, radius)
        total = int(np.count_nonzero(band))
        if total == 0:
            return ImageScore(name=name, intersection=intersection, union=union, mba=None)
        accuracies.append(np.count_nonzero(correct & band) / total)
    return ImageScore(name=name, intersection=intersection, union=union, mba=float(np.mean(accuracies)))


def score_coco(pred: dict[str, Any], gt: dict[str, Any]) -> DatasetScore:
    """Score predicted instances against ground-truth instances matched by annotation id.

    Crowd regions of the ground truth are not scored. Sizes come from the ground truth's images.

    Raises:
        ValueError: a ground-truth instance has no prediction, or one cannot be decoded.
    """
    from .metrics import DatasetScore
    from .pairing import pair_coco_annotations

    images = {image.get("id"): image for image in gt["images"] if isinstance(image, dict)}
    scores = DatasetScore()
    for gt_annotation, pred_annotation in pair_coco_annotations(pred["annotations"], gt["annotations"]):
        image = images.get(gt_annotation.get("image_id"))
        if image is None:
            raise ValueError(f"ground-truth annotation {gt_annotation.get('id')}: image_id "
                             f"{gt_annotation.get('image_id')!r} not in 'images'")
        height, width = int(image["height"]), int(image["width"])
        name = f"{image.get('file_name', image.get('id'))}#{gt_annotation.get('id')}"
        try:
            gt_runs = runs_from_segmentation(gt_annotation.get("segmentation"), height, width)
            pred_runs = runs_from_segmentation(pred_annotation.get("segmentation"), height, width)
        except InstanceError as exc:
            raise ValueError(f"annotation {gt_annotation.get('id')}: {exc}") from None
        scores.add(score_instance(pred_runs, gt_runs, height, width, name))
    return scores
