"""Session 55: the audits' leftovers and findings. Each test of a mend fails on the code before it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import write_training_pairs
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def flat(text: str) -> str:
    """``text`` with Rich's line wrapping undone."""
    return " ".join(text.split())


def _unsearchable_below(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Stat of everything under ``folder`` raises PermissionError, as when a folder on the way
    cannot be searched (Python 3.11's exists() and is_dir() raise then); root searches everything, so
    it is stood in for."""
    real_stat = Path.stat
    prefix = str(folder)

    def stat(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        if str(self).startswith(prefix + os.sep):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "stat", stat)


@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--dry-run"]])
def test_batch_output_under_a_folder_that_cannot_be_searched_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      extra: list[str]) -> None:
    """Session 54's leftover: crm batch -o under a folder the user cannot search stat'ed the output folder
    with is_dir() before the write check, a traceback; and each pair was first warned of as "incomplete
    (cannot be read: Permission denied)", an output nobody could see."""
    folder = write_training_pairs(tmp_path / "in", 1)  # images/p00.jpg, masks/p00.png
    out = tmp_path / "locked" / "out"
    _unsearchable_below(monkeypatch, tmp_path / "locked")
    result = runner.invoke(app, ["batch", str(folder), "-o", str(out), "--json", *extra])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    assert record["error"] == f"cannot write into {out}: permission denied on the way to it"
    assert "incomplete" not in result.stderr
    assert not (tmp_path / "locked").exists()


def test_batch_refines_again_an_output_it_cannot_read(tiny_weights: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An output file that exists but cannot be opened is still named as incomplete and made again."""
    import crm_cli.writing as writing

    folder = write_training_pairs(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "p00.png").write_bytes(b"x")
    real_open = open

    def guarded_open(file: object, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if os.fspath(file) == str(out / "p00.png") and "r" in str(args[0] if args else kwargs.get("mode", "r")):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(writing, "open", guarded_open, raising=False)
    result = runner.invoke(app, ["batch", str(folder), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    message = f"{out / 'p00.png'} is incomplete (cannot be read: Permission denied); refining p00 again"
    assert message in flat(result.stderr)
    assert (out / "p00.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_16bit_white_is_zero_tiff_is_read_with_0_as_white(tmp_path: Path) -> None:
    """The formats audit: a 16-bit TIFF stored white-is-zero (PhotometricInterpretation 0: MONOCHROME1
    scanners, X-ray detectors) was read as stored, inverted, as Pillow turns over only 1- to 8-bit ones:
    a mask's object became its background (IoU 0 with exit 0), a photo its negative."""
    from PIL import Image

    from crm_cli.imageio import read_image, read_mask

    stored = np.full((20, 30), 65535, np.uint16)  # white is 0: this is black...
    stored[5:15, 10:20] = 0  # ...and this, the object, white
    stored[0, 0] = 65535 - 1000
    Image.fromarray(stored).save(tmp_path / "w16.tif", tiffinfo={262: 0})
    mask = read_mask(tmp_path / "w16.tif")
    assert mask.kind == "gray16" and mask.values[10, 15] == 65535 and mask.values[2, 2] == 0
    assert mask.values[0, 0] == 1000
    photo = read_image(tmp_path / "w16.tif")
    assert photo[10, 15].tolist() == [255, 255, 255] and photo[2, 2].tolist() == [0, 0, 0]


def test_a_float_white_is_zero_tiff_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    from crm_cli.imageio import ImageReadError, read_mask

    Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path / "wf.tif", tiffinfo={262: 0})
    with pytest.raises(ImageReadError, match=r"wf\.tif: its grey levels are stored with 0 as white"):
        read_mask(tmp_path / "wf.tif")


def test_a_signed_8bit_tiff_with_negatives_is_refused(tmp_path: Path) -> None:
    """The formats audit: a signed 8-bit TIFF (SampleFormat 2) was read as unsigned bytes, -128..-1 as
    128..255, with no word (a mask of -128 background and 127 object read inverted); signed 16-bit ones
    were already refused. One with no negative value reads as it is."""
    from PIL import Image

    from crm_cli.imageio import ImageReadError, read_image, read_mask

    signed = np.full((8, 8), -128, np.int8)
    signed[2:6, 2:6] = 127
    Image.fromarray(signed.view(np.uint8)).save(tmp_path / "s8.tif", tiffinfo={339: 2})
    for reader in (read_mask, read_image):
        with pytest.raises(ImageReadError, match=r"s8\.tif: this signed 8-bit TIFF holds values below 0 "
                                                 r"\(from -128 to 127\)"):
            reader(tmp_path / "s8.tif")
    positive = np.zeros((8, 8), np.int8)
    positive[2:6, 2:6] = 100
    Image.fromarray(positive.view(np.uint8)).save(tmp_path / "p8.tif", tiffinfo={339: 2})
    assert read_mask(tmp_path / "p8.tif").values[3, 3] == 100


def test_a_lossy_avif_mask_of_small_values_is_refused(tmp_path: Path) -> None:
    """The formats audit: a 0/1 mask saved as (lossy) AVIF came out of compression as 0, 1 and 2 and was
    refined as two labels, exit 0; JPEG and lossy WebP ones were already refused."""
    from PIL import Image, features

    from crm_cli.imageio import ImageReadError, read_mask

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    values = np.zeros((64, 64), np.uint8)
    values[16:48, 10:40] = 1
    values[20:30, 45:60] = 1
    Image.fromarray(values).save(tmp_path / "m.avif", quality=50)
    held = np.unique(np.asarray(Image.open(tmp_path / "m.avif").convert("L")))
    assert held.size > 2, held  # what the codec did to the 0/1 values
    with pytest.raises(ImageReadError, match=r"m\.avif: an AVIF mask of small values"):
        read_mask(tmp_path / "m.avif")


def test_batch_pairs_an_avif_photo(tmp_path: Path) -> None:
    """The formats audit: crm refine read an AVIF photo, but crm batch left it out and blamed its mask
    ("1 mask without an image ignored")."""
    from crm_cli.pairing import scan_pairs

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / "b.avif").write_bytes(b"")
    (tmp_path / "masks" / "b.png").write_bytes(b"")
    found = scan_pairs(tmp_path)
    assert [(pair.image.name, pair.mask.name) for pair in found.pairs] == [("b.avif", "b.png")]


def test_a_heic_file_is_named_as_one(tmp_path: Path) -> None:
    """The formats audit: an iPhone HEIC photo was "not a recognised image file"."""
    from crm_cli.imageio import ImageReadError, read_image

    (tmp_path / "p.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(ImageReadError, match=r"p\.heic: an HEIC file, which this installation cannot decode"):
        read_image(tmp_path / "p.heic")


def test_a_psd_photo_is_read_whole(tmp_path: Path) -> None:
    """The formats audit: a PSD failed with "cannot decode image (attempt to seek outside sequence)": the
    frame count put the file back at frame 0, which PSD (numbering its layers from 1) has not."""
    import struct

    from crm_cli.imageio import read_image

    height, width = 6, 8
    planes = [np.full((height, width), value, np.uint8) for value in (200, 100, 50)]
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    data = header + struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", 0)
    data += struct.pack(">H", 0) + b"".join(plane.tobytes() for plane in planes)  # raw composite, planar
    (tmp_path / "p.psd").write_bytes(data)
    photo = read_image(tmp_path / "p.psd")
    assert photo.shape == (height, width, 3) and photo[2, 3].tolist() == [200, 100, 50]


def test_a_soft_mask_in_an_identity_grey_palette_reads_as_a_soft_mask(tmp_path: Path) -> None:
    """The formats audit: a soft matte saved as a palette PNG whose grey entries equal their indices
    (Pillow's convert("P") of a grey image, MATLAB's imwrite(X, gray(256))) was read by index as a label
    map of 214 ids: 145 s of refinement, every non-zero pixel foreground, ids written back. The same
    pixels as a grey PNG were a soft mask. Class ids in such a palette stay a palette label map."""
    import cv2
    from PIL import Image

    from crm_cli.imageio import read_mask

    yy, xx = np.mgrid[0:96, 0:128]
    matte = np.clip((40 - np.hypot(yy - 48, xx - 64)) * 16 + 128, 0, 255).astype(np.uint8)  # a soft disc
    Image.fromarray(matte).convert("P").save(tmp_path / "soft.png")
    opened = Image.open(tmp_path / "soft.png")
    assert opened.mode == "P" and opened.getpalette()[3 * 77:3 * 78] == [77, 77, 77]  # identity grey
    soft = read_mask(tmp_path / "soft.png")
    assert soft.kind == "gray8" and not soft.is_label_map()
    assert np.array_equal(soft.values, matte)
    ids = np.zeros((96, 128), np.uint8)
    ids[10:40, 10:60], ids[50:90, 70:120] = 3, 7
    Image.fromarray(ids).convert("P").save(tmp_path / "ids.png")
    labels = read_mask(tmp_path / "ids.png")
    assert labels.kind == "palette" and labels.is_label_map() and labels.label_ids == [3, 7]
    assert cv2.countNonZero((soft.values > 127).astype(np.uint8)) == int((matte > 127).sum())


VOC_CAT, VOC_DOG, VOC_PLANT = (64, 0, 0), (64, 0, 128), (0, 64, 0)


def _voc_as_rgb() -> tuple[np.ndarray, np.ndarray]:
    """A VOC label map saved as RGB colours (cat, dog and potted plant on black), and its class of each pixel."""
    classes = np.zeros((96, 128), np.uint8)
    classes[10:40, 10:50], classes[50:90, 60:120], classes[5:30, 80:110] = 1, 2, 3
    colours = np.array([(0, 0, 0), VOC_CAT, VOC_DOG, VOC_PLANT], np.uint8)
    return colours[classes], classes


def test_a_colour_coded_label_map_is_read_as_one_object(tmp_path: Path) -> None:
    """The formats audit: a VOC (or Cityscapes) label map saved as RGB colours was read by its brightest
    channel, so the cat (64, 0, 0) read 0.25, background, and `crm score` gave IoU 0.0 against a perfect
    prediction. Every colour but black is now the object (0/255); its classes are not told apart (their ids
    would be per-file ranks: the review)."""
    from PIL import Image

    from crm_cli.imageio import read_mask

    rgb, classes = _voc_as_rgb()
    Image.fromarray(rgb).save(tmp_path / "voc.png")
    mask = read_mask(tmp_path / "voc.png")
    assert mask.kind == "rgb" and not mask.is_label_map()
    assert np.array_equal(mask.values, np.where(classes > 0, 255, 0).astype(np.uint8))
    (tmp_path / "voc.jpg").write_bytes(_jpeg(rgb))  # lossy: its colours are not exact, so no such map
    assert read_mask(tmp_path / "voc.jpg").values.max() < 200


def _jpeg(rgb: np.ndarray) -> bytes:
    """``rgb`` as a JPEG of quality 95."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _soft_disc(colour: tuple[int, int, int], background: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """A disc of ``colour`` on ``background`` with 6-px soft edges (anti-aliased), 160x160."""
    yy, xx = np.mgrid[0:160, 0:160]
    alpha = np.clip((60 - np.hypot(yy - 80, xx - 80)) / 6 + 0.5, 0, 1)[..., None]
    return np.round(alpha * np.array(colour) + (1 - alpha) * np.array(background)).astype(np.uint8)


@pytest.mark.parametrize("colour", [(255, 0, 0), (255, 140, 0), (0, 160, 140), (46, 243, 55)])
def test_colour_masks_of_one_colour_keep_the_brightest_channel(colour: tuple[int, int, int]) -> None:
    """The review: an orange or teal disc with soft edges (its dark edge shades, (5, 3, 0) beside
    (255, 140, 0), differ in hue by rounding) was read as a label map of 248 ids (298 s). Shades of the
    brightest colour are one object's, read by the brightest channel as before."""
    from crm_cli.mask_decoding import _colour_mask

    rgb = _soft_disc(colour)
    mask = _colour_mask(rgb, None)
    assert mask.kind == "rgb" and np.array_equal(mask.values, rgb.max(axis=2))


def test_anti_aliased_and_photo_colours_are_no_colour_coded_map() -> None:
    """An object anti-aliased onto a coloured background holds blends found in no region; a photo holds
    thousands of colours: both keep the brightest channel."""
    from conftest import synthetic_scene

    from crm_cli.mask_decoding import _colour_mask

    on_blue = _soft_disc((255, 140, 0), (0, 0, 200))
    assert np.array_equal(_colour_mask(on_blue, None).values, on_blue.max(axis=2))
    photo, _ = synthetic_scene(96, 128)
    assert np.array_equal(_colour_mask(photo, None).values, photo.max(axis=2))


def test_score_and_refine_read_a_colour_coded_label_map(tiny_weights: Path, tmp_path: Path) -> None:
    import cv2
    from PIL import Image

    rgb, classes = _voc_as_rgb()
    Image.fromarray(rgb).save(tmp_path / "gt.png")
    cv2.imwrite(str(tmp_path / "pred.png"), np.where(classes > 0, 255, 0).astype(np.uint8))
    scored = runner.invoke(app, ["score", str(tmp_path / "pred.png"), str(tmp_path / "gt.png"), "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["iou"] == 1.0  # was 0.0: the GT's classes read as background
    photo = np.full((96, 128, 3), 40, np.uint8)
    photo[classes > 0] = 220
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    result = runner.invoke(app, ["refine", str(tmp_path / "photo.png"), str(tmp_path / "gt.png"), "-o",
                                 str(tmp_path / "out.png"), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "binary"
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert written.ndim == 2 and (written[classes == 1] > 127).mean() > 0.9  # the cat is kept


def _with_trns(png: bytes, payload: bytes) -> bytes:
    """``png`` with a tRNS chunk of ``payload`` put before its first IDAT chunk."""
    import struct
    import zlib

    at = png.index(b"IDAT") - 4
    chunk = struct.pack(">I", len(payload)) + b"tRNS" + payload
    return png[:at] + chunk + struct.pack(">I", zlib.crc32(chunk[4:]) & 0xFFFFFFFF) + png[at:]


def test_a_16bit_colour_soft_mask_with_a_key_colour_keeps_its_levels(tmp_path: Path) -> None:
    """The formats audit: a grey soft matte saved as a 16-bit RGB PNG with black as its tRNS key colour was
    read by OpenCV's alpha (0 on black, opaque elsewhere): binarised, every faint pixel foreground (13,669 px
    against 11,289 over half). Pillow's 8-bit files with the same chunk kept their levels, by the rule that a
    transparency beside soft levels is not the mask."""
    import cv2

    from crm_cli.imageio import read_mask

    yy, xx = np.mgrid[0:96, 0:128]
    matte = np.clip((30 - np.hypot(yy - 48, xx - 64)) / 12 + 0.5, 0, 1)
    levels = np.round(matte * 65535).astype(np.uint16)
    png = cv2.imencode(".png", np.dstack([levels] * 3))[1].tobytes()
    (tmp_path / "soft.png").write_bytes(_with_trns(png, bytes(6)))  # black is transparent
    assert cv2.imread(str(tmp_path / "soft.png"), cv2.IMREAD_UNCHANGED).shape[2] == 4  # OpenCV's alpha
    mask = read_mask(tmp_path / "soft.png")
    assert mask.kind == "gray16" and np.array_equal(mask.values, levels)


def _grey_alpha_tiff(pixels: np.ndarray, associated: bool) -> bytes:
    """An uncompressed little-endian TIFF of (H, W, 2) uint8 grey + alpha, its alpha premultiplied
    (ExtraSamples 1) or not (2); Pillow writes only the latter."""
    import struct

    height, width = pixels.shape[:2]
    data = pixels.tobytes()
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 2, 8 | 8 << 16), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 8), (277, 3, 1, 2), (278, 3, 1, height), (279, 4, 1, len(data)),
            (338, 3, 1, 1 if associated else 2)]
    directory = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *tag) for tag in tags) + bytes(4)
    return b"II*\x00" + struct.pack("<I", 8 + len(data)) + data + directory


def test_a_premultiplied_grey_photo_is_read(tmp_path: Path) -> None:
    """The formats audit: a grey + premultiplied alpha TIFF photo (Pillow's "La") failed with "conversion
    from La to L not supported", naming no file, after the model had loaded."""
    from PIL import Image

    from crm_cli.imageio import read_image

    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))
    alpha = np.full_like(grey, 255)
    alpha[:, :4] = 128
    (tmp_path / "la.tif").write_bytes(_grey_alpha_tiff(np.dstack([grey, alpha]), associated=True))
    assert Image.open(tmp_path / "la.tif").mode == "La"
    photo = read_image(tmp_path / "la.tif")
    assert photo.shape == (8, 16, 3)
    assert np.abs(photo[:, 4:, 0].astype(int) - grey[:, 4:]).max() <= 1  # opaque: the grey as it is


