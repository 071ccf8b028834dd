"""Pairs that pass the check before the run (file headers) and still cannot be read: a JPEG or PNG cut
short after its header used to stop the whole run when a loader worker first read it, hours in. Now
the pair is left out with one warning, another pair stands in for it (the same one in every process,
so a seed still gives one run and --resume continues it exactly), and only a damaged share of the data
stops the run. Also: the workers' warnings reach stderr as the run's own do, and the check says
what it does when it takes a while."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, write_training_pairs
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import ImageReadError
from crm_cli.training.data import PairCache, list_pairs
from crm_cli.training.loader import step_batch
from crm_cli.training.loop import RunEnd, Trainer
from crm_cli.training.options import TrainOptions


def make_pairs(root: Path, count: int, height: int = 96, width: int = 80) -> Path:
    """``count`` pairs p00, p01 ... in the DUTS-TR layout under ``root``."""
    return write_training_pairs(root, count, (height, width))


def cut_short(path: Path) -> None:
    """Damage ``path`` after its header: it passes the check before the run, and fails to decode."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def reason(path: Path) -> str:
    """Why ``path`` cannot be read, as reading it says (naming it)."""
    from crm_cli.imageio import read_image

    with pytest.raises(ImageReadError) as raised:
        read_image(path)
    return str(raised.value)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """22 pairs (p00 and p20 held out for validation): p06's photo and p18's mask are cut short, a
    tenth of the 20 training pairs (no more, so the run goes on). Both are drawn in the first steps
    of seeds 0 and 3."""
    root = make_pairs(tmp_path_factory.mktemp("damaged"), 22)
    cut_short(root / "images" / "p06.jpg")
    cut_short(root / "masks" / "p18.png")
    return root


@pytest.fixture()
def logged() -> Iterator[list[str]]:
    """The messages the package logs at WARNING and above during the test."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    package = logging.getLogger("crm_cli")
    package.addHandler(handler)
    yield messages
    package.removeHandler(handler)


def options(data: Path, out: Path, steps: int, **changes: object) -> TrainOptions:
    """A tiny run's options."""
    made = TrainOptions(data=str(data), out=str(out), steps=steps, batch=2, seed=3, val_every=1000,
                        ckpt_every=1000, val_images=2, arch=dict(TINY_ARCH), query_window=32)
    for name, value in changes.items():
        setattr(made, name, value)
    return made


def test_an_unreadable_pair_has_the_same_stand_in_whatever_was_read_before(damaged: Path) -> None:
    pairs = list_pairs(damaged)
    photo, mask = (next(k for k, p in enumerate(pairs) if p.name == name) for name in ("p06", "p18"))
    with pytest.raises(ImageReadError, match="p06.jpg"):  # as before, unless asked for stand-ins
        PairCache(pairs).get(photo)

    first = PairCache(pairs, stand_ins=True)
    image, gt = first.get(photo)
    stand_in = first.stand_in(photo)
    assert stand_in not in (photo, mask)
    assert image is first.get(stand_in)[0] and gt is first.get(stand_in)[1]
    first.get(photo)
    notes = first.take_notes()
    assert notes.stood_in == 2
    assert list(notes.unreadable_pairs) == ["p06"] and "p06.jpg" in notes.unreadable_pairs["p06"]
    # Another process (a loader worker, a resumed run) that read the pairs in another order first,
    # the damaged mask included, picks the same stand-ins.
    other = PairCache(pairs, stand_ins=True)
    for k in reversed(range(len(pairs))):
        other.get(k)
    assert other.stand_in(photo) == stand_in and other.stand_in(mask) == first.stand_in(mask) != mask
    assert set(other.take_notes().unreadable_pairs) == {"p06", "p18"}
    assert first.take_notes().stood_in == 0  # taken: the next notes start afresh


