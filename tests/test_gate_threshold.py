"""benchmarks/gate_threshold.py: rescoring two runs at any threshold equals running the gate at it."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, load_benchmark, make_tiny_model, synthetic_scene

from crm_cli.engine import Refiner
from crm_cli.evaluation import evaluate, folder_samples
from crm_cli.metrics import score_pair
from crm_cli.pairing import scan_pairs

# One value per image, in name order; None: the refinement changed no pixel's side.
CONFIDENCES = (0.2, 0.6, None, 0.45)


def test_rescored_thresholds_equal_the_gate_run_at_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crm_cli.engine as engine

    for k in range(len(CONFIDENCES)):
        image, gt = synthetic_scene(240, 320, seed=k)
        cv2.imwrite(str(tmp_path / f"s{k}_im.png"), image[:, :, ::-1])
        cv2.imwrite(str(tmp_path / f"s{k}_gt.png"), gt)
        cv2.imwrite(str(tmp_path / f"s{k}_seg.png"), coarse_of(gt, 8))
    refiner = Refiner.from_model(make_tiny_model(), device="cpu")

    def grown(image, mask, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        # A stand-in for the model whose result differs from the coarse mask: grown by 2 px.
        return cv2.dilate(mask, np.ones((5, 5), np.uint8))

    monkeypatch.setattr(refiner, "_run_stages", grown)
    # Every refinement measures its confidence once, images in name order, run after run.
    values = itertools.cycle(CONFIDENCES)
    monkeypatch.setattr(engine, "change_confidence", lambda probability, reference: next(values))

    gate = load_benchmark("gate_threshold")
    pairs = [pair for pair in scan_pairs(tmp_path).pairs if pair.gt is not None]
    runs = []
    for threshold in (0.0, gate.REFUSE_ALL, 0.3, 0.5):
        refiner.final_stage = dataclasses.replace(refiner.final_stage, min_change_confidence=threshold)
        runs.append(evaluate(refiner, folder_samples(pairs)))
    ungated, refused, at_03, at_05 = runs
    assert [image["kept_coarse"] for image in refused.images] == [True, True, False, True]
    assert ungated.refined.iou != refused.refined.iou  # the stand-in changed the masks
    # Scored without the model, the kept masks equal what the model path with every change refused
    # gives (s2 has nothing to keep: its confidence says no pixel changed side).
    coarse_scores = {sample.name: gate.kept_coarse_score(sample) for sample in folder_samples(pairs)}
    kept_scores = gate.coarse_kept_scores(refiner, pairs, ungated, coarse_scores)
    assert not any("regions" in image["schedule"] for image in ungated.images)
    assert [kept_scores[k] for k in (0, 1, 3)] == [refused.refined.images[k] for k in (0, 1, 3)]
    for threshold, direct, kept in ((0.3, at_03, 1), (0.5, at_05, 2)):
        score, kept_count = gate.gated(ungated, kept_scores, threshold)
        assert kept_count == kept == sum(image["kept_coarse"] for image in direct.images)
        assert score.iou == direct.refined.iou and score.mba == direct.refined.mba

    # The ungated run scores the kept coarse masks from the same reading of the files.
    assert gate.ungated_run(refiner, pairs)[1] == coarse_scores
    refiner.final_stage = dataclasses.replace(refiner.final_stage, min_change_confidence=0.5)
    rows = gate.sweep(refiner, tmp_path, [0.3, 0.5])
    assert rows[1].startswith("| 0.3 |") and "| 1 of 4 |" in rows[1]
    assert rows[2].startswith("| 0.5 (the weights') |") and "| 2 of 4 |" in rows[2]


def test_only_images_with_a_region_pass_are_refined_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.evaluation import Evaluation
    from crm_cli.metrics import ImageScore

    for k in range(3):
        image, gt = synthetic_scene(96, 128, seed=k)
        cv2.imwrite(str(tmp_path / f"s{k}_im.png"), image[:, :, ::-1])
        cv2.imwrite(str(tmp_path / f"s{k}_gt.png"), gt)
        cv2.imwrite(str(tmp_path / f"s{k}_seg.png"), coarse_of(gt, 8))
    pairs = [pair for pair in scan_pairs(tmp_path).pairs if pair.gt is not None]
    schedules = {"s0": "0.5,1", "s1": "1.5+regions 0.25,0.5", "s2": "1.5"}
    ungated = Evaluation(images=[{"name": name, "schedule": schedule} for name, schedule in schedules.items()])
    refiner = Refiner.from_model(make_tiny_model(), device="cpu")
    gate = load_benchmark("gate_threshold")
    calls = []
    corrected = ImageScore("s1", 7, 9, 0.25)  # stands for the region pass's corrected mask

    def fake_evaluate(refiner_: Refiner, samples, on_sample=None) -> Evaluation:  # noqa: ANN001
        calls.append(([sample.name for sample in samples], refiner_.final_stage.min_change_confidence))
        run = Evaluation()
        run.refined.add(corrected)
        return run

    monkeypatch.setattr(gate, "evaluate", fake_evaluate)
    coarse_scores = {sample.name: gate.kept_coarse_score(sample) for sample in folder_samples(pairs)}
    scores = gate.coarse_kept_scores(refiner, pairs, ungated, coarse_scores)
    assert calls == [(["s1"], gate.REFUSE_ALL)]
    assert refiner.final_stage.min_change_confidence == 0.5  # restored
    coarse = {sample.name: score_pair(sample.coarse_scoring, sample.gt) for sample in folder_samples(pairs)}
    assert [score.name for score in scores] == ["s0", "s1", "s2"]
    assert scores[1] is corrected
    for score in (scores[0], scores[2]):  # binary coarse masks: the kept mask scores as the coarse one
        assert (score.intersection, score.union, score.mba) == (coarse[score.name].intersection,
                                                                 coarse[score.name].union, coarse[score.name].mba)
