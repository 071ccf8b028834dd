"""`crm batch` resuming (audit s33): outputs older than their photo or mask are refined again, each
--json item lists the warnings shown for its pair, and a batch with nothing left draws no progress bar."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import flat, write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.writing import write_image

runner = CliRunner()
T0 = 1_700_000_000 * 10**9  # whole, even seconds: exact on file systems with 2 s timestamps
T1 = T0 + 10 * 10**9


def batch_args(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["batch", str(data), "-o", str(out), "-w", str(weights), "-d", "cpu", *extra]


def stamp(path: Path, ns: int) -> None:
    """Set a file's access and modification times to ``ns``."""
    os.utime(path, ns=(ns, ns))


def three_pairs(data: Path) -> None:
    for k in range(3):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", seed=k)


def finished_run(data: Path, out: Path, weights: Path) -> list[Path]:
    """Run the batch, then stamp the inputs T0 and the outputs T1 (later); returns the outputs."""
    assert runner.invoke(app, batch_args(data, out, weights)).exit_code == 0
    for path in data.iterdir():
        stamp(path, T0)
    outputs = [out / f"p{k}_mask.png" for k in range(3)]
    for path in outputs:
        stamp(path, T1)
    return outputs


def other_mask(data: Path, name: str) -> None:
    """Replace a pair's mask with a different one (another scene's coarse mask)."""
    shutil.copy(data / "p0_seg.png", data / f"{name}_seg.png")


def test_an_output_older_than_its_mask_is_refined_again_and_a_tie_is_done(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    three_pairs(data)
    outputs = finished_run(data, out, tiny_weights)
    before = [path.read_bytes() for path in outputs]
    other_mask(data, "p1")
    stamp(data / "p1_seg.png", T1 + 10**9)  # a regenerated pseudo-label, newer than its output
    other_mask(data, "p2")
    stamp(data / "p2_seg.png", T1)  # same stamp as its output: done

    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (1, 2, 0)
    assert {item["name"]: item["status"] for item in summary["items"]} == {"p0": "skipped", "p1": "ok",
                                                                          "p2": "skipped"}
    stderr = flat(result.stderr)
    assert f"warning: 1 output older than its photo or mask: refined again (e.g. {outputs[1]})" in stderr
    assert "2 already done; refining 1" in stderr and "1 refined, 2 skipped" in stderr
    # Exactly p1's output is rewritten, as a fresh run with the new mask makes it.
    assert [path.stat().st_mtime_ns for path in outputs] != [T1] * 3
    assert outputs[0].stat().st_mtime_ns == T1 and outputs[2].stat().st_mtime_ns == T1
    assert outputs[1].stat().st_mtime_ns > T1 + 10**9
    assert outputs[0].read_bytes() == before[0] and outputs[2].read_bytes() == before[2]
    assert outputs[1].read_bytes() != before[1]
    assert runner.invoke(app, batch_args(data, tmp_path / "fresh", tiny_weights)).exit_code == 0
    assert outputs[1].read_bytes() == (tmp_path / "fresh" / "p1_mask.png").read_bytes()

    again = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))  # now all up to date
    assert again.exit_code == 0, again.output
    assert (json.loads(again.stdout)["done"], json.loads(again.stdout)["skipped"]) == (0, 3)
    assert "older than" not in again.stderr


def test_a_newer_photo_counts_and_the_warning_counts_them_all(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    three_pairs(data)
    outputs = finished_run(data, out, tiny_weights)
    stamp(data / "p0_im.jpg", T1 + 10**9)  # a photo newer than its output counts too
    stamp(data / "p2_seg.png", T1 + 10**9)
    dry = runner.invoke(app, batch_args(data, out, tiny_weights, "--dry-run", "--json"))
    assert dry.exit_code == 0, dry.output
    assert {item["name"]: item["status"] for item in json.loads(dry.stdout)["items"]} == {
        "p0": "todo", "p1": "skipped", "p2": "todo"}
    assert f"2 outputs older than their photo or mask: would be refined again (e.g. {outputs[0]})" in flat(dry.stderr)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json", "-q"))
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["done"], json.loads(result.stdout)["skipped"]) == (2, 1)
    assert f"warning: 2 outputs older than their photo or mask: refined again (e.g. {outputs[0]})" in flat(
        result.stderr)  # a warning, shown with -q too
    assert outputs[1].stat().st_mtime_ns == T1 and outputs[0].stat().st_mtime_ns > T1 + 10**9

    # --overwrite redoes everything, without the warning.
    stamp(data / "p1_seg.png", T1 + 10**9)
    redone = runner.invoke(app, batch_args(data, out, tiny_weights, "--json", "--overwrite"))
    assert redone.exit_code == 0, redone.output
    assert (json.loads(redone.stdout)["done"], json.loads(redone.stdout)["skipped"]) == (3, 0)
    assert "older than" not in redone.stderr


