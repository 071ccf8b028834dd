"""The region pass on a model of its own (session 43): ``Refiner(region_model=...)`` and the weights
sidecar's ``"region_pass"`` entry that names such a model for ``auto``."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_tiny_model, synthetic_scene

pytest.importorskip("torch")


def _scene_with_a_hole() -> tuple[np.ndarray, np.ndarray]:
    """A 1000x1000 scene whose precise coarse mask has a 40x40 hole deep inside the object: auto plans a
    region pass for it (``test_auto``'s region-pass tests use the same scene)."""
    image, gt = synthetic_scene(1000, 1000)
    inside = gt > 127
    depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(np.argmax(depth), depth.shape)
    coarse = inside.copy()
    coarse[y - 20:y + 20, x - 50:x - 10] = False
    return image, (coarse * 255).astype(np.uint8)


def _spy_on_stages(refiner, monkeypatch: pytest.MonkeyPatch) -> list[float]:  # noqa: ANN001
    """The ratios of the stages ``refiner``'s runner runs, in order (a mirrored stage runs twice)."""
    ratios: list[float] = []
    original = refiner.runner._stage

    def spy(image, mask, ratio, *args, **kw):  # noqa: ANN001, ANN202
        ratios.append(ratio)
        return original(image, mask, ratio, *args, **kw)

    monkeypatch.setattr(refiner.runner, "_stage", spy)
    return ratios


def _region_proposal(refiner, image: np.ndarray, coarse: np.ndarray,  # noqa: ANN001
                     monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray]:
    """The region pass's proposal (the mask its stages drew, binary, at its working size) and the refined mask."""
    import crm_cli.engine as engine

    proposals: list[np.ndarray] = []
    original = engine.region_changes

    def spy(proposal, *args, **kw):  # noqa: ANN001, ANN202
        proposals.append(np.array(proposal, copy=True))
        return original(proposal, *args, **kw)

    monkeypatch.setattr(engine, "region_changes", spy)
    refined = refiner.refine(image, coarse)
    monkeypatch.setattr(engine, "region_changes", original)
    assert len(proposals) == 1
    return proposals[0], refined


def test_the_region_pass_runs_on_the_region_model_and_the_rest_on_the_main_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene_with_a_hole()
    refiner = Refiner.from_model(make_tiny_model(0), device="cpu", region_model=make_tiny_model(1))
    assert refiner.region_refiner is not None and refiner.region_weights_info is not None
    main_ratios = _spy_on_stages(refiner, monkeypatch)
    region_ratios = _spy_on_stages(refiner.region_refiner, monkeypatch)
    result = refiner.refine_detailed(image, coarse)
    assert result.regions == (0.25, 0.5)
    assert region_ratios == [0.25, 0.5]
    final = result.ratios[-1]
    assert result.mirrored and final >= 1.0
    assert main_ratios == [final, final]  # the final stage, mirrored
    # Without a region model every stage is the main model's.
    alone = Refiner.from_model(make_tiny_model(0), device="cpu")
    assert alone.region_refiner is None and alone.region_weights_info is None
    alone_ratios = _spy_on_stages(alone, monkeypatch)
    alone.refine_detailed(image, coarse)
    assert alone_ratios == [0.25, 0.5, final, final]


def test_a_region_model_equal_to_the_main_one_changes_nothing_and_another_one_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene_with_a_hole()
    proposal, alone = _region_proposal(Refiner.from_model(make_tiny_model(0), device="cpu"), image, coarse,
                                       monkeypatch)
    same = Refiner.from_model(make_tiny_model(0), device="cpu", region_model=make_tiny_model(0))
    same_proposal, same_refined = _region_proposal(same, image, coarse, monkeypatch)
    assert np.array_equal(proposal, same_proposal) and np.array_equal(alone, same_refined)
    other = Refiner.from_model(make_tiny_model(0), device="cpu", region_model=make_tiny_model(3))
    other_proposal, _ = _region_proposal(other, image, coarse, monkeypatch)
    assert other_proposal.shape == proposal.shape == (500, 500)
    assert not np.array_equal(other_proposal, proposal)
    # ... which is the other model's own: the same as its region pass when it runs alone.
    other_alone, _ = _region_proposal(Refiner.from_model(make_tiny_model(3), device="cpu"), image, coarse,
                                      monkeypatch)
    assert np.array_equal(other_proposal, other_alone)
    # Fixed ratios plan no region pass: the region model is not used, the masks are equal.
    fixed = [Refiner.from_model(make_tiny_model(0), device="cpu", region_model=region).refine(image, coarse,
                                                                                           ratios=(0.5, 1.0))
             for region in (None, make_tiny_model(3))]
    assert np.array_equal(*fixed)


def test_region_model_true_is_refused() -> None:
    from crm_cli.engine import Refiner

    with pytest.raises(TypeError, match="region_model"):
        Refiner.from_model(make_tiny_model(0), device="cpu", region_model=True)


@pytest.fixture()
def weights_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny checkpoints side by side: main.safetensors, whose sidecar names region.safetensors
    (with its sha256) for the region pass, and region.safetensors."""
    from crm_cli.checkpoint import save_weights, sidecar_path
    from crm_cli.config import Provenance

    main, region = tmp_path / "main.safetensors", tmp_path / "region.safetensors"
    save_weights(make_tiny_model(0), main, Provenance(notes="main"))
    digest = save_weights(make_tiny_model(3), region, Provenance(notes="region"))
    side = json.loads(sidecar_path(main).read_text())
    side["region_pass"] = {"file": region.name, "sha256": digest}
    sidecar_path(main).write_text(json.dumps(side))
    return main, region


def _set_entry(main: Path, entry: object) -> None:
    from crm_cli.checkpoint import sidecar_path

    side = json.loads(sidecar_path(main).read_text())
    side["region_pass"] = entry
    sidecar_path(main).write_text(json.dumps(side))


def test_the_sidecar_names_the_region_model_and_its_sha256_is_checked(weights_pair: tuple[Path, Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.checkpoint import sha256_file
    from crm_cli.engine import Refiner

    main, region = weights_pair
    image, coarse = _scene_with_a_hole()
    named = Refiner(main, "cpu", backend="torch")
    assert named.region_weights_info is not None
    assert named.region_weights_info.sha256 == sha256_file(region)
    assert named.region_weights_info.verified
    explicit = Refiner(main, "cpu", backend="torch", region_model=region)
    itself = Refiner(main, "cpu", backend="torch", region_model=False)
    assert itself.region_refiner is None
    proposal, refined = _region_proposal(named, image, coarse, monkeypatch)
    explicit_proposal, explicit_refined = _region_proposal(explicit, image, coarse, monkeypatch)
    assert np.array_equal(proposal, explicit_proposal) and np.array_equal(refined, explicit_refined)
    assert not np.array_equal(proposal, _region_proposal(itself, image, coarse, monkeypatch)[0])
    # A copy (a Ray actor's, a process pool's) keeps its region model.
    for clone in (copy.deepcopy(named), pickle.loads(pickle.dumps(named))):
        clone_proposal, clone_refined = _region_proposal(clone, image, coarse, monkeypatch)
        assert np.array_equal(proposal, clone_proposal) and np.array_equal(refined, clone_refined)


@pytest.mark.parametrize("case", ["missing", "other file", "malformed", "path"])
def test_bad_region_pass_entries_fail_the_load_naming_the_sidecar(weights_pair: tuple[Path, Path], case: str) -> None:
    from crm_cli.checkpoint import WeightsError, inspect_checkpoint, sha256_file
    from crm_cli.engine import Refiner

    main, region = weights_pair
    if case == "missing":
        region.unlink()
        message = "region-pass weights it names are missing"
    elif case == "other file":
        _set_entry(main, {"file": region.name, "sha256": "0" * 64})
        message = "does not match main.json"
    elif case == "malformed":
        _set_entry(main, {"file": region.name})
        message = '"region_pass" must be'
    else:
        _set_entry(main, {"file": str(region), "sha256": sha256_file(region)})
        message = '"region_pass" must be'
    with pytest.raises(WeightsError, match=message) as caught:
        Refiner(main, "cpu", backend="torch")
    assert "main.json" in str(caught.value)
    report = inspect_checkpoint(main)
    assert report["region_pass"] is not None and message in report["region_pass"]["error"]
    assert message in report["error"]


def test_inspect_and_crm_info_show_the_region_pass(weights_pair: tuple[Path, Path], tiny_weights: Path) -> None:
    from typer.testing import CliRunner

    from crm_cli.checkpoint import inspect_checkpoint
    from crm_cli.cli import app

    main, region = weights_pair
    report = inspect_checkpoint(main)
    assert report["error"] is None
    assert report["region_pass"] == {"path": str(region), "sha256_ok": True, "error": None}
    assert inspect_checkpoint(tiny_weights)["region_pass"] is None
    runner = CliRunner()
    shown = runner.invoke(app, ["info", "--json", "-w", str(main)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["weights"]["region_pass"]["sha256_ok"] is True
    region.write_bytes(region.read_bytes()[:-8] + b"\0" * 8)
    broken = runner.invoke(app, ["info", "--json", "-w", str(main)])
    assert broken.exit_code == 1
    data = json.loads(broken.stdout)
    assert data["status"] == "failed" and data["weights"]["region_pass"]["sha256_ok"] is False


def test_batch_records_name_the_region_pass_only_when_there_is_one(weights_pair: tuple[Path, Path],
                                                                   tiny_weights: Path) -> None:
    from crm_cli.checkpoint import sha256_file
    from crm_cli.cli.batch import weights_identity

    main, region = weights_pair
    # Weights without the entry are named as before, so their earlier outputs stay done.
    assert weights_identity(tiny_weights) == json.dumps({"final_stage": None, "sha256": sha256_file(tiny_weights)})
    named = json.loads(weights_identity(main))
    assert named == {"final_stage": None, "sha256": sha256_file(main),
                     "region_pass": {"file": region.name, "sha256": sha256_file(region)}}
    before = weights_identity(main)
    _set_entry(main, {"file": region.name, "sha256": "1" * 64})
    assert weights_identity(main) != before


def test_coco_progress_made_with_other_default_weights_starts_over(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                   weights_pair: tuple[Path, Path],
                                                                   tiny_weights: Path) -> None:
    """A coco run's progress names the default weights by their identity: resumed after the default
    changed, it starts over instead of mixing two models' masks; named weights keep their fingerprint."""
    from typer.testing import CliRunner

    from crm_cli.cli import app
    from crm_cli.cli.batch import weights_identity
    from crm_cli.coco.files import sidecar_path as progress_path

    # One instance whose photo is missing: the run fails it (exit 1) without loading a model, and its
    # progress file stays for the next run.
    coco = {"images": [{"id": 1, "file_name": "gone.png", "width": 64, "height": 64}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]]}],
            "categories": [{"id": 1, "name": "thing"}]}
    annotations = tmp_path / "in.json"
    annotations.write_text(json.dumps(coco))
    out = tmp_path / "out.json"
    runner = CliRunner()

    def run(*extra: str):  # noqa: ANN202
        return runner.invoke(app, ["coco", str(annotations), "--images", str(tmp_path), "-o", str(out), "-q",
                                   *extra])

    import crm_cli.checkpoint as checkpoint

    monkeypatch.delenv("CRM_WEIGHTS", raising=False)  # CRM_WEIGHTS names weights, as --weights does
    monkeypatch.setattr(checkpoint, "default_weights_path", lambda: tiny_weights)
    assert run().exit_code == 1
    header = json.loads(progress_path(out).read_text().splitlines()[0])
    assert header["weights"] is None and header["default_weights"] == weights_identity(tiny_weights)
    again = run()
    assert again.exit_code == 1 and "starting over" not in again.stderr
    monkeypatch.setattr(checkpoint, "default_weights_path", lambda: weights_pair[0])  # another default
    changed = run()
    assert changed.exit_code == 1 and "starting over" in " ".join(changed.stderr.split())
    named = run("-w", str(tiny_weights))
    assert "starting over" in " ".join(named.stderr.split())
    header = json.loads(progress_path(out).read_text().splitlines()[0])
    assert header["weights"] == str(tiny_weights) and "default_weights" not in header
