"""A palette label map's transparency (PNG tRNS: one transparent index, as a VOC map whose void index 255
is shown transparent, or one alpha byte per entry) is kept with its ids and palette: read into
MaskData.transparency, written back by `crm refine` and `crm batch` (plain and --ray) in PNG outputs, and
named in a warning where a TIFF cannot hold it. A map without tRNS is written without one, and a mask
whose transparency draws it (a white object on a transparent white) is read by its alpha as before.
Tiny synthetic masks; the CLI tests load tiny random weights."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import read_mask
from crm_cli.masks import match_mask_to_image
from crm_cli.writing import encode_image

runner = CliRunner()

# VOC's first colours, and its void colour at 255.
VOC_PALETTE = ([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (251 * 3) + [224, 224, 192])
# One alpha byte per entry: background opaque, class 1 half transparent, class 2 opaque, class 3 clear.
PER_ENTRY_ALPHA = bytes([255, 128, 255, 0])
TRANSPARENCIES = [pytest.param(255, id="void-index"), pytest.param(PER_ENTRY_ALPHA, id="per-entry-alpha"),
                  pytest.param(None, id="no-trns")]


def voc_map(size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """Two classes on background, each ringed by the void index 255, as VOC draws its object edges."""
    values = np.zeros(size, np.uint8)
    values[12:52, 10:62], values[56:90, 70:122] = 255, 255
    values[14:50, 12:60], values[58:88, 72:120] = 1, 2
    return values


def save_palette_png(path: Path, indices: np.ndarray, transparency: int | bytes | None,
                     palette: list[int] = VOC_PALETTE) -> Path:
    """``indices`` as a P-mode PNG with ``palette`` and, unless None, ``transparency`` (Pillow's tRNS)."""
    image = Image.new("P", (indices.shape[1], indices.shape[0]))
    image.frombytes(indices.tobytes())
    image.putpalette(palette)
    image.save(path, **({} if transparency is None else {"transparency": transparency}))
    return path


def photo_of(values: np.ndarray, path: Path) -> Path:
    """A photo with one coloured box per id of ``values`` on a dark ground."""
    image = np.full((*values.shape, 3), 30, np.uint8)
    for k, value in enumerate(np.unique(values)[1:]):
        image[values == value] = (200, 60 + 50 * k, 60)
    Image.fromarray(image).save(path)
    return path


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu"]


def transparency_of(source: Path | bytes) -> int | bytes | None:
    """What Pillow reads as a PNG's transparency (its tRNS chunk), or None."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        assert image.mode == "P"
        return image.info.get("transparency")


# Reading and writing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transparency", TRANSPARENCIES)
def test_a_palette_maps_transparency_is_read_and_encoded_back(tmp_path: Path, transparency: int | bytes | None) -> None:
    path = save_palette_png(tmp_path / "voc.png", voc_map(), transparency)
    assert transparency_of(path) == transparency  # as Pillow gives it: an index, or the alpha bytes

    mask = read_mask(path)

    assert mask.kind == "palette" and mask.is_label_map() and mask.transparency == transparency
    assert transparency_of(encode_image(mask.values, mask.palette, "PNG", transparency=mask.transparency)) \
        == transparency
    # A smaller map upsampled to its photo keeps it too.
    assert match_mask_to_image(mask, (192, 256), "im.png", "voc.png")[0].transparency == transparency


def test_a_renumbered_two_colour_palette_keeps_the_alpha_of_its_entries(tmp_path: Path) -> None:
    # Black at index 3 and the object at index 1: read as 0 = black, 1 = the object, alpha renumbered too.
    indices = np.full((32, 32), 3, np.uint8)
    indices[8:24, 8:24] = 1
    path = save_palette_png(tmp_path / "two.png", indices, 3, [255, 255, 255, 128, 0, 0, 0, 128, 0, 0, 0, 0])

    mask = read_mask(path)

    assert mask.kind == "palette" and sorted(np.unique(mask.values).tolist()) == [0, 1]
    assert mask.transparency == bytes([0, 255])  # black (now 0) transparent, the object opaque


def test_a_transparency_that_draws_the_mask_is_still_read_as_its_alpha(tiny_weights: Path, tmp_path: Path) -> None:
    # A white object on a transparent white: the colours draw nothing, so the alpha is the mask, refined
    # as one object into a soft grey mask with no palette and no transparency (as before: a guard).
    indices = np.zeros((96, 128), np.uint8)
    indices[24:72, 32:96] = 1
    image = Image.new("P", (128, 96))
    image.frombytes(indices.tobytes())
    image.putpalette([255, 255, 255, 255, 255, 255])
    image.save(tmp_path / "white.png", transparency=0)
    photo = photo_of(indices, tmp_path / "im.png")

    mask = read_mask(tmp_path / "white.png")
    result = runner.invoke(app, ["refine", str(photo), str(tmp_path / "white.png"), "-o", str(tmp_path / "out.png"),
                                 *cpu(tiny_weights), "--json"])

    assert mask.kind == "alpha" and getattr(mask, "transparency", None) is None
    assert np.array_equal(mask.values > 0, indices == 1)
    assert result.exit_code == 0 and json.loads(result.stdout)["mode"] == "binary", result.output
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode == "L" and "transparency" not in written.info


def test_encoding_refuses_a_transparency_without_a_palette_or_out_of_range() -> None:
    values = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="with a palette only"):
        encode_image(values, None, "PNG", transparency=0)
    with pytest.raises(ValueError, match="index 0..255"):
        encode_image(values, VOC_PALETTE, "PNG", transparency=256)
    with pytest.raises(ValueError, match="at most 256"):
        encode_image(values, VOC_PALETTE, "PNG", transparency=bytes(257))


# The commands -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transparency", TRANSPARENCIES)
def test_refine_writes_a_label_map_with_its_palettes_transparency(
        tiny_weights: Path, tmp_path: Path, transparency: int | bytes | None) -> None:
    values = voc_map()
    mask = save_palette_png(tmp_path / "voc.png", values, transparency)
    image = photo_of(values, tmp_path / "im.png")

    to_file = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"), *cpu(tiny_weights),
                                  "--json"])
    to_stdout = runner.invoke(app, ["refine", str(image), str(mask), "-o", "-", *cpu(tiny_weights)])

    assert to_file.exit_code == 0 and to_stdout.exit_code == 0, to_file.output + to_stdout.output
    assert json.loads(to_file.stdout)["mode"] == "labels"
    assert transparency_of(tmp_path / "out.png") == transparency
    assert transparency_of(to_stdout.stdout_bytes) == transparency


def test_refine_to_tiff_warns_that_it_cannot_hold_the_transparency(tiny_weights: Path, tmp_path: Path) -> None:
    values = voc_map()
    mask = save_palette_png(tmp_path / "voc.png", values, 255)
    image = photo_of(values, tmp_path / "im.png")

    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "out.tif"), *cpu(tiny_weights),
                                 "--json"])

    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert any("TIFF cannot hold the palette's transparency" in warning and "voc.png" in warning
               for warning in warnings), warnings
    with Image.open(tmp_path / "out.tif") as written:
        assert written.mode == "P"


def batch_folder(folder: Path) -> Path:
    """images/ + masks/ with one VOC map per transparency of TRANSPARENCIES (the names say which)."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    values = voc_map()
    for name, transparency in (("void", 255), ("alpha", PER_ENTRY_ALPHA), ("plain", None)):
        photo_of(values, folder / "images" / f"{name}.png")
        save_palette_png(folder / "masks" / f"{name}.png", values, transparency)
    return folder


def check_batch_outputs(out: Path) -> None:
    """Each output of :func:`batch_folder` has its mask's transparency."""
    assert transparency_of(out / "void.png") == 255
    assert transparency_of(out / "alpha.png") == PER_ENTRY_ALPHA
    assert transparency_of(out / "plain.png") is None


def test_batch_writes_each_label_maps_transparency_and_resumes_past_them(tiny_weights: Path, tmp_path: Path) -> None:
    data = batch_folder(tmp_path / "data")
    out = tmp_path / "out"

    first = runner.invoke(app, ["batch", str(data), "-o", str(out), *cpu(tiny_weights), "--json"])
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("*.png")}
    again = runner.invoke(app, ["batch", str(data), "-o", str(out), *cpu(tiny_weights), "--json"])

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert {item["mode"] for item in json.loads(first.stdout)["items"]} == {"labels"}
    check_batch_outputs(out)
    # An output with a tRNS chunk is a finished output: the rerun skips every pair and rewrites none.
    assert {item["status"] for item in json.loads(again.stdout)["items"]} == {"skipped"}
    assert {path: path.stat().st_mtime_ns for path in out.glob("*.png")} == stamps


