"""Tests for crm_cli.imageio on tiny synthetic files written into tmp_path."""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from crm_cli import writing
from crm_cli.cli.checks import probe_pair
from crm_cli.image_sources import read_bytes_stdin
from crm_cli.imageio import IMAGE_SUFFIXES, ImageReadError, read_image, read_mask
from crm_cli.masks import MaskData, SizeMismatchError, binarize, drawn_on_stored_pixels, match_mask_to_image
from crm_cli.pipeline import read_pair
from crm_cli.writing import encode_image, write_bytes_stdout, write_png

PALETTE3 = [0, 0, 0, 255, 0, 0, 0, 255, 0]


def save_with_orientation(image: Image.Image, path: Path, orientation: int, **kwargs: object) -> Path:
    """Save ``image`` with an EXIF Orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif, **kwargs)
    return path


def palette_image(indices: np.ndarray, palette: list[int]) -> Image.Image:
    """A P-mode Pillow image holding ``indices`` verbatim."""
    image = Image.new("P", (indices.shape[1], indices.shape[0]))
    image.frombytes(indices.astype(np.uint8).tobytes())
    image.putpalette(palette)
    return image


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------
# EXIF orientation


@pytest.mark.parametrize(("orientation", "marker_at"), [(6, (0, 1)), (8, (2, 0)), (3, (1, 2)), (1, (0, 0))])
def test_exif_orientation_rotates_image_and_mask_identically(
    tmp_path: Path, orientation: int, marker_at: tuple[int, int]
) -> None:
    # Stored 2 rows x 3 columns with a marker at row 0, column 0.
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    gray = np.zeros((2, 3), np.uint8)
    gray[0, 0] = 255
    image_path = save_with_orientation(Image.fromarray(rgb), tmp_path / "i.png", orientation)
    mask_path = save_with_orientation(Image.fromarray(gray), tmp_path / "m.png", orientation)

    image = read_image(image_path)
    mask = read_mask(mask_path)

    expected_hw = (3, 2) if orientation in (6, 8) else (2, 3)
    assert image.shape == (*expected_hw, 3)
    assert mask.values.shape == expected_hw
    assert tuple(np.argwhere(image[..., 0] == 255)[0]) == marker_at
    assert tuple(np.argwhere(mask.values == 255)[0]) == marker_at
    assert image[..., 0].sum() == 255 and mask.values.sum() == 255
    assert image.flags.writeable and mask.values.flags.writeable


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pillow_exif_transpose(tmp_path: Path, orientation: int) -> None:
    values = (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).astype(np.uint8)
    path = save_with_orientation(Image.fromarray(values), tmp_path / "o.png", orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))

    assert np.array_equal(read_mask(path).values, expected)
    assert np.array_equal(read_image(path)[..., 1], expected)


def test_exif_orientation_from_jpeg(tmp_path: Path) -> None:
    # 16x24 stored, bright top-left 8x8 block (JPEG-safe); orientation 6 moves it to the top-right.
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:8, :8] = 255
    path = save_with_orientation(Image.fromarray(rgb), tmp_path / "i.jpg", 6, quality=100)

    image = read_image(path)
    mask = read_mask(path)

    assert image.shape == (24, 16, 3)
    assert image[2, 13].min() > 240 and image[2, 2].max() < 15
    assert mask.kind == "gray8"
    assert mask.values[2, 13] > 240 and mask.values[2, 2] < 15


@pytest.mark.parametrize(("orientation", "marker_at"), [(5, (0, 0)), (6, (0, 1)), (7, (2, 1)), (8, (2, 0))])
def test_mask_drawn_on_stored_pixels_is_rotated_like_the_image(
    tmp_path: Path, orientation: int, marker_at: tuple[int, int]
) -> None:
    # The image is stored 2x3 with an EXIF tag; the mask was made from the stored pixels (no tag).
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = 255
    gray = np.zeros((2, 3), np.uint8)
    gray[0, 0] = 255
    image_path = save_with_orientation(Image.fromarray(rgb), tmp_path / "i.png", orientation)
    Image.fromarray(gray).save(tmp_path / "m.png")

    assert probe_pair(image_path, tmp_path / "m.png", "i.png", "m.png")[1] is False  # fits, no upsampling
    image, mask, notes = read_pair(image_path, tmp_path / "m.png")

    assert image.shape == (3, 2, 3) and mask.values.shape == (3, 2)
    assert tuple(np.argwhere(image[..., 0] == 255)[0]) == marker_at
    assert tuple(np.argwhere(mask.values == 255)[0]) == marker_at
    assert notes == [f"{tmp_path / 'm.png'}: fits {image_path} as stored, before its EXIF rotation; "
                     "rotated the same way"]


def test_stored_pixel_rule_needs_evidence_from_the_size(tmp_path: Path) -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    image_path = save_with_orientation(Image.fromarray(rgb), tmp_path / "i.png", 6)  # upright 40 wide, 60 high
    # A half-size mask of the stored pixels (20x30) is rotated, then upsampled.
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "half.png")
    _, mask, notes = read_pair(image_path, tmp_path / "half.png")
    assert mask.values.shape == (60, 40) and len(notes) == 2 and "upsampled" in notes[1]
    # A mask carrying its own orientation tag is taken as it says, and then does not fit.
    save_with_orientation(Image.fromarray(np.zeros((60, 40), np.uint8)), tmp_path / "tagged.png", 6)
    with pytest.raises(SizeMismatchError, match="tagged.png is 60x40 but image"):
        probe_pair(image_path, tmp_path / "tagged.png", "i.png", str(tmp_path / "tagged.png"))
    with pytest.raises(SizeMismatchError):
        read_pair(image_path, tmp_path / "tagged.png")
    # A flip or 180° keeps the size: nothing to go by, so the mask stays as read.
    assert not drawn_on_stored_pixels((4, 6), 1, (4, 6), 3)
    # An upright-fitting mask is never rotated, even when the stored size would fit too (square).
    assert not drawn_on_stored_pixels((5, 5), 1, (5, 5), 6)


# ---------------------------------------------------------------------------------------------
# Masks


def test_16bit_mask_ramp_keeps_values(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 4 * 64).astype(np.uint16).reshape(4, 64)
    Image.fromarray(ramp).save(tmp_path / "m16.png")

    mask = read_mask(tmp_path / "m16.png")

    assert mask.kind == "gray16"
    assert mask.values.dtype == np.uint16
    assert np.array_equal(mask.values, ramp)
    assert len(np.unique(mask.values)) == 256
    probability = mask.probability()
    assert probability.dtype == np.float32
    assert np.allclose(probability, ramp / 65535.0, atol=1e-7)
    assert probability[0, 0] == 0.0 and probability[-1, -1] == 1.0
    assert not mask.is_label_map()


def test_16bit_file_of_8bit_values_is_read_on_the_8bit_scale(tmp_path: Path) -> None:
    # cv2.imwrite(mask.astype(np.uint16)) of an 8-bit mask: read / 65535 it would be all background.
    values = np.array([[0, 64, 128], [200, 255, 0]], np.uint16)
    cv2.imwrite(str(tmp_path / "m.png"), values)
    Image.fromarray(np.full((2, 3, 3), 90, np.uint8)).save(tmp_path / "im.png")

    mask = read_mask(tmp_path / "m.png")

    assert mask.kind == "gray16" and mask.values.dtype == np.uint16  # raw values untouched
    assert np.allclose(mask.probability(), values / 255.0, atol=1e-7)
    assert mask.probability()[1, 1] == 1.0
    assert mask.scoring_values().tolist() == values.tolist()
    assert binarize(mask.scoring_values()).tolist() == [[False, False, False], [True, True, False]]
    _, _, notes = read_pair(tmp_path / "im.png", tmp_path / "m.png")
    assert notes == [f"{tmp_path / 'm.png'}: a 16-bit mask whose largest value is 255, read as 8-bit values "
                     "(255 = foreground)"]


def test_16bit_file_of_8bit_values_below_255_is_read_on_the_8bit_scale(tmp_path: Path) -> None:
    # An 8-bit soft mask scaled to 250 and saved as uint16: read / 65535 it was all background.
    # (0 and one value alone is a binary mask, whatever its scale.)
    Image.fromarray(np.full((1, 3, 3), 90, np.uint8)).save(tmp_path / "im.png")
    for top in (128, 250, 254):
        values = np.array([[0, top // 2, top]], np.uint16)
        cv2.imwrite(str(tmp_path / "m.png"), values)
        assert read_mask(tmp_path / "m.png").probability()[0, 2] == pytest.approx(top / 255.0, abs=1e-7)
        assert binarize(values).tolist() == [[False, False, top > 128]]
        note = f"{tmp_path / 'm.png'}: a 16-bit mask whose largest value is {top}, read as 8-bit values"
        assert read_pair(tmp_path / "im.png", tmp_path / "m.png")[2] == [f"{note} (255 = foreground)"]


def test_16bit_mask_with_maxima_from_256_stays_on_the_16bit_scale(tmp_path: Path) -> None:
    # 256 and up are 16-bit levels (a faint 16-bit soft mask); 1 is a 0/1 mask.
    for top in (256, 1000, 65535):
        values = np.array([[0, top // 2, top]], np.uint16)
        cv2.imwrite(str(tmp_path / "m.png"), values)
        assert read_mask(tmp_path / "m.png").probability()[0, 2] == pytest.approx(top / 65535.0, abs=1e-7)
    Image.fromarray(np.full((1, 3, 3), 90, np.uint8)).save(tmp_path / "im.png")
    assert read_pair(tmp_path / "im.png", tmp_path / "m.png")[2] == []


def test_float_tiff_mask_is_a_probability_map(tmp_path: Path) -> None:
    probabilities = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 1.0004]], np.float32)  # rounding overshoot
    Image.fromarray(probabilities).save(tmp_path / "pil.tif")
    cv2.imwrite(str(tmp_path / "cv.tif"), probabilities)
    for name in ("pil.tif", "cv.tif"):
        mask = read_mask(tmp_path / name)
        assert mask.kind == "float" and mask.values.dtype == np.float32
        assert mask.probability().tolist() == [[0.0, 0.25, 0.5], [0.75, 1.0, 1.0]]
        assert binarize(mask.scoring_values()).tolist() == [[False, False, False], [True, True, True]]
        assert not mask.is_label_map()


@pytest.mark.parametrize(("values", "message"), [
    ([[0.0, 255.0]], "must hold probabilities in \\[0, 1\\]; its values run from 0 to 255"),
    ([[0.0, -0.5]], "its values run from -0.5 to 0"),
    ([[0.0, np.nan]], "NaN or infinite"),
])
def test_float_mask_outside_0_1_is_refused_naming_the_file(tmp_path: Path, values: list, message: str) -> None:
    Image.fromarray(np.array(values, np.float32)).save(tmp_path / "bad.tif")
    with pytest.raises(ImageReadError, match=f"bad.tif: .*{message}"):
        read_mask(tmp_path / "bad.tif")


def test_palette_mask_keeps_indices_and_palette(tmp_path: Path) -> None:
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    palette_image(indices, PALETTE3).save(tmp_path / "p.png")

    mask = read_mask(tmp_path / "p.png")

    assert mask.kind == "palette"
    assert mask.values.dtype == np.uint8
    assert np.array_equal(mask.values, indices)
    assert mask.palette is not None and len(mask.palette) == 768
    assert mask.palette[:9] == PALETTE3
    assert np.array_equal(mask.probability(), (indices != 0).astype(np.float32))
    assert mask.is_label_map()


def test_rgba_cutout_with_constant_colour_uses_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = [[0, 128, 255], [255, 64, 0]]
    Image.fromarray(rgba).save(tmp_path / "cut.png")

    mask = read_mask(tmp_path / "cut.png")

    assert mask.kind == "alpha"
    assert np.array_equal(mask.values, rgba[..., 3])
    assert np.allclose(mask.probability(), rgba[..., 3] / 255.0)


def test_opaque_rgba_uses_colour_not_constant_alpha(tmp_path: Path) -> None:
    # An all-black opaque mask must stay empty rather than become a full alpha mask.
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "black.png")

    mask = read_mask(tmp_path / "black.png")

    assert mask.kind == "gray8"
    assert not mask.values.any()


def test_rgb_colour_mask_uses_its_brightest_channel(tmp_path: Path) -> None:
    # By luminance pure red read 76 (0.30) and pure blue 29 (0.11): a red or blue object on black
    # was all background.
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [40, 200, 90]]], np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")

    mask = read_mask(tmp_path / "c.png")

    assert mask.kind == "rgb"
    assert mask.values.dtype == np.uint8
    assert mask.values.tolist() == [[255, 255, 255, 255, 0, 200]]


def test_16bit_colour_mask_uses_its_brightest_channel(tmp_path: Path) -> None:
    rgb = np.zeros((1, 3, 3), np.uint16)
    rgb[0, 1] = (65535, 0, 0)
    rgb[0, 2] = (0, 0, 32896)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[..., ::-1])

    mask = read_mask(tmp_path / "c16.png")

    assert mask.kind == "rgb"
    assert mask.values.tolist() == [[0, 255, 128]]


def test_rgba_photo_cutout_uses_its_alpha(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 0], [0, 255, 0, 255], [9, 9, 9, 128]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "c.png")

    mask = read_mask(tmp_path / "c.png")

    assert mask.kind == "alpha"
    assert mask.values.tolist() == [[0, 255, 128]]


def test_opaque_rgba_with_varying_colour_uses_its_brightest_channel(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 0, 255], [10, 20, 99, 255]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "c.png")

    mask = read_mask(tmp_path / "c.png")

    assert mask.kind == "rgb"
    assert mask.values.tolist() == [[255, 255, 0, 99]]


def test_gray_saved_as_rgb_uses_one_channel(tmp_path: Path) -> None:
    gray = np.array([[0, 1, 2, 200]], np.uint8)
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(tmp_path / "g.png")

    mask = read_mask(tmp_path / "g.png")

    assert mask.kind == "gray8"
    assert np.array_equal(mask.values, gray)


def test_la_mask_with_constant_luminance_uses_alpha(tmp_path: Path) -> None:
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 0] = 255
    la[..., 1] = [[0, 100], [200, 255]]
    Image.fromarray(la, "LA").save(tmp_path / "la.png")

    mask = read_mask(tmp_path / "la.png")

    assert mask.kind == "alpha"
    assert mask.values.tolist() == [[0, 100], [200, 255]]


def test_la_cutout_uses_its_alpha_whatever_the_grey(tmp_path: Path) -> None:
    # A grey photo cut out as LA: the shape is in the alpha, as for an RGBA cut-out. Before, the
    # grey channel (the photo) was read as the mask.
    la = np.zeros((2, 3, 2), np.uint8)
    la[..., 0] = [[40, 220, 90], [220, 40, 90]]
    la[..., 1] = [[0, 255, 255], [255, 0, 128]]
    Image.fromarray(la, "LA").save(tmp_path / "la.png")

    mask = read_mask(tmp_path / "la.png")

    assert mask.kind == "alpha"
    assert mask.values.tolist() == la[..., 1].tolist()


def test_opaque_la_uses_its_grey(tmp_path: Path) -> None:
    la = np.zeros((1, 3, 2), np.uint8)
    la[..., 0] = [[0, 128, 255]]
    la[..., 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")

    mask = read_mask(tmp_path / "la.png")

    assert mask.kind == "gray8"
    assert mask.values.tolist() == [[0, 128, 255]]


def test_16bit_rgb_gray_mask_stays_16bit(tmp_path: Path) -> None:
    gray = np.array([[0, 1000, 40000, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "g16rgb.png"), np.repeat(gray[..., None], 3, axis=2))

    mask = read_mask(tmp_path / "g16rgb.png")

    assert mask.kind == "gray16"
    assert np.array_equal(mask.values, gray)


def test_binary_mask_from_bytes(tmp_path: Path) -> None:
    binary = np.array([[0, 255], [255, 0]], np.uint8)
    data = encode_image(binary, fmt="PNG")

    mask = read_mask(data)

    assert mask.kind == "gray8"
    assert np.array_equal(mask.values, binary)
    assert mask.probability().tolist() == [[0.0, 1.0], [1.0, 0.0]]


# ---------------------------------------------------------------------------------------------
# Images


def test_16bit_rgb_image_scales_not_clips(tmp_path: Path) -> None:
    rgb = np.array([[[65535, 32768, 0], [257, 255, 128]]], np.uint16)
    expected = [[[255, 128, 0], [1, 1, 0]]]
    # OpenCV writes BGR, so reverse the channels to store `rgb`.
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb[..., ::-1])
    cv2.imwrite(str(tmp_path / "rgb16.tif"), rgb[..., ::-1])

    for name in ("rgb16.png", "rgb16.tif"):
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (1, 2, 3)
        assert image.tolist() == expected, name


def test_16bit_gray_image_scales_to_rgb(tmp_path: Path) -> None:
    gray = np.array([[0, 32768, 65535]], np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")

    image = read_image(tmp_path / "g16.png")

    assert image.dtype == np.uint8 and image.shape == (1, 3, 3)
    assert image[..., 0].tolist() == [[0, 128, 255]]
    assert np.array_equal(image[..., 0], image[..., 2])


def test_gray_and_cmyk_images_become_rgb(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 77], [200, 255]], np.uint8)).save(tmp_path / "g.png")
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)

    gray = read_image(tmp_path / "g.png")
    cmyk_tif = read_image(tmp_path / "c.tif")
    cmyk_jpg = read_image(tmp_path / "c.jpg")

    assert gray.shape == (2, 2, 3) and gray.dtype == np.uint8
    assert gray[..., 1].tolist() == [[0, 77], [200, 255]]
    assert cmyk_tif.shape == (2, 2, 3) and cmyk_tif.dtype == np.uint8
    assert cmyk_tif[0, 0].tolist() == [255, 0, 0]
    assert cmyk_jpg.shape == (8, 8, 3) and cmyk_jpg.min() > 250


def test_rgba_la_and_palette_images_become_rgb(tmp_path: Path) -> None:
    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(np.array([[[90, 0], [91, 255]]], np.uint8), "LA").save(tmp_path / "la.png")
    palette_image(np.array([[2, 1]], np.uint8), PALETTE3).save(tmp_path / "p.png")

    assert read_image(tmp_path / "a.png").tolist() == [[[10, 20, 30], [40, 50, 60]]]
    assert read_image(tmp_path / "la.png").tolist() == [[[90, 90, 90], [91, 91, 91]]]
    assert read_image(tmp_path / "p.png").tolist() == [[[0, 255, 0], [255, 0, 0]]]


def test_missing_file_raises_named_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError, match="nope.png: no such file"):
            reader(path)


def test_corrupt_file_raises_named_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes())
    for reader in (read_image, read_mask):
        with pytest.raises(ImageReadError, match="broken.png") as info:
            reader(path)
        assert isinstance(info.value, OSError)


def test_truncated_png_raises_named_error(tmp_path: Path) -> None:
    data = encode_image(np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8), fmt="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(path)


def test_bytes_errors_use_given_or_bytes_name() -> None:
    with pytest.raises(ImageReadError, match="<bytes>"):
        read_image(b"not an image")
    with pytest.raises(ImageReadError, match="upload.png"):
        read_mask(b"", name="upload.png")


def test_image_suffixes() -> None:
    assert set(IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                                   ".pgm", ".ppm", ".pbm", ".pnm", ".avif"}  # every kind crm refine reads, for batch


# ---------------------------------------------------------------------------------------------
# Size matching


def test_match_equal_size_returns_same_mask() -> None:
    mask = MaskData(np.zeros((4, 6), np.uint8), "gray8")

    matched, resized = match_mask_to_image(mask, (4, 6), "i.jpg", "m.png")

    assert matched is mask and resized is False


def test_match_upsamples_same_aspect_bilinear_keeping_dtype() -> None:
    values = np.array([[0, 65535], [65535, 0]], np.uint16)
    mask = MaskData(values, "gray16")

    matched, resized = match_mask_to_image(mask, (8, 8), "i.jpg", "m.png")

    assert resized is True
    assert matched.kind == "gray16" and matched.values.dtype == np.uint16
    assert matched.values.shape == (8, 8)
    assert matched.values[0, 0] == 0 and matched.values[0, 7] == 65535
    # Bilinear with half-pixel centres, computed here on its own: output pixel i samples the input at
    # (i + 0.5) / 4 - 0.5, clamped to [0, 1] (session 53: the values were not pinned, so another
    # interpolation passed).
    position = np.clip((np.arange(8) + 0.5) / 4 - 0.5, 0.0, 1.0)
    weights = np.stack([1 - position, position], axis=1)  # (8, 2): the share of input row/column 0 and 1
    expected = weights @ values.astype(np.float64) @ weights.T
    assert np.abs(matched.values.astype(np.float64) - expected).max() <= 2.0


def test_match_upsamples_palette_with_nearest() -> None:
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    mask = MaskData(indices, "palette", PALETTE3 + [0] * 759)

    matched, resized = match_mask_to_image(mask, (4, 6), "i.jpg", "m.png")

    assert resized is True
    assert matched.kind == "palette" and matched.palette == mask.palette
    assert np.array_equal(matched.values, np.kron(indices, np.ones((2, 2), np.uint8)))


def test_match_tolerates_one_pixel_rounding() -> None:
    mask = MaskData(np.full((270, 480), 255, np.uint8), "gray8")

    matched, resized = match_mask_to_image(mask, (1081, 1921), "i.jpg", "m.png")

    assert resized is True and matched.values.shape == (1081, 1921)
    assert matched.values.min() == 255


def test_match_mismatch_names_both_files_and_sizes() -> None:
    mask = MaskData(np.zeros((480, 640), np.uint8), "gray8")

    with pytest.raises(SizeMismatchError) as info:
        match_mask_to_image(mask, (1200, 1920), "i.jpg", "m.png")

    message = str(info.value)
    assert "mask m.png is 640x480 but image i.jpg is 1920x1200" in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_match_rejects_larger_mask() -> None:
    mask = MaskData(np.zeros((8, 12), np.uint8), "gray8")
    with pytest.raises(SizeMismatchError, match="12x8 but image i.jpg is 6x4"):
        match_mask_to_image(mask, (4, 6), "i.jpg", "m.png")


# ---------------------------------------------------------------------------------------------
# Label maps


def test_is_label_map() -> None:
    ids = np.array([[0, 1], [2, 0]], np.uint8)
    assert MaskData(ids, "palette", PALETTE3 + [0] * 759).is_label_map()
    assert MaskData(ids, "gray8").is_label_map()
    assert MaskData(ids.astype(np.uint16), "gray16").is_label_map()

    # One class on background is a label map too, unless it is white (a black and white mask saved as palette).
    one_class = np.array([[0, 1], [1, 0]], np.uint8)
    assert MaskData(one_class, "palette").is_label_map()
    assert not MaskData(one_class, "palette", [0, 0, 0, 255, 255, 255] + [0] * 762).is_label_map()
    assert not MaskData(np.zeros((2, 2), np.uint8), "palette").is_label_map()
    assert not MaskData(np.array([[0, 255], [255, 0]], np.uint8), "gray8").is_label_map()
    assert not MaskData(np.arange(256, dtype=np.uint8).reshape(16, 16), "gray8").is_label_map()
    assert not MaskData(np.array([[0, 65535]], np.uint16), "gray16").is_label_map()
    assert not MaskData(ids, "alpha").is_label_map()


# ---------------------------------------------------------------------------------------------
# Writing


def test_encode_image_png_round_trips() -> None:
    gray = np.array([[0, 7, 255]], np.uint8)
    wide = np.array([[0, 300, 65535]], np.uint16)
    rgb = np.array([[[1, 2, 3], [250, 251, 252]]], np.uint8)
    rgba = np.array([[[1, 2, 3, 0], [4, 5, 6, 200]]], np.uint8)
    indices = np.array([[0, 2, 1]], np.uint8)

    cases = [(gray, None, "L"), (wide, None, "I;16"), (rgb, None, "RGB"), (rgba, None, "RGBA")]
    for array, palette, mode in [*cases, (indices, PALETTE3, "P")]:
        decoded = Image.open(io.BytesIO(encode_image(array, palette, fmt="PNG")))
        assert decoded.mode == mode
        assert np.array_equal(np.asarray(decoded), array), mode

    palette_mask = read_mask(encode_image(indices, PALETTE3, fmt="PNG"))
    assert palette_mask.kind == "palette"
    assert np.array_equal(palette_mask.values, indices)
    assert palette_mask.palette is not None and palette_mask.palette[:9] == PALETTE3
    assert read_mask(encode_image(wide, fmt="PNG")).values.tolist() == wide.tolist()


def test_encode_image_rejects_unsupported_arrays() -> None:
    with pytest.raises(ValueError, match="float64"):
        encode_image(np.zeros((2, 2)), fmt="PNG")
    with pytest.raises(ValueError, match="palette"):
        encode_image(np.zeros((2, 2), np.uint16), PALETTE3, fmt="PNG")


def test_write_png_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.png"
    values = np.array([[0, 128, 255]], np.uint8)

    write_png(target, values)

    assert np.array_equal(read_mask(target).values, values)
    assert no_temp_files(target.parent)
    assert [p.name for p in target.parent.iterdir()] == ["out.png"]


def test_write_png_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    write_png(target, np.zeros((2, 2), np.uint8))

    write_png(target, np.full((3, 3), 9, np.uint8))

    assert read_mask(target).values.tolist() == [[9] * 3] * 3
    assert no_temp_files(tmp_path)


def test_write_png_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    write_png(target, np.full((2, 2), 5, np.uint8))
    before = target.read_bytes()

    with pytest.raises(ValueError):
        write_png(target, np.zeros((2, 2), np.float64))

    assert target.read_bytes() == before
    assert no_temp_files(tmp_path)


def test_write_png_failure_at_fsync_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure once the temp file is written (its fsync: an I/O error, a full disk on close) leaves the
    old output whole and no temp file (session 53: the float64 case above fails before any file is opened)."""
    target = tmp_path / "out.png"
    write_png(target, np.full((2, 2), 5, np.uint8))
    before = target.read_bytes()
    synced: list[int] = []

    def failing_fsync(fd: int) -> None:
        synced.append(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(writing.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(target))}: input/output error"):
        write_png(target, np.full((2, 2), 6, np.uint8))
    assert synced and target.read_bytes() == before
    assert no_temp_files(tmp_path)


