"""Session 62: a refinement that returns the given mask before any stage runs says why
(``RefineResult.kept_given``, ``"kept_given"`` in the JSON records, ``kept as given: ...`` in the log),
where its records had named the planned stages as if they ran."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.engine import KEPT_GIVEN_REASONS, RefineResult, unrefined
from crm_cli.pipeline import KEPT_GIVEN_TEXT, StageRun, runs_summary


def disc_mask(height: int, width: int, radius: int) -> np.ndarray:
    """A binary float32 disc in the middle of a (height, width) mask."""
    rows, cols = np.mgrid[:height, :width]
    return (np.hypot(rows - height / 2, cols - width / 2) < radius).astype(np.float32)


@pytest.fixture(scope="module")
def refiner(tiny_weights: Path):  # noqa: ANN201 - engine.Refiner
    from crm_cli import Refiner

    return Refiner(tiny_weights, device="cpu")


def test_every_reason_has_its_log_text() -> None:
    """The pipeline's texts (the engine is imported lazily there) cover the engine's reasons exactly."""
    assert set(KEPT_GIVEN_TEXT) == set(KEPT_GIVEN_REASONS)


def test_unrefined_refuses_an_unknown_reason() -> None:
    with pytest.raises(ValueError, match="unknown reason 'flat'"):
        unrefined(RefineResult(np.empty(0, np.float32)), np.zeros((2, 2), np.float32), False, "flat")


def test_each_kept_mask_says_why_and_a_refined_one_does_not(refiner) -> None:  # noqa: ANN001
    """Flat photo, photo of noise, an empty and a full mask: the mask comes back as given, no stage
    took any time, and ``kept_given`` names the reason; a photo with content is refined (None)."""
    mask = disc_mask(480, 640, 100)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    cases = {"flat_photo": (np.full((480, 640, 3), 90, np.uint8), mask),
             "noise_photo": (noise, mask),
             "no_boundary": (noise, np.zeros((480, 640), np.float32))}
    for reason, (photo, given) in cases.items():
        result = refiner.refine_detailed(photo, given)
        assert result.kept_given == reason
        np.testing.assert_array_equal(result.probability, given)
        assert result.timings and all(t.encode_s == t.decode_s == 0.0 for t in result.timings)
    full = refiner.refine_detailed(noise, np.ones((480, 640), np.float32))
    assert full.kept_given == "no_boundary"
    photo, gt = synthetic_scene(240, 320)
    refined = refiner.refine_detailed(photo, coarse_of(gt))
    assert refined.kept_given is None
    assert sum(t.encode_s for t in refined.timings) > 0.0


def test_no_guard_runs_the_stages_on_a_flat_photo(refiner) -> None:  # noqa: ANN001
    """``--no-guard`` is the model's own answer, with none of the keep rules: nothing is kept as given."""
    result = refiner.refine_detailed(np.full((480, 640, 3), 90, np.uint8), disc_mask(480, 640, 100), guard=False)
    assert result.kept_given is None


def test_log_summary_names_stages_or_the_reason() -> None:
    ran = StageRun((0.5, 1.0), "0.5,1")
    flat = StageRun((0.5, 1.5), "0.5,1.5", kept_given="flat_photo")
    assert ran.summary == "stages 0.5,1"
    assert flat.summary == "kept as given: a flat photo"
    assert runs_summary([ran, flat]) == "stages 0.5,1 | kept as given: a flat photo"


