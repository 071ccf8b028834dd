"""Reading files as a photo editor and a Python API user found it (session 35): a damaged EXIF block
printed as Pillow's bare warning, readers that changed a file's scale in silence, device and weights
errors that did not name the variable the value came from, and size-limit messages that named a
limit the file did not exceed."""

from __future__ import annotations

import json
import logging
import re
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, flat, synthetic_scene
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import ImageReadError, probe_image, read_image, read_image_noted, read_mask

runner = CliRunner()
H, W = 96, 128
# An EXIF block whose first directory is cut short: Pillow warns "Corrupt EXIF data" and reads no tag.
CORRUPT_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"
EXIF_IGNORED = "damaged EXIF data ignored, so no EXIF orientation was applied (Corrupt EXIF data."


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu", "--threads", "1"]


def scene(folder: Path, image_name: str = "photo.jpg", mask_name: str = "mask.png",
          image_exif: bytes | None = None, mask_exif: bytes | None = None) -> tuple[Path, Path]:
    """A synthetic photo and its coarse mask in ``folder``, either with an EXIF block given."""
    folder.mkdir(parents=True, exist_ok=True)
    photo, gt = synthetic_scene(H, W)
    image, mask = folder / image_name, folder / mask_name
    Image.fromarray(photo).save(image, **({"exif": image_exif} if image_exif else {}))
    Image.fromarray(coarse_of(gt)).save(mask, **({"exif": mask_exif} if mask_exif else {}))
    return image, mask


def warning_lines(stderr: str) -> list[str]:
    """The texts of the ``warning:`` lines of ``stderr``."""
    return [line.removeprefix("warning: ") for line in stderr.splitlines() if line.startswith("warning: ")]


