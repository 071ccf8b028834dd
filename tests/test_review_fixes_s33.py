"""Review of today's changes: refine's pipe-or-device check decides by the file (a regular file under
/dev/shm is a file), cpu:N is the CPU, a batch pair lists the library's logged warnings on Ray too, OpenCV
running out of memory fails one batch pair, compare writes every JPEG name, crm score's size fitting is
the library's, and a photo's colour profile goes with the outputs that carry its pixels."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()
MEMORY_ADVICE = "; try a smaller --tile-size, the 'fast' preset, or a smaller image"


def model(weights: Path) -> list[str]:
    return ["-w", str(weights), "-d", "cpu", "--threads", "1"]


def warning_lines(stderr: str) -> list[str]:
    return [line.removeprefix("warning: ") for line in stderr.splitlines() if line.startswith("warning: ")]


def regular_files(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make os.stat see each of ``names`` as a regular file of 10 bytes (nothing is written there)."""
    real_stat = os.stat
    regular = os.stat_result((stat.S_IFREG | 0o644, 1, 1, 1, 0, 0, 10, 0, 0, 0))

    def fake_stat(path, *args, **kwargs):  # noqa: ANN001, ANN202
        return regular if os.fspath(path) in names else real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", fake_stat)


# 1. refine's special_file: by the file itself, and the descriptor folders only ----------------------------------


