"""Lone-stage weights (session 69): ``Refiner(lone_stage_model=...)`` and the weights sidecar's
``"lone_stage"`` entry. Where ``auto``'s own schedule (with its guard) plans the final stage alone, the
lone-stage weights run that stage, with their own final stage's certainty and gate; every other
refinement is the weights' own."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, flat, make_tiny_model, spy_on_stages, synthetic_scene

pytest.importorskip("torch")

# A small scene's coarse mask, dilated, with a short 1-px wire: the tiny random models change some of its
# pixels' side (so the change-confidence gate has something to decide on), at 48x64 no coarse stage
# fits under the default min_stage_side (224): auto's plan is the final stage alone, and the wire is
# detail that a coarse stage would lose (0.23 at 48x64, 0.13 at 96x128: LONE_STAGE_MIN_DETAIL is 0.1),
# as the lone-stage weights require; a longer one would read as a detailed mask, whose boundary the
# guard holds against the tiny models (DETAILED_MASK_TRUST).
HEIGHT, WIDTH = 48, 64


def _with_wire(mask: np.ndarray) -> np.ndarray:
    """``mask`` with a 6-px wire, 1 px wide, near its bottom-left corner."""
    wired = mask.copy()
    cv2.line(wired, (1, wired.shape[0] - 3), (6, wired.shape[0] - 3), 255, 1)
    return wired


def _scene(seed: int = 0, size: tuple[int, int] = (HEIGHT, WIDTH), wire: bool = True) -> tuple[np.ndarray, np.ndarray]:
    image, gt = synthetic_scene(*size, seed=seed)
    dilated = cv2.dilate(gt, np.ones((7, 7), np.uint8))
    return image, _with_wire(dilated) if wire else dilated


def _no_gate():  # noqa: ANN202
    """A FinalStage without the change-confidence gate: the tiny models are never sure enough for the
    default one (0.5), which would keep the coarse mask whichever model ran."""
    from crm_cli.schedule import FinalStage

    return FinalStage(min_change_confidence=0.0)


def _sidecar(path: Path) -> dict:
    from crm_cli.checkpoint import sidecar_path

    return json.loads(sidecar_path(path).read_text())


def _write_sidecar(path: Path, data: dict) -> None:
    from crm_cli.checkpoint import sidecar_path

    sidecar_path(path).write_text(json.dumps(data))


def _set_entry(main: Path, entry: object) -> None:
    side = _sidecar(main)
    side["lone_stage"] = entry
    _write_sidecar(main, side)


def _set_final_stage(path: Path, hints: dict | None) -> None:
    side = _sidecar(path)
    if hints is None:
        side.pop("final_stage", None)
    else:
        side["final_stage"] = hints
    _write_sidecar(path, side)


def _refiner_of(path: Path, **options: object):  # noqa: ANN202
    """The Refiner of the weights at ``path``, on torch on the CPU."""
    from crm_cli.engine import Refiner

    return Refiner(path, "cpu", backend="torch", **options)


@pytest.fixture()
def lone_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny checkpoints side by side: main.safetensors (model 0), whose sidecar names
    lone.safetensors (model 3, with its sha256) as its lone-stage weights, and lone.safetensors."""
    from crm_cli.checkpoint import save_weights
    from crm_cli.config import Provenance

    main, lone = tmp_path / "main.safetensors", tmp_path / "lone.safetensors"
    save_weights(make_tiny_model(0), main, Provenance(notes="main"))
    digest = save_weights(make_tiny_model(3), lone, Provenance(notes="lone stage"))
    _set_entry(main, {"file": lone.name, "sha256": digest})
    return main, lone


# --- the sidecar entry -------------------------------------------------------------------------------


def test_lone_stage_weights_reads_the_entry(lone_pair: tuple[Path, Path], tiny_weights: Path) -> None:
    from crm_cli.checkpoint import WeightsSidecar, lone_stage_weights, partner_weights, sha256_file

    main, lone = lone_pair
    assert lone_stage_weights(tiny_weights) is None
    entry = lone_stage_weights(main)
    assert entry is not None
    assert entry.path == lone and entry.sha256 == sha256_file(lone)
    # The same from a sidecar already read, and from a str path.
    assert lone_stage_weights(WeightsSidecar(main)) == entry == lone_stage_weights(str(main))
    # The lone-stage entry is not a partner.
    assert partner_weights(main) is None


