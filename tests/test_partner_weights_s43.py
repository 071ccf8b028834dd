"""Partner weights (session 43): ``Refiner(partner_model=..., partner_below_side=...)`` and the weights
sidecar's ``"partner"`` entry. The partner runs ``auto``'s region pass, and every stage of photos under
a size; the weights run the rest."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, make_tiny_model, spy_on_stages, synthetic_scene

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


def test_the_region_pass_runs_on_the_partner_model_and_the_rest_on_the_main_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene_with_a_hole()
    refiner = Refiner.from_model(make_tiny_model(0), device="cpu", partner_model=make_tiny_model(1))
    assert refiner.partner is not None and refiner.partner_weights_info is not None
    main_ratios = spy_on_stages(refiner, monkeypatch)
    region_ratios = spy_on_stages(refiner.partner, monkeypatch)
    result = refiner.refine_detailed(image, coarse)
    assert result.regions == (0.25, 0.5)
    assert region_ratios == [0.25, 0.5]
    final = result.ratios[-1]
    assert result.mirrored and final >= 1.0
    assert main_ratios == [final, final]  # the final stage, mirrored
    # Without a partner every stage is the main model's.
    alone = Refiner.from_model(make_tiny_model(0), device="cpu")
    assert alone.partner is None and alone.partner_weights_info is None
    alone_ratios = spy_on_stages(alone, monkeypatch)
    alone.refine_detailed(image, coarse)
    assert alone_ratios == [0.25, 0.5, final, final]


def test_a_partner_model_equal_to_the_main_one_changes_nothing_and_another_one_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene_with_a_hole()
    proposal, alone = _region_proposal(Refiner.from_model(make_tiny_model(0), device="cpu"), image, coarse,
                                       monkeypatch)
    same = Refiner.from_model(make_tiny_model(0), device="cpu", partner_model=make_tiny_model(0))
    same_proposal, same_refined = _region_proposal(same, image, coarse, monkeypatch)
    assert np.array_equal(proposal, same_proposal) and np.array_equal(alone, same_refined)
    other = Refiner.from_model(make_tiny_model(0), device="cpu", partner_model=make_tiny_model(3))
    other_proposal, _ = _region_proposal(other, image, coarse, monkeypatch)
    assert other_proposal.shape == proposal.shape == (500, 500)
    assert not np.array_equal(other_proposal, proposal)
    # ... which is the other model's own: the same as its region pass when it runs alone.
    other_alone, _ = _region_proposal(Refiner.from_model(make_tiny_model(3), device="cpu"), image, coarse,
                                      monkeypatch)
    assert np.array_equal(other_proposal, other_alone)



@pytest.mark.parametrize("settings", [{"ratios": (0.5, 1.0)}, {"preset": "balanced"}, {"preset": "fast"},
                                      {"guard": False}, {"ratios": (0.5, 1.0), "preset": "auto"}])
def test_every_refinement_but_autos_own_is_the_partners(settings: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights were paired for auto's schedule with its guard (which plans the region pass): fixed
    ratios or presets and the guard off are refined by the partner alone, as before it was one."""
    from crm_cli.engine import Refiner

    # Which weights refine does not depend on the size here (no partner_below_side): a small scene will do.
    image, gt = synthetic_scene(320, 400)
    coarse = coarse_of(gt)
    refiner = Refiner.from_model(make_tiny_model(0), device="cpu", partner_model=make_tiny_model(3))
    main_ratios = spy_on_stages(refiner, monkeypatch)
    partner_alone = Refiner.from_model(make_tiny_model(3), device="cpu").refine_detailed(image, coarse, **settings)
    result = refiner.refine_detailed(image, coarse, **settings)
    assert main_ratios == [] and np.array_equal(result.probability, partner_alone.probability)
    assert result.by_partner and not partner_alone.by_partner
    # auto with only its snap or its tiling switched is still auto: the weights refine.
    assert not refiner.refine_detailed(image, coarse, snap=False, roi=False).by_partner
    assert main_ratios


def test_partner_model_true_is_refused() -> None:
    from crm_cli.engine import Refiner

    with pytest.raises(TypeError, match="partner_model"):
        Refiner.from_model(make_tiny_model(0), device="cpu", partner_model=True)


