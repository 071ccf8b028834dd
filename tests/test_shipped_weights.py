"""The weights files the repository ships: each loads strictly against its sidecar's hashes, the
default's partner is the previous default, and that one is exactly the blend its provenance names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crm_cli.checkpoint import DEFAULT_WEIGHTS_NAME, inspect_checkpoint, sha256_file

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = sorted(WEIGHTS.glob("*.safetensors")) + sorted((WEIGHTS / "candidates").glob("*.safetensors"))


BLEND = WEIGHTS / "crm_mobilenet_v2_blend.safetensors"  # the default of sessions 27-42, the default's partner


def test_the_default_and_the_previous_defaults_are_shipped() -> None:
    names = {path.name for path in SHIPPED}
    assert DEFAULT_WEIGHTS_NAME in names
    # The previous defaults stay loadable under their names.
    assert {"crm_mobilenet_v2.safetensors", BLEND.name} <= names


def test_the_defaults_partner_is_the_previous_default_for_photos_under_1000_px() -> None:
    from crm_cli.checkpoint import partner_weights

    entry = partner_weights(WEIGHTS / DEFAULT_WEIGHTS_NAME)
    assert entry is not None
    assert entry.path == BLEND and entry.sha256 == sha256_file(BLEND) and entry.below_side == 1000
    report = inspect_checkpoint(WEIGHTS / DEFAULT_WEIGHTS_NAME)
    assert report["partner"] == {"path": str(BLEND), "below_side": 1000, "sha256_ok": True, "error": None}
    # The default itself is session 40's GPU run (12,695 steps from ImageNet) averaged with a quarter of its
    # continuation on thin composites (session 47's run M).
    assert "12695" in report["provenance"]["notes"] and "make_thin_train.py" in report["provenance"]["data"]


def test_the_defaults_lone_stage_weights_are_run_hs_step_7500_with_their_own_final_stage() -> None:
    from crm_cli.checkpoint import lone_stage_weights, read_spec

    lone = WEIGHTS / "crm_mobilenet_v2_lone_stage.safetensors"
    entry = lone_stage_weights(WEIGHTS / DEFAULT_WEIGHTS_NAME)
    assert entry is not None and entry.path == lone and entry.sha256 == sha256_file(lone)
    report = inspect_checkpoint(WEIGHTS / DEFAULT_WEIGHTS_NAME)["lone_stage"]
    assert report["path"] == str(lone) and report["sha256_ok"] is True and report["error"] is None
    # Their certainty and gate (session 70), over the defaults' enlargement and mirroring.
    assert report["final_stage"] == {"scale": 1.5, "enlarge_max_pixels": 2_500_000, "mirror_max_pixels": 1_000_000,
                                     "min_change_confidence": 0.4, "final_only_certainty": 0.7}
    _, provenance = read_spec(lone)
    assert provenance["steps"] == 7500 and "run H" in provenance["notes"]
    # The lone-stage weights name no partner or lone stage of their own: the Refiner would not follow them.
    assert inspect_checkpoint(lone)["partner"] is None and inspect_checkpoint(lone)["lone_stage"] is None


def test_the_default_is_the_average_its_provenance_names(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from crm_cli.training.averaging import average_checkpoints

    default = WEIGHTS / DEFAULT_WEIGHTS_NAME
    provenance = inspect_checkpoint(default)["provenance"]
    parents = re.findall(r"(\S+\.safetensors) sha256=([0-9a-f]{64}) x([0-9.]+)", provenance["init"])
    assert [(name, weight) for name, _, weight in parents] == [
        ("crm_mobilenet_v2_gpu40_paper.safetensors", "0.75"), ("crm_mobilenet_v2_gpu40_composites.safetensors", "0.25")]
    paths = {path.name: path for path in SHIPPED}
    for name, digest, _ in parents:
        assert sha256_file(paths[name]) == digest  # both parents ship (the tuned one as a candidate)
    # The shipped file's provenance was rewritten (no scratch paths), so compare tensors, not bytes.
    remade = tmp_path / "remade.safetensors"
    average_checkpoints(paths[parents[0][0]], paths[parents[1][0]], 0.25, remade)
    expected, shipped = load_file(remade), load_file(default)
    assert expected.keys() == shipped.keys()
    differing = [key for key in shipped if not (expected[key].dtype == shipped[key].dtype
                                                and expected[key].equal(shipped[key]))]
    assert differing == []


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda path: path.name)
def test_each_shipped_file_loads_strictly_and_matches_its_sidecar(weights: Path) -> None:
    report = inspect_checkpoint(weights, build=True)
    assert report["error"] is None, report["error"]
    assert report["sha256_ok"] is True  # every shipped file has a sidecar hash, and it matches
    assert report["config"] and report["provenance"].get("command")  # self-describing
    if weights.parent == WEIGHTS:  # the candidates are for comparison; only shipped ones need the CPU backend
        assert report["onnx"] is not None and report["onnx"]["sha256_ok"] and report["onnx"]["used"]


def test_the_partner_is_the_blend_its_provenance_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.training.averaging import average_checkpoints

    default = BLEND
    provenance = inspect_checkpoint(default)["provenance"]
    # "<base> sha256=<hex> x0.75 + <tuned> sha256=<hex> x0.25"
    parents = re.findall(r"(\S+\.safetensors) sha256=([0-9a-f]{64}) x([0-9.]+)", provenance["init"])
    assert [weight for _, _, weight in parents] == ["0.75", "0.25"]
    paths = {path.name: path for path in SHIPPED}
    for name, digest, _ in parents:
        assert sha256_file(paths[name]) == digest  # the parents shipped are the ones averaged
    # README's command, run from the repository's root as it is written, remakes the file byte for byte.
    monkeypatch.chdir(WEIGHTS.parent)
    base, tuned = (paths[name].relative_to(WEIGHTS.parent) for name, _, _ in parents)
    assert provenance["command"] == f"python -m crm_cli.training.averaging {base} {tuned} --alpha 0.25"
    assert average_checkpoints(base, tuned, 0.25, tmp_path / "remade.safetensors") == sha256_file(default)
