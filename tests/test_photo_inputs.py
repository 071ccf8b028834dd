"""The photo side of reading a pair: TIFF orientation, 16-bit photos holding fewer bits, float
photos, and an output path that names the photo. Tiny synthetic files in tmp_path; no model loads."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import ImageReadError, probe_image, read_image, read_mask
from crm_cli.pipeline import read_pair
from crm_cli.wide_colour import laid_out_as

runner = CliRunner()


def upright_photo(height: int = 6, width: int = 10) -> np.ndarray:
    """An (H, W, 3) uint8 photo whose every pixel differs, so any wrong turn shows."""
    values = np.arange(height * width * 3, dtype=np.uint32).reshape(height, width, 3)
    return (values * 7 % 251).astype(np.uint8)


# Orientation o is undone on the stored pixels by this Pillow transpose (upright = orient(stored)).
TO_STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_270}


def save_tiff(image: Image.Image, path: Path, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)
    return path


# ---------------------------------------------------------------------------------------------
# TIFF orientation: newer Pillow turns a TIFF upright itself while loading it


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_tiff_photo_header_pixels_and_orientation_agree(tmp_path: Path, orientation: int) -> None:
    upright = upright_photo()
    stored = Image.fromarray(upright).transpose(TO_STORED[orientation])
    path = save_tiff(stored, tmp_path / "photo.tif", orientation)

    header = probe_image(path)
    image = read_image(path)
    mask = read_mask(save_tiff(stored.convert("L"), tmp_path / "mask.tif", orientation))

    np.testing.assert_array_equal(image, upright)
    assert (header.height, header.width) == upright.shape[:2]
    assert header.orientation == orientation
    assert mask.orientation == orientation and mask.shape == upright.shape[:2]


def test_mask_drawn_on_a_rotated_tiffs_stored_pixels_is_rotated_like_it(tmp_path: Path) -> None:
    upright = upright_photo()
    stored = Image.fromarray(upright).transpose(TO_STORED[6])
    photo = save_tiff(stored, tmp_path / "photo.tif", 6)
    mask_values = np.zeros(upright.shape[:2], np.uint8)
    mask_values[1:3, 2:7] = 255
    stored_mask = tmp_path / "mask.png"  # no orientation tag: made by a tool that ignored the photo's
    Image.fromarray(mask_values).transpose(TO_STORED[6]).save(stored_mask)

    image, mask, notes = read_pair(photo, stored_mask)

    np.testing.assert_array_equal(image, upright)
    np.testing.assert_array_equal(mask.values, mask_values)
    assert any("before its EXIF rotation" in note for note in notes)


@pytest.mark.parametrize("orientation", [3, 5, 6, 7, 8])
def test_16bit_pixels_are_laid_out_as_pillow_loaded_them(orientation: int) -> None:
    upright16 = upright_photo().astype(np.uint16) * 257
    stored16 = np.ascontiguousarray(
        np.asarray(Image.fromarray(upright_photo()).transpose(TO_STORED[orientation]))).astype(np.uint16) * 257
    loaded_upright = Image.fromarray(upright_photo())
    loaded_stored = Image.fromarray(np.asarray(loaded_upright.transpose(TO_STORED[orientation])))

    # Either library may have turned the file upright (OpenCV 5 does for TIFFs, Pillow 13 too).
    for pixels, loaded, expected in [(stored16, loaded_upright, upright16), (upright16, loaded_stored, stored16),
                                     (stored16, loaded_stored, stored16), (upright16, loaded_upright, upright16)]:
        np.testing.assert_array_equal(laid_out_as(pixels, loaded, orientation), expected)


def test_16bit_colour_tiff_is_upright_whatever_opencv_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli import imageio

    upright = upright_photo()
    stored = np.asarray(Image.fromarray(upright).transpose(TO_STORED[6]))
    path = tmp_path / "photo16.tif"
    cv2.imwrite(str(path), np.ascontiguousarray(stored[..., ::-1]).astype(np.uint16) * 257)
    with Image.open(path) as check:
        assert check.mode == "RGB"
    retagged = tmp_path / "tagged16.tif"
    retagged.write_bytes(tag_orientation(path.read_bytes(), 6))
    # An OpenCV that leaves the TIFF as stored, and one that turns it upright.
    monkeypatch.setattr(imageio, "decode_16bit_colour",
                        lambda data, label: np.ascontiguousarray(stored).astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(retagged), upright)
    monkeypatch.setattr(imageio, "decode_16bit_colour", lambda data, label: upright.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(retagged), upright)


def tag_orientation(tiff: bytes, orientation: int) -> bytes:
    """A little-endian TIFF with an Orientation tag added to its first directory (a new copy of the
    directory at the end of the file)."""
    import struct

    assert tiff[:4] == b"II*\x00"
    offset = struct.unpack("<I", tiff[4:8])[0]
    count = struct.unpack("<H", tiff[offset:offset + 2])[0]
    entries = [tiff[offset + 2 + 12 * i:offset + 14 + 12 * i] for i in range(count)]
    entries.append(struct.pack("<HHII", 0x0112, 3, 1, orientation))
    entries.sort(key=lambda entry: struct.unpack("<H", entry[:2])[0])
    following = tiff[offset + 2 + 12 * count:offset + 6 + 12 * count]
    body = tiff + b"\x00" * (len(tiff) % 2)
    directory = struct.pack("<H", len(entries)) + b"".join(entries) + following
    return body[:4] + struct.pack("<I", len(body)) + body[8:] + directory


# ---------------------------------------------------------------------------------------------
# 16-bit photos that hold fewer bits, and floating-point photos


def test_16bit_grey_photo_of_8bit_values_reads_like_the_8bit_file(tmp_path: Path) -> None:
    grey = np.array([[0, 40, 128], [200, 250, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    cv2.imwrite(str(tmp_path / "g16.png"), grey.astype(np.uint16))
    cv2.imwrite(str(tmp_path / "g16.tif"), grey.astype(np.uint16))

    for name in ("g16.png", "g16.tif"):
        np.testing.assert_array_equal(read_image(tmp_path / name), read_image(tmp_path / "g8.png"))


def test_16bit_colour_photo_of_8bit_values_reads_like_the_8bit_file(tmp_path: Path) -> None:
    rgb = upright_photo()
    cv2.imwrite(str(tmp_path / "c16.png"), np.ascontiguousarray(rgb[..., ::-1]).astype(np.uint16))

    np.testing.assert_array_equal(read_image(tmp_path / "c16.png"), rgb)


def test_12bit_photo_is_read_on_the_12bit_scale_with_a_note(tmp_path: Path) -> None:
    grey = np.array([[0, 2048, 4095]] * 100, np.uint16)
    cv2.imwrite(str(tmp_path / "x12.tif"), grey)
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((100, 3), np.uint8)).save(mask)

    image, _, notes = read_pair(tmp_path / "x12.tif", mask)

    assert image[0, :, 0].tolist() == [0, 128, 255]
    assert notes == [f"{tmp_path / 'x12.tif'}: a 16-bit image whose largest value is 4095, read as 12-bit values "
                     "(4095 = white); the scale follows each file's values, so frames of one sequence can differ: "
                     "photo_bits=N fixes it"]


def test_full_range_16bit_photo_keeps_the_16bit_scale(tmp_path: Path) -> None:
    grey = np.array([[0, 16384, 32768, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((1, 4), np.uint8)).save(mask)

    image, _, notes = read_pair(tmp_path / "g.png", mask)

    assert image[0, :, 0].tolist() == [0, 64, 128, 255] and notes == []


def test_float_photo_in_0_1_is_read_as_grey(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")

    image = read_image(tmp_path / "f.tif")

    assert image.shape == (1, 4, 3) and image.dtype == np.uint8
    assert image[0, :, 1].tolist() == [0, 64, 128, 255]


@pytest.mark.parametrize(("value", "message"), [(2.5, "must hold values in [0, 1]"), (np.nan, "NaN")])
def test_float_photo_outside_0_1_is_refused_naming_the_file(tmp_path: Path, value: float, message: str) -> None:
    Image.fromarray(np.full((2, 2), value, np.float32), "F").save(tmp_path / "f.tif")

    with pytest.raises(ImageReadError, match="f.tif") as caught:
        read_image(tmp_path / "f.tif")
    assert message in str(caught.value) and "image" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# The output must not replace the photo


def test_refine_refuses_an_output_that_is_the_photo(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.fromarray(upright_photo(120, 120)).save(photo)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.zeros((120, 120), np.uint8)).save(mask)
    link = tmp_path / "link.png"
    link.symlink_to(photo)
    before = photo.read_bytes()

    for image, output in [(photo, photo), (link, photo), (photo, tmp_path / "." / "photo.png")]:
        result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(output),
                                     "-w", str(tmp_path / "no_weights.safetensors")])
        assert result.exit_code == 2, result.output
        assert "replace the photo" in result.stderr and "Traceback" not in result.stderr
    assert photo.read_bytes() == before


def test_refine_with_the_output_naming_the_coarse_mask_refines_it_in_place(tmp_path: Path, tiny_weights: Path) -> None:
    from conftest import coarse_of, synthetic_scene

    image, gt = synthetic_scene(120, 120)
    photo = tmp_path / "photo.png"
    Image.fromarray(image).save(photo)
    mask = tmp_path / "mask.png"
    Image.fromarray(coarse_of(gt)).save(mask)
    elsewhere = tmp_path / "refined.png"
    for output in (elsewhere, mask):
        result = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(output), "-w", str(tiny_weights),
                                     "--device", "cpu"])
        assert result.exit_code == 0, result.output
    assert mask.read_bytes() == elsewhere.read_bytes()  # read whole first, so the same refinement
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.png", "photo.png", "refined.png"]  # no temp left
