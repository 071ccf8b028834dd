"""A 16-bit photo's cut-out in 16 bits (session 41): as PNG, the cut-out of a 16-bit photo carries the
file's own 16-bit values, an alpha of round(p * 65535), the photo's colour profile and batch's settings
text; other formats (and the API's default, ``cutout_bits=8``) keep the 8-bit cut-out and its note."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import flat, synthetic_scene
from PIL import Image, ImageCms
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.engine import RefineResult
from crm_cli.outputs import render_output
from crm_cli.pipeline import refine_files
from crm_cli.presets import PRESETS
from crm_cli.writing import encode_image, read_png_text, write_png

runner = CliRunner()
H, W = 96, 128


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def chunk_types(png: bytes) -> list[bytes]:
    """The chunk types of PNG bytes in order, each chunk's CRC checked."""
    types, offset = [], 8
    while offset < len(png):
        length = int.from_bytes(png[offset:offset + 4], "big")
        kind, data = png[offset + 4:offset + 8], png[offset + 8:offset + 8 + length]
        crc = int.from_bytes(png[offset + 8 + length:offset + 12 + length], "big")
        assert zlib.crc32(kind + data) == crc, kind
        types.append(kind)
        offset += 12 + length
    return types


def with_profile(png: bytes, profile: bytes) -> bytes:
    """PNG bytes with an iCCP chunk of ``profile`` put in after the header, written out by hand."""
    payload = b"ICC Profile\x00\x00" + zlib.compress(profile)
    chunk = len(payload).to_bytes(4, "big") + b"iCCP" + payload + zlib.crc32(b"iCCP" + payload).to_bytes(4, "big")
    return png[:33] + chunk + png[33:]  # signature (8) + IHDR (12 + 13)


def write_photo16(path: Path, profile: bytes | None = None, grey: bool = False) -> np.ndarray:
    """A 16-bit PNG photo using the whole 16-bit range (RGB, or grey), optionally with a colour
    profile; returns its values as RGB uint16 (H, W, 3)."""
    image, _ = synthetic_scene(H, W, seed=5)
    low_bits = (np.arange(W) % 7)[None, :, None]  # what an 8-bit copy lacks
    values = (image.astype(np.int32) * 257 - low_bits).clip(0, 65535).astype(np.uint16)
    if grey:
        values[..., 1] = values[..., 2] = values[..., 0]
        ok, encoded = cv2.imencode(".png", values[..., 0])
    else:
        ok, encoded = cv2.imencode(".png", values[..., ::-1])
    assert ok
    data = encoded.tobytes()
    path.write_bytes(with_profile(data, profile) if profile else data)
    return values


def write_mask(path: Path) -> Path:
    _, gt = synthetic_scene(H, W, seed=5)
    Image.fromarray(gt).save(path)
    return path


class CoarseRefiner:
    """Returns the coarse mask as the refinement (the model is not what these tests are about)."""

    def refine_detailed(self, image: np.ndarray, coarse: np.ndarray, preset: object = None) -> RefineResult:
        return RefineResult(probability=coarse.astype(np.float32), ratios=(1.0,))


def test_a_16bit_cutout_alpha_is_the_probability_on_the_16bit_scale() -> None:
    rgb = np.array([[[0, 1, 65535], [300, 40000, 7]]], np.uint16)
    probability = np.array([[0.25, 0.5]], np.float32)
    cut = render_output("cutout", probability, image=rgb)
    # 0.25 * 65535 = 16383.75 -> 16384; 0.5 * 65535 = 32767.5 -> 32768 (NumPy rounds half to even)
    assert cut.dtype == np.uint16 and cut.shape == (1, 2, 4)
    assert cut[..., 3].tolist() == [[16384, 32768]]
    assert np.array_equal(cut[..., :3], rgb)
    eight = render_output("cutout", probability, image=(rgb >> 8).astype(np.uint8))
    assert eight.dtype == np.uint8 and eight[..., 3].tolist() == [[64, 128]]  # 63.75 -> 64, 127.5 -> 128
    with pytest.raises(ValueError, match="does not match mask size"):
        render_output("cutout", np.zeros((2, 2), np.float32), image=rgb)


