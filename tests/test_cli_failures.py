"""A command that stops as a whole with --json: one failure record on stdout (its own fields, in a
fixed order, with "status": "failed" and the "error"), one ``error:`` line on stderr, and the exit
code of the failure (2 for a usage error, with the help hint; 1 otherwise)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()

BATCH_KEYS = ["done", "skipped", "in_progress", "failed", "kept_coarse", "status", "error", "output_dir", "items"]
EVAL_KEYS = ["folder", "status", "error", "n", "failed", "failures"]


@dataclass(frozen=True)
class Paths:
    """The inputs every case is built from (all tiny)."""

    tmp: Path
    weights: Path
    corrupt_weights: Path
    image: Path
    mask: Path
    big: Path
    blocker: Path
    coco: Path
    coco_images: Path


@pytest.fixture
def paths(tmp_path: Path, tiny_weights: Path) -> Paths:
    """A pair, a BIG-layout folder with ground truth, a COCO file, a file in the way and bad weights."""
    image, mask = write_scene_files(tmp_path / "pair")
    write_scene_files(tmp_path / "big", "a_im", "a_seg")
    write_scene_files(tmp_path / "big", "a_im", "a_gt")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not weights")
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "im.jpg", "height": 96, "width": 128}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                         "segmentation": [[10.0, 10.0, 60.0, 10.0, 60.0, 60.0]]}]}))
    return Paths(tmp_path, tiny_weights, corrupt, image, mask, tmp_path / "big", blocker, coco, tmp_path / "pair")


@dataclass(frozen=True)
class Case:
    """One fatal failure: the command line, and the record and exit code it must give."""

    args: Callable[[Paths], list[str]]
    code: int
    keys: list[str]
    error: str  # a part of the error, in the record and on the error line
    fields: Callable[[Paths], dict] = lambda paths: {}  # record fields besides status and error


def cpu(weights: Path) -> list[str]:
    """The model options of a case: these weights, on the CPU."""
    return ["-w", str(weights), "-d", "cpu"]


def no_ground_truth(paths: Paths) -> Path:
    """A BIG-layout folder holding a pair but no ``_gt`` file."""
    write_scene_files(paths.tmp / "no_gt", "a_im", "a_seg")
    return paths.tmp / "no_gt"


def unreadable_image(paths: Paths) -> Path:
    """A BIG-layout folder whose only image cannot be decoded."""
    image, _ = write_scene_files(paths.tmp / "bad", "a_im", "a_seg")
    write_scene_files(paths.tmp / "bad", "a_im", "a_gt")
    image.write_bytes(b"not an image")
    return paths.tmp / "bad"


def images_and_masks(paths: Paths) -> Path:
    """A folder in the images/ + masks/ layout, which crm eval does not read."""
    write_scene_files(paths.tmp / "folders" / "images", "a")
    write_scene_files(paths.tmp / "folders" / "masks", "a")
    return paths.tmp / "folders"


def empty_folder(paths: Paths) -> Path:
    """A folder with nothing in it."""
    (paths.tmp / "empty").mkdir()
    return paths.tmp / "empty"


CASES: dict[str, Case] = {
    "refine-missing-image": Case(
        lambda p: ["refine", str(p.tmp / "nope.jpg"), str(p.mask), "-o", str(p.tmp / "o.png"), *cpu(p.weights)],
        1, ["image", "mask", "output", "status", "error", "warnings"], "nope.jpg",
        lambda p: {"image": str(p.tmp / "nope.jpg"), "mask": str(p.mask), "output": str(p.tmp / "o.png")}),
    "refine-bad-weights": Case(
        lambda p: ["refine", str(p.image), str(p.mask), "-o", str(p.tmp / "o.png"), *cpu(p.corrupt_weights)],
        1, ["image", "mask", "output", "status", "error", "warnings"], "corrupt.safetensors"),
    "batch-no-pairs": Case(
        lambda p: ["batch", str(empty_folder(p)), "-o", str(p.tmp / "out"), *cpu(p.weights)],
        2, BATCH_KEYS, "no pairs found",
        lambda p: {"done": 0, "skipped": 0, "in_progress": 0, "failed": 0, "kept_coarse": 0,
                   "output_dir": str(p.tmp / "out"), "items": []}),
    "batch-unwritable-output": Case(
        lambda p: ["batch", str(p.big), "-o", str(p.blocker / "out"), *cpu(p.weights)],
        1, BATCH_KEYS, "is a file, not a folder", lambda p: {"output_dir": str(p.blocker / "out"), "items": []}),
    "batch-bad-weights": Case(
        lambda p: ["batch", str(p.big), "-o", str(p.tmp / "out"), *cpu(p.corrupt_weights)],
        1, BATCH_KEYS, "corrupt.safetensors", lambda p: {"failed": 0, "items": []}),
    "eval-no-ground-truth": Case(
        lambda p: ["eval", str(no_ground_truth(p)), *cpu(p.weights)],
        2, EVAL_KEYS, "ground truth",
        lambda p: {"folder": str(p.tmp / "no_gt"), "n": 0, "failed": 0, "failures": []}),
    "eval-images-and-masks-folders": Case(
        lambda p: ["eval", str(images_and_masks(p)), *cpu(p.weights)],
        2, EVAL_KEYS, "not images/ and masks/ folders",
        lambda p: {"folder": str(p.tmp / "folders"), "n": 0, "failed": 0, "failures": []}),
    "eval-unwritable-output": Case(
        lambda p: ["eval", str(p.big), "-o", str(p.blocker / "out"), *cpu(p.weights)],
        1, EVAL_KEYS, "is a file, not a folder", lambda p: {"n": 0, "failed": 0, "failures": []}),
    "eval-no-pair-left": Case(
        lambda p: ["eval", str(unreadable_image(p)), *cpu(p.weights)],
        1, EVAL_KEYS, "no pair left to score", lambda p: {"n": 0, "failed": 1}),
    "eval-bad-weights": Case(
        lambda p: ["eval", str(p.big), *cpu(p.corrupt_weights)],
        1, EVAL_KEYS, "corrupt.safetensors", lambda p: {"folder": str(p.big), "failed": 0, "failures": []}),
    "time-missing-mask": Case(
        lambda p: ["time", str(p.image), str(p.tmp / "missing.png"), *cpu(p.weights)],
        1, ["image", "mask", "status", "error"], "missing.png",
        lambda p: {"image": str(p.image), "mask": str(p.tmp / "missing.png")}),
    "time-bad-weights": Case(
        lambda p: ["time", "--size", "160x120", *cpu(p.corrupt_weights)],
        1, ["size", "status", "error"], "corrupt.safetensors", lambda p: {"size": "160x120"}),
    "coco-unwritable-output": Case(
        lambda p: ["coco", str(p.coco), "--images", str(p.coco_images), "-o", str(p.blocker / "o.json"),
                   *cpu(p.weights)],
        1, ["status", "error", "output"], "is a file, not a folder", lambda p: {"output": str(p.blocker / "o.json")}),
    "coco-bad-weights": Case(
        lambda p: ["coco", str(p.coco), "--images", str(p.coco_images), "-o", str(p.tmp / "o.json"),
                   *cpu(p.corrupt_weights)],
        1, ["status", "error", "output"], "corrupt.safetensors", lambda p: {"output": str(p.tmp / "o.json")}),
}


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines of a command's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("name", list(CASES))
def test_a_fatal_failure_with_json_prints_one_record_and_one_error_line(name: str, paths: Paths) -> None:
    case = CASES[name]
    result = runner.invoke(app, [*case.args(paths), "--json"])
    assert result.exit_code == case.code, result.output
    assert result.stdout.count("\n") == 1, result.stdout  # one JSON document on one line
    record = json.loads(result.stdout)
    assert list(record) == case.keys
    assert record["status"] == "failed" and case.error in record["error"], record
    assert {key: record[key] for key in case.fields(paths)} == case.fields(paths)
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and case.error in " ".join(result.stderr.split()), result.stderr
    assert ("--help" in result.stderr) == (case.code == 2), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_failure_without_json_leaves_stdout_empty(name: str, paths: Paths) -> None:
    case = CASES[name]
    result = runner.invoke(app, case.args(paths))
    assert result.exit_code == case.code, result.output
    assert result.stdout == ""
    assert len(error_lines(result.stderr)) == 1, result.stderr


def test_eval_lists_the_pair_that_failed_before_no_pair_was_left(paths: Paths) -> None:
    folder = unreadable_image(paths)
    record = json.loads(runner.invoke(app, ["eval", str(folder), *cpu(paths.weights), "--json"]).stdout)
    assert [(failure["name"], failure["image"]) for failure in record["failures"]] == [("a", str(folder / "a_im.jpg"))]


def test_time_size_too_large_for_memory_is_a_usage_error_with_a_record(
        paths: Paths, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import runtime

    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: 1)
    result = runner.invoke(app, ["time", "--size", "160x120", *cpu(paths.weights), "--json"])
    assert result.exit_code == 2, result.output
    record = json.loads(result.stdout)
    assert list(record) == ["size", "status", "error"] and record["size"] == "160x120"
    assert record["status"] == "failed" and record["error"].startswith("the --size scene is 160x120")
    assert len(error_lines(result.stderr)) == 1 and "Try 'crm time --help'" in result.stderr
