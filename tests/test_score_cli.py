"""``crm score``: folder pairing (BIG layout), CSV/JSON output, errors and exit codes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene, write_scene_files
from score_helpers import GT, SHIFTED, square, squash, write_mask
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


EXACT = GT.copy()  # IoU 1
SMALL = square(10, 10, 10)  # intersection 100, union 400


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, ["score", *args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _ious(payload: dict) -> dict[str, float]:
    return {image["name"]: image["iou"] for image in payload["images"]}


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """A BIG-layout folder: a has _mask and _seg, b has <name> and _seg, c has only _seg; plus _im files."""
    folder = tmp_path / "big"
    for name in "abc":
        write_mask(folder / f"{name}_gt.png", GT)
        write_mask(folder / f"{name}_im.jpg", np.full((40, 50, 3), 90, np.uint8))
    write_mask(folder / "a_mask.png", EXACT)
    write_mask(folder / "a_seg.png", SMALL)
    write_mask(folder / "b.png", SHIFTED)
    write_mask(folder / "b_seg.png", SMALL)
    write_mask(folder / "c_seg.png", SHIFTED)
    return folder


def test_big_layout_default_order_mask_then_plain_then_seg(big: Path) -> None:
    payload = _json([str(big), str(big)])
    assert payload["n"] == 3
    assert _ious(payload) == {"a": 1.0, "b": 360 / 440, "c": 360 / 440}
    assert payload["iou"] == (400 + 360 + 360) / (400 + 440 + 440)


def test_pred_suffix_picks_one(big: Path) -> None:
    assert _ious(_json([str(big), str(big), "--pred-suffix", "_seg"])) == {
        "a": 100 / 400, "b": 100 / 400, "c": 360 / 440}


def test_pred_suffix_missing_names_each_and_scores_the_rest(big: Path) -> None:
    result = runner.invoke(app, ["score", str(big), str(big), "--pred-suffix", "_mask", "--json"])
    assert result.exit_code == 1
    err = squash(result.stderr)
    assert "error:" not in err and "2of3groundtruthsfailed" in err
    assert "failed:b:nopredictionfor" in err and "(triedb_mask)" in err and "failed:c:" in err
    payload = json.loads(result.stdout)
    assert _ious(payload) == {"a": 1.0} and [f["name"] for f in payload["failures"]] == ["b", "c"]


def test_separate_folders(tmp_path: Path, big: Path) -> None:
    pred = tmp_path / "pred"
    write_mask(pred / "a_seg.png", SHIFTED)
    write_mask(pred / "b_mask.png", EXACT)
    write_mask(pred / "c.png", SMALL)
    write_mask(pred / "unrelated.png", SMALL)  # predictions without GT are ignored
    assert _ious(_json([str(pred), str(big)])) == {"a": 360 / 440, "b": 1.0, "c": 100 / 400}


def test_plain_layout_pairs_by_stem(tmp_path: Path) -> None:
    write_mask(tmp_path / "gt" / "x.png", GT)
    write_mask(tmp_path / "gt" / "y.png", GT)
    write_mask(tmp_path / "pred" / "x.png", SHIFTED)
    write_mask(tmp_path / "pred" / "y.png", EXACT)
    assert _ious(_json([str(tmp_path / "pred"), str(tmp_path / "gt")])) == {"x": 360 / 440, "y": 1.0}


def test_single_files(tmp_path: Path) -> None:
    pred = write_mask(tmp_path / "p.png", SHIFTED)
    gt = write_mask(tmp_path / "thing_gt.png", GT)
    payload = _json([str(pred), str(gt)])
    assert payload["n"] == 1 and payload["images"][0]["name"] == "thing"
    assert payload["iou"] == 360 / 440


def test_json_only_on_stdout(big: Path) -> None:
    result = runner.invoke(app, ["score", str(big), str(big), "--json"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert set(payload) == {"status", "iou", "mba", "n", "images", "threshold", "failed", "failures"}
    assert payload["threshold"] is None and (payload["failed"], payload["failures"]) == (0, [])
    assert all(set(image) == {"name", "iou", "mba"} for image in payload["images"])
    assert 0 <= payload["iou"] <= 1 and 0 <= payload["mba"] <= 1
    assert "dataset" in result.stderr  # the table still goes to stderr


def test_table_on_stderr_without_json(big: Path) -> None:
    result = runner.invoke(app, ["score", str(big), str(big)])
    assert result.exit_code == 0
    assert result.stdout == ""
    err = squash(result.stderr)
    assert "100.00" in err  # a: IoU 100 %
    assert f"{100 * 1120 / 1280:.2f}" in err  # dataset IoU
    assert "dataset(n=3)" in err


def test_table_counts_images_without_boundary(tmp_path: Path) -> None:
    write_mask(tmp_path / "e_gt.png", np.zeros((40, 50), np.uint8))
    write_mask(tmp_path / "e_seg.png", np.zeros((40, 50), np.uint8))
    write_mask(tmp_path / "f_gt.png", GT)
    write_mask(tmp_path / "f_seg.png", SHIFTED)
    result = runner.invoke(app, ["score", str(tmp_path), str(tmp_path), "--json"])
    assert result.exit_code == 0
    assert "1withoutGTboundary" in squash(result.stderr)
    payload = json.loads(result.stdout)
    assert payload["n"] == 2
    assert payload["images"][0] == {"name": "e", "iou": 1.0, "mba": None}
    assert payload["mba"] == payload["images"][1]["mba"]


def test_csv_rows(tmp_path: Path, big: Path) -> None:
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["score", str(big), str(big), "--csv", str(out), "--json"])
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [list(row) for row in rows][0] == ["name", "iou", "mba", "intersection", "union"]
    assert [(r["name"], int(r["intersection"]), int(r["union"])) for r in rows] == [
        ("a", 400, 400), ("b", 360, 440), ("c", 360, 440)]
    for row, image in zip(rows, payload["images"], strict=True):
        assert float(row["iou"]) == image["iou"]
        assert float(row["mba"]) == image["mba"]


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    pred = write_mask(tmp_path / "pred" / "a.png", np.zeros((30, 50), np.uint8))
    gt = write_mask(tmp_path / "gt" / "a.png", GT)
    result = runner.invoke(app, ["score", str(pred.parent), str(gt.parent)])
    assert result.exit_code == 1
    err = squash(result.stderr)
    assert squash(str(pred)) in err and squash(str(gt)) in err
    assert "50x30" in err and "50x40" in err
    assert result.stderr.count("error:") == 1


def test_missing_prediction_fails_that_pair(tmp_path: Path) -> None:
    write_mask(tmp_path / "gt" / "x.png", GT)
    write_mask(tmp_path / "gt" / "y.png", GT)
    write_mask(tmp_path / "pred" / "x.png", GT)
    result = runner.invoke(app, ["score", str(tmp_path / "pred"), str(tmp_path / "gt")])
    assert result.exit_code == 1
    err = squash(result.stderr)
    assert "failed:y:" in err and "1of2groundtruthsfailed" in err and "dataset(n=1)" in err


def test_unreadable_mask_names_the_file(tmp_path: Path) -> None:
    pred = tmp_path / "broken.png"
    pred.write_bytes(b"not a png")
    gt = write_mask(tmp_path / "gt.png", GT)
    result = runner.invoke(app, ["score", str(pred), str(gt)])
    assert result.exit_code == 1
    assert "broken.png" in squash(result.stderr)


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    gt = write_mask(tmp_path / "gt.png", GT)
    result = runner.invoke(app, ["score", str(tmp_path / "nope.png"), str(gt)])
    assert result.exit_code == 1
    assert "nope.png" in squash(result.stderr)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    write_mask(tmp_path / "plain" / "x.png", GT)
    pred_file = write_mask(tmp_path / "p.png", GT)
    assert runner.invoke(app, ["score", str(pred_file), str(pred_file), "--bogus"]).exit_code == 2
    assert runner.invoke(app, ["score", str(pred_file)]).exit_code == 2
    # GT folder with a prediction file, and a non-BIG folder scored against itself.
    assert runner.invoke(app, ["score", str(pred_file), str(tmp_path / "plain")]).exit_code == 2
    same = tmp_path / "plain"
    assert runner.invoke(app, ["score", str(same), str(same)]).exit_code == 2
    # A GT folder without any mask: nothing to score, so no pairs found (as in batch and eval).
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["score", str(same), str(tmp_path / "empty")])
    assert result.exit_code == 2 and "nopairsfound" in squash(result.stderr)


def test_help() -> None:
    result = runner.invoke(app, ["score", "--help"])
    assert result.exit_code == 0
    text = squash(result.stdout)
    for option in ("--pred-suffix", "--csv", "--json"):
        assert option in text


def test_score_does_not_import_torch(tmp_path: Path, big: Path) -> None:
    code = f"""