def test_write_png_failure_mid_write_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.png"
    write_png(target, np.full((2, 2), 5, np.uint8))
    before = target.read_bytes()
    seen: list[str] = []

    def failing_replace(src: str | Path, dst: str | Path) -> None:
        seen.append(Path(src).name)
        assert Path(src).exists()
        raise OSError("disk full")

    monkeypatch.setattr(writing.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_png(target, np.full((2, 2), 6, np.uint8))

    assert seen and seen[0].startswith(".") and seen[0].endswith(".tmp")
    assert target.read_bytes() == before
    assert no_temp_files(tmp_path)


@pytest.mark.skipif(os.name != "posix", reason="umask semantics")
def test_write_png_honours_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_png(tmp_path / "out.png", np.zeros((1, 1), np.uint8))
    finally:
        os.umask(old)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------
# Standard streams


class FakeStream:
    """A text-stream stand-in with a binary buffer and a configurable isatty()."""

    def __init__(self, data: bytes = b"", tty: bool = False) -> None:
        self.buffer = io.BytesIO(data)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_stdout_writes_bytes_and_refuses_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = FakeStream()
    monkeypatch.setattr(sys, "stdout", pipe)
    write_bytes_stdout(b"\x89PNG data")
    assert pipe.buffer.getvalue() == b"\x89PNG data"

    monkeypatch.setattr(sys, "stdout", FakeStream(tty=True))
    with pytest.raises(ValueError, match="refusing to write PNG to a terminal; redirect or use -o FILE"):
        write_bytes_stdout(b"x")


def test_stdin_reads_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode_image(np.array([[3, 4]], np.uint8), fmt="PNG")
    monkeypatch.setattr(sys, "stdin", FakeStream(data))

    assert read_bytes_stdin() == data
    assert read_image(data).shape == (1, 2, 3)

    monkeypatch.setattr(sys, "stdin", FakeStream(tty=True))
    with pytest.raises(ValueError, match="terminal"):
        read_bytes_stdin()
