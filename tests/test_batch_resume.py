"""Resuming batch work safely (audit s24): stale locks of other hosts and reused pids, incomplete
outputs and leftover temp files, `crm eval` keeping going past bad pairs, write errors naming the
user's path, failures shown with -q, and a JSON failure record for fatal batch errors."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli import locks
from crm_cli.cli import app
from crm_cli.evaluation import Sample, evaluate, folder_samples
from crm_cli.locks import OutputLock, lock_path
from crm_cli.pairing import FilePair
from crm_cli.writing import ImageWriteError, NameFolding, OutputNameError, output_format, write_image

runner = CliRunner()
HOST = socket.gethostname()
TWO_HOURS = 2 * 3600.0  # older than any sensible stale-lock age


def age(path: Path, seconds: float) -> None:
    """Set a file's modification time ``seconds`` into the past."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def write_lock(output: Path, owner: str, old: bool = False) -> Path:
    """A lock file for ``output`` as another process would have left it."""
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(owner + "\n")
    if old:
        age(path, TWO_HOURS)
    return path


def batch_args(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["batch", str(data), "-o", str(out), "-w", str(weights), "-d", "cpu", *extra]


def file_in_the_way(tmp_path: Path) -> Path:
    """A plain file, to be named as a folder in an output path."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    return blocker


def coco_inputs(tmp_path: Path, annotations: list[dict] | None = None) -> tuple[Path, Path]:
    """(annotation file, empty images folder) for ``crm coco``."""
    images = tmp_path / "images"
    images.mkdir()
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [], "categories": [], "annotations": annotations or []}))
    return path, images


# ---------------------------------------------------------------------------------------------
# Locks


def test_stale_age_is_generous_but_bounded() -> None:
    # Far above the time one pair takes, far below "for ever"; a live holder refreshes well within it.
    assert 10 * 60 <= locks.STALE_LOCK_AGE_S <= 60 * 60
    assert locks.LOCK_REFRESH_S * 5 <= locks.STALE_LOCK_AGE_S


def test_lock_of_another_host_is_taken_over_once_old(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    write_lock(target, "12345 some-other-host")
    assert not OutputLock(target).acquire()  # maybe alive over there: left alone while fresh
    age(lock_path(target), TWO_HOURS)
    taker = OutputLock(target)
    assert taker.acquire()
    assert lock_path(target).read_text().split()[:2] == [str(os.getpid()), HOST]
    taker.release()
    assert not lock_path(target).exists()


def test_lock_naming_a_live_reused_pid_is_taken_over_once_old(tmp_path: Path) -> None:
    # Docker: crm runs as pid 1 in each container, so a dead container's lock names a live pid.
    target = tmp_path / "a.png"
    write_lock(target, f"1 {HOST}")
    assert not OutputLock(target).acquire()
    age(lock_path(target), TWO_HOURS)
    with OutputLock(target) as taker:
        assert taker.acquire()


def test_lock_naming_this_process_but_not_held_by_it_is_stale(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    write_lock(target, f"{os.getpid()} {HOST}")  # left by an earlier run that had this pid
    taker = OutputLock(target)
    assert taker.is_stale() and taker.acquire()
    # Held by this process now, so it is live for everyone else, this process included.
    assert not taker.is_stale() and not OutputLock(target).acquire()
    taker.release()


def test_holder_refreshes_its_lock_and_keeps_a_taken_over_one(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "LOCK_REFRESH_S", 0.05)
    target = tmp_path / "a.png"
    holder = OutputLock(target)
    assert holder.acquire()
    try:
        age(lock_path(target), TWO_HOURS)
        deadline = time.time() + 10
        while time.time() - lock_path(target).stat().st_mtime > 60 and time.time() < deadline:
            time.sleep(0.05)
        assert time.time() - lock_path(target).stat().st_mtime < 60  # refreshed: never looks stale
        assert not OutputLock(target).acquire()
        # Another run took it over (say this one was suspended for hours): releasing leaves its lock.
        lock_path(target).write_text(f"4242 some-other-host {'f' * 16}\n")
    finally:
        holder.release()
    assert lock_path(target).read_text().startswith("4242 ")


def test_batch_takes_over_stale_locks_and_names_the_ones_it_leaves(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "big", tmp_path / "out"
    for k in range(4):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", seed=k)
    write_lock(out / "p0_mask.png", "12345 crashed-node", old=True)
    write_lock(out / "p1_mask.png", f"1 {HOST}", old=True)
    write_lock(out / "p2_mask.png", f"{os.getpid()} {HOST}")  # this process's pid, not held by it
    fresh = write_lock(out / "p3_mask.png", "12345 busy-node")
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["in_progress"], summary["failed"]) == (3, 1, 0)
    assert all((out / f"p{k}_mask.png").exists() for k in range(3))
    (busy,) = [item for item in summary["items"] if item["status"] == "in_progress"]
    assert busy["name"] == "p3" and busy["lock"] == str(fresh)
    # The summary names the pair and its lock file, so a user can wait or delete it.
    assert "p3" in result.stderr and str(fresh) in result.stderr and "busy-node" in result.stderr
    assert sorted(p.name for p in out.glob(".*")) == [fresh.name]


def test_a_pair_the_other_run_finished_before_the_summary_is_not_named_as_left_to_it(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import crm_cli.locks

    data, out = tmp_path / "big", tmp_path / "out"
    for k in range(2):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", seed=k)
    write_lock(out / "p1_mask.png", "12345 busy-node")
    describe = crm_cli.locks.describe_holder

    def holder_finishing_right_after(output: str) -> str:
        text = describe(output)
        shutil.copy(data / "p1_seg.png", output)  # the other run's output lands (a complete PNG)
        return text

    monkeypatch.setattr(crm_cli.locks, "describe_holder", holder_finishing_right_after)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["skipped"], summary["in_progress"]) == (1, 1, 0)  # was: 1, 0, 1
    assert "left to another" not in result.stderr


def test_overwrite_keeps_what_a_concurrent_overwrite_run_writes_meanwhile(tiny_weights: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ``--overwrite`` runs on one folder: an output written after this run started is the
    other run's fresh work and is kept; outputs from before the start are redone."""
    import crm_cli.pipeline

    data, out = tmp_path / "big", tmp_path / "out"
    for k in range(3):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", seed=k)
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0
    outputs = [out / f"p{k}_mask.png" for k in range(3)]
    for path in outputs:
        age(path, TWO_HOURS)  # made by an earlier run
    theirs = np.full((8, 8), 7, np.uint8)
    refine_files = crm_cli.pipeline.refine_files

    def other_run_finishes_p1(refiner, image, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if "p0_im" in str(image):  # while this run refines p0, the other one writes p1
            write_image(outputs[1], theirs)
        return refine_files(refiner, image, *args, **kwargs)

    monkeypatch.setattr(crm_cli.pipeline, "refine_files", other_run_finishes_p1)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--overwrite", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {item["name"]: item["status"] for item in summary["items"]} == {"p0": "ok", "p1": "skipped", "p2": "ok"}
    assert np.array_equal(np.asarray(Image.open(outputs[1])), theirs)  # the other run's output stands
    assert all(time.time() - path.stat().st_mtime < TWO_HOURS / 2 for path in outputs)
    assert sorted(path.name for path in out.iterdir()) == [path.name for path in outputs]  # no probe or lock left


def test_counts_as_done_with_overwrite_goes_by_the_run_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import locks
    from crm_cli.cli.batch import counts_as_done
    from crm_cli.locks import folder_time_ns

    output = tmp_path / "a.png"
    write_image(output, np.zeros((4, 4), np.uint8))
    age(output, 60.0)
    start = folder_time_ns(tmp_path)
    assert counts_as_done(output) == (True, None)
    assert counts_as_done(output, overwrite=True, since_ns=start) == (False, None)  # from before: redone
    write_image(output, np.zeros((4, 4), np.uint8))  # by a concurrent run, after the start
    os.utime(output, ns=(start + 1, start + 1))  # the clock's coarse tick would often stamp it `start`
    deadline = time.monotonic() + 5.0  # a clock with coarse ticks: "now" must be past that stamp
    while folder_time_ns(tmp_path) <= start + 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert counts_as_done(output, overwrite=True, since_ns=start) == (True, None)
    os.utime(output, ns=(start, start))  # the start's own tick: maybe a previous run's, so redone
    assert counts_as_done(output, overwrite=True, since_ns=start) == (False, None)
    os.utime(output, ns=(start + 1, start + 1))
    assert counts_as_done(output, overwrite=True) == (False, None)  # no start given: redo everything
    future = folder_time_ns(tmp_path) + 3600 * 10**9  # copied with its times, or a clock set back
    os.utime(output, ns=(future, future))
    assert counts_as_done(output, overwrite=True, since_ns=start) == (False, None)
    with monkeypatch.context() as patch:  # no file can be made there: redone, so the write error shows
        patch.setattr(locks, "probe_folder_time_ns", lambda folder: None)
        os.utime(output, ns=(start + 1, start + 1))  # even one a concurrent run would have stamped
        assert counts_as_done(output, overwrite=True, since_ns=start) == (False, None)
    assert counts_as_done(tmp_path / "missing.png", overwrite=True, since_ns=0) == (False, None)
    output.write_bytes(b"")  # an incomplete file is never done, however new
    assert counts_as_done(output, overwrite=True, since_ns=0) == (False, None)
    assert list(tmp_path.iterdir()) == [output]


# ---------------------------------------------------------------------------------------------
# Incomplete outputs and leftover temp files


def test_check_output_detects_empty_truncated_and_foreign_files(tmp_path: Path) -> None:
    from crm_cli.writing import check_output

    values = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    for name in ("a.png", "a.tif", "a.webp"):
        path = tmp_path / name
        write_image(path, values)
        assert check_output(path).problem is None, name
        whole = path.read_bytes()
        path.write_bytes(b"")
        assert "empty" in check_output(path).problem, name
        path.write_bytes(whole[: len(whole) * 2 // 3])
        assert check_output(path).problem is not None, name
        path.write_bytes(b"not an image at all, just some text" * 4)
        assert check_output(path).problem is not None, name


def test_batch_redoes_empty_and_truncated_outputs(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "big", tmp_path / "out"
    for k in range(3):
        write_scene_files(data / ("sub" if k == 2 else ""), f"p{k}_im", f"p{k}_seg", seed=k)
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 0
    outputs = [out / "p0_mask.png", out / "p1_mask.png", out / "sub" / "p2_mask.png"]
    finished = [path.read_bytes() for path in outputs]
    outputs[0].write_bytes(b"")
    outputs[1].write_bytes(finished[1][:100])
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["skipped"]) == (2, 1)
    warned = " ".join(result.stderr.split())  # Rich may wrap long lines
    assert str(outputs[0]) in warned and str(outputs[1]) in warned
    assert [path.read_bytes() for path in outputs] == finished  # redone byte for byte


def test_resume_never_takes_an_output_for_one_that_differs_only_in_letter_case(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``A_im`` and ``a_im`` share their output on macOS and Windows, where ``a_mask.png`` would
    pass for ``A_mask.png`` done: an existing output makes neither pair done, and is left as it is;
    the other pair resumes (skipped), and is redone with --overwrite while the two still fail."""
    (tmp_path / "Case_Probe").touch()
    if (tmp_path / "case_probe").exists():
        pytest.skip("this disk ignores letter case in file names")
    (tmp_path / "Case_Probe").unlink()
    # The photos need a disk that tells A from a; the output disk is made one that does not (macOS, Windows).
    monkeypatch.setattr("crm_cli.pairing.name_folding", lambda folder: NameFolding(case=True, unicode_form=True))
    data, out = tmp_path / "big", tmp_path / "out"
    for seed, stem in enumerate(("A", "a", "b")):
        write_scene_files(data, f"{stem}_im", f"{stem}_seg", seed=seed)
    assert runner.invoke(app, batch_args(data, out, tiny_weights)).exit_code == 1
    left = (out / "b_mask.png").read_bytes()
    (out / "a_mask.png").write_bytes(left)  # a finished output, as an earlier run or a copy left it
    for extra, status in (((), "skipped"), (("--overwrite",), "ok")):
        result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json", *extra))
        assert result.exit_code == 1, result.output
        summary = json.loads(result.stdout)
        assert {item["name"]: item["status"] for item in summary["items"]} == {"A": "failed", "a": "failed",
                                                                              "b": status}
        assert (out / "a_mask.png").read_bytes() == left and not (out / "A_mask.png").exists()


def test_batch_removes_only_its_own_old_temp_files(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "big", tmp_path / "out"
    write_scene_files(data, "p0_im", "p0_seg")
    out.mkdir()
    old_temp = out / ".p0_mask.png.0123456789ab.tmp"  # a write killed half-way, long ago
    young_temp = out / ".p0_mask.png.ba9876543210.tmp"  # perhaps being written right now
    others = [out / ".p0_mask.png.xyz.tmp", out / ".notes.0123456789ab.tmp", out / "keep.tmp",
              out / ".other.png.0123456789ab.tmp"]
    for path in [old_temp, young_temp, *others]:
        path.write_bytes(b"partial")
    for path in [old_temp, *others]:
        age(path, TWO_HOURS)
    result = runner.invoke(app, batch_args(data, out, tiny_weights))
    assert result.exit_code == 0, result.output
    assert not old_temp.exists()
    assert young_temp.exists() and all(path.exists() for path in others)


# ---------------------------------------------------------------------------------------------
# crm eval: checks before the model, keeps going


def write_eval_pair(folder: Path, name: str, seed: int = 0) -> None:
    write_scene_files(folder, f"{name}_im", f"{name}_seg", seed=seed)
    gt = (np.asarray(Image.open(folder / f"{name}_seg.png")) > 127).astype(np.uint8) * 255
    Image.fromarray(gt).save(folder / f"{name}_gt.png")


def test_eval_keeps_going_past_bad_pairs_and_reports_them(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "big", tmp_path / "out"
    for k, name in enumerate(("a", "b", "c", "d")):
        write_eval_pair(data, name, seed=k)
    Image.fromarray(np.zeros((50, 200), np.uint8)).save(data / "b_gt.png")  # wrong size: found before refining
    image = data / "c_im.png"  # header fine, pixels cut off: found while refining
    Image.open(data / "c_im.jpg").save(image)
    (data / "c_im.jpg").unlink()
    image.write_bytes(image.read_bytes()[:2000])
    for quiet in ([], ["-q"]):
        result = runner.invoke(app, ["eval", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu",
                                     "--json", *quiet])
        assert result.exit_code == 1, result.output
        summary = json.loads(result.stdout)
        assert summary["n"] == 2 and [image["name"] for image in summary["images"]] == ["a", "d"]
        assert summary["failed"] == 2 and [f["name"] for f in summary["failures"]] == ["b", "c"]
        failed_lines = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
        assert len(failed_lines) == 2, result.stderr
        assert "b_gt.png" in failed_lines[0] and "c_im.png" in failed_lines[1]
        assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "d_mask.png"]


def test_eval_refuses_an_unwritable_output_before_the_model_loads(tmp_path: Path) -> None:
    data = tmp_path / "big"
    write_eval_pair(data, "a")
    blocker = file_in_the_way(tmp_path)
    # Weights that do not exist: had the model been loaded first, the error would be about them.
    result = runner.invoke(app, ["eval", str(data), "-o", str(blocker / "sub"), "-w", str(tmp_path / "no.pt"),
                                 "-d", "cpu"])
    assert result.exit_code == 1
    assert "notes.txt is a file, not a folder" in " ".join(result.stderr.split())


def test_evaluate_reports_a_failing_sample_and_scores_the_others(tmp_path: Path) -> None:
    class PickyRefiner:
        def refine_detailed(self, image, mask, ratios=None, keep_stages=False, preset=None):  # noqa: ANN001, ANN201
            if image[0, 0, 0] == 1:
                raise RuntimeError("decoder exploded")
            from crm_cli.engine import RefineResult

            return RefineResult(probability=mask.astype(np.float32), stages=[], ratios=(1.0,))

    mask = np.zeros((20, 30), np.float32)
    mask[5:15, 5:25] = 1.0
    gt = (mask * 255).astype(np.uint8)
    samples = [Sample(name, np.full((20, 30, 3), value, np.uint8), mask, gt) for name, value in
               (("good", 0), ("bad", 1), ("also good", 0))]
    errors: list[tuple[str, str]] = []
    result = evaluate(PickyRefiner(), samples, on_error=lambda name, exc: errors.append((name, str(exc))))
    assert errors == [("bad", "decoder exploded")]
    assert [image["name"] for image in result.images] == ["good", "also good"] and result.count == 2
    with pytest.raises(RuntimeError, match="exploded"):  # without on_error, as before
        evaluate(PickyRefiner(), samples)
    # Reading: a pair whose files cannot be read is reported, the next one still comes.
    missing = FilePair("gone", tmp_path / "x_im.png", tmp_path / "x_seg.png", Path("x.png"), tmp_path / "x_gt.png")
    seen: list[str] = []
    assert list(folder_samples([missing], on_error=lambda name, exc: seen.append(name))) == []
    assert seen == ["gone"]


# ---------------------------------------------------------------------------------------------
# Writing: errors name the user's path; GIF is not supported


def test_write_error_under_a_file_names_the_output_not_the_temp_file(tmp_path: Path) -> None:
    blocker = file_in_the_way(tmp_path)
    for target in (blocker / "o.png", blocker / "sub" / "o.png"):
        with pytest.raises(ImageWriteError) as caught:
            write_image(target, np.zeros((4, 4), np.uint8))
        message = str(caught.value)
        assert str(target) in message and ".tmp" not in message
        assert f"{blocker} is a file, not a folder" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_gif_output_is_not_supported_rather_than_lossy() -> None:
    with pytest.raises(OutputNameError) as caught:
        output_format("o.gif")
    message = str(caught.value)
    assert "not supported" in message and "lossy" not in message and ".png" in message and ".webp" in message


# ---------------------------------------------------------------------------------------------
# Failures are shown with -q; fatal errors still give a JSON record


def test_batch_quiet_still_names_every_failed_pair(tmp_path: Path) -> None:
    data = tmp_path / "big"
    write_scene_files(data, "lonely_im", "unused")  # an image without a mask
    (data / "unused.png").unlink()
    write_scene_files(data, "broken_im", "broken_seg")
    (data / "broken_im.jpg").write_bytes(b"not a jpeg")  # fails the checks before the model
    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), "-w", str(tmp_path / "no.pt"),
                                 "-q"])
    assert result.exit_code == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2, result.stderr
    assert any("lonely_im.jpg" in line for line in failed) and any("broken_im.jpg" in line for line in failed)


def test_coco_quiet_still_names_instances_that_cannot_start(tmp_path: Path) -> None:
    annotations, images = coco_inputs(tmp_path, [
        {"id": 17, "image_id": 5, "category_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]], "iscrowd": 0}])
    result = runner.invoke(app, ["coco", str(annotations), "--images", str(images), "-o", str(tmp_path / "o.json"),
                                 "-q"])
    assert result.exit_code == 1
    assert "instance 17" in result.stderr and "image_id 5" in result.stderr


def test_coco_output_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    annotations, images = coco_inputs(tmp_path)
    blocker = file_in_the_way(tmp_path)
    result = runner.invoke(app, ["coco", str(annotations), "--images", str(images), "-o",
                                 str(blocker / "x.json")])
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert "notes.txt is a file, not a folder" in message and "Errno" not in message


def test_batch_fatal_error_with_json_prints_a_failure_record(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["batch", str(empty), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 2  # no pairs: a usage error, with the record all the same
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and "no pairs found" in record["error"]
    assert (record["done"], record["failed"], record["items"]) == (0, 0, [])


def test_a_folder_without_pairs_is_a_usage_error_in_batch_eval_and_score(tmp_path: Path) -> None:
    """The folder given holds nothing to work on: exit 2 with one error line and the hint, in every command."""
    empty, plain, no_gt, folders = tmp_path / "empty", tmp_path / "plain", tmp_path / "no_gt", tmp_path / "folders"
    empty.mkdir()
    write_scene_files(plain, "x", "y")  # masks, but no <name>_gt
    write_scene_files(no_gt, "a_im", "a_seg")
    (folders / "images").mkdir(parents=True)
    (folders / "masks").mkdir()
    commands = [["batch", str(empty), "-o", str(tmp_path / "out")],
                ["batch", str(folders), "-o", str(tmp_path / "out")],
                ["eval", str(empty)], ["eval", str(no_gt)],
                ["score", str(plain), str(empty)], ["score", str(plain), str(plain)]]
    for args in commands:
        result = runner.invoke(app, args)
        message = " ".join(result.stderr.split())
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.count("error:") == 1 and "no pairs found" in message and "--help" in message, args
    assert not (tmp_path / "out").exists()


def test_eval_and_coco_fatal_errors_with_json_print_a_failure_record(tmp_path: Path) -> None:
    data = tmp_path / "big"
    write_scene_files(data, "a_im", "a_seg")  # no a_gt: nothing to score, a usage error
    result = runner.invoke(app, ["eval", str(data), "--json"])
    assert result.exit_code == 2
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and "ground truth" in record["error"] and record["n"] == 0
    annotations, images = coco_inputs(tmp_path)
    blocker = file_in_the_way(tmp_path)
    result = runner.invoke(app, ["coco", str(annotations), "--images", str(images), "-o", str(blocker / "x.json"),
                                 "--json"])
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and "is a file, not a folder" in record["error"]


def test_coco_sidecar_under_a_file_names_the_file(tmp_path: Path) -> None:
    from crm_cli.coco import Sidecar

    blocker = file_in_the_way(tmp_path)
    with pytest.raises(OSError) as caught:
        Sidecar(blocker / "x.json", {"input_sha256": "0"}).open({})
    message = str(caught.value)
    assert f"{blocker} is a file, not a folder" in message and "Errno" not in message and ".tmp" not in message


def test_batch_reports_a_pair_that_runs_out_of_memory_and_goes_on(tiny_weights: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A MemoryError while one pair refines fails that pair, not the run (no traceback)."""
    import crm_cli.pipeline

    data, out = tmp_path / "big", tmp_path / "out"
    for k in range(2):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", seed=k)
    refine_files = crm_cli.pipeline.refine_files

    def out_of_memory_for_p0(refiner, image, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if "p0_im" in str(image):
            raise MemoryError("Unable to allocate 3.2 GiB")
        return refine_files(refiner, image, *args, **kwargs)

    monkeypatch.setattr(crm_cli.pipeline, "refine_files", out_of_memory_for_p0)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception  # no traceback
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (1, 1)
    # With the advice crm refine gives the same error.
    assert [item["error"] for item in summary["items"] if item["status"] == "failed"] == [
        "Unable to allocate 3.2 GiB; try a smaller --tile-size, the 'fast' preset, or a smaller image"]
