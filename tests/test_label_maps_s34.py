"""Label maps that --mode auto used to damage (a user audit of dataset builders): a grey VOC/Cityscapes
map with the void index 255, whose classes the 8-bit reading erased, and maps of one class (palette
{0, 5}, grey 0/3), which came out as soft grey masks, id and palette gone, and refined a class
--labels did not name. Binary and soft masks are read as before."""

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
from crm_cli.imageio import read_mask
from crm_cli.masks import MaskData, scale_note
from crm_cli.pipeline import choose_mode, fit_mask_to_image

runner = CliRunner()
# VOC's first entries: background, aeroplane (128, 0, 0), bicycle, bird, boat, bottle (128, 0, 128), ...
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128] + [0] * 750
BOXES = {3: (slice(8, 44), slice(8, 56)), 8: (slice(52, 88), slice(12, 60)), 15: (slice(20, 76), slice(72, 120))}


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu"]


def scene(folder: Path, classes: dict[int, tuple[slice, slice]], size: tuple[int, int] = (96, 128),
          name: str = "im.png") -> tuple[Path, np.ndarray]:
    """A photo of one coloured box per class on a dark ground, and its (H, W) uint8 ids."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.zeros(size, np.uint8)
    image = np.full((*size, 3), 30, np.uint8)
    for k, (cls, box) in enumerate(classes.items()):
        ids[box] = cls
        image[box] = (200, 80 + 40 * k, 60)
    Image.fromarray(image).save(folder / name)
    return folder / name, ids


def void_band(ids: np.ndarray) -> np.ndarray:
    """The one-pixel band along every class's outline, where VOC draws its void index 255."""
    return cv2.morphologyEx((ids > 0).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0


def with_void(ids: np.ndarray) -> np.ndarray:
    """``ids`` with 255 along their outlines."""
    voc = ids.copy()
    voc[void_band(ids)] = 255
    return voc


def grey(values: np.ndarray) -> MaskData:
    """8- or 16-bit grey values as a mask."""
    return MaskData(values, "gray8" if values.dtype == np.uint8 else "gray16")


# Which masks are label maps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [(3, 8, 15), (1, 2), (1,), (63,)])
def test_grey_ids_with_the_void_index_are_a_label_map(ids: tuple[int, ...]) -> None:
    # {0, 1, 255} too: read on the 8-bit scale, class 1 is 1/255, background, and only the void band
    # would be foreground.
    values = with_void(np.array([[0] * 4 + list(ids)] * 4, np.uint8).repeat(4, 0).repeat(4, 1))
    assert set(np.unique(values).tolist()) == {0, 255, *ids}
    wide = values.astype(np.uint16)

    for mask in (grey(values), grey(wide)):
        assert mask.is_label_map() and choose_mode(mask, "auto") == "labels"
        assert mask.label_ids == [*ids, 255]
        # Scored (eval, score) by its ids: every id but the background is foreground, as a palette's
        # indices are. On the 8-bit scale only the void band would be (> 128).
        assert mask.object_value is None and mask.scoring_values().tolist() == (values != 0).tolist()
        # Read as one object (crm eval's coarse mask, --mode binary), it is what is scored (session 52).
        assert mask.probability().tolist() == (values != 0).astype(np.float32).tolist()
    assert scale_note(grey(wide), "m.png") is None  # ids, not an 8-bit mask in a 16-bit file


def test_soft_and_binary_masks_reaching_255_are_not_label_maps() -> None:
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)  # a soft mask: values between 64 and 254
    edge = np.array([[0, 0, 3, 40, 255, 255], [0, 0, 3, 100, 255, 255]], np.uint8)  # one anti-aliased level
    cases = [ramp, edge, np.array([[0, 255], [255, 0]], np.uint8), np.array([[3, 255], [255, 3]], np.uint8)]
    for values in cases:
        for mask in (grey(values), grey(values.astype(np.uint16))):
            assert not mask.is_label_map(), values
            assert choose_mode(mask, "auto") == "binary"
    # A 16-bit file on its own scale: 255 is not the void index there.
    assert not grey(np.array([[0, 3, 255, 1000]], np.uint16)).is_label_map()


