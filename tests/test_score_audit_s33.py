"""``crm score`` audit: --csv never replaces an input and ``--csv -`` is stdout; a photo given as a mask
is warned about; a smaller same-aspect mask is upsampled as crm eval does; a COCO ground-truth instance
without a prediction fails alone. ``crm compare -o strip.jpg`` writes a JPEG."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_scene_files
from PIL import Image
from score_helpers import GT, SHIFTED, square, squash, write_mask
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()
SWAPPED = "not a mask: are the image and mask swapped?"


# ---------------------------------------------------------------------------------------------
# --csv


@pytest.mark.parametrize("target", ["gt", "pred"])
def test_csv_naming_a_single_input_file_is_a_usage_error_and_leaves_it(tmp_path: Path, target: str) -> None:
    files = {"pred": write_mask(tmp_path / "pred.png", SHIFTED), "gt": write_mask(tmp_path / "s0_gt.png", GT)}
    before = files[target].read_bytes()
    result = runner.invoke(app, ["score", str(files["pred"]), str(files["gt"]), "--csv", str(files[target])])
    assert result.exit_code == 2, result.output
    assert files[target].read_bytes() == before
    assert "wrote" not in result.stderr and "IoU" not in result.stderr  # refused before scoring


@pytest.mark.parametrize("target", ["b_gt.png", "b_mask.png"])
def test_csv_naming_a_paired_file_inside_the_folders_is_a_usage_error(tmp_path: Path, target: str) -> None:
    big = tmp_path / "big"
    for name in "ab":
        write_mask(big / f"{name}_gt.png", GT)
        write_mask(big / f"{name}_mask.png", SHIFTED)
    before = (big / target).read_bytes()
    result = runner.invoke(app, ["score", str(tmp_path / "big"), str(big), "--csv", str(big / target)])
    assert result.exit_code == 2, result.output
    assert (big / target).read_bytes() == before
    assert target in squash(result.stderr)
    # A CSV beside the masks that is none of them is still written.
    (big / "scores.csv").write_text("old")
    result = runner.invoke(app, ["score", str(tmp_path / "big"), str(big), "--csv", str(big / "scores.csv")])
    assert result.exit_code == 0, result.output
    with (big / "scores.csv").open(newline="") as handle:
        rows = [(row["name"], int(row["intersection"]), int(row["union"])) for row in csv.DictReader(handle)]
    assert rows == [("a", 360, 440), ("b", 360, 440)]


def test_csv_dash_writes_the_rows_to_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pred, gt = write_mask(tmp_path / "p.png", SHIFTED), write_mask(tmp_path / "g.png", GT)
    result = runner.invoke(app, ["score", str(pred), str(gt), "--csv", "-"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "-").exists()
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["name"], int(r["intersection"]), int(r["union"])) for r in rows] == [("g", 360, 440)]
    assert float(rows[0]["iou"]) == 360 / 440


def test_csv_dash_with_json_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pred, gt = write_mask(tmp_path / "p.png", SHIFTED), write_mask(tmp_path / "g.png", GT)
    result = runner.invoke(app, ["score", str(pred), str(gt), "--csv", "-", "--json"])
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and not (tmp_path / "-").exists()


# ---------------------------------------------------------------------------------------------
# A photo given as a mask


def test_a_photo_as_prediction_is_warned_about_once_and_still_scored(tmp_path: Path) -> None:
    photo, mask = write_scene_files(tmp_path / "scene")
    gt = write_mask(tmp_path / "small_gt.png",
                    np.where(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 0, 255, 0).astype(np.uint8))
    result = runner.invoke(app, ["score", str(photo), str(gt), "--json"])
    assert result.exit_code == 0, result.output
    assert squash(result.stderr).count(squash(f"warning: {photo}: looks like a photo")) == 1
    assert squash(SWAPPED) in squash(result.stderr)
    assert json.loads(result.stdout)["n"] == 1
    # The same photo as both: one warning for the one file.
    both = runner.invoke(app, ["score", str(photo), str(photo)])
    assert both.exit_code == 0, both.output
    assert squash(both.stderr).count(squash(f"{photo}: looks like a photo")) == 1


def test_a_photo_as_ground_truth_is_warned_about(tmp_path: Path) -> None:
    photo, mask = write_scene_files(tmp_path)
    result = runner.invoke(app, ["score", str(mask), str(photo)])
    assert result.exit_code == 0, result.output
    assert squash(result.stderr).count(squash(f"warning: {photo}: looks like a photo")) == 1
    assert squash(f"{mask}: looks like") not in squash(result.stderr)


# ---------------------------------------------------------------------------------------------
# A smaller same-aspect mask


def test_a_small_ground_truth_is_upsampled_as_eval_does(tmp_path: Path) -> None:
    # A 2x upsampling of rows/columns 10..29 (linear, then > 128) covers exactly rows/columns 20..59.
    pred = write_mask(tmp_path / "pred" / "a.png", square(20, 20, 40, (80, 100)))
    gt = write_mask(tmp_path / "gt" / "a.png", GT)
    result = runner.invoke(app, ["score", str(pred.parent), str(gt.parent), "--csv", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["name"], int(r["intersection"]), int(r["union"])) for r in rows] == [("a", 1600, 1600)]
    assert squash(f"warning: {gt}: upsampled to the size of {pred}, 100x80") in squash(result.stderr)


def test_a_small_prediction_is_upsampled_too(tmp_path: Path) -> None:
    pred = write_mask(tmp_path / "p.png", GT)
    gt = write_mask(tmp_path / "g.png", square(20, 20, 40, (80, 100)))
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"][0]["iou"] == 1.0
    assert squash(f"warning: {pred}: upsampled to the size of {gt}, 100x80") in squash(result.stderr)


def test_score_and_eval_agree_on_an_upsampled_ground_truth(tmp_path: Path) -> None:
    from crm_cli.imageio import read_mask
    from crm_cli.masks import match_mask_to_image
    from crm_cli.metrics import score_pair

    rng = np.random.default_rng(3)
    gt_small = (cv2.GaussianBlur(rng.random((30, 40)).astype(np.float32), (7, 7), 0) > 0.5).astype(np.uint8) * 255
    pred_full = (cv2.GaussianBlur(rng.random((60, 80)).astype(np.float32), (9, 9), 0) > 0.5).astype(np.uint8) * 255
    pred, gt = write_mask(tmp_path / "p.png", pred_full), write_mask(tmp_path / "g.png", gt_small)
    fitted, resized = match_mask_to_image(read_mask(gt), (60, 80), "p.png", "g.png")  # what eval does
    expected = score_pair(read_mask(pred).scoring_values(), fitted.scoring_values())
    assert resized
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 0, result.output
    image = json.loads(result.stdout)["images"][0]
    assert 0 < expected.iou < 1 and (image["iou"], image["mba"]) == (expected.iou, expected.mba)


# ---------------------------------------------------------------------------------------------
# COCO


def _coco(ids: list[int]) -> dict:
    square = [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]
    return {"images": [{"id": 1, "file_name": "x.png", "height": 10, "width": 10}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "segmentation": square} for i in ids]}


def test_coco_instances_without_a_prediction_fail_alone(tmp_path: Path) -> None:
    (tmp_path / "gt.json").write_text(json.dumps(_coco([10, 11, 12])))
    (tmp_path / "pred.json").write_text(json.dumps(_coco([10, 12])))
    args = ["score", str(tmp_path / "pred.json"), str(tmp_path / "gt.json")]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1, result.output
    payload = json.loads(result.stdout)
    assert payload["n"] == 2 and payload["iou"] == 1.0 and payload["failed"] == 1
    assert payload["failures"] == [{"id": 11, "image_id": 1, "error": "no prediction with the same annotation id"}]
    assert payload["status"] == "partial"
    text = squash(runner.invoke(app, args).stderr)
    assert squash("failed: annotation 11 (image_id 1): no prediction with the same annotation id") in text
    assert squash("1 of 3 ground-truth instances failed") in text


def test_coco_with_no_instance_predicted_is_a_failure(tmp_path: Path) -> None:
    (tmp_path / "gt.json").write_text(json.dumps(_coco([10, 11])))
    (tmp_path / "pred.json").write_text(json.dumps(_coco([20])))
    result = runner.invoke(app, ["score", str(tmp_path / "pred.json"), str(tmp_path / "gt.json"), "--json"])
    assert result.exit_code == 1, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "failed" and payload["failed"] == 2
    assert [failure["id"] for failure in payload["failures"]] == [10, 11]
    assert squash("no instance could be scored: all 2 failed") in squash(result.stderr)


def test_coco_csv_naming_the_ground_truth_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "gt.json").write_text(json.dumps(_coco([10])))
    (tmp_path / "pred.json").write_text(json.dumps(_coco([10])))
    result = runner.invoke(app, ["score", str(tmp_path / "pred.json"), str(tmp_path / "gt.json"),
                                 "--csv", str(tmp_path / "gt.json")])
    assert result.exit_code == 2, result.output
    assert json.loads((tmp_path / "gt.json").read_text()) == _coco([10])


# ---------------------------------------------------------------------------------------------
# crm compare -o strip.jpg


@pytest.mark.parametrize("name", ["strip.jpg", "strip.JPEG"])
def test_compare_writes_a_jpeg_strip(tmp_path: Path, name: str) -> None:
    photo, mask = write_scene_files(tmp_path)
    png, jpeg = tmp_path / "strip.png", tmp_path / name
    assert runner.invoke(app, ["compare", str(photo), str(mask), str(mask), "-o", str(png)]).exit_code == 0
    result = runner.invoke(app, ["compare", str(photo), str(mask), str(mask), "-o", str(jpeg)])
    assert result.exit_code == 0, result.output
    with Image.open(jpeg) as written:
        assert written.format == "JPEG" and written.mode == "RGB"
        strip = np.asarray(written)
    with Image.open(png) as lossless:
        reference = np.asarray(lossless.convert("RGB"))
    assert strip.shape == reference.shape
    assert np.abs(strip.astype(int) - reference.astype(int)).mean() < 3  # quality 95: close to the PNG
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # written atomically
    # Masks stay lossless: crm refine still refuses a JPEG output.
    refused = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "out.jpg")])
    assert refused.exit_code == 2 and "lossy" in refused.stderr and not (tmp_path / "out.jpg").exists()


def test_compare_still_refuses_other_lossy_names(tmp_path: Path) -> None:
    photo, mask = write_scene_files(tmp_path)
    result = runner.invoke(app, ["compare", str(photo), str(mask), str(mask), "-o", str(tmp_path / "strip.jp2")])
    assert result.exit_code == 2
    assert ".jpg" in result.stderr and not (tmp_path / "strip.jp2").exists()


def test_score_of_an_upsampled_ground_truth_by_hand(tmp_path: Path) -> None:
    """Session 53: the test above takes its expected value from the functions crm score calls. Here by
    hand: a 4x4 GT whose top-left 2x2 is 255, enlarged bilinearly to 8x8 (half-pixel centres: pixel 3
    samples the small row 1.25, 191; pixel 4 samples 1.75, 64; > 128 is foreground), is the top-left
    4x4 square; a prediction of rows 0-3, columns 1-4 meets it in 12 pixels of 20: IoU 0.6."""
    gt_small = np.zeros((4, 4), np.uint8)
    gt_small[:2, :2] = 255
    pred_full = np.zeros((8, 8), np.uint8)
    pred_full[:4, 1:5] = 255
    pred, gt = write_mask(tmp_path / "p.png", pred_full), write_mask(tmp_path / "g.png", gt_small)
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"][0]["iou"] == pytest.approx(0.6)
