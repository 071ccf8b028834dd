"""Outputs that fail: a full disk while an output, a lock, a CSV or a COCO progress file is written,
and outputs that are no file to replace. Each failure is one line naming the file (never a
traceback), with the exit code of a runtime failure (1), and leaves no half-written or temp file."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene, write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def disk_full() -> OSError:
    """The error a write to a full disk raises (no file name: write errors carry none)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def big_folder(folder: Path) -> Path:
    """A BIG-layout folder with two pairs and their ground truth."""
    for name in ("a", "b"):
        write_scene_files(folder, f"{name}_im", f"{name}_seg")
        write_scene_files(folder, f"{name}_im", f"{name}_gt")
    return folder


def test_batch_names_the_output_when_its_lock_cannot_be_made(tmp_path: Path, tiny_weights: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import locks

    def full(self: Any) -> bool:
        raise disk_full()

    monkeypatch.setattr(locks.OutputLock, "_acquire", full)  # the file system under the lock
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(big_folder(tmp_path / "big")), "-o", str(out),
                                 "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    # A full disk stops the batch at the first pair: the other is left to do, not tried.
    assert record["status"] == "failed" and record["failed"] == 1 and record["todo"] == 1 and record["done"] == 0
    assert sorted(item["status"] for item in record["items"]) == ["failed", "todo"]
    for item in record["items"]:
        if item["status"] != "failed":
            continue
        assert item["error"].startswith("cannot write ") and item["output"].split("/")[-1] in item["error"], item
        assert "no space left on device" in item["error"]
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def failing_writes(real_open: Any) -> Any:
    """An ``io.open`` whose files opened for writing write half of what they are given, then fail
    as on a full disk."""

    class HalfWriter:
        def __init__(self, handle: Any) -> None:
            self._handle = handle

        def write(self, data: Any) -> int:
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            raise disk_full()

        def __getattr__(self, name: str) -> Any:
            return getattr(self._handle, name)

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: Any) -> None:
            self._handle.close()

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        return HalfWriter(handle) if any(flag in mode for flag in "wax") else handle

    return opener


def test_score_csv_on_a_full_disk_keeps_the_earlier_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = big_folder(tmp_path / "big")
    csv_path = tmp_path / "scores.csv"
    csv_path.write_text("name,iou\nearlier,1.0\n")
    monkeypatch.setattr(io, "open", failing_writes(io.open))
    result = runner.invoke(app, ["score", str(folder), str(folder), "--pred-suffix", "_seg", "--csv", str(csv_path)])
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert csv_path.read_text() == "name,iou\nearlier,1.0\n"  # not truncated, not half-written
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and f"cannot write {csv_path}: no space left on device" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="makes a device node: root on Linux")
def test_score_csv_to_a_full_device_names_it_and_leaves_it_a_device(tmp_path: Path) -> None:
    # A private copy of /dev/full (char 1, 7): code that renamed over it would not harm the machine's.
    device = tmp_path / "full.csv"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    folder = big_folder(tmp_path / "big")
    result = runner.invoke(app, ["score", str(folder), str(folder), "--pred-suffix", "_seg", "--csv", str(device)])
    assert result.exit_code == 1, result.output
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and f"cannot write {device}: no space left on device" in errors[0], result.stderr
    assert device.is_char_device()


def coco_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A COCO file with two instances on one synthetic image (both refined by the shipped weights)."""
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    image, gt = synthetic_scene(96, 128, seed=3)
    cv2.imwrite(str(images / "a.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ys, xs = np.nonzero(coarse_of(gt))
    x0, y0, x1, y1 = (float(v) for v in (xs.min(), ys.min(), xs.max(), ys.max()))
    polygon = [x0, y0, x1, y0, x1, y1, x0, y1]
    annotations = [{"id": 10 + k, "image_id": 1, "category_id": 1, "segmentation": [polygon], "iscrowd": 0,
                    "area": (x1 - x0) * (y1 - y0), "bbox": [x0, y0, x1 - x0, y1 - y0]} for k in range(2)]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 128, "height": 96}],
                                "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return path, images


def test_coco_progress_file_on_a_full_disk_is_one_line_not_a_traceback(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.coco import files

    annotations, images = coco_inputs(tmp_path)
    real_append, real_close = files.Sidecar.append, files.Sidecar.close
    appended: list[int] = []
    close_failed: list[bool] = []

    def append(self: Any, record: dict[str, Any]) -> None:
        if appended:  # the second instance meets a full disk
            raise disk_full()
        appended.append(record["index"])
        real_append(self, record)

    def close(self: Any) -> None:  # its flush meets the full disk again, once
        if appended and not close_failed:
            close_failed.append(True)
            raise disk_full()
        real_close(self)

    monkeypatch.setattr(files.Sidecar, "append", append)
    monkeypatch.setattr(files.Sidecar, "close", close)
    output = tmp_path / "refined.json"
    result = runner.invoke(app, ["coco", str(annotations), "--images", str(images), "-o", str(output),
                                 "-d", "cpu", "--json"])
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    sidecar = files.sidecar_path(output)
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and f"cannot write {sidecar}: no space left on device" in record["error"]
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and str(sidecar) in errors[0], result.stderr
    assert not output.exists()
    assert sidecar.exists()  # what was recorded stays for the next run
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_coco_refuses_an_output_that_is_no_regular_file(tmp_path: Path, tiny_weights: Path) -> None:
    annotations, images = coco_inputs(tmp_path)
    fifo = tmp_path / "refined.json"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["coco", str(annotations), "--images", str(images), "-o", str(fifo),
                                 "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 2, result.output
    assert len(error_lines(result.stderr)) == 1 and "not a regular file" in result.stderr
    assert fifo.is_fifo()  # not replaced by a regular file
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ann.json", "images", "refined.json"]


def test_write_atomic_replaces_the_file_a_link_names_and_keeps_the_link(tmp_path: Path) -> None:
    from crm_cli.writing import write_atomic

    real = tmp_path / "real.csv"
    real.write_bytes(b"old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    write_atomic(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.csv", "real.csv"]  # no temp file left


def test_write_atomic_writes_into_a_fifo_instead_of_replacing_it(tmp_path: Path) -> None:
    import threading

    from crm_cli.writing import write_atomic

    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_atomic(fifo, b"through the pipe")
    reader.join(timeout=30)
    assert received == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