@pytest.mark.parametrize("value", [2, 3, 63])
def test_zero_and_one_class_id_is_a_label_map_of_one_class(value: int) -> None:
    inside = np.zeros((6, 8), bool)
    inside[1:4, 2:6] = True
    for values in (inside.astype(np.uint8) * value, inside.astype(np.uint16) * value):
        mask = grey(values)
        assert mask.is_label_map() and choose_mode(mask, "auto") == "labels" and mask.label_ids == [value]
        # Read as one object (--mode binary, eval, score), it is its object, as before.
        assert mask.object_value == value and choose_mode(mask, "binary") == "binary"
        assert mask.probability().tolist() == inside.astype(np.float32).tolist()
        assert mask.scoring_values().tolist() == inside.tolist()


def test_binary_masks_stay_binary() -> None:
    inside = np.zeros((6, 8), bool)
    inside[1:4, 2:6] = True
    cases = [grey(inside.astype(np.uint8)), grey(inside.astype(np.uint8) * 255), grey(inside.astype(np.uint8) * 64),
             grey(inside.astype(np.uint8) * 200), grey(inside.astype(np.uint16)), grey(inside.astype(np.uint16) * 1000),
             grey(np.zeros((6, 8), np.uint8)), grey(np.full((6, 8), 3, np.uint8))]
    for mask in cases:
        assert not mask.is_label_map(), mask.values
        assert choose_mode(mask, "auto") == "binary"


def test_a_palette_of_one_class_is_a_label_map_unless_it_is_white(tmp_path: Path) -> None:
    inside = np.zeros((12, 16), bool)
    inside[3:9, 4:12] = True
    voc = read_mask(palette_png(tmp_path / "voc.png", inside.astype(np.uint8) * 5, VOC_PALETTE))
    # A DAVIS frame: index 1 (128, 0, 0) is the object, as in its frames of two objects.
    davis = read_mask(palette_png(tmp_path / "davis.png", inside.astype(np.uint8), VOC_PALETTE))
    # A black and white mask saved as palette: 1-bit style (white at 1) or grey levels as indices (white at 255).
    one_bit = read_mask(palette_png(tmp_path / "bw.png", inside.astype(np.uint8), [0, 0, 0, 255, 255, 255]))
    levels = [value for level in range(256) for value in (level, level, level)]
    ramp = read_mask(palette_png(tmp_path / "ramp.png", inside.astype(np.uint8) * 255, levels))

    for mask, ids in ((voc, [5]), (davis, [1])):
        assert mask.kind == "palette" and choose_mode(mask, "auto") == "labels" and mask.label_ids == ids
        assert mask.scoring_values().tolist() == inside.tolist()  # scored as before: index != 0
    for mask in (one_bit, ramp):
        assert mask.kind == "palette" and choose_mode(mask, "auto") == "binary"
        assert mask.probability().tolist() == inside.astype(np.float32).tolist()


def test_an_upsampled_void_map_keeps_its_ids() -> None:
    small = with_void(np.array([[0] * 4 + [3, 8]] * 4, np.uint8).repeat(2, 0).repeat(2, 1))  # 8x12

    fitted, notes = fit_mask_to_image(grey(small), (24, 36), 1, "im.png", "m.png")

    assert notes == ["m.png: upsampled to the image size 36x24"]
    expected = cv2.resize(small, (36, 24), interpolation=cv2.INTER_NEAREST_EXACT)
    assert fitted.values.tolist() == expected.tolist()
    assert set(np.unique(fitted.values).tolist()) == {0, 3, 8, 255}


# crm refine and crm batch ---------------------------------------------------------------------------------------


