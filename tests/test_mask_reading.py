"""How masks of every common layout are read (session 24's audit of `crm refine` inputs): palette,
colour and LA masks, 16- and 32-bit integer scales, faint masks, header-only probing, unsupported
TIFF layouts, pipes given as paths and the exit code of output names that cannot hold a label map.
All files are tiny synthetic ones written into tmp_path."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import palette_png
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.cli.checks import passthrough_pair
from crm_cli.engine import RefineResult
from crm_cli.imageio import ImageReadError, probe_image, read_image, read_mask
from crm_cli.masks import MaskData, scale_note
from crm_cli.pipeline import choose_mode, fit_mask_to_image, read_pair, refine_files
from crm_cli.presets import get_preset

runner = CliRunner()

VOC_COLOURS = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # VOC indices 0-3: background, aeroplane, bicycle, bird


def object_mask(height: int = 12, width: int = 16) -> np.ndarray:
    """A 0/255 uint8 rectangle on black."""
    mask = np.zeros((height, width), np.uint8)
    mask[3:9, 4:12] = 255
    return mask


# ---------------------------------------------------------------------------------------------
# Palette masks


def test_quantised_black_and_white_mask_is_not_inverted(tmp_path: Path) -> None:
    # Pillow's quantize(2) puts white at index 0: read by index, the object was background.
    mask = object_mask()
    quantised = Image.fromarray(mask).convert("RGB").quantize(2)
    assert quantised.getpalette()[:3] == [255, 255, 255] and np.asarray(quantised)[0, 0] == 1
    quantised.save(tmp_path / "q.png")

    read = read_mask(tmp_path / "q.png")

    assert read.kind == "gray8"
    assert np.array_equal(read.values, mask)
    assert choose_mode(read, "auto") == "binary"


def test_grey_quantised_soft_mask_is_a_soft_mask_not_labels(tmp_path: Path) -> None:
    # pngquant-style: 16 grey levels in a palette whose order is not the grey order.
    levels = np.array([0, 255, 17, 238, 34, 221, 51, 204, 68, 187, 85, 170, 102, 153, 119, 136], np.uint8)
    indices = np.arange(16, dtype=np.uint8).reshape(2, 8)
    palette_png(tmp_path / "soft.png", indices, np.repeat(levels, 3).tolist())

    read = read_mask(tmp_path / "soft.png")

    assert read.kind == "gray8"
    assert np.array_equal(read.values, levels[indices])
    assert not read.is_label_map() and choose_mode(read, "auto") == "binary"


def test_grey_palette_whose_colours_are_the_indices_reads_as_before(tmp_path: Path) -> None:
    # Image.convert("P") of an 8-bit label map gives the identity grey palette: still a label map.
    ids = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    Image.fromarray(ids).convert("P").save(tmp_path / "ids.png")

    read = read_mask(tmp_path / "ids.png")

    assert read.kind == "palette" and read.values.tolist() == ids.tolist()
    assert read.palette is not None and read.palette[:6] == [0, 0, 0, 1, 1, 1]
    assert choose_mode(read, "auto") == "labels"


def test_palette_without_colours_for_its_indices_is_read_by_index(tmp_path: Path) -> None:
    # Three grey entries but index 3 used: it has no colour, so the indices are ids.
    ids = np.array([[0, 1, 2], [3, 1, 0]], np.uint8)
    palette_png(tmp_path / "ids.png", ids, [0, 0, 0, 9, 9, 9, 50, 50, 50])
    assert len(Image.open(tmp_path / "ids.png").getpalette()) == 9

    read = read_mask(tmp_path / "ids.png")

    assert read.kind == "palette" and read.values.tolist() == ids.tolist()
    assert choose_mode(read, "auto") == "labels"


def test_colour_palette_label_map_keeps_ids_and_palette(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2], [3, 0, 1]], np.uint8)
    palette_png(tmp_path / "voc.png", ids, VOC_COLOURS)

    read = read_mask(tmp_path / "voc.png")

    assert read.kind == "palette" and read.values.tolist() == ids.tolist()
    assert read.palette is not None and read.palette[:12] == VOC_COLOURS
    assert choose_mode(read, "auto") == "labels"


def test_two_colour_palette_with_black_at_index_0_reads_as_before(tmp_path: Path) -> None:
    ids = (object_mask() > 0).astype(np.uint8) * 15  # one VOC class (15, person) on background
    palette = [0, 0, 0] * 15 + [192, 128, 128]
    palette_png(tmp_path / "one.png", ids, palette)

    read = read_mask(tmp_path / "one.png")

    assert read.kind == "palette" and np.array_equal(read.values, ids)
    assert np.array_equal(read.probability(), (ids > 0).astype(np.float32))


def test_two_colour_palette_with_black_at_index_0_and_a_grey_object_reads_by_index(tmp_path: Path) -> None:
    # VOC's car (index 7) is grey (128, 128, 128): read by its grey level it was 128, which the
    # evaluation's > 128 rule makes background, so a car-only ground truth scored as empty.
    ids = (object_mask() > 0).astype(np.uint8) * 7
    palette_png(tmp_path / "car.png", ids, [0, 0, 0] * 7 + [128, 128, 128])

    read = read_mask(tmp_path / "car.png")

    assert read.kind == "palette" and np.array_equal(read.values, ids)
    assert np.array_equal(read.scoring_values(), ids > 0)
    assert choose_mode(read, "auto") == "labels"  # a one-class map keeps its id and palette


def test_two_colour_palette_with_black_at_another_index_takes_the_colour_as_object(tmp_path: Path) -> None:
    # A red object quantised with red at index 0 and black at index 1.
    inside = object_mask() > 0
    palette_png(tmp_path / "red.png", np.where(inside, 0, 1).astype(np.uint8), [255, 0, 0, 0, 0, 0])

    read = read_mask(tmp_path / "red.png")

    assert read.kind == "palette"
    assert np.array_equal(read.probability(), inside.astype(np.float32))
    # A label map of one class (not white): the object is id 1 and keeps its colour.
    assert choose_mode(read, "auto") == "labels"
    assert read.values.tolist() == inside.astype(np.uint8).tolist()
    assert read.palette is not None and read.palette[:6] == [0, 0, 0, 255, 0, 0] and len(read.palette) == 768


def test_cli_refines_a_quantised_mask_without_inverting_it(tiny_weights: Path, tmp_path: Path) -> None:
    image = np.full((96, 128, 3), 40, np.uint8)
    image[24:72, 32:96] = 220
    Image.fromarray(image).save(tmp_path / "img.png")
    mask = np.zeros((96, 128), np.uint8)
    mask[24:72, 32:96] = 255
    Image.fromarray(mask).convert("RGB").quantize(2).save(tmp_path / "q.png")
    out = tmp_path / "o.png"

    result = runner.invoke(app, ["refine", str(tmp_path / "img.png"), str(tmp_path / "q.png"), "-o", str(out),
                                 "-w", str(tiny_weights), "-d", "cpu", "--json", "-k", "binary"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "binary"
    agreement = ((np.asarray(Image.open(out)) > 127) == (mask > 127)).mean()
    assert agreement > 0.9  # inverted, it was 0 %


# ---------------------------------------------------------------------------------------------
# 16- and 32-bit integer masks


def test_16bit_label_maps_are_not_rescaled_or_noted(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2], [3, 0, 2]], np.uint16)
    cv2.imwrite(str(tmp_path / "ids16.png"), ids)
    Image.fromarray(np.full((2, 3, 3), 90, np.uint8)).save(tmp_path / "im.png")

    _, read, notes = read_pair(tmp_path / "im.png", tmp_path / "ids16.png")

    assert read.kind == "gray16" and read.values.dtype == np.uint16 and read.values.tolist() == ids.tolist()
    assert choose_mode(read, "auto") == "labels" and choose_mode(read, "labels") == "labels"
    assert notes == []


@pytest.mark.parametrize(("top", "mode", "scale", "noted"), [
    (1, "binary", 1, False),  # a 0/1 mask
    (2, "labels", 255, False),  # ids 0, 1, 2
    (40, "labels", 255, False),
    (200, "binary", 255, True),  # 8-bit values in a 16-bit file
    (255, "binary", 255, True),
    (256, "binary", 65535, False),
    (65535, "binary", 65535, False),
])
def test_a_16bit_mask_is_scanned_for_its_maximum_once_per_pair(top: int, mode: str, scale: int,
                                                                noted: bool) -> None:
    class Counted(np.ndarray):
        """The mask's values, counting the passes of max() over them."""

        passes = 0

        def max(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            Counted.passes += 1
            return super().max(*args, **kwargs)

    values = np.zeros((6, 8), np.uint16)
    values[2:5, 3:7], values[0, 0] = top, top // 2
    mask = MaskData(values.view(Counted), "gray16")

    fitted, notes = fit_mask_to_image(mask, (6, 8), 1, "im.png", "m.png")
    chosen = choose_mode(fitted, "auto")
    probability = fitted.probability()
    scoring = fitted.scoring_values()
    again = scale_note(fitted, "m.png")

    assert Counted.passes == 1
    assert chosen == mode and fitted.maximum == top
    assert notes == ([f"m.png: a 16-bit mask whose largest value is {top}, read as 8-bit values (255 = foreground)"]
                     if noted else []) and again == (notes[0] if noted else None)
    # A label map read as one object is its ids' union, as it is scored (session 52).
    np.testing.assert_array_equal(probability, (values != 0).astype(np.float32) if mode == "labels"
                                  else values.astype(np.float32) / np.float32(scale))
    assert probability.dtype == np.float32
    # A 0/1 mask and a label map are scored by their ids (non-zero is foreground); a mask by its levels.
    np.testing.assert_array_equal(scoring, values != 0 if top == 1 or mode == "labels" else values)


def test_a_float_mask_has_no_integer_maximum() -> None:
    mask = MaskData(np.array([[0.0, 0.75]], np.float32), "float")
    with pytest.raises(TypeError, match="integer masks"):
        _ = mask.maximum
    assert not mask.is_label_map() and mask.scoring_values().dtype == np.float32


@pytest.mark.parametrize(("values", "probability"), [
    ([[0, 100, 200]], 200 / 255),  # 8-bit values in a 32-bit file (0 and one value would be binary)
    ([[0, 12750, 25500]], 25500 / 65535),  # 16-bit values
    ([[0, 1]], 1.0),  # a 0/1 mask
])
def test_32bit_integer_tiff_mask_scales(tmp_path: Path, values: list, probability: float) -> None:
    Image.fromarray(np.array(values, np.int32)).save(tmp_path / "m.tif")
    assert Image.open(tmp_path / "m.tif").mode == "I"

    read = read_mask(tmp_path / "m.tif")

    assert read.kind == "gray16" and read.values.dtype == np.uint16
    assert read.probability()[0, -1] == pytest.approx(probability, abs=1e-6)


@pytest.mark.parametrize(("values", "shown"), [([[0, 70000]], "from 0 to 70000"), ([[-1, 255]], "from -1 to 255")])
def test_32bit_integer_mask_outside_16_bits_is_refused(tmp_path: Path, values: list, shown: str) -> None:
    Image.fromarray(np.array(values, np.int32)).save(tmp_path / "m.tif")
    with pytest.raises(ImageReadError, match=f"m.tif: an integer mask must hold values from 0 .* {shown}"):
        read_mask(tmp_path / "m.tif")


# ---------------------------------------------------------------------------------------------
# Faint masks


class FlatRefiner:
    """A stand-in for the engine: returns the coarse mask thresholded at 0.5, as the engine does
    with an empty foreground."""

    def refine_detailed(self, image: np.ndarray, mask: np.ndarray, preset: object = None) -> RefineResult:
        probability = (np.asarray(mask, np.float32) > 0.5).astype(np.float32)
        return RefineResult(probability=probability, ratios=(1.0,))


def test_faint_mask_gets_a_note(tmp_path: Path) -> None:
    image = np.full((12, 16, 3), 90, np.uint8)
    Image.fromarray(image).save(tmp_path / "im.png")
    faint = (object_mask() // 255 * 76).astype(np.uint8)  # 0.30
    faint[3, 4] = 50  # a second level: 0 and one value alone would be a binary mask
    Image.fromarray(faint).save(tmp_path / "faint.png")

    result = refine_files(FlatRefiner(), tmp_path / "im.png", tmp_path / "faint.png", get_preset("balanced"),
                          mask_name="faint.png")

    assert result.notes == ["faint.png: no pixel of the mask is above 0.5 (its largest value is 0.29), "
                            "so nothing is foreground"]
    assert not result.output.any()
    passed = passthrough_pair(tmp_path / "im.png", tmp_path / "faint.png", mode="auto", output_kind="soft",
                              threshold=None, image_name="im.png", mask_name="faint.png")
    assert passed.notes == result.notes


def test_empty_full_and_ordinary_masks_get_no_faint_note(tmp_path: Path) -> None:
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(tmp_path / "im.png")
    for name, mask in (("zero", np.zeros((12, 16), np.uint8)), ("ok", object_mask()),
                       ("half", object_mask() // 255 * 128)):
        Image.fromarray(mask.astype(np.uint8)).save(tmp_path / f"{name}.png")
        result = refine_files(FlatRefiner(), tmp_path / "im.png", tmp_path / f"{name}.png", get_preset("balanced"))
        assert result.notes == [], name


def test_cli_warns_on_a_faint_mask(tiny_weights: Path, tmp_path: Path) -> None:
    Image.fromarray(np.full((96, 128, 3), 90, np.uint8)).save(tmp_path / "im.png")
    mask = np.zeros((96, 128, 3), np.uint8)
    mask[24:72, 32:96] = (0, 0, 255)  # blue: 0.11 by luminance, 1.0 by brightest channel
    Image.fromarray(mask).save(tmp_path / "blue.png")
    faint = np.zeros((96, 128), np.uint16)
    faint[24:72, 32:96] = 25500
    faint[24:72, 32] = 20000  # a second level: 0 and one value alone would be a binary mask
    cv2.imwrite(str(tmp_path / "faint16.png"), faint)

    blue = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "blue.png"), "-o",
                               str(tmp_path / "o.png"), "-w", str(tiny_weights), "-d", "cpu"])
    weak = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "faint16.png"), "-o",
                               str(tmp_path / "o16.png"), "-w", str(tiny_weights), "-d", "cpu"])

    assert blue.exit_code == 0 and "nothing is foreground" not in blue.stderr
    assert np.asarray(Image.open(tmp_path / "o.png")).max() > 127
    assert weak.exit_code == 0, weak.output
    assert "faint16.png: no pixel of the mask is above 0.5 (its largest value is 0.38)" in weak.stderr