def test_cli_records_say_kept_given(tiny_weights: Path, tmp_path: Path) -> None:
    """``crm refine --json`` and its log line, ``crm batch --json`` per item, and a label map's per-id list."""
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    photo, disc, labels = pairs / "flat.png", pairs / "flat_mask.png", tmp_path / "labels.png"
    cv2.imwrite(str(photo), np.full((120, 160, 3), 90, np.uint8))  # above the 96-px minimum: refined
    cv2.imwrite(str(disc), (disc_mask(120, 160, 30) * 255).astype(np.uint8))
    ids = np.zeros((120, 160), np.uint8)
    ids[10:50, 10:60], ids[60:110, 40:120] = 1, 2
    cv2.imwrite(str(labels), ids)
    weights = ["-w", str(tiny_weights), "-d", "cpu"]
    runner = CliRunner()

    refined = runner.invoke(app, ["refine", str(photo), str(disc), "-o", str(tmp_path / "o.png"), "--json", *weights])
    assert refined.exit_code == 0, refined.output
    assert json.loads(refined.stdout)["kept_given"] == "flat_photo"
    logged = runner.invoke(app, ["refine", str(photo), str(disc), "-o", str(tmp_path / "o.png"), *weights])
    assert "kept as given: a flat photo)" in logged.stderr and "stages" not in logged.stderr

    mapped = runner.invoke(app, ["refine", str(photo), str(labels), "-o", str(tmp_path / "l.png"), "--json",
                                 *weights])
    assert mapped.exit_code == 0, mapped.output
    assert json.loads(mapped.stdout)["label_kept_given"] == ["flat_photo", "flat_photo"]

    out = tmp_path / "out"
    batch = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "--json", *weights])
    assert batch.exit_code == 0, batch.output
    (item,) = json.loads(batch.stdout)["items"]
    assert item["name"] == "flat" and item["kept_given"] == "flat_photo"
    assert "flat: kept as given: a flat photo" in batch.stderr
    np.testing.assert_array_equal(cv2.imread(str(out / "flat.png"), cv2.IMREAD_GRAYSCALE),
                                  cv2.imread(str(disc), cv2.IMREAD_GRAYSCALE))


def test_record_summary_of_a_label_map_names_each_id() -> None:
    """The review's find: batch's log line read only ``kept_given``, so a label map of a flat photo
    said ``stages 1.5 | 1.5``; each id now says what it did, as ``crm refine`` does."""
    from crm_cli.pipeline import record_summary

    assert record_summary({"schedule": "1.5 | 1.5", "label_kept_given": ["flat_photo", "flat_photo"]}) == (
        "kept as given: a flat photo | kept as given: a flat photo")
    assert record_summary({"schedule": "0.5,1 | 1+regions 0.25,0.5", "label_kept_given": [None, None]}) == (
        "stages 0.5,1 | stages 1+regions 0.25,0.5")
    assert record_summary({"schedule": "0.5,1.5", "kept_given": "noise_photo"}) == "kept as given: a photo of noise"
    assert record_summary({"schedule": "0.5,1", "kept_given": None}) == "stages 0.5,1"


def test_batch_log_of_a_label_map_on_a_flat_photo(tiny_weights: Path, tmp_path: Path) -> None:
    photo = np.full((120, 160, 3), 90, np.uint8)
    ids = np.zeros((120, 160), np.uint8)
    ids[10:50, 10:60], ids[60:110, 40:120] = 1, 2
    cv2.imwrite(str(tmp_path / "a.png"), photo)
    cv2.imwrite(str(tmp_path / "a_mask.png"), ids)
    result = CliRunner().invoke(app, ["batch", str(tmp_path), "-o", str(tmp_path / "out"), "--mode", "labels",
                                      "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert "a: kept as given: a flat photo | kept as given: a flat photo" in result.stderr


def test_time_and_eval_records_name_kept_given(tiny_weights: Path) -> None:
    """``crm time``'s record (``evaluation.time_refine``) and ``crm eval``'s images carry the reason too."""
    from crm_cli import Refiner
    from crm_cli.evaluation import Sample, evaluate, time_refine

    refiner = Refiner(tiny_weights, device="cpu")
    flat = np.full((120, 160, 3), 90, np.uint8)
    mask = (disc_mask(120, 160, 30) * 255).astype(np.uint8)
    assert time_refine(refiner, flat, mask, repeat=1)["kept_given"] == "flat_photo"
    sample = Sample(name="flat", image=flat, coarse=mask, gt=mask > 128)
    (image,) = evaluate(refiner, [sample]).images
    assert image["kept_given"] == "flat_photo" and image["refined_iou"] == 1.0
