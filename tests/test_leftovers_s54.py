"""Session 54: the audits' leftovers and the day's reviews. Each test of a mend fails on the code before
it; the label-id test checks two readings against each other."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def flat(text: str) -> str:
    """``text`` with Rich's line wrapping undone."""
    return " ".join(text.split())


def test_eval_calls_a_ground_truth_of_the_wrong_size_a_ground_truth(tiny_weights: Path, tmp_path: Path) -> None:
    """crm eval's size-mismatch message called the ground truth a "mask", and told the user what a mask
    must be, while the coarse mask was fine."""
    import cv2

    folder = tmp_path / "big"
    write_scene_files(folder, "a_im", "a_seg", size=(60, 80))
    cv2.imwrite(str(folder / "a_gt.png"), np.zeros((50, 80), np.uint8))
    result = runner.invoke(app, ["eval", str(folder), "-w", str(tiny_weights), "-d", "cpu", "-q"])
    assert result.exit_code == 1
    assert (f"a: ground truth {folder / 'a_gt.png'} is 80x50 but image {folder / 'a_im.jpg'} is 80x60; a ground "
            "truth must have the image's size or be a smaller copy with the same aspect ratio") in flat(result.stderr)


def test_the_size_rule_names_the_file_by_its_role() -> None:
    """The library's check takes the role; a coarse mask is still a "mask"."""
    from crm_cli.masks import SizeMismatchError, check_mask_size

    with pytest.raises(SizeMismatchError, match=r"^ground truth g.png is 80x50 but image p.jpg is 80x60; a ground "):
        check_mask_size((50, 80), (60, 80), "p.jpg", "g.png", role="ground truth")
    with pytest.raises(SizeMismatchError, match=r"^mask m.png is 80x50 .*; a mask must"):
        check_mask_size((50, 80), (60, 80), "p.jpg", "m.png")


def _block_masks() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 200x300 photo, a rectangle, and the rectangle with one 10x10 hole: they differ in one place."""
    photo = np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    coarse = np.zeros((200, 300), np.uint8)
    coarse[50:150, 80:220] = 255
    refined = coarse.copy()
    refined[60:70, 100:110] = 0
    return photo, coarse, refined


def test_compare_says_when_fewer_crops_fit_than_were_asked(caplog: pytest.LogCaptureFixture) -> None:
    """--crops 4 on masks that differ in one place drew one crop without a word."""
    from crm_cli.compare import compare_strip, default_crop_size, difference_windows

    photo, coarse, refined = _block_masks()
    size = default_crop_size(200, 300)
    assert size == 25 and len(difference_windows(coarse > 128, refined > 128, 4, size)) == 1
    with caplog.at_level(logging.WARNING, logger="crm_cli.compare"):
        compare_strip(photo, coarse, refined, crops=4)
    assert [record.getMessage() for record in caplog.records] == [
        "1 of the 4 crops asked for: no other 25x25 window apart from it holds a pixel where the masks differ"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crm_cli.compare"):
        compare_strip(photo, coarse, refined, crops=1)  # as many as asked: nothing to say
        empty = np.zeros_like(coarse)
        compare_strip(photo, empty, empty, crops=2)
    assert [record.getMessage() for record in caplog.records] == [
        "0 of the 2 crops asked for: no 25x25 window holds a pixel of the refined boundary"]


def test_compare_cli_shows_the_fewer_crops_warning(tmp_path: Path) -> None:
    import cv2

    photo, coarse, refined = _block_masks()
    paths = [tmp_path / name for name in ("p.png", "c.png", "r.png")]
    for path, array in zip(paths, (photo, coarse, refined), strict=True):
        cv2.imwrite(str(path), array)
    result = runner.invoke(app, ["compare", *map(str, paths), "-o", str(tmp_path / "cmp.png"), "--crops", "3"])
    assert result.exit_code == 0, result.output
    assert "warning: 1 of the 3 crops asked for" in result.stderr
    assert (tmp_path / "cmp.png").stat().st_size > 0


def test_score_pred_suffix_with_a_prediction_file_is_a_usage_error(tmp_path: Path) -> None:
    """--pred-suffix picks predictions in a PRED folder; given two files it was ignored in silence."""
    import cv2

    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 255
    (tmp_path / "preds").mkdir()
    for path in (tmp_path / "a_gt.png", tmp_path / "a_seg.png", tmp_path / "preds" / "a_seg.png"):
        cv2.imwrite(str(path), mask)
    gt, pred = tmp_path / "a_gt.png", tmp_path / "a_seg.png"
    result = runner.invoke(app, ["score", str(pred), str(gt), "--pred-suffix", "_seg"])
    assert result.exit_code == 2
    assert (f"Invalid value for '--pred-suffix': it names predictions in a PRED folder, and PRED {pred} is a "
            "file") in flat(result.stderr)
    # A PRED folder with one ground-truth file is where it picks: still taken.
    result = runner.invoke(app, ["score", str(tmp_path / "preds"), str(gt), "--pred-suffix", "_seg", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["iou"] == pytest.approx(1.0)


def test_train_help_names_values_not_click_types() -> None:
    """crm train's help read `--steps <int range>`; every other command names the value (N, PX...)."""
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "range>" not in result.stdout
    for shown in ("--steps N", "--lr LR", "--query-window PX", "--zoom FACTOR", "--stop-at STEP", "--threads N"):
        assert shown in result.stdout


