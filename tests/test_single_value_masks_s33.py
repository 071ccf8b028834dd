"""A mask of 0 and one other value v (a 0/class-id pseudo-label such as 0/3) is a binary mask with v
as the object wherever it is read as one object: refine and batch with --mode binary (or auto, for
v of 64 or more), eval's coarse masks and ground truths, score. With v under 64, --mode auto refines
it as a label map of one class (tests/test_label_maps_s34.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import palette_png
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.evaluation import folder_samples
from crm_cli.imageio import read_mask
from crm_cli.masks import MaskData, binarize, scale_note
from crm_cli.pairing import FilePair
from crm_cli.pipeline import choose_mode, fit_mask_to_image, read_pair

runner = CliRunner()


def object_of(height: int = 12, width: int = 16) -> np.ndarray:
    """The object: a boolean rectangle."""
    inside = np.zeros((height, width), bool)
    inside[3:9, 4:12] = True
    return inside


def grey_png(path: Path, values: np.ndarray) -> Path:
    """Save 8- or 16-bit grey ``values`` as a PNG as they are."""
    assert cv2.imwrite(str(path), values)
    return path


@pytest.mark.parametrize(("value", "dtype", "kind"), [
    (3, np.uint8, "gray8"), (2, np.uint8, "gray8"), (100, np.uint8, "gray8"), (254, np.uint8, "gray8"),
    (3, np.uint16, "gray16"), (200, np.uint16, "gray16"), (1000, np.uint16, "gray16"), (65534, np.uint16, "gray16"),
])
def test_zero_and_one_value_is_a_binary_mask(tmp_path: Path, value: int, dtype: type, kind: str) -> None:
    inside = object_of()
    path = grey_png(tmp_path / "m.png", inside.astype(dtype) * dtype(value))

    mask = read_mask(path)

    assert mask.kind == kind and mask.object_value == value
    assert mask.probability().dtype == np.float32
    assert mask.probability().tolist() == inside.astype(np.float32).tolist()
    assert mask.scoring_values().tolist() == inside.tolist()  # a ground truth's (or coarse mask's) foreground
    assert binarize(mask.scoring_values()).tolist() == inside.tolist()
    # A class id under 64 is a one-class label map in auto mode (its id kept), a larger value one object.
    assert choose_mode(mask, "auto") == ("labels" if value < 64 else "binary")
    assert choose_mode(mask, "binary") == "binary" and choose_mode(mask, "labels") == "labels"
    assert scale_note(mask, "m.png") is None  # not "read as 8-bit values": the scale plays no part


def test_palette_of_two_grey_entries_is_a_binary_mask(tmp_path: Path) -> None:
    inside = object_of()
    # The object at index 0 in grey level 3, black at index 1: read by its grey levels, 0 and 3.
    grey = read_mask(palette_png(tmp_path / "grey.png", (~inside).astype(np.uint8), [3, 3, 3, 0, 0, 0]))
    # Black at index 0 and the object at index 1 in grey level 3: read by index, as before.
    by_index = read_mask(palette_png(tmp_path / "index.png", inside.astype(np.uint8), [0, 0, 0, 3, 3, 3]))

    assert grey.kind == "gray8" and grey.values.tolist() == (inside.astype(np.uint8) * 3).tolist()
    assert by_index.kind == "palette"
    for mask in (grey, by_index):
        assert mask.probability().tolist() == inside.astype(np.float32).tolist()
        assert mask.scoring_values().tolist() == inside.tolist()
        assert choose_mode(mask, "auto") == "labels"  # class 3, or index 1: one class, kept as an id


def test_colour_of_one_dark_class_on_black_is_a_binary_mask(tmp_path: Path) -> None:
    # VOC's cat (64, 0, 0) on black: its brightest channel is 64, a quarter, so it was all background.
    inside = object_of()
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[inside] = (64, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "cat.png")

    mask = read_mask(tmp_path / "cat.png")

    assert mask.kind == "rgb" and mask.object_value == 64
    assert mask.probability().tolist() == inside.astype(np.float32).tolist()


def test_other_masks_read_as_before(tmp_path: Path) -> None:
    inside = object_of()
    soft = inside.astype(np.uint8) * 200
    soft[3, 4:12] = 100  # two levels: a soft mask
    labels = inside.astype(np.uint8) * 2
    labels[3:9, 4:6] = 1
    cases: list[tuple[MaskData, np.ndarray]] = [
        (MaskData(inside.astype(np.uint8) * 255, "gray8"), inside.astype(np.float32)),
        (MaskData(inside.astype(np.uint8), "gray8"), inside.astype(np.float32)),
        (MaskData(soft, "gray8"), soft.astype(np.float32) / np.float32(255)),
        (MaskData(inside.astype(np.uint16) * 65535, "gray16"), inside.astype(np.float32)),
        (MaskData(inside.astype(np.uint16) * 255, "gray16"), inside.astype(np.float32)),  # 8-bit in 16
        (MaskData(np.full((12, 16), 3, np.uint8), "gray8"), np.full((12, 16), 3 / 255, np.float32)),  # one value
        (MaskData(np.zeros((12, 16), np.uint8), "gray8"), np.zeros((12, 16), np.float32)),  # empty
        (MaskData(inside.astype(np.float32) * np.float32(0.3), "float"), inside.astype(np.float32) * np.float32(0.3)),
    ]
    for mask, probability in cases:
        assert mask.object_value is None, mask.values
        np.testing.assert_array_equal(mask.probability(), probability)
        assert choose_mode(mask, "auto") == "binary"
    label_map = MaskData(labels, "gray8")
    assert label_map.object_value is None and choose_mode(label_map, "auto") == "labels"
    assert label_map.scoring_values().tolist() == (labels != 0).tolist()  # scored by its ids (s34)
    # A 16-bit mask of soft 8-bit values keeps its note; a 16-bit 0/3 mask (binary) has none, and since
    # session 53 (README: a mask of 0 and one value is binary, with no warning) nor has a 0/255 one.
    assert scale_note(cases[4][0], "m.png") is None
    soft = inside.astype(np.uint16) * 255
    soft[0, 0] = 128
    assert scale_note(MaskData(soft, "gray16"), "m.png") is not None
    assert scale_note(MaskData(inside.astype(np.uint16) * 3, "gray16"), "m.png") is None


@pytest.mark.parametrize(("value", "mode"), [(3, "labels"), (100, "binary")])
def test_an_upsampled_zero_and_one_value_mask_keeps_its_two_values(tmp_path: Path, value: int, mode: str) -> None:
    # Interpolated, 0/3 became 0, 1, 2, 3: a label map of three ids. A one-class map (v under 64) is
    # upsampled as label maps are (nearest neighbour); 0/100 as a 0/1 mask, then given its value back.
    inside = object_of()
    small = MaskData(inside.astype(np.uint8) * value, "gray8")

    fitted, notes = fit_mask_to_image(small, (24, 32), 1, "im.png", "m.png")

    interpolation = cv2.INTER_NEAREST_EXACT if mode == "labels" else cv2.INTER_LINEAR
    expected = cv2.resize(inside.astype(np.uint8), (32, 24), interpolation=interpolation)
    assert notes == ["m.png: upsampled to the image size 32x24"]
    assert fitted.values.tolist() == (expected * value).tolist()
    assert fitted.object_value == value and choose_mode(fitted, "auto") == mode
    assert fitted.probability().tolist() == expected.astype(np.float32).tolist()


def test_a_pair_with_a_zero_and_one_value_mask_has_no_notes(tmp_path: Path) -> None:
    Image.fromarray(np.full((12, 16, 3), 90, np.uint8)).save(tmp_path / "im.png")
    grey_png(tmp_path / "m16.png", object_of().astype(np.uint16) * 3)

    _, mask, notes = read_pair(tmp_path / "im.png", tmp_path / "m16.png")

    assert notes == [] and mask.probability().tolist() == object_of().astype(np.float32).tolist()


def test_eval_scores_a_zero_and_one_value_ground_truth_and_coarse_mask(tmp_path: Path) -> None:
    inside = object_of(96, 128)
    inside[:] = False
    inside[24:72, 32:96] = True
    Image.fromarray(np.full((96, 128, 3), 90, np.uint8)).save(tmp_path / "im.png")
    grey_png(tmp_path / "coarse.png", inside.astype(np.uint8) * 3)
    grey_png(tmp_path / "gt.png", inside.astype(np.uint16) * 7)
    pair = FilePair("a", tmp_path / "im.png", tmp_path / "coarse.png", Path("a.png"), tmp_path / "gt.png")

    (sample,) = folder_samples([pair])

    assert sample.coarse.tolist() == inside.astype(np.float32).tolist()
    assert binarize(sample.gt).tolist() == inside.tolist()
    assert sample.coarse_scoring is not None and binarize(sample.coarse_scoring).tolist() == inside.tolist()
    assert sample.notes == []


def scene_files(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """A 96x128 photo with a bright rectangle and its 0/3 mask; returns (photo, mask, object)."""
    folder.mkdir(parents=True, exist_ok=True)
    inside = np.zeros((96, 128), bool)
    inside[24:72, 32:96] = True
    image = np.full((96, 128, 3), 40, np.uint8)
    image[inside] = 220
    Image.fromarray(image).save(folder / "im.png")
    return folder / "im.png", grey_png(folder / "im_mask.png", inside.astype(np.uint8) * 3), inside


def test_cli_refines_a_zero_and_three_mask_as_its_object(tiny_weights: Path, tmp_path: Path) -> None:
    image, mask, inside = scene_files(tmp_path)
    out = tmp_path / "o.png"

    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "-w", str(tiny_weights),
                                 "-d", "cpu", "--json", "-k", "binary", "--mode", "binary"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "binary"
    assert "no pixel of the mask is above 0.5" not in result.stderr
    refined = np.asarray(Image.open(out)) > 127
    assert refined[inside].mean() > 0.9 and not refined[~inside].mean() > 0.1  # it was empty


def test_batch_refines_a_zero_and_three_mask_as_its_object(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "out"
    image, mask, inside = scene_files(data / "images")
    (data / "masks").mkdir()
    mask.rename(data / "masks" / "im.png")

    result = runner.invoke(app, ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu",
                                 "--json", "-k", "binary", "--mode", "binary"])

    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"] == "ok" and item["mode"] == "binary"
    assert "no pixel of the mask is above 0.5" not in result.stderr
    refined = np.asarray(Image.open(out / "im.png")) > 127
    assert refined[inside].mean() > 0.9 and not refined[~inside].mean() > 0.1