def test_an_unreadable_network_mask_is_skipped(tmp_path: Path) -> None:
    data = make_pairs(tmp_path / "data", 3)
    network = tmp_path / "network"
    network.mkdir()
    for name in ("p01", "p02"):
        cv2.imwrite(str(network / f"{name}.png"), cv2.imread(str(data / "masks" / f"{name}.png")))
    cut_short(network / "p02.png")
    pairs = list_pairs(data)
    with pytest.raises(ImageReadError, match="p02.png"):
        PairCache(pairs, (network,)).network_masks(2)
    cache = PairCache(pairs, (network,), stand_ins=True)
    assert len(cache.network_masks(1)) == 1 and cache.network_masks(2) == ()
    assert cache.take_notes().unreadable_network_masks.keys() == {str(network / "p02.png")}


def test_workers_make_the_same_batches_as_the_training_process(damaged: Path, tmp_path: Path) -> None:
    trainer = Trainer(options(damaged, tmp_path / "run", 6, workers=2, synthetic=0.5))
    made = list(trainer.batches())
    main = PairCache(trainer.cache.pairs, stand_ins=True)
    for step, item in enumerate(made):
        assert not item.notes.failure
        expected = step_batch(main, trainer.options.seed, step, 2, mix=trainer.mix)
        assert all(torch.equal(got, want) for got, want in zip(item.batch, expected, strict=True))
    met = {name for item in made for name in item.notes.reads.unreadable_pairs}
    assert met == set(main.take_notes().unreadable_pairs) == {"p06", "p18"}
    assert sum(item.notes.reads.stood_in for item in made) > 0


def test_a_run_with_unreadable_pairs_stopped_and_resumed_is_the_straight_run(damaged: Path, tmp_path: Path,
                                                                           logged: list[str]) -> None:
    straight = Trainer(options(damaged, tmp_path / "straight", 5))
    assert straight.run() is RunEnd.FINISHED
    assert sorted(straight.left_out) == ["p06", "p18"] and straight.stood_in > 0
    # One warning per file, naming it and why.
    assert sorted(m for m in logged if "left out of training" in m) == [
        f"{reason(damaged / folder / name)}; left out of training (another pair stands in for it)"
        for folder, name in (("images", "p06.jpg"), ("masks", "p18.png"))]
    assert straight.left_out_summary() == "left out as unreadable: 2 of 20 training pairs (named above)"

    out = tmp_path / "resumed"
    first = Trainer(options(damaged, out, 5, stop_at=2))
    assert first.run() is RunEnd.STOP_AT and first.stood_in > 0
    resumed = Trainer(options(damaged, out, 5))
    assert resumed.resume() and resumed.step == 2
    assert resumed.run() is RunEnd.FINISHED and resumed.stood_in > 0  # stand-ins on both sides of the stop
    ours, theirs = (torch.load(run / "last.pt", weights_only=True) for run in (out, tmp_path / "straight"))
    for key, value in theirs["model"].items():
        assert torch.equal(value, ours["model"][key]), key
    for index, state in theirs["optimizer"]["state"].items():
        assert all(torch.equal(value, ours["optimizer"]["state"][index][name]) for name, value in state.items())

    def losses(run: Path) -> list[str]:
        return [row["loss"] for row in csv.DictReader((run / "log.csv").open())]

    assert losses(out) == losses(tmp_path / "straight")


def test_a_twentieth_of_the_pairs_damaged_never_stops_the_run(tmp_path: Path) -> None:
    """Judged on the share of draws that met a damaged pair (more than a tenth of them, after 50),
    this run stopped at step 6: p03 came up 6 times in 56 draws, though it is 1 of 20 pairs."""
    data = make_pairs(tmp_path / "data", 22, 48, 64)
    cut_short(data / "images" / "p03.jpg")
    trainer = Trainer(options(data, tmp_path / "run", 12, batch=8))
    assert trainer.run() is RunEnd.FINISHED
    assert list(trainer.left_out) == ["p03"] and trainer.stood_in > 0


