"""Audit of crm coco, eval, info, time and batch: ``-o -`` for coco, pairs without a ground truth in
eval, missing weights in info, failure records for usage errors under --json, and the logged warnings
of a batch pair in its --json item."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import flat, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def model(weights: Path) -> list[str]:
    return ["-w", str(weights), "-d", "cpu"]


def coco_file(folder: Path) -> tuple[Path, Path]:
    """A one-instance COCO file over a synthetic photo: (annotations, images folder)."""
    images = folder / "images"
    write_scene_files(images, "im", "seg")
    annotations = folder / "coco.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "im.jpg", "height": 96, "width": 128}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "area": 1250.0, "bbox": [10, 10, 50, 50],
                         "segmentation": [[10.0, 10.0, 60.0, 10.0, 60.0, 60.0]]}]}))
    return annotations, images


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_coco_refuses_dash_as_its_output_before_the_model_loads(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    annotations, images = coco_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    missing_weights = ["-w", str(tmp_path / "absent.safetensors")]  # loading would fail with exit 1
    result = runner.invoke(app, ["coco", str(annotations), "-i", str(images), "-o", "-", *missing_weights])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = error_lines(result.stderr)
    assert "'--output'" in line and "writes a file" in flat(result.stderr) and "give a file name" in flat(result.stderr)
    assert not (tmp_path / "-").exists() and not (tmp_path / "-.partial.jsonl").exists()
    # With --json the failure record comes on stdout, as for the command's other usage errors.
    recorded = runner.invoke(app, ["coco", str(annotations), "-i", str(images), "-o", "-", "--json",
                                   *missing_weights])
    assert recorded.exit_code == 2
    record = json.loads(recorded.stdout)
    assert record["status"] == "failed" and "give a file name" in record["error"] and record["output"] == "-"
    assert sorted(os.listdir(tmp_path)) == ["coco.json", "images"]


def big_folder(folder: Path) -> None:
    """Two complete BIG triples (a, c) and one photo + coarse mask (b) without a ground truth."""
    for stem, seed in (("a", 0), ("b", 1), ("c", 2)):
        write_scene_files(folder, f"{stem}_im", f"{stem}_seg", seed=seed)
        if stem != "b":
            write_scene_files(folder, f"{stem}_im", f"{stem}_gt", seed=seed)


def test_eval_warns_about_pairs_without_a_ground_truth(tiny_weights: Path, tmp_path: Path) -> None:
    big_folder(tmp_path)
    result = runner.invoke(app, ["eval", str(tmp_path), *model(tiny_weights), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 2
    expected = (f"warning: {tmp_path}: 1 BIG-layout pair without a ground truth <name>_gt.* not scored, e.g. "
                f"{tmp_path / 'b_im.jpg'} + {tmp_path / 'b_seg.png'}")
    assert expected in flat(result.stderr) and flat(result.stderr).count("<name>_gt.* not scored") == 1

    # Two of them: counted in one line, the first named.
    (tmp_path / "a_gt.png").unlink()
    again = runner.invoke(app, ["eval", str(tmp_path), *model(tiny_weights), "-q"])
    assert again.exit_code == 0, again.output
    assert (f"warning: {tmp_path}: 2 BIG-layout pairs without a ground truth <name>_gt.* not scored, e.g. "
            f"{tmp_path / 'a_im.jpg'} + {tmp_path / 'a_seg.png'}") in flat(again.stderr)


def test_info_exits_1_for_weights_asked_for_that_are_missing(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "absent.safetensors"
    expected = f"weights not found: {missing} (give the path of a checkpoint, or set CRM_WEIGHTS)"
    table = runner.invoke(app, ["info", "-w", str(missing)])
    assert table.exit_code == 1 and table.stdout == ""
    assert f"error: {expected}" in flat(table.stderr) and flat(table.stderr).count("error:") == 1

    recorded = runner.invoke(app, ["info", "-w", str(missing), "--json"])
    assert recorded.exit_code == 1
    data = json.loads(recorded.stdout)
    assert data["status"] == "failed" and data["default_backend"] is None
    assert data["weights"]["exists"] is False and data["weights"]["error"] == expected

    monkeypatch.setenv("CRM_WEIGHTS", str(missing))
    from_env = runner.invoke(app, ["info", "--json"])
    expected = (f"weights not found: {missing} (from CRM_WEIGHTS; set it to the path of a checkpoint, or unset it "
                "for the shipped weights)")
    assert from_env.exit_code == 1 and json.loads(from_env.stdout)["weights"]["error"] == expected
    assert f"error: {expected}" in flat(from_env.stderr)


def test_info_status_is_ok_for_usable_weights(tiny_weights: Path) -> None:
    result = runner.invoke(app, ["info", "-w", str(tiny_weights), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["status"] == "ok" and data["weights"]["error"] is None


def usage_lines(tmp_path: Path, weights: Path) -> dict[str, tuple[list[str], str]]:
    """Per command: a line whose only fault is a usage error of crm's own checks, and a word of its message."""
    pair_image, _ = write_scene_files(tmp_path / "pair")
    big_folder(tmp_path / "big")
    annotations, images = coco_file(tmp_path / "coco")
    return {
        "batch": (["batch", str(tmp_path / "big"), "-o", str(tmp_path / "big"), *model(weights)],
                  "the output folder must differ"),
        "eval": (["eval", str(tmp_path / "big"), "--ratios", "1,0.5", *model(weights)], "--ratios"),
        "time": (["time", str(pair_image), str(pair_image), *model(weights)], "are the same file"),
        "time-size": (["time", "--size", "10x10", *model(weights)], "at least 16x16"),
        "coco": (["coco", str(annotations), "-i", str(images), "-o", str(annotations), *model(weights)],
                 "must differ from the annotation file"),
        "coco-ids": (["coco", str(annotations), "-i", str(images), "-o", str(tmp_path / "o.json"),
                      "--category-ids", "1,,2", *model(weights)], "no empty item"),
        "batch-onnx": (["batch", str(tmp_path / "big"), "-o", str(tmp_path / "out"), "--backend", "onnx",
                        "--precision", "fp16", *model(weights)], "--backend onnx runs in fp32"),
        "time-mask": (["time", str(pair_image), *model(weights)], "give IMAGE and MASK"),
    }


