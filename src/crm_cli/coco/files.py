"""COCO files: load, plan the work per image, resume from the sidecar, apply results, write atomically.

Annotation files are loaded with the standard ``json`` module, keeping each number's text where its
``repr`` would differ (``exactjson``); only the ``segmentation``, ``area`` and ``bbox`` of refined
instances are replaced, so every other value is written back exactly as it was read, numbers as
they were written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import exactjson
from .rle import is_number, whole_number

SIDECAR_SUFFIX = ".partial.jsonl"
SIDECAR_VERSION = 1
FSYNC_SECONDS = 2.0  # the sidecar is flushed after every record and fsynced at most this often


class CocoFileError(ValueError):
    """The annotation file cannot be used at all (not JSON, or not COCO instances)."""


def load_coco(path: str | Path, exact_numbers: bool = True) -> dict[str, Any]:
    """Read a COCO instances file (key order is kept). With ``exact_numbers`` each number keeps its
    text for :func:`write_json_atomic` (see ``exactjson``); without, numbers are read as ``json``
    reads them, which is faster for a file that is only read (scoring)."""
    return load_coco_hashed(path, exact_numbers)[0]


def load_coco_hashed(path: str | Path, exact_numbers: bool = True) -> tuple[dict[str, Any], str]:
    """``load_coco`` plus the hex sha256 of the bytes it parsed (the file is read once)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        data = exactjson.loads(raw) if exact_numbers else json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CocoFileError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:  # JSON is UTF-8 (or UTF-16/32, which json detects)
        raise CocoFileError(f"{path}: not valid JSON (byte {exc.start} is 0x{exc.object[exc.start]:02x}, not "
                            f"{exc.encoding.upper()} text)") from None
    except (ValueError, RecursionError) as exc:  # an integer of over 4,300 digits; nesting too deep for json
        raise CocoFileError(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise CocoFileError(f"{path}: not a COCO instances file (needs 'images' and 'annotations' lists)")
    return data, hashlib.sha256(raw).hexdigest()


def is_json_id(value: Any) -> bool:
    """Whether ``value`` can serve as a COCO id (of an image, category or annotation): a JSON scalar,
    not null (a list or an object cannot)."""
    return value is not None and not isinstance(value, list | dict)


def image_index(images: list[Any]) -> dict[Any, dict[str, Any]]:
    """A COCO file's ``images`` by id; entries that are not objects or have no usable id are left out."""
    return {image["id"]: image for image in images if isinstance(image, dict) and is_json_id(image.get("id"))}


@dataclass
class Plan:
    """The work of one run: per-image jobs plus what was decided without refining."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    failed: list[dict[str, Any]] = field(default_factory=list)  # results of instances that cannot start
    resumed: set[int] = field(default_factory=set)  # indices of ``done`` instances this run keeps

    @property
    def instances(self) -> int:
        """Instances to refine in this run."""
        return sum(len(job["instances"]) for job in self.jobs)


def plan_jobs(data: dict[str, Any], images_dir: Path, category_ids: Iterable[int] | None = None,
              done: Iterable[int] = ()) -> Plan:
    """Group the instances to refine by image.

    Crowd regions, instances of other categories and those already ``done`` (annotation indices
    from the sidecar; ``Plan.resumed``) are left out; an instance whose image is not listed fails. A
    ``done`` instance that this run's categories leave out is skipped, not resumed: its earlier result
    must not reach the output.
    """
    plan = Plan()
    wanted = set(category_ids) if category_ids else None
    finished = set(done)
    images = image_index(data["images"])
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for index, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict):
            plan.failed.append({"index": index, "id": None, "status": "failed", "error": "not a JSON object"})
            continue
        reason = None
        if annotation.get("iscrowd"):
            reason = "crowd"
        elif wanted is not None and (not is_json_id(annotation.get("category_id"))
                                     or annotation["category_id"] not in wanted):
            reason = "category"
        if reason:
            plan.skipped[reason] = plan.skipped.get(reason, 0) + 1
            continue
        if index in finished:
            plan.resumed.add(index)
            continue
        image_id = annotation.get("image_id")
        image = images.get(image_id) if is_json_id(image_id) else None
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
        plan.jobs.append({"image": str(image_path(images_dir, image["file_name"]).absolute()),
                          "name": image["file_name"], "image_id": image_id, "height": _side(image.get("height")),
                          "width": _side(image.get("width")), "instances": instances})
    return plan


def image_path(images_dir: Path, file_name: str) -> Path:
    """Where an image's ``file_name`` points under ``images_dir``.

    A name written on Windows (``sub\\b.jpg``) that does not exist as written is tried with ``/``
    separators; on Linux a backslash is an ordinary character of a file name, so the name as
    written comes first. The name as written is returned when neither exists (its error names it).
    """
    path = images_dir / file_name
    if "\\" in file_name and not path.exists():
        slashed = images_dir / file_name.replace("\\", "/")
        if slashed.exists():
            return slashed
    return path


def _side(value: Any) -> int | float | None:
    """An image's ``height`` or ``width`` for the size check: a whole number as an int, no number as
    None (the image's own size is used); 120.5, NaN or infinity (1e400 reads so) stay as they are,
    so the check fails that image's instances naming the value."""
    if not is_number(value):
        return None
    whole = whole_number(value)
    return value if whole is None else whole


def sidecar_path(output: str | Path) -> Path:
    """Where progress of a run writing ``output`` is recorded: ``OUTPUT.partial.jsonl``, OUTPUT
    shortened (writing.fitted_name, the same for every run) where the whole would not fit the folder."""
    from ..writing import name_bytes, name_leaving_room

    output = Path(output)
    return output.with_name(name_leaving_room(output, name_bytes(SIDECAR_SUFFIX)) + SIDECAR_SUFFIX)


class Sidecar:
    """Append-only record of finished instances, so an interrupted run continues where it stopped.

    Line 1 is a header with the fingerprint of the input and settings; each further line is one
    refined (or deliberately kept) instance. A torn last line is ignored on reading.
    """

    def __init__(self, output: str | Path, fingerprint: dict[str, Any], later_keys: tuple[str, ...] = ()) -> None:
        """``later_keys``: fingerprint keys that earlier versions did not record; a header without them
        (an interrupted run of such a version) is compared on the rest, so that it still resumes."""
        self.path = sidecar_path(output)
        self.header = {"crm_coco_sidecar": SIDECAR_VERSION, **json.loads(json.dumps(fingerprint, default=str))}
        self.later_keys = later_keys
        self._handle = None
        self._last_sync = 0.0

    def _matches(self, header: Any) -> bool:
        """Whether a sidecar's ``header`` is this run's (an earlier version's lacks ``later_keys``)."""
        if not isinstance(header, dict):
            return False
        missing = [key for key in self.later_keys if key not in header]
        return header == {key: value for key, value in self.header.items() if key not in missing}

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
        if not self._matches(header):
            return {}, f"{self.path}: progress from a different input or settings; starting over"
        for line in lines[1:]:
            try:
                record = json.loads(line)
                results[int(record["index"])] = record
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line torn by an interruption
        return results, None

    def open(self, keep: dict[int, dict[str, Any]]) -> None:
        """Start recording; rewrite the file with the header and the ``keep`` records.

        Raises OSError naming the sidecar (never its temp file) when it cannot be written.
        """
        from ..writing import write_atomic, write_error_reason

        lines = [json.dumps(self.header), *(json.dumps(record) for record in keep.values())]
        write_atomic(self.path, ("\n".join(lines) + "\n").encode("utf-8"))  # its errors name the sidecar
        try:
            self._handle = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise OSError(f"cannot write {self.path}: {write_error_reason(self.path, exc)}") from None

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
        """Flush and close (the file stays for the next run); the file is closed even when the flush
        fails (a full disk), whose OSError is then raised."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                try:
                    handle.close()
                except OSError:
                    pass  # its flush fails again; the error above is the one raised

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


def write_json_atomic(path: str | Path, data: Any) -> int:
    """Write ``data`` as compact UTF-8 strict JSON: temp file, fsync, rename (readers never see half a
    file). Numbers read by :func:`load_coco` are written as they were read (``1e-7``, ``1e400``).

    Returns:
        How many NaN or infinite numbers (``NaN`` or ``Infinity`` in the input, which JSON has no
        form for) were written as ``null``.
    """
    from ..writing import write_atomic

    text, nulls = exactjson.dumps(data)
    # A lone surrogate (an escape such as \ud800 in the input, which json reads as it is) has no UTF-8 form;
    # backslashreplace writes it back as that very escape (it can only stand inside a JSON string).
    write_atomic(Path(path), text.encode("utf-8", "backslashreplace"))
    return nulls
