"""Code-health items left from session 35 (session 36): a size message that showed an image as large as
the limit it exceeds, warning filters that raced with another thread's record of Pillow's warnings, a
thin wrapper of check_output, void_note reading MaskData's histogram from outside, coco's and eval's
rules for one failed item, and the order of a pair's reading notes."""

from __future__ import annotations

import json
import struct
import sys
import threading
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, flat, synthetic_scene
from PIL import Image
from typer.testing import CliRunner

from crm_cli import writing
from crm_cli.cli import app
from crm_cli.coco.instances import instance_error
from crm_cli.errors import MEMORY_ADVICE
from crm_cli.evaluation import pair_failure
from crm_cli.imageio import ImageReadError, probe_image, read_image, read_image_noted, read_mask
from crm_cli.masks import MaskData, void_note

runner = CliRunner()
H, W = 96, 128
# An EXIF block whose first directory is cut short: Pillow warns "Corrupt EXIF data" and reads no tag.
CORRUPT_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"
EXIF_IGNORED = ("damaged EXIF data ignored, so no EXIF orientation was applied (Corrupt EXIF data. "
                "Expecting to read 12 bytes but only got 0)")


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu", "--threads", "1"]


def warning_lines(stderr: str) -> list[str]:
    """The texts of the ``warning:`` lines of ``stderr``."""
    return [line.removeprefix("warning: ") for line in stderr.splitlines() if line.startswith("warning: ")]


# 1. The size-limit message never shows the image as large as the limit ---------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (1-bit grey), with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("width", "height", "shown"), [
    (15000, 10001, "150.01 MP"),  # 150,015,000 pixels: "150 MP" when rounded
    (12247, 12248, "150.001 MP"),  # 150,001,256
    (10001, 15049, "151 MP"),  # 150,505,049: rounded up past the limit, shown as before
    (16000, 10000, "160 MP"),
])
def test_a_size_over_the_limit_is_never_shown_as_the_limit(tmp_path: Path, width: int, height: int,
                                                           shown: str) -> None:
    path = png_header_only(tmp_path / "big.png", width, height)
    expected = (f"{path}: {width}x{height} ({shown}) is larger than crm's limit of 150 MP; "
                "downscale or crop it first")
    for reader in (probe_image, read_image, read_mask):
        with pytest.raises(ImageReadError) as raised:
            reader(path)
        assert str(raised.value) == expected, reader.__name__


def test_time_size_just_over_the_limit_shows_the_decimals_that_tell() -> None:
    result = runner.invoke(app, ["time", "--size", "15000x10001"])
    assert result.exit_code == 2
    assert "--size: 15000x10001 (150.01 MP) is larger than crm's limit of 150 MP" in flat(result.stderr)


# 2. Filters that ignore warnings take turns with the record of Pillow's warnings ------------------------------


