"""Mask and photo files as other tools write them (the file-format audit): transparency kept aside
from the colours (GIF, PNG tRNS), JPEG masks of small values, animations and multi-page files.
All files are tiny synthetic ones written into tmp_path."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, features
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import ImageReadError, read_image, read_mask

runner = CliRunner()

H, W = 96, 128


def object_area() -> np.ndarray:
    """The boolean object of every mask here: a rectangle."""
    inside = np.zeros((H, W), bool)
    inside[24:72, 32:96] = True
    return inside


def textured_photo(seed: int = 0) -> np.ndarray:
    """A random RGB photo: quantised, it uses every palette entry."""
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def palette_cutout(path: Path) -> Path:
    """A photo cut-out saved with a palette (as pngquant or a GIF export do): the object's pixels
    in 255 photo colours, the background the transparent index 255 (coloured black)."""
    quantised = Image.fromarray(textured_photo()).quantize(255)
    indices = np.asarray(quantised).copy()
    indices[~object_area()] = 255
    cutout = Image.fromarray(indices, "P")
    cutout.putpalette((quantised.getpalette() or [])[:765] + [0, 0, 0])
    cutout.save(path, transparency=255)
    return path


@pytest.fixture
def imageio_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog fed from crm_cli.imageio directly: the CLI stops the crm_cli logger propagating to the
    root logger (where caplog listens) once a command has run in this process."""
    logger = logging.getLogger("crm_cli.imageio")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


# ---------------------------------------------------------------------------------------------
# Transparency kept beside the colours: GIF's transparent index, PNG's tRNS chunk


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_cutout_reads_its_transparency_not_colour_ids(tmp_path: Path, suffix: str) -> None:
    read = read_mask(palette_cutout(tmp_path / f"cut{suffix}"))

    # Before: 255 palette indices read as 255 class ids (a label map refined id by id).
    assert read.kind == "alpha" and not read.is_label_map()
    assert np.array_equal(read.probability() > 0.5, object_area())


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_object_in_the_transparent_colour_is_read_by_transparency(tmp_path: Path, suffix: str) -> None:
    """A white object on a transparent background whose hidden colour is white too: by colour the
    whole file is white (all foreground)."""
    indices = object_area().astype(np.uint8)  # 0 = background (transparent), 1 = object
    image = Image.fromarray(indices, "P")
    image.putpalette([255, 255, 255, 255, 255, 255])
    image.save(tmp_path / f"white{suffix}", transparency=0)

    read = read_mask(tmp_path / f"white{suffix}")

    assert read.kind == "alpha"
    assert np.array_equal(read.probability() > 0.5, object_area())


def test_rgb_cutout_with_a_transparent_key_colour_reads_its_transparency(tmp_path: Path) -> None:
    photo = np.where(object_area()[..., None], textured_photo(), 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "keyed.png", transparency=(255, 255, 255))

    read = read_mask(tmp_path / "keyed.png")

    # Before: the photo's brightest channel, foreground nearly everywhere.
    assert read.kind == "alpha"
    assert np.array_equal(read.probability() > 0.5, object_area())


def test_transparency_that_hides_only_the_background_keeps_the_values(tmp_path: Path) -> None:
    """A soft grey mask with black transparent keeps its levels; a label map with index 0
    transparent keeps its ids and palette (as before the audit)."""
    soft = np.zeros((H, W), np.uint8)
    soft[24:72, 32:96] = 255
    soft[24:72, 32:40] = 100  # a soft edge
    Image.fromarray(soft).save(tmp_path / "soft.png", transparency=0)
    ids = np.zeros((H, W), np.uint8)
    ids[24:72, 32:64], ids[24:72, 64:96] = 1, 2
    labels = Image.fromarray(ids, "P")
    labels.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
    labels.save(tmp_path / "labels.png", transparency=0)

    grey = read_mask(tmp_path / "soft.png")
    label_map = read_mask(tmp_path / "labels.png")

    assert grey.kind == "gray8" and np.array_equal(grey.values, soft)
    assert label_map.kind == "palette" and np.array_equal(label_map.values, ids)
    assert label_map.is_label_map() and label_map.palette is not None and label_map.palette[3:6] == [128, 0, 0]


