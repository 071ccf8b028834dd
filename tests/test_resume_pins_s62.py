"""Pins for batch resume and its records (mutation review s62): what the resume record compares, damaged
records, the summary's counts and --dry-run's exit code, lock ages and takeovers, and temp files left by
failed writes. Tiny inputs, mostly direct calls."""

from __future__ import annotations

import json
import os
import socket
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from crm_cli import locks
from crm_cli.cli import app
from crm_cli.cli.batch import SETTINGS_KEYWORD, OutputRecord, counts_as_done, summary_counts
from crm_cli.locks import OutputLock, abandoned, describe_holder, lock_path
from crm_cli.presets import PRESETS
from crm_cli.writing import write_atomic, write_png

HOST = socket.gethostname()
runner = CliRunner()


def record_of_run(preset: str = "auto", output_kind: str = "soft", photo_bits: int | None = None,
                  **switches: bool) -> OutputRecord:
    settings = PRESETS[preset].overridden(**switches) if switches else PRESETS[preset]
    return OutputRecord.of(mode="auto", labels=None, output_kind=output_kind, threshold=None, settings=settings,
                           weights="w", photo_bits=photo_bits)


def photo(path: Path, width: int, height: int = 8) -> Path:
    """An 8-bit RGB PNG photo of ``width`` x ``height`` (only its header is ever read here)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = 200
    Image.fromarray(pixels).save(path)
    return path


def aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


# Records ----------------------------------------------------------------------------------------------


def test_a_preset_change_is_other_settings_for_an_8bit_photo_too(tmp_path: Path) -> None:
    """Only the photo's scale (and cut-out bits) may differ for an 8-bit photo: another preset redoes it."""
    eight = photo(tmp_path / "p.png", 120, 100)
    made = record_of_run("balanced").stamp("binary", "binary", False, scaled=False)
    assert record_of_run("balanced").accepts(made, eight)
    assert not record_of_run("fast").accepts(made, eight)
    assert not record_of_run("balanced", guard=True).accepts(made, eight)
    # The scale alone still is no change for it.
    assert record_of_run("balanced", photo_bits=12).accepts(made, eight)


def test_a_snapless_record_is_kept_only_below_the_snap_s_minimum_side(tmp_path: Path) -> None:
    """The snap runs on photos of 1000 px and up: a record without it is redone at exactly 1000 px."""
    from crm_cli.edge_snap import SNAP_MIN_SIDE

    made = record_of_run("auto", snap=False).stamp("binary", "binary", False, scaled=False)
    assert "snap" not in json.loads(made)["preset"]
    run = record_of_run("auto")  # snap on
    assert run.accepts(made, photo(tmp_path / "small.png", SNAP_MIN_SIDE - 1))
    assert not run.accepts(made, photo(tmp_path / "edge.png", SNAP_MIN_SIDE))


# Records as crm 0.x wrote them (sessions 42-61): a rerun with the same settings must keep their outputs.
WRITTEN = {
    "auto": '{"auto":"binary","mode":"binary","output":"soft","preset":{"adaptive":true,"full_decode":false,'
            '"guard":true,"ratios":[0.125,0.25,0.5,1.0],"roi":true,"snap":true},"threshold":null,"version":2,'
            '"weights":"50e721e49c013f00"}',
    "fast": '{"auto":"binary","mode":"binary","output":"soft","preset":{"adaptive":false,"full_decode":false,'
            '"guard":false,"keep_given":true,"ratios":[0.125,0.25,0.5],"roi":true,"snap":true},"threshold":null,'
            '"version":2,"weights":"50e721e49c013f00"}',
}


def test_records_already_written_are_still_accepted() -> None:
    """The record's form is stable: outputs made by earlier runs with the same settings are skipped."""
    for preset, written in WRITTEN.items():
        assert record_of_run(preset).stamp("binary", "binary", False) == written
        assert record_of_run(preset).accepts(written), preset


