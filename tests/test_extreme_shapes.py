"""Extreme image shapes and pixel depths, as industrial and medical pipelines make them: line-scan
strips, images too small to refine, signed and narrow-window 16-bit photos, float photos, and an
output format too small for a strip. Tiny synthetic inputs in tmp_path; where a model runs, it is
the shipped default on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import ImageReadError, read_image, read_image_noted, read_mask

runner = CliRunner()


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def textured_scene(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels in [0, 1] (smooth texture, an ellipse brighter than its background) and the
    ellipse as a bool mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    inside = ((yy - height / 2) / (0.3 * height)) ** 2 + ((xx - width / 2) / (0.3 * width)) ** 2 <= 1
    texture = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 2)
    levels = np.where(inside, 0.65, 0.35) + 0.06 * texture / texture.std()
    return np.clip(cv2.GaussianBlur(levels.astype(np.float32), (0, 0), 0.8), 0, 1), inside


def blocky(inside: np.ndarray, cell: int = 8) -> np.ndarray:
    """A low-resolution network's mask of ``inside``: 0/255, in cells of ``cell`` px."""
    height, width = inside.shape
    small = cv2.resize(inside.astype(np.uint8) * 255, (width // cell, height // cell), interpolation=cv2.INTER_AREA)
    return (cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST) > 127).astype(np.uint8) * 255


# ---------------------------------------------------------------------------------------------
# Pixel depth: integer photos outside 0..65535, narrow windows of a wide scale


def test_signed_photo_with_negative_values_is_refused_not_clipped_black(tmp_path: Path) -> None:
    # A CT slice in Hounsfield units: everything below 0 (air, fat, water) was clipped to black.
    hounsfield = np.tile(np.linspace(-1000, 1000, 64, dtype=np.float32), (48, 1)).astype(np.int32)
    Image.fromarray(hounsfield, "I").save(tmp_path / "ct.tif")

    with pytest.raises(ImageReadError) as caught:
        read_image(tmp_path / "ct.tif")
    message = str(caught.value)
    assert str(tmp_path / "ct.tif") in message and "-1000 to 1000" in message and "\n" not in message


def test_cli_refuses_a_signed_photo_in_one_line(tmp_path: Path) -> None:
    values = np.tile(np.linspace(-500, 3000, 160, dtype=np.float32), (120, 1)).astype(np.int32)
    Image.fromarray(values, "I").save(tmp_path / "ct.tif")
    mask = np.zeros((120, 160), np.uint8)
    mask[30:90, 40:120] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")

    result = runner.invoke(app, ["refine", str(tmp_path / "ct.tif"), str(tmp_path / "m.png"), "-o",
                                 str(tmp_path / "out.png"), "--device", "cpu"])

    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "ct.tif" in errors[0] and "Traceback" not in result.output
    assert not (tmp_path / "out.png").exists()


def test_narrow_window_of_a_16bit_photo_is_stretched_with_a_warning(tmp_path: Path) -> None:
    # Values 30000-34000 of 65535 (a windowed X-ray, or signed data shifted by 32768): read on the
    # 16-bit scale they were 16 grey levels, and the model saw no edges.
    levels, _ = textured_scene(60, 80)
    window = (30000 + levels * 4000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "xray.png"), window)

    image, _, notes = read_image_noted(tmp_path / "xray.png")

    assert int(image.min()) == 0 and int(image.max()) == 255
    assert np.corrcoef(image[..., 0].ravel(), window.ravel())[0, 1] > 0.999
    assert len(notes) == 1 and "xray.png" in notes[0] and "stretched" in notes[0]


def test_narrow_float_photo_is_stretched_and_8bit_values_in_a_wide_file_are_not(tmp_path: Path) -> None:
    levels, _ = textured_scene(60, 80)
    Image.fromarray((0.4 + 0.2 * levels).astype(np.float32), "F").save(tmp_path / "f.tif")
    image, _, notes = read_image_noted(tmp_path / "f.tif")
    assert int(image.min()) == 0 and int(image.max()) == 255 and "stretched" in notes[0]

    # 8-bit values in a 16-bit file hold no more levels than they show: read as the 8-bit file.
    flat8 = (100 + levels * 20).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g16.png"), flat8.astype(np.uint16) * 257)
    image, _, notes = read_image_noted(tmp_path / "g16.png")
    np.testing.assert_array_equal(image[..., 0], flat8)
    assert notes == []


@pytest.mark.parametrize(("levels", "stretched"), [(63, True), (64, False)])
def test_a_photo_is_stretched_only_under_64_grey_levels(tmp_path: Path, levels: int, stretched: bool) -> None:
    # 16-bit values 257 * (100 .. 100 + levels - 1) plus 0..99 between them: read on the 16-bit
    # scale they are exactly `levels` grey levels, each merging about a hundred of the file's values.
    ramp = np.linspace(0, levels - 1, 200 * 50).round().astype(np.uint32).reshape(50, 200)
    values = ((100 + ramp) * 257 + np.arange(200 * 50).reshape(50, 200) % 100).astype(np.uint16)
    values[0, 0], values[-1, -1] = 100 * 257, (100 + levels - 1) * 257  # the range's two ends, exactly
    cv2.imwrite(str(tmp_path / "p.png"), values)

    image, _, notes = read_image_noted(tmp_path / "p.png")

    if stretched:
        assert (int(image.min()), int(image.max())) == (0, 255) and "63 levels of 256" in notes[0]
    else:
        assert (int(image.min()), int(image.max())) == (100, 100 + levels - 1) and notes == []