def test_refine_keeps_the_classes_of_a_grey_map_with_void(tiny_weights: Path, tmp_path: Path) -> None:
    image, ids = scene(tmp_path, BOXES)
    voc = with_void(ids)
    Image.fromarray(voc).save(tmp_path / "voc.png")

    auto = runner.invoke(app, ["refine", str(image), str(tmp_path / "voc.png"), "-o", str(tmp_path / "auto.png"),
                               *cpu(tiny_weights), "--json"])
    labels = runner.invoke(app, ["refine", str(image), str(tmp_path / "voc.png"), "-o", str(tmp_path / "labels.png"),
                                 *cpu(tiny_weights), "--mode", "labels"])

    assert auto.exit_code == 0 and labels.exit_code == 0, auto.output + labels.output
    record = json.loads(auto.stdout)
    assert record["mode"] == "labels" and len(record["label_ratios"]) == 4  # 3, 8, 15 and the void band, as labels
    assert record["label_ids"] == [3, 8, 15, 255]  # which id each label_* entry is (session 54)
    written = Image.open(tmp_path / "auto.png")
    out = np.asarray(written)
    assert written.mode == "L" and out.dtype == np.uint8
    assert set(np.unique(out).tolist()) <= {0, 3, 8, 15, 255}
    for cls in BOXES:
        inner = (ids == cls) & ~void_band(ids)
        assert (out[inner] == cls).mean() > 0.9, cls
    # --mode labels refines 255 as one more label; auto does the same.
    assert np.array_equal(out, np.asarray(Image.open(tmp_path / "labels.png")))


def assert_same_palette_map(path: Path, values: np.ndarray, palette: list[int]) -> None:
    """``path`` is a palette PNG of ``values``'s ids, with ``palette``."""
    written = Image.open(path)
    assert written.mode == "P"
    assert (written.getpalette("RGB") + [0] * 768)[:768] == palette
    assert set(np.unique(np.asarray(written)).tolist()) == set(np.unique(values).tolist())


def test_refine_and_batch_keep_a_one_class_palette_map(tiny_weights: Path, tmp_path: Path) -> None:
    image, ids = scene(tmp_path / "data" / "images", {5: BOXES[15]})
    (tmp_path / "data" / "masks").mkdir()
    mask = palette_png(tmp_path / "data" / "masks" / "im.png", ids, VOC_PALETTE)

    refined = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"), *cpu(tiny_weights),
                                  "--json"])
    batch = runner.invoke(app, ["batch", str(tmp_path / "data"), "-o", str(tmp_path / "out"), *cpu(tiny_weights),
                                "--json"])

    assert refined.exit_code == 0 and batch.exit_code == 0, refined.output + batch.output
    assert json.loads(refined.stdout)["mode"] == "labels"
    assert json.loads(batch.stdout)["items"][0]["mode"] == "labels"
    for output in (tmp_path / "o.png", tmp_path / "out" / "im.png"):
        assert_same_palette_map(output, ids, VOC_PALETTE)
        assert (np.asarray(Image.open(output))[ids == 5] == 5).mean() > 0.9


def test_batch_writes_davis_frames_of_one_and_two_objects_alike(tiny_weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for name, classes in (("one", {1: BOXES[3]}), ("two", {1: BOXES[3], 2: BOXES[15]})):
        _, ids = scene(data / "images", classes, name=f"{name}.png")
        (data / "masks").mkdir(exist_ok=True)
        palette_png(data / "masks" / f"{name}.png", ids, VOC_PALETTE)
    # A black and white mask saved as palette is one object: a soft grey output, as before.
    _, ids = scene(data / "images", {1: BOXES[8]}, name="bw.png")
    palette_png(data / "masks" / "bw.png", ids, [0, 0, 0, 255, 255, 255])

    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *cpu(tiny_weights), "--json"])

    assert result.exit_code == 0, result.output
    modes = {Path(item["output"]).stem: item["mode"] for item in json.loads(result.stdout)["items"]}
    assert modes == {"one": "labels", "two": "labels", "bw": "binary"}
    assert Image.open(tmp_path / "out" / "one.png").mode == Image.open(tmp_path / "out" / "two.png").mode == "P"
    assert Image.open(tmp_path / "out" / "bw.png").mode == "L"