def rows(run: Path) -> list[str]:
    """The steps of ``run``'s log.csv rows."""
    return [row["step"] for row in csv.DictReader((run / "log.csv").open())]


def test_more_than_a_tenth_of_the_pairs_damaged_stops_the_run_saving_the_step_it_ends(tmp_path: Path,
                                                                                     logged: list[str]) -> None:
    data = make_pairs(tmp_path / "data", 22, 48, 64)
    damaged_files = [data / "images" / f"{name}.jpg" for name in ("p03", "p09", "p15")]  # 3 of the 20 training pairs
    kept = damaged_files[0].read_bytes()
    for path in damaged_files:
        cut_short(path)
    out = tmp_path / "run"
    trainer = Trainer(options(data, out, 30, batch=4))
    found: list[int] = []  # the damaged pairs found by each step
    with pytest.raises(ValueError) as raised:
        trainer.run(lambda step, stats: found.append(len(trainer.left_out)))
    # Stopped after the step that found the third (a share of the pairs, not of the draws), saved.
    assert found[-1] == 3 and max(found[:-1]) == 2
    assert trainer.step == len(found) == torch.load(out / "last.pt", weights_only=True)["step"]
    assert rows(out) == [str(step) for step in range(1, trainer.step + 1)]
    first, *listed = str(raised.value).splitlines()
    assert first == (f"3 of the 20 training pairs cannot be read, more than 10%; {out / 'last.pt'} holds step "
                     f"{trainer.step}: fix them and continue with --resume (removing them would change which pairs "
                     "are held out for validation):")
    assert sorted(listed) == sorted(f"  {reason(path)}" for path in damaged_files)

    # Stopped before the third and resumed, with loader workers: the same step, whatever they read.
    other = tmp_path / "stopped"
    assert Trainer(options(data, other, 30, batch=4, stop_at=found.index(2) + 1)).run() is RunEnd.STOP_AT
    logged.clear()
    resumed = Trainer(options(data, other, 30, batch=4, workers=2))
    assert resumed.resume() and len(resumed.left_out) == 2
    assert len(logged) == 2 and all(m.endswith("; left out of training (another pair stands in for it)")
                                    for m in logged)
    with pytest.raises(ValueError, match=r"^3 of the 20 training pairs cannot be read"):
        resumed.run()
    assert resumed.step == trainer.step == torch.load(other / "last.pt", weights_only=True)["step"]

    # Resumed as it is, the run stops before a step; with a file fixed, it goes on.
    again = Trainer(options(data, out, 30, batch=4))
    assert again.resume()
    with pytest.raises(ValueError, match=rf"holds step {trainer.step}: "):
        again.run()
    assert again.step == trainer.step and rows(out) == rows(other)
    damaged_files[0].write_bytes(kept)
    fixed = Trainer(options(data, out, 30, batch=4))
    assert fixed.resume() and sorted(fixed.left_out) == ["p09", "p15"]
    assert fixed.run() is RunEnd.FINISHED and fixed.step == 30


def test_with_a_validation_folder_removing_the_files_is_also_offered(tmp_path: Path) -> None:
    data = make_pairs(tmp_path / "data", 6, 48, 64)
    cut_short(data / "images" / "p02.jpg")
    val = make_pairs(tmp_path / "val", 1, 48, 64)
    trainer = Trainer(options(data, tmp_path / "run", 30, val_images=1), val_pairs=list_pairs(val))
    with pytest.raises(ValueError, match=r"^1 of the 6 training pairs cannot be read, more than 10%; .* holds step "
                                         r"\d+: fix or remove them and continue with --resume:\n  .*p02\.jpg: "):
        trainer.run()


