"""``crm compare`` and ``crm info`` through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_ARCH, coarse_of, flat, synthetic_scene
from typer.testing import CliRunner

from crm_cli.checkpoint import sha256_file, sidecar_path
from crm_cli.cli import app
from crm_cli.writing import write_png

runner = CliRunner()



@pytest.fixture
def scene_files(tmp_path: Path) -> dict[str, Path]:
    image, gt = synthetic_scene(96, 128, seed=2)
    coarse = coarse_of(gt)
    refined = cv2.GaussianBlur(gt, (5, 5), 0)
    files = {"image": tmp_path / "image.png", "coarse": tmp_path / "coarse.png",
             "refined": tmp_path / "refined.png", "gt": tmp_path / "gt.png"}
    write_png(files["image"], image)
    write_png(files["coarse"], coarse)
    write_png(files["refined"], refined)
    write_png(files["gt"], gt)
    return files


def test_compare_writes_a_png(scene_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out" / "cmp.png"
    args = [str(scene_files[k]) for k in ("image", "coarse", "refined", "gt")]
    result = runner.invoke(app, ["compare", *args, "-o", str(out), "--crops", "2"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    strip = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert strip is not None and strip.size > 0 and strip.ndim == 3 and strip.shape[2] == 3
    assert not list(out.parent.glob("*.tmp"))

    no_gt = tmp_path / "nogt.png"
    result = runner.invoke(app, ["compare", *args[:3], "--output", str(no_gt), "--crops", "0", "-q"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert cv2.imread(str(no_gt)).shape[1] < strip.shape[1]  # two columns instead of three


def test_compare_missing_file_is_one_line_error(scene_files: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    out = tmp_path / "cmp.png"
    result = runner.invoke(app, ["compare", str(scene_files["image"]), str(missing),
                                 str(scene_files["refined"]), "-o", str(out)])
    assert result.exit_code == 1
    assert "nope.png" in flat(result.stderr)
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_compare_size_mismatch_is_an_error(scene_files: dict[str, Path], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.png"
    write_png(wrong, np.zeros((50, 50), np.uint8))
    result = runner.invoke(app, ["compare", str(scene_files["image"]), str(wrong),
                                 str(scene_files["refined"]), "-o", str(tmp_path / "cmp.png")])
    assert result.exit_code == 1
    assert "wrong.png" in flat(result.stderr)


def test_info_json_reports_weights(tiny_weights: Path) -> None:
    result = runner.invoke(app, ["info", "--weights", str(tiny_weights), "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # stdout holds exactly one JSON document
    assert result.stdout.count("\n") == 1
    for key in ("version", "python", "torch", "cuda", "cudnn", "devices", "default_device", "weights"):
        assert key in data
    assert "cpu" in [device["id"] for device in data["devices"]]
    assert data["default_device"] in [device["id"] for device in data["devices"]]
    weights = data["weights"]
    assert weights["path"] == str(tiny_weights) and weights["exists"] is True
    assert weights["sha256"] == sha256_file(tiny_weights)
    assert weights["sha256_ok"] is True
    assert weights["config"]["encoder"] == TINY_ARCH["encoder"]
    assert weights["config"]["latent_dim"] == TINY_ARCH["latent_dim"]
    assert weights["provenance"]["notes"] == "random test weights"
    assert weights["final_stage"] == {"scale": 1.5, "enlarge_max_pixels": 2_500_000, "mirror_max_pixels": 1_000_000,
                                      "min_change_confidence": 0.5, "final_only_certainty": 0.99}


def test_info_reports_the_final_stage_of_the_shipped_opt_in_weights() -> None:
    weights = Path(__file__).resolve().parents[1] / "weights"
    lite0 = weights / "crm_efficientnet_lite0.safetensors"
    data = json.loads(runner.invoke(app, ["info", "-w", str(lite0), "--json"]).stdout)
    assert data["weights"]["final_stage"] == {"scale": 1.5, "enlarge_max_pixels": 0, "mirror_max_pixels": 1_000_000,
                                              "min_change_confidence": 0.5, "final_only_certainty": 0.99}
    table = runner.invoke(app, ["info", "-w", str(lite0)])
    assert "enlarge_max_pixels=0" in flat(table.stderr)
    thin = json.loads(runner.invoke(app, ["info", "-w", str(weights / "crm_mobilenet_v2_thin.safetensors"),
                                          "--json"]).stdout)
    assert thin["weights"]["final_stage"]["min_change_confidence"] == 0.45


def test_info_hash_mismatch_and_embedded_spec(tiny_weights: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.safetensors"
    shutil.copy(tiny_weights, copy)
    side = json.loads(sidecar_path(tiny_weights).read_text())
    side["sha256"] = "0" * 64
    sidecar_path(copy).write_text(json.dumps(side))
    data = json.loads(runner.invoke(app, ["info", "-w", str(copy), "--json"]).stdout)
    assert data["weights"]["sha256_ok"] is False

    sidecar_path(copy).unlink()
    data = json.loads(runner.invoke(app, ["info", "-w", str(copy), "--json"]).stdout)
    assert data["weights"]["sha256_ok"] is None
    assert data["weights"]["config"]["latent_dim"] == TINY_ARCH["latent_dim"]
    assert data["weights"]["provenance"]["notes"] == "random test weights"


def test_info_missing_weights_are_reported_and_fatal(tmp_path: Path) -> None:
    missing = tmp_path / "absent.safetensors"
    result = runner.invoke(app, ["info", "--weights", str(missing), "--json"])
    assert result.exit_code == 1  # was 0: weights asked for that are not there are unusable, as --help says
    weights = json.loads(result.stdout)["weights"]
    assert weights["exists"] is False and weights["sha256"] is None and str(missing) in weights["error"]
    assert json.loads(result.stdout)["default_backend"] is None  # was "torch": no backend runs absent weights

    result = runner.invoke(app, ["info", "--weights", str(missing)])
    assert result.exit_code == 1
    assert "missing" in flat(result.stderr) and f"error: weights not found: {missing}" in flat(result.stderr)


def test_info_table_goes_to_stderr(tiny_weights: Path) -> None:
    result = runner.invoke(app, ["info", "--weights", str(tiny_weights)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    text = flat(result.stderr)
    assert "sha256" in text and "matches sidecar" in text


def test_compare_refuses_a_lossy_name_before_any_work(scene_files: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["compare", str(scene_files["image"]), str(scene_files["coarse"]),
                                 str(tmp_path / "missing_refined.png"), "-o", str(tmp_path / "cmp.jp2")])
    # Exit 2 for the name, not 1 for the missing refined mask: the name is checked first.
    assert result.exit_code == 2
    assert "cmp.jp2" in result.stderr and ".png" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "cmp.jp2").exists()


def test_compare_strip_of_a_very_wide_or_tall_image_stays_readable_and_bounded() -> None:
    from crm_cli.compare import GAP, MAX_PANEL_WIDTH, MIN_CELL, compare_strip

    max_panel_width, min_cell = MAX_PANEL_WIDTH, MIN_CELL

    # A line scan: scaled to the 512-px panel height, a 16x2100 image made panels 67,200 px wide
    # (a 1x65535 one would have needed 100 GB).
    wide = np.zeros((16, 2100, 3), np.uint8)
    coarse, refined = np.zeros((16, 2100), np.uint8), np.zeros((16, 2100), np.uint8)
    refined[:, 1000:1400] = 255
    strip = compare_strip(wide, coarse, refined, crops=0)
    assert strip.shape[1] <= 2 * max_panel_width + GAP and strip.shape[0] <= 512

    # A tall strip: its top panels are a few pixels wide, but the zoomed crops must not be.
    tall = np.zeros((3000, 20, 3), np.uint8)
    coarse, refined = np.zeros((3000, 20), np.uint8), np.zeros((3000, 20), np.uint8)
    refined[1000:1010, 5:15] = 255
    strip = compare_strip(tall, coarse, refined, crops=1)
    assert strip.shape[1] >= 2 * min_cell + GAP
    assert strip.shape[0] >= 512 + GAP + min_cell

    # An ordinary image keeps the 512-px panels and panel-wide crops.
    image, gt = synthetic_scene(96, 128, seed=1)
    strip = compare_strip(image, coarse_of(gt), gt, crops=1)
    panel = round(512 * 128 / 96)
    assert strip.shape == (512 + GAP + panel, 2 * panel + GAP, 3)


def test_compare_a_folder_for_a_file_is_a_usage_error_as_in_refine_and_time(scene_files: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    files = [str(scene_files[name]) for name in ("image", "coarse", "refined", "gt")]
    for position, name in enumerate(("IMAGE", "COARSE", "REFINED", "GT")):
        args = [*files[:position], str(tmp_path), *files[position + 1:]]
        result = runner.invoke(app, ["compare", *args, "-o", str(tmp_path / "cmp.png")])
        assert result.exit_code == 2, result.output  # was 1, where refine and time exit 2
        assert f"'{name}'" in result.stderr and "is a directory" in result.stderr
    assert not (tmp_path / "cmp.png").exists()


def test_compare_warns_once_on_stderr_about_a_16bit_photo_read_on_a_smaller_scale(scene_files: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    # The same photo saved as 16-bit colour holding 12-bit values: crm refine warns that it reads it on
    # the 12-bit scale, and so must compare (even with -q, as refine: a warning is not progress).
    photo = tmp_path / "photo16.png"
    wide = cv2.imread(str(scene_files["image"])).astype(np.uint16) * 16
    wide[0, 0] = 4095
    cv2.imwrite(str(photo), wide)
    masks = [str(scene_files[k]) for k in ("coarse", "refined", "gt")]

    for extra in ([], ["-q"]):
        result = runner.invoke(app, ["compare", str(photo), *masks, "-o", str(tmp_path / "cmp.png"), *extra])
        assert result.exit_code == 0, result.output
        assert result.stdout == ""
        note = f"{photo}: a 16-bit image whose largest value is 4095, read as 12-bit values (4095 = white)"
        assert flat(result.stderr).count(f"warning: {note}") == 1, result.stderr


def test_compare_warns_about_each_mask_it_had_to_fit(scene_files: dict[str, Path], tmp_path: Path) -> None:
    # A coarse mask at half size (a low-resolution network's output) is upsampled, as crm refine does,
    # and says so; the full-size masks say nothing.
    small = tmp_path / "coarse_small.png"
    coarse = cv2.imread(str(scene_files["coarse"]), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(small), cv2.resize(coarse, (64, 48), interpolation=cv2.INTER_AREA))
    args = [str(scene_files["image"]), str(small), str(scene_files["refined"]), str(scene_files["gt"])]
    result = runner.invoke(app, ["compare", *args, "-o", str(tmp_path / "cmp.png"), "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and (tmp_path / "cmp.png").stat().st_size > 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert flat(" ".join(warnings)) == f"warning: {small}: upsampled to the image size 128x96"