@pytest.mark.parametrize("other_site", ["probe", "photo conversion"])
def test_filters_in_another_thread_lose_no_damaged_exif_note_and_restore_the_warning_state(
        tmp_path: Path, other_site: str) -> None:
    # One thread decodes a photo with a damaged EXIF block (its note is recorded by caught_pillow_warnings)
    # while another probes a file (_probe ignores every warning) or reads a grey photo (its conversion
    # to RGB ignores UserWarnings). Unguarded, catch_warnings' swaps interleaved: the other thread's
    # filter swallowed the note, and whichever exited last left its saved filters and warning output in
    # place for the whole process.
    rng = np.random.default_rng(0)
    damaged, plain = tmp_path / "damaged.jpg", tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(damaged, exif=CORRUPT_EXIF)
    Image.fromarray(rng.integers(0, 256, (16, 16), np.uint8)).save(plain)
    rounds = 1000
    filters, show, show_impl = warnings.filters, warnings.showwarning, warnings._showwarnmsg_impl
    filters_before = list(filters)
    lost: list[int] = []
    start = threading.Barrier(2)

    def decode_damaged() -> None:
        start.wait()
        for k in range(rounds):
            if not read_image_noted(damaged)[2]:
                lost.append(k)

    def other() -> None:
        start.wait()
        for _ in range(rounds):
            probe_image(plain) if other_site == "probe" else read_image(plain)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=decode_damaged), threading.Thread(target=other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        state = (list(warnings.filters), warnings.showwarning, warnings._showwarnmsg_impl)
    finally:
        sys.setswitchinterval(interval)
        # Whatever happened, later tests get the warning state back (catch_warnings never alters the
        # list it saved).
        warnings.filters, warnings.showwarning, warnings._showwarnmsg_impl = filters, show, show_impl
        warnings._filters_mutated()
    assert lost == []
    assert state == (filters_before, show, show_impl)


# 3. writing.incomplete_output is gone: check_output(path).problem says it -------------------------------------


def test_check_output_is_the_one_completeness_check(tmp_path: Path) -> None:
    assert not hasattr(writing, "incomplete_output")
    path = tmp_path / "a.png"
    writing.write_image(path, np.zeros((8, 8), np.uint8))
    assert writing.check_output(path).problem is None
    path.write_bytes(path.read_bytes()[:-4])
    assert writing.check_output(path).problem == "truncated: no IEND chunk at the end"


# 4. MaskData says which values it holds; void_note asks it ---------------------------------------------------


def test_mask_data_lists_the_values_it_holds_and_void_note_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.zeros((H, W), np.uint8)
    # Two ids under 64 beside a 255 region larger than both: read as one object, with void_note's warning.
    values[10:40, 10:30], values[10:40, 32:40], values[40:96, 40:128] = 3, 7, 255
    mask = MaskData(values, "gray8")
    assert not mask.is_label_map()
    assert mask.values_present(1, 255) == [3, 7] and mask.values_present(0, 256) == [0, 3, 7, 255]
    assert mask.values_present(4, 300) == [7, 255] and mask.values_present(8, 255) == []
    wide = MaskData(np.array([[0, 300], [7, 65535]], np.uint16), "gray16")
    assert wide.values_present(1, 65535) == [7, 300]
    with pytest.raises(TypeError):
        MaskData(np.zeros((2, 2), np.float32), "float").values_present(0, 1)
    assert void_note(mask, "m.png") == ("m.png: holds ids 3, 7 and 255, read as one object (255); if it is a "
                                        "label map whose 255 is void, pass --mode labels")
    # void_note takes the ids from values_present, not from the histogram itself.
    monkeypatch.setattr(MaskData, "values_present", lambda self, low, high: [3, 70])
    assert void_note(MaskData(values.copy(), "gray8"), "m.png") is None


# 5. One rule for one failed item: crm coco's instance_error is built on pair_failure -------------------------

OPENCV_SHORTAGE = "OpenCV(4.x) error: (-4:Insufficient memory) Failed to allocate 47185920 bytes in function 'x'"
TORCH_SHORTAGE = "CUDA error: out of memory"


@pytest.mark.parametrize(("error", "pair", "instance"), [
    (ValueError("bad value"), "itself", "bad value"),
    (OSError("disk gone"), "itself", None),
    (RuntimeError(TORCH_SHORTAGE), "itself", TORCH_SHORTAGE + ". Try --device cpu, a smaller --tile-size or the "
     "'fast' preset."),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:83] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 4 bytes"), "itself",
     "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4 bytes" + MEMORY_ADVICE),
    (RuntimeError("something else"), "itself", "RuntimeError: something else"),
    (MemoryError("Unable to allocate 1.00 GiB"), "itself", "Unable to allocate 1.00 GiB" + MEMORY_ADVICE),
    (cv2.error(OPENCV_SHORTAGE), "MemoryError: Unable to allocate 45.0 MiB in OpenCV",
     "Unable to allocate 45.0 MiB in OpenCV" + MEMORY_ADVICE),
    (cv2.error("(-215:Assertion failed) size.width>0"), None, None),
    (KeyError("bug"), None, None),
    (TypeError("bug"), None, None),
])
def test_what_one_failed_pair_or_instance_survives(error: Exception, pair: str | None, instance: str | None) -> None:
    # A table that pins both rules (it passes before and after instance_error was built on pair_failure).
    failure = pair_failure(error)
    if pair == "itself":
        assert failure is error
    elif pair is None:
        assert failure is None
    else:
        assert f"{type(failure).__name__}: {failure}" == pair
    assert instance_error(error) == instance