def test_a_16bit_rgba_png_keeps_every_value_its_profile_and_text() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 65536, size=(20, 30, 4), dtype=np.uint16)
    profile = srgb_profile()
    png = encode_image(rgba, icc_profile=profile, text={"crm": "settings 1", "Comment": "x"})

    decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.dtype == np.uint16 and np.array_equal(cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA), rgba)
    types = chunk_types(png)
    assert types[0] == b"IHDR" and types[-1] == b"IEND"
    assert types.index(b"iCCP") < types.index(b"IDAT") and types.count(b"tEXt") == 2
    assert max(i for i, t in enumerate(types) if t == b"tEXt") < types.index(b"IDAT")
    with Image.open(io.BytesIO(png)) as opened:  # another reader finds the profile and the text
        assert opened.info["icc_profile"] == profile and opened.text == {"crm": "settings 1", "Comment": "x"}
    assert chunk_types(encode_image(rgba)).count(b"iCCP") == 0


def test_a_16bit_rgba_image_is_refused_where_it_cannot_be_written(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint16)
    for fmt in ("TIFF", "WEBP", "JPEG"):
        with pytest.raises(ValueError, match=f"written as PNG only, not {fmt}"):
            encode_image(rgba, fmt=fmt)
    with pytest.raises(ValueError, match="Latin-1"):
        encode_image(rgba, text={"crm": "\u2603"})
    write_png(tmp_path / "ok.png", rgba, text={"crm": "stamp"})
    assert read_png_text(tmp_path / "ok.png", "crm") == "stamp"


@pytest.mark.parametrize("grey", [False, True], ids=["rgb", "grey"])
def test_refine_files_cuts_a_16bit_photo_out_in_16_bits_when_asked(tmp_path: Path, grey: bool) -> None:
    profile = srgb_profile()  # one per test: Pillow stamps the profile with the second it was made
    values = write_photo16(tmp_path / "p.png", profile, grey=grey)
    mask = write_mask(tmp_path / "m.png")
    _, gt = synthetic_scene(H, W, seed=5)

    deep = refine_files(CoarseRefiner(), tmp_path / "p.png", mask, PRESETS["balanced"], output_kind="cutout",
                        cutout_bits=16)
    assert deep.output.dtype == np.uint16 and np.array_equal(deep.output[..., :3], values)
    assert np.array_equal(deep.output[..., 3], np.where(gt > 127, 65535, 0))
    assert not any("cut-out is written" in note for note in deep.notes)
    assert deep.icc_profile == profile

    plain = refine_files(CoarseRefiner(), tmp_path / "p.png", mask, PRESETS["balanced"], output_kind="cutout")
    assert plain.output.dtype == np.uint8
    api_hint = "cut-out is written with 8-bit colour and alpha; refine_files(..., cutout_bits=16) keeps 16 bits"
    assert any(api_hint in note for note in plain.notes)  # the CLI's words name a .png output (below)
    # A mask output reads no 16-bit copy and is the same either way.
    soft = refine_files(CoarseRefiner(), tmp_path / "p.png", mask, PRESETS["balanced"], cutout_bits=16)
    assert soft.output.dtype == np.uint8 and soft.output.ndim == 2
    with pytest.raises(ValueError, match="cutout_bits must be 8 or 16"):
        refine_files(CoarseRefiner(), tmp_path / "p.png", mask, PRESETS["balanced"], cutout_bits=12)


def test_an_8bit_photo_cut_out_with_16_bits_asked_stays_8bit(tmp_path: Path) -> None:
    image, gt = synthetic_scene(H, W, seed=5)
    Image.fromarray(image).save(tmp_path / "p.png")
    result = refine_files(CoarseRefiner(), tmp_path / "p.png", write_mask(tmp_path / "m.png"), PRESETS["balanced"],
                          output_kind="cutout", cutout_bits=16)
    assert result.output.dtype == np.uint8 and np.array_equal(result.output[..., :3], image)
    assert not result.notes


