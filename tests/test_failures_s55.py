"""Session 55: the failure audit's findings. Each test of a mend fails on the code before it."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scene_files, write_training_pairs
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.writing import write_failure

runner = CliRunner()
TWO_HOURS = 2 * 3600.0  # older than the stale-lock age: no live writer's


def flat(text: str) -> str:
    """``text`` with Rich's line wrapping undone."""
    return " ".join(text.split())


def write_eval_folder(folder: Path, names: tuple[str, ...], size: tuple[int, int] = (96, 128)) -> Path:
    """A BIG-layout folder: ``<name>_im.jpg``, ``<name>_seg.png`` and ``<name>_gt.png`` per name."""
    for seed, name in enumerate(names):
        write_scene_files(folder, f"{name}_im", f"{name}_seg", size=size, seed=seed)
        gt = (np.asarray(Image.open(folder / f"{name}_seg.png")) > 127).astype(np.uint8) * 255
        Image.fromarray(gt).save(folder / f"{name}_gt.png")
    return folder


def failing_writes(monkeypatch: pytest.MonkeyPatch, fails: set[str], code: int) -> list[str]:
    """Make write_png fail with errno ``code`` for outputs whose name is in ``fails`` (every one from the
    first of them on, for a full disk), as write_atomic reports it; returns the names it was asked to write."""
    from crm_cli import writing

    real = writing.write_png
    asked: list[str] = []

    def write_png(path: str | Path, *args: object, **kwargs: object) -> None:
        asked.append(Path(path).name)
        if Path(path).name in fails:
            if code in writing.OUT_OF_SPACE_ERRNOS:
                fails.update(["a_mask.png", "b_mask.png", "c_mask.png"])
            raise write_failure(Path(path), OSError(code, os.strerror(code)))
        real(path, *args, **kwargs)

    monkeypatch.setattr(writing, "write_png", write_png)
    return asked


