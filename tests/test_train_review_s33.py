"""Review of the session-33 training changes: --val-set BIG folders score against their ground truths,
one rule (and warning) for BIG-layout pairs without a ground truth, --device cuda:N under torchrun,
infinite float options, the resumed split's advice, and the --device default."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import flat, write_scene_files
from test_train_audit_s33 import options, train, write_big, write_pairs
from typer.testing import CliRunner

from crm_cli import pairing
from crm_cli.cli import app
from crm_cli.cli import options as cli_options
from crm_cli.training import distributed, loop, validation
from crm_cli.training.data import NoTrainingPairsError, list_pairs
from crm_cli.training.distributed import training_device
from crm_cli.training.loop import Trainer
from crm_cli.training.options import TrainOptions


def test_a_val_set_big_folder_without_ground_truths_is_a_usage_error(tmp_path: Path, no_model: list[object]) -> None:
    data = write_pairs(tmp_path / "d", 3)
    big = write_big(tmp_path / "big", 2, without_gt=(0, 1))
    out = tmp_path / "run"
    code, stdout, stderr = train("--data", str(data), "--out", str(out), "--val-set", f"thin={big}")
    assert code == 2 and stdout == "" and no_model == [], stderr
    assert flat(stderr).startswith(
        f"error: --val-set thin: no BIG-layout photo under {big} has its ground truth <name>_gt.* beside it, e.g. "
        f"{big / 's0_im.jpg'}: a BIG-layout set is scored against its _gt masks (the _seg ones are the coarse masks "
        "it refines)"), stderr
    assert not out.exists()
    with pytest.raises(pairing.NoPairsError, match="--val-set thin: no BIG-layout photo"):  # the library too
        validation.folder_set(big, "thin", 2, None)


def test_a_val_set_big_pair_without_its_ground_truth_is_left_out_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    big = write_big(tmp_path / "big", 3, without_gt=(1,))
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        pairs = validation.val_set_pairs("thin", big)
    assert [(p.name, p.mask.name, p.gt.name if p.gt else None) for p in pairs] == [
        ("s0", "s0_seg.png", "s0_gt.png"), ("s2", "s2_seg.png", "s2_gt.png")]
    assert [r.getMessage() for r in caplog.records] == [
        f"--val-set thin: {big}: 1 BIG-layout pair without a ground truth <name>_gt.* left out, e.g. "
        f"{big / 's1_im.jpg'} + {big / 's1_seg.png'}"]
    # The set refines the triples' own coarse masks and scores them against their ground truths.
    scored = validation.folder_set(big, "thin", 5, (1.0,), pairs)
    assert [sample.name for sample in scored.samples] == ["s0", "s2"] and scored.ratios == (1.0,)
    # An images/ + masks/ set has no ground truths to miss: its masks are its targets, as before.
    plain = write_pairs(tmp_path / "plain", 2)
    assert [p.name for p in validation.val_set_pairs("plain", plain)] == ["p00", "p01"]


def test_eval_and_training_share_the_ground_truth_rule(tmp_path: Path) -> None:
    big = write_big(tmp_path / "big", 3, without_gt=(0, 2))
    found = pairing.scan_pairs(big)
    with_gt, notes = pairing.ground_truth_pairs(found, big, "not scored", "needed")
    assert [p.name for p in with_gt] == ["s1"]
    assert notes == [
        f"{big}: 2 BIG-layout pairs without a ground truth <name>_gt.* not scored, e.g. {big / 's0_im.jpg'} + "
        f"{big / 's0_seg.png'}"]
    plain = pairing.scan_pairs(write_pairs(tmp_path / "plain", 2))
    assert pairing.ground_truth_pairs(plain, plain, "not scored", "needed") == (plain.pairs, [])
    # None with a ground truth: refused with the caller's reason, or left to the caller (crm eval).
    none = write_big(tmp_path / "none", 2, without_gt=(0, 1))
    with pytest.raises(pairing.NoPairsError) as caught:
        pairing.ground_truth_pairs(pairing.scan_pairs(none), none, "left out", "scored against them")
    assert str(caught.value) == (f"no BIG-layout photo under {none} has its ground truth <name>_gt.* beside it, e.g. "
                                 f"{none / 's0_im.jpg'}: scored against them")
    assert pairing.ground_truth_pairs(pairing.scan_pairs(none), none, "not scored", None) == ([], [
        f"{none}: 2 BIG-layout pairs without a ground truth <name>_gt.* not scored, e.g. {none / 's0_im.jpg'} + "
        f"{none / 's0_seg.png'}"])


def test_cuda_n_under_torchrun_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                no_model: list[object]) -> None:
    def no_group(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a process group was started")

    monkeypatch.setattr(torch.distributed, "init_process_group", no_group)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    data = write_pairs(tmp_path / "d", 3)
    code, stdout, stderr = train("--data", str(data), "--out", str(tmp_path / "run"), "-d", "CUDA:1")
    assert code == 2 and stdout == "" and no_model == [], stderr
    assert flat(stderr).startswith(
        "error: Invalid value for '-d' / '--device': under torchrun each process trains on the GPU of its "
        "LOCAL_RANK; use --device cuda or auto, not --device cuda:1"), stderr
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="not --device cuda:0"):  # the library refuses it too, before any GPU
        training_device("cuda:0")
    assert distributed.torchrun_device_problem("cuda") is None and distributed.torchrun_device_problem("auto") is None
    monkeypatch.setenv("WORLD_SIZE", "1")  # alone, a GPU index is the user's choice
    assert distributed.torchrun_device_problem("cuda:1") is None


@pytest.mark.parametrize("option", ["--max-minutes", "--lr", "--zoom", "--boundary-weight"])
def test_infinite_float_options_exit_2_before_the_model_loads(tmp_path: Path, no_model: list[object],
                                                              option: str) -> None:
    data = write_pairs(tmp_path / "d", 3)
    code, stdout, stderr = train("--data", str(data), "--out", str(tmp_path / "run"), option, "inf")
    assert code == 2 and stdout == "" and no_model == [], stderr
    assert stderr.splitlines()[0] == f"error: Invalid value for '{option}': inf is not a finite number", stderr
    assert not (tmp_path / "run").exists()


def test_coco_min_area_refuses_infinity(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_scene_files(images, "im", "seg")
    annotations = tmp_path / "coco.json"
    annotations.write_text(json.dumps({"images": [{"id": 1, "file_name": "im.jpg", "height": 96, "width": 128}],
                                       "annotations": []}))
    result = CliRunner().invoke(app, ["coco", str(annotations), "-i", str(images), "-o", str(tmp_path / "o.json"),
                                      "--min-area", "inf"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[0] == "error: Invalid value for '--min-area': inf is not a finite number"
    assert not (tmp_path / "o.json").exists()


def test_a_resumed_split_that_leaves_nothing_to_train_on_says_why(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", 1)
    val = list_pairs(write_pairs(tmp_path / "v", 2))
    # A checkpoint from before --val stopped the split (no "splits"): it held the only pair out.
    first = Trainer(options(data, tmp_path / "old"), val_pairs=val)
    first.save_checkpoint()
    payload = torch.load(first.checkpoint_path, weights_only=True)
    del payload["splits"]
    torch.save(payload, first.checkpoint_path)
    with pytest.raises(NoTrainingPairsError) as caught:
        Trainer(options(data, tmp_path / "old"), val_pairs=val).resume()
    assert str(caught.value) == (
        f"{data}: its only pair is held out for validation (the checkpoint resumed from held every 20th pair out "
        "even with --val, as runs did before --val stopped the split, and a resumed run keeps its split), leaving "
        "none to train on; add pairs, or start a new run in another --out")
    assert "holds_out" not in vars(first)


def test_the_device_default_is_a_device_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def stop(self: Trainer, options: TrainOptions, **kwargs: object) -> None:
        seen.append(options.device)
        raise ValueError("stopped here")

    monkeypatch.setattr(loop.Trainer, "__init__", stop)
    monkeypatch.delenv("CRM_DEVICE", raising=False)
    code, _, stderr = train("--data", str(write_pairs(tmp_path / "d", 3)), "--out", str(tmp_path / "run"))
    assert code == 1 and "stopped here" in stderr and seen == ["auto"]
    assert not hasattr(cli_options, "Device") and not hasattr(cli_options, "DeviceName")  # --device is a plain str
    assert cli_options.parse_device("AUTO") == "auto"
