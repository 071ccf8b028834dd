"""``crm score`` of folders goes on past a bad pair (missing, undecodable or mis-sized prediction);
``crm compare -o -`` writes the strip to stdout."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene
from score_helpers import GT, SHIFTED, square, squash, write_mask
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.writing import write_png

runner = CliRunner()


# The three good pairs: a shifted 2 rows (360 / 440), b a quarter (100 / 400), d exact (400 / 400).
GOOD = {"a": SHIFTED, "b": square(10, 10, 10), "d": GT}
EXPECTED_IOU = (360 + 100 + 400) / (440 + 400 + 400)


def _folders(tmp_path: Path, bad: str) -> tuple[Path, Path, str]:
    """pred/ and gt/ (BIG names) with a, b, d scorable and c ``bad``; returns the folders and c's error text."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for name in "abcd":
        write_mask(gt / f"{name}_gt.png", GT)
    for name, mask in GOOD.items():
        write_mask(pred / f"{name}_mask.png", mask)
    if bad == "missing":
        error = f"no prediction for {gt / 'c_gt.png'} in {pred} (tried c_mask, c, c_seg)"
    elif bad == "corrupt":
        (pred / "c_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        error = str(pred / "c_mask.png")
    else:
        write_mask(pred / "c_mask.png", GT[:30])
        error = f"size mismatch: {pred / 'c_mask.png'} is 50x30 but {gt / 'c_gt.png'} is 50x40"
    return pred, gt, error


@pytest.mark.parametrize("bad", ["missing", "corrupt", "mismatch"])
def test_one_bad_pair_is_listed_and_the_rest_scored(tmp_path: Path, bad: str) -> None:
    pred, gt, error = _folders(tmp_path, bad)
    result = runner.invoke(app, ["score", str(pred), str(gt)])
    assert result.exit_code == 1
    assert result.stdout == ""
    err = squash(result.stderr)
    assert f"failed:c:{squash(error)}" in err
    assert "error:" not in err and "Traceback" not in result.stderr
    assert "dataset(n=3)" in err and f"{100 * EXPECTED_IOU:.2f}" in err  # 69.35
    assert "1of4groundtruthsfailed(listedabove)andareleftoutofthescores" in err


@pytest.mark.parametrize("bad", ["missing", "corrupt", "mismatch"])
def test_json_counts_scored_and_failed_pairs(tmp_path: Path, bad: str) -> None:
    pred, gt, error = _folders(tmp_path, bad)
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["iou"] == EXPECTED_IOU
    assert payload["n"] == 3 and [image["name"] for image in payload["images"]] == ["a", "b", "d"]
    assert [image["iou"] for image in payload["images"]] == [360 / 440, 100 / 400, 1.0]
    assert payload["failed"] == 1
    [failure] = payload["failures"]
    assert set(failure) == {"name", "pred", "gt", "error"}
    assert failure["name"] == "c" and failure["gt"] == str(gt / "c_gt.png")
    assert failure["pred"] == (None if bad == "missing" else str(pred / "c_mask.png"))
    assert error in failure["error"]
    assert payload["status"] == "partial"


def test_csv_holds_the_scored_pairs_only(tmp_path: Path) -> None:
    pred, gt, _ = _folders(tmp_path, "corrupt")
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["score", str(pred), str(gt), "--csv", str(out)])
    assert result.exit_code == 1
    with out.open(newline="") as handle:
        rows = [(row["name"], int(row["intersection"]), int(row["union"])) for row in csv.DictReader(handle)]
    assert rows == [("a", 360, 440), ("b", 100, 400), ("d", 400, 400)]


def test_no_pair_scored_is_an_error_without_a_table(tmp_path: Path) -> None:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_mask(gt / "x_gt.png", GT)
    write_mask(gt / "y_gt.png", GT)
    write_mask(pred / "x_mask.png", GT[:20])  # mismatched; y has no prediction
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["status"] == "failed" and payload["error"] == "no pair could be scored: all 2 failed"
    assert payload["failed"] == 2 and [failure["name"] for failure in payload["failures"]] == ["y", "x"]
    err = squash(result.stderr)
    assert "error:nopaircouldbescored:all2failed" in err and "failed:x:sizemismatch" in err and "failed:y:" in err
    assert "dataset" not in err and "IoUandmBA" not in err


def test_one_ground_truth_file_stays_an_error(tmp_path: Path) -> None:
    """A folder goes on past its corrupt prediction; GT given as one file makes that same one an error."""
    pred, gt, error = _folders(tmp_path, "corrupt")
    folder = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert folder.exit_code == 1 and json.loads(folder.stdout)["n"] == 3
    result = runner.invoke(app, ["score", str(pred), str(gt / "c_gt.png"), "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["status"] == "failed" and error in payload["error"] and "failures" not in payload
    assert "error:" in result.stderr and "failed:" not in result.stderr
    single = runner.invoke(app, ["score", str(pred / "c_mask.png"), str(gt / "c_gt.png")])
    assert single.exit_code == 1 and "error:" in single.stderr and "dataset" not in single.stderr
    # The good pairs of the same folders still score without a failure.
    (pred / "c_mask.png").unlink()
    write_mask(pred / "c_mask.png", GT)
    assert json.loads(runner.invoke(app, ["score", str(pred), str(gt), "--json"]).stdout)["failed"] == 0


@pytest.fixture
def scene_files(tmp_path: Path) -> list[Path]:
    image, gt = synthetic_scene(96, 128, seed=3)
    files = [tmp_path / "image.png", tmp_path / "coarse.png", tmp_path / "refined.png", tmp_path / "gt.png"]
    for path, array in zip(files, (image, coarse_of(gt), cv2.GaussianBlur(gt, (5, 5), 0), gt), strict=True):
        write_png(path, array)
    return files


def test_compare_to_stdout_writes_the_same_png_as_to_a_file(scene_files: list[Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["compare", *map(str, scene_files), "--crops", "2"]
    result = runner.invoke(app, [*args, "-o", "-"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.startswith(b"\x89PNG")
    strip = cv2.imdecode(np.frombuffer(result.stdout_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    assert "wrote <stdout>" in result.stderr and f"({strip.shape[1]}x{strip.shape[0]})" in result.stderr
    out = tmp_path / "cmp.png"
    assert runner.invoke(app, [*args, "-o", str(out)]).exit_code == 0
    np.testing.assert_array_equal(strip, cv2.imread(str(out), cv2.IMREAD_UNCHANGED))
    assert not (tmp_path / "-").exists()  # no file named "-" was made


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_compare_to_stdout_refuses_a_terminal(scene_files: list[Path]) -> None:
    primary, terminal = os.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "crm_cli", "compare", *map(str, scene_files), "-o", "-"],
                              stdout=terminal, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(terminal)
        os.close(primary)
    assert done.returncode == 2
    assert "error: refusing to write PNG bytes to a terminal" in done.stderr