def test_no_readable_pair_is_an_error_naming_them_and_exit_1(tmp_path: Path) -> None:
    data = make_pairs(tmp_path / "data", 6, 48, 64)
    for k in range(1, 6):  # every training pair (p00 is held out for validation)
        cut_short(data / "images" / f"p{k:02d}.jpg")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--steps", "2", "--batch", "2",
                                      "--init", "random", "--query-window", "32", "--val-images", "1",
                                      "--workers", "1"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr
    lines = result.stderr.splitlines()
    error = lines.index("error: 5 of 5 pairs to train on cannot be read; fix or remove them:")
    assert [Path(line.split(":")[0].strip()).name for line in lines[error + 1:]] == [
        f"p{k:02d}.jpg" for k in range(1, 6)]
    assert not (out / "last.pt").exists()


def test_crm_train_warns_once_per_unreadable_file_and_counts_them_at_the_end(damaged: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(damaged), "--out", str(out), "--steps", "3",
                                      "--batch", "4", "--init", "random", "--query-window", "32", "--val-images",
                                      "1", "--workers", "2"])
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    for path in (damaged / "images" / "p06.jpg", damaged / "masks" / "p18.png"):
        # Both workers met it; the training process says so once.
        assert lines.count(f"warning: {reason(path)}; left out of training (another pair stands in for it)") == 1, \
            result.stderr
    assert "warning: left out as unreadable: 2 of 20 training pairs (named above)" in lines
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 3


def test_unreadable_validation_pairs_are_left_out_up_to_a_tenth(tmp_path: Path, logged: list[str]) -> None:
    data = make_pairs(tmp_path / "data", 4)
    val = make_pairs(tmp_path / "val", 11, 48, 64)
    cut_short(val / "images" / "p04.jpg")
    trainer = Trainer(options(data, tmp_path / "run", 1, val_images=11), val_pairs=list_pairs(val))
    trainer.validate()
    (held_out,) = trainer.validation_data()
    assert [sample.name for sample in held_out.samples] == [f"p{k:02d}" for k in range(11) if k != 4]
    assert held_out.left_out == ("p04",)
    assert logged == [f"{reason(val / 'images' / 'p04.jpg')}; left out of validation"]
    assert trainer.left_out_summary() == "left out as unreadable: 1 of 11 validation pairs (named above)"

    cut_short(val / "masks" / "p07.png")  # 2 of 11: more than a tenth
    out = tmp_path / "stopped"
    trainer = Trainer(options(data, out, 3, val_images=11), val_pairs=list_pairs(val))
    with pytest.raises(ValueError, match=r"^2 of 11 pairs to validate on cannot be read; fix or remove them:\n"
                                         r"  .*p04\.jpg: .*\n  .*p07\.png: "):
        trainer.run()
    assert trainer.step == 0 and not out.exists()  # before the first step, not at the first validation


def test_a_run_stopped_by_ctrl_c_counts_what_it_left_out(damaged: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    train_step = Trainer.train_step

    def interrupted_step(self: Trainer, batch: object = None) -> dict[str, float]:
        if self.step == 0:  # the batch of step 1 draws both damaged pairs
            signal.raise_signal(signal.SIGINT)
        return train_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(damaged), "--out", str(out), "--steps", "3",
                                      "--batch", "4", "--init", "random", "--query-window", "32", "--val-images",
                                      "1", "--synthetic", "0"])
    assert result.exit_code == 130, result.stderr
    assert result.stderr.splitlines()[-2:] == [
        "warning: left out as unreadable: 2 of 20 training pairs (named above)",
        f"interrupted at step 1: {out / 'last.pt'} holds step 1; continue with --resume"]


def test_a_worker_s_warning_is_shown_once_as_the_run_s_own(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A photo of several frames, read by two loader workers: its note used to come out bare on the
    workers' stderr, once per worker."""
    from PIL import Image

    data = make_pairs(tmp_path / "data", 4)
    pages = [Image.open(data / "images" / f"p{k:02d}.jpg").convert("RGB") for k in (2, 3)]
    (data / "images" / "p02.jpg").unlink()
    pages[0].save(data / "images" / "p02.tif", save_all=True, append_images=pages[1:])
    capfd.readouterr()
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "3",
                                      "--batch", "4", "--init", "random", "--query-window", "32", "--val-images",
                                      "1", "--workers", "2"])
    assert result.exit_code == 0, result.stderr
    note = f"{data / 'images' / 'p02.tif'}: holds 2 frames (an animation or a multi-page file); only the first is read"
    assert result.stderr.splitlines().count(f"warning: {note}") == 1, result.stderr
    assert note not in capfd.readouterr().err  # nothing from the workers themselves