@pytest.fixture()
def weights_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two tiny checkpoints side by side: main.safetensors, whose sidecar names partner.safetensors
    (with its sha256, below_side 200) as its partner, and partner.safetensors."""
    from crm_cli.checkpoint import save_weights, sidecar_path
    from crm_cli.config import Provenance

    main, region = tmp_path / "main.safetensors", tmp_path / "partner.safetensors"
    save_weights(make_tiny_model(0), main, Provenance(notes="main"))
    digest = save_weights(make_tiny_model(3), region, Provenance(notes="region"))
    side = json.loads(sidecar_path(main).read_text())
    side["partner"] = {"file": region.name, "sha256": digest, "below_side": 200}
    sidecar_path(main).write_text(json.dumps(side))
    return main, region


def _set_entry(main: Path, entry: object) -> None:
    from crm_cli.checkpoint import sidecar_path

    side = json.loads(sidecar_path(main).read_text())
    side["partner"] = entry
    sidecar_path(main).write_text(json.dumps(side))


def test_the_sidecar_names_the_partner_model_and_its_sha256_is_checked(weights_pair: tuple[Path, Path],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.checkpoint import sha256_file
    from crm_cli.engine import Refiner

    main, region = weights_pair
    image, coarse = _scene_with_a_hole()
    named = Refiner(main, "cpu", backend="torch")
    assert named.partner_weights_info is not None
    assert named.partner_weights_info.sha256 == sha256_file(region)
    assert named.partner_weights_info.verified
    explicit = Refiner(main, "cpu", backend="torch", partner_model=region)
    itself = Refiner(main, "cpu", backend="torch", partner_model=False)
    assert itself.partner is None
    proposal, refined = _region_proposal(named, image, coarse, monkeypatch)
    explicit_proposal, explicit_refined = _region_proposal(explicit, image, coarse, monkeypatch)
    assert np.array_equal(proposal, explicit_proposal) and np.array_equal(refined, explicit_refined)
    assert not np.array_equal(proposal, _region_proposal(itself, image, coarse, monkeypatch)[0])
    # A copy (a Ray actor's, a process pool's) keeps its partner.
    for clone in (copy.deepcopy(named), pickle.loads(pickle.dumps(named))):
        clone_proposal, clone_refined = _region_proposal(clone, image, coarse, monkeypatch)
        assert np.array_equal(proposal, clone_proposal) and np.array_equal(refined, clone_refined)


@pytest.mark.parametrize("case", ["missing", "other file", "malformed", "path", "negative side", "fractional side"])
def test_bad_partner_entries_fail_the_load_naming_the_sidecar(weights_pair: tuple[Path, Path], case: str) -> None:
    from crm_cli.checkpoint import WeightsError, inspect_checkpoint, sha256_file
    from crm_cli.engine import Refiner

    main, region = weights_pair
    if case == "missing":
        region.unlink()
        message = "partner weights it names are missing"
    elif case == "other file":
        _set_entry(main, {"file": region.name, "sha256": "0" * 64})
        message = "does not match main.json"
    elif case == "malformed":
        _set_entry(main, {"file": region.name})
        message = '"partner" must be'
    elif case == "path":
        _set_entry(main, {"file": str(region), "sha256": sha256_file(region)})
        message = '"partner" must be'
    else:
        side = -1 if case == "negative side" else 2.5
        _set_entry(main, {"file": region.name, "sha256": sha256_file(region), "below_side": side})
        message = '"partner" must be'
    with pytest.raises(WeightsError, match=message) as caught:
        Refiner(main, "cpu", backend="torch")
    assert "main.json" in str(caught.value)
    report = inspect_checkpoint(main)
    assert report["partner"] is not None and message in report["partner"]["error"]
    assert message in report["error"]


def test_inspect_and_crm_info_show_the_partner(weights_pair: tuple[Path, Path], tiny_weights: Path) -> None:
    from typer.testing import CliRunner

    from crm_cli.checkpoint import inspect_checkpoint
    from crm_cli.cli import app

    main, region = weights_pair
    report = inspect_checkpoint(main)
    assert report["error"] is None
    assert report["partner"] == {"path": str(region), "below_side": 200, "sha256_ok": True, "error": None}
    assert inspect_checkpoint(tiny_weights)["partner"] is None
    runner = CliRunner()
    shown = runner.invoke(app, ["info", "--json", "-w", str(main)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["weights"]["partner"]["sha256_ok"] is True
    from crm_cli.cli.info import _partner_text

    assert _partner_text(report["partner"]) == (
        "[green]sha256 matches sidecar[/]; runs auto's region pass, photos under 200 px, fixed presets and ratios, "
        f"and --no-guard\n{region}")
    assert runner.invoke(app, ["info", "-w", str(main)]).exit_code == 0
    region.write_bytes(region.read_bytes()[:-8] + b"\0" * 8)
    broken = runner.invoke(app, ["info", "--json", "-w", str(main)])
    assert broken.exit_code == 1
    data = json.loads(broken.stdout)
    assert data["status"] == "failed" and data["weights"]["partner"]["sha256_ok"] is False


def test_batch_records_name_the_partner_only_when_there_is_one(weights_pair: tuple[Path, Path],
                                                                   tiny_weights: Path) -> None:
    from crm_cli.checkpoint import sha256_file
    from crm_cli.cli.resumable import weights_identity

    main, region = weights_pair
    # Weights without the entry are named as before, so their earlier outputs stay done.
    assert weights_identity(tiny_weights) == json.dumps({"final_stage": None, "sha256": sha256_file(tiny_weights)})
    named = json.loads(weights_identity(main))
    assert named == {"final_stage": None, "sha256": sha256_file(main),
                     "partner": {"file": region.name, "sha256": sha256_file(region), "below_side": 200}}
    before = weights_identity(main)
    _set_entry(main, {"file": region.name, "sha256": sha256_file(region), "below_side": 300})
    assert weights_identity(main) != before


def test_coco_progress_made_with_other_default_weights_starts_over(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                   weights_pair: tuple[Path, Path],
                                                                   tiny_weights: Path) -> None:
    """A coco run's progress names the default weights by their identity: resumed after the default
    changed, it starts over instead of mixing two models' masks; named weights keep their fingerprint."""
    from typer.testing import CliRunner

    from crm_cli.cli import app
    from crm_cli.cli.resumable import weights_identity
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