def test_label_maps_and_binary_masks_keep_their_values_whatever_is_transparent(tmp_path: Path) -> None:
    ids = np.zeros((H, W), np.uint8)
    ids[24:72, 32:64], ids[24:72, 64:96], ids[:4, :] = 1, 2, 255  # two classes and a void border
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 252 + [224, 224, 192]
    voc = Image.fromarray(ids, "P")
    voc.putpalette(palette)
    voc.save(tmp_path / "void.png", transparency=255)  # the void index made transparent
    voc.save(tmp_path / "overlay.png", transparency=bytes([0, 128, 128]))  # an overlay's partial alphas
    drawn = object_area().astype(np.uint8) * 255
    Image.fromarray(drawn).save(tmp_path / "keyed.png", transparency=255)  # grey 0/255, white transparent

    for name in ("void.png", "overlay.png"):
        read = read_mask(tmp_path / name)
        assert read.kind == "palette" and read.is_label_map(), name  # were one "alpha" object
        np.testing.assert_array_equal(read.values, ids)
    keyed = read_mask(tmp_path / "keyed.png")
    np.testing.assert_array_equal(keyed.values, drawn)  # was the complement: the transparent object


def test_a_damaged_later_page_does_not_change_the_page_read(tmp_path: Path) -> None:
    import struct

    first = object_area().astype(np.uint8) * 255
    second = np.zeros_like(first)
    second[:10, :] = 255
    buffer = tmp_path / "pages.tif"
    Image.fromarray(first).save(buffer, save_all=True, append_images=[Image.fromarray(second)] * 2)
    data = bytearray(buffer.read_bytes())
    assert data[:2] == b"II"

    def next_page_slot(page: int) -> int:  # where a page's directory stores the next one's offset
        return page + 2 + 12 * struct.unpack_from("<H", data, page)[0]

    second_page = struct.unpack_from("<I", data, next_page_slot(struct.unpack_from("<I", data, 4)[0]))[0]
    struct.pack_into("<I", data, next_page_slot(second_page), len(data) + 1000)  # the third page: past the end
    buffer.write_bytes(bytes(data))

    np.testing.assert_array_equal(read_mask(buffer).values, first)  # was the second page


def test_cli_refines_a_palette_cutout_as_one_object(tiny_weights: Path, tmp_path: Path) -> None:
    Image.fromarray(textured_photo()).save(tmp_path / "photo.png")
    palette_cutout(tmp_path / "cut.png")
    out = tmp_path / "out.png"

    result = runner.invoke(app, ["refine", str(tmp_path / "photo.png"), str(tmp_path / "cut.png"), "-o", str(out),
                                 "-w", str(tiny_weights), "-d", "cpu", "--json", "-q"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "binary"  # before: "labels", 254 ids refined one by one
    agreement = ((np.asarray(Image.open(out)) > 127) == object_area()).mean()
    assert agreement > 0.9


# ---------------------------------------------------------------------------------------------
# JPEG masks


def jpeg_of_01_disc(path: Path) -> Path:
    """A 0/1 mask (a disc: its curved edge makes JPEG noise) saved as JPEG, as cv2.imwrite does
    with a boolean mask turned into uint8."""
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (64, 48), (40, 30), 20, 0, 360, 1, -1)
    cv2.imwrite(str(path), mask)
    return path


def test_jpeg_mask_of_small_values_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = jpeg_of_01_disc(tmp_path / "m01.jpg")
    assert np.unique(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)).size > 2  # 0, 1 and JPEG's 2s

    # Before: read as a label map of ids 1 and 2, refined as two labels.
    with pytest.raises(ImageReadError, match=r"m01\.jpg: a JPEG mask of small values.*save the mask as PNG"):
        read_mask(path)


def test_jpeg_mask_of_0_255_values_is_read(tmp_path: Path) -> None:
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (64, 48), (40, 30), 20, 0, 360, 255, -1)
    cv2.imwrite(str(tmp_path / "m.jpg"), mask)

    read = read_mask(tmp_path / "m.jpg")

    assert read.kind == "gray8" and not read.is_label_map()
    assert ((read.probability() > 0.5) == (mask > 127)).mean() > 0.99


