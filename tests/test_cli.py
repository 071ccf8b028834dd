"""End-to-end CLI behaviour: files written, stdout discipline, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def write_pair(folder: Path, stem_image: str, stem_mask: str, size=(96, 128), seed: int = 0,
               gt_name: str | None = None) -> None:
    image, gt = synthetic_scene(*size, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{stem_image}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / f"{stem_mask}.png"), coarse_of(gt, 8))
    if gt_name:
        cv2.imwrite(str(folder / f"{gt_name}.png"), gt)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    write_pair(tmp_path, "img", "mask")
    return tmp_path / "img.jpg", tmp_path / "mask.png"


def test_help_and_version_are_quick_and_clean() -> None:
    assert runner.invoke(app, ["--help"]).exit_code == 0
    for command in ("refine", "batch", "score", "eval", "time", "train", "info", "compare"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, command
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.stdout.startswith("crm ")
    # --help must not import torch.
    code = "import sys; from crm_cli.cli import app; import crm_cli.cli.refine; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_refine_writes_png_of_input_size(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(out), "-w", str(tiny_weights),
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "device: cpu" in result.stderr
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert written.shape == (96, 128) and written.dtype == np.uint8
    assert not list(tmp_path.glob("*.tmp"))


def refine_each_mask(image: Path, masks: list[Path], weights: Path, folder: Path) -> tuple[list[np.ndarray], str]:
    """``crm refine`` of ``image`` with each mask in turn: the outputs read back, and the last stderr."""
    outputs, stderr = [], ""
    for mask in masks:
        out = folder / f"out_{mask.stem}.png"
        result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "-w", str(weights),
                                     "--device", "cpu"])
        assert result.exit_code == 0, result.output
        outputs.append(cv2.imread(str(out), cv2.IMREAD_UNCHANGED))
        stderr = result.stderr
    return outputs, stderr


def test_refine_reads_8bit_values_in_a_16bit_mask_like_the_8bit_mask(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    wide = tmp_path / "mask16.png"
    cv2.imwrite(str(wide), cv2.imread(str(pair[1]), cv2.IMREAD_UNCHANGED).astype(np.uint16))
    (first, second), stderr = refine_each_mask(pair[0], [pair[1], wide], tiny_weights, tmp_path)
    # The fixture's mask holds 0 and 255: binary, read without a note since session 53 (README).
    assert "a 16-bit mask whose largest value is 255" not in stderr
    assert second.max() > 128 and np.array_equal(first, second)  # not the empty mask of / 65535


def test_refine_float_tiff_mask_matches_the_8bit_mask(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    floats = tmp_path / "prob.tif"
    cv2.imwrite(str(floats), cv2.imread(str(pair[1]), cv2.IMREAD_UNCHANGED).astype(np.float32) / np.float32(255))
    (first, second), _ = refine_each_mask(pair[0], [pair[1], floats], tiny_weights, tmp_path)
    assert second.max() > 128 and np.array_equal(first, second)
    labels = runner.invoke(app, ["refine", str(pair[0]), str(floats), "-o", str(tmp_path / "l.png"), "-w",
                                 str(tiny_weights), "--device", "cpu", "--mode", "labels"])
    assert labels.exit_code == 1
    assert "prob.tif: --mode labels needs integer label ids" in labels.stderr
    assert "device:" not in labels.stderr  # refused from the header, before the model loads
    assert not (tmp_path / "l.png").exists()


def test_batch_refuses_labels_mode_for_a_float_mask_before_the_model(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    data = tmp_path / "big"
    write_pair(data, "prob_im", "prob_seg")
    seg = data / "prob_seg.png"
    cv2.imwrite(str(data / "prob_seg.tif"), cv2.imread(str(seg), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255)
    seg.unlink()
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu",
                                 "--mode", "labels", "--json"])
    assert result.exit_code == 1
    assert "device:" not in result.stderr  # every pair was refused from its headers: no model loaded
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (0, 1)
    assert summary["items"][0]["error"].endswith("prob_seg.tif: --mode labels needs integer label ids, but "
                                                 "this mask holds floating-point probabilities")
    write_pair(data, "ids_im", "ids_seg")
    rest = runner.invoke(app, ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu",
                               "--mode", "labels", "--json"])
    assert rest.exit_code == 1 and (json.loads(rest.stdout)["done"], json.loads(rest.stdout)["failed"]) == (1, 1)
    assert (out / "ids_mask.png").exists() and not (out / "prob_mask.png").exists()


def write_label_map(path: Path, ids: tuple[int, ...]) -> np.ndarray:
    """A 96x128 palette label map holding a box of each id in ``ids``; returns its values."""
    from crm_cli.writing import write_png

    labels = np.zeros((96, 128), np.uint8)
    for k, label in enumerate(ids):
        labels[10 + 40 * k: 40 + 40 * k, 10 + 50 * k: 50 + 50 * k] = label
    write_png(path, labels, [0, 0, 0, 255, 0, 0, 0, 255, 0])
    return labels


def test_refine_names_labels_the_mask_does_not_hold(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    from crm_cli.imageio import read_mask

    mask = tmp_path / "labels.png"
    labels = write_label_map(mask, (1, 2))
    out = tmp_path / "out.png"
    # None of the ids is there: the mask is written unchanged, with no model (these weights are absent).
    result = runner.invoke(app, ["refine", str(pair[0]), str(mask), "-o", str(out), "-w",
                                 str(tmp_path / "absent.safetensors"), "-d", "cpu", "--labels", "999"])
    assert result.exit_code == 0, result.output
    stderr = " ".join(result.stderr.split())
    assert (f"warning: --labels: label 999 is not in {mask}; it holds labels 1, 2: nothing to refine, so the mask "
            "is written unchanged") in stderr
    assert f"wrote {out} (label map, unchanged: no label to refine)" in stderr and "stages" not in stderr
    assert "device:" not in stderr
    written = read_mask(out)
    assert written.kind == "palette" and np.array_equal(written.values, labels)
    record = runner.invoke(app, ["refine", str(pair[0]), str(mask), "-o", str(out), "-w", str(tiny_weights),
                                 "-d", "cpu", "--labels", "0,9", "--json", "-q"])
    assert record.exit_code == 0 and json.loads(record.stdout)["schedule"] is None
    assert ("--labels: label 0 is the background, which is never refined; label 9 is not in"
            in " ".join(record.stderr.split()))
    # Some ids there: the others are named, and only those there are refined.
    some = runner.invoke(app, ["refine", str(pair[0]), str(mask), "-o", str(out), "-w", str(tiny_weights), "-d",
                               "cpu", "--labels", "2,7,8"])
    assert some.exit_code == 0, some.output
    assert (f"warning: --labels: labels 7, 8 are not in {mask}; refining label 2 only"
            in " ".join(some.stderr.split()))
    assert "stages" in some.stderr
    assert np.array_equal(read_mask(out).values == 1, labels == 1)
    # A mask refined as one object ignores --labels, and says so.
    binary = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(out), "-w", str(tiny_weights),
                                 "-d", "cpu", "--labels", "3", "-q"])
    assert binary.exit_code == 0, binary.output
    assert f"--labels ignored: {pair[1]} is refined as one binary mask" in " ".join(binary.stderr.split())


def test_batch_names_labels_a_mask_does_not_hold(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    from crm_cli.imageio import read_mask

    data = tmp_path / "big"
    for name, ids in (("both", (1, 2)), ("one", (1,))):
        write_pair(data, f"{name}_im", f"{name}_seg")
        write_label_map(data / f"{name}_seg.png", ids)
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu",
                                 "--mode", "labels", "--labels", "2", "--json"])
    assert result.exit_code == 0, result.output
    stderr = " ".join(result.stderr.split())
    assert (f"warning: --labels: label 2 is not in {data / 'one_seg.png'}; it holds label 1: nothing to refine, "
            "so the mask is written unchanged") in stderr
    assert "both_seg.png" not in stderr
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert items["one"]["status"] == "ok" and items["one"]["schedule"] is None
    assert items["both"]["schedule"] is not None
    assert np.array_equal(read_mask(out / "one_mask.png").values, read_mask(data / "one_seg.png").values)


def test_refine_threshold_and_cutout(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    common = [str(pair[0]), str(pair[1]), "-w", str(tiny_weights), "-d", "cpu", "-q"]
    assert runner.invoke(app, ["refine", *common, "-o", str(tmp_path / "soft.png")]).exit_code == 0
    assert runner.invoke(app, ["refine", *common, "-o", str(tmp_path / "bin.png"), "-t", "0.5"]).exit_code == 0
    assert runner.invoke(app, ["refine", *common, "-o", str(tmp_path / "cut.png"), "-k", "cutout"]).exit_code == 0
    soft = cv2.imread(str(tmp_path / "soft.png"), cv2.IMREAD_UNCHANGED)
    binary = cv2.imread(str(tmp_path / "bin.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(binary)) <= {0, 255}
    np.testing.assert_array_equal(binary == 255, soft > 127.5)
    cutout = np.asarray(Image.open(tmp_path / "cut.png"))
    assert cutout.shape == (96, 128, 4)
    np.testing.assert_array_equal(cutout[..., 3], soft)


def test_refine_stdin_to_stdout(pair, tiny_weights) -> None:  # noqa: ANN001
    result = runner.invoke(app, ["refine", "-", str(pair[1]), "-o", "-", "-w", str(tiny_weights), "-d", "cpu"],
                           input=pair[0].read_bytes())
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(result.stdout_bytes)).size == (128, 96)


@pytest.mark.parametrize("fill, expected", [(0, 0), (255, 255)])
def test_empty_and_full_masks_give_empty_and_full_outputs(pair, tiny_weights, tmp_path, fill, expected) -> None:  # noqa: ANN001
    mask = tmp_path / "flat.png"
    cv2.imwrite(str(mask), np.full((96, 128), fill, np.uint8))
    out = tmp_path / "flat_out.png"
    args = ["refine", str(pair[0]), str(mask), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert (cv2.imread(str(out), cv2.IMREAD_UNCHANGED) == expected).all()


def test_refine_bad_inputs_give_one_line_errors(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    base = ["-w", str(tiny_weights), "-d", "cpu", "-o", str(tmp_path / "o.png")]
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), np.zeros((50, 50), np.uint8))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    cases = [
        ([str(pair[0]), str(other)], "other.png"),
        ([str(tmp_path / "missing.jpg"), str(pair[1])], "missing.jpg"),
        ([str(corrupt), str(pair[1])], "corrupt.png"),
    ]
    for args, name in cases:
        result = runner.invoke(app, ["refine", *args, *base])
        assert result.exit_code == 1, result.output
        assert name in result.stderr and "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and len(result.stderr.strip().splitlines()) <= 2
    bad_ratio = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), *base, "--ratios", "0.5,0.25"])
    assert bad_ratio.exit_code == 2
    bad_weights = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", "x.png", "-w", str(corrupt)])
    assert bad_weights.exit_code == 1


def test_missing_cuda_is_an_error_not_a_fallback(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "o.png"),
                                 "-w", str(tiny_weights), "--device", "cuda"])
    assert result.exit_code == 1 and "cuda" in result.stderr.lower()
    assert not (tmp_path / "o.png").exists()


def test_batch_big_layout_resumes_and_survives_a_bad_pair(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    data = tmp_path / "big"
    for k in range(3):
        write_pair(data / ("sub" if k == 2 else ""), f"p{k}_im", f"p{k}_seg", seed=k)
    (data / "bad_im.jpg").write_bytes(b"garbage")
    cv2.imwrite(str(data / "bad_seg.png"), np.zeros((8, 8), np.uint8))
    out = tmp_path / "out"
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1
    summary = json.loads(first.stdout)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (3, 1, 0)
    assert (out / "p0_mask.png").exists() and (out / "sub" / "p2_mask.png").exists()
    assert "bad" in first.stderr and "1 failed" in first.stderr
    (data / "bad_im.jpg").unlink()
    (data / "bad_seg.png").unlink()
    second = json.loads(runner.invoke(app, args).stdout)
    assert (second["done"], second["skipped"], second["failed"]) == (0, 3, 0)
    third = runner.invoke(app, [*args, "--overwrite"])
    assert third.exit_code == 0 and json.loads(third.stdout)["done"] == 3


def test_batch_two_folder_layout_mirrors_subfolders(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    data = tmp_path / "set"
    write_pair(tmp_path / "tmp", "x", "x")
    (data / "images" / "a").mkdir(parents=True)
    (data / "masks" / "a").mkdir(parents=True)
    (tmp_path / "tmp" / "x.jpg").rename(data / "images" / "a" / "x.jpg")
    (tmp_path / "tmp" / "x.png").rename(data / "masks" / "a" / "x.png")
    out = tmp_path / "o"
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert (out / "a" / "x.png").exists()
    same = runner.invoke(app, ["batch", str(data), "-o", str(data), "-w", str(tiny_weights)])
    assert same.exit_code == 2


def test_eval_scores_equal_score_on_written_outputs(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    data = tmp_path / "big"
    for k in range(2):
        write_pair(data, f"o{k}_im", f"o{k}_seg", seed=k, gt_name=f"o{k}_gt")
    out = tmp_path / "masks"
    result = runner.invoke(app, ["eval", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json",
                                 "--per-stage", "--ratios", "0.5,1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # At 128x96 the 0.5 stage is under MIN_STAGE_SIDE, skipped for size: no row of its own (session 54;
    # it was a row scoring the coarse mask it was given).
    assert summary["n"] == 2 and [(stage["ratio"], stage["n"]) for stage in summary["stages"]] == [(1.0, 2)]
    for name in ("o0", "o1"):
        (out / f"{name}_gt.png").write_bytes((data / f"{name}_gt.png").read_bytes())
    scored = json.loads(runner.invoke(app, ["score", str(out), str(out), "--json"]).stdout)
    assert scored["iou"] == pytest.approx(summary["refined"]["iou"], abs=1e-12)
    assert scored["mba"] == pytest.approx(summary["refined"]["mba"], abs=1e-12)
    coarse = json.loads(runner.invoke(app, ["score", str(data), str(data), "--pred-suffix", "_seg", "--json"]).stdout)
    assert coarse["iou"] == pytest.approx(summary["coarse"]["iou"], abs=1e-12)


def test_eval_json_names_only_the_stages_that_ran(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    """Under auto every image gets its own stages: "ratios" is null, not the preset's nominal list, and
    the --per-stage rows are the ratios that ran; a fixed preset keeps its list."""
    data = tmp_path / "big"
    for k in range(2):
        write_pair(data, f"o{k}_im", f"o{k}_seg", seed=k, gt_name=f"o{k}_gt")
    common = ["eval", str(data), "-w", str(tiny_weights), "-d", "cpu", "--json", "--per-stage", "-q"]
    auto = json.loads(runner.invoke(app, common).stdout)
    # At 128x96 auto runs only the final stage, enlarged 1.5x (see test_time_reports_per_stage_breakdown).
    assert auto["preset"] == "auto" and auto["ratios"] is None and auto["schedules"] == {"1.5": 2}
    assert [(stage["ratio"], stage["n"]) for stage in auto["stages"]] == [(1.5, 2)]
    assert auto["stages"][0]["iou"] == pytest.approx(auto["refined"]["iou"])
    fixed = json.loads(runner.invoke(app, [*common, "--preset", "balanced"]).stdout)
    assert fixed["ratios"] == [0.125, 0.25, 0.5, 1.0]
    # Only the last of them runs at 128x96: the others are skipped for size and get no rows.
    assert [(stage["ratio"], stage["n"]) for stage in fixed["stages"]] == [(1.0, 2)]
    assert fixed["stages"][0]["iou"] == pytest.approx(fixed["refined"]["iou"])
    # A photo whose 0.5 stage is 240 px tall runs it: its row counts that photo alone.
    write_pair(data, "big_im", "big_seg", size=(480, 640), seed=5, gt_name="big_gt")
    mixed = json.loads(runner.invoke(app, [*common, "--ratios", "0.5,1"]).stdout)
    assert [(stage["ratio"], stage["n"]) for stage in mixed["stages"]] == [(0.5, 1), (1.0, 3)]


def test_eval_threshold_scores_and_writes_the_binarised_masks(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    data = tmp_path / "big"
    for k in range(2):
        write_pair(data, f"o{k}_im", f"o{k}_seg", seed=k, gt_name=f"o{k}_gt")
    soft_dir, binary_dir = tmp_path / "soft", tmp_path / "binary"
    common = ["-w", str(tiny_weights), "-d", "cpu", "--json", "-q"]
    soft = json.loads(runner.invoke(app, ["eval", str(data), "-o", str(soft_dir), *common]).stdout)
    result = runner.invoke(app, ["eval", str(data), "-o", str(binary_dir), "-t", "0.7", *common])
    assert result.exit_code == 0, result.output
    binary = json.loads(result.stdout)
    assert soft["threshold"] is None and binary["threshold"] == 0.7
    assert binary["coarse"] == soft["coarse"]
    for name in ("o0", "o1"):
        probability = np.asarray(Image.open(soft_dir / f"{name}_mask.png"), np.float64)
        written = np.asarray(Image.open(binary_dir / f"{name}_mask.png"))
        assert set(np.unique(written)) <= {0, 255}
        # The soft file holds round(255 p): p > 0.7 is round(255 p) >= 179 (0.7 x 255 = 178.5).
        np.testing.assert_array_equal(written == 255, probability >= 179)
        (binary_dir / f"{name}_gt.png").write_bytes((data / f"{name}_gt.png").read_bytes())
    scored = json.loads(runner.invoke(app, ["score", str(binary_dir), str(binary_dir), "--json"]).stdout)
    assert scored["iou"] == pytest.approx(binary["refined"]["iou"], abs=1e-12)
    assert scored["mba"] == pytest.approx(binary["refined"]["mba"], abs=1e-12)
    bad = runner.invoke(app, ["eval", str(data), "-t", "1.5", *common])
    assert bad.exit_code == 2 and bad.stdout == ""


def test_time_reports_per_stage_breakdown(tiny_weights) -> None:  # noqa: ANN001
    result = runner.invoke(app, ["time", "--size", "160x120", "--repeat", "1", "-w", str(tiny_weights), "-d", "cpu",
                                 "--preset", "balanced", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["ratio"] for s in report["stages"]] == [0.125, 0.25, 0.5, 1.0]
    # auto (the default) only considers stages the 160x120 image can fill: the final one, enlarged 1.5x.
    auto = json.loads(runner.invoke(app, ["time", "--size", "160x120", "--repeat", "1", "-w", str(tiny_weights),
                                          "-d", "cpu", "--json"]).stdout)
    assert [s["ratio"] for s in auto["stages"]] == [1.5] and auto["ratios"] == [1.5]
    assert report["width"] == 160 and report["height"] == 120 and report["peak_rss_mb"] > 0
    assert all(s["encode_s"] >= 0 and s["decode_s"] >= 0 for s in report["stages"])
    assert runner.invoke(app, ["time", "-w", str(tiny_weights)]).exit_code == 2


def test_time_and_eval_accept_a_smaller_same_aspect_mask(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    data = tmp_path / "big"
    write_pair(data, "a_im", "a_seg", size=(96, 128), gt_name="a_gt")
    seg = cv2.imread(str(data / "a_seg.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(data / "a_seg.png"), cv2.resize(seg, (64, 48), interpolation=cv2.INTER_NEAREST))
    timed = runner.invoke(app, ["time", str(data / "a_im.jpg"), str(data / "a_seg.png"), "--repeat", "1",
                                "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert timed.exit_code == 0, timed.output
    assert "upsampled" in timed.stderr and json.loads(timed.stdout)["width"] == 128
    evaluated = runner.invoke(app, ["eval", str(data), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["n"] == 1


def test_refine_json_reports_failures(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    result = runner.invoke(app, ["refine", str(tmp_path / "nope.jpg"), str(pair[1]), "-o", str(tmp_path / "o.png"),
                                 "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and "nope.jpg" in record["error"]


def test_palette_label_map_to_webp_is_refused_before_the_model_loads(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    from crm_cli.writing import write_png

    labels = np.zeros((96, 128), np.uint8)
    labels[10:40, 10:50] = 1
    labels[50:90, 60:120] = 2
    mask = tmp_path / "labels.png"
    write_png(mask, labels, [0, 0, 0, 255, 0, 0, 0, 255, 0])
    out = tmp_path / "out.webp"
    expected = f"{out}: WebP cannot store a palette (label map) losslessly; write it as .png or .tif"
    for weights in (tiny_weights, tmp_path / "absent.safetensors"):  # absent weights: no model is loaded first
        result = runner.invoke(app, ["refine", str(pair[0]), str(mask), "-o", str(out), "-w", str(weights), "-d",
                                     "cpu", "--json"])
        # An output name that cannot hold the output is a usage error (exit 2), as for soft16; --json
        # prints its failure record as for a runtime failure.
        assert result.exit_code == 2, result.output
        assert expected in " ".join(result.stderr.split())
        assert json.loads(result.stdout) == {"image": str(pair[0]), "mask": str(mask), "output": str(out),
                                             "status": "failed", "error": expected, "warnings": []}
        assert "device:" not in result.stderr and not out.exists()
    # The same mask refined as one binary mask fits in WebP.
    binary = runner.invoke(app, ["refine", str(pair[0]), str(mask), "-o", str(out), "-w", str(tiny_weights), "-d",
                                 "cpu", "--mode", "binary", "-q"])
    assert binary.exit_code == 0, binary.output
    assert Image.open(out).format == "WEBP"


def test_paths_with_brackets_are_printed_literally(tiny_weights, tmp_path) -> None:  # noqa: ANN001
    # Rich would read "[v2]" as a style and "[/]" as a closing tag (a MarkupError after the output was written).
    folder = tmp_path / "shots [v2]"
    write_pair(folder, "img", "mask")
    small = np.zeros((48, 64), np.uint8)
    small[12:36, 16:48] = 255
    cv2.imwrite(str(folder / "half [final].png"), small)
    out = folder / "o[/].png"
    result = runner.invoke(app, ["refine", str(folder / "img.jpg"), str(folder / "half [final].png"), "-o", str(out),
                                 "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert out.exists()
    assert f"wrote {out}" in result.stderr
    assert "half [final].png: upsampled" in result.stderr

    data = tmp_path / "s [" / "x]"  # the folder's path holds "[/x]", a closing tag to Rich
    write_pair(data, "p0_im", "p0_seg")
    (data / "bad [x]_im.jpg").write_bytes(b"garbage")
    cv2.imwrite(str(data / "bad [x]_seg.png"), small)
    batch = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "o [" / "b]"), "-w", str(tiny_weights),
                                "-d", "cpu"])
    assert batch.exit_code == 1, batch.output
    assert "failed bad [x]: " in batch.stderr and "Traceback" not in batch.output
    assert (tmp_path / "o [" / "b]" / "p0_mask.png").exists()


def test_unverified_weights_are_a_warning_line(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    bare = tmp_path / "bare" / "tiny.safetensors"
    bare.parent.mkdir()
    bare.write_bytes(tiny_weights.read_bytes())  # no sidecar beside it: nothing to check the sha256 against
    out = tmp_path / "o.png"
    args = ["refine", str(pair[0]), str(pair[1]), "-o", str(out), "-d", "cpu"]
    result = runner.invoke(app, [*args, "-w", str(bare)])
    assert result.exit_code == 0, result.output
    assert f"warning: weights {bare} are not verified: no sidecar with a sha256 (tiny.json)" in result.stderr
    assert out.exists() and result.stdout == ""
    checked = runner.invoke(app, [*args, "-w", str(tiny_weights)])
    assert checked.exit_code == 0 and "not verified" not in checked.stderr


def test_time_json_failure_is_a_record_on_stdout_and_size_errors_name_the_option(pair, tiny_weights, tmp_path) -> None:  # noqa: ANN001
    missing = tmp_path / "missing.png"
    result = runner.invoke(app, ["time", str(pair[0]), str(missing), "-w", str(tiny_weights), "--json"])
    assert result.exit_code == 1
    record = json.loads(result.stdout)  # was empty: `crm time --json | jq` had nothing to read
    assert record["status"] == "failed" and "missing.png" in record["error"] and record["mask"] == str(missing)
    corrupt = tmp_path / "weights.safetensors"
    corrupt.write_bytes(b"not weights")
    result = runner.invoke(app, ["time", "--size", "160x120", "-w", str(corrupt), "--json", "-q"])
    assert result.exit_code == 1 and json.loads(result.stdout)["size"] == "160x120"
    for size in ("100", "10x10", "axb"):
        result = runner.invoke(app, ["time", "--size", size, "--json"])
        assert result.exit_code == 2  # a usage error of crm's own checks: its record too
        record = json.loads(result.stdout)
        assert (record["size"], record["status"]) == (size, "failed") and "'--size'" in record["error"]
        assert "'--size'" in result.stderr and "Traceback" not in result.stderr


def test_eval_on_an_images_and_masks_folder_says_it_needs_the_big_layout(tmp_path: Path) -> None:
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        cv2.imwrite(str(tmp_path / sub / "a.png"), np.zeros((8, 8), np.uint8))
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "crm eval reads the BIG layout" in " ".join(result.stderr.split())