@pytest.mark.parametrize("switch", ["roi", "full_decode", "adaptive", "guard", "keep_given", "snap"])
def test_every_preset_switch_is_part_of_the_record(switch: str) -> None:
    """Each of the preset's switches shapes the pixels: flipping one makes an output other settings."""
    base = PRESETS["balanced"]
    made = OutputRecord.of(mode="auto", labels=None, output_kind="soft", threshold=None, settings=base,
                           weights="w").stamp("binary", "binary", False)
    flipped = base.overridden(**{switch: not getattr(base, switch)})
    run = OutputRecord.of(mode="auto", labels=None, output_kind="soft", threshold=None, settings=flipped,
                          weights="w")
    assert not run.accepts(made), switch


def test_labels_naming_the_background_are_the_same_labels_for_old_records() -> None:
    """--labels 0,12,15 refines what --labels 12,15 does (0 is never refined): a version-2 record naming
    the --labels set, written before the ids held were recorded, is kept."""
    def labels_run(labels: list[int]) -> OutputRecord:
        return OutputRecord.of(mode="labels", labels=labels, output_kind="soft", threshold=None,
                               settings=PRESETS["auto"], weights="w")

    old_form = labels_run([12, 15]).stamp("labels", "labels", False)  # no ``held``: names --labels
    assert json.loads(old_form)["labels"] == [12, 15]
    assert labels_run([0, 15, 12]).accepts(old_form)
    assert not labels_run([12]).accepts(old_form)


def damaged_record_output(path: Path, record: OutputRecord) -> Path:
    """A finished PNG output whose settings record's CRC is wrong (its text is intact)."""
    write_png(path, np.zeros((8, 8), np.uint8), text={SETTINGS_KEYWORD: record.stamp("binary", "binary", True)})
    data = bytearray(path.read_bytes())
    at = data.index(b"tEXt" + SETTINGS_KEYWORD.encode("latin-1"))
    length = int.from_bytes(data[at - 4:at], "big")
    crc = at + 4 + length
    assert zlib.crc32(bytes(data[at:crc])) == int.from_bytes(data[crc:crc + 4], "big")
    data[crc] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_an_output_whose_record_is_damaged_is_not_done(tmp_path: Path) -> None:
    """A record whose chunk fails its CRC is neither read as no record nor trusted: the output is redone."""
    record = record_of_run()
    good = tmp_path / "good.png"
    write_png(good, np.zeros((8, 8), np.uint8), text={SETTINGS_KEYWORD: record.stamp("binary", "binary", True)})
    assert counts_as_done(good, record=record) == (True, None)
    bad = damaged_record_output(tmp_path / "bad.png", record)
    done, why = counts_as_done(bad, record=record)
    assert done is False and isinstance(why, str) and "CRC" in why
    assert counts_as_done(bad) == (True, None)  # without a record to compare, the image itself is whole


def test_check_output_wants_the_png_signature(tmp_path: Path) -> None:
    """A .png output that ends as a PNG but does not begin as one is no finished output."""
    from crm_cli.writing import check_output

    good = tmp_path / "a.png"
    write_png(good, np.zeros((8, 8), np.uint8))
    data = good.read_bytes()
    bad = tmp_path / "b.png"
    bad.write_bytes(b"\0" * 8 + data[8:])  # its first bytes lost
    assert check_output(good).problem is None
    assert check_output(bad).problem == "not a PNG file"


# Summary counts and exit codes ------------------------------------------------------------------------


def test_summary_counts_refinements_kept_coarse_and_todo_only_when_some(tmp_path: Path) -> None:
    """kept_coarse adds up each refined item's count (a label map's labels count one each); todo is
    listed only where some items are left to do."""
    items = [{"status": "ok", "kept_coarse": 2}, {"status": "ok", "kept_coarse": 1}, {"status": "ok"},
             {"status": "skipped"}, {"status": "failed"}, {"status": "in_progress"}]
    assert summary_counts(items) == {"done": 3, "skipped": 1, "in_progress": 1, "failed": 1, "kept_coarse": 3}
    assert summary_counts([*items, {"status": "todo"}])["todo"] == 1


