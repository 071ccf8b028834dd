"""Files read once: ``crm batch --overwrite`` reads each output folder's clock once
(locks.FolderClocks), and an ONNX export reads its checkpoint's head once."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli import checkpoint, locks
from crm_cli.cli import app
from crm_cli.locks import FolderClocks
from crm_cli.writing import write_image

runner = CliRunner()


def count_probes(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """Every probe of a folder's clock (locks.probe_folder_time_ns) from now on, by absolute folder."""
    probe = locks.probe_folder_time_ns
    probes: Counter[Path] = Counter()

    def counting(folder: str | Path) -> int | None:
        probes[Path(folder).absolute()] += 1
        return probe(folder)

    monkeypatch.setattr(locks, "probe_folder_time_ns", counting)
    return probes


def test_folder_clocks_probe_again_only_for_a_later_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now: list[int | None] = [1_000]  # the folder's clock
    probes: list[Path] = []

    def fake_probe(folder: str | Path) -> int | None:
        probes.append(Path(folder))
        return now[0]

    monkeypatch.setattr(locks, "probe_folder_time_ns", fake_probe)
    clocks = FolderClocks()
    assert clocks.not_in_future(tmp_path, 900) and len(probes) == 1
    assert clocks.not_in_future(tmp_path, 1_000) and len(probes) == 1  # the reading itself is not after now
    now[0] = 2_000
    assert clocks.not_in_future(tmp_path, 1_500) and len(probes) == 2  # later than the reading: read again
    assert clocks.not_in_future(tmp_path, 1_900) and len(probes) == 2
    assert not clocks.not_in_future(tmp_path, 2_500) and len(probes) == 3  # in the future by the folder's clock
    now[0] = None  # no file can be made there any more
    assert not clocks.not_in_future(tmp_path, 2_001) and len(probes) == 4
    assert clocks.not_in_future(tmp_path, 1_999) and len(probes) == 4  # before an earlier reading: no probe
    assert probes == [tmp_path] * 4


def test_counts_as_done_shares_one_reading_however_the_folder_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.cli.batch import counts_as_done

    monkeypatch.chdir(tmp_path)
    out = Path("out")
    outputs = [out / f"p{k}_mask.png" for k in range(3)]
    for output in outputs:
        write_image(output, np.zeros((4, 4), np.uint8))
    probes = count_probes(monkeypatch)
    clocks = FolderClocks()
    # The scan names outputs as the user gave the folder, the jobs by absolute paths: one reading.
    assert all(counts_as_done(output, True, 0, clocks) == (True, None) for output in outputs)
    assert all(counts_as_done(output.absolute(), True, 0, clocks) == (True, None) for output in outputs)
    assert probes == {(tmp_path / "out"): 1}
    # Without a shared one, each call reads the clock again (as before).
    assert counts_as_done(outputs[0], True, 0) == (True, None)
    assert probes == {(tmp_path / "out"): 2}


def test_batch_overwrite_reads_each_output_folders_clock_once(tiny_weights: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data, out = tmp_path / "big", tmp_path / "out"
    for k in range(4):  # three outputs in one folder, one in a sub-folder
        write_scene_files(data / ("sub" if k == 3 else ""), f"p{k}_im", f"p{k}_seg", seed=k)
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"]
    assert runner.invoke(app, args).exit_code == 0
    outputs = sorted(out.rglob("*.png"))
    before = [path.read_bytes() for path in outputs]
    # A run that started before all four outputs were written (as if a concurrent run made them
    # meanwhile): each is newer than the start, so each is checked against its folder's "now".
    monkeypatch.setattr(locks, "folder_time_ns", lambda folder: 1)
    probes = count_probes(monkeypatch)
    result = runner.invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 4, 0)
    assert probes == {out.absolute(): 1, (out / "sub").absolute(): 1}  # was one per output
    assert [path.read_bytes() for path in outputs] == before
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == sorted(
        [Path("sub"), *(path.relative_to(out) for path in outputs)])  # no probe file left


def test_onnx_export_reads_the_checkpoint_kind_once(tiny_weights: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx")
    from crm_cli import onnx_export

    weights = tmp_path / tiny_weights.name
    shutil.copyfile(tiny_weights, weights)
    shutil.copyfile(checkpoint.sidecar_path(tiny_weights), checkpoint.sidecar_path(weights))
    kind = checkpoint.checkpoint_kind
    reads: list[Path] = []

    def counting(path: str | Path) -> str:
        reads.append(Path(path))
        return kind(Path(path))

    # Both names: checkpoint's, and onnx_export's own, which a later import of the function there would
    # bring back (a guard: today onnx_export has no such name, hence raising=False).
    monkeypatch.setattr(checkpoint, "checkpoint_kind", counting)
    monkeypatch.setattr(onnx_export, "checkpoint_kind", counting, raising=False)
    entry = onnx_export.export_encoder(weights)
    assert reads == [weights]  # was two: the safetensors check, then the load
    assert (tmp_path / entry["file"]).is_file() and os.path.getsize(tmp_path / entry["file"]) > 0