def test_a_file_click_deems_unreadable_is_crms_to_report(tiny_weights: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Click refused an existing IMAGE it judged unreadable as a usage error (exit 2), where crm's own
    readers report an unreadable or missing file as a failure naming it (exit 1). As root every file
    is readable, so click's judgement is stood in for."""
    photo, mask = write_scene_files(tmp_path, "p", "m")
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if os.fspath(path) == str(photo) and mode & os.R_OK:  # type: ignore[arg-type]
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    result = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "o.png"), "-w",
                                 str(tiny_weights), "-d", "cpu", "-q"])
    assert "is not readable" not in result.stderr
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.png").stat().st_size > 0


@pytest.mark.parametrize(("args", "error"), [
    (["batch", "{tmp}/nothere", "-o", "{tmp}/out"], "Invalid value for 'FOLDER': folder {tmp}/nothere does not exist"),
    (["batch", "{tmp}/p.jpg", "-o", "{tmp}/out"], "Invalid value for 'FOLDER': {tmp}/p.jpg is a file, not a folder"),
    (["batch", "{tmp}", "-o", "{tmp}/out", "--masks", "{tmp}/nothere"],
     "Invalid value for '--masks': folder {tmp}/nothere does not exist"),
    (["eval", "{tmp}/nothere"], "Invalid value for 'FOLDER': folder {tmp}/nothere does not exist"),
    (["eval", "{tmp}", "-o", "{tmp}/p.jpg"], "Invalid value for '--output': {tmp}/p.jpg is a file, not a folder"),
    (["coco", "{tmp}/nothere.json", "-i", "{tmp}", "-o", "{tmp}/o.json"],
     "Invalid value for 'ANNOTATIONS.json': file {tmp}/nothere.json does not exist"),
    (["coco", "{tmp}", "-i", "{tmp}", "-o", "{tmp}/o.json"],
     "Invalid value for 'ANNOTATIONS.json': {tmp} is a folder, not a file"),
    (["coco", "{tmp}/a.json", "-i", "{tmp}/nothere", "-o", "{tmp}/o.json"],
     "Invalid value for '--images' / '-i': folder {tmp}/nothere does not exist"),
])
def test_a_missing_input_folder_still_prints_the_json_record(tmp_path: Path, args: list[str], error: str) -> None:
    """`crm batch "$DIR" --json | jq` got nothing on stdout for a missing DIR: click checked it before
    the command ran. It is still a usage error (exit 2), now with the record every other one prints."""
    write_scene_files(tmp_path, "p", "m")
    (tmp_path / "a.json").write_text('{"images": [], "annotations": [], "categories": []}')
    given = [arg.format(tmp=tmp_path) for arg in args]
    result = runner.invoke(app, [*given, "--json"])
    assert result.exit_code == 2, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    assert record["error"] == error.format(tmp=tmp_path)
    assert f"error: {error.format(tmp=tmp_path)}" in flat(result.stderr)
    assert not (tmp_path / "out").exists() and not (tmp_path / "o.json").exists()