@pytest.mark.parametrize("case", ["not a dict", "no sha256", "empty sha256", "directory part", "below_side",
                                  "other key", "missing file"])
def test_bad_lone_stage_entries_are_weights_errors_naming_the_sidecar(lone_pair: tuple[Path, Path],
                                                                      case: str) -> None:
    from crm_cli.checkpoint import WeightsError, inspect_checkpoint, lone_stage_weights, sha256_file
    from crm_cli.engine import Refiner
    from crm_cli.refiner_spec import RefinerSpec

    main, lone = lone_pair
    digest = sha256_file(lone)
    message = '"lone_stage" must be'
    if case == "not a dict":
        _set_entry(main, lone.name)
    elif case == "no sha256":
        _set_entry(main, {"file": lone.name})
    elif case == "empty sha256":
        _set_entry(main, {"file": lone.name, "sha256": ""})
    elif case == "directory part":
        _set_entry(main, {"file": f"sub/{lone.name}", "sha256": digest})
    elif case == "below_side":  # the partner's key: here it would look as if it did something
        _set_entry(main, {"file": lone.name, "sha256": digest, "below_side": 200})
    elif case == "other key":
        _set_entry(main, {"file": lone.name, "sha256": digest, "final_stage": {"min_change_confidence": 0.2}})
    else:
        lone.unlink()
        message = "lone-stage weights it names are missing"
    with pytest.raises(WeightsError, match=message) as caught:
        lone_stage_weights(main)
    assert "main.json" in str(caught.value)
    if case != "missing file":
        assert "below_side" not in str(caught.value)  # the partner's shape is not offered
    with pytest.raises(WeightsError, match=message):
        Refiner(main, "cpu", backend="torch")
    with pytest.raises(WeightsError, match=message):
        RefinerSpec(weights=str(main)).check()  # a Ray run fails before starting actors
    report = inspect_checkpoint(main)
    assert report["lone_stage"] is not None and message in report["lone_stage"]["error"]
    assert message in report["error"]


def test_inspect_checkpoint_reports_the_lone_stage_weights(lone_pair: tuple[Path, Path], tiny_weights: Path) -> None:
    from crm_cli.checkpoint import inspect_checkpoint, inspect_lone_stage

    main, lone = lone_pair
    assert inspect_checkpoint(tiny_weights)["lone_stage"] is None
    assert inspect_lone_stage(tiny_weights) is None
    report = inspect_checkpoint(main)
    assert report["error"] is None and report["partner"] is None
    assert set(report["lone_stage"]) == {"path", "final_stage", "sha256_ok", "error"}
    assert report["lone_stage"]["path"] == str(lone)
    assert report["lone_stage"]["sha256_ok"] is True and report["lone_stage"]["error"] is None
    assert report["lone_stage"]["final_stage"] == inspect_checkpoint(lone)["final_stage"]
    # Their own final stage is reported.
    _set_final_stage(lone, {"min_change_confidence": 0.3})
    assert inspect_lone_stage(main)["final_stage"]["min_change_confidence"] == 0.3
    # Recorded with another sha256: not the weights the pair was made with.
    _set_entry(main, {"file": lone.name, "sha256": "0" * 64})
    report = inspect_checkpoint(main)
    assert report["lone_stage"]["sha256_ok"] is False
    assert "does not match main.json" in report["lone_stage"]["error"]
    assert report["error"] == report["lone_stage"]["error"]


def test_lone_stage_weights_that_cannot_load_fail_inspection_as_they_fail_the_load(
        lone_pair: tuple[Path, Path]) -> None:
    from crm_cli.checkpoint import WeightsError, inspect_checkpoint

    main, lone = lone_pair
    side = _sidecar(lone)
    side["sha256"] = "2" * 64  # their own sidecar no longer vouches for them
    _write_sidecar(lone, side)
    with pytest.raises(WeightsError, match="lone.json"):
        _refiner_of(main)
    report = inspect_checkpoint(main)
    assert report["lone_stage"]["sha256_ok"] is True  # the pair's entry matches ...
    assert "lone.json" in report["lone_stage"]["error"] and report["error"] == report["lone_stage"]["error"]


# --- loading -------------------------------------------------------------------------------------------


