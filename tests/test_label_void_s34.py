"""The void index 255 makes a grey mask a label map only where it looks like VOC's void: no more pixels than
the ids, or a thin band along their edges. A hard-edged 0/255 mask whose object is 255, with a stray pixel of 1
or a drop shadow under 64 beside it, is a binary mask (its refinement comes out soft), as it was before label
maps with the void index were read."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.masks import MaskData
from crm_cli.pipeline import choose_mode

runner = CliRunner()
VOC_BOXES = {3: (slice(20, 80), slice(20, 100)), 8: (slice(110, 170), slice(30, 90)),
             15: (slice(40, 160), slice(150, 270))}
SMALL_BOXES = {3: (slice(6, 22), slice(6, 26)), 8: (slice(30, 42), slice(8, 24)), 15: (slice(10, 38), slice(36, 56))}


def grey(values: np.ndarray) -> MaskData:
    """8- or 16-bit grey values as a mask."""
    return MaskData(values, "gray8" if values.dtype == np.uint8 else "gray16")


def with_band(ids: np.ndarray, width: int) -> np.ndarray:
    """``ids`` with a void band (255) ``width`` px wide around every object, as VOC draws it."""
    objects = (ids > 0).astype(np.uint8)
    grown = cv2.dilate(objects, np.ones((2 * width + 1, 2 * width + 1), np.uint8)) > 0
    voc = ids.copy()
    voc[grown & (objects == 0)] = 255
    return voc


def boxes(classes: dict[int, tuple[slice, slice]], size: tuple[int, int]) -> np.ndarray:
    """(H, W) uint8 ids: one box per class on 0."""
    ids = np.zeros(size, np.uint8)
    for cls, box in classes.items():
        ids[box] = cls
    return ids


def car() -> np.ndarray:
    """A 200x300 0/255 mask of one solid object (an ellipse), hard-edged."""
    mask = np.zeros((200, 300), np.uint8)
    cv2.ellipse(mask, (150, 90), (110, 60), 0, 0, 360, 255, -1)
    return mask


def stray_pixel() -> np.ndarray:
    """The car with one stray pixel of 1 in the background."""
    mask = car()
    mask[5, 5] = 1
    return mask


def drop_shadow() -> np.ndarray:
    """The car with a hard drop shadow of 40 in a band 20 px tall under it."""
    mask = car()
    band = mask[150:170, 40:260]
    band[band == 0] = 40
    return mask


def fading_shadow() -> np.ndarray:
    """The car with a shadow fading from 60 to 4 in steps of 4 below it."""
    mask = car()
    for k, value in enumerate(range(60, 0, -4)):
        rows = mask[150 + 3 * k:153 + 3 * k, 40:260]
        rows[rows == 0] = value
    return mask


def wire_with_stray_pixel() -> np.ndarray:
    """A thin 0/255 mask (a 3 px wire across the frame) with one stray pixel of 1: thin, but no band along ids."""
    mask = np.zeros((200, 300), np.uint8)
    cv2.line(mask, (10, 20), (290, 180), 255, 3)
    mask[100, 5] = 1
    return mask


def sixteen_bit_shadow() -> np.ndarray:
    """The car and a shadow of 30, saved in a 16-bit file: {0, 30, 255}."""
    mask = drop_shadow().astype(np.uint16)
    mask[mask == 40] = 30
    return mask


BINARY_CASES = {"stray pixel": stray_pixel, "drop shadow": drop_shadow, "fading shadow": fading_shadow,
                "16-bit shadow": sixteen_bit_shadow, "wire and stray pixel": wire_with_stray_pixel}


@pytest.mark.parametrize("name", list(BINARY_CASES))
def test_a_solid_255_object_beside_a_few_ids_is_a_binary_mask(name: str) -> None:
    values = BINARY_CASES[name]()
    assert values.max() == 255 and 0 < np.count_nonzero((values > 0) & (values < 64)) < np.count_nonzero(values == 255)
    mask = grey(values)

    assert not mask.is_label_map() and choose_mode(mask, "auto") == "binary"
    assert mask.object_value is None
    # Read on the 8-bit scale, as before: the object is 1, the stray pixel or shadow faint.
    assert mask.probability().tolist() == (values / np.float32(255)).astype(np.float32).tolist()
    assert mask.scoring_values().tolist() == values.tolist()


@pytest.mark.parametrize("width", [3, 4, 5])
@pytest.mark.parametrize("size, classes", [((200, 300), VOC_BOXES), ((48, 64), SMALL_BOXES)])
def test_a_voc_map_with_its_void_band_is_a_label_map(width: int, size: tuple[int, int],
                                                     classes: dict[int, tuple[slice, slice]]) -> None:
    values = with_band(boxes(classes, size), width)
    for mask in (grey(values), grey(values.astype(np.uint16))):
        assert mask.is_label_map() and choose_mode(mask, "auto") == "labels"
        assert mask.label_ids == [3, 8, 15, 255]


@pytest.mark.parametrize("size", [(200, 300), (48, 64)])
def test_ids_one_and_two_with_their_void_band_are_a_label_map(size: tuple[int, int]) -> None:
    height, width = size
    classes = {1: (slice(height // 8, height // 2), slice(width // 8, width // 2)),
               2: (slice(height // 2 + 6, height - 6), slice(width // 2 + 6, width - 6))}
    values = with_band(boxes(classes, size), 3)
    assert set(np.unique(values).tolist()) == {0, 1, 2, 255}

    for mask in (grey(values), grey(values.astype(np.uint16))):
        assert mask.is_label_map() and choose_mode(mask, "auto") == "labels"
        assert mask.label_ids == [1, 2, 255]


@pytest.mark.parametrize("size", [(100, 120), (48, 64)])
def test_a_thin_object_whose_void_band_outnumbers_it_is_a_label_map(size: tuple[int, int]) -> None:
    height, width = size
    values = np.zeros(size, np.uint8)
    middle = width // 2
    values[4:height - 4, middle - 8:middle - 3] = 255  # 5 px of void either side of a 3 px line of class 7
    values[4:height - 4, middle - 3:middle] = 7
    values[4:height - 4, middle:middle + 5] = 255
    assert np.count_nonzero(values == 255) > 3 * np.count_nonzero(values == 7)

    for mask in (grey(values), grey(values.astype(np.uint16))):
        assert mask.is_label_map() and choose_mode(mask, "auto") == "labels"
        assert mask.label_ids == [7, 255]


def test_a_cityscapes_map_with_a_large_void_region_is_a_label_map() -> None:
    # Cityscapes' trainIds: 0 (road) to 18 cover the frame, 255 its unlabelled parts (the ego car's bonnet).
    values = np.zeros((96, 128), np.uint8)
    values[:30] = 10  # sky
    values[30:60, :64] = 2  # building
    values[30:60, 64:] = 8  # vegetation
    values[76:] = 255
    for mask in (grey(values), grey(values.astype(np.uint16))):
        assert mask.is_label_map() and mask.label_ids == [2, 8, 10, 255]


@pytest.mark.parametrize("name", ["stray pixel", "drop shadow"])
def test_refine_writes_a_soft_mask_for_a_solid_object_with_a_stray_id(tiny_weights: Path, tmp_path: Path,
                                                                      name: str) -> None:
    values = BINARY_CASES[name]()
    image = np.full((*values.shape, 3), 30, np.uint8)
    image[values == 255] = (200, 120, 60)
    Image.fromarray(image).save(tmp_path / "im.png")
    Image.fromarray(values).save(tmp_path / "m.png")

    result = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "m.png"), "-o",
                                 str(tmp_path / "o.png"), "-w", str(tiny_weights), "-d", "cpu", "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "binary"
    out = np.asarray(Image.open(tmp_path / "o.png"))
    # The model's soft probabilities on the 0-255 scale, not the ids written back as a label image.
    assert out.dtype == np.uint8 and out.max() > 200 and np.unique(out).size > 3
    assert (out[values == 255] > 127).mean() > 0.9 and (out[values == 0] <= 127).mean() > 0.9
