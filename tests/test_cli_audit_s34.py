"""What a user audit of the CLI found (session 34): OpenCV's own log lines on stderr, contradictory
--labels/--mode and -t/label-map options, refine's -o - --json usage error without its record, the
no-pairs hint for photo and mask folders of other names, and score's predictions without a ground truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import palette_png, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import read_mask

runner = CliRunner()
PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]
THRESHOLD_IGNORED = "label maps are written as label images; --threshold ignored"


def lines_starting(text: str, prefix: str) -> list[str]:
    """The lines of ``text`` that start with ``prefix``, without it."""
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu", "--threads", "1"]


def label_map(path: Path, height: int = 96, width: int = 128) -> np.ndarray:
    """A palette PNG holding labels 1, 2 and 3 (a label map in --mode auto too); returns its ids."""
    ids = np.zeros((height, width), np.uint8)
    for label in (1, 2, 3):
        top = 10 + 25 * (label - 1)
        ids[top: top + 20, 10 + 30 * (label - 1): 40 + 30 * (label - 1)] = label
    palette_png(path, ids, PALETTE)
    return ids


# 1. OpenCV's log lines ------------------------------------------------------------------------------------------


def test_a_16bit_rgba_tiff_leaves_no_opencv_line_on_stderr(tmp_path: Path) -> None:
    # cv2's own RGBA TIFF: libtiff warns about its ExtraSamples tag when OpenCV reads it back.
    pixels = np.zeros((40, 50, 4), np.uint16) + 1000
    pixels[..., 3] = np.linspace(0, 65535, 50).astype(np.uint16)[None, :]
    mask = tmp_path / "rgba16.tif"
    assert cv2.imwrite(str(mask), pixels)
    image = tmp_path / "img.png"
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(image)
    out = tmp_path / "out.png"
    # A subprocess: OpenCV writes to the process's stderr itself, past Python's sys.stderr.
    done = subprocess.run([sys.executable, "-m", "crm_cli", "refine", str(image), str(mask), "-o", str(out), "-q"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "300"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == (f"warning: {image} is 50x40, under the 96-px minimum side crm refines; the mask is "
                           "written unchanged\n")
    # The alpha is the mask, read whole (written unchanged at 8 bits).
    assert np.array_equal(cv2.imread(str(out), cv2.IMREAD_UNCHANGED), (pixels[..., 3] / 257).round().astype(np.uint8))


def test_reading_a_16bit_colour_file_keeps_opencvs_log_level(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    from cv2.utils import logging as cv_logging

    pixels = np.zeros((40, 50, 4), np.uint16) + 1000
    pixels[..., 3] = np.linspace(0, 65535, 50).astype(np.uint16)[None, :]
    assert cv2.imwrite(str(tmp_path / "rgba16.tif"), pixels)
    capfd.readouterr()
    before = cv_logging.getLogLevel()
    cv_logging.setLogLevel(cv_logging.LOG_LEVEL_INFO)
    try:
        assert read_mask(tmp_path / "rgba16.tif").values.shape == (40, 50)
        # Quiet while crm reads; the level the process had is back afterwards.
        assert cv_logging.getLogLevel() == cv_logging.LOG_LEVEL_INFO
    finally:
        cv_logging.setLogLevel(before)
    assert capfd.readouterr().err == ""


# 2. Contradictory options ----------------------------------------------------------------------------------------


def test_labels_with_mode_binary_is_a_usage_error_before_the_model_loads(tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path)
    out = tmp_path / "out.png"
    absent = ["-w", str(tmp_path / "absent.safetensors"), "-d", "cpu"]  # loading them would exit 1
    message = ("Invalid value for '--labels': label ids pick labels of a label map, but --mode binary refines the "
               "mask as one object; drop one of the two")
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "--labels", "1", "--mode",
                                 "binary", *absent])
    assert result.exit_code == 2, result.output
    assert lines_starting(result.stderr, "error: ") == [message]
    assert result.stdout == "" and "device:" not in result.stderr and not out.exists()
    recorded = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "--labels", "1", "--mode",
                                   "binary", "--json", *absent])
    assert recorded.exit_code == 2
    assert json.loads(recorded.stdout) == {"image": str(image), "mask": str(mask), "output": str(out),
                                           "status": "failed", "error": message, "warnings": []}
    assert not out.exists()


def test_threshold_with_a_label_map_is_named_as_ignored(tiny_weights: Path, tmp_path: Path) -> None:
    image, _ = write_scene_files(tmp_path)
    mask = tmp_path / "labels.png"
    label_map(mask)
    out = tmp_path / "out.png"
    for mode in ("labels", "auto"):  # named or detected: the warning comes once the mask is read
        result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "-t", "0.5", "--mode", mode,
                                     "--json", "-q", *cpu(tiny_weights)])
        assert result.exit_code == 0, result.output
        # The tiny weights keep some labels' coarse masks, each said since session 53.
        assert [line for line in lines_starting(result.stderr, "warning: ")
                if "unsure of its changes" not in line] == [THRESHOLD_IGNORED]
        record = json.loads(result.stdout)
        assert record["mode"] == "labels" and record["warnings"] == [THRESHOLD_IGNORED] + [
            warning for warning in record["warnings"] if "unsure of its changes" in warning]
        assert len(record["warnings"]) == 1 + record["kept_coarse"]
        assert set(np.unique(read_mask(out).values)) <= {0, 1, 2, 3}  # ids, not a 0/255 mask
    # With -k soft16 too, each ignored option is named once.
    both = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "-t", "0.5", "-k", "soft16", "-q",
                               *cpu(tiny_weights)])
    assert both.exit_code == 0, both.output
    assert [line for line in lines_starting(both.stderr, "warning: ") if "unsure of its changes" not in line] == [
        "label maps are written as label images; --output-kind soft16 ignored", THRESHOLD_IGNORED]


def test_a_small_label_map_passed_through_names_the_ignored_options(tmp_path: Path) -> None:
    image = tmp_path / "small.png"
    Image.fromarray(np.full((90, 120, 3), 100, np.uint8)).save(image)
    mask = tmp_path / "labels.png"
    ids = label_map(mask, 90, 120)
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "-t", "0.5", "-k", "soft16",
                                 "-w", str(tmp_path / "absent.safetensors"), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert lines_starting(result.stderr, "warning: ") == [
        "label maps are written as label images; --output-kind soft16 ignored", THRESHOLD_IGNORED,
        f"{image} is 120x90, under the 96-px minimum side crm refines; the mask is written unchanged"]
    assert np.array_equal(read_mask(out).values, ids)


# 3. -o - with --json ---------------------------------------------------------------------------------------------


def test_stdout_output_with_json_prints_the_failure_record(tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path)
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", "-", "--json", "-w",
                                 str(tmp_path / "absent.safetensors"), "-d", "cpu"])
    assert result.exit_code == 2
    message = "Invalid value: -o - and --json both want stdout; choose one"
    assert lines_starting(result.stderr, "error: ") == [message]
    assert json.loads(result.stdout) == {"image": str(image), "mask": str(mask), "output": "-", "status": "failed",
                                         "error": message, "warnings": []}


# 4. The no-pairs hint for folders of other names -----------------------------------------------------------------


def photos_and_masks(root: Path, photos: str, masks: str, mask_suffix: str = "", sub: str = "") -> None:
    """Photos a and b in ``root/photos/sub`` and their grey masks ``<name><mask_suffix>.png`` in ``root/masks/sub``."""
    (root / masks / sub).mkdir(parents=True)
    for stem, seed in (("a", 0), ("b", 1)):
        write_scene_files(root / photos / sub, stem, "unused", seed=seed)
        (root / photos / sub / "unused.png").replace(root / masks / sub / f"{stem}{mask_suffix}.png")


def no_pairs_hint(tmp_path: Path, root: Path) -> str:
    """The error line of ``crm batch ROOT`` (exit 2, nothing paired)."""
    result = runner.invoke(app, ["batch", str(root), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 2, result.output
    (line,) = lines_starting(result.stderr, "error: ")
    expected = (f"{root}: no pairs found; expected images/ and masks/ folders, <name>_im.* with <name>_seg.* (BIG "
                "layout), or photos with their masks beside them named <name>_mask.*")
    assert line.startswith(expected)
    return line[len(expected):]


def test_no_pairs_names_two_folders_of_photos_and_masks_of_the_same_names(tmp_path: Path) -> None:
    root = tmp_path / "f3"
    photos_and_masks(root, "frames", "alpha")
    assert no_pairs_hint(tmp_path, root) == (
        f"; frames/ and alpha/ share 2 image names (e.g. {root / 'frames' / 'a.jpg'} + {root / 'alpha' / 'a.png'}), "
        f"the masks in alpha/: name the two: crm batch {root / 'frames'} --masks {root / 'alpha'} (or call them "
        "images/ and masks/)")
    # The command the hint gives pairs them.
    paired = runner.invoke(app, ["batch", str(root / "frames"), "--masks", str(root / "alpha"), "-o",
                                 str(tmp_path / "out"), "--dry-run", "--json"])
    assert paired.exit_code == 0, paired.output
    assert [item["name"] for item in json.loads(paired.stdout)["items"]] == ["a", "b"]


def test_the_hint_reads_mask_suffixes_and_sub_folders(tmp_path: Path) -> None:
    root = tmp_path / "shoot"
    photos_and_masks(root, "shots", "mattes", "_matte", sub="day1")
    assert no_pairs_hint(tmp_path, root) == (
        f"; shots/ and mattes/ share 2 image names (e.g. {root / 'shots' / 'day1' / 'a.jpg'} + "
        f"{root / 'mattes' / 'day1' / 'a_matte.png'}), the masks in mattes/: name the two: crm batch "
        f"{root / 'shots'} --masks {root / 'mattes'} (or call them images/ and masks/)")


def test_the_hint_does_not_guess_which_folder_of_photos_holds_masks(tmp_path: Path) -> None:
    root = tmp_path / "two"
    for folder in ("raw", "edited"):
        write_scene_files(root / folder, "a", "unused")
        (root / folder / "unused.png").unlink()
    assert no_pairs_hint(tmp_path, root) == (
        f"; edited/ and raw/ share 1 image name (e.g. {root / 'edited' / 'a.jpg'} + {root / 'raw' / 'a.jpg'}): if "
        "one holds the photos and the other their masks, name the two, the masks' folder after --masks: crm batch "
        f"{root / 'edited'} --masks {root / 'raw'} (or call them images/ and masks/)")
    # Folders without a name in common give no hint.
    other = tmp_path / "years"
    write_scene_files(other / "2023", "a", "unused")
    write_scene_files(other / "2024", "b", "unused")
    for path in other.glob("*/unused.png"):
        path.unlink()
    assert no_pairs_hint(tmp_path, other) == ""


# 5. crm score: predictions without a ground truth ----------------------------------------------------------------


def test_score_counts_the_predictions_without_a_ground_truth(tmp_path: Path) -> None:
    _, mask = write_scene_files(tmp_path / "scene")
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    for name in ("a.png", "b.png", "c_mask.png", "c_seg.png"):
        (pred / name).write_bytes(mask.read_bytes())
    (gt / "a.png").write_bytes(mask.read_bytes())
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 0, result.output
    # c_mask and c_seg are two predictions of one name: c counts once, as the file a ground truth c would pair.
    assert lines_starting(result.stderr, "warning: ") == [
        f"{pred}: 2 predictions without a ground truth in {gt} not scored, e.g. {pred / 'b.png'}"]
    assert json.loads(result.stdout)["n"] == 1
    # Every prediction scored: no warning; with --pred-suffix, other names are no predictions.
    (gt / "b.png").write_bytes(mask.read_bytes())
    (gt / "c.png").write_bytes(mask.read_bytes())
    assert lines_starting(runner.invoke(app, ["score", str(pred), str(gt)]).stderr, "warning: ") == []
    (gt / "c.png").unlink()
    only = runner.invoke(app, ["score", str(pred), str(gt), "--pred-suffix", "_seg"])
    assert lines_starting(only.stderr, "warning: ") == [
        f"{pred}: 1 prediction without a ground truth in {gt} not scored, e.g. {pred / 'c_seg.png'}"]


def test_score_of_one_big_folder_counts_no_photo_or_ground_truth(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    for stem, seed in (("a", 0), ("b", 1)):
        write_scene_files(folder, f"{stem}_im", f"{stem}_seg", seed=seed)
        (folder / f"{stem}_mask.png").write_bytes((folder / f"{stem}_seg.png").read_bytes())
    write_scene_files(folder, "a_im", "a_gt")
    result = runner.invoke(app, ["score", str(folder), str(folder)])
    assert result.exit_code == 0, result.output
    assert lines_starting(result.stderr, "warning: ") == [
        f"{folder}: 1 prediction without a ground truth in {folder} not scored, e.g. {folder / 'b_mask.png'}"]


def test_batch_refuses_labels_with_mode_binary_and_names_an_ignored_threshold(tiny_weights: Path,
                                                                              tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_scene_files(data, "a", "a_mask")
    label_map(data / "b_mask.png")
    write_scene_files(data, "b", "unused_mask_b")
    (data / "unused_mask_b.png").unlink()
    refused = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "refused"), "--labels", "1", "--mode",
                                  "binary", "-w", str(tmp_path / "absent.safetensors"), "-d", "cpu"])
    assert refused.exit_code == 2, refused.output
    assert lines_starting(refused.stderr, "error: ")[0].startswith("Invalid value for '--labels': label ids pick")
    assert not (tmp_path / "refused").exists()
    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), "-t", "0.5", "--json", "-q",
                                 *cpu(tiny_weights)])
    assert result.exit_code == 0, result.output
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    # Each label the tiny weights kept coarse is said too (session 53), after the ignored threshold.
    kept = [f"b: label {label}: " for label in (1, 2, 3)]
    assert items["a"]["warnings"] == [] and items["b"]["warnings"][0] == f"b: {THRESHOLD_IGNORED}"
    assert all(warning.startswith(tuple(kept)) for warning in items["b"]["warnings"][1:])
    assert len(items["b"]["warnings"]) == 1 + items["b"]["kept_coarse"]
    assert lines_starting(result.stderr, "warning: ") == items["b"]["warnings"]
