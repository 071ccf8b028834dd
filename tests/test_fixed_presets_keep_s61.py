"""Session 61. The fixed presets keep what no refinement may damage, as ``auto`` does: the given mask's
lines and the mask of a flat or noise photo (``Preset.keep_given``). An audit found ``--preset
fast|balanced|quality`` turning perfect masks of 2- and 4-px lines into empty ones (IoU 0), written with no
word said; ``--no-guard`` (``guard=False``) stays the model's own answer."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.metrics import score_pair
from crm_cli.presets import PRESETS, get_preset

FIXED = ["fast", "balanced", "quality"]


def test_keep_given_is_on_for_every_preset_and_follows_an_explicit_guard() -> None:
    assert all(preset.keep_given for preset in PRESETS.values())
    for name in ["auto", *FIXED]:
        preset = get_preset(name)
        assert preset.overridden(guard=False).keep_given is False
        assert preset.overridden(guard=True).keep_given is True
        assert preset.overridden(guard=None).keep_given is True  # the preset's own
        assert preset.overridden(guard=False, keep_given=True).keep_given is True  # named alone, it stays
        assert preset.overridden(ratios=(0.5, 1)).keep_given is True


def test_the_resume_record_names_keep_given_only_where_the_guard_did_not_carry_it() -> None:
    """Records written before session 61 have no such key: a fixed preset's outputs made without the
    rules must be made again (their record now differs), ``auto``'s and ``--no-guard``'s need not."""
    assert "keep_given" not in get_preset("auto").record()
    assert "keep_given" not in get_preset("auto").overridden(guard=False).record()
    assert "keep_given" not in get_preset("balanced").overridden(guard=True).record()
    assert "keep_given" not in get_preset("balanced").overridden(guard=False).record()
    for name in FIXED:
        record = get_preset(name).record()
        assert record["keep_given"] is True and record["guard"] is False


def lines_on_texture(height: int, width: int, line_width: int) -> tuple[np.ndarray, np.ndarray]:
    """do_no_harm's case: six dark lines ``line_width`` px wide on a textured photo, and their exact mask."""
    from conftest import load_benchmark

    case = load_benchmark("do_no_harm").lines_case(height, width, line_width, line_width)
    return case.photo, case.mask


@pytest.mark.parametrize("preset", FIXED)
def test_the_shipped_weights_under_a_fixed_preset_keep_a_perfect_mask_of_lines(preset: str) -> None:
    from crm_cli import Refiner

    photo, mask = lines_on_texture(480, 640, 2)
    refiner = Refiner(device="cpu", threads=1)
    kept = score_pair((refiner.refine(photo, mask, preset=preset) * 255).round().astype(np.uint8), mask)
    assert kept.iou >= 0.99  # 1.0 (1.0 under auto)
    # The model's own answer erases them: the case is the rule's, not the weights'.
    erased = score_pair((refiner.refine(photo, mask, preset=preset, guard=False) * 255).round().astype(np.uint8),
                        mask)
    assert erased.iou < 0.5


def test_a_fixed_preset_keeps_a_flat_photo_s_mask(tiny_weights: Path) -> None:
    from crm_cli import Refiner

    photo = np.full((96, 128, 3), 128, np.uint8)
    rows, cols = np.mgrid[:96, :128]
    mask = np.clip((30.0 - np.hypot(rows - 48, cols - 64)) / 4 + 0.5, 0, 1).astype(np.float32)
    refiner = Refiner(tiny_weights, device="cpu", threads=1)
    for preset in FIXED:
        np.testing.assert_array_equal(refiner.refine(photo, mask, preset=preset), mask)
        assert not np.array_equal(refiner.refine(photo, mask, preset=preset, guard=False), mask)


def test_crm_refine_with_a_fixed_preset_keeps_the_lines_and_no_guard_does_not(tmp_path: Path) -> None:
    photo, mask = lines_on_texture(480, 640, 2)
    cv2.imwrite(str(tmp_path / "im.png"), photo[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "seg.png"), mask)
    runner = CliRunner()
    scores = {}
    for name, extra in (("balanced", []), ("raw", ["--no-guard"])):
        out = tmp_path / f"{name}.png"
        result = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "seg.png"), "-o", str(out),
                                     "--preset", "balanced", *extra, "-d", "cpu", "--threads", "1", "-q"])
        assert result.exit_code == 0, result.output
        scores[name] = score_pair(cv2.imread(str(out), cv2.IMREAD_GRAYSCALE), mask).iou
    assert scores["balanced"] >= 0.99 and scores["raw"] < 0.5


def test_crm_eval_records_keep_given(tiny_weights: Path, tmp_path: Path) -> None:
    from conftest import write_scene_files

    write_scene_files(tmp_path, "a_im", "a_seg", size=(120, 160))
    cv2.imwrite(str(tmp_path / "a_gt.png"), cv2.imread(str(tmp_path / "a_seg.png"), cv2.IMREAD_GRAYSCALE))
    runner = CliRunner()
    for extra, expected in (([], True), (["--no-guard"], False)):
        result = runner.invoke(app, ["eval", str(tmp_path), "--preset", "fast", *extra, "-w", str(tiny_weights),
                                     "-d", "cpu", "--threads", "1", "--json", "-q"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["keep_given"] is expected
