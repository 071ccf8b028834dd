"""benchmarks/pipeline_ceiling.py: the final stage answered with the ground truth, the rest the model's."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, load_benchmark, synthetic_scene

ceiling_script = load_benchmark("pipeline_ceiling")


def write_triples(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    """BIG-layout triples of synthetic scenes, each coarse mask blocky."""
    folder.mkdir()
    for index, (height, width) in enumerate(sizes):
        image, gt = synthetic_scene(height, width, seed=index)
        cv2.imwrite(str(folder / f"s{index}_im.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / f"s{index}_gt.png"), gt)
        cv2.imwrite(str(folder / f"s{index}_seg.png"), coarse_of(gt, 16))
    return folder


def test_the_truth_answers_the_final_stage_only(tiny_weights: Path, tmp_path: Path) -> None:
    """A small photo (final stage only, enlarged and mirrored) and one with coarse stages both come out
    as their ground truth, while every stage not decoded at the photo's size stays the model's."""
    folder = write_triples(tmp_path / "set", [(150, 190), (520, 640)])
    refiner, runners = ceiling_script.truth_refiner(tiny_weights)
    assert runners == [refiner.runner] and refiner.partner is None
    answered, delegated = [], []
    runner = runners[0]
    original_answer = runner._answer

    def spy(image: np.ndarray, target_hw: tuple[int, int]) -> object:
        answer = original_answer(image, target_hw)
        (delegated if answer is None else answered).append(tuple(target_hw))
        return answer

    runner._answer = spy
    result = ceiling_script.ceiling(refiner, runners, folder)
    assert result.count == 2
    assert result.refined.iou == pytest.approx(1.0) and result.refined.mba == pytest.approx(1.0)
    assert result.coarse.iou < 0.99  # the coarse masks were not already right
    assert set(answered) == {(150, 190), (520, 640)}
    # The 520x640 photo's coarse stage, decoded on the grid of its final stage (enlarged 1.5x).
    assert delegated == [(780, 960)]


def test_main_prints_one_row_per_set(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The table: the coarse score and the ceiling of each set, and a bad set argument is one line."""
    folder = write_triples(tmp_path / "set", [(150, 190)])
    monkeypatch.setattr(sys, "argv", ["pipeline_ceiling.py", f"tiny={folder}", "--weights", str(tiny_weights)])
    ceiling_script.main()
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:2] == ["tiny", "1"] and row[5:8] == ["100.00", "/", "100.00"]
    monkeypatch.setattr(sys, "argv", ["pipeline_ceiling.py", f"tiny={tmp_path / 'missing'}"])
    with pytest.raises(SystemExit, match="NAME=FOLDER"):
        ceiling_script.main()


def test_no_snap_turns_off_only_the_snap(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--no-snap`` evaluates with auto's own settings but the snap; without it the shipped preset."""
    folder = write_triples(tmp_path / "set", [(150, 190)])
    refiner, runners = ceiling_script.truth_refiner(tiny_weights)
    presets = []
    original = ceiling_script.evaluate

    def spy(*args: object, preset: object = None, **kwargs: object) -> object:
        presets.append(preset)
        return original(*args, preset=preset, **kwargs)

    monkeypatch.setattr(ceiling_script, "evaluate", spy)
    ceiling_script.ceiling(refiner, runners, folder)
    ceiling_script.ceiling(refiner, runners, folder, snap=False)
    from crm_cli.presets import get_preset

    auto = get_preset("auto")
    assert presets[0] is None
    assert presets[1].snap is False and presets[1].ratios == auto.ratios
    assert presets[1].guard == auto.guard and presets[1].adaptive == auto.adaptive
