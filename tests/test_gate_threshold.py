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
from crm_cli.pairing import find_pairs

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
    pairs = [pair for pair in find_pairs(tmp_path)[0] if pair.gt is not None]
    runs = []
    for threshold in (0.0, gate.REFUSE_ALL, 0.3, 0.5):
        refiner.final_stage = dataclasses.replace(refiner.final_stage, min_change_confidence=threshold)
        runs.append(evaluate(refiner, folder_samples(pairs)))
    ungated, refused, at_03, at_05 = runs
    assert [image["kept_coarse"] for image in refused.images] == [True, True, False, True]
    assert ungated.refined.iou != refused.refined.iou  # the stand-in changed the masks
    for threshold, direct, kept in ((0.3, at_03, 1), (0.5, at_05, 2)):
        score, kept_count = gate.gated(ungated, refused, threshold)
        assert kept_count == kept == sum(image["kept_coarse"] for image in direct.images)
        assert score.iou == direct.refined.iou and score.mba == direct.refined.mba

    refiner.final_stage = dataclasses.replace(refiner.final_stage, min_change_confidence=0.5)
    rows = gate.sweep(refiner, tmp_path, [0.3, 0.5])
    assert rows[1].startswith("| 0.3 |") and "| 1 of 4 |" in rows[1]
    assert rows[2].startswith("| 0.5 (the weights') |") and "| 2 of 4 |" in rows[2]