def test_the_sidecar_names_the_lone_stage_weights_and_their_sha256_is_checked(lone_pair: tuple[Path, Path]) -> None:
    from crm_cli.checkpoint import WeightsError, sha256_file

    main, lone = lone_pair
    named = _refiner_of(main)
    assert named.lone_stage is not None and named.partner is None
    info = named.lone_stage_weights_info
    assert info is not None and info.sha256 == sha256_file(lone) and info.verified
    assert named.weights_info.sha256 == sha256_file(main)
    # The lone-stage weights are built as the main ones are, with neither partner nor lone stage of their own.
    assert named.lone_stage.backend == "torch" and named.lone_stage.lone_stage is None
    assert named.lone_stage.partner is None
    assert named.lone_stage._lock is named._lock
    # False: none, whatever the sidecar says.
    alone = _refiner_of(main, lone_stage_model=False)
    assert alone.lone_stage is None and alone.lone_stage_weights_info is None
    # Without the entry: none.
    assert _refiner_of(lone).lone_stage is None
    with pytest.raises(TypeError, match="lone_stage_model"):
        _refiner_of(main, lone_stage_model=True)
    with pytest.raises(TypeError, match="^lone_stage_model: "):
        _refiner_of(main, lone_stage_model=123)
    # Recorded with another sha256: the load fails, naming the sidecar.
    _set_entry(main, {"file": lone.name, "sha256": "0" * 64})
    with pytest.raises(WeightsError, match="does not match main.json"):
        _refiner_of(main)
    # ... unless the caller names lone-stage weights (or none) of their own.
    assert _refiner_of(main, lone_stage_model=False).lone_stage is None
    assert _refiner_of(main, lone_stage_model=lone).lone_stage_weights_info.sha256 == sha256_file(lone)


def test_lone_stage_options_follow_the_main_model(tiny_weights: Path) -> None:
    from crm_cli.engine import Refiner

    refiner = Refiner.from_model(make_tiny_model(0), device="cpu", backend="torch", lone_stage_model=tiny_weights,
                                 min_stage_side=32, tile_size=96)
    lone = refiner.lone_stage
    assert lone is not None and lone.backend == "torch" and lone.min_stage_side == 32
    assert lone.runner.tile_size == refiner.runner.tile_size == 96
    assert refiner.lone_stage_weights_info.path == str(tiny_weights)
    with pytest.raises(TypeError, match="^lone_stage_model: "):
        Refiner.from_model(make_tiny_model(0), device="cpu", lone_stage_model=123)


# --- routing -------------------------------------------------------------------------------------------