def test_a_png_with_a_damaged_metadata_chunk_is_read_with_a_note(tmp_path: Path) -> None:
    """The formats audit: a PNG whose tEXt chunk fails its checksum was "not a recognised image file" to
    Pillow (libpng, OpenCV and browsers only warn). The chunk is dropped, with a note; a damaged image
    chunk is still an error."""
    import struct
    import zlib

    import cv2

    from crm_cli.imageio import ImageReadError, probe_image, read_mask_noted

    values = np.zeros((20, 30), np.uint8)
    values[5:15, 8:20] = 255
    png = cv2.imencode(".png", values)[1].tobytes()
    payload = b"Comment\x00made by a tool"
    chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
    crc = zlib.crc32(chunk[4:]) & 0xFFFFFFFF
    at = png.index(b"IDAT") - 4
    (tmp_path / "text.png").write_bytes(png[:at] + chunk + struct.pack(">I", crc ^ 1) + png[at:])
    assert probe_image(tmp_path / "text.png").width == 30
    mask, notes = read_mask_noted(tmp_path / "text.png")
    assert np.array_equal(mask.values, values)
    assert notes == [f"{tmp_path / 'text.png'}: its PNG metadata (tEXt) failed its checksum and was ignored"]
    damaged = bytearray(png)
    damaged[png.index(b"IDAT") + 6] ^= 0xFF  # a byte of the compressed pixels: IDAT's checksum fails
    (tmp_path / "idat.png").write_bytes(bytes(damaged))
    with pytest.raises(ImageReadError, match=r"idat\.png"):
        read_mask_noted(tmp_path / "idat.png")


@pytest.mark.parametrize("max_sample", [None, 4095])
def test_a_12bit_white_is_zero_frame_stays_12bit(tmp_path: Path, max_sample: int | None) -> None:
    """The review: a white-is-zero 16-bit TIFF holding a 12-bit detector's values was turned over on the
    16-bit scale (65535 - v), so every pixel lay above 61439: all white under --photo-bits 12, and a note
    that sent the user there. It is turned over on its own scale: MaxSampleValue, else the bits its values
    need."""
    from PIL import Image

    from crm_cli.imageio import read_photo

    stored = np.tile(np.linspace(0, 4095, 64).round().astype(np.uint16), (8, 1))  # 0 = white, 4095 = black
    info = {262: 0} if max_sample is None else {262: 0, 281: max_sample}
    Image.fromarray(stored).save(tmp_path / "frame.tif", tiffinfo=info)
    for bits in (None, 12):
        photo = read_photo(tmp_path / "frame.tif", photo_bits=bits)
        assert photo.pixels[0, [0, 63], 0].tolist() == [255, 0]
        assert 120 <= photo.pixels[0, 32, 0] <= 135
