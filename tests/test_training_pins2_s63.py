"""Pins for training's resume, checkpoints, stops and signals (mutation review s63, second wave): what a
resumed run reloads and counts, where a run stops, the exit code of a stopped rank, the names of kept
exports and torchrun's variables. Tiny inputs, mostly direct calls."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_ARCH, write_training_pairs
from test_training_pins_s63 import _options as first_review_options

from crm_cli.training.options import TrainOptions


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 small image/mask pairs in the DUTS-TR layout (pair 0 held out, 4 to train on)."""
    return write_training_pairs(tmp_path_factory.mktemp("pins2_duts"), 5, (48, 56))


def _options(data_dir: Path, out: Path, **changes: object) -> TrainOptions:
    """The first review's tiny run (test_training_pins_s63), validated on one pair."""
    return first_review_options(data_dir, out, **{"val_images": 1, **changes})


# ---------------------------------------------------------------------------------------------- cli
def test_a_stopped_rank_other_than_0_exits_128_plus_its_signal() -> None:
    """cli.train.interrupted: a rank other than 0 stopped by SIGTERM exits 143, not 130."""
    from crm_cli.cli.train import interrupted

    rank1 = SimpleNamespace(interrupted=True, stop_signal=signal.SIGTERM, rank=1, left_out_summary=lambda: "")
    assert interrupted(rank1, Path("unused")).exit_code == 143


# ---------------------------------------------------------------------------------------------- damage
def test_the_damage_limit_counts_the_training_pairs_not_the_held_out_ones(tmp_path: Path) -> None:
    """Trainer.too_damaged: 2 unreadable of 19 training pairs (20 with the one held out) is past a tenth."""
    from crm_cli.training.loop import Trainer

    root = write_training_pairs(tmp_path / "d", 20, (40, 40))
    trainer = Trainer(_options(root, tmp_path / "o"))
    assert len(trainer.cache) == 19 and len(trainer.pairs) == 20
    trainer.left_out.update({"p01": "p01.jpg: damaged", "p02": "p02.jpg: damaged"})
    assert trainer.too_damaged()


def test_a_resumed_run_leaves_out_only_the_pairs_still_unreadable(tmp_path: Path) -> None:
    """Trainer.resume: of the checkpoint's unreadable pairs, one fixed since is trained on, one still damaged is
    left out with the reason naming its file."""
    from crm_cli.training.loop import Trainer

    root = write_training_pairs(tmp_path / "d", 5, (48, 56))
    first = Trainer(_options(root, tmp_path / "o"))
    first.left_out.update({"p02": "p02.jpg: damaged", "p03": "p03.jpg: damaged"})
    first.save_checkpoint()
    (root / "images" / "p03.jpg").write_bytes(b"not a jpeg")
    first.left_out.clear()  # the same Trainer, built before p03 was damaged, resumes from its checkpoint
    assert first.resume()
    assert list(first.left_out) == ["p03"]
    assert "p03.jpg" in first.left_out["p03"]


# ---------------------------------------------------------------------------------------------- resume
def test_a_checkpoint_from_before_the_split_was_saved_resumes_with_the_split(pairs: Path, tmp_path: Path) -> None:
    """Trainer.resume: a checkpoint without "splits" held every 20th pair out, so a run without --val resumes."""
    from crm_cli.training.loop import Trainer

    first = Trainer(_options(pairs, tmp_path / "o"))
    first.save_checkpoint()
    payload = torch.load(tmp_path / "o" / "last.pt", weights_only=False)
    del payload["splits"]
    torch.save(payload, tmp_path / "o" / "last.pt")
    resumed = Trainer(_options(pairs, tmp_path / "o"))
    assert resumed.resume() and resumed.splits and len(resumed.cache) == 4


def test_a_checkpoint_from_before_a_data_mix_or_objective_field_existed_resumes(pairs: Path, tmp_path: Path) -> None:
    """Trainer.resume: a data-mix or objective field missing from the checkpoint ran with its default and resumes."""
    from crm_cli.training.loop import Trainer

    first = Trainer(_options(pairs, tmp_path / "o"))
    first.save_checkpoint()
    payload = torch.load(tmp_path / "o" / "last.pt", weights_only=False)
    del payload["options"]["transpose"], payload["options"]["freeze_encoder"]
    torch.save(payload, tmp_path / "o" / "last.pt")
    assert Trainer(_options(pairs, tmp_path / "o")).resume()


def test_a_resumed_run_keeps_the_init_note_of_the_run_it_continues(pairs: Path, tmp_path: Path) -> None:
    """Trainer.resume: the exports of a resumed run name what the run started from, as its checkpoint says."""
    from crm_cli.training.loop import Trainer

    first = Trainer(_options(pairs, tmp_path / "o"))
    first.init_note = "crm checkpoint base.safetensors sha256=00ff"
    first.save_checkpoint()
    resumed = Trainer(_options(pairs, tmp_path / "o"))
    assert resumed.resume() and resumed.init_note == "crm checkpoint base.safetensors sha256=00ff"