def test_the_check_before_the_run_says_what_it_does_when_it_takes_a_while(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.cli import train as train_command

    data = make_pairs(tmp_path / "data", 12, 48, 64)
    args = ["train", "--data", str(data), "--steps", "1", "--batch", "2", "--init", "random", "--query-window", "32",
            "--val-images", "2"]
    quick = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "quick")])
    assert quick.exit_code == 0 and "checking" not in quick.stderr  # 12 pairs: no note
    monkeypatch.setattr(train_command, "ANNOUNCED_CHECK_PAIRS", 12)
    noted = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "noted")])
    assert noted.exit_code == 0 and noted.stdout == ""
    lines = noted.stderr.splitlines()
    assert lines[0] == "train: checking 12 pairs..."  # 11 training pairs and the one held out
    assert sum("checking" in line for line in lines) == 1


def test_a_large_count_is_written_with_thousands_separators(capsys: pytest.CaptureFixture[str]) -> None:
    from crm_cli.cli.train import announce_check

    announce_check(999)
    announce_check(6658)
    assert capsys.readouterr().err == "train: checking 6,658 pairs...\n"


def test_the_pairs_left_out_keep_the_others_coarse_masks(tmp_path: Path) -> None:
    from crm_cli.training.data import synthetic_coarse, synthetic_samples

    val = make_pairs(tmp_path / "val", 4, 48, 64)
    cut_short(val / "images" / "p01.jpg")
    pairs = list_pairs(val)
    left_out: dict[str, str] = {}
    samples = list(synthetic_samples(pairs, on_error=lambda name, exc: left_out.setdefault(name, str(exc))))
    assert [s.name for s in samples] == ["p00", "p02", "p03"] and list(left_out) == ["p01"]
    for sample, index in zip(samples, (0, 2, 3), strict=True):
        np.testing.assert_array_equal(sample.coarse, synthetic_coarse(sample.gt, index))
    with pytest.raises(ImageReadError):
        list(synthetic_samples(pairs))


def test_unreadable_triples_of_a_big_layout_validation_set_are_left_out_up_to_a_tenth(tmp_path: Path,
                                                                                      logged: list[str]) -> None:
    """A named validation set in the BIG layout follows the held-out pairs' rule (it used to stop the
    run at its first damaged file)."""
    import shutil

    from conftest import write_scene_files

    data = make_pairs(tmp_path / "data", 4)
    big = tmp_path / "big"
    for k in range(11):
        _, seg = write_scene_files(big, f"c{k:02d}_im", f"c{k:02d}_seg", size=(48, 64), seed=k)
        shutil.copy(seg, big / f"c{k:02d}_gt.png")
    cut_short(big / "c04_im.jpg")
    trainer = Trainer(options(data, tmp_path / "run", 1, val_images=11, val_sets=[f"big={big}"]))
    _, named = trainer.validation_data()
    assert [sample.name for sample in named.samples] == [f"c{k:02d}" for k in range(11) if k != 4]
    assert named.left_out == ("c04",)
    assert logged == [f"{reason(big / 'c04_im.jpg')}; left out of validation"]

    cut_short(big / "c07_gt.png")  # 2 of 11: more than a tenth
    trainer = Trainer(options(data, tmp_path / "run", 1, val_images=11, val_sets=[f"big={big}"]))
    with pytest.raises(ValueError, match=r"^2 of 11 pairs of validation set big cannot be read; fix or remove "
                                         r"them:\n  .*c04_im\.jpg: .*\n  .*c07_gt\.png: "):
        trainer.validation_data()