def test_cli_refines_a_narrow_window_16bit_photo(tmp_path: Path) -> None:
    levels, inside = textured_scene(150, 200)
    cv2.imwrite(str(tmp_path / "xray.png"), (30000 + levels * 4000).astype(np.uint16))
    coarse = blocky(inside)
    Image.fromarray(coarse).save(tmp_path / "m.png")

    result = runner.invoke(app, ["refine", str(tmp_path / "xray.png"), str(tmp_path / "m.png"), "-o",
                                 str(tmp_path / "out.png"), "--device", "cpu", "--json"])

    assert result.exit_code == 0, result.output
    assert "stretched" in result.stderr and json.loads(result.stdout)["kept_coarse"] == 0
    refined = np.asarray(Image.open(tmp_path / "out.png")) > 127
    assert refined.shape == inside.shape
    assert iou(refined, inside) > iou(coarse > 127, inside) + 0.01


# ---------------------------------------------------------------------------------------------
# Line-scan strips


def test_alignment_of_a_strip_does_not_depend_on_its_length() -> None:
    from crm_cli.schedule import _alignment_inputs, edge_alignment

    levels, inside = textured_scene(240, 1500)
    image = np.repeat((levels * 255).astype(np.uint8)[..., None], 3, axis=2)
    mask = blocky(inside) > 0
    # The same strip four times over: reduced by its long side, its 240 px became 120 and 60.
    long_image, long_mask = np.tile(image, (1, 4, 1)), np.tile(mask, (1, 4))

    assert _alignment_inputs(long_image, long_mask)[0].shape == (240, 6000)
    assert edge_alignment(long_image, long_mask) == pytest.approx(edge_alignment(image, mask), rel=0.05)

    def measured(height: int, width: int) -> tuple[int, ...]:
        return _alignment_inputs(np.zeros((height, width, 3), np.uint8), np.zeros((height, width), bool))[0].shape

    # Photos up to 4:1 with a short side of 512 px or more are reduced to 2048 px on the long side
    # as before: 4K, a 21:9 frame, a panorama.
    assert measured(2160, 3840) == (1152, 2048)
    assert measured(2160, 5040) == (878, 2048)
    assert measured(1000, 4000) == (512, 2048)
    # A strip keeps a short side of 512 px (or its own), within 4 x 2048^2 pixels.
    assert measured(1000, 8000) == (512, 4096)
    assert measured(300, 6000) == (300, 6000)
    assert measured(1024, 65535) == (512, 32768)
    assert measured(600, 65535) == (392, 42808)


