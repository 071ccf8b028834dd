"""Session 55: the failure audit's findings. Each test of a mend fails on the code before it."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scene_files
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