def test_the_api_hints_name_what_it_takes(tiny_weights: Path) -> None:
    """Refiner.refine took PIL images and Refiner a torch.device, but the hints named only arrays and
    strings, so a type checker refused calls that work."""
    import typing

    import torch
    from conftest import synthetic_scene
    from PIL import Image

    import crm_cli.engine as engine

    names = {**vars(engine), "Image": Image, "torch": torch}
    for method in (engine.Refiner.refine, engine.Refiner.refine_detailed):
        hints = typing.get_type_hints(method, globalns=names)
        assert Image.Image in typing.get_args(hints["image"]) and Image.Image in typing.get_args(hints["mask"])
    for method in (engine.Refiner.__init__, engine.Refiner.from_checkpoint):
        assert torch.device in typing.get_args(typing.get_type_hints(method, globalns=names)["device"])
    # What the hints name is taken, and gives what the arrays give.
    photo, mask = synthetic_scene(64, 96, seed=3)
    refiner = engine.Refiner(tiny_weights, device=torch.device("cpu"))
    np.testing.assert_array_equal(refiner.refine(Image.fromarray(photo), Image.fromarray(mask)),
                                  refiner.refine(photo, mask))


def test_a_ray_address_ray_cannot_read_is_a_usage_error(tmp_path: Path) -> None:
    """`--ray host:port:x` is the user's typing, as a malformed --device is: exit 2 (it was 1, as a lost
    cluster is), with the --json record."""
    pytest.importorskip("ray")
    write_scene_files(tmp_path / "in", "a_im", "a_seg")
    result = runner.invoke(app, ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--ray", "not:an:address",
                                 "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"] == ("cannot connect to Ray at 'not:an:address': Invalid address "
                                                  "format: not:an:address")
    assert not any((tmp_path / "out").rglob("*.png"))  # nothing refined (a missing folder yields nothing)


@pytest.mark.parametrize("dtype, high", [(np.uint8, 256), (np.uint16, 300), (np.uint16, 65536)])
def test_a_mask_reads_its_label_ids_as_the_labels_module_does(dtype: type, high: int) -> None:
    """MaskData.label_ids reads its histogram itself now (masks and labels imported each other);
    both must give the same ids, the background left out."""
    from crm_cli.labels import label_ids
    from crm_cli.masks import MaskData

    values = np.random.default_rng(high).integers(0, high, (40, 50)).astype(dtype)
    values[:5] = 0
    mask = MaskData(values, "gray8" if dtype == np.uint8 else "gray16")
    assert mask.label_ids == label_ids(values) == sorted(set(values.ravel().tolist()) - {0})


def test_the_decoder_table_makes_no_float64_tensor_on_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    """MPS has no float64: every torch refinement on an Apple-silicon Mac (auto's device there) raised a
    TypeError in the decoder's axis table. Stood in for here: MPS's refusal of float64, and moving."""
    import torch

    from crm_cli.model import decoder

    real_arange = torch.arange
    made: list[str] = []
    moved: list[str] = []

    def arange(*args: object, device: object = None, dtype: object = None, **kwargs: object) -> torch.Tensor:
        kind = torch.device(device).type  # type: ignore[arg-type]
        if kind == "mps" and dtype == torch.float64:
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64")
        made.append(kind)
        return real_arange(*args, device="cpu", dtype=dtype, **kwargs)  # type: ignore[call-overload]

    def to(self: torch.Tensor, target: object, *args: object, **kwargs: object) -> torch.Tensor:
        moved.append(torch.device(target).type)  # type: ignore[arg-type]
        return self

    monkeypatch.setattr(torch, "arange", arange)
    monkeypatch.setattr(torch.Tensor, "to", to)
    on_mps = decoder.axis_geometry(37, 20, 12, 2, torch.device("mps"))
    monkeypatch.undo()
    on_cpu = decoder.axis_geometry(37, 20, 12, 2, torch.device("cpu"))
    assert made == ["cpu"] and moved == ["mps"] * 4
    for mps_value, cpu_value in zip(on_mps, on_cpu, strict=True):
        assert mps_value.dtype == cpu_value.dtype and torch.equal(mps_value, cpu_value)


