"""Writing outputs (s37): output names of 238-255 bytes are written (their temp and lock files are
shortened to fit, each still its output's own, and still recognised as crm's), a name longer than the
output disk allows fails before the model loads, a full disk stops `crm batch` instead of refining every
pair left only to fail its write, and `crm batch --json` lists its items in the input order."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import flat, write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.locks import OutputLock, lock_path
from crm_cli.writing import ImageWriteError, leftover_temp_files, temp_path, write_png

runner = CliRunner()
SMALL = (64, 80)  # under the 96-px side crm refines: the mask is written unchanged, no model loads
TWO_HOURS = 2 * 3600.0
NAME_MAX = 255  # the limit of the file systems tests run on (ext4, tmpfs, APFS)


def skip_unless_long_names(folder: Path) -> None:
    """Skip where the test folder's file system allows names shorter than 255 bytes."""
    if os.pathconf(folder, "PC_NAME_MAX") < NAME_MAX:
        pytest.skip("the test folder's file system allows names shorter than 255 bytes")


def long_name(size: int, tail: str = "", suffix: str = ".png") -> str:
    """A file name of ``size`` bytes (UTF-8) with two-byte letters in it, ending in ``tail`` + ``suffix``."""
    head = "é" * 20  # 40 bytes
    fill = size - len(os.fsencode(head + tail + suffix))
    return head + "x" * fill + tail + suffix


