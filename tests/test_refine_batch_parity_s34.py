"""crm refine and crm batch say the same of the same input (s34): the warnings a --json record lists,
and the error of running out of memory (NumPy's, OpenCV's, torch's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import flat, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()
MEMORY_ADVICE = "; try a smaller --tile-size, the 'fast' preset, or a smaller image"
TORCH_ADVICE = ". Try --device cpu, a smaller --tile-size or the 'fast' preset."


def model(weights: Path) -> list[str]:
    return ["-w", str(weights), "-d", "cpu", "--threads", "1"]


def warned_pairs(data: Path) -> dict[str, tuple[Path, Path, str]]:
    """BIG-layout pairs in ``data``, each with one warning: a mask upsampled, the photo given as the mask,
    a mask of two frames (logged by the library). By name: (photo, mask, how the warning starts)."""
    photo, mask = write_scene_files(data, "up_im", "up_seg", seed=0)
    small = cv2.resize(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), (64, 48), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(mask), small)
    pairs = {"up": (photo, mask, f"{mask}: upsampled to the image size 128x96")}
    photo, mask = write_scene_files(data, "photo_im", "photo_seg", seed=1)
    Image.open(photo).save(mask)
    pairs["photo"] = (photo, mask, f"{mask}: looks like a photo (colour, ")
    photo, drawn = write_scene_files(data, "frames_im", "frames_seg", seed=2)
    pages = data / "frames_seg.tif"
    first = cv2.imread(str(drawn), cv2.IMREAD_GRAYSCALE)
    Image.fromarray(first).save(pages, save_all=True, append_images=[Image.fromarray(np.zeros_like(first))])
    drawn.unlink()
    pairs["frames"] = (photo, pages, f"{pages}: holds 2 frames (an animation or a multi-page file); only the first is")
    return pairs


def test_a_failed_batch_item_lists_the_warnings_a_refine_record_lists(tiny_weights: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The notes of a pair (a mask upsampled, a photo given as the mask) were lost from its batch item,
    # and never shown, when the pair failed after the refinement: crm refine shows and lists them.
    data = tmp_path / "data"
    pairs = warned_pairs(data)
    bare = tmp_path / "bare" / tiny_weights.name  # no sidecar: the weights are not verified, with a warning
    bare.parent.mkdir()
    shutil.copyfile(tiny_weights, bare)

    def no_space(path: object, *args: object, **kwargs: object) -> None:
        raise OSError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr("crm_cli.writing.write_png", no_space)
    monkeypatch.setattr("crm_cli.writing.write_image", no_space)
    batch = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *model(bare), "--json"])
    assert batch.exit_code == 1, batch.output
    items = {item["name"]: item for item in json.loads(batch.stdout)["items"]}
    shown = [line.removeprefix("warning: ") for line in batch.stderr.splitlines() if line.startswith("warning: ")]
    assert shown[0].startswith(f"weights {bare} are not verified")  # shown, and about no pair
    assert sorted(shown[1:]) == sorted(text for item in items.values() for text in item["warnings"])
    for name, (photo, mask, warning) in pairs.items():
        output = tmp_path / f"{name}.png"
        refine = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(output), *model(bare), "--json"])
        assert refine.exit_code == 1, refine.output
        record = json.loads(refine.stdout)
        assert record["error"] == f"cannot write {output}: No space left on device"
        assert len(record["warnings"]) == 1 and record["warnings"][0].startswith(warning), record
        assert items[name]["status"] == "failed" and items[name]["warnings"] == record["warnings"], items[name]


def numpy_shortage() -> MemoryError:
    """NumPy's own MemoryError, as an allocation too large for the machine raises it."""
    try:
        np.empty(1 << 62, np.uint8)
    except MemoryError as exc:
        return exc
    raise AssertionError("numpy allocated 4 EiB")


def test_running_out_of_memory_reads_the_same_in_refine_and_in_a_batch_item(tiny_weights: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch item gave NumPy's MemoryError without the advice crm refine gives it, an empty one as
    # "MemoryError", and torch's without its advice; OpenCV's already read as crm refine's.
    numpy_error = numpy_shortage()
    assert str(numpy_error).startswith("Unable to allocate ")
    opencv_error = cv2.error("OpenCV(4.10.0) resize.cpp:3789: error: (-4:Insufficient memory) Failed to allocate "
                             "47185920 bytes in function 'OutOfMemoryError'")
    torch_error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    cases: list[tuple[BaseException, str]] = [
        (numpy_error, str(numpy_error) + MEMORY_ADVICE),
        (opencv_error, "Unable to allocate 45.0 MiB in OpenCV" + MEMORY_ADVICE),
        (MemoryError(), "out of memory" + MEMORY_ADVICE),
        (torch_error, "CUDA out of memory. Tried to allocate 2.00 GiB" + TORCH_ADVICE),
    ]
    data = tmp_path / "data"
    photo, mask = write_scene_files(data, "p0_im", "p0_seg")
    for number, (error, message) in enumerate(cases):
        def refine_files(*args: object, error: BaseException = error, **kwargs: object) -> None:
            raise error

        monkeypatch.setattr("crm_cli.pipeline.refine_files", refine_files)
        refine = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "o.png"),
                                     *model(tiny_weights), "--json"])
        assert refine.exit_code == 1, refine.output
        assert json.loads(refine.stdout)["error"] == message
        assert f"error: {message}" in flat(refine.stderr)
        out = tmp_path / f"out{number}"
        batch = runner.invoke(app, ["batch", str(data), "-o", str(out), *model(tiny_weights), "--json"])
        assert batch.exit_code == 1, batch.output
        (item,) = json.loads(batch.stdout)["items"]
        assert (item["status"], item["error"]) == ("failed", message), type(error)
        assert f"failed: p0: {message}" in flat(batch.stderr)
        assert not (tmp_path / "o.png").exists() and not (out / "p0_mask.png").exists()


def test_out_of_memory_message_takes_only_running_out_of_memory() -> None:
    from crm_cli.cli.failures import out_of_memory_message

    estimate = "a.jpg is 20000x20000 (400 MP): refining it needs about 9 GiB of memory, but 2 GiB is available"
    assert out_of_memory_message(MemoryError(f"{estimate}; try --tile-size 512")) == f"{estimate}; try --tile-size 512"
    assert out_of_memory_message(RuntimeError("CUDA error: device-side assert triggered")) is None
    assert out_of_memory_message(cv2.error("(-215:Assertion failed) !_src.empty()")) is None
    assert out_of_memory_message(ValueError("out of memory")) is None



def test_a_plain_batch_shows_a_pairs_warnings_even_when_it_is_interrupted(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The review of s34: the plain loop held each pair's warnings until its job returned, so Ctrl-C
    # during the write lost them (crm refine shows them at once). Only a Ray actor holds them.
    data = tmp_path / "data"
    pairs = warned_pairs(data)

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("crm_cli.writing.write_png", interrupted)
    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *model(tiny_weights), "-q"])
    assert result.exit_code == 130, result.output
    # The first pair by name (frames) was read, warned of, refined, and interrupted while written.
    _, _, warning = pairs["frames"]
    assert flat(warning) in flat(result.stderr)
    assert not list((tmp_path / "out").glob("*.png"))