class _Kernel32:
    """Windows' kernel32 as _windows_pid_running calls it: a process that is there (handle 7, with an
    exit code), or none (no handle)."""

    def __init__(self, exit_code: int | None) -> None:
        self.exit_code, self.closed = exit_code, []

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:  # noqa: N802 - Windows' name
        return 0 if self.exit_code is None else 7

    def GetExitCodeProcess(self, handle: int, code: object) -> bool:  # noqa: N802
        code._obj.value = self.exit_code  # type: ignore[attr-defined]  # ctypes.byref's target
        return True

    def CloseHandle(self, handle: int) -> bool:  # noqa: N802
        self.closed.append(handle)
        return True


@pytest.mark.parametrize(("exit_code", "error", "running"), [
    (259, None, True),  # STILL_ACTIVE
    (0, None, False),  # it has ended: its lock may be taken over
    (None, 87, False),  # ERROR_INVALID_PARAMETER: no such process
    (None, 5, True),  # ERROR_ACCESS_DENIED: another user's, running
])
def test_a_lock_owner_is_probed_on_windows_without_a_signal(monkeypatch: pytest.MonkeyPatch, exit_code: int | None,
                                                              error: int | None, running: bool) -> None:
    """On Windows os.kill(pid, 0) sends CTRL_C_EVENT (0) to a console process group, and for a dead
    process raised an OSError that counted as alive: a dead run's lock held its pair for 30 minutes,
    and the batch said "ok"."""
    from crm_cli import locks

    kernel32 = _Kernel32(exit_code)
    assert locks._windows_pid_running(4242, kernel32, lambda: error) is running
    assert kernel32.closed == ([] if exit_code is None else [7])  # each handle opened is closed
    asked: list[int] = []
    monkeypatch.setattr(locks.os, "name", "nt")
    monkeypatch.setattr(locks, "_windows_pid_running", lambda pid: asked.append(pid) or running)
    monkeypatch.setattr(locks.os, "kill", lambda *args: pytest.fail("os.kill is no probe on Windows"))
    assert locks._pid_running(4242) is running and asked == [4242]


def test_peak_memory_is_unknown_without_the_resource_module(tiny_weights: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has no resource module: crm time failed with a traceback after all its timing work."""
    import sys

    from conftest import synthetic_scene

    from crm_cli import Refiner
    from crm_cli.evaluation import time_refine
    from crm_cli.runtime import peak_rss_mb

    assert peak_rss_mb() > 0
    monkeypatch.setitem(sys.modules, "resource", None)  # import resource: ImportError
    assert peak_rss_mb() is None
    photo, mask = synthetic_scene(64, 96, seed=1)
    report = time_refine(Refiner(tiny_weights, device="cpu"), photo, mask, repeat=1)
    assert report["peak_rss_mb"] is None and report["total_s"] > 0


def test_auto_takes_the_cpus_backend_when_a_driver_has_no_gpu_behind_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with an NVIDIA driver and a CPU-only torch: auto judged a GPU possible, so it skipped
    ONNX Runtime, then torch found no GPU and refined on the CPU with torch, about twice as slowly."""
    import crm_cli.devices as devices
    from crm_cli import Refiner

    monkeypatch.setattr(devices, "accelerator_possible", lambda: True)  # a driver is there...
    monkeypatch.setattr(devices, "available_devices", lambda: ["cpu"])  # ...and torch sees no GPU
    refiner = Refiner(device="auto")  # the shipped weights, which have an exported encoder
    assert refiner.backend == "onnx" and refiner.device_name.startswith("cpu")
    assert refiner.partner is not None and refiner.partner.backend == "onnx"
    assert Refiner(device="auto", backend="torch").backend == "torch"  # asked for: kept


def _unsearchable(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    """Stat of ``paths`` raises PermissionError, as under a folder the user may not search (Python 3.11's
    exists() and is_dir() raise then); as root nothing is unsearchable, so it is stood in for."""
    real_stat = Path.stat
    names = {str(path) for path in paths}

    def stat(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        if str(self) in names:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "stat", stat)


def _unreadable(monkeypatch: pytest.MonkeyPatch, *paths: Path) -> None:
    """``os.access`` says ``paths`` cannot be read or entered (root reads everything)."""
    real_access = os.access
    names = {str(path) for path in paths}

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if os.fspath(path) in names and mode & (os.R_OK | os.X_OK):  # type: ignore[arg-type]
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("command", ["batch", "eval"])
def test_an_input_folder_that_cannot_be_looked_at_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   command: str) -> None:
    """The review: a FOLDER under a folder the user cannot search raised PermissionError from exists(),
    a traceback (exit 1, no record); click had said it did not exist (exit 2)."""
    folder = tmp_path / "locked" / "big"
    write_scene_files(folder, "a_im", "a_seg")
    _unsearchable(monkeypatch, folder)
    extra = ["-o", str(tmp_path / "out")] if command == "batch" else []
    result = runner.invoke(app, [command, str(folder), *extra, "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["error"] == (f"Invalid value for 'FOLDER': folder {folder} cannot be looked at: "
                                                  "permission denied")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["batch", "{folder}", "-o", "{tmp}/out"], ["eval", "{folder}"],
                                  ["score", "{tmp}/preds", "{folder}"], ["score", "{folder}", "{tmp}/preds"]])