def test_a_lone_final_stage_is_the_lone_stage_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked against a reference: the lone-stage model refining by itself, with the same final stage."""
    from crm_cli.engine import Refiner
    from crm_cli.pipeline import StageRun

    image, coarse = _scene()
    routed = Refiner(make_tiny_model(0), "cpu", backend="torch", final_stage=_no_gate(),
                     lone_stage_model=make_tiny_model(3))
    assert routed.lone_stage is not None and routed.lone_stage.final_stage == _no_gate()
    main_ratios = spy_on_stages(routed, monkeypatch)
    lone_ratios = spy_on_stages(routed.lone_stage, monkeypatch)
    result = routed.refine_detailed(image, coarse)
    assert result.by_lone_stage and not result.by_partner
    # The plan is the final stage alone (no coarse stage fits a 48x64 photo; no region pass).
    assert len(result.ratios) == 1 and result.regions == () and result.kept_given is None
    final = result.ratios[0]
    assert main_ratios == [] and lone_ratios == [final] * (2 if result.mirrored else 1)
    reference = Refiner(make_tiny_model(3), "cpu", backend="torch", final_stage=_no_gate()).refine_detailed(
        image, coarse)
    assert reference.schedule == result.schedule and not reference.by_lone_stage
    assert np.array_equal(result.probability, reference.probability)
    assert result.change_confidence == reference.change_confidence and not result.kept_coarse
    # The main model alone answers otherwise, so the check above tells the two apart.
    alone = Refiner(make_tiny_model(0), "cpu", backend="torch", final_stage=_no_gate()).refine_detailed(image, coarse)
    assert alone.schedule == result.schedule and not alone.by_lone_stage
    assert not np.array_equal(alone.probability, result.probability)
    # Batch records carry it.
    assert StageRun.of(result).by_lone_stage and not StageRun.of(alone).by_lone_stage


def test_a_plan_with_a_coarse_stage_is_the_main_models(monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene(wire=False)
    options = {"backend": "torch", "final_stage": _no_gate(), "min_stage_side": 16}  # a 0.5 stage (24x32) fits
    routed = Refiner(make_tiny_model(0), "cpu", lone_stage_model=make_tiny_model(3), **options)
    lone_ratios = spy_on_stages(routed.lone_stage, monkeypatch)
    result = routed.refine_detailed(image, coarse)
    assert len(result.ratios) >= 2 and len(result.timings) >= 2  # a coarse stage was planned and ran
    assert not result.by_lone_stage and lone_ratios == []
    alone = Refiner(make_tiny_model(0), "cpu", **options).refine_detailed(image, coarse)
    assert alone.schedule == result.schedule
    assert np.array_equal(result.probability, alone.probability)
    # ... which the lone-stage model would have refined otherwise.
    other = Refiner(make_tiny_model(3), "cpu", **options).refine_detailed(image, coarse)
    assert not np.array_equal(other.probability, alone.probability)


def test_a_lone_final_stage_of_a_smooth_mask_is_the_main_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mask with no detail that a coarse stage would lose (under LONE_STAGE_MIN_DETAIL) keeps its lone
    final stage the main model's: the same photo and mask as the routed case, without the wire."""
    from crm_cli.engine import LONE_STAGE_MIN_DETAIL, Refiner, finest_detail, plan_schedule
    from crm_cli.presets import get_preset

    routed = Refiner(make_tiny_model(0), "cpu", backend="torch", final_stage=_no_gate(),
                     lone_stage_model=make_tiny_model(3))
    alone = Refiner(make_tiny_model(0), "cpu", backend="torch", final_stage=_no_gate())
    lone_ratios = spy_on_stages(routed.lone_stage, monkeypatch)
    for wire in (False, True):
        image, coarse = _scene(wire=wire)
        plan = plan_schedule(get_preset("auto"), image, coarse > 127, routed.min_stage_side, _no_gate())
        assert plan.final_only and not plan.regions and plan.sharpness is None
        assert bool(finest_detail(plan) >= LONE_STAGE_MIN_DETAIL) is wire, finest_detail(plan)
        result = routed.refine_detailed(image, coarse)
        assert result.by_lone_stage is wire and bool(lone_ratios) is wire
        reference = alone.refine_detailed(image, coarse)
        assert np.array_equal(result.probability, reference.probability) is not wire


def test_a_lone_final_stage_on_a_sharp_boundary_is_the_main_models() -> None:
    """A mask whose boundary reads sharper than LONE_STAGE_MAX_SHARPNESS lies on crisp edges: its lone final
    stage stays the main model's. Where a coarse stage fits (min_stage_side 32 at 96x128) the sharpness is
    measured: the exact mask's reads far above it, a blocky mask's below."""
    from crm_cli.engine import LONE_STAGE_MAX_SHARPNESS, Refiner, plan_schedule
    from crm_cli.presets import get_preset

    image, gt = synthetic_scene(96, 128, seed=0)
    options = {"backend": "torch", "final_stage": _no_gate(), "min_stage_side": 32}
    routed = Refiner(make_tiny_model(0), "cpu", lone_stage_model=make_tiny_model(3), **options)
    main_alone = Refiner(make_tiny_model(0), "cpu", **options)
    lone_alone = Refiner(make_tiny_model(3), "cpu", **options)
    for mask, sharp in ((gt, True), (_with_wire(coarse_of(gt)), False)):
        plan = plan_schedule(get_preset("auto"), image, mask > 127, 32, _no_gate())
        assert plan.final_only and not plan.regions and plan.sharpness is not None
        assert (plan.sharpness >= LONE_STAGE_MAX_SHARPNESS) is sharp, plan.sharpness
        result = routed.refine_detailed(image, mask)
        assert result.schedule == plan.label() and result.by_lone_stage is not sharp
        expected = (main_alone if sharp else lone_alone).refine_detailed(image, mask)
        assert np.array_equal(result.probability, expected.probability), sharp
        other = (lone_alone if sharp else main_alone).refine_detailed(image, mask)
        assert not np.array_equal(result.probability, other.probability), sharp


@pytest.mark.parametrize("settings", [{"ratios": "1"}, {"ratios": (1.0,)}, {"preset": "fast"},
                                      {"guard": False}, {"ratios": (1.0,), "preset": "auto"}])
