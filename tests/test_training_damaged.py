"""Pairs that pass the check before the run (file headers) and still cannot be read: a JPEG or PNG cut
short after its header used to stop the whole run when a loader worker first read it, hours in. Now
the pair is left out with one warning, another pair stands in for it (the same one in every process,
so a seed still gives one run and --resume continues it exactly), and only a damaged share of the data
stops the run. Also: the workers' warnings reach stderr as the run's own do, and the check says
what it does when it takes a while."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, synthetic_scene
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import ImageReadError
from crm_cli.training.data import PairCache, list_pairs
from crm_cli.training.loop import RunEnd, Trainer, TrainOptions, step_batch


def make_pairs(root: Path, count: int, height: int = 96, width: int = 80) -> Path:
    """``count`` pairs p00, p01 ... in the DUTS-TR layout under ``root``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(count):
        image, mask = synthetic_scene(height, width, seed=k)
        cv2.imwrite(str(root / "images" / f"p{k:02d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"p{k:02d}.png"), mask)
    return root


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
    """8 pairs (p00 held out for validation): p03's photo and p06's mask are cut short."""
    root = make_pairs(tmp_path_factory.mktemp("damaged"), 8)
    cut_short(root / "images" / "p03.jpg")
    cut_short(root / "masks" / "p06.png")
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
    photo, mask = (next(k for k, p in enumerate(pairs) if p.name == name) for name in ("p03", "p06"))
    with pytest.raises(ImageReadError, match="p03.jpg"):  # as before, unless asked for stand-ins
        PairCache(pairs).get(photo)

    first = PairCache(pairs, stand_ins=True)
    image, gt = first.get(photo)
    stand_in = first.stand_in(photo)
    assert stand_in not in (photo, mask)
    assert image is first.get(stand_in)[0] and gt is first.get(stand_in)[1]
    first.get(photo)
    notes = first.take_notes()
    assert (notes.draws, notes.stood_in) == (4, 2)
    assert list(notes.unreadable_pairs) == ["p03"] and "p03.jpg" in notes.unreadable_pairs["p03"]
    # Another process (a loader worker, a resumed run) that read the pairs in another order first,
    # the damaged mask included, picks the same stand-ins.
    other = PairCache(pairs, stand_ins=True)
    for k in reversed(range(len(pairs))):
        other.get(k)
    assert other.stand_in(photo) == stand_in and other.stand_in(mask) == first.stand_in(mask) != mask
    assert set(other.take_notes().unreadable_pairs) == {"p03", "p06"}
    assert first.take_notes().draws == 0  # taken: the next notes start afresh


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
    assert met == set(main.take_notes().unreadable_pairs) == {"p03", "p06"}
    assert sum(item.notes.reads.stood_in for item in made) > 0


def test_a_run_with_unreadable_pairs_stopped_and_resumed_is_the_straight_run(damaged: Path, tmp_path: Path,
                                                                           logged: list[str]) -> None:
    straight = Trainer(options(damaged, tmp_path / "straight", 5))
    assert straight.run() is RunEnd.FINISHED
    assert sorted(straight.left_out) == ["p03", "p06"] and straight.stood_in > 0
    # One warning per file, naming it and why.
    assert sorted(m for m in logged if "left out of training" in m) == [
        f"{reason(damaged / folder / name)}; left out of training (another pair stands in for it)"
        for folder, name in (("images", "p03.jpg"), ("masks", "p06.png"))]
    assert straight.left_out_summary() == "left out as unreadable: 2 of 7 training pairs (named above)"

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


def test_too_large_a_share_of_unreadable_pairs_stops_the_run_naming_them(tmp_path: Path) -> None:
    data = make_pairs(tmp_path / "data", 12)
    for name in ("p02", "p05", "p07", "p10"):  # 4 of the 11 training pairs
        cut_short(data / "images" / f"{name}.jpg")
    trainer = Trainer(options(data, tmp_path / "run", 20, batch=8))
    with pytest.raises(ValueError) as raised:
        trainer.run()
    message = str(raised.value)
    first, *listed = message.splitlines()
    assert re.fullmatch(r"\d+ of the \d+ training pairs drawn could not be read \(more than 10%\); fix or remove "
                        r"the unreadable files found so far:", first), first
    assert listed and all(re.fullmatch(r"  .*/p(02|05|07|10)\.jpg: cannot decode image .*", line) for line in listed)
    # Judged once 50 pairs were drawn (7 batches of 8), before the step whose batch passed the limit.
    assert trainer.draws >= 50 and trainer.step == trainer.draws // 8 - 1
    assert trainer.stood_in * 10 > trainer.draws


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
    for path in (damaged / "images" / "p03.jpg", damaged / "masks" / "p06.png"):
        # Both workers met it; the training process says so once.
        assert lines.count(f"warning: {reason(path)}; left out of training (another pair stands in for it)") == 1, \
            result.stderr
    assert "warning: left out as unreadable: 2 of 7 training pairs (named above)" in lines
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
    trainer = Trainer(options(data, tmp_path / "run", 1, val_images=11), val_pairs=list_pairs(val))
    with pytest.raises(ValueError, match=r"^2 of 11 pairs to validate on cannot be read; fix or remove them:\n"
                                         r"  .*p04\.jpg: .*\n  .*p07\.png: "):
        trainer.validate()


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
    samples = list(synthetic_samples(pairs, left_out=left_out))
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