def test_an_input_folder_that_cannot_be_read_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              args: list[str]) -> None:
    """The review: with click's readability check off, an unreadable FOLDER read as one holding nothing
    ("no pairs found", or Python's "[Errno 13] ... 'big/images'" naming a folder never given)."""
    folder = tmp_path / "big"
    write_scene_files(folder, "a_im", "a_gt")
    (tmp_path / "preds").mkdir()
    _unreadable(monkeypatch, folder)
    result = runner.invoke(app, [arg.format(folder=folder, tmp=tmp_path) for arg in args])
    assert result.exit_code == 2, result.output
    assert f"folder {folder} cannot be read (permission denied)" in flat(result.stderr)


def test_an_output_under_a_folder_that_cannot_be_searched_is_named(tmp_path: Path) -> None:
    """unwritable_reason stat'ed its way up with exists(), which raises under an unsearchable folder."""
    from crm_cli.cli.checks import unwritable_reason

    target = tmp_path / "locked" / "out"
    real_stat = Path.stat

    def stat(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        if str(self).startswith(str(tmp_path / "locked")):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "stat", stat)
        reason = unwritable_reason(target, folder=True)
    assert reason == f"cannot write into {target}: permission denied on the way to it"


def test_a_python_file_error_reads_as_crm_names_files() -> None:
    """`crm coco unreadable.json` said "[Errno 13] Permission denied: 'unreadable.json'"."""
    from crm_cli.errors import message_of

    assert message_of(PermissionError(13, "Permission denied", "a.json")) == "a.json: permission denied"
    assert message_of(FileNotFoundError(2, "No such file or directory", "x/y.png")) == ("x/y.png: no such file or "
                                                                                       "directory")
    # crm's own wording, and an error naming two files, stay as they are.
    assert message_of(OSError("a.png: empty file")) == "a.png: empty file"
    two = OSError(18, "Invalid cross-device link", "a", None, "b")
    assert message_of(two) == str(two)