def test_instance_error_takes_pair_failures_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import evaluation

    assert instance_error(ValueError("bad")) == "bad"
    monkeypatch.setattr(evaluation, "pair_failure", lambda exc: None)
    assert instance_error(ValueError("bad")) is None


# 6. A pair's notes: the photo's reading first, then the mask's -----------------------------------------------


def damaged_pair(folder: Path, photo_name: str = "a.jpg", mask_name: str = "a_mask.png") -> tuple[Path, Path]:
    """A photo with a damaged EXIF block, and a 16-bit mask of soft 8-bit values (read on the 8-bit scale,
    with a note; a 0/255 one is binary without it since session 53) whose EXIF block is damaged too."""
    folder.mkdir(parents=True, exist_ok=True)
    photo, gt = synthetic_scene(H, W)
    image, mask = folder / photo_name, folder / mask_name
    Image.fromarray(photo).save(image, exif=CORRUPT_EXIF)
    values = coarse_of(gt).astype(np.uint16)
    values[0, 0] = 128
    Image.fromarray(values).save(mask, exif=CORRUPT_EXIF)
    return image, mask


def expected_notes(image: Path, mask: Path) -> list[str]:
    """The pair's notes in the order crm refine and crm batch show them."""
    return [f"{image}: {EXIF_IGNORED}", f"{mask}: {EXIF_IGNORED}",
            f"{mask}: a 16-bit mask whose largest value is 255, read as 8-bit values (255 = foreground)"]


def test_refine_and_batch_list_the_photos_reading_notes_before_the_masks(tiny_weights: Path,
                                                                         tmp_path: Path) -> None:
    data = tmp_path / "shots"
    image, mask = damaged_pair(data)
    refined = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                                  *cpu(tiny_weights), "--json", "-q"])
    assert refined.exit_code == 0, refined.output
    assert json.loads(refined.stdout)["warnings"] == expected_notes(image, mask)
    assert warning_lines(refined.stderr) == expected_notes(image, mask)
    batch = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *cpu(tiny_weights), "--json", "-q"])
    assert batch.exit_code == 0, batch.output
    (item,) = json.loads(batch.stdout)["items"]
    assert item["status"] == "ok" and item["warnings"] == expected_notes(image, mask)
    assert warning_lines(batch.stderr) == expected_notes(image, mask)


def test_a_pair_that_fails_still_shows_its_masks_reading_notes(tiny_weights: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Held back to follow the photo's, they are still shown when the pair fails after the mask was read,
    # as when reading the mask logged them at once (before and after the change).
    data = tmp_path / "shots"
    image, mask = damaged_pair(data)
    whole = image.read_bytes()
    image.write_bytes(whole[: len(whole) // 2])  # the header reads; the pixels do not
    batch = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *cpu(tiny_weights), "--json", "-q"])
    (item,) = json.loads(batch.stdout)["items"]
    assert item["status"] == "failed" and item["warnings"] == [f"{mask}: {EXIF_IGNORED}"]

    from crm_cli.engine import Refiner

    image.write_bytes(whole)

    def short_of_memory(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise MemoryError("Unable to allocate 1.00 GiB")

    monkeypatch.setattr(Refiner, "refine_detailed", short_of_memory)
    refined = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                                  *cpu(tiny_weights), "--backend", "torch", "-q"])
    assert refined.exit_code == 1, refined.output
    assert warning_lines(refined.stderr) == [f"{mask}: {EXIF_IGNORED}"]
    assert "Unable to allocate 1.00 GiB" in refined.stderr


def test_refine_with_labels_lists_the_photos_reading_notes_before_the_masks(tiny_weights: Path,
                                                                            tmp_path: Path) -> None:
    # --labels decodes the mask before the model loads (check_labels): its notes still follow the photo's.
    image, mask = damaged_pair(tmp_path / "shots")
    refined = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                                  *cpu(tiny_weights), "--labels", "255", "--json", "-q"])
    assert refined.exit_code == 0, refined.output
    shown = json.loads(refined.stdout)["warnings"]
    assert shown[:3] == expected_notes(image, mask), shown
    assert warning_lines(refined.stderr) == shown