def test_older_than_inputs_is_strict_and_follows_links(tmp_path: Path) -> None:
    from crm_cli.cli.batch import NotDoneReason, counts_as_done, older_than_inputs

    output, mask, photo = tmp_path / "out.png", tmp_path / "real_mask.png", tmp_path / "photo.png"
    for path in (output, mask, photo):
        write_image(path, np.zeros((4, 4), np.uint8))
        stamp(path, T0)
    link = tmp_path / "mask.png"
    link.symlink_to(mask)
    os.utime(link, ns=(T0 - 10**9, T0 - 10**9), follow_symlinks=False)
    assert not older_than_inputs(output, (photo, link))  # a tie is done
    assert counts_as_done(output, inputs=(photo, link)) == (True, None)
    stamp(mask, T0 + 1)  # the link's target replaced; the link itself untouched
    assert older_than_inputs(output, (photo, link))
    assert counts_as_done(output, inputs=(photo, link)) == (False, NotDoneReason.STALE)
    assert counts_as_done(output) == (True, None)  # no inputs given: as before
    assert not older_than_inputs(output, (photo, tmp_path / "gone.png"))  # an input gone: not the check's business
    assert not older_than_inputs(tmp_path / "missing.png", (photo, link))


def test_each_json_item_lists_the_warnings_shown_for_its_pair(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    write_scene_files(data, "p0_im", "p0_seg", seed=0)
    write_scene_files(data, "p1_im", "p1_seg", seed=1)
    small = np.zeros((48, 64), np.uint8)  # half the photo's size: upsampled, with a warning
    small[12:36, 16:48] = 255
    cv2.imwrite(str(data / "p1_seg.png"), small)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 0, result.output
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert items["p0"]["warnings"] == []
    assert items["p1"]["warnings"][0] == f"{data / 'p1_seg.png'}: upsampled to the image size 128x96"
    # The texts as shown on stderr, without the "warning: " prefix; every warning shown is listed.
    shown = [line.removeprefix("warning: ") for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert shown == items["p1"]["warnings"]

    # A pair refined again for an incomplete output lists that warning; skipped ones list none.
    (out / "p0_mask.png").write_bytes(b"")
    again = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert again.exit_code == 0, again.output
    items = {item["name"]: item for item in json.loads(again.stdout)["items"]}
    assert items["p1"]["status"] == "skipped" and items["p1"]["warnings"] == []
    (note,) = items["p0"]["warnings"]
    assert note.startswith(f"{out / 'p0_mask.png'} is incomplete (") and note.endswith("; refining p0 again")
    assert f"warning: {note}" in flat(again.stderr)


def test_dry_run_and_failed_items_list_warnings_too(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    write_scene_files(data, "p0_im", "p0_seg", seed=0)
    (data / "bad_im.jpg").write_bytes(b"not an image")
    cv2.imwrite(str(data / "bad_seg.png"), np.zeros((8, 8), np.uint8))
    dry = runner.invoke(app, batch_args(data, out, tiny_weights, "--json", "--dry-run"))
    assert dry.exit_code == 1, dry.output
    assert [item["warnings"] for item in json.loads(dry.stdout)["items"]] == [[], []]


def test_a_batch_with_nothing_left_draws_no_progress_bar(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    write_scene_files(data, "p0_im", "p0_seg")
    first = runner.invoke(app, batch_args(data, out, tiny_weights))
    assert first.exit_code == 0, first.output
    assert "refine ━" in first.stderr and "1/1" in first.stderr  # the bar, as drawn when there is work
    again = runner.invoke(app, batch_args(data, out, tiny_weights))
    assert again.exit_code == 0, again.output
    assert "━" not in again.stderr and "0/0" not in again.stderr
    assert again.stderr.splitlines() == [
        f"batch: 1 pair found in {data} (BIG layout: <name>_im + <name>_seg), 1 already done; refining 0 -> {out}",
        f"batch: 0 refined, 1 skipped (already done), 0 failed -> {out}"]
    quiet = runner.invoke(app, batch_args(data, out, tiny_weights, "-q"))
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_ray_refines_an_output_older_than_its_mask_again(tiny_weights: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    data, out = tmp_path / "data", tmp_path / "out"
    three_pairs(data)
    outputs = finished_run(data, out, tiny_weights)
    other_mask(data, "p1")
    stamp(data / "p1_seg.png", T1 + 10**9)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json", "--threads", "1", "--ray", "local"))
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {item["name"]: item["status"] for item in summary["items"]} == {"p0": "skipped", "p1": "ok",
                                                                          "p2": "skipped"}
    assert "1 output older than its photo or mask: refined again" in flat(result.stderr)
    assert [path.stat().st_mtime_ns == T1 for path in outputs] == [True, False, True]