@pytest.mark.parametrize("command", ["batch", "eval", "time", "time-size", "coco", "coco-ids", "batch-onnx",
                                     "time-mask"])
def test_usage_errors_under_json_print_the_failure_record(command: str, tiny_weights: Path, tmp_path: Path) -> None:
    line, words = usage_lines(tmp_path, tiny_weights)[command]
    result = runner.invoke(app, [*line, "--json"])
    assert result.exit_code == 2, result.output
    assert result.stdout.count("\n") == 1, result.stdout
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and words in flat(record["error"])
    assert len(error_lines(result.stderr)) == 1 and words in flat(result.stderr)
    # Without --json, stdout stays empty.
    plain = runner.invoke(app, line)
    assert plain.exit_code == 2 and plain.stdout == ""
    if command == "eval":  # click's own parse errors come before the command runs: no record
        parsed = runner.invoke(app, [*line, "-t", "1.5", "--json"])
        assert parsed.exit_code == 2 and parsed.stdout == "" and "'--threshold'" in parsed.stderr


def test_a_batch_items_warnings_include_those_logged_while_it_was_refined(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    write_scene_files(data, "p0_im", "p0_seg", seed=0)
    _, mask = write_scene_files(data, "p1_im", "p1_seg", seed=1)
    drawn = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    mask.unlink()
    pages = data / "p1_seg.tif"  # two pages: imageio logs that only the first is read
    Image.fromarray(drawn).save(pages, save_all=True, append_images=[Image.fromarray(np.zeros_like(drawn))])
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), *model(tiny_weights), "--json"])
    assert result.exit_code == 0, result.output
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    frames = f"{pages}: holds 2 frames (an animation or a multi-page file); only the first is read"
    assert items["p1"]["warnings"] == [frames] and items["p0"]["warnings"] == []
    shown = [line.removeprefix("warning: ") for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert shown == [frames]  # shown once, listed once