# ---------------------------------------------------------------------------------------------
# Header-only probing


def png_with_late_exif(image: Image.Image, orientation: int) -> bytes:
    """PNG bytes of ``image`` with an eXIf chunk after the image data (just before IEND)."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    payload = payload[6:] if payload.startswith(b"Exif\x00\x00") else payload
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + payload) & 0xFFFFFFFF)
    end = data.rindex(b"IEND") - 4
    return data[:end] + chunk + data[end:]


def test_probe_decodes_no_pixel_of_a_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(object_mask()).save(tmp_path / "m.png")
    (tmp_path / "late.png").write_bytes(png_with_late_exif(Image.fromarray(object_mask()), 6))

    def refuse(self: Image.Image) -> None:
        raise AssertionError("the probe decoded pixels")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", refuse)
    plain = probe_image(tmp_path / "m.png")
    late = probe_image(tmp_path / "late.png")

    assert (plain.width, plain.height, plain.orientation) == (16, 12, 1)
    assert (late.width, late.height, late.orientation) == (12, 16, 6)


def test_late_exif_is_honoured_by_probe_and_read_alike(tmp_path: Path) -> None:
    mask = object_mask()
    data = png_with_late_exif(Image.fromarray(mask), 8)
    (tmp_path / "late.png").write_bytes(data)

    header = probe_image(tmp_path / "late.png")
    from_bytes = probe_image(data)
    read = read_mask(tmp_path / "late.png")

    assert header.orientation == from_bytes.orientation == read.orientation == 8
    assert (header.height, header.width) == read.shape == (16, 12)
    assert np.array_equal(read.values, np.rot90(mask, 1))


def test_probe_leaves_a_truncated_png_to_the_decoder(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80), dtype=np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])

    assert probe_image(tmp_path / "trunc.png").shape == (60, 80)
    with pytest.raises(ImageReadError, match="trunc.png: "):
        read_mask(tmp_path / "trunc.png")


# ---------------------------------------------------------------------------------------------
# Unsupported TIFF layouts


@pytest.mark.parametrize(("values", "layout"), [
    (np.zeros((4, 4), np.float64), "1 channel of 64-bit floating-point"),
    (np.zeros((4, 4, 3), np.float32), "3 channels of 32-bit floating-point"),
])
def test_unsupported_float_tiff_says_what_it_holds(tmp_path: Path, values: np.ndarray, layout: str) -> None:
    cv2.imwrite(str(tmp_path / "f.tif"), values)
    expected = (f"f.tif: this TIFF's sample format ({layout}) is not supported; crm reads floating-point masks "
                "and photos only as 32-bit single-channel TIFFs")
    for read in (probe_image, read_mask, read_image):
        with pytest.raises(ImageReadError, match="^.*" + expected.replace("(", r"\(").replace(")", r"\)") + "$"):
            read(tmp_path / "f.tif")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, while it tries the bad TIFF
def test_unrecognised_file_keeps_its_message(tmp_path: Path) -> None:
    (tmp_path / "x.tif").write_bytes(b"II*\x00" + b"\xff" * 20)
    (tmp_path / "y.png").write_bytes(b"hello")
    for name in ("x.tif", "y.png"):
        with pytest.raises(ImageReadError, match=f"{name}: not a recognised image file"):
            probe_image(tmp_path / name)


# ---------------------------------------------------------------------------------------------
# Pipes given as paths


def feed_pipe(data: bytes) -> str:
    """A /dev/fd path of a pipe that a thread fills with ``data`` (as `<(cat file)` does)."""
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb") as handle:
            handle.write(data)

    threading.Thread(target=write, daemon=True).start()
    return f"/dev/fd/{read_end}"


def test_a_pipe_path_is_probed_and_read_from_one_read(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(object_mask()).save(buffer, "PNG")
    path = feed_pipe(buffer.getvalue())
    try:
        header = probe_image(path)
        first = read_mask(path)
        again = read_mask(path)
    finally:
        os.close(int(path.rsplit("/", 1)[1]))
    assert header.shape == first.shape == (12, 16)
    assert np.array_equal(first.values, object_mask()) and np.array_equal(again.values, object_mask())


def test_only_the_last_few_pipes_are_kept(tmp_path: Path) -> None:
    from crm_cli import image_sources

    buffer = io.BytesIO()
    Image.fromarray(object_mask()).save(buffer, "PNG")
    paths = [feed_pipe(buffer.getvalue()) for _ in range(image_sources._PIPES_KEPT + 3)]
    try:
        for path in paths:
            assert np.array_equal(read_mask(path).values, object_mask())
        assert len(image_sources._PIPE_BYTES) == image_sources._PIPES_KEPT
        assert np.array_equal(read_mask(paths[-1]).values, object_mask())  # the newest is still kept
    finally:
        for path in paths:
            os.close(int(path.rsplit("/", 1)[1]))


def test_a_named_fifo_is_probed_and_read(tmp_path: Path) -> None:
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(tmp_path / "im.png")
    buffer = io.BytesIO()
    Image.fromarray(object_mask()).save(buffer, "PNG")
    fifo = tmp_path / "mask.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with open(fifo, "wb") as handle:
            handle.write(buffer.getvalue())

    threading.Thread(target=write, daemon=True).start()
    header = probe_image(fifo)
    _, read, _ = read_pair(tmp_path / "im.png", fifo)
    assert header.shape == read.shape == (12, 16)
    assert np.array_equal(read.values, object_mask())


# ---------------------------------------------------------------------------------------------
# Output names that cannot hold a label map


def test_label_map_to_webp_is_a_usage_error_like_soft16(tiny_weights: Path, tmp_path: Path) -> None:
    Image.fromarray(np.full((96, 128, 3), 90, np.uint8)).save(tmp_path / "im.png")
    ids = np.zeros((96, 128), np.uint16)
    ids[10:40, 10:50], ids[50:90, 60:120] = 1, 2
    cv2.imwrite(str(tmp_path / "ids16.png"), ids)
    palette_png(tmp_path / "pal.png", ids.astype(np.uint8), VOC_COLOURS)
    Image.fromarray(object_mask(96, 128)).save(tmp_path / "m.png")
    base = ["-w", str(tiny_weights), "-d", "cpu"]

    for mask, extra in (("ids16.png", []), ("pal.png", []), ("m.png", ["-k", "soft16"])):
        out = tmp_path / "o.webp"
        result = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / mask), "-o", str(out),
                                     *base, *extra])
        assert result.exit_code == 2, (mask, result.output)
        assert "--help" in result.stderr and "device:" not in result.stderr and not out.exists()