def test_crm_refine_writes_a_16bit_cutout_as_png_and_8_bits_elsewhere(tiny_weights: Path, tmp_path: Path) -> None:
    profile = srgb_profile()
    values = write_photo16(tmp_path / "p.png", profile)
    mask = write_mask(tmp_path / "m.png")
    base = ["refine", str(tmp_path / "p.png"), str(mask), "-w", str(tiny_weights), "-d", "cpu", "-k", "cutout"]

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "cut.png")])
    assert result.exit_code == 0, result.output
    cut = cv2.imread(str(tmp_path / "cut.png"), cv2.IMREAD_UNCHANGED)
    assert cut.dtype == np.uint16 and np.array_equal(cut[..., 2::-1], values)
    assert "cut-out is written" not in flat(result.stderr)
    with Image.open(tmp_path / "cut.png") as opened:
        assert opened.info["icc_profile"] == profile

    result = runner.invoke(app, [*base, "-o", "-"])
    assert result.exit_code == 0, result.stderr
    piped = cv2.imdecode(np.frombuffer(result.stdout_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(piped, cut)

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "cut.tif")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "cut.tif") as opened:
        assert opened.mode == "RGBA"  # 8-bit
    assert "a 16-bit photo, but its cut-out is written with 8-bit colour and alpha; name the output .png to keep " \
           "16 bits" in flat(result.stderr)


def test_batch_records_a_cutouts_depth_and_redoes_old_cutouts_of_16bit_photos_only(tiny_weights: Path,
                                                                                    tmp_path: Path) -> None:
    import json

    from batch_records import record_of

    from crm_cli.cli.batch import SETTINGS_KEYWORD

    data, out = tmp_path / "shot", tmp_path / "out"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    values = write_photo16(data / "images" / "deep.png")
    image, _ = synthetic_scene(H, W, seed=5)
    Image.fromarray(image).save(data / "images" / "plain.png")
    for name in ("deep", "plain"):
        write_mask(data / "masks" / f"{name}.png")
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "-k", "cutout"]

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert record_of(out / "deep.png")["cutout_bits"] == record_of(out / "plain.png")["cutout_bits"] == 16
    deep = cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint16 and np.array_equal(deep[..., 2::-1], values)

    # Both as the code before session 41 left them: 8-bit cut-outs whose records name no depth.
    for name in ("deep", "plain"):
        record = record_of(out / f"{name}.png")
        del record["cutout_bits"]
        write_png(out / f"{name}.png", np.zeros((H, W, 4), np.uint8),
                  text={SETTINGS_KEYWORD: json.dumps(record, sort_keys=True, separators=(",", ":"))})
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 output was made with other settings" in flat(result.stderr)
    assert np.array_equal(cv2.imread(str(out / "deep.png"), cv2.IMREAD_UNCHANGED), deep)  # redone in 16 bits
    assert not cv2.imread(str(out / "plain.png"), cv2.IMREAD_UNCHANGED).any()  # an 8-bit photo's: the same, kept


def test_a_16bit_png_without_chunks_is_opencvs_encoding_at_the_chosen_level() -> None:
    from crm_cli.writing import PNG_COMPRESS_LEVEL

    ramp = np.linspace(0, 65535, 256 * 192, dtype=np.float64).reshape(192, 256).astype(np.uint16)
    rgba = np.dstack([ramp, ramp[::-1], ramp[:, ::-1], ramp])
    ours = encode_image(rgba)
    bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
    assert ours == cv2.imencode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESS_LEVEL])[1].tobytes()
    assert np.array_equal(cv2.imdecode(np.frombuffer(ours, np.uint8), cv2.IMREAD_UNCHANGED), bgra)