def test_refine_keeps_a_zero_and_three_map_as_zero_and_three(tiny_weights: Path, tmp_path: Path) -> None:
    image, ids = scene(tmp_path, {3: BOXES[15]})
    Image.fromarray(ids).save(tmp_path / "m.png")

    result = runner.invoke(app, ["refine", str(image), str(tmp_path / "m.png"), "-o", str(tmp_path / "o.png"),
                                 *cpu(tiny_weights), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "labels"
    written = Image.open(tmp_path / "o.png")
    out = np.asarray(written)
    assert written.mode == "L" and set(np.unique(out).tolist()) == {0, 3}
    assert (out[ids == 3] == 3).mean() > 0.9 and (out[ids == 0] == 0).mean() > 0.9


def test_labels_naming_a_class_the_map_does_not_hold_writes_it_unchanged(tiny_weights: Path, tmp_path: Path) -> None:
    image, ids = scene(tmp_path, {3: BOXES[15]})
    mask = tmp_path / "m.png"
    Image.fromarray(ids).save(mask)
    out = tmp_path / "o.png"

    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), *cpu(tiny_weights), "--labels", "1"])

    assert result.exit_code == 0, result.output
    assert (f"warning: --labels: label 1 is not in {mask}; it holds label 3: nothing to refine, so the mask is "
            "written unchanged") in " ".join(result.stderr.split())
    assert f"wrote {out} (label map, unchanged: no label to refine)" in result.stderr
    assert np.array_equal(np.asarray(Image.open(out)), ids)


@pytest.mark.parametrize("value", [1, 255])
def test_zero_one_and_zero_255_masks_still_come_out_soft(tiny_weights: Path, tmp_path: Path, value: int) -> None:
    image, ids = scene(tmp_path, {value: BOXES[15]})
    Image.fromarray(ids).save(tmp_path / "m.png")

    result = runner.invoke(app, ["refine", str(image), str(tmp_path / "m.png"), "-o", str(tmp_path / "o.png"),
                                 *cpu(tiny_weights), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "binary"
    written = Image.open(tmp_path / "o.png")
    out = np.asarray(written)
    # A soft mask on the 0-255 scale (the model's probabilities), not ids kept as they were.
    assert written.mode == "L" and out.max() > 200 and np.unique(out).size > 2
    assert (out[ids > 0] > 127).mean() > 0.9 and (out[ids == 0] <= 127).mean() > 0.9


def test_a_passed_through_palette_map_keeps_its_ids_and_palette(tiny_weights: Path, tmp_path: Path) -> None:
    small = {5: (slice(10, 30), slice(12, 40))}
    image, ids = scene(tmp_path / "data" / "images", small, size=(48, 64))
    (tmp_path / "data" / "masks").mkdir()
    mask = palette_png(tmp_path / "data" / "masks" / "im.png", ids, VOC_PALETTE)

    refined = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"), *cpu(tiny_weights)])
    batch = runner.invoke(app, ["batch", str(tmp_path / "data"), "-o", str(tmp_path / "out"), *cpu(tiny_weights),
                                "--json"])

    assert refined.exit_code == 0 and batch.exit_code == 0, refined.output + batch.output
    assert f"wrote {tmp_path / 'o.png'} (label map, passed through unchanged)" in refined.stderr
    (item,) = json.loads(batch.stdout)["items"]
    assert item["passthrough"] is True and item["mode"] == "labels"
    for output in (tmp_path / "o.png", tmp_path / "out" / "im.png"):
        assert_same_palette_map(output, ids, VOC_PALETTE)
        assert np.array_equal(np.asarray(Image.open(output)), ids)