import sys
from typer.testing import CliRunner
from crm_cli.cli import app
before = "torch" in sys.modules
result = CliRunner().invoke(app, ["score", {str(big)!r}, {str(big)!r}, "--json"])
assert result.exit_code == 0, result.stderr
print(before, "torch" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.split()
    assert after == before  # score itself pulled in no torch


def test_palette_and_16bit_masks(tmp_path: Path) -> None:
    from PIL import Image

    palette = Image.fromarray((SHIFTED > 0).astype(np.uint8), mode="P")  # indices 0/1, not grey levels
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(tmp_path / "p_seg.png")
    write_mask(tmp_path / "p_gt.png", GT)
    write_mask(tmp_path / "w_seg.png", SHIFTED.astype(np.uint16) * 257)
    write_mask(tmp_path / "w_gt.png", GT.astype(np.uint16) * 257)
    write_mask(tmp_path / "g_seg.png", SHIFTED)
    write_mask(tmp_path / "g_gt.png", GT)
    payload = _json([str(tmp_path), str(tmp_path)])
    by_name = {image["name"]: image for image in payload["images"]}
    assert by_name["p"] == {**by_name["g"], "name": "p"}
    assert by_name["w"] == {**by_name["g"], "name": "w"}
    assert by_name["g"]["iou"] == 360 / 440


def test_threshold_binarises_predictions_at_their_full_scale(tmp_path: Path) -> None:
    soft = GT.copy()
    soft[GT > 0] = 200  # 200 / 255 = 0.78
    soft[30:34, 10:30] = 150  # 80 more px at 150 / 255 = 0.59: in at > 128 and at 0.5, out at 0.7
    write_mask(tmp_path / "s_gt.png", GT)
    write_mask(tmp_path / "s_seg.png", soft)
    write_mask(tmp_path / "w_gt.png", GT)
    write_mask(tmp_path / "w_seg.png", soft.astype(np.uint16) * 257)  # the same values, 16-bit
    for threshold, iou in ((None, 400 / 480), ("0.5", 400 / 480), ("0.7", 1.0)):
        payload = _json([str(tmp_path), str(tmp_path), *([] if threshold is None else ["-t", threshold])])
        assert _ious(payload) == {"s": pytest.approx(iou), "w": pytest.approx(iou)}
        assert payload["threshold"] == (None if threshold is None else float(threshold))
    coco = tmp_path / "a.json"
    coco.write_text("{}")
    result = runner.invoke(app, ["score", str(coco), str(coco), "-t", "0.5"])
    assert result.exit_code == 2 and squash("--threshold applies to mask files") in squash(result.stderr)


def test_nested_folders_pair_by_relative_path(tmp_path: Path, big: Path) -> None:
    write_mask(big / "sub" / "d_gt.png", GT)
    write_mask(big / "sub" / "d_mask.png", SMALL)
    write_mask(big / "sub" / "deeper" / "a_gt.png", GT)
    write_mask(big / "sub" / "deeper" / "a_seg.png", SHIFTED)
    assert _ious(_json([str(big), str(big)])) == {"a": 1.0, "b": 360 / 440, "c": 360 / 440,
                                                  "sub/d": 100 / 400, "sub/deeper/a": 360 / 440}
    # A plain GT folder whose masks sit only in sub-folders, and a prediction folder mirroring it.
    write_mask(tmp_path / "gt" / "s1" / "x.png", GT)
    write_mask(tmp_path / "gt" / "s2" / "x.png", GT)
    write_mask(tmp_path / "pred" / "s1" / "x.png", EXACT)
    write_mask(tmp_path / "pred" / "s2" / "x.png", SMALL)
    write_mask(tmp_path / "pred" / "x.png", SHIFTED)  # same stem, other folder: not a candidate
    assert _ious(_json([str(tmp_path / "pred"), str(tmp_path / "gt")])) == {"s1/x": 1.0, "s2/x": 100 / 400}
    write_mask(tmp_path / "gt" / "s3" / "y.png", GT)
    result = runner.invoke(app, ["score", str(tmp_path / "pred"), str(tmp_path / "gt")])
    assert result.exit_code == 1 and "failed:s3/y:" in squash(result.stderr)
    assert "(trieds3/y_mask,s3/y,s3/y_seg)" in squash(result.stderr)


def test_eval_outputs_score_the_same_from_the_files(tiny_weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "big"
    for k, folder in enumerate((data, data, data / "sub")):
        image, gt = synthetic_scene(96, 128, seed=k)
        write_mask(folder / f"p{k}_im.png", image)
        write_mask(folder / f"p{k}_seg.png", coarse_of(gt, 8))
        write_mask(folder / f"p{k}_gt.png", gt)
    out = tmp_path / "refined"
    evaluated = runner.invoke(app, ["eval", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu",
                                    "--ratios", "1", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads(evaluated.stdout)
    scored = _json([str(out), str(data)])
    assert summary["n"] == scored["n"] == 3
    assert scored["iou"] == pytest.approx(summary["refined"]["iou"], abs=1e-12)
    assert scored["mba"] == pytest.approx(summary["refined"]["mba"], abs=1e-12)


def test_prediction_folder_inside_a_plain_gt_folder_is_not_ground_truth(tmp_path: Path) -> None:
    write_mask(tmp_path / "gt" / "x.png", GT)
    write_mask(tmp_path / "gt" / "pred" / "x.png", SHIFTED)
    assert _ious(_json([str(tmp_path / "gt" / "pred"), str(tmp_path / "gt")])) == {"x": 360 / 440}


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    write_mask(tmp_path / "gt" / "x.png", GT)
    write_mask(tmp_path / "gt" / "._x.png", GT)
    write_mask(tmp_path / "gt" / ".ipynb_checkpoints" / "x-checkpoint.png", GT)
    write_mask(tmp_path / "gt" / "sub" / ".cache" / "y.png", GT)
    write_mask(tmp_path / "pred" / "x.png", SHIFTED)
    assert _ious(_json([str(tmp_path / "pred"), str(tmp_path / "gt")])) == {"x": 360 / 440}


def test_one_score_per_name_lossless_files_first_with_warnings(tmp_path: Path) -> None:
    gt_png = write_mask(tmp_path / "gt" / "a.png", GT)
    gt_bmp = write_mask(tmp_path / "gt" / "a.bmp", SMALL)
    write_mask(tmp_path / "gt" / "b.png", GT)
    write_mask(tmp_path / "pred" / "a.png", GT)
    pred_png = write_mask(tmp_path / "pred" / "b.png", SHIFTED)
    pred_jpg = write_mask(tmp_path / "pred" / "b.jpg", SMALL)
    result = runner.invoke(app, ["score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json"])
    assert result.exit_code == 0, result.stderr
    assert _ious(json.loads(result.stdout)) == {"a": 1.0, "b": 360 / 440}
    err = squash(result.stderr)
    assert err.count("warning:") == 2
    for path in (gt_png, gt_bmp, pred_png, pred_jpg):
        assert squash(str(path)) in err


def test_paths_with_brackets_print_literally(tmp_path: Path) -> None:
    write_mask(tmp_path / "gt" / "shots [v2]" / "x.png", GT)
    write_mask(tmp_path / "gt" / "y [bold].png", GT)
    write_mask(tmp_path / "pred" / "shots [v2]" / "x.png", EXACT)
    write_mask(tmp_path / "pred" / "y [bold].png", EXACT)
    out = tmp_path / "out [red]" / "scores.csv"
    out.parent.mkdir()
    result = runner.invoke(app, ["score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--csv", str(out)])
    assert result.exit_code == 0, result.stderr
    err = squash(result.stderr)
    assert "shots[v2]/x" in err and "y[bold]" in err and squash(f"wrote {out}") in err


@pytest.mark.parametrize("case", ["missing", "corrupt", "size"])
def test_score_failure_with_json_prints_one_record_like_the_other_commands(tmp_path: Path, case: str) -> None:
    write_scene_files(tmp_path, "p0_im", "p0_seg", size=(120, 160))
    gt = tmp_path / "p0_seg.png"
    pred = {"missing": tmp_path / "nope.png", "corrupt": tmp_path / "corrupt.png",
            "size": tmp_path / "small.png"}[case]
    if case == "corrupt":
        pred.write_bytes(b"not an image")
    if case == "size":
        write_scene_files(tmp_path, "s_im", "small", size=(100, 100))
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 1, result.output
    assert result.stdout.count("\n") == 1, result.stdout  # was: nothing on stdout
    record = json.loads(result.stdout)
    assert list(record) == ["pred", "gt", "status", "error"]
    assert record["pred"] == str(pred) and record["gt"] == str(gt) and record["status"] == "failed"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {record['error']}"]
