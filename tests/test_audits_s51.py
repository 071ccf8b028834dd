"""Two audits of session 51. A dataset builder's of `crm batch`: outputs that are links to the inputs,
folders that cannot be read, and pairs left to a run that has died since. A service's of the Python
API: memory shortages, devices, switches, threads, a missing exported encoder and paths given for arrays."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def pairs(tmp_path: Path) -> Path:
    """A BIG-layout folder of three small pairs p0-p2."""
    folder = tmp_path / "in"
    for index in range(3):
        write_scene_files(folder, f"p{index}_im", f"p{index}_seg", size=(96, 128), seed=index)
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_an_output_that_is_a_link_to_an_input_fails_and_leaves_the_input_alone(
        pairs: Path, tmp_path: Path, how: str, overwrite: bool) -> None:
    """Seeding the output folder with links to the coarse masks wrote the refined mask through a
    symbolic link into the input (--overwrite), or counted the input as done (exit 0 either way). A
    hard link is refused too, so that both kinds of link say the same."""
    out = tmp_path / "out"
    out.mkdir()
    own_mask, other_photo = pairs / "p0_seg.png", pairs / "p2_im.jpg"
    for output, source in ((out / "p0_mask.png", own_mask), (out / "p1_mask.png", other_photo)):
        os.symlink(source, output) if how == "symlink" else os.link(source, output)
    before = {path: digest(path) for path in pairs.iterdir()}
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json",
                                 *(["--overwrite"] if overwrite else [])])
    assert result.exit_code == 1, result.output
    assert {path: digest(path) for path in pairs.iterdir()} == before  # no input was written
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert items["p2"]["status"] == "ok"
    assert "3 pairs found in" in result.stderr and "2 whose output is an input;" in result.stderr
    for name, source in (("p0", own_mask), ("p1", other_photo)):
        assert items[name]["status"] == "failed"
        assert items[name]["error"] == (f"{out / f'{name}_mask.png'} is the input {source} (a link to it); "
                                        f"remove {out / f'{name}_mask.png'} to refine {name}")
        assert items[name]["error"] in " ".join(result.stderr.split())
    os.unlink(out / "p0_mask.png")  # as the message says: the rerun refines it
    rerun = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert {item["name"]: item["status"] for item in json.loads(rerun.stdout)["items"]} == {
        "p0": "ok", "p1": "failed", "p2": "skipped"}
    assert not (out / "p0_mask.png").is_symlink() and digest(own_mask) == before[own_mask]


def test_an_output_linked_to_a_ground_truth_is_refused_too(pairs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    truth = pairs / "p0_gt.png"
    truth.write_bytes((pairs / "p0_seg.png").read_bytes())
    os.symlink(truth, out / "p0_mask.png")
    before = digest(truth)
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--overwrite", "--json"])
    assert result.exit_code == 1, result.output
    assert digest(truth) == before
    (item,) = [item for item in json.loads(result.stdout)["items"] if item["status"] == "failed"]
    assert item["error"].startswith(f"{out / 'p0_mask.png'} is the input {truth} (a link to it)")


def test_an_output_linked_elsewhere_is_still_written_through(pairs: Path, tmp_path: Path) -> None:
    """A link to a file that is no input (outputs kept on another disk) is written as before."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere / "p0_mask.png", out / "p0_mask.png")  # dangling until written
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert (out / "p0_mask.png").is_symlink() and (elsewhere / "p0_mask.png").stat().st_size > 0


def folder_layout(root: Path) -> Path:
    """images/ + masks/ with p0 at the top and p1, p2 in the sub-folder sub/."""
    for index, sub in ((0, ""), (1, "sub"), (2, "sub")):
        photo, mask = write_scene_files(root / "images" / sub, f"p{index}", f"p{index}_tmp", size=(96, 128),
                                        seed=index)
        (root / "masks" / sub).mkdir(parents=True, exist_ok=True)
        mask.rename(root / "masks" / sub / f"p{index}.png")
    return root