class Kept(logging.Handler):
    """Keeps the records logged on the logger it is added to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        """The messages kept, in order."""
        return [record.getMessage() for record in self.records]


@pytest.fixture
def imageio_log() -> Iterator[Kept]:
    """What crm_cli.imageio logs, taken from the logger itself (once a command has run in this process
    the CLI stops the crm_cli logger propagating to the root logger, where caplog listens)."""
    logger = logging.getLogger("crm_cli.imageio")
    kept = Kept()
    logger.addHandler(kept)
    try:
        yield kept
    finally:
        logger.removeHandler(kept)


# 1. A damaged EXIF block -------------------------------------------------------------------------------------------


def test_readers_say_a_damaged_exif_block_once_naming_the_file(tmp_path: Path) -> None:
    image, mask = scene(tmp_path, image_exif=CORRUPT_EXIF, mask_exif=CORRUPT_EXIF)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own warning escaping would raise here
        header = probe_image(image)  # the probe says nothing: the decode that follows it does
        pixels, orientation, notes = read_image_noted(image)
    assert header.orientation == 1 and orientation == 1 and pixels.shape == (H, W, 3)
    assert notes == [f"{image}: {EXIF_IGNORED} Expecting to read 12 bytes but only got 0)"]

    from crm_cli.imageio import read_mask_noted

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        probe_image(mask)
        values, mask_notes = read_mask_noted(mask)
    assert values.values.shape == (H, W) and len(mask_notes) == 1 and EXIF_IGNORED in mask_notes[0]
    assert mask_notes[0].startswith(f"{mask}: ")


def test_exif_damaged_after_its_orientation_says_the_orientation_was_applied(tmp_path: Path) -> None:
    # An orientation tag (6: turned 90 degrees) read, then a tag whose data lies past the block's end.
    entries = struct.pack(">HHII", 0x0112, 3, 1, 6 << 16) + struct.pack(">HHII", 270, 2, 100, 5000)
    exif = b"Exif\x00\x00MM\x00*" + struct.pack(">IH", 8, 2) + entries + struct.pack(">I", 0)
    image, _ = scene(tmp_path, image_exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, orientation, notes = read_image_noted(image)
    assert orientation == 6 and pixels.shape == (W, H, 3)
    # Pillow's own words vary by version: 13.0 says "Tag data larger than file. Skipping tag 270", 12.3
    # (what pip installs on Python 3.10) "Truncated File Read".
    assert len(notes) == 1 and re.fullmatch(rf"{re.escape(str(image))}: damaged EXIF data \([^()]+\); "
                                            r"its orientation tag \(6\) was still applied", notes[0]), notes


def test_refine_shows_a_damaged_exif_block_as_one_warning_line_listed_in_json(tiny_weights: Path,
                                                                              tmp_path: Path) -> None:
    image, mask = scene(tmp_path, image_exif=CORRUPT_EXIF, mask_exif=CORRUPT_EXIF)
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"),
                                 *cpu(tiny_weights), "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert "UserWarning" not in result.stderr and "TiffImagePlugin" not in result.stderr
    shown = [line for line in warning_lines(result.stderr) if EXIF_IGNORED in line]
    assert sorted(shown) == sorted(f"{name}: {EXIF_IGNORED} Expecting to read 12 bytes but only got 0)"
                                   for name in (image, mask))
    listed = json.loads(result.stdout)["warnings"]
    assert sorted(note for note in listed if EXIF_IGNORED in note) == sorted(shown)


def test_batch_lists_a_damaged_exif_block_once_in_the_pairs_item(tiny_weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "shots"
    image, mask = scene(data, "a.jpg", "a_mask.png", image_exif=CORRUPT_EXIF, mask_exif=CORRUPT_EXIF)
    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *cpu(tiny_weights), "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert "UserWarning" not in result.stderr
    for path in (image, mask):
        assert sum(line.startswith(f"{path}: {EXIF_IGNORED}") for line in warning_lines(result.stderr)) == 1
    (item,) = json.loads(result.stdout)["items"]
    assert sorted(note for note in item["warnings"] if EXIF_IGNORED in note) == sorted(
        f"{path}: {EXIF_IGNORED} Expecting to read 12 bytes but only got 0)" for path in (image, mask))


def test_a_damaged_exif_block_reaches_stderr_as_one_line_of_crms(tiny_weights: Path, tmp_path: Path) -> None:
    # The audit's command: Python's own warning format reached the real stderr twice (probe and decode).
    image, mask = scene(tmp_path, "badexif.jpg", image_exif=CORRUPT_EXIF)
    done = subprocess.run([sys.executable, "-m", "crm_cli", "refine", image.name, mask.name, "-o", "-", "-q",
                           *cpu(tiny_weights)], cwd=tmp_path, capture_output=True, timeout=300)
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert done.stdout.startswith(b"\x89PNG")
    assert "UserWarning" not in stderr and "warnings.warn" not in stderr
    assert [line for line in warning_lines(stderr) if "EXIF" in line] == [
        f"badexif.jpg: {EXIF_IGNORED} Expecting to read 12 bytes but only got 0)"]


def test_a_palette_photo_with_transparency_reads_without_pillows_warning(tmp_path: Path) -> None:
    photo, _ = synthetic_scene(H, W)
    path = tmp_path / "palette.png"
    Image.fromarray(photo).quantize(16).save(path, transparency=bytes([0, 128] + [255] * 14))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns that the transparency (dropped for a photo) is lost
        pixels, _, notes = read_image_noted(path)
    assert pixels.shape == (H, W, 3) and notes == []


# 2. The plain readers log their notes; the *_noted ones return them ------------------------------------------------


def twelve_bit_photo(path: Path) -> Path:
    """A 16-bit RGB PNG whose largest value is 3520 (a 12-bit sensor's)."""
    photo, _ = synthetic_scene(H, W)
    values = (photo.astype(np.uint32) * 3520 // 255).astype(np.uint16)[..., ::-1]  # OpenCV writes BGR
    cv2.imwrite(str(path), np.ascontiguousarray(values))
    return path


def ct_slice(path: Path) -> Path:
    """A 16-bit grey PNG with values 30000-34000 only (a CT slice's window)."""
    _, gt = synthetic_scene(H, W)
    cv2.imwrite(str(path), (30000 + gt.astype(np.uint16) * 15 + np.arange(W, dtype=np.uint16)).astype(np.uint16))
    return path


def animation(path: Path) -> Path:
    """A GIF of two frames."""
    photo, _ = synthetic_scene(H, W)
    Image.fromarray(photo).save(path, save_all=True, append_images=[Image.fromarray(255 - photo)])
    return path


def test_read_image_logs_each_note_and_read_image_noted_returns_it_unlogged(
        tmp_path: Path, imageio_log: Kept) -> None:
    damaged, _ = scene(tmp_path, "damaged.jpg", image_exif=CORRUPT_EXIF)
    for path, expected in ((twelve_bit_photo(tmp_path / "sensor.png"), "read as 12-bit values (4095 = white)"),
                           (ct_slice(tmp_path / "ct.png"), "read with that range stretched from black to white"),
                           (animation(tmp_path / "anim.gif"), "holds 2 frames"),
                           (damaged, EXIF_IGNORED)):
        imageio_log.records.clear()
        _, _, notes = read_image_noted(path)
        assert len(notes) == 1 and expected in notes[0] and notes[0].startswith(f"{path}: ")
        assert imageio_log.messages == [], path  # returned, so not logged as well
        read_image(path)
        assert imageio_log.messages == notes, path
        assert all(record.levelno == logging.WARNING for record in imageio_log.records)


def test_read_mask_logs_the_notes_of_reading_and_read_mask_noted_returns_them(
        tmp_path: Path, imageio_log: Kept) -> None:
    from crm_cli.imageio import read_mask_noted

    _, damaged = scene(tmp_path, mask_name="damaged.png", mask_exif=CORRUPT_EXIF)
    _, gt = synthetic_scene(H, W)
    pages = tmp_path / "pages.tif"
    Image.fromarray(gt).save(pages, save_all=True, append_images=[Image.fromarray(255 - gt)])
    for path, expected in ((damaged, EXIF_IGNORED), (pages, "holds 2 frames")):
        imageio_log.records.clear()
        _, notes = read_mask_noted(path)
        assert len(notes) == 1 and expected in notes[0] and imageio_log.messages == []
        read_mask(path)
        assert imageio_log.messages == notes


def test_refine_and_batch_show_each_reading_note_once(tiny_weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "shots"
    _, gt = synthetic_scene(H, W)
    notes = {"sensor": "read as 12-bit values", "ct": "stretched from black to white", "anim": "holds 2 frames",
             "damaged": EXIF_IGNORED}
    data.mkdir()
    twelve_bit_photo(data / "sensor.png")
    ct_slice(data / "ct.png")
    animation(data / "anim.gif")
    scene(data, "damaged.jpg", "damaged_mask.png", image_exif=CORRUPT_EXIF)
    for name in ("sensor", "ct", "anim"):
        Image.fromarray(coarse_of(gt)).save(data / f"{name}_mask.png")

    for name, expected in notes.items():
        image = next(data.glob(f"{name}.*"))
        result = runner.invoke(app, ["refine", str(image), str(data / f"{name}_mask.png"), "-o",
                                     str(tmp_path / f"{name}.png"), *cpu(tiny_weights), "--json"])
        assert result.exit_code == 0, result.output
        shown = [line for line in warning_lines(result.stderr) if expected in line]
        assert len(shown) == 1, (name, result.stderr)
        assert [note for note in json.loads(result.stdout)["warnings"] if expected in note] == shown

    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *cpu(tiny_weights), "--json"])
    assert result.exit_code == 0, result.output
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    for name, expected in notes.items():
        assert sum(expected in line for line in warning_lines(result.stderr)) == 1, (name, result.stderr)
        assert sum(expected in note for note in items[name]["warnings"]) == 1, items[name]


# 3. Values from CRM_DEVICE and CRM_WEIGHTS ---------------------------------------------------------------------------


def test_a_bad_crm_device_names_the_variable_and_a_bad_option_does_not(tmp_path: Path) -> None:
    image, mask = scene(tmp_path)
    args = ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png")]
    from_env = runner.invoke(app, args, env={"CRM_DEVICE": "bogus"})
    assert from_env.exit_code == 2
    assert ("Invalid value for '-d' / '--device' (env var: 'CRM_DEVICE'): unknown device 'bogus'"
            in flat(from_env.stderr))
    typed = runner.invoke(app, [*args, "-d", "bogus"], env={"CRM_DEVICE": "cpu"})
    assert typed.exit_code == 2
    assert "Invalid value for '-d' / '--device': unknown device 'bogus'" in flat(typed.stderr)
    assert "CRM_DEVICE" not in typed.stderr


def test_missing_weights_from_crm_weights_say_where_the_path_came_from(tmp_path: Path) -> None:
    image, mask = scene(tmp_path)
    missing = tmp_path / "absent.safetensors"
    args = ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"), "-d", "cpu"]
    from_env = runner.invoke(app, args, env={"CRM_WEIGHTS": str(missing)})
    assert from_env.exit_code == 1
    assert f"error: weights not found: {missing} (from CRM_WEIGHTS;" in flat(from_env.stderr)
    typed = runner.invoke(app, [*args, "-w", str(missing)], env={"CRM_WEIGHTS": ""})
    assert typed.exit_code == 1
    assert (f"error: weights not found: {missing} (give the path of a checkpoint, or set CRM_WEIGHTS)"
            in flat(typed.stderr))


# 4. One size-limit message, naming only the limit exceeded -----------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (1-bit grey), with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("width", "height", "limit"), [
    (70000, 100, "65535 px per side"),  # 7 MP: only the side limit is exceeded
    (16000, 10000, "150 MP"),  # checked by crm (under Pillow's bomb limit)
    (60000, 60000, "150 MP"),  # refused by Pillow as a decompression bomb first
    (70000, 70000, "150 MP and of 65535 px per side"),
])
def test_size_errors_give_the_size_and_only_the_limits_exceeded(tmp_path: Path, width: int, height: int,
                                                                 limit: str) -> None:
    path = png_header_only(tmp_path / "big.png", width, height)
    expected = (f"{path}: {width}x{height} ({width * height / 1e6:.0f} MP) is larger than crm's limit of {limit}; "
                "downscale or crop it first")
    for reader in (probe_image, read_image, read_mask):
        with pytest.raises(ImageReadError) as raised:
            reader(path)
        assert str(raised.value) == expected, reader.__name__


def test_time_size_names_only_the_side_limit(tmp_path: Path) -> None:
    result = runner.invoke(app, ["time", "--size", "70000x100"])
    assert result.exit_code == 2
    assert "--size: 70000x100 (7 MP) is larger than crm's limit of 65535 px per side" in flat(result.stderr)
    assert "150 MP" not in result.stderr
