"""Training: coarse-mask synthesis, loss terms, schedule, exact resume and a tiny end-to-end run."""

from __future__ import annotations

import csv
import json
import math
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, synthetic_scene, write_training_pairs
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.training.coarse import mask_iou, synthesize_coarse
from crm_cli.training.logs import TRAIN_COLUMNS
from crm_cli.training.loop import RunEnd, Trainer
from crm_cli.training.loss import boundary_band, crm_loss, gradient_magnitude
from crm_cli.training.options import TrainOptions, learning_rate


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DUTS-like folder (images/, masks/) of 8 synthetic scenes, smaller than the 224 crop."""
    return write_training_pairs(tmp_path_factory.mktemp("data"), 8, lambda k: (120 + 8 * k, 150), name="s{:02d}")


def test_coarse_synthesis_reaches_its_iou_target() -> None:
    _, mask = synthetic_scene(224, 224, seed=3)
    gt = mask.astype(np.float32) / 255
    ious = []
    for seed in range(6):
        coarse = synthesize_coarse(gt, np.random.default_rng(seed))
        assert coarse.dtype == np.float32 and set(np.unique(coarse)) <= {0.0, 1.0}
        ious.append(mask_iou(coarse > 0.5, gt > 0.5))
    assert max(ious) < 1.0 and min(ious) > 0.5
    same = synthesize_coarse(gt, np.random.default_rng(0))
    np.testing.assert_array_equal(same, synthesize_coarse(gt, np.random.default_rng(0)))


def test_loss_terms_match_hand_computed_values() -> None:
    logits = torch.zeros(1, 8, 8)
    gt = torch.ones(1, 8, 8)
    total, terms = crm_loss(logits, gt)
    assert terms["bce"] == pytest.approx(math.log(2), abs=1e-6)
    assert terms["l1"] == pytest.approx(0.5) and terms["l2"] == pytest.approx(0.25)
    assert terms["grad"] == pytest.approx(0.0, abs=1e-7)  # both maps are flat
    assert float(total) == pytest.approx(math.log(2) + 0.25 + 0.125, abs=1e-6)
    flat = gradient_magnitude(torch.full((1, 5, 5), 0.3))
    torch.testing.assert_close(flat, torch.full((1, 5, 5), 0.01))
    ramp = torch.arange(7.0).view(1, 1, 7).expand(1, 7, 7).contiguous()
    # Interior of a unit ramp along x: box blur keeps it, Sobel/4 gives gx = 2, gy = 0.
    assert gradient_magnitude(ramp)[0, 3, 3].item() == pytest.approx(math.sqrt(4 + 1e-4), rel=1e-5)


def test_boundary_band_holds_the_pixels_within_its_radius_of_the_edge() -> None:
    gt = torch.zeros(1, 8, 8)
    gt[:, :, :4] = 1.0  # the edge lies between columns 3 and 4
    expected = torch.zeros(1, 8, 8)
    expected[:, :, 3:5] = 1.0
    torch.testing.assert_close(boundary_band(gt, radius=1), expected)
    expected[:, :, 1:7] = 1.0
    torch.testing.assert_close(boundary_band(gt, radius=3), expected)
    # One side only, even against the crop's border: no boundary.
    assert boundary_band(torch.ones(1, 5, 5)).sum() == 0


def test_boundary_weight_reweighs_the_per_pixel_terms_only() -> None:
    gt = torch.zeros(1, 8, 8)
    gt[:, :, :4] = 1.0
    logits = (gt * 2 - 1) * 30  # right everywhere ...
    logits[:, :, 0] = 0.0  # ... but unsure in column 0, outside the radius-3 band (columns 1-6)
    _, plain = crm_loss(logits, gt)
    _, weighted = crm_loss(logits, gt, boundary_weight=4.0)
    # Per row: 8 pixels of weight 1 against 2 of weight 1 and 6 of weight 5; column 0's error counts once.
    assert plain["l1"] == pytest.approx(0.5 / 8, rel=1e-5)
    assert weighted["l1"] == pytest.approx(0.5 / 32, rel=1e-5)
    assert weighted["l2"] == pytest.approx(0.25 / 32, rel=1e-5)
    assert weighted["bce"] == pytest.approx(math.log(2) / 32, rel=1e-4)
    assert weighted["grad"] == plain["grad"]
    # The same error inside the band (column 3) now weighs 5 of 32.
    logits = (gt * 2 - 1) * 30
    logits[:, :, 3] = 0.0
    assert crm_loss(logits, gt, boundary_weight=4.0)[1]["l1"] == pytest.approx(0.5 * 5 / 32, rel=1e-5)


def test_learning_rate_steps_down_at_half_and_five_sixths() -> None:
    assert learning_rate(0, 600, 1.0) == 1.0
    assert learning_rate(299, 600, 1.0) == 1.0
    assert learning_rate(300, 600, 1.0) == pytest.approx(0.1)
    assert learning_rate(500, 600, 1.0) == pytest.approx(0.01)


def _options(data: Path, out: Path, steps: int) -> TrainOptions:
    return TrainOptions(data=str(data), out=str(out), encoder="mobilenet_v2", steps=steps, batch=2, seed=7,
                        val_every=1000, ckpt_every=1000, val_images=2, arch=dict(TINY_ARCH, dropout=0.2),
                        query_window=96)


def test_resume_is_exact(tiny_dataset: Path, tmp_path: Path) -> None:
    straight = Trainer(_options(tiny_dataset, tmp_path / "a", 4))
    for _ in range(4):
        straight.train_step()

    first = Trainer(_options(tiny_dataset, tmp_path / "b", 4))
    for _ in range(2):
        first.train_step()
    first.save_checkpoint()
    resumed = Trainer(_options(tiny_dataset, tmp_path / "b", 4))
    assert resumed.resume() and resumed.step == 2
    for _ in range(2):
        resumed.train_step()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # And training did change the weights.
    fresh = Trainer(_options(tiny_dataset, tmp_path / "c", 4))
    assert any(not torch.equal(v, fresh.model.state_dict()[k]) for k, v in straight.model.state_dict().items())


def test_pairs_given_to_the_trainer_are_taken_as_list_pairs_gives_them(tiny_dataset: Path, tmp_path: Path) -> None:
    from crm_cli.training.data import list_pairs

    listed = list_pairs(tiny_dataset)
    given = Trainer(_options(tiny_dataset, tmp_path / "g", 2), data_pairs=listed[::-1])  # unsorted
    walked = Trainer(_options(tiny_dataset, tmp_path / "w", 2))
    assert given.cache.pairs == walked.cache.pairs and given.val_pairs == walked.val_pairs
    with pytest.raises(FileNotFoundError, match="no image/mask pairs"):
        Trainer(_options(tiny_dataset, tmp_path / "e", 2), data_pairs=[])


def test_frozen_encoder_keeps_its_weights_and_statistics(tiny_dataset: Path, tmp_path: Path) -> None:
    options = _options(tiny_dataset, tmp_path / "f", 2)
    options.freeze_encoder = True
    trainer = Trainer(options)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step()
    trainer.train_step()
    after = trainer.model.state_dict()
    encoder_keys = [k for k in before if k.startswith("encoder.")]
    assert any(k.endswith("running_mean") for k in encoder_keys)
    for key in encoder_keys:
        assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(("fusion.", "decoder.")))
    trainer.save_checkpoint()
    unfrozen = _options(tiny_dataset, tmp_path / "f", 3)
    with pytest.raises(ValueError, match="--freeze-encoder True.*resume with the same objective"):
        Trainer(unfrozen).resume()


def test_worker_processes_make_the_same_batches(tiny_dataset: Path, tmp_path: Path) -> None:
    from crm_cli.training.loader import step_batch

    options = _options(tiny_dataset, tmp_path / "w", 5)
    options.workers = 2
    trainer = Trainer(options)
    trainer.step = 2  # as after a resume: the batches start at the step reached
    made = [item.batch for item in trainer.batches()]
    assert len(made) == 3
    for step, batch in zip(range(2, 5), made, strict=True):
        expected = step_batch(trainer.cache, options.seed, step, options.batch, mix=trainer.mix)
        for got, want in zip(batch, expected, strict=True):
            assert got.shape == want.shape and torch.equal(got, want)
    assert not torch.equal(made[0][0], made[1][0])  # each step draws its own crops


def test_time_limit_stops_with_checkpoint_and_weights_then_resume_finishes_exactly(tiny_dataset: Path,
                                                                                 tmp_path: Path) -> None:
    straight = Trainer(_options(tiny_dataset, tmp_path / "a", 3))
    assert straight.run() is RunEnd.FINISHED and straight.step == 3

    limited_options = _options(tiny_dataset, tmp_path / "b", 3)
    limited_options.max_minutes = 1e-9  # already out of time after the first step
    limited = Trainer(limited_options)
    assert limited.run() is RunEnd.TIME_LIMIT and limited.step == 1
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 1
    assert (tmp_path / "b" / "model.safetensors").exists()
    assert [json.loads(line)["step"] for line in (tmp_path / "b" / "val.jsonl").read_text().splitlines()] == [1]

    resumed = Trainer(_options(tiny_dataset, tmp_path / "b", 3))
    assert resumed.resume() and resumed.run() is RunEnd.FINISHED and resumed.step == 3
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert len((tmp_path / "b" / "log.csv").read_text().strip().splitlines()) == 4  # header + 3 steps


def test_keep_exports_keeps_each_validations_weights(tiny_dataset: Path, tmp_path: Path) -> None:
    from crm_cli.checkpoint import read_spec
    from crm_cli.training.loop import step_export_name

    options = _options(tiny_dataset, tmp_path / "k", 4)
    options.val_every, options.keep_exports = 2, True
    trainer = Trainer(options)
    assert trainer.run() is RunEnd.FINISHED
    kept = sorted(p.name for p in (tmp_path / "k").glob("model_step*.safetensors"))
    assert kept == ["model_step000002.safetensors", "model_step000004.safetensors"] == [
        step_export_name(2), step_export_name(4)]
    assert [read_spec(tmp_path / "k" / name)[1]["steps"] for name in kept] == [2, 4]
    # The last one is the run's model.safetensors, tensor for tensor.
    from safetensors.torch import load_file

    last, final = load_file(tmp_path / "k" / kept[-1]), load_file(tmp_path / "k" / "model.safetensors")
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in last)
    # Without the option only model.safetensors is written.
    plain = _options(tiny_dataset, tmp_path / "p", 2)
    plain.val_every = 1
    Trainer(plain).run()
    assert not list((tmp_path / "p").glob("model_step*"))


def test_stop_at_ends_early_on_the_full_schedule_and_resume_finishes_exactly(tiny_dataset: Path,
                                                                           tmp_path: Path) -> None:
    straight = Trainer(_options(tiny_dataset, tmp_path / "a", 4))
    assert straight.run() is RunEnd.FINISHED

    stopped_options = _options(tiny_dataset, tmp_path / "b", 4)
    stopped_options.stop_at = 2
    stopped = Trainer(stopped_options)
    assert stopped.run() is RunEnd.STOP_AT and stopped.step == 2
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 2
    from crm_cli.checkpoint import read_spec

    assert read_spec(tmp_path / "b" / "model.safetensors")[1]["steps"] == 2
    # The first two steps of the 4-step run, learning rate and losses alike: step 2 (index 1) still
    # runs at the base rate, where a 2-step schedule has passed both of its decays (at int(0.5 * 2) and
    # int(0.83 * 2), both 1).
    def logged(run: str) -> list[dict[str, str]]:
        rows = list(csv.DictReader((tmp_path / run / "log.csv").open()))
        return [{key: row[key] for key in TRAIN_COLUMNS if key != "seconds"} for row in rows]

    assert logged("b") == logged("a")[:2]
    assert float(logged("b")[1]["lr"]) == pytest.approx(stopped_options.lr)
    assert learning_rate(1, 2, stopped_options.lr) == pytest.approx(stopped_options.lr * 0.01)

    resumed = Trainer(_options(tiny_dataset, tmp_path / "b", 4))  # no stop_at: on to step 4
    assert resumed.resume() and resumed.run() is RunEnd.FINISHED and resumed.step == 4
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_validation_samples_are_built_once_and_score_as_fresh_ones(tiny_dataset: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner
    from crm_cli.evaluation import evaluate
    from crm_cli.training import loop
    from crm_cli.training.data import list_pairs, synthetic_samples
    from crm_cli.training.validation import ValidationSet

    calls = []

    def counting_sets(*args: object) -> list[ValidationSet]:
        calls.append(args)
        return build_sets(*args)

    build_sets = loop.validation_sets
    monkeypatch.setattr(loop, "validation_sets", counting_sets)
    options = _options(tiny_dataset, tmp_path / "v", 1)
    options.val_sets = [f"again={tiny_dataset}"]
    trainer = Trainer(options)
    first = trainer.validate()
    second = trainer.validate()
    assert len(calls) == 1
    assert first == second
    assert set(first) == {prefix + key for prefix in ("", "again_")
                          for key in ("coarse_iou", "coarse_mba", "refined_iou", "refined_mba")}
    # The cached samples score exactly as samples read afresh at each validation did.
    refiner = Refiner.from_model(trainer.model, device="cpu")
    fresh = evaluate(refiner, synthetic_samples(trainer.val_pairs), ratios=(1.0,)).scores()
    fresh.update(evaluate(refiner, synthetic_samples(list_pairs(tiny_dataset)[:2]), ratios=(1.0,)).scores("again_"))
    assert fresh == first


def test_resume_with_other_validation_sets_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    options = _options(tiny_dataset, tmp_path / "r", 1)
    options.val_sets = [f"keep={tiny_dataset}", f"gone={tiny_dataset}"]
    Trainer(options).run()
    assert "gone_refined_mba" in (tmp_path / "r" / "log.csv").read_text().splitlines()[0]
    same = _options(tiny_dataset, tmp_path / "r", 1)
    same.val_sets = [f"gone={tiny_dataset}", f"keep={tiny_dataset}"]  # order does not matter
    assert Trainer(same).resume()
    changed = _options(tiny_dataset, tmp_path / "r", 1)
    changed.val_sets = [f"keep={tiny_dataset}", f"new={tiny_dataset}"]
    with pytest.raises(ValueError, match=r"validates on sets keep, gone, but this one is without gone and with new "
                                         r"new; resume with the same --val-set names"):
        Trainer(changed).resume()
    assert len((tmp_path / "r" / "log.csv").read_text().splitlines()) == 2  # header + step 1: nothing appended
    # Without a checkpoint to resume from, the run is a new one: it starts a new log of its own sets.
    (tmp_path / "r" / "last.pt").unlink()
    assert Trainer(changed).run() is RunEnd.FINISHED
    header = (tmp_path / "r" / "log.csv").read_text().splitlines()[0]
    assert "new_refined_mba" in header and "gone_refined_mba" not in header


def test_a_validation_folder_is_walked_once(tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import pairing
    from crm_cli.training.data import list_pairs, synthetic_samples
    from crm_cli.training.validation import folder_set

    expected = [sample.name for sample in synthetic_samples(list_pairs(tiny_dataset)[:3])]
    walks: list[Path] = []
    scan_pairs = pairing.scan_pairs

    def counting(root: Path, exclude: Path | None = None, **options: str) -> pairing.Pairing[pairing.FilePair]:
        walks.append(root)
        return scan_pairs(root, exclude, **options)

    monkeypatch.setattr(pairing, "scan_pairs", counting)
    found = folder_set(tiny_dataset, "again", 3, None)
    assert walks == [tiny_dataset]
    assert [sample.name for sample in found.samples] == expected and found.ratios == (1.0,)


def test_train_command_end_to_end(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_dataset), "--out", str(out), "--steps", "3", "--batch", "2",
            "--val-every", "3", "--ckpt-every", "2", "--query-window", "64"]
    # The CLI builds the real mobilenet_v2 preset; a 3-step run at batch 2 keeps it quick.
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("last.pt", "log.csv", "val.jsonl", "model.safetensors", "model.json"):
        assert (out / name).exists(), name
    assert len((out / "log.csv").read_text().strip().splitlines()) == 4  # header + 3 steps
    from crm_cli.engine import Refiner

    refiner = Refiner(out / "model.safetensors", device="cpu")
    assert refiner.weights_info.provenance["steps"] == 3
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2  # an existing run needs --resume


def test_train_command_with_workers_and_a_time_limit(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_dataset), "--out", str(out), "--steps", "3", "--batch", "2",
            "--query-window", "32", "--workers", "1", "--max-minutes", "1e-9"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "stopped at step 1 of 3 (--max-minutes 1e-09)" in result.output and "--resume" in result.output
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 1
    assert (out / "model.safetensors").exists()
    done = CliRunner().invoke(app, [*args[:-2], "--resume"])
    assert done.exit_code == 0, done.output
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3


def test_train_command_stop_at_says_why_it_stopped(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_dataset), "--out", str(out), "--steps", "3", "--batch", "2",
            "--query-window", "32", "--stop-at", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "stopped at step 1 of 3 (--stop-at 1)" in result.output
    assert torch.load(out / "last.pt", weights_only=True)["options"]["stop_at"] == 1
    assert (out / "model.safetensors").exists()
    assert CliRunner().invoke(app, [*args[:-2], "--stop-at", "0", "--resume"]).exit_code == 0
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3
    bad = CliRunner().invoke(app, [*args[:-1], "-1"])
    assert bad.exit_code == 2


def test_train_command_refuses_network_mode_without_masks(tiny_dataset: Path, tmp_path: Path) -> None:
    args = ["train", "--data", str(tiny_dataset), "--out", str(tmp_path / "run"), "--steps", "1",
            "--coarse-mix", "paper=1,network=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--network-masks" in result.output
    assert not (tmp_path / "run").exists()
    # A folder without a mask for any training pair is refused too, before any step.
    empty = tmp_path / "no-masks"
    empty.mkdir()
    from crm_cli.training.loop import Trainer
    from crm_cli.training.options import TrainOptions

    options = TrainOptions(data=str(tiny_dataset), out=str(tmp_path / "run"), steps=1, arch=dict(TINY_ARCH),
                           coarse_mix="paper=1,network=1", network_masks=[str(empty)])
    with pytest.raises(ValueError, match="no training pair has a mask"):
        Trainer(options)


def test_torchrun_ddp_two_processes_on_cpu(tiny_dataset: Path, tmp_path: Path) -> None:
    """The multi-GPU path (torchrun + DistributedDataParallel), exercised with gloo on two CPU ranks."""
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    out = tmp_path / "ddp"
    command = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "crm_cli", "train", "--data",
               str(tiny_dataset), "--out", str(out), "--steps", "2", "--batch", "2", "--val-every", "2",
               "--query-window", "32", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["step"] == 2
    assert len((out / "log.csv").read_text().strip().splitlines()) == 3  # rank 0 logs each step once



def test_a_finished_rank_exits_zero_without_teardown_and_loses_no_output() -> None:
    """crm train ends each rank of a multi-rank run with os._exit (gloo's teardown can abort a finished
    rank); what it printed last, still in a pipe's buffers, must come out first."""
    import subprocess
    import sys

    script = ("import sys; from crm_cli.cli.train import exit_without_teardown; print('done: out'); "
              "print('a warning', file=sys.stderr, end=''); exit_without_teardown(); print('never')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "done: out\n", "a warning")

# A torchrun worker: trains one Trainer in three run() calls, counting the collectives it votes with.
# Rank 1 alone runs out of time after step 1, then alone gets a SIGTERM in step 3; the third call ends
# the run. argv: options as JSON, then "straight" for one plain run() instead.
DDP_VOTES_SCRIPT = """
import json, os, signal, sys
import torch
import torch.distributed as dist
from crm_cli.training.loop import Trainer
from crm_cli.training.options import TrainOptions

torch.set_num_threads(1)
votes = []
all_reduce = dist.all_reduce

def counting(tensor, *args, **kwargs):
    votes.append(tensor.numel())
    return all_reduce(tensor, *args, **kwargs)

dist.all_reduce = counting
rank = int(os.environ["RANK"])
trainer = Trainer(TrainOptions(**json.loads(sys.argv[1])))
ends = []
if sys.argv[2:] == ["straight"]:
    ends.append(trainer.run().value)
else:
    trainer.options.max_minutes = 1e-9 if rank == 1 else 60.0
    ends.append(trainer.run().value)
    trainer.options.max_minutes = 0.0

    def sigterm_on_rank_1(step, stats):
        if rank == 1 and step == 3:
            signal.raise_signal(signal.SIGTERM)  # taken as a Ctrl-C is

    try:
        trainer.run(sigterm_on_rank_1)
    except KeyboardInterrupt:
        ends.append(f"interrupted at {trainer.step}, saved {trainer.saved_step}, by {trainer.stop_signal.name}")
    ends.append(trainer.run().value)
with open(os.path.join(trainer.options.out, f"rank{rank}.json"), "w") as handle:
    json.dump({"ends": ends, "votes": votes, "step": trainer.step}, handle)
dist.barrier()  # neither rank tears gloo down while the other still uses it (an abort at exit otherwise)
dist.destroy_process_group()
sys.stdout.flush()
os._exit(0)  # skips the interpreter's teardown of gloo's threads, which can still abort a finished rank
"""


def test_ranks_vote_once_a_step_on_ctrl_c_and_deadline_and_stop_together(tiny_dataset: Path,
                                                                         tmp_path: Path) -> None:
    """Two gloo ranks on the CPU: a deadline or a stop signal (SIGTERM, taken as a Ctrl-C is) that only
    one rank sees stops both at the same step, with that signal, through one all-reduce per step for
    both votes; the run stopped twice and resumed in
    process ends with the weights, optimiser state and losses of a straight one."""
    import shutil
    import subprocess
    import sys
    from dataclasses import asdict

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    script = tmp_path / "ddp_votes.py"
    script.write_text(DDP_VOTES_SCRIPT)
    outs = {}
    for mode in ("straight", "stopped"):
        options = _interrupt_options(tiny_dataset, tmp_path / mode)
        options.query_window = 32
        command = [torchrun, "--standalone", "--nproc_per_node", "2", str(script), json.dumps(asdict(options)),
                   *(["straight"] if mode == "straight" else [])]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        # Under load gloo can still abort a rank in its C++ teardown after both ranks wrote their
        # reports and met at the barrier (about 1 full-suite run in 2 here); the reports are checked
        # below, so only that abort, after the work, is let through.
        reported = all((tmp_path / mode / f"rank{rank}.json").exists() for rank in (0, 1))
        teardown_abort = reported and "terminate called without an active exception" in done.stderr
        assert done.returncode == 0 or teardown_abort, done.stderr[-3000:]
        outs[mode] = tmp_path / mode
    for rank in (0, 1):
        report = json.loads((outs["stopped"] / f"rank{rank}.json").read_text())
        # Rank 0 names the signal that stopped rank 1 (it exits 143 as rank 1 does, not 130).
        assert report["ends"] == ["--max-minutes", "interrupted at 3, saved " + ("3" if rank == 0 else "None")
                                  + ", by SIGTERM", "finished"]
        assert report["votes"] == [2] * 5 and report["step"] == 5  # one vote of two flags a step
        straight = json.loads((outs["straight"] / f"rank{rank}.json").read_text())
        assert straight == {"ends": ["finished"], "votes": [2] * 5, "step": 5}
    _assert_same_weights_and_optimizer(outs["stopped"], outs["straight"])
    losses = ["step", "lr", "loss", "bce", "l1", "l2", "grad"]
    assert [{k: row[k] for k in losses} for row in _log_rows(outs["stopped"])] == \
        [{k: row[k] for k in losses} for row in _log_rows(outs["straight"])]
    # The time limit's stop validates step 1 too; the Ctrl-C's stop adds none.
    for mode, steps in (("straight", [3, 5]), ("stopped", [1, 3, 5])):
        assert [json.loads(line)["step"] for line in (outs[mode] / "val.jsonl").read_text().splitlines()] == steps


# A torchrun worker: rank 0's final export is slowed down; each rank writes when it left run().
DDP_LAST_EXPORT_SCRIPT = """
import json, os, sys, time
import torch
from crm_cli.training.loop import Trainer
from crm_cli.training.options import TrainOptions

torch.set_num_threads(1)
rank = int(os.environ["RANK"])
trainer = Trainer(TrainOptions(**json.loads(sys.argv[1])))
export = trainer.export
exported = []

def slow_export(path, scores=None):
    time.sleep(2.0)
    done = export(path, scores)
    exported.append(time.time())
    return done

trainer.export = slow_export
end = trainer.run().value
left = time.time()
trainer.close()
with open(os.path.join(trainer.options.out, f"rank{rank}.json"), "w") as handle:
    json.dump({"end": end, "left_run": left, "exported": exported}, handle)
sys.stdout.flush()
os._exit(0)  # as in DDP_VOTES_SCRIPT: no interpreter teardown of gloo's threads
"""


def test_no_rank_leaves_the_run_before_rank_0_wrote_the_last_export(tiny_dataset: Path, tmp_path: Path) -> None:
    """Rank 0 validates and exports after the last step; the other ranks wait for it, so none can
    exit (or abort in its teardown) and have torchrun stop rank 0 in the middle of the write."""
    import shutil
    import subprocess
    import sys
    from dataclasses import asdict

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    script = tmp_path / "ddp_last_export.py"
    script.write_text(DDP_LAST_EXPORT_SCRIPT)
    options = _options(tiny_dataset, tmp_path / "run", 2)
    options.val_every, options.query_window = 2, 32
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script), json.dumps(asdict(options))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]  # before the reports: a failed run wrote none
    reports = [json.loads((tmp_path / "run" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["end"] for r in reports] == ["finished", "finished"]
    assert len(reports[0]["exported"]) == 1 and reports[1]["exported"] == []
    assert reports[1]["left_run"] >= reports[0]["exported"][0]  # rank 1 waited for rank 0's export


def test_resume_with_another_schedule_is_refused(tiny_dataset: Path, tmp_path: Path) -> None:
    first = Trainer(_options(tiny_dataset, tmp_path / "s", 4))
    first.train_step()
    first.save_checkpoint()
    for name, value in (("steps", 8), ("batch", 3), ("lr", 1e-3), ("seed", 8), ("query_window", 64)):
        other = _options(tiny_dataset, tmp_path / "s", 4)
        setattr(other, name, value)
        flag = "--" + name.replace("_", "-")
        with pytest.raises(ValueError, match=f"the run used {flag} .*resume with the same values"):
            Trainer(other).resume()
    assert Trainer(_options(tiny_dataset, tmp_path / "s", 4)).resume()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short"])
def test_unreadable_checkpoint_is_named(tiny_dataset: Path, tmp_path: Path, content: bytes) -> None:
    (tmp_path / "u").mkdir()
    (tmp_path / "u" / "last.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"u/last.pt: not a readable training checkpoint"):
        Trainer(_options(tiny_dataset, tmp_path / "u", 2)).resume()


def test_resumed_run_replays_no_validation_record_twice(tiny_dataset: Path, tmp_path: Path) -> None:
    import shutil

    options = _options(tiny_dataset, tmp_path / "j", 3)
    options.val_every, options.ckpt_every, options.stop_at = 1, 2, 2
    Trainer(options).run()
    shutil.copy(tmp_path / "j" / "last.pt", tmp_path / "step2.pt")
    options.stop_at = 0
    resumed = Trainer(options)
    assert resumed.resume() and resumed.run() is RunEnd.FINISHED
    # As if killed after step 3's validation and before its checkpoint.
    shutil.copy(tmp_path / "step2.pt", tmp_path / "j" / "last.pt")
    again = Trainer(options)
    assert again.resume() and again.run() is RunEnd.FINISHED
    steps = [json.loads(line)["step"] for line in (tmp_path / "j" / "val.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert [row["step"] for row in csv.DictReader((tmp_path / "j" / "log.csv").open())] == ["1", "2", "3"]


def test_resume_cuts_logs_back_and_drops_a_line_a_kill_cut_short(tmp_path: Path) -> None:
    from crm_cli.training.logs import truncate_log, truncate_val_log

    log = tmp_path / "log.csv"
    log.write_text("step,loss\n" + "".join(f"{k},0.{k}\n" for k in range(1, 6)) + "6,0.")
    truncate_log(log, 4)
    assert log.read_text() == "step,loss\n1,0.1\n2,0.2\n3,0.3\n4,0.4\n"
    truncate_log(log, 10)  # a cut line at any step is dropped, complete rows are kept
    assert log.read_text().count("\n") == 5

    records = tmp_path / "val.jsonl"
    records.write_text('{"step": 2, "iou": 0.9}\n{"step": 4, "iou": 0.91}\n{"step": 6, "io')
    truncate_val_log(records, 10)
    assert records.read_text() == '{"step": 2, "iou": 0.9}\n{"step": 4, "iou": 0.91}\n'
    truncate_val_log(records, 3)
    assert records.read_text() == '{"step": 2, "iou": 0.9}\n'


# ------------------------------------------------------------------ Ctrl-C
def _ctrl_c() -> None:
    """Ctrl-C as the terminal sends it: SIGINT, handled by whatever handler the process has."""
    signal.raise_signal(signal.SIGINT)


def _interrupt_options(data: Path, out: Path) -> TrainOptions:
    options = _options(data, out, 5)
    options.ckpt_every, options.val_every = 2, 3
    return options


def _log_rows(out: Path) -> list[dict[str, str]]:
    """log.csv's rows without the timing column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader((out / "log.csv").open())]


@pytest.fixture(scope="module")
def straight_run(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 5-step run that interrupted and resumed ones must equal."""
    out = tmp_path_factory.mktemp("straight")
    assert Trainer(_interrupt_options(tiny_dataset, out)).run() is RunEnd.FINISHED
    return out


def _assert_same_weights_and_optimizer(out: Path, straight: Path) -> None:
    ours, theirs = torch.load(out / "last.pt", weights_only=True), torch.load(straight / "last.pt", weights_only=True)
    assert ours["step"] == theirs["step"] == 5
    for key, value in theirs["model"].items():
        assert torch.equal(value, ours["model"][key]), key
    assert ours["optimizer"]["state"].keys() == theirs["optimizer"]["state"].keys()
    for index, state in theirs["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, ours["optimizer"]["state"][index][name]), (index, name)


def _assert_same_run(out: Path, straight: Path) -> None:
    _assert_same_weights_and_optimizer(out, straight)
    assert _log_rows(out) == _log_rows(straight)
    assert (out / "val.jsonl").read_text() == (straight / "val.jsonl").read_text()


# Where the Ctrl-C lands, and the step last.pt then holds: anywhere in a step's work, from making its
# batch to its validation, the step is finished and saved; one during a scheduled checkpoint's write
# (step 2) lets the write finish and stops there.
CTRL_C_POINTS = {"batch": 3, "forward": 3, "optimizer": 3, "progress": 3, "validation": 3, "checkpoint": 2}


@pytest.mark.parametrize("where", CTRL_C_POINTS)
def test_ctrl_c_saves_the_last_finished_step_and_resume_is_exact(tiny_dataset: Path, tmp_path: Path,
                                                                 straight_run: Path, where: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.training import loader, loop

    out = tmp_path / "run"
    trainer = Trainer(_interrupt_options(tiny_dataset, out))
    fired: list[int] = []

    def ctrl_c_once(step: int) -> None:
        # The step being made is step + 1 (self.step counts finished steps until the update).
        if trainer.step == step and not fired:
            fired.append(step)
            _ctrl_c()

    def wrap(original: Callable[..., Any], step: int) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            ctrl_c_once(step)
            return original(*args, **kwargs)
        return wrapped

    progress = None
    if where == "batch":
        monkeypatch.setattr(loader, "step_batch", wrap(loader.step_batch, 2))
    elif where == "forward":  # after the forward pass has moved the BatchNorm statistics
        monkeypatch.setattr(loop, "crm_loss", wrap(loop.crm_loss, 2))
    elif where == "optimizer":
        monkeypatch.setattr(trainer.optimizer, "step", wrap(trainer.optimizer.step, 2))
    elif where == "progress":
        def progress(step: int, stats: dict[str, float]) -> None:
            ctrl_c_once(3)
    elif where == "validation":
        monkeypatch.setattr(loop, "validation_scores", wrap(loop.validation_scores, 3))
    else:
        monkeypatch.setattr(torch, "save", wrap(torch.save, 2))

    with pytest.raises(KeyboardInterrupt):
        trainer.run(progress)
    assert fired and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    saved = CTRL_C_POINTS[where]
    assert trainer.step == trainer.saved_step == saved
    assert torch.load(out / "last.pt", weights_only=True)["step"] == saved
    assert not (out / "last.pt.tmp").exists()
    assert _log_rows(out) == _log_rows(straight_run)[:saved]

    monkeypatch.undo()
    resumed = Trainer(_interrupt_options(tiny_dataset, out))
    assert resumed.resume() and resumed.step == saved
    assert resumed.run() is RunEnd.FINISHED
    _assert_same_run(out, straight_run)


def test_a_second_ctrl_c_while_saving_keeps_the_previous_checkpoint(tiny_dataset: Path, tmp_path: Path,
                                                                     straight_run: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    trainer = Trainer(_interrupt_options(tiny_dataset, out))
    save = torch.save

    def interrupted_save(payload: dict[str, Any], path: Path) -> None:
        if payload["step"] == 3:  # the interrupt's own save: half written when the second Ctrl-C comes
            Path(path).write_bytes(b"PK\x03\x04 half")
            _ctrl_c()
        save(payload, path)

    def progress(step: int, stats: dict[str, float]) -> None:
        if step == 3:
            _ctrl_c()

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(progress)
    assert trainer.step == 3 and trainer.saved_step == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert not (out / "last.pt.tmp").exists()
    monkeypatch.undo()
    resumed = Trainer(_interrupt_options(tiny_dataset, out))
    assert resumed.resume() and resumed.step == 2
    assert [row["step"] for row in _log_rows(out)] == ["1", "2", "3"]  # cut back by run(), not resume()
    assert resumed.run() is RunEnd.FINISHED
    _assert_same_run(out, straight_run)  # step 3's row logged once


def test_a_save_that_fails_before_writing_keeps_the_step_last_pt_holds(tiny_dataset: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(_options(tiny_dataset, tmp_path / "denied", 4))
    trainer.train_step()
    trainer.save_checkpoint()
    trainer.train_step()

    def denied(payload: dict[str, Any], path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))  # before any byte is written

    monkeypatch.setattr(torch, "save", denied)
    with pytest.raises(PermissionError):
        trainer.save_checkpoint()
    assert trainer.step == 2 and trainer.saved_step == 1


def test_a_second_ctrl_c_mid_step_stops_at_once(tiny_dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    trainer = Trainer(_interrupt_options(tiny_dataset, out))
    update = trainer.optimizer.step

    def twice_interrupted_update(*args: Any, **kwargs: Any) -> Any:
        if trainer.step == 2:
            _ctrl_c()
            _ctrl_c()
        return update(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", twice_interrupted_update)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    # Step 3 was cut short: nothing of it is saved.
    assert trainer.saved_step == 2 and torch.load(out / "last.pt", weights_only=True)["step"] == 2


@pytest.mark.parametrize("workers", [0, 1])
def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it(tiny_dataset: Path, tmp_path: Path,
                                                              workers: int) -> None:
    """As under ``nohup`` or a shell's background job: the training leaves an ignored SIGINT ignored,
    batch workers or not (starting them ignores SIGINT for a moment, then puts back what was there)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the autouse fixture puts back what the test started with

    def progress(step: int, stats: dict[str, float]) -> None:
        if step == 1:
            _ctrl_c()

    options = _options(tiny_dataset, tmp_path / "run", 2)
    options.workers = workers
    trainer = Trainer(options)
    assert trainer.run(progress) is RunEnd.FINISHED and not trainer.interrupted
    assert trainer.saved_step == 2 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_ctrl_c_in_the_last_step_lets_the_run_finish(tiny_dataset: Path, tmp_path: Path) -> None:
    options = _options(tiny_dataset, tmp_path / "run", 2)
    calls: list[int] = []

    def progress(step: int, stats: dict[str, float]) -> None:
        if step == 2:
            _ctrl_c()

    trainer = Trainer(options)
    assert trainer.run(progress, on_interrupt=lambda: calls.append(trainer.step)) is RunEnd.FINISHED
    assert calls == [2] and trainer.saved_step == 2
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_batch_workers_are_born_ignoring_ctrl_c(tiny_dataset: Path, tmp_path: Path) -> None:
    """Ctrl-C reaches the batch workers too (the terminal signals the whole process group), from the
    moment they start: none dies of it, so the steps still to make get their batches."""
    import multiprocessing
    import os

    from crm_cli.training.loader import step_batch

    options = _interrupt_options(tiny_dataset, tmp_path / "w")
    options.workers = 2
    trainer = Trainer(options)
    before = {child.pid for child in multiprocessing.active_children()}
    made = trainer.batches()
    workers = [child.pid for child in multiprocessing.active_children() if child.pid not in before]
    assert len(workers) == 2 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    for pid in workers:  # still starting: importing torch and the package
        os.kill(pid, signal.SIGINT)
    batches = [next(made).batch]
    for pid in workers:  # and at work
        os.kill(pid, signal.SIGINT)
    batches.extend(item.batch for item in made)
    assert len(batches) == options.steps
    for step, batch in enumerate(batches):
        expected = step_batch(trainer.cache, options.seed, step, options.batch, mix=trainer.mix)
        assert all(torch.equal(got, want) for got, want in zip(batch, expected, strict=True))


@pytest.mark.parametrize("ctrl_c", [False, True])
def test_a_batch_that_cannot_be_made_is_an_error_ctrl_c_or_not(tiny_dataset: Path, tmp_path: Path, ctrl_c: bool,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker cannot die of Ctrl-C (above), so one lost while a Ctrl-C waits for its batch died of
    something else: that is reported, not taken for the Ctrl-C."""
    from crm_cli.training.loader import MadeBatch

    trainer = Trainer(_interrupt_options(tiny_dataset, tmp_path / "run"))

    def failing_workers() -> Iterator[MadeBatch]:
        yield from (trainer.step_batches[step] for step in range(3))
        if ctrl_c:
            _ctrl_c()
        raise RuntimeError("DataLoader worker (pid(s) 1234) exited unexpectedly")

    monkeypatch.setattr(trainer, "batches", failing_workers)
    with pytest.raises(RuntimeError, match="exited unexpectedly"):
        trainer.run()
    assert trainer.step == 3 and trainer.interrupted is ctrl_c
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# A run with one loader worker stopped by Ctrl-C in step 0, whose KeyboardInterrupt the caller keeps
# (as one that reports it later does) until the interpreter exits. A file of its own, not `-c`: the
# spawned worker imports the main module.
KEPT_STOP_DRIVER = """
import signal, sys
import torch
from crm_cli.training.loop import Trainer
from crm_cli.training.options import TrainOptions

class Broken(torch.utils.data.Dataset):  # a worker that cannot make any batch (a bug, a lost disk)
    def __len__(self):
        return 3

    def __getitem__(self, step):
        raise OSError("the disk went away")

def main():
    global kept
    data, out, arch = sys.argv[1], sys.argv[2], eval(sys.argv[3])
    options = TrainOptions(data=data, out=out, steps=3, batch=2, seed=5, val_every=3, ckpt_every=2,
                           val_images=2, arch=arch, query_window=32, workers=1)
    train_step = Trainer.train_step

    def stopped_step(self, batch=None):
        if self.step == 0:
            signal.raise_signal(signal.SIGINT)
        return train_step(self, batch)

    if sys.argv[4] == "broken":  # a worker's error ends it
        broken = Trainer(options)
        broken.step_batches = Broken()
        broken.run()
    Trainer.train_step = stopped_step
    try:
        Trainer(options).run()
    except KeyboardInterrupt as exc:
        kept = exc  # its traceback holds run()'s frame, and so its locals, until the exit
    print("left run", flush=True)

if __name__ == "__main__":
    main()
"""


def test_a_stopped_run_whose_traceback_is_kept_still_lets_the_process_exit(tiny_dataset: Path,
                                                                            tmp_path: Path) -> None:
    import subprocess
    import sys

    driver = tmp_path / "driver.py"
    driver.write_text(KEPT_STOP_DRIVER)
    try:
        done = subprocess.run([sys.executable, str(driver), str(tiny_dataset), str(tmp_path / "run"),
                               repr(dict(TINY_ARCH)), "stopped"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:  # was: multiprocessing's exit waited for the loader's worker
        pytest.fail("the process did not exit: the data loader's worker outlived the run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "left run\n"
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 1


def test_a_run_ended_by_a_worker_s_error_lets_the_process_exit(tiny_dataset: Path, tmp_path: Path) -> None:
    """The error comes out of the loader's own frames, which hold its iterator in a reference cycle
    that only the garbage collector frees, after the exit waited for the workers. (Unreadable pairs
    no longer raise in a worker: tests/test_training_damaged.py.)"""
    import subprocess
    import sys

    driver = tmp_path / "driver.py"
    driver.write_text(KEPT_STOP_DRIVER)
    try:
        done = subprocess.run([sys.executable, str(driver), str(tiny_dataset), str(tmp_path / "run"),
                               repr(dict(TINY_ARCH)), "broken"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:  # was: multiprocessing's exit waited for the loader's worker
        pytest.fail("the process did not exit: the data loader's worker outlived the run")
    assert done.returncode == 1 and done.stdout == ""
    assert "OSError" in done.stderr and "the disk went away" in done.stderr, done.stderr[-2000:]