def test_photos_under_the_partners_side_are_refined_wholly_by_the_partner(monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    refiner = Refiner.from_model(make_tiny_model(0), device="cpu", partner_model=make_tiny_model(3),
                                 partner_below_side=200)
    assert refiner.partner_below_side == 200
    partner_alone = Refiner.from_model(make_tiny_model(3), device="cpu")
    main_alone = Refiner.from_model(make_tiny_model(0), device="cpu")
    main_ratios = spy_on_stages(refiner, monkeypatch)
    partner_ratios = spy_on_stages(refiner.partner, monkeypatch)
    for height, width, by_partner in ((150, 199, True), (199, 120, True), (120, 200, False), (256, 160, False)):
        image, gt = synthetic_scene(height, width, seed=height)
        coarse = coarse_of(gt)
        main_ratios.clear()
        partner_ratios.clear()
        result = refiner.refine_detailed(image, coarse)
        expected = (partner_alone if by_partner else main_alone).refine_detailed(image, coarse)
        assert np.array_equal(result.probability, expected.probability), (height, width)
        assert result.schedule == expected.schedule
        assert result.by_partner is by_partner and not expected.by_partner
        # The main model runs no stage of a small photo; of a larger one it runs all but a region pass.
        assert (main_ratios == []) == by_partner and (partner_ratios != []) == by_partner
    # The two models differ on a small photo, so the first check above tells them apart.
    assert not np.array_equal(main_alone.refine(*_small_pair()), partner_alone.refine(*_small_pair()))


def _small_pair() -> tuple[np.ndarray, np.ndarray]:
    image, gt = synthetic_scene(150, 199, seed=150)
    return image, coarse_of(gt)


def test_the_partners_side_comes_from_the_sidecar_unless_given(weights_pair: tuple[Path, Path]) -> None:
    from crm_cli.engine import Refiner

    main, partner = weights_pair
    assert Refiner(main, "cpu", backend="torch").partner_below_side == 200
    assert Refiner(main, "cpu", backend="torch", partner_below_side=0).partner_below_side == 0
    # A partner given by the caller runs the region pass only, unless a side is given too.
    assert Refiner(main, "cpu", backend="torch", partner_model=partner).partner_below_side == 0
    assert Refiner(main, "cpu", backend="torch", partner_model=partner, partner_below_side=64).partner_below_side == 64
    # Without a partner there is nothing to hand small photos to.
    alone = Refiner(main, "cpu", backend="torch", partner_model=False, partner_below_side=500)
    assert alone.partner is None and alone.partner_below_side == 0
    with pytest.raises(ValueError, match="partner_below_side"):
        Refiner(main, "cpu", backend="torch", partner_below_side=-1)


def test_a_partner_that_cannot_load_fails_inspection_as_it_fails_the_load(weights_pair: tuple[Path, Path]) -> None:
    """crm info said "ok" for a pair whose partner's own sidecar hash no longer matched (found in review)."""
    from crm_cli.checkpoint import WeightsError, inspect_checkpoint, sha256_file, sidecar_path
    from crm_cli.engine import Refiner

    main, partner = weights_pair
    side = json.loads(sidecar_path(partner).read_text())
    side["sha256"] = "2" * 64  # the partner's own sidecar no longer vouches for it
    sidecar_path(partner).write_text(json.dumps(side))
    assert sha256_file(partner) == json.loads(sidecar_path(main).read_text())["partner"]["sha256"]
    with pytest.raises(WeightsError, match="partner.json"):
        Refiner(main, "cpu", backend="torch")
    report = inspect_checkpoint(main)
    assert report["partner"]["sha256_ok"] is True  # the pair's entry matches ...
    assert "partner.json" in report["partner"]["error"] and report["error"] == report["partner"]["error"]


def test_partner_options_follow_the_main_model(tiny_weights: Path) -> None:
    from crm_cli.engine import Refiner

    # backend="torch" was turned into "auto" for the partner of an in-memory model (found in review).
    refiner = Refiner.from_model(make_tiny_model(0), device="cpu", backend="torch", partner_model=tiny_weights,
                                 threads=1, tile_size=96)
    assert refiner.partner is not None and refiner.partner.backend == "torch"
    assert refiner.partner.runner.tile_size == refiner.runner.tile_size == 96
    with pytest.raises(TypeError, match="^partner_model: "):
        Refiner.from_model(make_tiny_model(0), device="cpu", partner_model=123)


def test_a_ray_run_checks_the_partner_before_starting_actors(weights_pair: tuple[Path, Path]) -> None:
    from crm_cli.checkpoint import WeightsError
    from crm_cli.refiner_spec import RefinerSpec

    main, partner = weights_pair
    RefinerSpec(weights=str(main)).check()
    partner.unlink()
    with pytest.raises(WeightsError, match="partner weights it names are missing"):
        RefinerSpec(weights=str(main)).check()


def test_batch_records_name_the_partners_final_stage_when_it_has_one(weights_pair: tuple[Path, Path]) -> None:
    from crm_cli.checkpoint import sidecar_path
    from crm_cli.cli.resumable import weights_identity

    main, partner = weights_pair
    before = json.loads(weights_identity(main))
    assert "partner_final_stage" not in before
    side = json.loads(sidecar_path(partner).read_text())
    side["final_stage"] = {"min_change_confidence": 0.45}
    sidecar_path(partner).write_text(json.dumps(side))
    assert json.loads(weights_identity(main)) == {**before, "partner_final_stage": {"min_change_confidence": 0.45}}


def test_json_records_say_which_weights_refined_each_image(weights_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """Photos under the sidecar's below_side (200) are the partner's: refine, batch, time and eval say so,
    and eval names both backends."""
    from typer.testing import CliRunner

    from crm_cli.cli import app

    main, _ = weights_pair
    folder = tmp_path / "set"
    folder.mkdir()
    for name, (height, width) in {"small": (150, 190), "large": (240, 256)}.items():
        image, gt = synthetic_scene(height, width, seed=height)
        cv2.imwrite(str(folder / f"{name}_im.png"), image[..., ::-1])
        cv2.imwrite(str(folder / f"{name}_gt.png"), gt)
        cv2.imwrite(str(folder / f"{name}_seg.png"), coarse_of(gt))
    common = ["-w", str(main), "--backend", "torch", "-d", "cpu", "--json"]
    runner = CliRunner()
    result = runner.invoke(app, ["eval", str(folder), *common, "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["by_partner"] == 1
    assert {image["name"]: image["by_partner"] for image in summary["images"]} == {"small": True, "large": False}
    assert summary["backend"] == summary["partner_backend"] == "torch"
    for name, by_partner in (("small", True), ("large", False)):
        out = tmp_path / f"{name}_out.png"
        result = runner.invoke(app, ["refine", str(folder / f"{name}_im.png"), str(folder / f"{name}_seg.png"),
                                     "-o", str(out), *common])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["by_partner"] is by_partner and out.is_file()
        result = runner.invoke(app, ["time", str(folder / f"{name}_im.png"), str(folder / f"{name}_seg.png"),
                                     "--repeat", "1", *common])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["by_partner"] is by_partner and report["partner_backend"] == "torch"
    # Without a partner nothing is the partner's, and no partner backend is named.
    result = runner.invoke(app, ["eval", str(folder), "-w", str(weights_pair[1]), "--backend", "torch", "-d", "cpu",
                                 "--json", "-q"])
    summary = json.loads(result.stdout)
    assert summary["by_partner"] == 0 and "partner_backend" not in summary