def test_eval_scores_a_pair_whose_mask_cannot_be_written(tiny_weights: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair refined and scored was left out of the scores (n=2 of 3) when its mask could not be
    written: the scores need no file. Its failed write is named, with its reason, and exits 1."""
    data, out = write_eval_folder(tmp_path / "big", ("a", "b", "c")), tmp_path / "out"
    failing_writes(monkeypatch, {"b_mask.png"}, errno.EACCES)
    result = runner.invoke(app, ["eval", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "partial" and record["n"] == 3
    assert [image["name"] for image in record["images"]] == ["a", "b", "c"]
    assert record["failed"] == 0 and record["failures"] == []
    error = f"cannot write {out / 'b_mask.png'}: permission denied"
    assert record["write_failures"] == [{"name": "b", "output": str(out / "b_mask.png"), "error": error}]
    assert record["written"] == 2 and record["not_written"] == []
    assert f"failed: b: {error}" in flat(result.stderr)
    assert sorted(path.name for path in out.iterdir()) == ["a_mask.png", "c_mask.png"]


def test_eval_stops_writing_at_a_full_disk_and_scores_every_pair(tiny_weights: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full disk the pairs whose masks could not be written were left out of the scores; now every
    pair is scored, the writing stops at the first mask that finds no room (as a batch stops there), and
    the record and the last line say which masks were not written."""
    data, out = write_eval_folder(tmp_path / "big", ("a", "b", "c")), tmp_path / "out"
    asked = failing_writes(monkeypatch, {"b_mask.png"}, errno.ENOSPC)
    result = runner.invoke(app, ["eval", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "partial" and record["n"] == 3 and record["failed"] == 0
    assert [failure["name"] for failure in record["write_failures"]] == ["b"]
    assert record["not_written"] == [{"name": "c", "output": str(out / "c_mask.png")}]
    assert asked == ["a_mask.png", "b_mask.png"]  # c's write was not tried
    assert flat(result.stderr.strip().splitlines()[-1]) == (
        f"error: the disk holding {out} is full (no space left on device): crm eval stopped writing refined "
        "masks at b (1 more pair scored, not written); free space, then run the same command again to write them")


def leftover(output: Path, digits: str, old: bool) -> Path:
    """A write_atomic temp file of ``output`` as a killed write leaves it; ``old``: untouched for two hours."""
    temp = output.parent / f".{output.name}.{digits}.tmp"
    temp.parent.mkdir(parents=True, exist_ok=True)
    temp.write_bytes(b"half a file")
    if old:
        then = time.time() - TWO_HOURS
        os.utime(temp, (then, then))
    return temp


def test_refine_eval_and_coco_remove_their_outputs_old_leftover_temp_files(tiny_weights: Path,
                                                                          tmp_path: Path) -> None:
    """Only crm batch removed the temp files that killed writes leave; crm refine, crm eval -o and crm
    coco left them forever. Now each removes its outputs' old ones (a young one may be a live
    writer's, and another file's are not theirs), and says so."""
    image, mask = write_scene_files(tmp_path / "one", size=(60, 80))  # passed through: no model needed
    output = tmp_path / "refined.png"
    old, young = leftover(output, "0123456789ab", True), leftover(output, "ba9876543210", False)
    other = leftover(tmp_path / "other.png", "0123456789ab", True)
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert not old.exists() and young.exists() and other.exists() and output.exists()
    assert f"removed 1 leftover temp file(s) of interrupted writes, e.g. {old}" in flat(result.stderr)

    data, out = write_eval_folder(tmp_path / "big", ("a",)), tmp_path / "out"
    old = leftover(out / "a_mask.png", "0123456789ab", True)
    result = runner.invoke(app, ["eval", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert not old.exists() and (out / "a_mask.png").exists()
    assert "removed 1 leftover temp file(s)" in flat(result.stderr)

    annotations, images = tmp_path / "ann.json", tmp_path / "images"
    annotations.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    images.mkdir()
    refined = tmp_path / "refined.json"
    temps = [leftover(refined, "0123456789ab", True), leftover(tmp_path / "refined.json.partial.jsonl",
                                                               "0123456789ab", True)]
    result = runner.invoke(app, ["coco", str(annotations), "--images", str(images), "-o", str(refined)])
    assert result.exit_code == 0, result.output
    assert not any(temp.exists() for temp in temps) and refined.exists()
    assert "removed 2 leftover temp file(s)" in flat(result.stderr)


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu", "--threads", "1"]


# 1. A reader of stderr that goes away ---------------------------------------------------------------------------


def _run_with_stderr_gone(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """``crm ARGS`` with stderr a pipe whose reader has closed (``2>&1 >out.json | grep -m1 error``
    once grep has its line): every write to stderr fails with EPIPE."""
    reader, writer = os.pipe()
    os.close(reader)
    try:
        return subprocess.run([sys.executable, "-m", "crm_cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=writer, stdin=subprocess.DEVNULL, timeout=300)
    finally:
        os.close(writer)


def test_a_closed_stderr_stops_no_batch_and_loses_no_record(tiny_weights: Path, tmp_path: Path) -> None:
    """crm batch stopped at its first line on stderr (rc 1, an empty stdout): the broken stderr was
    taken for stdout's reader going away."""
    write_training_pairs(tmp_path / "data", 3)
    done = _run_with_stderr_gone(["batch", "data", "-o", "out", "--json", *cpu(tiny_weights)], tmp_path)
    assert done.returncode == 0
    record = json.loads(done.stdout)
    assert record["status"] == "ok" and record["done"] == 3
    assert [item["output"] for item in record["items"]] == [f"out/p0{k}.png" for k in range(3)]
    assert sorted(os.listdir(tmp_path / "out")) == ["p00.png", "p01.png", "p02.png"]


def test_a_closed_stderr_keeps_the_score_record(tmp_path: Path) -> None:
    """crm score --json printed nothing and exited 1 when stderr's reader was gone."""
    _, mask = write_scene_files(tmp_path)
    done = _run_with_stderr_gone(["score", str(mask), str(mask), "--json"], tmp_path)
    assert done.returncode == 0
    record = json.loads(done.stdout)
    assert record["status"] == "ok" and record["iou"] == 1.0


# 2. A full disk under --overwrite -------------------------------------------------------------------------------


def test_a_full_disk_under_overwrite_does_not_promise_to_go_on(tiny_weights: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The error line said "run the same command again to go on (finished outputs are kept)", but a
    rerun with --overwrite refines every pair again."""
    import errno

    import crm_cli.writing as writing

    data, out = write_training_pairs(tmp_path / "data", 3), tmp_path / "out"
    real_write = writing.write_atomic
    writes: list[Path] = []

    def disk_fills(target: Path, payload: bytes) -> None:
        writes.append(Path(target))
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(target, payload)

    monkeypatch.setattr(writing, "write_atomic", disk_fills)
    args = ["batch", str(data), "-o", str(out), "--json", *cpu(tiny_weights)]
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 1, result.output
    stopped = (f"the disk holding {out} is full (no space left on device): batch stopped, 1 pair not attempted; "
               "free space, then run the same command again")
    assert json.loads(result.stdout)["error"] == f"{stopped} (with --overwrite it refines every pair again)"
    assert flat(result.stderr).endswith(f"error: {stopped} (with --overwrite it refines every pair again)")
    writes.clear()
    result = runner.invoke(app, args)  # without --overwrite the promise holds, as before
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["error"].endswith("again to go on (finished outputs are kept)")


# 3. An output that is a pipe or a device ------------------------------------------------------------------------


def test_batch_fails_a_pair_whose_output_is_a_pipe_or_a_device(tiny_weights: Path, tmp_path: Path) -> None:
    """A pipe in the output folder was opened to check it ("incomplete (empty file)"), which blocked
    for ever; a link to /dev/null was "written" on every run, and nothing kept."""
    write_training_pairs(tmp_path / "data", 3)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "p00.png")
    (out / "p01.png").symlink_to(os.devnull)
    done = subprocess.run([sys.executable, "-m", "crm_cli", "batch", "data", "-o", "out", "--json", *cpu(tiny_weights)],
                          cwd=tmp_path, capture_output=True, stdin=subprocess.DEVNULL, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    pipe = "out/p00.png is a pipe, not a regular file; remove it to refine p00"
    device = (f"out/p01.png is a character device (a link to {os.devnull}), not a regular file; "
              "remove it to refine p01")
    record = json.loads(done.stdout)
    assert [(item["name"], item["status"], item.get("error")) for item in record["items"]] == [
        ("p00", "failed", pipe), ("p01", "failed", device), ("p02", "ok", None)]
    assert f"failed: p00: {pipe}" in flat(done.stderr) and f"failed: p01: {device}" in flat(done.stderr)
    assert "incomplete" not in done.stderr
    assert (out / "p00.png").is_fifo() and os.readlink(out / "p01.png") == os.devnull  # left as they were


# 4. An output folder that is a link to nothing ------------------------------------------------------------------


def test_an_output_folder_linking_to_nothing_fails_the_write_check(tiny_weights: Path, tmp_path: Path) -> None:
    """The check before the model loads passed it; then every write failed, "file exists"."""
    data = write_training_pairs(tmp_path / "data", 1)
    image, mask = data / "images" / "p00.jpg", data / "masks" / "p00.png"
    link = tmp_path / "dl"
    link.symlink_to(tmp_path / "dlt")
    nowhere = f"{link} links to {tmp_path / 'dlt'}, which does not exist"

    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(link / "x.png"), "--json",
                                 *cpu(tiny_weights)])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["error"] == f"cannot write {link / 'x.png'}: {nowhere}"
    assert flat(result.stderr) == f"error: cannot write {link / 'x.png'}: {nowhere}"  # before the model loads

    result = runner.invoke(app, ["batch", str(data), "-o", str(link), "--json", *cpu(tiny_weights)])
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert (record["status"], record["error"]) == ("failed", f"cannot write into {link}: {nowhere}")
    assert flat(result.stderr).endswith(f"error: cannot write into {link}: {nowhere}")
    assert "device:" not in result.stderr and not (tmp_path / "dlt").exists()


# 5. A read-only file system -------------------------------------------------------------------------------------


def test_a_read_only_file_system_is_named_so(tiny_weights: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """It was "permission denied", which sends the user to chmod; root writes anywhere but on a
    read-only mount, so both are stood in for."""
    data = write_training_pairs(tmp_path / "data", 1)
    image, mask = data / "images" / "p00.jpg", data / "masks" / "p00.png"
    mount = tmp_path / "mnt"
    mount.mkdir()
    real_access, real_statvfs = os.access, os.statvfs

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != mount and real_access(path, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly() if Path(path) == mount else real_statvfs(path))
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(mount / "x.png"), "--json",
                                 *cpu(tiny_weights)])
    assert result.exit_code == 1, result.output
    message = f"cannot write {mount / 'x.png'}: {mount} is on a read-only file system"
    assert json.loads(result.stdout)["error"] == message and flat(result.stderr) == f"error: {message}"
    result = runner.invoke(app, ["batch", str(data), "-o", str(mount / "out"), *cpu(tiny_weights)])
    assert result.exit_code == 1, result.output
    read_only = f"{mount} is on a read-only file system"
    assert flat(result.stderr).endswith(f"error: cannot write into {mount / 'out'}: {read_only}")
    monkeypatch.setattr(os, "statvfs", real_statvfs)  # a folder of its own not writable: permission, as before
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(mount / "x.png"), *cpu(tiny_weights)])
    assert flat(result.stderr) == f"error: cannot write {mount / 'x.png'}: permission denied on {mount}"


# 6. The help or the version on a full disk ----------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("args", [["--help"], ["refine", "--help"], ["--version"]])
def test_help_and_version_on_a_full_disk_end_in_one_line(args: list[str]) -> None:
    """They ended in a traceback (OSError ENOSPC from click's echo), exit 1."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "crm_cli", *args], stdout=full, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["error: cannot write to standard output: No space left on device"]


# 7. Batch's failures name the paths as the user gave them -------------------------------------------------------


def test_batch_failures_name_the_output_as_given(tiny_weights: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair's failed write named the output by its absolute path ("cannot write /abs/.../out/p01.png"),
    while its item's "output" and -o were relative."""
    import errno

    import crm_cli.writing as writing

    write_training_pairs(tmp_path / "data", 2)
    monkeypatch.chdir(tmp_path)
    real_write = writing.write_atomic

    def refused(target: Path, payload: bytes) -> None:
        if Path(target).name == "p01.png":
            raise writing.write_failure(Path(target), PermissionError(errno.EACCES, "Permission denied"))
        real_write(target, payload)

    monkeypatch.setattr(writing, "write_atomic", refused)
    result = runner.invoke(app, ["batch", "data", "-o", "out", "--json", *cpu(tiny_weights)])
    assert result.exit_code == 1, result.output
    failed = [item for item in json.loads(result.stdout)["items"] if item["status"] == "failed"]
    assert [(item["output"], item["error"]) for item in failed] == [
        ("out/p01.png", "cannot write out/p01.png: permission denied")]
    assert "failed: p01: cannot write out/p01.png: permission denied" in flat(result.stderr)
    assert str(tmp_path) not in result.stderr


def test_an_output_folder_in_a_loop_of_links_is_named_so(tmp_path: Path) -> None:
    """The review: la -> lb -> la was called "la links to lb, which does not exist", yet lb exists."""
    from crm_cli.cli.checks import unwritable_reason

    (tmp_path / "la").symlink_to("lb")
    (tmp_path / "lb").symlink_to("la")
    assert unwritable_reason(tmp_path / "la" / "x.png") == (
        f"cannot write {tmp_path / 'la' / 'x.png'}: {tmp_path / 'la'} links to lb, a loop of links that never "
        "reaches a folder")