def test_only_rank_0_writes_the_checkpoint(pairs: Path, tmp_path: Path) -> None:
    """Trainer.save_checkpoint: a rank other than 0 writes no last.pt (rank 0 writes the run's one)."""
    from crm_cli.training.loop import Trainer

    trainer = Trainer(_options(pairs, tmp_path / "o"))
    trainer.rank = 1
    trainer.save_checkpoint()
    assert not (tmp_path / "o" / "last.pt").exists() and trainer.saved_step is None


def test_a_resumed_split_is_saved_again_as_a_split(pairs: Path, tmp_path: Path) -> None:
    """Trainer.resume with --val from a checkpoint that held pairs out: the run keeps the split, and so does its
    next checkpoint (a second resume trains on the same pairs)."""
    from crm_cli.training.data import list_pairs
    from crm_cli.training.loop import Trainer

    Trainer(_options(pairs, tmp_path / "o")).save_checkpoint()
    resumed = Trainer(_options(pairs, tmp_path / "o"), val_pairs=list_pairs(pairs))
    assert len(resumed.cache) == 5 and resumed.resume()
    assert resumed.splits and len(resumed.cache) == 4
    resumed.save_checkpoint()
    assert torch.load(tmp_path / "o" / "last.pt", weights_only=False)["splits"] is True