def test_cli_names_a_jpeg_mask_of_small_values(tiny_weights: Path, tmp_path: Path) -> None:
    Image.fromarray(textured_photo()).save(tmp_path / "photo.png")
    jpeg_of_01_disc(tmp_path / "m01.jpg")
    out = tmp_path / "out.png"

    result = runner.invoke(app, ["refine", str(tmp_path / "photo.png"), str(tmp_path / "m01.jpg"), "-o", str(out),
                                 "-w", str(tiny_weights), "-d", "cpu", "-q"])

    assert result.exit_code == 1, result.output
    assert "m01.jpg: a JPEG mask of small values" in " ".join(result.stderr.split())
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Animations and multi-page files: the first frame is read, and the user is told


def save_frames(path: Path, frames: list[np.ndarray]) -> Path:
    first, *rest = (Image.fromarray(frame) for frame in frames)
    first.save(path, save_all=True, append_images=rest)
    return path


@pytest.mark.parametrize("suffix", [".gif", ".png", ".tif", ".webp"])
def test_file_of_several_frames_reads_the_first_with_a_warning(
        tmp_path: Path, suffix: str, imageio_log: pytest.LogCaptureFixture) -> None:
    if suffix == ".webp" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    empty = np.zeros((H, W), np.uint8)
    drawn = object_area().astype(np.uint8) * 255
    path = save_frames(tmp_path / f"frames{suffix}", [empty, drawn, 255 - drawn])  # distinct, or merged

    read = read_mask(path)

    assert read.probability().max() == 0.0  # the first frame
    warning = f"frames{suffix}: holds 3 frames (an animation or a multi-page file); only the first is read"
    assert any(message.endswith(warning) for message in imageio_log.messages)


def test_single_frame_files_and_photos_get_no_frame_warning(
        tmp_path: Path, imageio_log: pytest.LogCaptureFixture) -> None:
    Image.fromarray(textured_photo()).save(tmp_path / "photo.gif")
    Image.fromarray(textured_photo()).save(tmp_path / "photo.tif")

    read_image(tmp_path / "photo.gif")
    read_image(tmp_path / "photo.tif")

    assert imageio_log.messages == []


def test_photo_of_several_frames_is_warned_about(tmp_path: Path, imageio_log: pytest.LogCaptureFixture) -> None:
    path = save_frames(tmp_path / "anim.gif", [textured_photo(0), textured_photo(1)])

    assert read_image(path).shape == (H, W, 3)
    assert any("anim.gif: holds 2 frames" in message for message in imageio_log.messages)


def test_cli_warns_about_a_mask_of_several_frames(tiny_weights: Path, tmp_path: Path) -> None:
    Image.fromarray(textured_photo()).save(tmp_path / "photo.png")
    drawn = object_area().astype(np.uint8) * 255
    save_frames(tmp_path / "pages.tif", [drawn, np.zeros_like(drawn)])

    result = runner.invoke(app, ["refine", str(tmp_path / "photo.png"), str(tmp_path / "pages.tif"), "-o",
                                 str(tmp_path / "out.png"), "-w", str(tiny_weights), "-d", "cpu"])

    assert result.exit_code == 0, result.output
    assert "warning: " + str(tmp_path / "pages.tif") + ": holds 2 frames (an animation or a multi-page file); " \
        "only the first is read" in " ".join(result.stderr.split())


def test_score_shows_the_frame_warning_as_a_warning_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    drawn = object_area().astype(np.uint8) * 255
    save_frames(tmp_path / "pred.gif", [drawn, np.zeros_like(drawn)])
    Image.fromarray(drawn).save(tmp_path / "gt.png")

    done = subprocess.run([sys.executable, "-m", "crm_cli", "score", str(tmp_path / "pred.gif"),
                           str(tmp_path / "gt.png"), "--json"], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["iou"] == pytest.approx(1.0)  # the first frame, the drawn one
    # a `warning:` line, as the CLI's other warnings are (it was Python's bare last-resort print)
    assert "warning: " + str(tmp_path / "pred.gif") + ": holds 2 frames" in " ".join(done.stderr.split())


def test_batch_pairs_gif_masks(tiny_weights: Path, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(textured_photo()).save(tmp_path / "images" / "a.png")
    Image.fromarray(object_area().astype(np.uint8) * 255).save(tmp_path / "masks" / "a.gif")

    result = runner.invoke(app, ["batch", str(tmp_path), "-o", str(tmp_path / "out"), "-w", str(tiny_weights),
                                 "-d", "cpu"])

    assert result.exit_code == 0, result.output  # was 1: "no mask with the same stem" for a.png
    assert (tmp_path / "out" / "a.png").is_file()