def refuse_listing(monkeypatch: pytest.MonkeyPatch, *unreadable: Path) -> None:
    """os.scandir fails with EACCES on these folders, as for a user without the right to read them
    (a chmod alone does not stop root, who may run the tests)."""
    import errno

    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(os.fspath(path)) in unreadable:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_sub_folder_is_named_and_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It was skipped in silence (exit 0, "ok"), the only sign a mask without an image."""
    root = folder_layout(tmp_path / "in")
    refuse_listing(monkeypatch, root / "images" / "sub")
    result = runner.invoke(app, ["batch", str(root), "-o", str(tmp_path / "out"), "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["status"], summary["done"], summary["failed"]) == ("partial", 1, 1)
    error = f"cannot read the folder {root / 'images' / 'sub'} (Permission denied): its files were not paired"
    assert [item["error"] for item in summary["items"] if item["status"] == "failed"] == [error]
    assert error in " ".join(result.stderr.split())
    assert "1 pair found in" in result.stderr and "(images/ + masks/ folders), 1 folder unreadable;" in result.stderr


def test_an_unreadable_masks_folder_says_so_for_each_photo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder_layout(tmp_path / "in")
    refuse_listing(monkeypatch, root / "masks" / "sub")
    result = runner.invoke(app, ["batch", str(root), "-o", str(tmp_path / "out"), "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    errors = sorted(item["error"] for item in json.loads(result.stdout)["items"] if item["status"] == "failed")
    sub = root / "masks" / "sub"
    assert errors == sorted([
        f"cannot read the folder {sub} (Permission denied): its files were not paired",
        *(f"{root / 'images' / 'sub' / name}: its mask cannot be looked for: the folder {sub} cannot be read"
          for name in ("p1.jpg", "p2.jpg"))])


@pytest.mark.parametrize("layout", ["big", "folders"])
def test_an_unreadable_input_folder_is_a_usage_error_that_says_so(pairs: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """It read "no pairs found; expected images/..." (the folder) or "holds no image files" (images/)."""
    root = pairs if layout == "big" else folder_layout(tmp_path / "layout")
    unreadable = root if layout == "big" else root / "images"
    refuse_listing(monkeypatch, unreadable)
    result = runner.invoke(app, ["batch", str(root), "-o", str(tmp_path / "out"), "-d", "cpu"])
    assert result.exit_code == 2, result.output
    holder = "it" if layout == "big" else str(unreadable)
    assert f"{root}: no pairs found; cannot read {holder} (Permission denied)" in " ".join(result.stderr.split())


def test_unreadable_folders_in_the_output_folder_or_a_lost_and_found_are_not_missed(
        pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither holds an input: the output folder's files are never paired, and an ext4 mount's
    lost+found (root's, mode 0700) is no data; a run over either failed with exit 1."""
    out = pairs / "refined"
    (out / "old").mkdir(parents=True)
    (pairs / "lost+found").mkdir()
    refuse_listing(monkeypatch, out / "old", pairs / "lost+found")
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert "cannot read" not in result.stderr and json.loads(result.stdout)["failed"] == 0