def test_every_refinement_but_autos_own_is_the_main_models(settings: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene()
    routed = Refiner(make_tiny_model(0), "cpu", backend="torch", final_stage=_no_gate(),
                     lone_stage_model=make_tiny_model(3))
    lone_ratios = spy_on_stages(routed.lone_stage, monkeypatch)
    result = routed.refine_detailed(image, coarse, **settings)
    assert not result.by_lone_stage and lone_ratios == []
    assert len(result.ratios) == 1 or settings.get("preset") == "fast"
    alone = Refiner(make_tiny_model(0), "cpu", backend="torch", final_stage=_no_gate()).refine_detailed(
        image, coarse, **settings)
    assert np.array_equal(result.probability, alone.probability)
    # The same refiner under auto's own settings routes it (only its snap or tiling switched is still auto).
    assert routed.refine_detailed(image, coarse, snap=False, roi=False).by_lone_stage
    assert lone_ratios


def test_the_main_model_as_its_own_lone_stage_changes_nothing() -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene(seed=1)
    same = Refiner(make_tiny_model(0), "cpu", backend="torch", final_stage=_no_gate(),
                   lone_stage_model=make_tiny_model(0))
    alone = Refiner(make_tiny_model(0), "cpu", backend="torch", final_stage=_no_gate())
    result, expected = same.refine_detailed(image, coarse), alone.refine_detailed(image, coarse)
    assert result.by_lone_stage and not expected.by_lone_stage
    assert result.schedule == expected.schedule and result.kept_coarse == expected.kept_coarse
    assert result.guard_restored == expected.guard_restored
    assert np.array_equal(result.probability, expected.probability)


# --- the lone-stage weights' own final stage ------------------------------------------------------------


def test_the_lone_stage_weights_bring_their_own_gate(lone_pair: tuple[Path, Path]) -> None:
    """The gate of a lone final stage is the lone-stage weights' (their sidecar's final_stage), not the
    main weights'."""
    main, lone = lone_pair
    image, coarse = _scene()
    given = (coarse > 127).astype(np.float32)  # the coarse mask as the gate keeps it

    # The main weights' gate keeps the coarse mask (default 0.5: the tiny models are never that sure);
    # their lone-stage weights' takes every change.
    _set_final_stage(lone, {"min_change_confidence": 0.0})
    routed = _refiner_of(main)
    assert routed.final_stage.min_change_confidence == 0.5
    assert routed.lone_stage.final_stage.min_change_confidence == 0.0
    taken = routed.refine_detailed(image, coarse)
    main_only = _refiner_of(main, lone_stage_model=False).refine_detailed(image, coarse)
    assert taken.by_lone_stage and not main_only.by_lone_stage
    assert taken.change_confidence is not None and main_only.change_confidence is not None
    assert not taken.kept_coarse and taken.change_weight == 1.0
    assert main_only.kept_coarse and main_only.change_weight == 0.0
    assert np.array_equal(main_only.probability, given)
    assert not np.array_equal(taken.probability, given)

    # The other way round: the main weights take every change, their lone-stage weights' gate keeps the mask.
    _set_final_stage(main, {"min_change_confidence": 0.0})
    _set_final_stage(lone, {"min_change_confidence": 1.0})
    routed = _refiner_of(main)
    assert routed.final_stage.min_change_confidence == 0.0
    assert routed.lone_stage.final_stage.min_change_confidence == 1.0
    kept = routed.refine_detailed(image, coarse)
    main_only = _refiner_of(main, lone_stage_model=False).refine_detailed(image, coarse)
    assert kept.by_lone_stage and kept.kept_coarse and kept.change_weight == 0.0
    assert np.array_equal(kept.probability, given)
    assert not main_only.kept_coarse and not np.array_equal(main_only.probability, given)

    # A final_stage given to the Refiner holds for the lone-stage weights too.
    forced = _refiner_of(main, final_stage=_no_gate())
    assert forced.lone_stage.final_stage == _no_gate()
    assert not forced.refine_detailed(image, coarse).kept_coarse


def test_the_lone_stage_weights_bring_their_own_certainty(lone_pair: tuple[Path, Path]) -> None:
    """The trust region's certainty of a lone final stage is the lone-stage weights' too."""
    main, lone = lone_pair
    image, coarse = _scene()
    answers = {}
    for certainty in (0.5, 0.99):
        _set_final_stage(lone, {"min_change_confidence": 0.0, "final_only_certainty": certainty})
        routed = _refiner_of(main)
        result = routed.refine_detailed(image, coarse)
        assert result.by_lone_stage
        reference = _refiner_of(lone).refine_detailed(image, coarse)
        assert reference.schedule == result.schedule
        assert np.array_equal(result.probability, reference.probability)
        answers[certainty] = result.probability
    # The two certainties really gave two answers (the main weights' own is 0.99 in both runs).
    assert not np.array_equal(answers[0.5], answers[0.99])


# --- copies --------------------------------------------------------------------------------------------


def test_copies_keep_the_lone_stage_weights_and_share_one_lock(lone_pair: tuple[Path, Path]) -> None:
    main, lone = lone_pair
    _set_final_stage(lone, {"min_change_confidence": 0.0})
    image, coarse = _scene()
    refiner = _refiner_of(main)
    expected = refiner.refine_detailed(image, coarse)
    assert expected.by_lone_stage
    for clone in (copy.deepcopy(refiner), pickle.loads(pickle.dumps(refiner))):
        assert clone.lone_stage is not None and clone.lone_stage is not refiner.lone_stage
        assert clone.lone_stage._lock is clone._lock and clone._lock is not refiner._lock
        assert clone.lone_stage.final_stage == refiner.lone_stage.final_stage
        assert clone.lone_stage_weights_info.sha256 == refiner.lone_stage_weights_info.sha256
        result = clone.refine_detailed(image, coarse)
        assert result.by_lone_stage
        assert np.array_equal(result.probability, expected.probability)
    # A shallow copy shares the runners, and so the lock.
    shallow = copy.copy(refiner)
    assert shallow.lone_stage is refiner.lone_stage and shallow._lock is refiner._lock


def test_a_refiner_pickled_before_lone_stages_existed_loads_without_one(tiny_weights: Path) -> None:
    refiner = _refiner_of(tiny_weights)
    state = refiner.__getstate__()
    del state["lone_stage"]  # what an earlier version pickled
    restored = type(refiner).__new__(type(refiner))
    restored.__setstate__(state)
    assert restored.lone_stage is None and restored.lone_stage_weights_info is None


# --- batch records -------------------------------------------------------------------------------------


def test_batch_records_name_the_lone_stage_weights_only_when_there_are_some(lone_pair: tuple[Path, Path]) -> None:
    from crm_cli.checkpoint import sha256_file
    from crm_cli.cli.resumable import weights_identity

    main, lone = lone_pair
    entry = _sidecar(main)["lone_stage"]
    side = _sidecar(main)
    del side["lone_stage"]
    _write_sidecar(main, side)
    # Weights without the entry are named as before, so their earlier outputs stay done.
    plain = weights_identity(main)
    assert plain == json.dumps({"final_stage": None, "sha256": sha256_file(main)})
    _set_entry(main, entry)
    named = weights_identity(main)
    assert named != plain
    assert json.loads(named) == {"final_stage": None, "sha256": sha256_file(main),
                                 "lone_stage": {"file": lone.name, "sha256": sha256_file(lone)}}
    # Their own final stage is part of what they do.
    _set_final_stage(lone, {"min_change_confidence": 0.45})
    with_stage = weights_identity(main)
    assert with_stage != named
    assert json.loads(with_stage) == {**json.loads(named), "lone_stage_final_stage": {"min_change_confidence": 0.45}}
    _set_final_stage(lone, {"min_change_confidence": 0.3})
    assert weights_identity(main) not in (with_stage, named)
    # Other lone-stage weights named: another identity.
    _set_final_stage(lone, None)
    _set_entry(main, {"file": lone.name, "sha256": "1" * 64})
    assert weights_identity(main) not in (named, plain)
    # Without the entry again: the text from before.
    side = _sidecar(main)
    del side["lone_stage"]
    _write_sidecar(main, side)
    assert weights_identity(main) == plain
    # The weights' own partner-free identity is unchanged by the lone-stage weights' sidecar.
    assert weights_identity(lone) == json.dumps({"final_stage": None, "sha256": sha256_file(lone)})


# --- the command line ----------------------------------------------------------------------------------


def test_crm_eval_counts_the_images_the_lone_stage_weights_refined(lone_pair: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from crm_cli.cli import app

    main, lone = lone_pair
    _set_final_stage(lone, {"min_change_confidence": 0.0})
    folder = tmp_path / "set"
    folder.mkdir()
    # 96x128: the command line passes photos under 96 px through unrefined (config.MIN_REFINE_SIDE).
    size = (96, 128)
    image, coarse = _scene(size=size)
    _, gt = synthetic_scene(*size, seed=0)
    cv2.imwrite(str(folder / "small_im.png"), image[..., ::-1])
    cv2.imwrite(str(folder / "small_gt.png"), gt)
    cv2.imwrite(str(folder / "small_seg.png"), coarse)
    # A photo of one flat colour: the mask is kept as given, no stage runs (nor the lone-stage weights).
    cv2.imwrite(str(folder / "flat_im.png"), np.full((*size, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "flat_gt.png"), gt)
    cv2.imwrite(str(folder / "flat_seg.png"), coarse)
    common = ["-w", str(main), "--backend", "torch", "-d", "cpu", "--json", "-q"]
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(folder), *common])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    per_image = {entry["name"]: entry["by_lone_stage"] for entry in summary["images"]}
    assert per_image == {"small": True, "flat": False}
    assert summary["by_lone_stage"] == sum(per_image.values()) == 1
    assert summary["by_partner"] == 0
    assert summary["lone_stage_backend"] == "torch"
    # A fixed preset is the main weights' alone.
    fixed = runner.invoke(app, ["eval", str(folder), *common, "--preset", "fast"])
    assert fixed.exit_code == 0, fixed.output
    summary = json.loads(fixed.stdout)
    assert summary["by_lone_stage"] == 0 and not any(entry["by_lone_stage"] for entry in summary["images"])
    # crm refine's record says so too.
    out = tmp_path / "out.png"
    refined = runner.invoke(app, ["refine", str(folder / "small_im.png"), str(folder / "small_seg.png"),
                                  "-o", str(out), *common[:-1]])
    assert refined.exit_code == 0, refined.output
    assert json.loads(refined.stdout)["by_lone_stage"] is True and out.is_file()
    timed = runner.invoke(app, ["time", str(folder / "small_im.png"), str(folder / "small_seg.png"), "--repeat", "1",
                                *common[:-1]])
    assert timed.exit_code == 0, timed.output
    report = json.loads(timed.stdout)
    assert report["by_lone_stage"] is True and report["lone_stage_backend"] == "torch"


def test_crm_info_shows_the_lone_stage_weights(lone_pair: tuple[Path, Path], tiny_weights: Path) -> None:
    from typer.testing import CliRunner

    from crm_cli.checkpoint import inspect_checkpoint
    from crm_cli.cli import app

    main, lone = lone_pair
    _set_final_stage(lone, {"min_change_confidence": 0.25})
    runner = CliRunner()
    shown = runner.invoke(app, ["info", "--json", "-w", str(main)])
    assert shown.exit_code == 0, shown.output
    reported = json.loads(shown.stdout)["weights"]["lone_stage"]
    assert reported == {"path": str(lone), "final_stage": inspect_checkpoint(lone)["final_stage"],
                        "sha256_ok": True, "error": None}
    assert reported["final_stage"]["min_change_confidence"] == 0.25
    table = runner.invoke(app, ["info", "-w", str(main)], terminal_width=200)
    assert table.exit_code == 0, table.output
    assert "lone stage" in flat(table.output) and "min_change_confidence=0.25" in flat(table.output)
    assert "lone stage" not in flat(runner.invoke(app, ["info", "-w", str(tiny_weights)],
                                                  terminal_width=200).output)
    # Lone-stage weights that are not the recorded ones fail it.
    lone.write_bytes(lone.read_bytes()[:-8] + b"\0" * 8)
    broken = runner.invoke(app, ["info", "--json", "-w", str(main)])
    assert broken.exit_code == 1
    data = json.loads(broken.stdout)
    assert data["status"] == "failed" and data["weights"]["lone_stage"]["sha256_ok"] is False


def test_finest_detail_is_the_detail_at_the_finest_coarse_stage_measured() -> None:
    from crm_cli.engine import finest_detail
    from crm_cli.schedule import Schedule

    assert finest_detail(Schedule((1.0,), 8.0, detail={0.25: 0.4, 0.5: 0.125, 1.0: 3.0})) == 0.125
    assert finest_detail(Schedule((1.0,), 8.0, detail={0.25: 0.4})) == 0.4
    assert finest_detail(Schedule((1.0,), 8.0, detail={1.0: 3.0})) is None
    assert finest_detail(Schedule((1.0,), 8.0)) is None