def size_of(name: str) -> int:
    return len(os.fsencode(name))


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def hidden(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def batch_args(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["batch", str(data), "-o", str(out), "-w", str(weights), "-d", "cpu", *extra]


# --- 1. long output names -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [238, 250, 255])
def test_an_output_name_up_to_the_limit_is_written_atomically(tmp_path: Path, size: int) -> None:
    """Was: the temp file ``.NAME.<12 hex>.tmp`` took 18 bytes more than NAME, so a name of 238
    bytes or more failed with "file name too long" after all the work."""
    skip_unless_long_names(tmp_path)
    target = tmp_path / long_name(size)
    assert size_of(target.name) == size
    write_png(target, np.full((4, 5), 255, np.uint8))
    assert target.is_file() and hidden(tmp_path) == []


def test_temp_names_of_long_outputs_fit_differ_and_are_recognised_as_leftovers(tmp_path: Path) -> None:
    skip_unless_long_names(tmp_path)
    first, second = tmp_path / long_name(250, "a"), tmp_path / long_name(250, "b")  # the same first 244 bytes
    temps = [temp_path(first), temp_path(second)]
    assert all(size_of(temp.name) <= NAME_MAX for temp in temps)
    assert all(temp.name.startswith(".") and temp.name.endswith(".tmp") for temp in temps)
    assert temps[0].name[:-17] != temps[1].name[:-17]  # each its own output's (the random part aside)
    assert temp_path(first).name[:-17] == temps[0].name[:-17]  # and the same for every write of one output
    for temp in temps:
        temp.write_bytes(b"half a PNG")
        age(temp, TWO_HOURS)
    # A write killed half-way leaves its temp file, which a later batch removes: found by its output's name.
    assert leftover_temp_files(tmp_path, {first.name}, 60.0) == [temps[0]]
    assert leftover_temp_files(tmp_path, {first.name, second.name}, 60.0) == sorted(temps)
    assert leftover_temp_files(tmp_path, {"other.png"}, 60.0) == []
    # A short name's temp file is named as before.
    assert temp_path(tmp_path / "a.png").name.startswith(".a.png.")


def test_the_lock_of_a_long_output_fits_is_its_own_and_a_stale_one_is_taken_over(tmp_path: Path) -> None:
    """Was: the lock ``.NAME.lock`` (6 bytes more) could not be made for a name over 249 bytes, and
    the guard of a stale lock's takeover (``.NAME.lock.takeover``, 15 more) for one over 240."""
    skip_unless_long_names(tmp_path)
    first, second = tmp_path / long_name(250, "a"), tmp_path / long_name(250, "b")
    assert size_of(lock_path(first).name) <= NAME_MAX and lock_path(first) != lock_path(second)
    assert lock_path(first).name.startswith(".") and lock_path(first).name.endswith(".lock")
    assert lock_path(tmp_path / "a.png").name == ".a.png.lock"  # short names' locks as before
    lock = OutputLock(first)
    assert lock.acquire()
    assert lock_path(first).is_file() and not OutputLock(first).acquire()
    assert OutputLock(second).acquire()  # another output's lock, though the names begin alike
    lock.release()
    assert not lock_path(first).exists()
    # A stale lock (a dead process's) of a 245-byte name, whose lock name fits but whose takeover
    # guard would not, is taken over.
    middle = tmp_path / long_name(245)
    stale = lock_path(middle)
    assert stale.name == f".{middle.name}.lock"
    stale.write_text(f"999999999 {os.uname().nodename}\n")
    age(stale, TWO_HOURS)
    taker = OutputLock(middle)
    assert taker.acquire()
    assert stale.read_text().split()[0] == str(os.getpid())
    taker.release()
    assert [name for name in hidden(tmp_path) if name.endswith(".takeover")] == []


def test_batch_refines_and_resumes_a_250_byte_output_name(tiny_weights: Path, tmp_path: Path) -> None:
    """A BIG-layout photo ``<name>_im.jpg`` whose output ``<name>_mask.png`` is 250 bytes long: refined,
    skipped on a rerun, and a leftover temp file of its interrupted write is removed."""
    skip_unless_long_names(tmp_path)
    data, out = tmp_path / "data", tmp_path / "out"
    stem = long_name(250, suffix="_mask.png").removesuffix("_mask.png")
    write_scene_files(data, f"{stem}_im", f"{stem}_seg", size=SMALL)
    write_scene_files(data, "short_im", "short_seg", size=SMALL, seed=1)
    output = out / f"{stem}_mask.png"
    assert size_of(output.name) == 250
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json", "-q"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (2, 0)
    assert output.is_file() and hidden(out) == []
    # A write of it killed half-way, long ago: its temp file is removed by the next run, which skips
    # both outputs.
    leftover = temp_path(output)
    leftover.write_bytes(b"half a PNG")
    age(leftover, TWO_HOURS)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 2
    assert "removed 1 leftover temp file(s)" in flat(result.stderr)
    assert hidden(out) == []


def test_batch_fails_an_output_name_longer_than_the_output_disk_allows_before_the_model_loads(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An output folder on a disk with shorter names than the photos' (eCryptfs allows 143 bytes,
    imitated here): the pair whose output name does not fit fails before any model is loaded, naming
    the output, the limit and the photo to rename; the others are refined."""
    from crm_cli.cli.options import RefinerOptions

    data, out = tmp_path / "data", tmp_path / "out"
    long_stem = "p" * 150
    write_scene_files(data, f"{long_stem}_im", f"{long_stem}_seg", size=(96, 128))
    write_scene_files(data, "short_im", "short_seg", size=SMALL, seed=1)
    monkeypatch.setattr(os, "pathconf", lambda path, name: 143 if name == "PC_NAME_MAX" else NAME_MAX)
    loads: list[object] = []
    monkeypatch.setattr(RefinerOptions, "load", lambda self, quiet=False: loads.append(self))
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 1, result.output
    assert loads == []  # the only pair that needed the model failed first
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert items["short"]["status"] == "ok"
    failed = items[long_stem]
    assert failed["status"] == "failed"
    assert failed["error"] == (f"cannot write {out / (long_stem + '_mask.png')}: its file name is 159 bytes long, "
                               f"and the file system allows at most 143; give the photo "
                               f"{data / (long_stem + '_im.jpg')} a shorter name")


# --- 2. a full disk --------------------------------------------------------------------------------


def test_a_failed_write_keeps_its_errno_and_names_the_output(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller can tell a full disk from the other write failures (the message is as before)."""
    def no_room(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "a.png"
    monkeypatch.setattr(os, "replace", no_room)
    with pytest.raises(ImageWriteError) as caught:
        write_png(target, np.zeros((4, 4), np.uint8))
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"cannot write {target}: no space left on device"
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(OutputLock, "_acquire", no_room)
    with pytest.raises(ImageWriteError) as caught:
        OutputLock(target).acquire()
    assert caught.value.errno == errno.ENOSPC and str(caught.value) == f"cannot write {target}: no space left on device"


@pytest.mark.parametrize("code", [errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)])
def test_a_full_disk_stops_the_batch_and_leaves_the_rest_to_do(tiny_weights: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Was: every pair left was refined and failed at its write, one after the other. Now the pair
    whose write found no room fails, the pairs after it are not attempted (``todo`` in --json, counted,
    as --dry-run lists pairs to do), and the run exits 1 with an error naming the folder."""
    import crm_cli.writing as writing

    data, out = tmp_path / "data", tmp_path / "out"
    for k in range(4):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", size=SMALL, seed=k)
    real_write = writing.write_atomic
    writes: list[Path] = []

    def disk_fills(target: Path, payload: bytes) -> None:
        writes.append(Path(target))
        if len(writes) == 1:
            real_write(target, payload)
            return
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writing, "write_atomic", disk_fills)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 1, result.output
    assert [path.name for path in writes] == ["p0_mask.png", "p1_mask.png"]  # p2 and p3 not attempted
    record = json.loads(result.stdout)
    assert [(item["name"], item["status"]) for item in record["items"]] == [
        ("p0", "ok"), ("p1", "failed"), ("p2", "todo"), ("p3", "todo")]
    assert (record["done"], record["failed"], record["todo"]) == (1, 1, 2)
    assert record["status"] == "failed"
    where = (f"the disk quota for {out} is used up" if code != errno.ENOSPC else f"the disk holding {out} is full")
    assert record["error"].startswith(f"{where} ({os.strerror(code).lower()}): batch stopped, 2 pairs not attempted")
    assert all("out_of_space" not in item for item in record["items"])
    stderr = flat(result.stderr)
    assert "batch: 1 refined, 0 skipped (already done), 1 failed, 2 not attempted" in stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the disk")
    assert (out / "p0_mask.png").is_file() and hidden(out) == []
    # Once there is room again, the same command goes on where it stopped.
    monkeypatch.undo()
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json", "-q"))
    assert result.exit_code == 0, result.output
    rerun = json.loads(result.stdout)
    assert (rerun["done"], rerun["skipped"], rerun["failed"]) == (3, 1, 0) and "todo" not in rerun


# --- 3. --json in the input order -------------------------------------------------------------------


def test_batch_json_lists_its_items_in_the_input_order(tiny_weights: Path, tmp_path: Path) -> None:
    """Was: the failures of pairing first, then the outputs skipped as done, then those refined. Now
    every item comes in the order of the pairs (a photo without its mask among them by its path), as
    --dry-run lists them, and each has its status and paths."""
    data, out = tmp_path / "data", tmp_path / "out"
    for k, stem in enumerate("abcd"):
        write_scene_files(data, f"{stem}_im", f"{stem}_seg", size=SMALL, seed=k)
    assert runner.invoke(app, batch_args(data, out, tiny_weights, "-q")).exit_code == 0
    (out / "a_mask.png").unlink()
    (out / "c_mask.png").unlink()
    write_scene_files(data, "bb_im", "bb_unused", size=SMALL)  # a photo without its mask
    expected = ["a", "b", "bb", "c", "d"]
    dry = runner.invoke(app, batch_args(data, out, tiny_weights, "--json", "--dry-run"))
    assert [(item["name"], item["status"]) for item in json.loads(dry.stdout)["items"]] == [
        ("a", "todo"), ("b", "skipped"), ("bb", "failed"), ("c", "todo"), ("d", "skipped")]
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 1, result.output  # the photo without its mask fails
    items = json.loads(result.stdout)["items"]
    assert [(item["name"], item["status"]) for item in items] == [
        ("a", "ok"), ("b", "skipped"), ("bb", "failed"), ("c", "ok"), ("d", "skipped")]
    assert all({"name", "image", "mask", "output", "status"} <= item.keys() for item in items)
    assert [Path(item["image"]).name for item in items] == [f"{name}_im.jpg" for name in expected]


@pytest.mark.parametrize("folder_exists", [True, False])
def test_refine_refuses_an_output_name_over_the_limit_before_the_model_loads(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder_exists: bool) -> None:
    """crm refine -o NAME with NAME over 255 bytes: one line naming the output and the limit, exit 1,
    and no model loaded (the check runs before), whether or not the output's folder exists yet."""
    from crm_cli.cli.options import RefinerOptions

    skip_unless_long_names(tmp_path)
    image, mask = write_scene_files(tmp_path / "in", size=(96, 128))
    folder = tmp_path / "out"
    if folder_exists:
        folder.mkdir()
    target = folder / long_name(300)
    loads: list[object] = []
    monkeypatch.setattr(RefinerOptions, "load", lambda self, quiet=False: loads.append(self))
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(target), "-w", str(tiny_weights),
                                 "-d", "cpu"])
    assert result.exit_code == 1, result.output
    assert loads == []
    assert "Traceback" not in result.output
    assert f"cannot write {target}: its file name is 300 bytes long, and the file system allows at most 255" \
        in result.stderr.replace("\n", "")


def test_a_folder_name_over_the_limit_is_one_line_in_refine_and_batch(tiny_weights: Path, tmp_path: Path) -> None:
    skip_unless_long_names(tmp_path)
    image, mask = write_scene_files(tmp_path / "in", size=(96, 128))
    folder = tmp_path / ("d" * 300)
    refined = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(folder / "out.png"), "-w",
                                  str(tiny_weights), "-d", "cpu"])
    assert refined.exit_code == 1 and "Traceback" not in refined.output
    assert refined.stderr.replace("\n", "").endswith(
        "the name of a folder on its way is 300 bytes long, and the file system allows at most 255")
    batched = runner.invoke(app, ["batch", str(tmp_path / "in"), "-o", str(folder), "-w", str(tiny_weights),
                                  "-d", "cpu", "--json"])
    assert batched.exit_code == 1 and "Traceback" not in batched.output, batched.output
    record = json.loads(batched.stdout)
    assert record["status"] == "failed"
    assert record["error"] == f"cannot write into {folder}: its folder name is 300 bytes long, and the file " \
                              "system allows at most 255"


def test_names_are_not_measured_in_bytes_off_linux(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import writing

    monkeypatch.setattr(writing.sys, "platform", "darwin")  # macOS counts characters: its own error decides
    assert writing.name_too_long(tmp_path / ("写" * 90 + ".png")) is None


def test_the_coco_sidecar_of_a_long_output_name_fits_and_is_stable(tmp_path: Path) -> None:
    from crm_cli.coco.files import SIDECAR_SUFFIX, sidecar_path

    skip_unless_long_names(tmp_path)
    output = tmp_path / long_name(250, suffix=".json")
    sidecar = sidecar_path(output)
    assert size_of(sidecar.name) <= NAME_MAX and sidecar.name.endswith(SIDECAR_SUFFIX)
    assert sidecar == sidecar_path(output) and sidecar != sidecar_path(tmp_path / long_name(250, "b", ".json"))
    assert sidecar_path(tmp_path / "a.json").name == "a.json" + SIDECAR_SUFFIX
    sidecar.write_text("{}\n")  # the file system takes it
