"""A colour mask with a photo's colours is most likely the photo given as the mask (swapped
arguments): it is still read, with a warning, while colour masks stay quiet."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from conftest import flat, synthetic_scene, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import read_mask
from crm_cli.masks import COLOUR_SAMPLE_PIXELS, MaskData, count_colours, photo_note
from crm_cli.pipeline import read_pair

runner = CliRunner()

SWAPPED = "not a mask: are the image and mask swapped?"


def distinct_colours(rgb: np.ndarray) -> int:
    """How many distinct colours an (H, W, 3) uint8 array holds."""
    return int(np.unique(rgb.reshape(-1, 3), axis=0).shape[0])


def jpeg_rgb(rgb: np.ndarray, quality: int) -> bytes:
    """``rgb`` encoded as a JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_swapped_image_and_mask_warn_and_still_refine(tiny_weights: Path, tmp_path: Path) -> None:
    photo, mask = write_scene_files(tmp_path)
    colours = distinct_colours(np.asarray(Image.open(photo).convert("RGB")))

    result = runner.invoke(app, ["refine", str(mask), str(photo), "-o", str(tmp_path / "o.png"),
                                 "-w", str(tiny_weights), "-d", "cpu"])

    assert result.exit_code == 0, result.output
    assert (f"warning: {photo}: looks like a photo (colour, {colours} distinct colours), {SWAPPED}"
            in flat(result.stderr))
    assert (tmp_path / "o.png").stat().st_size > 0


def test_photo_note_comes_first_among_a_pairs_notes(tmp_path: Path) -> None:
    photo, mask = write_scene_files(tmp_path, size=(96, 128))
    Image.open(photo).resize((64, 48)).save(tmp_path / "small.png")  # also upsampled: a second note
    rgb = np.asarray(Image.open(tmp_path / "small.png"))

    _, read, notes = read_pair(photo, tmp_path / "small.png", mask_name="small.png")

    assert read.kind == "rgb"
    assert notes == [f"small.png: looks like a photo (colour, {distinct_colours(rgb)} distinct colours), {SWAPPED}",
                     "small.png: upsampled to the image size 128x96"]


def test_a_16bit_colour_photo_as_mask_is_noted(tmp_path: Path) -> None:
    photo, _ = synthetic_scene(96, 128)
    assert cv2.imwrite(str(tmp_path / "p16.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)

    mask = read_mask(tmp_path / "p16.png")

    assert mask.kind == "rgb" and mask.colours is not None
    assert photo_note(mask, "p16.png") == (f"p16.png: looks like a photo (colour, {distinct_colours(photo)} distinct "
                                           f"colours), {SWAPPED}")


def test_colour_masks_stay_quiet_and_only_the_photo_is_noted(tmp_path: Path) -> None:
    photo, gt = synthetic_scene(96, 128)
    inside = gt > 0
    blurred = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 3)
    red_soft = np.zeros((96, 128, 3), np.uint8)
    red_soft[..., 0] = np.round(blurred * 255).astype(np.uint8)  # one colour on black, soft edges: 256 levels
    red = np.zeros((96, 128, 3), np.uint8)
    red[inside] = (255, 0, 0)
    voc = np.array([(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (64, 0, 0)], np.uint8)
    classes = np.zeros((96, 128), np.uint8)
    for index, (top, left) in enumerate(((5, 5), (5, 60), (50, 10), (50, 70), (30, 40)), start=1):
        classes[top:top + 35, left:left + 45] = index
    voc_rgb = voc[classes]  # a VOC label map saved as RGB
    cut_out = np.dstack([photo, gt])  # photo colours, the shape in the alpha channel
    files = {
        "red_soft.png": red_soft, "red.png": red, "voc.png": voc_rgb, "cutout.png": cut_out,
        "grey_as_rgb.png": np.repeat(photo[..., :1], 3, axis=2),
    }
    for name, pixels in files.items():
        Image.fromarray(pixels).save(tmp_path / name)
    for name, pixels in (("red.jpg", red), ("red_soft.jpg", red_soft), ("voc.jpg", voc_rgb)):
        (tmp_path / name).write_bytes(jpeg_rgb(pixels, 50))  # JPEG's edges: a thousand colours or more
    (tmp_path / "photo.jpg").write_bytes(jpeg_rgb(photo, 90))

    noted = {path.name: photo_note(read_mask(path), path.name) for path in sorted(tmp_path.iterdir())}

    assert [name for name, note in noted.items() if note is not None] == ["photo.jpg"]
    assert noted["photo.jpg"] is not None and noted["photo.jpg"].endswith(SWAPPED)
    assert read_mask(tmp_path / "voc.jpg").colours.distinct > 1000  # many colours, yet a mask


def test_colours_are_counted_on_a_sample_of_a_large_mask() -> None:
    height, width = 2000, 1000
    packed = np.arange(height * width, dtype=np.uint32).reshape(height, width)  # every pixel its own colour
    rgb = np.dstack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255]).astype(np.uint8)

    colours = count_colours(rgb)

    step = 3  # the smallest whole step that leaves at most COLOUR_SAMPLE_PIXELS pixels
    assert len(range(0, height, step)) * len(range(0, width, step)) <= COLOUR_SAMPLE_PIXELS
    assert colours.sampled and colours.distinct == len(range(0, height, step)) * len(range(0, width, step))
    assert colours.common_share == 256 / colours.distinct
    note = photo_note(read_mask_of(rgb), "big.png")
    assert note == f"big.png: looks like a photo (colour, at least {colours.distinct} distinct colours), {SWAPPED}"


def read_mask_of(rgb: np.ndarray) -> MaskData:
    """``rgb`` read as a mask, from a PNG in memory."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG", compress_level=1)
    return read_mask(buffer.getvalue())