def test_each_step_draws_its_query_window_from_seed_and_step(pairs: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Trainer.train_step: the query window of step k is query_window(size, --query-window, seed, k)."""
    from crm_cli.training import loop
    from crm_cli.training.loop import Trainer

    calls: list[tuple[int, ...]] = []
    real = loop.query_window
    monkeypatch.setattr(loop, "query_window", lambda *args: calls.append(args) or real(*args))
    trainer = Trainer(_options(pairs, tmp_path / "o"))
    trainer.train_step()
    trainer.train_step()
    assert [call[1:] for call in calls] == [(32, 7, 0), (32, 7, 1)]

def test_a_checkpoint_of_another_architecture_is_refused_by_name(pairs: Path, tmp_path: Path) -> None:
    """Trainer.resume: a checkpoint whose architecture differs only in dropout (same weights' shapes) is refused."""
    from crm_cli.training.loop import Trainer

    Trainer(_options(pairs, tmp_path / "o", arch=dict(TINY_ARCH, dropout=0.3))).save_checkpoint()
    with pytest.raises(ValueError, match="architecture differs from this run's"):
        Trainer(_options(pairs, tmp_path / "o")).resume()


def test_a_save_cut_short_after_the_rename_knows_last_pt_holds_its_step(pairs: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Trainer.save_checkpoint: a Ctrl-C just after last.pt was renamed into place still records the step it holds."""
    import os

    from crm_cli.training import loop
    from crm_cli.training.loop import Trainer

    trainer = Trainer(_options(pairs, tmp_path / "o"))
    trainer.step = 3
    real_replace = os.replace

    def replace_then_stop(src: Path, dst: Path) -> None:
        real_replace(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.os, "replace", replace_then_stop)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    assert (tmp_path / "o" / "last.pt").exists() and trainer.saved_step == 3


# ---------------------------------------------------------------------------------------------- stops
def test_a_stop_at_past_the_last_step_just_finishes_the_run(pairs: Path, tmp_path: Path) -> None:
    """Trainer.run: --stop-at beyond --steps ends the run at --steps, as finished."""
    from crm_cli.training.loop import RunEnd, Trainer

    trainer = Trainer(_options(pairs, tmp_path / "o", steps=1, stop_at=3))
    assert trainer.run() is RunEnd.FINISHED and trainer.step == 1



def test_a_run_already_too_damaged_stops_before_its_first_step(pairs: Path, tmp_path: Path) -> None:
    """Trainer.run: unreadable pairs past the limit when the run starts (resumed) stop it before any step."""
    from crm_cli.training.loop import Trainer

    trainer = Trainer(_options(pairs, tmp_path / "o", steps=2))
    trainer.left_out["p01"] = "p01.jpg: damaged"
    with pytest.raises(ValueError, match="1 of the 4 training pairs cannot be read"):
        trainer.run()
    assert trainer.step == 0 and not (tmp_path / "o" / "last.pt").exists()


def test_a_run_after_a_stopped_one_starts_without_the_old_stop(pairs: Path, tmp_path: Path) -> None:
    """Trainer.run: a Ctrl-C that stopped an earlier run() of the same Trainer does not stop the next one."""
    from crm_cli.training.loop import RunEnd, Trainer

    trainer = Trainer(_options(pairs, tmp_path / "o", steps=1))
    trainer.interrupted = True
    try:
        end = trainer.run()
    except KeyboardInterrupt:
        pytest.fail("the earlier Ctrl-C stopped the new run")
    assert end is RunEnd.FINISHED and trainer.step == 1


def test_a_batch_that_cannot_be_made_is_a_value_error_naming_why(pairs: Path, tmp_path: Path) -> None:
    """Trainer.take_notes: a batch's failure (no pair could be read) is raised as the ValueError it names."""
    from crm_cli.training.loader import BatchNotes
    from crm_cli.training.loop import Trainer

    trainer = Trainer(_options(pairs, tmp_path / "o"))
    with pytest.raises(ValueError, match="no pair of the batch can be read"):
        trainer.take_notes(BatchNotes(trainer.cache.take_notes(), (), "no pair of the batch can be read"))

def test_max_minutes_counts_minutes_not_seconds(pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trainer.run: --max-minutes 0.5 gives the run 30 s: a clock 20 s on after each step lets it finish."""
    import time

    from crm_cli.training import loop
    from crm_cli.training.loop import RunEnd, Trainer

    clock = iter(range(0, 10_000, 20))
    monkeypatch.setattr(loop, "time", SimpleNamespace(monotonic=lambda: float(next(clock)),
                                                      perf_counter=time.perf_counter))
    trainer = Trainer(_options(pairs, tmp_path / "o", steps=1, max_minutes=0.5))
    assert trainer.run() is RunEnd.FINISHED and trainer.step == 1


def test_kept_export_names_sort_by_step() -> None:
    """step_export_name: six digits of step, so that the names sort as the steps do."""
    from crm_cli.training.loop import step_export_name

    assert step_export_name(20) == "model_step000020.safetensors"
    assert sorted([step_export_name(100), step_export_name(20)]) == [step_export_name(20), step_export_name(100)]


# ---------------------------------------------------------------------------------------------- signals
def test_the_step_boundary_handlers_leave_an_ignored_signal_ignored_and_put_the_others_back() -> None:
    """Trainer.ctrl_c_at_step_boundaries: SIGHUP ignored (nohup) stays ignored inside; SIGINT and SIGTERM are
    taken inside and their default handlers are back after."""
    from crm_cli.training.loop import Trainer

    fake = SimpleNamespace(interrupted=False, stop_signal=signal.SIGINT)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with Trainer.ctrl_c_at_step_boundaries(fake):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
            signal.raise_signal(signal.SIGTERM)
            assert fake.interrupted and fake.stop_signal == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


# ---------------------------------------------------------------------------------------------- torchrun
def test_torchrun_ranks_start_at_0_and_default_to_0(monkeypatch: pytest.MonkeyPatch) -> None:
    """distributed.rank: under torchrun, RANK and LOCAL_RANK 0 are accepted, and an unset one is 0."""
    from crm_cli.training.distributed import check_torchrun_variables, rank

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    check_torchrun_variables()
    assert rank() == rank("LOCAL_RANK") == 0
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    assert rank() == rank("LOCAL_RANK") == 0


# ---------------------------------------------------------------------------------------------- more
def test_a_pt_file_that_is_not_a_dict_is_not_a_training_checkpoint(tmp_path: Path) -> None:
    """read_checkpoint: a torch file holding a list (not a checkpoint's dict) is refused by name."""
    from crm_cli.training.loop import read_checkpoint

    torch.save([1, 2], tmp_path / "last.pt")
    with pytest.raises(ValueError, match="last.pt: not a training checkpoint of crm train"):
        read_checkpoint(tmp_path / "last.pt")


def test_damaged_data_outweighs_the_deadline(pairs: Path, tmp_path: Path) -> None:
    """Trainer.early_stop: past the deadline with too many unreadable pairs, the reason is the damage."""
    from crm_cli.training.loop import EarlyStop, Trainer

    trainer = Trainer(_options(pairs, tmp_path / "o"))
    assert trainer.early_stop(-1.0) is EarlyStop.DEADLINE
    trainer.left_out["p01"] = "p01.jpg: damaged"
    assert trainer.early_stop(-1.0) is EarlyStop.DAMAGED


def test_a_stop_before_any_save_of_a_resumed_out_says_last_pt_is_unchanged(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """cli.train.interrupted: stopped before this run saved, with a last.pt in --out, it says that file is unchanged."""
    from crm_cli.cli.train import interrupted

    (tmp_path / "last.pt").write_bytes(b"an earlier run's")
    trainer = SimpleNamespace(interrupted=True, stop_signal=signal.SIGINT, rank=0, saved_step=None, step=0,
                              left_out_summary=lambda: "")
    assert interrupted(trainer, tmp_path).exit_code == 130
    said = capsys.readouterr()
    expected = f"{tmp_path / 'last.pt'} is unchanged; continue with --resume"
    assert "".join(expected.split()) in "".join((said.out + said.err).split())  # wherever the line was wrapped