def test_a_regular_file_under_dev_is_a_file_and_a_descriptor_name_is_not(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    from crm_cli.cli.refine import special_file

    link = tmp_path / "in.png"
    link.symlink_to("/dev/stdin")  # a link to a descriptor's name: its file has no folder either
    names = ("/dev/shm/m.png", "/dev/shm/sub/m.png", "/dev/fd/5", "/dev/stdin", "/proc/1234/fd/7",
             "/proc/self/fd/3", "/proc/1234/fdinfo/7", "/proc/1234/cwd/m.png", str(link))
    regular_files(monkeypatch, *names)
    assert {name: special_file(Path(name)) for name in names} == {
        "/dev/shm/m.png": None, "/dev/shm/sub/m.png": None, "/dev/fd/5": "a file descriptor",
        "/dev/stdin": "a file descriptor", "/proc/1234/fd/7": "a file descriptor",
        "/proc/self/fd/3": "a file descriptor", "/proc/1234/fdinfo/7": None, "/proc/1234/cwd/m.png": None,
        str(link): "a file descriptor"}


def test_a_mask_whose_folder_resolves_under_dev_shm_is_refined_beside_it(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    from crm_cli.cli.refine import special_file

    _, mask = write_scene_files(tmp_path)
    real_realpath = os.path.realpath
    # As a folder linked to /dev/shm resolves (nothing is read or written there).
    monkeypatch.setattr(os.path, "realpath", lambda path, *args, **kwargs: "/dev/shm" if os.fspath(path) == str(
        tmp_path) else real_realpath(path, *args, **kwargs))
    assert special_file(mask) is None


def test_special_kinds_of_files_are_named(tmp_path: Path) -> None:
    from crm_cli.cli.refine import special_file

    os.mkfifo(tmp_path / "pipe")
    assert special_file(tmp_path / "pipe") == "a pipe"
    assert special_file(tmp_path) == "a folder"
    assert special_file(Path("/dev/null")) == "a character device"
    assert special_file(Path("bad\0name")) is None  # reading it names it


def test_coco_refuses_an_output_named_by_a_descriptor(tmp_path: Path) -> None:
    from crm_cli.cli.coco import special_output

    (tmp_path / "out.json").write_text("{}")
    os.mkfifo(tmp_path / "pipe.json")
    assert special_output(tmp_path / "pipe.json") == "a pipe, not a regular file"
    assert special_output(Path("/dev/null")) == "a character device, not a regular file"
    assert special_output(tmp_path / "out.json") is None
    with open(tmp_path / "out.json", "rb") as opened:  # OUT.partial.jsonl has no folder beside it
        assert special_output(Path(f"/proc/self/fd/{opened.fileno()}")) == "a file descriptor"


# 2. cpu:N ------------------------------------------------------------------------------------------------------


def test_cpu_with_an_index_is_the_cpu(tiny_weights: Path, tmp_path: Path) -> None:
    from crm_cli.devices import resolve_device

    assert resolve_device("cpu:0") == torch.device("cpu") and resolve_device(" CPU:1 ") == torch.device("cpu")
    image, mask = write_scene_files(tmp_path)
    args = ["refine", str(image), str(mask), "-w", str(tiny_weights), "--threads", "1", "--json"]
    for result in (runner.invoke(app, [*args, "-o", str(tmp_path / "a.png"), "-d", "cpu:0"]),
                   runner.invoke(app, [*args, "-o", str(tmp_path / "b.png")], env={"CRM_DEVICE": "cpu:0"})):
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["device"].startswith("cpu")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


# 3. a batch pair's logged warnings -----------------------------------------------------------------------------


def two_frame_layout(data: Path, size: tuple[int, int] = (96, 128)) -> Path:
    """A BIG-layout folder of p0 and p1, p1's mask a two-page TIFF (imageio logs that only the first is
    read); returns that mask."""
    write_scene_files(data, "p0_im", "p0_seg", size=size, seed=0)
    _, mask = write_scene_files(data, "p1_im", "p1_seg", size=size, seed=1)
    drawn = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    mask.unlink()
    pages = data / "p1_seg.tif"
    Image.fromarray(drawn).save(pages, save_all=True, append_images=[Image.fromarray(np.zeros_like(drawn))])
    return pages


def frames_note(pages: Path) -> str:
    return f"{pages}: holds 2 frames (an animation or a multi-page file); only the first is read"


def test_a_pair_job_returns_the_warnings_logged_while_it_ran(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from crm_cli.cli.batch import refine_pair_job
    from crm_cli.cli.checks import passthrough_note

    pages = two_frame_layout(tmp_path / "data", size=(40, 60))  # under 96 px: passed through, no model
    job = {"image": str(tmp_path / "data" / "p1_im.jpg"), "mask": str(pages), "output": str(tmp_path / "p1.png"),
           "name": "p1", "image_name": "p1_im.jpg", "mask_name": str(pages), "passthrough": True}
    outcome = refine_pair_job(None, job, settings=None, mode="auto", labels=None, output_kind="soft",
                              threshold=None)
    # Logged, then the pair's notes; held for the command to show, as on a Ray actor.
    assert outcome["status"] == "ok" and outcome["warnings"] == [frames_note(pages),
                                                                 passthrough_note(60, 40, "p1_im.jpg")]
    assert capsys.readouterr().err == ""
    assert (tmp_path / "p1.png").is_file()


def test_a_ray_batch_item_lists_and_shows_the_warnings_logged_on_its_actor(tiny_weights: Path,
                                                                          tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    data, out = tmp_path / "data", tmp_path / "out"
    pages = two_frame_layout(data)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = runner.invoke(app, ["batch", str(data), "-o", str(out), *model(tiny_weights), "--json",
                                     "--ray", "local"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert items["p1"]["warnings"] == [frames_note(pages)] and items["p0"]["warnings"] == []
    assert warning_lines(result.stderr) == [frames_note(pages)]  # shown once, by the driver


# 4. OpenCV out of memory in one batch pair ---------------------------------------------------------------------


def test_opencv_out_of_memory_fails_one_batch_pair_and_the_rest_go_on(tiny_weights: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import pipeline

    data, out = tmp_path / "data", tmp_path / "out"
    write_scene_files(data, "p0_im", "p0_seg", seed=0)
    write_scene_files(data, "p1_im", "p1_seg", seed=1)
    real_refine_files = pipeline.refine_files

    def refine_files(refiner, image, mask, *args, **kwargs):  # noqa: ANN001, ANN202
        if Path(image).name == "p1_im.jpg":
            raise cv2.error("OpenCV(4.10.0) resize.cpp:3789: error: (-4:Insufficient memory) Failed to allocate "
                            "47185920 bytes in function 'OutOfMemoryError'")
        return real_refine_files(refiner, image, mask, *args, **kwargs)

    monkeypatch.setattr(pipeline, "refine_files", refine_files)
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), *model(tiny_weights), "--json"])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    summary = json.loads(result.stdout)
    items = {item["name"]: item for item in summary["items"]}
    error = "Unable to allocate 45.0 MiB in OpenCV" + MEMORY_ADVICE
    assert items["p0"]["status"] == "ok" and items["p1"]["status"] == "failed" and items["p1"]["error"] == error
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert sorted(path.name for path in out.iterdir()) == ["p0_mask.png"]
    assert "Traceback" not in result.stderr and f"failed: p1: {error}" in " ".join(result.stderr.split())


# 5. compare: every JPEG name -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["strip.jpe", "strip.JFIF"])
def test_compare_writes_a_strip_under_every_jpeg_name(tmp_path: Path, name: str) -> None:
    photo, mask = write_scene_files(tmp_path)
    result = runner.invoke(app, ["compare", str(photo), str(mask), str(mask), "-o", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / name) as written:
        assert written.format == "JPEG" and written.mode == "RGB"


def test_compare_names_every_jpeg_suffix_when_it_refuses_a_name(tmp_path: Path) -> None:
    photo, mask = write_scene_files(tmp_path)
    result = runner.invoke(app, ["compare", str(photo), str(mask), str(mask), "-o", str(tmp_path / "strip.jp2")])
    assert result.exit_code == 2
    assert ", or .jpg, .jpeg, .jpe or .jfif for a strip" in " ".join(result.stderr.split())


# 6. crm score's size fitting in the library --------------------------------------------------------------------


def test_fit_masks_for_scoring_upsamples_the_smaller_and_notes_a_photo(tmp_path: Path) -> None:
    from crm_cli.imageio import read_mask
    from crm_cli.masks import SizeMismatchError
    from crm_cli.pipeline import fit_masks_for_scoring

    photo, mask = write_scene_files(tmp_path / "big")
    _, small = write_scene_files(tmp_path / "small", size=(48, 64))
    _, other = write_scene_files(tmp_path / "other", size=(50, 128))
    pred, gt, notes = fit_masks_for_scoring(read_mask(mask), read_mask(small), "pred.png", "gt.png")
    assert pred.shape == gt.shape == (96, 128) and notes == ["gt.png: upsampled to the size of pred.png, 128x96"]
    pred, gt, notes = fit_masks_for_scoring(read_mask(small), read_mask(photo), "pred.png", "photo.jpg")
    assert pred.shape == gt.shape == (96, 128)
    assert len(notes) == 2 and notes[0].startswith("photo.jpg: looks like a photo")
    assert notes[1] == "pred.png: upsampled to the size of photo.jpg, 128x96"
    _, _, notes = fit_masks_for_scoring(read_mask(photo), read_mask(photo), "photo.jpg", "photo.jpg")
    assert len(notes) == 1 and notes[0].startswith("photo.jpg: looks like a photo")  # one file, one note
    with pytest.raises(SizeMismatchError) as mismatch:
        fit_masks_for_scoring(read_mask(photo), read_mask(other), "photo.jpg", "gt.png")
    assert str(mismatch.value) == "size mismatch: photo.jpg is 128x96 but gt.png is 128x50"
    assert len(mismatch.value.notes) == 1 and mismatch.value.notes[0].startswith("photo.jpg: looks like a photo")


def test_score_warns_of_a_photo_before_its_size_mismatch(tmp_path: Path) -> None:
    photo, _ = write_scene_files(tmp_path / "big")
    _, other = write_scene_files(tmp_path / "other", size=(50, 128))
    result = runner.invoke(app, ["score", str(photo), str(other)])
    assert result.exit_code == 1
    flat = " ".join(result.stderr.split())
    assert flat.index(f"warning: {photo}: looks like a photo") < flat.index(
        f"error: size mismatch: {photo} is 128x96 but {other} is 128x50")


# 8. the colour profile of the outputs that carry the photo's pixels --------------------------------------------


def test_a_photo_gives_its_profile_to_the_outputs_that_carry_its_pixels() -> None:
    from crm_cli.imageio import Photo

    photo = Photo(np.zeros((2, 2, 3), np.uint8), 1, [], b"icc")
    assert {kind: photo.profile_for(kind) for kind in ("soft", "soft16", "binary", "cutout", "overlay")} == {
        "soft": None, "soft16": None, "binary": None, "cutout": b"icc", "overlay": b"icc"}
    assert Photo(np.zeros((2, 2, 3), np.uint8), 1, []).profile_for("cutout") is None