def test_pred_suffix_with_a_file_against_a_folder_says_what_is_wrong(tmp_path: Path) -> None:
    """The review: --pred-suffix hid the real problem, a PRED file against a GT folder."""
    import cv2

    cv2.imwrite(str(tmp_path / "p.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "gts").mkdir()
    result = runner.invoke(app, ["score", str(tmp_path / "p.png"), str(tmp_path / "gts"), "--pred-suffix", "_seg"])
    assert result.exit_code == 2
    assert "GT is a folder, so PRED must be a folder too" in flat(result.stderr)


def test_compare_calls_a_ground_truth_of_the_wrong_size_a_ground_truth(tmp_path: Path) -> None:
    import cv2

    photo, coarse, refined = _block_masks()
    paths = [tmp_path / name for name in ("p.png", "c.png", "r.png", "g.png")]
    for path, array in zip(paths, (photo, coarse, refined, coarse[:50]), strict=True):
        cv2.imwrite(str(path), array)
    result = runner.invoke(app, ["compare", *map(str, paths), "-o", str(tmp_path / "cmp.png")])
    assert result.exit_code == 1
    assert f"ground truth {paths[3]} is 300x50 but image {paths[0]} is 300x200" in flat(result.stderr)


def test_a_label_maps_record_names_the_id_of_each_entry(tiny_weights: Path, tmp_path: Path) -> None:
    """The README audit: label_change_confidence, label_ratios... were bare lists, and with --labels a
    user could not tell which id an entry was."""
    import cv2
    from conftest import synthetic_scene

    photo, _ = synthetic_scene(160, 200, seed=2)
    ids = np.zeros((160, 200), np.uint8)
    ids[20:70, 20:90], ids[90:150, 30:100], ids[40:120, 120:190] = 3, 5, 7
    cv2.imwrite(str(tmp_path / "p.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "ids.png"), ids)
    common = ["refine", str(tmp_path / "p.png"), str(tmp_path / "ids.png"), "-o", str(tmp_path / "o.png"), "-w",
              str(tiny_weights), "-d", "cpu", "--mode", "labels", "--json"]
    every = json.loads(runner.invoke(app, common).stdout)
    chosen = json.loads(runner.invoke(app, [*common, "--labels", "7,3"]).stdout)
    assert every["label_ids"] == [3, 5, 7] and len(every["label_change_confidence"]) == 3
    assert chosen["label_ids"] == [3, 7] and len(chosen["label_ratios"]) == 2


def _touching_classes(kind: str) -> np.ndarray:
    """Two classes of ids from 64 up that touch: a disc split into halves (100 and 150), or a person
    (150) standing in front of a car (100), on background."""
    import cv2

    ids = np.zeros((240, 320), np.uint8)
    if kind == "split":
        cv2.circle(ids, (160, 120), 90, 100, -1)
        ids[:120][ids[:120] == 100] = 150
    else:
        cv2.rectangle(ids, (40, 120), (280, 200), 100, -1)
        cv2.ellipse(ids, (170, 120), (28, 80), 0, 0, 360, 150, -1)
    return ids


@pytest.mark.parametrize("kind", ["split", "over"])
def test_touching_classes_from_64_up_are_warned_of(kind: str) -> None:
    """The README audit: two classes that touch were taken for a soft mask's band (its levels between
    background and the top value) and read as one object above 128, losing the lower id's pixels
    without a word; the same ids apart were warned of."""
    from crm_cli.masks import MaskData, ids_note
    from crm_cli.pipeline import choose_mode

    mask = MaskData(_touching_classes(kind), "gray8")
    assert not mask.is_label_map() and choose_mode(mask, "auto") == "binary"  # read as before...
    assert mask.looks_like_ids()  # ...but said
    assert "--mode labels" in ids_note(mask, "ids.png")
    assert mask._background_meets_top() >= 0.1


def test_crm_refine_warns_of_touching_classes(tiny_weights: Path, tmp_path: Path) -> None:
    import cv2
    from conftest import synthetic_scene

    photo, _ = synthetic_scene(240, 320, seed=4)
    cv2.imwrite(str(tmp_path / "p.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "ids.png"), _touching_classes("split"))
    result = runner.invoke(app, ["refine", str(tmp_path / "p.png"), str(tmp_path / "ids.png"), "-o",
                                 str(tmp_path / "o.png"), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["mode"] == "binary" and any("--mode labels" in note for note in record["warnings"])


def test_coco_with_an_address_ray_cannot_read_leaves_no_progress_file(tmp_path: Path) -> None:
    """The review: `crm coco ... --ray host:port:x` became a usage error (exit 2) but still left
    OUT.json.partial.jsonl, a progress file of a run that never started."""
    pytest.importorskip("ray")
    from test_coco import make_dataset

    annotations, images, _ = make_dataset(tmp_path / "data")
    output = tmp_path / "refined.json"
    result = runner.invoke(app, ["coco", str(annotations), "-i", str(images), "-o", str(output), "--ray",
                                 "not:an:address", "--json"])
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["status"] == "failed"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]  # neither the output nor its progress


@pytest.mark.parametrize("command", ["eval", "batch"])
def test_an_output_folder_under_a_folder_that_cannot_be_searched_is_named(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          command: str) -> None:
    """The review: eval -o under a folder the user cannot search raised PermissionError from exists(),
    a traceback, before the write check could name it."""
    import shutil

    _, mask = write_scene_files(tmp_path / "big", "a_im", "a_seg")
    shutil.copy(mask, tmp_path / "big" / "a_gt.png")
    out = tmp_path / "locked" / "out"
    _unsearchable(monkeypatch, out)
    result = runner.invoke(app, [command, str(tmp_path / "big"), "-o", str(out)])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 1, result.output
    assert f"cannot write into {out}: permission denied on the way to it" in flat(result.stderr)
