"""Label maps as more datasets keep them: grey ids from 64 up (ADE20K, COCO-stuff, 16-bit instance ids) stay
soft masks, as an unsure network's enlarged output can look the same, but are named in a warning where their
shape says ids; faint soft masks under 64 are no label maps, an empty palette frame of a colour palette keeps
it, grey ids beside a large 255 region are named in a warning, and WebP is refused for any label map.
Tiny synthetic masks; the CLI tests load tiny random weights."""

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
from crm_cli.masks import MaskData, ids_note, void_note
from crm_cli.pipeline import choose_mode

runner = CliRunner()

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128] + [0] * 750
# Three objects on background, as an ADE20K or COCO-stuff map holds them: ids 12, 87 and 150.
OBJECTS = {87: (slice(10, 50), slice(12, 60)), 150: (slice(56, 92), slice(70, 124)), 12: (slice(8, 40), slice(80, 120))}


def objects_map(dtype: type = np.uint8, ids: dict[int, tuple[slice, slice]] = OBJECTS,
                size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A (H, W) map with one box per id on background 0."""
    values = np.zeros(size, dtype)
    for value, box in ids.items():
        values[box] = value
    return values


def grey(values: np.ndarray) -> MaskData:
    """8- or 16-bit grey values as a mask."""
    return MaskData(values, "gray8" if values.dtype == np.uint8 else "gray16")


def soft_disc(top: int, size: tuple[int, int] = (96, 128), blur: float = 2.0, levels: int = 16) -> np.ndarray:
    """A blurred disc whose largest value is ``top``, in ``levels`` steps: a soft mask with ramps along its
    edge, of few enough values (up to 64) that only their shape tells it from a label map."""
    disc = np.zeros(size, np.float32)
    cv2.circle(disc, (size[1] // 2, size[0] // 2), min(size) // 3, 1.0, -1)
    disc = cv2.GaussianBlur(disc, (0, 0), blur)
    steps = np.round(disc / disc.max() * (levels - 1)) / (levels - 1)
    return np.round(steps * top).astype(np.uint8)


# Which masks are label maps ---------------------------------------------------------------------------------


def test_grey_ids_from_64_up_stay_soft_and_are_named_in_a_warning() -> None:
    mask = grey(objects_map())
    assert not mask.is_label_map() and choose_mode(mask, "auto") == "binary"
    assert mask.looks_like_ids()
    note = ids_note(mask, "ids.png")
    assert note is not None and "12, 87, 150" in note and note.endswith("pass --mode labels")
    # --mode labels reads the ids.
    assert choose_mode(mask, "labels") == "labels" and mask.label_ids == [12, 87, 150]


def test_sixteen_bit_instance_ids_and_ids_beside_void_are_named_in_a_warning() -> None:
    # Cityscapes' instanceIds: stuff as its class id, things as class * 1000 + instance.
    instances = {7: (slice(70, 96), slice(0, 128)), 24000: (slice(10, 50), slice(8, 40)),
                 26000: (slice(20, 60), slice(50, 90)), 26001: (slice(20, 60), slice(92, 124))}
    assert grey(objects_map(np.uint16, instances)).looks_like_ids()
    # COCO-stuff: ids up to 181 and its "unlabeled" 255 as a region, not a band.
    values = objects_map()
    values[0:6, :] = 255
    assert grey(values).looks_like_ids()
    # A trimap (0, 128, 255) or a cut-out with a 50% shadow is one grey beside 255: no warning.
    trimap = np.zeros((96, 128), np.uint8)
    trimap[20:80, 20:110], trimap[30:70, 30:100] = 128, 255
    assert not grey(trimap).looks_like_ids()


def unsure_network_mask(top: float, dtype: type = np.uint8) -> np.ndarray:
    """A 24x24 sigmoid output whose largest probability is ``top``, enlarged 16x by nearest neighbour."""
    yy, xx = np.mgrid[:24, :24].astype(np.float32)
    probability = top / (1 + np.exp(4 * (((yy - 12) / 6) ** 2 + ((xx - 11) / 5) ** 2 - 1)))
    scale = 255 if dtype == np.uint8 else 65535
    values = np.round(probability * scale).astype(dtype)
    return cv2.resize(values, None, fx=16, fy=16, interpolation=cv2.INTER_NEAREST)


@pytest.mark.parametrize(("top", "dtype"), [(0.75, np.uint8), (0.7, np.uint16), (1.0, np.uint8)])
def test_an_unsure_networks_enlarged_output_is_one_soft_object_without_a_warning(top: float, dtype: type) -> None:
    mask = grey(unsure_network_mask(top, dtype))
    assert mask.distinct_values > 2
    assert not mask.is_label_map() and choose_mode(mask, "auto") == "binary"
    assert not mask.looks_like_ids() and ids_note(mask, "m.png") is None


@pytest.mark.parametrize("top", [200, 254])
def test_soft_masks_under_255_stay_soft(top: int) -> None:
    blurred = soft_disc(top)
    # Enlarged 8x by nearest neighbour, its levels are flat cells, but in a band around the disc's body.
    enlarged = cv2.resize(soft_disc(top, (24, 32), blur=0.8), (256, 192), interpolation=cv2.INTER_NEAREST)
    for values in (blurred, enlarged):
        mask = grey(values)
        assert 2 < mask.distinct_values <= 32, mask.distinct_values
        assert not mask.is_label_map() and choose_mode(mask, "auto") == "binary"
        assert not mask.looks_like_ids()


def test_a_nearly_binary_soft_mask_of_three_flat_levels_stays_soft() -> None:
    # crm's own soft output of an unsure model: 0 far out, 2 around the object, 252 on it.
    values = np.zeros((96, 128), np.uint8)
    values[10:86, 10:118] = 2
    values[30:66, 40:88] = 252
    mask = grey(values)
    assert not mask.is_label_map() and choose_mode(mask, "auto") == "binary" and not mask.looks_like_ids()
    assert mask.scoring_values().tolist() == values.tolist()  # scored on the 8-bit scale: 252 > 128


def test_a_faint_soft_mask_under_64_is_no_label_map() -> None:
    faint = grey(soft_disc(40, levels=41))
    assert faint.distinct_values >= 16
    assert not faint.is_label_map() and choose_mode(faint, "auto") == "binary"
    # Few ids under 64, even in small regions, are still a label map.
    assert grey(objects_map(ids={3: (slice(2, 4), slice(2, 5)), 8: (slice(10, 30), slice(10, 30))})).is_label_map()


def test_an_empty_palette_frame_is_a_label_map_where_its_palette_has_colours() -> None:
    empty = np.zeros((6, 8), np.uint8)
    assert MaskData(empty, "palette", VOC_PALETTE).is_label_map()
    # Black and white, or the grey palette Pillow gives convert("P"): a binary dataset's empty frame.
    assert not MaskData(empty, "palette", [0, 0, 0, 255, 255, 255] + [0] * 762).is_label_map()
    assert not MaskData(empty, "palette", [v for v in range(256) for _ in range(3)]).is_label_map()
    assert not MaskData(empty, "palette", [0, 0, 0]).is_label_map()


def test_ids_under_64_beside_a_large_255_region_are_named_in_a_warning() -> None:
    values = objects_map(ids={15: (slice(10, 40), slice(10, 40)), 255: (slice(40, 96), slice(40, 128))})
    mask = grey(values)
    assert not mask.is_label_map()  # 255 outnumbers the ids and is no band: read as one object, as before
    note = void_note(mask, "m.png")
    assert note is not None and "ids 15 and 255" in note and "--mode labels" in note
    # A plain 0/255 mask, a soft mask and a label map get none.
    assert void_note(grey((values == 255).astype(np.uint8) * 255), "m.png") is None
    assert void_note(grey(soft_disc(255)), "m.png") is None
    assert void_note(grey(objects_map()), "m.png") is None


# The commands -----------------------------------------------------------------------------------------------


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu"]


def photo_of(values: np.ndarray, path: Path) -> Path:
    """A photo with one coloured box per id of ``values`` on a dark ground."""
    image = np.full((*values.shape, 3), 30, np.uint8)
    for k, value in enumerate(np.unique(values)[1:]):
        image[values == value] = (200, 60 + 50 * k, 60)
    Image.fromarray(image).save(path)
    return path


def test_refine_warns_of_an_ade20k_map_and_mode_labels_keeps_its_ids(tiny_weights: Path, tmp_path: Path) -> None:
    values = objects_map()
    Image.fromarray(values).save(tmp_path / "ids.png")
    image = photo_of(values, tmp_path / "im.png")

    auto = runner.invoke(app, ["refine", str(image), str(tmp_path / "ids.png"), "-o", str(tmp_path / "auto.png"),
                               *cpu(tiny_weights), "--json"])
    labels = runner.invoke(app, ["refine", str(image), str(tmp_path / "ids.png"), "-o", str(tmp_path / "out.png"),
                                 *cpu(tiny_weights), "--mode", "labels"])

    assert auto.exit_code == 0 and labels.exit_code == 0, auto.output + labels.output
    record = json.loads(auto.stdout)
    assert record["mode"] == "binary"
    assert any("12, 87, 150" in warning and "--mode labels" in warning for warning in record["warnings"]), record
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.dtype == np.uint8 and set(np.unique(out).tolist()) <= {0, 12, 87, 150}
    for value, box in OBJECTS.items():
        assert (out[box] == value).mean() > 0.8, value


def test_score_warns_of_instance_ids_read_as_a_soft_mask(tmp_path: Path) -> None:
    instances = {7: (slice(70, 96), slice(0, 128)), 24000: (slice(10, 50), slice(8, 40)),
                 26000: (slice(20, 60), slice(50, 90))}
    values = objects_map(np.uint16, instances)
    cv2.imwrite(str(tmp_path / "gt.png"), values)
    cv2.imwrite(str(tmp_path / "pred.png"), values)

    result = runner.invoke(app, ["score", str(tmp_path / "pred.png"), str(tmp_path / "gt.png")])

    assert result.exit_code == 0, result.output
    assert "7, 24000, 26000" in result.stderr and "class ids" in result.stderr


def test_batch_keeps_the_palette_of_an_empty_davis_frame(tiny_weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    one = objects_map(ids={1: (slice(10, 50), slice(12, 60))})
    for name, values in (("f0", one), ("f1", np.zeros_like(one))):
        photo_of(one, data / "images" / f"{name}.png")
        palette_png(data / "masks" / f"{name}.png", values, VOC_PALETTE)

    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out"), *cpu(tiny_weights), "--json"])

    assert result.exit_code == 0, result.output
    modes = {Path(item["output"]).stem: item["mode"] for item in json.loads(result.stdout)["items"]}
    assert modes == {"f0": "labels", "f1": "labels"}
    empty = Image.open(tmp_path / "out" / "f1.png")
    assert empty.mode == "P" and (empty.getpalette("RGB") + [0] * 768)[:768] == VOC_PALETTE
    assert not np.asarray(empty).any()


def test_refine_warns_of_ids_beside_a_large_255_region(tiny_weights: Path, tmp_path: Path) -> None:
    values = objects_map(ids={15: (slice(10, 40), slice(10, 40)), 255: (slice(40, 96), slice(40, 128))})
    Image.fromarray(values).save(tmp_path / "voc.png")
    image = photo_of(values, tmp_path / "im.png")

    result = runner.invoke(app, ["refine", str(image), str(tmp_path / "voc.png"), "-o", str(tmp_path / "o.png"),
                                 *cpu(tiny_weights), "--json"])

    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["mode"] == "binary"
    assert any("ids 15 and 255" in warning for warning in record["warnings"]), record


def test_webp_is_refused_for_a_grey_label_map(tiny_weights: Path, tmp_path: Path) -> None:
    values = objects_map(ids={3: (slice(10, 50), slice(12, 60)), 8: (slice(56, 92), slice(70, 124))})
    Image.fromarray(values).save(tmp_path / "ids.png")
    image = photo_of(values, tmp_path / "im.png")

    result = runner.invoke(app, ["refine", str(image), str(tmp_path / "ids.png"), "-o", str(tmp_path / "o.webp"),
                                 *cpu(tiny_weights)])

    assert result.exit_code == 2, result.output
    assert "WebP" in result.output and ".png" in result.output
    assert not (tmp_path / "o.webp").exists()


def test_eval_warns_of_a_ground_truth_of_instance_ids(tiny_weights: Path, tmp_path: Path) -> None:
    values = objects_map(ids={87: (slice(10, 50), slice(12, 60)), 150: (slice(56, 92), slice(70, 124))})
    photo_of(values, tmp_path / "p_im.png")
    cv2.imwrite(str(tmp_path / "p_gt.png"), values)
    cv2.imwrite(str(tmp_path / "p_seg.png"), (values > 0).astype(np.uint8) * 255)

    result = runner.invoke(app, ["eval", str(tmp_path), *cpu(tiny_weights), "--ratios", "1"])

    assert result.exit_code == 0, result.output
    assert "87, 150" in result.stderr and "p_gt.png" in result.stderr
