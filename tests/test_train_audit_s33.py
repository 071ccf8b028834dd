"""``crm train``'s data and options as the session-33 audit found them: BIG-layout targets, the
held-out split with --val, photos without masks, a single pair, and option errors."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, synthetic_scene, write_training_pairs
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.training.data import list_pairs, pair_problems
from crm_cli.training.loop import Trainer
from crm_cli.training.options import TrainOptions


def write_pairs(root: Path, count: int, size: int = 64, skip_mask: tuple[int, ...] = ()) -> Path:
    """``count`` synthetic pairs p00.. in images/ + masks/ under ``root``, without the masks of ``skip_mask``."""
    return write_training_pairs(root, count, (size, size), skip_masks=skip_mask)


def write_big(root: Path, count: int, without_gt: tuple[int, ...] = ()) -> Path:
    """``count`` BIG-layout triples s0.. (``_im``, ``_seg``, ``_gt``) in ``root``, without the ground
    truths of ``without_gt``; each ``_seg`` is a blocky, eroded copy of its ground truth."""
    root.mkdir(parents=True)
    for k in range(count):
        image, mask = synthetic_scene(64, 64, seed=k)
        cv2.imwrite(str(root / f"s{k}_im.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / f"s{k}_seg.png"), cv2.erode(mask, np.ones((9, 9), np.uint8)))
        if k not in without_gt:
            cv2.imwrite(str(root / f"s{k}_gt.png"), mask)
    return root


def train(*args: str) -> tuple[int, str, str]:
    """Run ``crm train`` with small settings; (exit code, stdout, stderr)."""
    result = CliRunner().invoke(app, ["train", "--batch", "2", "--query-window", "32", "--init", "random",
                                      "--val-images", "2", "--steps", "1", *args])
    assert "Traceback" not in result.stderr, result.stderr
    return result.exit_code, result.stdout, result.stderr


def options(data: Path, out: Path, steps: int = 2) -> TrainOptions:
    """A tiny run's options."""
    return TrainOptions(data=str(data), out=str(out), steps=steps, batch=2, seed=3, val_every=1000, ckpt_every=1000,
                        val_images=2, arch=dict(TINY_ARCH), query_window=32, init="random")