def colour_strip(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 strip with a smooth colour texture (sigma 3 px) and an ellipse 100 levels
    brighter than its background, slightly blurred, and the ellipse as a bool mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    inside = ((yy - height / 2) / (0.3 * height)) ** 2 + ((xx - width / 2) / (0.3 * width)) ** 2 <= 1
    texture = cv2.GaussianBlur(rng.normal(0, 1, (height, width, 3)).astype(np.float32), (0, 0), 3)
    image = cv2.GaussianBlur(np.where(inside[..., None], 170, 70) + 20 * texture / texture.std(), (0, 0), 1.0)
    return np.clip(image, 0, 255).astype(np.uint8), inside


def test_line_scan_strip_with_a_blocky_mask_is_refined() -> None:
    from crm_cli import Refiner

    image, inside = colour_strip(240, 3000)
    coarse = blocky(inside)

    result = Refiner(device="cpu").refine_detailed(image, coarse)

    # Measured on the reduced strip, its blocky mask read as precise and the coarse mask was kept.
    assert not result.kept_coarse
    assert result.probability.shape == inside.shape
    assert iou(result.probability > 0.5, inside) > iou(coarse > 127, inside) + 0.01


def test_long_strips_run_their_final_stage_as_large_photos_do() -> None:
    from crm_cli.schedule import SMALL_FINAL_SCALE, choose_schedule

    ladder = (0.125, 0.25, 0.5, 1.0)

    def plan(height: int, width: int):  # noqa: ANN202
        levels, inside = textured_scene(height, width)
        image = np.repeat((levels * 255).astype(np.uint8)[..., None], 3, axis=2)
        return choose_schedule(blocky(inside) > 0, ladder, image, min_side=224)

    # No coarse stage fits any of them. A photo-sized one is enlarged and mirrored as before ...
    small = plan(300, 400)
    assert small.ratios == (SMALL_FINAL_SCALE,) and small.mirror
    # ... a strip of 1.8 MP is enlarged, not mirrored (as a 1.8 MP photo) ...
    middle = plan(300, 6000)
    assert middle.ratios == (SMALL_FINAL_SCALE,) and not middle.mirror
    # ... and one of 3.6 MP runs at ratio 1: enlarged and mirrored, a 65535x300 strip took 2.6 GB,
    # far beyond the memory crm estimates and checks before refining.
    large = plan(300, 12000)
    assert large.ratios == (1.0,) and not large.mirror


# ---------------------------------------------------------------------------------------------
# crm eval on images too small to refine; WebP and long strips


def test_eval_scores_images_too_small_to_refine_as_batch_writes_them(tmp_path: Path) -> None:
    from conftest import coarse_of, synthetic_scene

    folder = tmp_path / "set"
    folder.mkdir()
    for name, (height, width) in {"small": (48, 64), "strip": (40, 300), "big": (120, 160)}.items():
        image, gt = synthetic_scene(height, width, seed=height)
        Image.fromarray(image).save(folder / f"{name}_im.png")
        Image.fromarray(coarse_of(gt, 8)).save(folder / f"{name}_seg.png")
        Image.fromarray(gt).save(folder / f"{name}_gt.png")

    evaluated = runner.invoke(app, ["eval", str(folder), "-o", str(tmp_path / "eval"), "--json", "--device", "cpu"])
    batched = runner.invoke(app, ["batch", str(folder), "-o", str(tmp_path / "batch"), "--device", "cpu"])

    assert evaluated.exit_code == 0 and batched.exit_code == 0, evaluated.output + batched.output
    summary = json.loads(evaluated.stdout)
    assert summary["schedules"]["passthrough"] == 2 and summary["n"] == 3
    images = {record["name"]: record for record in summary["images"]}
    for name in ("small", "strip"):
        assert images[name]["passthrough"] is True and images[name]["refined_iou"] == images[name]["coarse_iou"]
        assert "under the 96-px minimum side" in evaluated.stderr
    assert images["big"]["passthrough"] is False
    for name in ("small", "strip", "big"):
        written = tmp_path / "eval" / f"{name}_mask.png"
        # Byte for byte but for the text chunk in which batch records its settings (eval writes none).
        assert written.read_bytes() == without_settings_chunk((tmp_path / "batch" / f"{name}_mask.png").read_bytes())


def without_settings_chunk(data: bytes) -> bytes:
    """PNG bytes without crm batch's settings chunk (a tEXt chunk called SETTINGS_KEYWORD), which must be there."""
    from crm_cli.cli.batch import SETTINGS_KEYWORD

    kept, offset, dropped = [data[:8]], 8, 0
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        chunk = data[offset:offset + 12 + length]
        if chunk[4:8] == b"tEXt" and chunk[8:].startswith(SETTINGS_KEYWORD.encode() + b"\x00"):
            dropped += 1
        else:
            kept.append(chunk)
        offset += 12 + length
    assert dropped == 1
    return b"".join(kept)


def test_webp_output_of_a_strip_over_16383_px_is_a_usage_error_before_refining(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import crm_cli.refiner_spec

    def no_model(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the model was loaded")

    def strip(height: int) -> tuple[Path, Path]:
        photo = np.random.default_rng(0).integers(0, 255, (height, 17000, 3), dtype=np.uint8)
        Image.fromarray(photo).save(tmp_path / f"strip{height}.png")
        mask = np.zeros((height, 17000), np.uint8)
        mask[10:30, 2000:15000] = 255
        Image.fromarray(mask).save(tmp_path / f"m{height}.png")
        return tmp_path / f"strip{height}.png", tmp_path / f"m{height}.png"

    # 100 px high: refined if it could be written, so the refusal must come before the model.
    photo, mask = strip(100)
    monkeypatch.setattr(crm_cli.refiner_spec.RefinerSpec, "build", no_model)
    result = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "out.webp")])

    assert result.exit_code == 2, result.output
    assert "16383" in result.stderr and "out.webp" in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out.webp").exists()
    # A strip too low to refine, as PNG, is written at its own size.
    photo, mask = strip(40)
    result = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 0 and read_mask(tmp_path / "out.png").shape == (40, 17000)


# ---------------------------------------------------------------------------------------------
# Probing a large PNG reads its chunk headers, not its image data


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's per-process I/O counters")
def test_probing_a_large_png_reads_only_its_chunk_headers(tmp_path: Path) -> None:
    """The walk for a late eXIf chunk hopped over 8-KB image-data chunks through a buffered file,
    whose buffer refilled at every stop: about half of each mask was read to see its headers, for
    every pair a command or ``crm train``'s check probes."""
    from crm_cli.imageio import probe_image

    noise = np.random.default_rng(0).integers(0, 255, (1500, 2000), dtype=np.uint8)
    path = tmp_path / "noisy.png"
    cv2.imwrite(str(path), noise)
    size = path.stat().st_size
    assert size > 2_000_000

    def bytes_read() -> int:
        counters = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        return int(counters["rchar"])

    small = tmp_path / "small.png"
    cv2.imwrite(str(small), noise[:8, :8])
    probe_image(small)  # the first probe imports Pillow's plugins, whose files count as read too
    before = bytes_read()
    header = probe_image(path)
    read = bytes_read() - before

    assert (header.width, header.height) == (2000, 1500)
    assert read < 50_000, f"read {read} of {size} bytes"
