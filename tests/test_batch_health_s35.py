"""`crm batch`'s resume checks and the PNG chunk helpers, tidied (s35): counts_as_done's reasons are
an enum, a resumed PNG output is opened once (its completeness and its settings record read in one
pass), one chunk walker serves read_png_text and the reader's eXIf probe, weights_identity's texts are
pinned (outputs of older runs must still be accepted), and `-o ./-` is named ./- in --json."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import flat, write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()

# The paths opened (Python's "open" audit event: open(), io.open, os.open) while recording.
_opened: list[str] | None = None
_hooked = False


def _record_open(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


@contextmanager
def opens_recorded() -> Iterator[list[str]]:
    """The list of paths opened inside the block, as given to open (audit hooks cannot be removed:
    one is added for the process, and records only inside such a block)."""
    global _opened, _hooked
    if not _hooked:
        sys.addaudithook(_record_open)
        _hooked = True
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def opens_of(opened: list[str], path: Path) -> int:
    return sum(1 for name in opened if os.path.abspath(name) == str(path.absolute()))


def a_record():  # noqa: ANN201 - batch's OutputRecord
    from crm_cli.cli.batch import OutputRecord
    from crm_cli.presets import PRESETS

    return OutputRecord.of(mode="binary", labels=None, output_kind="soft", threshold=None,
                           settings=PRESETS["auto"], weights="w")


# --- 1. counts_as_done's reasons ------------------------------------------------------------------


def test_a_finished_output_that_is_not_done_says_why_by_an_enum_member(tmp_path: Path) -> None:
    from crm_cli.cli.batch import SETTINGS_KEYWORD, NotDoneReason, counts_as_done
    from crm_cli.writing import write_png

    assert [reason.value for reason in NotDoneReason] == ["older than its photo or mask", "made with other settings"]
    output, photo = tmp_path / "out.png", tmp_path / "photo.png"
    record = a_record()
    write_png(photo, np.zeros((4, 4), np.uint8))
    write_png(output, np.zeros((4, 4), np.uint8), text={SETTINGS_KEYWORD: record.stamp("labels", "labels", False)})
    os.utime(output, ns=(10**18, 10**18))
    os.utime(photo, ns=(2 * 10**18, 2 * 10**18))

    done, reason = counts_as_done(output, inputs=(photo,), record=record)
    assert not done and reason is NotDoneReason.STALE
    done, reason = counts_as_done(output, record=record)
    assert not done and reason is NotDoneReason.OTHER_SETTINGS
    assert reason != NotDoneReason.OTHER_SETTINGS.value  # a member, not its words
    # A reason in words (an incomplete file) stays a string, as does a damaged record's.
    output.write_bytes(output.read_bytes()[:-4])
    assert counts_as_done(output, record=record) == (False, "truncated: no IEND chunk at the end")


# --- 2. one opening of a resumed output -----------------------------------------------------------


def test_counts_as_done_opens_a_png_output_once_for_its_ends_and_its_record(tmp_path: Path) -> None:
    from crm_cli.cli.batch import SETTINGS_KEYWORD, counts_as_done
    from crm_cli.writing import write_png

    output, record = tmp_path / "out.png", a_record()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 48), dtype=np.uint8)
    stamp = record.stamp("binary", "binary", False)
    write_png(output, pixels, icc_profile=b"\x00" * 600, text={SETTINGS_KEYWORD: stamp})
    with opens_recorded() as opened:
        assert counts_as_done(output, record=record) == (True, None)
    assert opens_of(opened, output) == 1, opened

    write_png(output, pixels, text={SETTINGS_KEYWORD: record.stamp("labels", "labels", False)})
    with opens_recorded() as opened:
        assert not counts_as_done(output, record=record)[0]  # made with other settings
    assert opens_of(opened, output) == 1, opened


def test_a_rerun_of_batch_opens_each_finished_output_once(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    for k in range(2):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", size=(64, 80), seed=k)
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json", "-q"]
    assert runner.invoke(app, args).exit_code == 0
    outputs = sorted(out.glob("*.png"))
    assert len(outputs) == 2
    with opens_recorded() as opened:
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 2
    assert [opens_of(opened, output) for output in outputs] == [1, 1], opened


# --- 3. one chunk walker --------------------------------------------------------------------------


def test_one_chunk_walker_lists_the_headers_for_both_readers(tmp_path: Path) -> None:
    """Refactor guard: the walker both read_png_text and the reader's eXIf probe use; what they read
    and raise is pinned by test_batch_settings_s34 and test_extreme_shapes."""
    from crm_cli import image_headers, writing

    path = tmp_path / "out.png"
    writing.write_png(path, np.zeros((8, 8), np.uint8), text={"Comment": "hello"})
    with open(path, "rb", buffering=0) as handle:
        chunks = list(writing.png_chunk_headers(writing.reader_at(handle)))
    kinds = [kind for _, _, kind in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"tEXt" in kinds and b"IDAT" in kinds
    assert chunks[0][:2] == (8, 13)
    data = path.read_bytes()
    assert all(data[offset + 4:offset + 8] == kind for offset, _, kind in chunks)
    assert image_headers.png_chunk_headers is writing.png_chunk_headers
    assert not hasattr(image_headers, "_read_at")  # the one reader_at, in writing


# --- 4. weights_identity's texts -----------------------------------------------------------------


def test_weights_identity_texts_stay_as_older_runs_recorded_them(tmp_path: Path) -> None:
    """Refactor guard (passes on the old code too): each text is hashed into every output's record."""
    from crm_cli.checkpoint import sidecar_path
    from crm_cli.cli.resumable import weights_identity

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"12345")
    info = weights.stat()
    assert weights_identity(weights) == f"{weights.resolve()} 5 {info.st_mtime_ns}"
    sidecar_path(weights).write_text(json.dumps({"sha256": "ab" * 32, "final_stage": [1, 2]}))
    assert weights_identity(str(weights)) == '{"final_stage": [1, 2], "sha256": "' + "ab" * 32 + '"}'
    gone = tmp_path / "gone.safetensors"
    assert weights_identity(gone) == f"{gone.absolute()} (not readable)"


# --- 6. a folder called "-" -----------------------------------------------------------------------


def test_a_folder_called_dash_is_named_dot_slash_dash_in_json_and_the_summary(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    write_scene_files(data, "p0_im", "p0_seg", size=(64, 80))
    monkeypatch.chdir(tmp_path)
    dash = os.path.join(os.curdir, "-")
    for given in ("./-", "./-/"):
        result = runner.invoke(app, ["batch", "data", "-o", given, "-w", str(tiny_weights), "--dry-run", "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["output_dir"] == dash
        assert [item["output"] for item in summary["items"]] == [os.path.join("-", "p0_mask.png")]
        assert f"would refine 1 -> {dash}" in flat(result.stderr)
    # Another folder is named as before (as a Path reads it); a bare - is refused, named as typed.
    result = runner.invoke(app, ["batch", "data", "-o", "./out/", "-w", str(tiny_weights), "--dry-run", "--json"])
    assert json.loads(result.stdout)["output_dir"] == "out"
    result = runner.invoke(app, ["batch", "data", "-o", "-", "-w", str(tiny_weights), "--json"])
    assert result.exit_code == 2 and json.loads(result.stdout)["output_dir"] == "-"