def test_a_big_layout_folder_trains_on_its_ground_truths(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    big = write_big(tmp_path / "big", 3, without_gt=(2,))
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        pairs = list_pairs(big)
    assert [(p.name, p.image.name, p.mask.name) for p in pairs] == [("s0", "s0_im.jpg", "s0_gt.png"),
                                                                   ("s1", "s1_im.jpg", "s1_gt.png")]
    assert [r.getMessage() for r in caplog.records] == [
        f"{big}: 1 BIG-layout pair without a ground truth <name>_gt.* left out (the _seg masks are coarse masks, "
        f"not targets), e.g. {big / 's2_im.jpg'} + {big / 's2_seg.png'}"]
    # The check before the run reads the ground truth, the file the run trains on.
    cv2.imwrite(str(big / "s1_gt.png"), np.zeros((40, 64), np.uint8))  # another shape
    problems = pair_problems(list_pairs(big))
    assert len(problems) == 1 and "s1_gt.png" in problems[0]
    # --val BIG validates on the ground truths too, and crm train on such a folder says what it left out.
    cv2.imwrite(str(big / "s1_gt.png"), synthetic_scene(64, 64, seed=1)[1])
    data = write_pairs(tmp_path / "d", 4)
    trainer = Trainer(options(data, tmp_path / "r"), val_pairs=list_pairs(big))
    assert [p.mask.name for p in trainer.val_pairs] == ["s0_gt.png", "s1_gt.png"]
    code, _, stderr = train("--data", str(big), "--out", str(tmp_path / "run"))
    assert code == 0, stderr
    assert "1 BIG-layout pair without a ground truth" in stderr and "training mobilenet_v2 on 1 pairs" in stderr


def test_a_big_layout_folder_without_ground_truths_is_a_usage_error(tmp_path: Path) -> None:
    big = write_big(tmp_path / "big", 2, without_gt=(0, 1))
    code, stdout, stderr = train("--data", str(big), "--out", str(tmp_path / "run"))
    assert code == 2 and stdout == ""
    first = stderr.splitlines()[0]
    assert first.startswith("error: ") and "--data" in first and "<name>_gt" in first, stderr
    assert not (tmp_path / "run").exists()


def test_val_dir_holds_no_training_pair_out(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", 21)
    val = write_pairs(tmp_path / "v", 2)
    trainer = Trainer(options(data, tmp_path / "r"), val_pairs=list_pairs(val))
    assert [p.name for p in trainer.cache.pairs] == [f"p{k:02d}" for k in range(21)]
    assert [p.name for p in trainer.val_pairs] == ["p00", "p01"] and trainer.val_pairs[0].image.parent.parent == val
    held = Trainer(options(data, tmp_path / "h"))  # without --val, every 20th pair is held out, as before
    assert [p.name for p in held.cache.pairs] == [f"p{k:02d}" for k in range(1, 20)]
    assert [p.name for p in held.val_pairs] == ["p00", "p20"]
    code, _, stderr = train("--data", str(data), "--out", str(tmp_path / "run"), "--val", str(val))
    assert code == 0 and "training mobilenet_v2 on 21 pairs" in stderr, stderr


def test_resume_keeps_the_split_its_run_started_with(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", 21)
    val = list_pairs(write_pairs(tmp_path / "v", 2))
    everything = [f"p{k:02d}" for k in range(21)]
    # A run of this version with --val trains on every pair, resumed too; without --val it is refused.
    new = Trainer(options(data, tmp_path / "new"), val_pairs=val)
    new.train_step()
    new.save_checkpoint()
    assert torch.load(new.checkpoint_path, weights_only=True)["splits"] is False
    resumed = Trainer(options(data, tmp_path / "new"), val_pairs=val)
    assert resumed.resume() and [p.name for p in resumed.cache.pairs] == everything
    with pytest.raises(ValueError, match="trained on every pair .* resume with the same --val"):
        Trainer(options(data, tmp_path / "new")).resume()
    # A checkpoint from before (no "splits") held every 20th pair out with --val as well: a resumed run
    # keeps doing so, and replays the straight run's batches.
    straight = Trainer(options(data, tmp_path / "straight"), val_pairs=val)
    straight.use_training_pairs(straight.cache.pairs[1:20])  # the old run's training pairs
    old = Trainer(options(data, tmp_path / "old"), val_pairs=val)
    old.use_training_pairs(old.cache.pairs[1:20])
    for trainer in (straight, old):
        trainer.train_step()
    old.save_checkpoint()
    payload = torch.load(old.checkpoint_path, weights_only=True)
    del payload["splits"]
    torch.save(payload, old.checkpoint_path)
    resumed = Trainer(options(data, tmp_path / "old"), val_pairs=val)
    assert [p.name for p in resumed.cache.pairs] == everything  # before resuming: this version's split
    assert resumed.resume() and [p.name for p in resumed.cache.pairs] == everything[1:20]
    assert resumed.val_pairs == val
    straight.train_step()
    resumed.train_step()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_photos_without_masks_are_counted_in_one_warning(tmp_path: Path) -> None:
    data = write_pairs(tmp_path / "d", 20, skip_mask=(6,))
    val = write_pairs(tmp_path / "v", 3, skip_mask=(0, 2))
    code, _, stderr = train("--data", str(data), "--out", str(tmp_path / "run"), "--val", str(val))
    assert code == 0, stderr
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {data}: 1 photo without a mask left out, e.g. {data / 'images' / 'p06.jpg'}: no mask p06.* or "
        f"p06_mask.* (or .mask, -mask, _matte, .matte, -matte) under {data / 'masks'}",
        f"warning: {val}: 2 photos without a mask left out, e.g. {val / 'images' / 'p00.jpg'}: no mask p00.* or "
        f"p00_mask.* (or .mask, -mask, _matte, .matte, -matte) under {val / 'masks'}"]
    assert "training mobilenet_v2 on 19 pairs" in stderr


def test_a_single_pair_is_a_usage_error_before_the_model_loads(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.training import loop

    built: list[object] = []
    monkeypatch.setattr(loop, "initial_model", lambda *args: built.append(args))
    data = write_pairs(tmp_path / "one", 1)
    out = tmp_path / "run"
    code, stdout, stderr = train("--data", str(data), "--out", str(out))
    assert code == 2 and stdout == "" and built == []
    first = stderr.splitlines()[0]
    assert first.startswith("error: ") and "--data" in first, stderr
    assert "its only pair is held out for validation" in stderr and "--val FOLDER" in stderr
    assert not out.exists()
    with pytest.raises(ValueError, match="its only pair is held out"):  # the library refuses it as well
        Trainer(options(data, out))


@pytest.mark.parametrize(("option", "value"), [("--lr", "-1"), ("--lr", "0"), ("--lr", "inf"), ("--seed", "-1"),
                                               ("--seed", str(2**44 + 1)), ("--zoom", "inf"),
                                               ("--boundary-weight", "inf"), ("--val-set", "x=EMPTY")])
def test_option_errors_exit_2_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     option: str, value: str) -> None:
    from crm_cli.training import loop

    built: list[object] = []
    monkeypatch.setattr(loop, "initial_model", lambda *args: built.append(args))
    data = write_pairs(tmp_path / "d", 3)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    code, stdout, stderr = train("--data", str(data), "--out", str(out), option,
                                 value.replace("EMPTY", str(tmp_path / "empty")))
    assert code == 2 and stdout == "" and built == [], stderr
    first = stderr.splitlines()[0]
    assert first.startswith("error: ") and option in first, stderr
    assert not out.exists()