def test_batch_on_ray_writes_each_label_maps_transparency(tiny_weights: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    data = batch_folder(tmp_path / "data")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *cpu(tiny_weights),
                                     "--ray", "local"])
    finally:
        ray.shutdown()

    assert result.exit_code == 0, result.output
    check_batch_outputs(tmp_path / "out")


def test_a_label_map_too_small_to_refine_keeps_its_transparency(tiny_weights: Path, tmp_path: Path) -> None:
    # Under 96 px a pair passes through unchanged: the palette's transparency with it.
    ids = np.zeros((40, 50), np.uint8)
    ids[5:30, 5:40], ids[4:31, 4] = 12, 255
    photo = tmp_path / "im.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(photo)
    mask = Image.fromarray(ids, "P")
    mask.putpalette(VOC_PALETTE)
    mask.save(tmp_path / "m.png", transparency=255)

    result = runner.invoke(app, ["refine", str(photo), str(tmp_path / "m.png"), "-o", str(tmp_path / "o.png"),
                                 "-w", str(tiny_weights), "-d", "cpu"])

    assert result.exit_code == 0, result.output
    written = Image.open(tmp_path / "o.png")
    assert written.mode == "P" and written.info.get("transparency") == 255
    assert np.array_equal(np.asarray(written), ids)