def test_a_dry_run_with_a_failing_pair_exits_1_and_leaves_temp_files(tmp_path: Path, tiny_weights: Path) -> None:
    """--dry-run: exit 1 when some pair would fail; it removes nothing, not even old temp files."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    out.mkdir()
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(data / "a_im.png")  # small: passed through
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(data / "a_seg.png")
    leftover = out / ".a_mask.png.0123456789ab.tmp"  # a write killed long ago
    leftover.write_bytes(b"partial")
    aged(leftover, 2 * 3600)
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--dry-run", "--json"]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert leftover.exists()
    (data / "b_im.png").write_bytes(b"not a photo")  # fails the checks
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(data / "b_seg.png")
    failing = runner.invoke(app, args)
    assert failing.exit_code == 1, failing.output
    assert json.loads(failing.stdout)["failed"] == 1
    assert leftover.exists()


# Locks ------------------------------------------------------------------------------------------------


def other_hosts_lock(output: Path, seconds_old: float) -> Path:
    path = lock_path(output)
    path.write_text("12345 some-other-host\n")
    return aged(path, seconds_old)


def test_another_host_s_lock_is_left_alone_until_the_stale_age(tmp_path: Path) -> None:
    """A lock of another host is taken over only past STALE_LOCK_AGE_S (30 min), not minutes before."""
    target = tmp_path / "a.png"
    other_hosts_lock(target, locks.STALE_LOCK_AGE_S * 0.6)  # 18 minutes: a paused or slow holder
    assert not OutputLock(target).acquire()
    other_hosts_lock(target, locks.STALE_LOCK_AGE_S + 60)
    taker = OutputLock(target)
    assert taker.acquire()
    taker.release()


def test_describe_holder_says_minutes(tmp_path: Path) -> None:
    """The lock's age is said in whole minutes."""
    target = tmp_path / "a.png"
    other_hosts_lock(target, 5 * 60 + 20)
    assert describe_holder(target) == "pid 12345 on some-other-host, 5 min old"


@pytest.mark.skipif(os.name == "nt", reason="os.kill probes pids on POSIX only")
def test_a_lock_of_another_user_s_live_process_is_not_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pid that exists but may not be signalled (another user's) is alive: its lock stays."""
    target = tmp_path / "a.png"
    lock_path(target).write_text(f"54321 {HOST}\n")

    def refused(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(locks.os, "kill", refused)
    assert not OutputLock(target).is_stale()
    assert not OutputLock(target).acquire()


def test_a_released_lock_is_forgotten_by_this_process(tmp_path: Path) -> None:
    """After release the lock is no longer this process's: one naming its pid left there later is stale."""
    target = tmp_path / "a.png"
    lock = OutputLock(target)
    assert lock.acquire()
    lock.release()
    assert not lock_path(target).exists()
    assert os.path.abspath(lock_path(target)) not in locks._held
    lock_path(target).write_text(f"{os.getpid()} {HOST}\n")  # an earlier run with this pid, say
    taker = OutputLock(target)
    assert taker.is_stale() and taker.acquire()
    taker.release()


def test_a_takeover_backs_off_when_another_run_took_the_lock_first(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Between seeing a stale lock and guarding its takeover, another run may have taken it over: that
    run's live lock is left alone."""
    target = tmp_path / "a.png"
    lock_file = lock_path(target)
    lock_file.write_text(f"{os.getppid()} {HOST} {'f' * 16}\n")  # a live process's lock on this host
    seen = {"calls": 0}
    real = OutputLock.is_stale

    def stale_once(self: OutputLock) -> bool:  # as it looked a moment before the other run took over
        seen["calls"] += 1
        return True if seen["calls"] == 1 else real(self)

    monkeypatch.setattr(OutputLock, "is_stale", stale_once)
    taker = OutputLock(target)
    assert not taker.acquire()
    assert lock_file.read_text().startswith(f"{os.getppid()} ")
    assert not locks.takeover_path(lock_file).exists()


def test_an_output_whose_lock_is_gone_is_abandoned(tmp_path: Path) -> None:
    """Nobody makes an output whose lock is gone; a fresh live lock's output is not abandoned."""
    target = tmp_path / "a.png"
    assert abandoned(target)
    other_hosts_lock(target, 0)
    assert not abandoned(target)


# Atomic writes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("raised", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   raised: BaseException) -> None:
    """A write that fails at its rename (a full disk, Ctrl-C) removes its temp file."""
    target = tmp_path / "a.png"

    def fail(source: object, destination: object) -> None:
        raise raised

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(type(raised)):
        write_atomic(target, b"data")
    assert list(tmp_path.iterdir()) == []
