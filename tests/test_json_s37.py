"""Every command's --json record carries "status", so a script tests one field: "ok" on success,
"partial" for a record that lists failed pairs (exit 1), and "failed" for a run that stopped as a
whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import pytest
from command_lines import command_inputs, command_line
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A pair, a BIG-layout folder and a one-instance COCO file, all tiny."""
    return command_inputs(tmp_path)


def one_record(result: Any) -> dict[str, Any]:
    """The single JSON document on stdout: one line, nothing before or after it."""
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    record = json.loads(result.stdout)
    assert isinstance(record, dict)
    return record


@pytest.mark.parametrize("command", ["score", "eval", "time", "coco", "batch"])
def test_success_record_says_ok(command: str, inputs: dict[str, Path], tiny_weights: Path) -> None:
    line = command_line(command, inputs, "-w", str(tiny_weights), "-d", "cpu")
    result = runner.invoke(app, [*line, "--json"])
    assert result.exit_code == 0, result.output
    record = one_record(result)
    assert record["status"] == "ok", record
    assert record.get("failed", 0) == 0


def test_score_record_keeps_its_fields(inputs: dict[str, Path]) -> None:
    result = runner.invoke(app, [*command_line("score", inputs), "--json"])
    record = one_record(result)
    # The fields scripts already read are all still there, beside the new one.
    assert {"iou", "mba", "threshold", "failed", "failures", "status"} <= record.keys(), record


def test_info_record_says_ok(tiny_weights: Path) -> None:
    result = runner.invoke(app, ["info", "-w", str(tiny_weights), "--json"])
    assert result.exit_code == 0, result.output
    record = one_record(result)
    assert record["status"] == "ok" and record["weights"]["error"] is None, record


def test_score_with_a_failed_pair_is_not_ok(tmp_path: Path) -> None:
    # Two ground truths; one prediction has another size: it fails, the other is scored (exit 1).
    _, good = write_scene_files(tmp_path / "gt", "a_im", "a_gt")
    _, other = write_scene_files(tmp_path / "gt", "b_im", "b_gt")
    predictions = tmp_path / "pred"
    predictions.mkdir()
    cv2.imwrite(str(predictions / "a.png"), cv2.imread(str(good), cv2.IMREAD_GRAYSCALE))
    cv2.imwrite(str(predictions / "b.png"), cv2.resize(cv2.imread(str(other), cv2.IMREAD_GRAYSCALE), (50, 70)))
    result = runner.invoke(app, ["score", str(predictions), str(tmp_path / "gt"), "--json"])
    assert result.exit_code == 1, result.output
    record = one_record(result)
    assert record["status"] == "partial" and record["failed"] == 1 and record["n"] == 1, record


def test_eval_with_a_failed_pair_is_not_ok(tmp_path: Path, tiny_weights: Path) -> None:
    folder = tmp_path / "big"
    write_scene_files(folder, "a_im", "a_seg")
    write_scene_files(folder, "a_im", "a_gt")
    write_scene_files(folder, "b_im", "b_seg")
    write_scene_files(folder, "b_im", "b_gt")
    (folder / "b_seg.png").write_bytes(b"not a png")  # fails its check; a is scored
    result = runner.invoke(app, ["eval", str(folder), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    record = one_record(result)
    assert record["status"] == "partial" and record["failed"] == 1 and record["n"] == 1, record


def test_batch_with_a_failed_pair_is_partial(tmp_path: Path, tiny_weights: Path) -> None:
    folder = tmp_path / "pairs"
    write_scene_files(folder, "a_im", "a_seg")
    write_scene_files(folder, "b_im", "b_seg")
    (folder / "b_seg.png").write_bytes(b"not a png")  # fails; a is refined
    result = runner.invoke(app, ["batch", str(folder), "-o", str(tmp_path / "out"), "-w", str(tiny_weights),
                                 "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    record = one_record(result)
    assert record["status"] == "partial" and record["failed"] == 1 and record["done"] == 1, record
    assert [item["status"] for item in record["items"]] == ["ok", "failed"]


def test_batch_dry_run_says_ok(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    write_scene_files(folder, "a_im", "a_seg")
    result = runner.invoke(app, ["batch", str(folder), "-o", str(tmp_path / "out"), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    record = one_record(result)
    assert record["status"] == "ok" and record["dry_run"] is True
    assert [item["status"] for item in record["items"]] == ["todo"]
