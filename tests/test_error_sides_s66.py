"""benchmarks/error_sides.py: wrong pixels by side and distance, counted by hand, and a run on files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark
from PIL import Image

error_sides = load_benchmark("error_sides")


def square_truth() -> np.ndarray:
    """A 20x20 ground truth holding the 8x8 square of rows and columns 2-9."""
    gt = np.zeros((20, 20), np.uint8)
    gt[2:10, 2:10] = 255
    return gt


def test_each_wrong_pixel_is_counted_on_its_side_and_distance() -> None:
    gt = square_truth()
    pred = gt.copy()
    pred[10, 5] = 255  # added, next to the square: 1 px from its nearest pixel (9, 5)
    pred[17, 17] = 255  # added, far: sqrt(8**2 + 8**2) = 11.3 px from (9, 9)
    pred[2, 5] = 0  # removed, on the square's edge: 1 px from the background at (1, 5)
    pred[5, 5] = 0  # removed, inside: 4 px from the background at (1, 5) or (5, 1)
    sides = error_sides.error_sides(pred, gt, far=3.0)
    assert sides == error_sides.ErrorSides(added_near=1, added_far=1, removed_near=1, removed_far=1)
    # At 4 px the interior pixel is near (distance 4 is not more than 4); the far added one stays far.
    assert error_sides.error_sides(pred, gt, far=4.0) == error_sides.ErrorSides(1, 1, 2, 0)
    # A limit beyond every distance makes every error near.
    assert error_sides.error_sides(pred, gt, far=12.0) == error_sides.ErrorSides(2, 0, 2, 0)


def test_soft_predictions_are_binarised_as_scores_are() -> None:
    gt = square_truth()
    pred = gt.copy()
    pred[15, 15] = 128  # not foreground: the scores take > 128
    pred[16, 16] = 129  # foreground, far
    assert error_sides.error_sides(pred, gt) == error_sides.ErrorSides(0, 1, 0, 0)


def test_without_a_boundary_every_error_is_far() -> None:
    empty = np.zeros((6, 6), np.uint8)
    pred = empty.copy()
    pred[0, 0] = pred[3, 3] = 255
    assert error_sides.error_sides(pred, empty, far=100.0) == error_sides.ErrorSides(0, 2, 0, 0)
    full = np.full((6, 6), 255, np.uint8)
    assert error_sides.error_sides(empty, full, far=100.0) == error_sides.ErrorSides(0, 0, 0, 36)


def test_masks_of_two_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="one"):
        error_sides.error_sides(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8))


def write_mask(path: Path, values: np.ndarray) -> None:
    Image.fromarray(values).save(path)


def test_a_run_prints_each_kind_and_the_images_that_differ(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder, first, second = tmp_path / "set", tmp_path / "a", tmp_path / "b"
    for path in (folder, first, second):
        path.mkdir()
    gt = square_truth()
    grown = gt.copy()
    grown[15:18, 15:18] = 255  # 9 pixels added far from the square
    for name in ("one", "two"):
        write_mask(folder / f"{name}_gt.png", gt)
        write_mask(first / f"{name}_mask.png", gt)
    write_mask(second / "one_mask.png", grown)
    write_mask(second / "two_mask.png", gt)
    out_json = tmp_path / "sides.json"
    error_sides.main([str(folder), "--pred", f"exact={first}", "--pred", f"grown={second}",
                      "--json", str(out_json)])
    lines = capsys.readouterr().out.splitlines()
    assert "| exact | 2 | 0 | 0 | 0 | 0 |" in lines
    assert "| grown | 2 | 0 | 4 | 0 | 0 |" in lines  # 9 px on one image of two: 4.5, shown as 4
    assert "grown, most added far px against exact: one +9" in lines
    assert "grown, most removed far px against exact: none" in lines
    written = json.loads(out_json.read_text())
    assert written["far_px"] == 5.0
    assert written["images"]["grown"]["one"] == {"added_near": 0, "added_far": 9, "removed_near": 0, "removed_far": 0}


def test_a_prediction_folder_of_other_images_is_one_line(tmp_path: Path) -> None:
    folder, first, second = tmp_path / "set", tmp_path / "a", tmp_path / "b"
    for path in (folder, first, second):
        path.mkdir()
    for name in ("one", "two"):
        write_mask(folder / f"{name}_gt.png", square_truth())
        write_mask(first / f"{name}_mask.png", square_truth())
    write_mask(second / "one_mask.png", square_truth())
    with pytest.raises(SystemExit, match="other images than the first"):
        error_sides.main([str(folder), "--pred", f"a={first}", "--pred", f"b={second}"])
    with pytest.raises(SystemExit, match="NAME=FOLDER"):
        error_sides.main([str(folder), "--pred", str(first)])
    with pytest.raises(SystemExit, match="each NAME once"):
        error_sides.main([str(folder), "--pred", f"a={first}", "--pred", f"a={first}"])


def test_a_folder_without_ground_truths_is_one_line(tmp_path: Path) -> None:
    folder, predictions = tmp_path / "set", tmp_path / "a"
    folder.mkdir()
    predictions.mkdir()
    with pytest.raises(SystemExit, match="no pairs found"):
        error_sides.main([str(folder), "--pred", f"a={predictions}"])


def test_a_ground_truth_without_its_refined_mask_is_said_and_left_out(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder, predictions = tmp_path / "set", tmp_path / "a"
    folder.mkdir()
    predictions.mkdir()
    for name in ("one", "two"):
        write_mask(folder / f"{name}_gt.png", square_truth())
    write_mask(predictions / "one_mask.png", square_truth())
    error_sides.main([str(folder), "--pred", f"a={predictions}"])
    captured = capsys.readouterr()
    assert "| a | 1 | 0 | 0 | 0 | 0 |" in captured.out.splitlines()
    assert captured.err.startswith("warning: ") and "two" in captured.err