def test_no_pairs_found_names_the_sub_folder_it_could_not_read(pairs: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    pairs.rename(root / "a" / "pairs")
    refuse_listing(monkeypatch, root / "a")
    result = runner.invoke(app, ["batch", str(root), "-o", str(tmp_path / "out"), "-d", "cpu"])
    assert result.exit_code == 2, result.output
    assert f"cannot read 1 folder in it, e.g. {root / 'a'} (Permission denied)" in " ".join(result.stderr.split())


def test_crm_train_names_an_unreadable_folder_apart_from_photos_without_a_mask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.pairing import scan_pairs
    from crm_cli.training.data import target_pairs

    root = folder_layout(tmp_path / "in")
    write_scene_files(root / "images", "p9", "p9_seg", size=(96, 128))  # a photo without its mask
    (root / "images" / "p9_seg.png").unlink()
    refuse_listing(monkeypatch, root / "images" / "sub")
    pairs, warnings = target_pairs(scan_pairs(root, command="crm train"), root)
    assert [pair.name for pair in pairs] == ["p0"] and len(warnings) == 2
    photo = root / "images" / "p9.jpg"
    assert warnings[0].startswith(f"{root}: 1 photo without a mask left out, e.g. {photo}: no mask")
    assert warnings[1] == (f"{root}: 1 folder left out, e.g. cannot read the folder {root / 'images' / 'sub'} "
                           "(Permission denied): its files were not paired")


@pytest.fixture()
def live_holder() -> object:
    """A process of this host that stands for another crm run holding a lock; killed at the end."""
    import subprocess

    holder = subprocess.Popen(["sleep", "60"])
    yield holder
    holder.kill()
    holder.wait()


def lock_of(output: Path, pid: int) -> Path:
    import socket

    from crm_cli.locks import lock_path

    lock = lock_path(output)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(f"{pid} {socket.gethostname()} token\n")
    return lock


def test_a_pair_whose_holder_dies_during_the_run_is_refined_at_its_end(
        pairs: Path, tmp_path: Path, live_holder: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers on one folder, one killed for memory: the other left its pair to it and ended
    with exit 0 and "1 left to another crm run", the holder long gone (a rerun took over at once)."""
    import crm_cli.locks

    out = tmp_path / "out"
    lock = lock_of(out / "p0_mask.png", live_holder.pid)
    describe = crm_cli.locks.describe_holder

    def holder_dying_right_after(output: str) -> str:
        text = describe(output)
        live_holder.kill()
        live_holder.wait()
        return text

    monkeypatch.setattr(crm_cli.locks, "describe_holder", holder_dying_right_after)
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["in_progress"], summary["failed"]) == (3, 0, 0)
    assert (out / "p0_mask.png").is_file() and not lock.exists()
    assert [item["name"] for item in summary["items"]] == ["p0", "p1", "p2"]  # in input order still


def test_a_pair_left_to_a_run_that_has_ended_without_it_fails_saying_run_again(
        pairs: Path, tmp_path: Path, live_holder: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where it cannot be taken over here (the holder ended after the last try, or the run was on Ray),
    the summary no longer says "left to another crm run" with exit 0."""
    import crm_cli.locks

    out = tmp_path / "out"
    lock = lock_of(out / "p0_mask.png", live_holder.pid)
    tries = {"n": 0}
    real_abandoned = crm_cli.locks.abandoned

    def holder_ending_after_the_retry(output: str) -> bool:
        tries["n"] += 1
        if tries["n"] == 2:  # the summary's look, after plain_results' one
            live_holder.kill()
            live_holder.wait()
        return real_abandoned(output)

    monkeypatch.setattr(crm_cli.locks, "abandoned", holder_ending_after_the_retry)
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["in_progress"], summary["failed"]) == (2, 0, 1)
    (item,) = [item for item in summary["items"] if item["status"] == "failed"]
    assert item["error"].startswith(f"the crm run that held {lock} (pid {live_holder.pid} on ")
    assert item["error"].endswith(f"ended without finishing {out / 'p0_mask.png'}: run the same command again "
                                  "to refine p0")
    assert "lock" not in item and "left to another run" not in result.stderr


# The Python API (a service's audit, session 51) ----------------------------------------------------------------


def opencv_shortage() -> BaseException:
    """OpenCV's error as its allocator raises it."""
    import cv2

    return cv2.error("OpenCV(4.11.0) alloc.cpp:73: error: (-4:Insufficient memory) Failed to allocate 9000000 bytes "
                     "in function 'OutOfMemoryError'")


def onnxruntime_shortage() -> BaseException:
    """ONNX Runtime's error as its arena raises it (an Exception, neither MemoryError nor RuntimeError)."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    return Fail("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node. Name:'/c' "
                "Status Message: bfc_arena.cc:360 AllocateRawInternal Failed to allocate memory for requested buffer "
                "of size 27557888")


@pytest.mark.parametrize("raised, text", [
    (opencv_shortage(), "Unable to allocate 8.6 MiB in OpenCV"),
    (onnxruntime_shortage(), "Unable to allocate 26.3 MiB in ONNX Runtime"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:118] data. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 1000000 bytes. Error code 12 (Cannot allocate memory)"),
     "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1000000 bytes. Error code 12 (Cannot "
     "allocate memory)"),
])
def test_the_api_raises_a_shortage_of_the_machines_memory_as_memory_error(
        monkeypatch: pytest.MonkeyPatch, raised: BaseException, text: str) -> None:
    """README promised a MemoryError; OpenCV's and torch's CPU shortages came out as cv2.error and
    RuntimeError, which a service catching MemoryError answered with a 500."""
    import numpy as np

    from crm_cli import Refiner
    from crm_cli.errors import out_of_memory_message

    refiner = Refiner(device="cpu")

    def short(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(Refiner, "_refine_detailed", short)
    image, mask = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8)
    with pytest.raises(MemoryError) as caught:
        refiner.refine(image, mask)
    assert str(caught.value) == text and caught.value.__cause__ is raised
    assert out_of_memory_message(caught.value) == out_of_memory_message(raised)  # the CLI's line is unchanged


@pytest.mark.parametrize("raised", [RuntimeError("CUDA error: out of memory"), RuntimeError("something else"),
                                    ValueError("a caller's array")])
def test_other_errors_keep_their_types(monkeypatch: pytest.MonkeyPatch, raised: BaseException) -> None:
    import numpy as np

    from crm_cli import Refiner

    refiner = Refiner(device="cpu")

    def failing(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(Refiner, "_refine_detailed", failing)
    with pytest.raises(type(raised)) as caught:
        refiner.refine_detailed(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    assert caught.value is raised


def test_a_torch_device_is_taken_and_a_number_is_a_type_error(tiny_weights: Path) -> None:
    """A torch.device (what a from_model caller holds) was an AttributeError ('no attribute strip'),
    1 as well, and 0 silently meant auto."""
    import torch
    from conftest import make_tiny_model

    from crm_cli import Refiner
    from crm_cli.devices import device_name

    assert device_name(torch.device("cpu")) == "cpu" and device_name(torch.device("cuda", 1)) == "cuda:1"
    assert device_name(None) == "auto"
    assert Refiner(tiny_weights, device=torch.device("cpu")).device_name.startswith("cpu")
    assert Refiner.from_model(make_tiny_model(), device=torch.device("cpu")).device_name.startswith("cpu")
    for number in (0, 1, 2.0):
        with pytest.raises(TypeError, match=rf"device must be a name such as 'cpu' or 'cuda:0', or a torch.device; "
                                            rf"got {type(number).__name__} {number!r}"):
            Refiner(tiny_weights, device=number)


@pytest.mark.parametrize("value", ["False", "no", 2, 0.0])
def test_a_switch_that_is_no_bool_is_a_type_error(tiny_weights: Path, value: object) -> None:
    """guard="False" switched the guard on (a non-empty string is true)."""
    import numpy as np

    from crm_cli import Refiner

    refiner = Refiner(tiny_weights, device="cpu")
    image, mask = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)
    with pytest.raises(TypeError, match=rf"guard must be True, False or None, got {type(value).__name__} "):
        refiner.refine_detailed(image, mask, preset="balanced", guard=value)
    assert refiner.refine_detailed(image, mask, preset="balanced", guard=np.bool_(False)).guard_px is None


def test_too_many_threads_are_warned_of_once_with_a_partner(caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped weights' partner is built with the same count, and warned again."""
    import logging

    from crm_cli import Refiner, runtime

    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        refiner = Refiner(device="cpu", threads=64)
    assert refiner.partner is not None and refiner.runner.threads == refiner.partner.runner.threads == 2
    assert [record.getMessage() for record in caplog.records] == [
        "64 threads asked for, more than the 2 CPUs this process may use; using 2"]


def test_an_exported_encoder_gone_from_beside_its_weights_is_warned_of(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The Refiner went on torch in silence (about 2.5 times slower), where a missing sidecar warns."""
    import logging
    import shutil

    from crm_cli import Refiner
    from crm_cli.checkpoint import default_weights_path

    shipped = default_weights_path()
    lone = shipped.with_name("crm_mobilenet_v2_lone_stage.safetensors")  # the lone-stage weights it names
    for stem in (shipped.stem, lone.stem):
        for file in shipped.parent.glob(f"{stem}.*"):
            shutil.copyfile(file, tmp_path / file.name)
    weights = tmp_path / shipped.name
    encoder = tmp_path / f"{shipped.stem}.encoder.onnx"
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert Refiner(weights, device="cpu", partner_model=False).backend == "onnx"
    assert caplog.records == []
    encoder.unlink()
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert Refiner(weights, device="cpu", partner_model=False).backend == "torch"
    assert [record.getMessage() for record in caplog.records] == [
        f"{weights}: the exported encoder {encoder.name} that its sidecar names is missing: refining with torch, "
        f"about 2.5 times slower on a CPU (copy it beside the weights, or export it again: python -m "
        f"crm_cli.onnx_export {weights})"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crm_cli"):  # crm info refines nothing: its table says it
        info = runner.invoke(app, ["info", "-w", str(weights)])
    assert caplog.records == [] and "warning" not in info.stderr and "missing" in info.stderr


def test_a_path_given_for_an_array_says_how_to_read_it(tiny_weights: Path) -> None:
    """It read "image must be (H, W, 3) uint8 RGB, got <U9 ()"."""
    import numpy as np

    from crm_cli import Refiner

    refiner = Refiner(tiny_weights, device="cpu")
    image, mask = np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8)
    # A TypeError, as the mask's (session 54; it was a ValueError).
    with pytest.raises(TypeError, match=r"^image must be an \(H, W, 3\) uint8 RGB array, got a path \('photo.jpg'\); "
                                        r"read it first: crm_cli.imageio.read_image\(...\)$"):
        refiner.refine("photo.jpg", mask)
    with pytest.raises(TypeError, match=r"^image must be an \(H, W, 3\) uint8 RGB array, got None$"):
        refiner.refine(None, mask)
    with pytest.raises(TypeError, match=r"got 4000 bytes \(a file's contents\?\); read it first"):
        refiner.refine(b"\x89PNG" * 1000, mask)  # an upload: named by its size, not printed whole
    with pytest.raises(TypeError, match=r"^mask must be an \(H, W\) array, got a path \(PosixPath\('m.png'\)\); "
                                        r"read it first: crm_cli.imageio.read_mask\(...\).probability\(\)$"):
        refiner.refine(image, Path("m.png"))


def test_a_full_disk_still_reports_the_pairs_left_to_another_run_as_such(
        pairs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held back for their second try, they were listed as not attempted when the disk filled first."""
    import errno

    import crm_cli.cli.batch as batch

    def job(refiner: object, job: dict, **options: object) -> dict:
        if job["name"] == "p0":
            return {"status": "in_progress", "seconds": 0.0, "lock_holder": "pid 1 on elsewhere, 1 min old",
                    "warnings": []}
        return {"status": "failed", "error": "no room", "seconds": 0.0, "warnings": [],
                batch.OUT_OF_SPACE_KEY: errno.ENOSPC}

    from crm_cli.locks import lock_path

    out = tmp_path / "out"
    held = lock_path(out / "p0_mask.png")  # a live run's, on another host
    held.parent.mkdir(parents=True)
    held.write_text("1 elsewhere token\n")
    monkeypatch.setattr(batch, "refine_pair_job", job)
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert result.exit_code == 1
    assert [(item["name"], item["status"]) for item in json.loads(result.stdout)["items"]] == [
        ("p0", "in_progress"), ("p1", "failed"), ("p2", "todo")]


def test_crm_score_names_an_unreadable_folder_and_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its ground truths were left out in silence: exit 0, "ok"."""
    import shutil

    from conftest import synthetic_scene
    from PIL import Image

    _, exact = synthetic_scene(64, 64)
    for sub in ("a", "b"):
        for side in ("pred", "gt"):
            (tmp_path / side / sub).mkdir(parents=True)
            Image.fromarray(exact).save(tmp_path / side / sub / "m.png")
    shutil.rmtree(tmp_path / "pred" / "b")
    (tmp_path / "pred" / "b").mkdir()
    refuse_listing(monkeypatch, tmp_path / "gt" / "b")
    result = runner.invoke(app, ["score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 1
    assert f"cannot read the folder {tmp_path / 'gt' / 'b'} (Permission denied)" in " ".join(result.stderr.split())


# Files from imaging pipelines (a third audit, session 51) --------------------------------------------------------


def planar_tiff_16bit(rgb16: np.ndarray, compress: bool) -> bytes:
    """A 16-bit RGB TIFF with one plane per colour (PlanarConfiguration 2), as tifffile writes a
    (3, H, W) array: written by hand, since neither Pillow nor OpenCV writes one."""
    import struct
    import zlib

    height, width = rgb16.shape[:2]
    planes = [rgb16[..., channel].astype("<u2").tobytes() for channel in range(3)]
    planes = [zlib.compress(plane) for plane in planes] if compress else planes
    tags = [(256, width), (257, height), (258, "bits"), (259, 8 if compress else 1), (262, 2), (273, "offsets"),
            (277, 3), (278, height), (279, "counts"), (284, 2)]
    base = 8 + 2 + 12 * len(tags) + 4
    places = {"bits": base, "offsets": base + 6, "counts": base + 18}
    first = base + 30
    offsets = [first + sum(map(len, planes[:index])) for index in range(3)]
    out = b"II*\x00" + struct.pack("<IH", 8, len(tags))
    for tag, value in tags:
        if isinstance(value, str):
            out += struct.pack("<HHII", tag, 3 if value == "bits" else 4, 3, places[value])
        else:
            out += struct.pack("<HHIHH", tag, 3, 1, value, 0)
    out += struct.pack("<I", 0) + struct.pack("<3H", 16, 16, 16) + struct.pack("<3I", *offsets)
    return out + struct.pack("<3I", *map(len, planes)) + b"".join(planes)


@pytest.mark.parametrize("compress", [True, False])
def test_a_16bit_tiff_with_separate_colour_planes_is_refused_not_read_as_noise(tmp_path: Path, compress: bool) -> None:
    """OpenCV scrambled the deflated one (off by 106 levels on average, no warning) and Pillow the
    uncompressed one; both were refined as noise."""
    from conftest import synthetic_scene

    from crm_cli.imageio import ImageReadError, read_image

    rgb, _ = synthetic_scene(40, 56)
    path = tmp_path / "planar.tif"
    path.write_bytes(planar_tiff_16bit(rgb.astype(np.uint16) * 257, compress))
    with pytest.raises(ImageReadError, match=r"planar.tif: a 16-bit colour TIFF with separate colour planes "
                                             r"\(PlanarConfiguration 2\) is not read correctly here"):
        read_image(path)


def test_16bit_colour_files_that_decode_alike_still_read(tmp_path: Path) -> None:
    """The check that OpenCV's and Pillow's readings agree lets the usual files through: a 16-bit PNG,
    one with a transparent colour (RGBA to OpenCV, RGB to Pillow) and an interleaved TIFF."""
    import zlib

    import cv2
    from conftest import synthetic_scene
    from PIL import Image

    from crm_cli.imageio import read_image

    rgb, _ = synthetic_scene(40, 56)
    wide = rgb.astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "a.png"), wide[..., ::-1].copy())
    cv2.imwrite(str(tmp_path / "a.tif"), wide[..., ::-1].copy())
    data = (tmp_path / "a.png").read_bytes()  # a tRNS chunk (black is transparent) before the image data
    chunk = b"tRNS" + bytes(6)
    at = data.index(b"IDAT") - 4
    (tmp_path / "t.png").write_bytes(data[:at] + len(bytes(6)).to_bytes(4, "big") + chunk
                                     + zlib.crc32(chunk).to_bytes(4, "big") + data[at:])
    assert Image.open(tmp_path / "t.png").mode == "RGB" and cv2.imread(str(tmp_path / "t.png"), -1).shape[2] == 4
    for name in ("a.png", "a.tif", "t.png"):
        assert np.array_equal(read_image(tmp_path / name), rgb), name


def class_ids(height: int = 96, width: int = 128) -> np.ndarray:
    """A one-class pseudo-label: 0 background, 3 the object (a disc)."""
    ys, xs = np.mgrid[:height, :width]
    return np.where((ys - height / 2) ** 2 + (xs - width / 2) ** 2 < (height / 3) ** 2, 3, 0).astype(np.uint8)


@pytest.mark.parametrize("name, save, lossy", [
    ("lossy.webp", {"format": "WEBP", "quality": 40}, "lossy WebP"),
    ("jpeg.tif", {"format": "TIFF", "compression": "jpeg"}, "JPEG-compressed TIFF"),
])
def test_class_ids_in_lossy_webp_or_jpeg_tiff_are_refused_as_in_jpeg(tmp_path: Path, name: str, save: dict,
                                                                     lossy: str) -> None:
    """Only .jpg was refused: a 0/3 mask saved as lossy WebP or JPEG-compressed TIFF was refined with
    compression noise as extra labels (ids 1, 2, 4), without a word."""
    from PIL import Image

    from crm_cli.image_headers import refusal_needs_decoding
    from crm_cli.imageio import ImageReadError, probe_image, read_mask

    path = tmp_path / name
    Image.fromarray(class_ids()).convert("RGB" if save["format"] == "WEBP" else "L").save(path, **save)
    assert set(np.unique(np.asarray(Image.open(path).convert("L")))) - {0, 3}  # the compression's new ids
    header = probe_image(path)
    assert header.lossy == lossy and refusal_needs_decoding(header, as_mask=True)
    with pytest.raises(ImageReadError, match=rf"{name}: a {lossy} mask of small values \(0 to \d: a 0/1 mask or "
                                             r"class ids\?\), which its lossy compression has altered"):
        read_mask(path)


def test_lossless_webp_and_tiff_masks_of_class_ids_still_read(tmp_path: Path) -> None:
    from PIL import Image

    from crm_cli.imageio import probe_image, read_mask

    ids = class_ids()
    for name, save in (("a.webp", {"format": "WEBP", "lossless": True}), ("a.tif", {"format": "TIFF",
                                                                                      "compression": "tiff_lzw"})):
        Image.fromarray(ids).convert("RGB" if name.endswith("webp") else "L").save(tmp_path / name, **save)
        assert probe_image(tmp_path / name).lossy is None
        assert np.array_equal(read_mask(tmp_path / name).values, ids), name


def test_batch_pairs_every_format_refine_reads(tmp_path: Path) -> None:
    """A .pgm mask made "no mask a.* under masks" while it lay there; .ppm and .jfif photos were skipped."""
    import cv2
    from conftest import coarse_of, synthetic_scene

    root = tmp_path / "in"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, photo, mask in (("a", "png", "pgm"), ("b", "ppm", "png"), ("c", "jfif", "pbm")):
        rgb, exact = synthetic_scene(96, 128, seed=len(name + photo))
        encoded = cv2.imencode(".jpg" if photo == "jfif" else f".{photo}", rgb[..., ::-1].copy())[1]
        (root / "images" / f"{name}.{photo}").write_bytes(encoded.tobytes())
        cv2.imwrite(str(root / "masks" / f"{name}.{mask}"), coarse_of(exact, 8))
    result = runner.invoke(app, ["batch", str(root), "-o", str(tmp_path / "out"), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert {item["name"]: item["status"] for item in json.loads(result.stdout)["items"]} == {
        "a": "ok", "b": "ok", "c": "ok"}


def test_a_size_mismatch_a_damaged_exif_block_may_explain_says_so(tmp_path: Path, tiny_weights: Path) -> None:
    """A photo stored turned (its orientation tag lost in a damaged EXIF block) met an upright mask: the
    error named the sizes only, and the damage, which the decode would have said, was never said."""
    from conftest import coarse_of, synthetic_scene
    from PIL import Image

    corrupt_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"  # its first directory cut short
    photo, exact = synthetic_scene(96, 128)
    image, mask = tmp_path / "photo.jpg", tmp_path / "mask.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(photo))).save(image, exif=corrupt_exif)  # stored 96 wide
    Image.fromarray(coarse_of(exact)).save(mask)
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"), "-w",
                                 str(tiny_weights), "-d", "cpu", "--json", "-q"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == (
        f"mask {mask} is 128x96 but image {image} is 96x128; a mask must have the image's size or be a smaller copy "
        f"with the same aspect ratio ({image}: damaged EXIF data ignored, so no EXIF orientation was applied "
        "(Corrupt EXIF data. Expecting to read 12 bytes but only got 0))")
    assert not (tmp_path / "out.png").exists()
