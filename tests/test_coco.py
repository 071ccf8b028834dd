"""COCO annotations: RLE codec, crop refinement, the `crm coco` round trip, resume, and COCO scoring."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from crm_cli import coco
from crm_cli.cli import app
from crm_cli.metrics import score_pair

runner = CliRunner()
REFINED_KEYS = ("segmentation", "area", "bbox")
COLOURS = [(220, 40, 40), (40, 200, 60), (60, 90, 230)]


# ---------------------------------------------------------------------------------------------
# Synthetic data


def shapes_scene(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Textured background with an ellipse, a rotated box and a disc in distinct colours; their GT masks."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 90, size=(height, width, 3)).astype(np.uint8)
    masks = [np.zeros((height, width), np.uint8) for _ in range(3)]
    cv2.ellipse(masks[0], (width // 4, height // 3), (width // 8, height // 6), 20, 0, 360, 1, -1)
    box = cv2.boxPoints(((int(width * 0.7), int(height * 0.35)), (width * 0.2, height * 0.2), 30))
    cv2.fillPoly(masks[1], [np.round(box).astype(np.int32)], 1)
    cv2.circle(masks[2], (width // 2, int(height * 0.72)), height // 7, 1, -1)
    for mask, colour in zip(masks, COLOURS, strict=True):
        inside = mask > 0
        noise = rng.integers(-20, 21, size=(int(inside.sum()), 3))
        image[inside] = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
    return image, [m > 0 for m in masks]


def blocky(mask: np.ndarray, factor: int = 8) -> np.ndarray:
    """Coarse mask: area-downsample by ``factor`` then nearest-upsample (staircase boundaries)."""
    height, width = mask.shape
    small = cv2.resize(mask.astype(np.uint8) * 255, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST) > 127


def as_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer contours of a mask as COCO polygons (x, y pairs, floats)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[float(v) + 0.5 for v in c.reshape(-1)] for c in contours if len(c) >= 3]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (counts as a list), built here independently of the code under test."""
    flat = mask.ravel(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def compressed_rle(mask: np.ndarray) -> dict:
    """pycocotools' compressed RLE with the counts as str, as JSON files hold it."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def make_dataset(folder: Path, height: int = 120, width: int = 160) -> tuple[Path, Path, list[np.ndarray]]:
    """A COCO file over two images: a polygon, an uncompressed RLE, a compressed RLE, a crowd region,
    an empty polygon and a box outside the image; plus extra fields that must survive untouched.

    Returns (annotation file, images folder, GT masks of annotations 1..3 in order).
    """
    images_dir = folder / "images"
    (images_dir / "sub").mkdir(parents=True)
    image, gts = shapes_scene(height, width, seed=0)
    cv2.imwrite(str(images_dir / "sub" / "a.png"), image[:, :, ::-1])
    second, second_gts = shapes_scene(height, width, seed=1)
    cv2.imwrite(str(images_dir / "b.png"), second[:, :, ::-1])
    crowd = np.zeros((height, width), bool)
    crowd[5:20, 100:150] = True
    data = {
        "info": {"description": "synthetic \u00e9t\u00e9 set", "version": "1.0", "year": 2024},
        "licenses": [{"id": 3, "name": "CC-BY", "url": "http://example.org"}],
        "images": [
            {"id": 7, "file_name": "sub/a.png", "height": height, "width": width, "license": 3,
             "date_captured": "2024-01-01 00:00:00"},
            {"id": 9, "file_name": "b.png", "height": height, "width": width, "flickr_url": None},
        ],
        "categories": [{"id": 1, "name": "ellipse", "supercategory": "shape"},
                       {"id": 2, "name": "box", "supercategory": "shape", "keypoints": []}],
        "annotations": [
            {"id": 101, "image_id": 7, "category_id": 1, "segmentation": as_polygons(blocky(gts[0])),
             "area": 1234.5, "bbox": [1.0, 2.0, 3.0, 4.0], "iscrowd": 0, "score": 0.1,
             "attributes": {"occluded": False}},
            {"id": 102, "image_id": 7, "category_id": 2, "segmentation": uncompressed_rle(blocky(gts[1])),
             "area": 77, "bbox": [0, 0, 1, 1], "iscrowd": 0},
            {"iscrowd": 0, "id": 103, "image_id": 9, "category_id": 1,
             "segmentation": compressed_rle(blocky(second_gts[2])), "area": 3.0e2, "bbox": [5, 5, 5, 5]},
            {"id": 104, "image_id": 7, "category_id": 1, "segmentation": uncompressed_rle(crowd), "area": 750.0,
             "bbox": [100.0, 5.0, 50.0, 15.0], "iscrowd": 1},
            {"id": 105, "image_id": 9, "category_id": 2, "segmentation": [], "area": 0.0, "bbox": [0, 0, 0, 0],
             "iscrowd": 0},
            {"id": 106, "image_id": 9, "category_id": 2,
             "segmentation": [[width + 10.0, 10.0, width + 40.0, 10.0, width + 40.0, 40.0]], "area": 450.0,
             "bbox": [width + 10.0, 10.0, 30.0, 30.0], "iscrowd": 0},
        ],
        "extra_top_level": {"nested": [1, 2.5, "x"]},
    }
    path = folder / "instances.json"
    path.write_text(json.dumps(data, indent=2))
    return path, images_dir, [gts[0], gts[1], second_gts[2]]


def annotation_mask(annotation: dict, height: int, width: int) -> np.ndarray:
    """Decode with pycocotools only (the oracle), whatever the segmentation format."""
    segmentation = annotation["segmentation"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


@pytest.fixture(scope="module")
def shipped_weights() -> Path:
    """The shipped checkpoint: the tiny random model refines these small crops to nothing at all."""
    from crm_cli.checkpoint import default_weights_path

    path = default_weights_path()
    if not path.exists():
        pytest.skip("no shipped weights")
    return path


class DilateRefiner:
    """Stands in for the model: grows the coarse mask by one pixel, and records the crops it saw."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, int]] = []

    def refine(self, image: np.ndarray, mask: np.ndarray, **options) -> np.ndarray:  # noqa: ANN003
        assert image.shape[:2] == mask.shape
        assert image.flags.c_contiguous and mask.flags.c_contiguous  # as torch.from_numpy(...).view needs
        self.shapes.append(mask.shape)
        return cv2.dilate((mask > 127).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# RLE codec and crops


def test_rle_codec_matches_pycocotools_on_random_masks() -> None:
    rng = np.random.default_rng(3)
    for trial in range(120):
        height, width = (int(v) for v in rng.integers(1, 30, 2))
        mask = rng.random((height, width)) > (0.5 if trial % 3 else 0.97)
        if trial % 10 == 0:
            mask[:] = trial % 20 == 0  # all background / all foreground
        expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")
        assert coco.encode_mask(mask)["counts"] == expected
        runs = coco.decode_rle_string(expected)
        assert runs.tolist() == uncompressed_rle(mask)["counts"]
        x0 = int(rng.integers(0, width))
        x1 = int(rng.integers(x0 + 1, width + 1))
        assert np.array_equal(coco.decode_columns(runs, height, x0, x1), mask[:, x0:x1])
        only_band = np.zeros_like(mask)
        only_band[:, x0:x1] = mask[:, x0:x1]
        rebuilt = coco.runs_from_columns(mask[:, x0:x1], width, x0)
        assert coco.encode_rle_string(rebuilt) == coco.encode_mask(only_band)["counts"]


def test_rle_string_with_large_deltas_round_trips() -> None:
    # Runs of a 6000x4000 image: deltas far beyond one 5-bit group, negative ones included.
    mask = np.zeros((4000, 6000), bool)
    mask[3990:4000, 10:11] = True
    mask[0:2500, 5000:5001] = True
    expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")
    runs = coco.decode_rle_string(expected)
    assert runs.tolist() == [10 * 4000 + 3990, 10, (5000 - 11) * 4000, 2500, 1000 * 4000 - 2500]
    assert coco.encode_rle_string(runs) == expected


def test_polygons_and_rles_decode_like_pycocotools() -> None:
    _, gts = shapes_scene(60, 80)
    polygons = as_polygons(gts[0])
    annotation = {"segmentation": polygons}
    assert np.array_equal(coco.decode_segmentation(polygons, 60, 80), annotation_mask(annotation, 60, 80))
    for encode in (uncompressed_rle, compressed_rle):
        assert np.array_equal(coco.decode_segmentation(encode(gts[1]), 60, 80), gts[1])


@pytest.mark.parametrize(("segmentation", "message"), [
    ([], "empty polygon"),
    ([[1.0, 2.0, 3.0, 4.0]], "polygon 0 has 4 coordinates"),
    ([[1.0, 2.0, 3.0, "x", 5.0, 6.0]], "non-numeric"),
    ({"size": [10, 10], "counts": [5, 5]}, "does not match the image size"),
    ({"size": [60, 80], "counts": [5, 5]}, "add up to 10 pixels"),
    (None, "no segmentation"),
    ({"size": 5, "counts": "abc"}, "RLE size 5 does not match"),  # was a TypeError that ended the run
    ({"size": [60, 80], "counts": "\u00e9"}, "invalid character '\u00e9' in compressed RLE"),
])
def test_bad_segmentations_are_instance_errors(segmentation, message) -> None:  # noqa: ANN001
    with pytest.raises(coco.InstanceError, match=message):
        coco.runs_from_segmentation(segmentation, 60, 80)


def test_crop_window_margin_is_32_px_or_a_quarter_of_the_longer_side() -> None:
    assert coco.crop_window((100, 200, 120, 210), 4000, 6000) == (68, 168, 152, 242)  # 32 px
    assert coco.crop_window((1000, 1000, 1400, 1100), 4000, 6000) == (900, 900, 1500, 1200)  # 400 / 4
    assert coco.crop_window((5, 3990, 5990, 3999), 4000, 6000) == (0, 2493, 6000, 4000)  # ceil(5985 / 4), clipped
    assert coco.crop_window((10, 10, 20, 20), 100, 100, min_margin=0, margin_fraction=0.5) == (5, 5, 25, 25)


def test_small_instance_in_a_6k_image_is_refined_in_a_small_crop_and_pasted_back() -> None:
    height, width = 4000, 6000
    image = np.zeros((height, width, 3), np.uint8)
    coarse = np.zeros((height, width), bool)
    coarse[3000:3020, 4500:4530] = True  # 30 x 20 box -> 32 px margin -> a 94 x 84 crop
    refiner = DilateRefiner()
    result = coco.refine_instance(refiner, image, compressed_rle(coarse), coco.RefineOptions())
    assert refiner.shapes == [(84, 94)]
    expected = cv2.dilate(coarse.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    decoded = mask_utils.decode({"size": result["segmentation"]["size"],
                                 "counts": result["segmentation"]["counts"].encode("ascii")}).astype(bool)
    assert np.array_equal(decoded, expected)
    assert result["area"] == 32 * 22 == int(expected.sum())
    assert result["bbox"] == [4499.0, 2999.0, 32.0, 22.0]
    full = DilateRefiner()
    whole = coco.refine_instance(full, image, compressed_rle(coarse), coco.RefineOptions(full_image=True))
    assert full.shapes == [(height, width)] and whole == result


def test_refine_instance_skips_small_and_rejects_outside_boxes() -> None:
    image = np.zeros((50, 60, 3), np.uint8)
    mask = np.zeros((50, 60), bool)
    mask[10:14, 10:14] = True
    refiner = DilateRefiner()
    assert coco.refine_instance(refiner, image, compressed_rle(mask), coco.RefineOptions(min_area=17)) == {
        "status": "skipped", "reason": "min_area"}
    assert refiner.shapes == []
    with pytest.raises(coco.InstanceError, match="outside the 60x50 image"):
        coco.refine_instance(refiner, image, compressed_rle(mask), coco.RefineOptions(), bbox=[70, 5, 10, 10])
    with pytest.raises(coco.InstanceError, match="covers no pixel"):
        coco.refine_instance(refiner, image, [[70.0, 5.0, 80.0, 5.0, 80.0, 15.0]], coco.RefineOptions())


# ---------------------------------------------------------------------------------------------
# crm coco


def run_coco(annotations: Path, images: Path, output: Path, *extra: str):  # noqa: ANN201
    return runner.invoke(app, ["coco", str(annotations), "--images", str(images), "-o", str(output), *extra])


def assert_only_refined_fields_changed(before: dict, after: dict, refined_ids: set[int]) -> None:
    """Every value but segmentation/area/bbox of refined instances serialises to the same JSON text."""
    assert list(after) == list(before)
    for key in before:
        if key != "annotations":
            assert json.dumps(after[key]) == json.dumps(before[key]), key
    assert len(after["annotations"]) == len(before["annotations"])
    for old, new in zip(before["annotations"], after["annotations"], strict=True):
        if old["id"] in refined_ids:
            assert list(new) == list(old)
            for key in old:
                if key not in REFINED_KEYS:
                    assert json.dumps(new[key]) == json.dumps(old[key]), (old["id"], key)
        else:
            assert json.dumps(new) == json.dumps(old), old["id"]


def test_coco_round_trip_keeps_every_other_field_and_reports_bad_instances(shipped_weights, tmp_path) -> None:  # noqa: ANN001
    from pycocotools.coco import COCO

    annotations, images, _ = make_dataset(tmp_path)
    output = tmp_path / "out" / "refined.json"
    result = run_coco(annotations, images, output, "-w", str(shipped_weights), "-d", "cpu", "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["refined"], summary["skipped"], summary["failed"], summary["resumed"]) == (3, 1, 2, 0)
    assert summary["skipped_by_reason"] == {"crowd": 1}
    assert {f["id"]: f["error"] for f in summary["failures"]} == {
        105: "empty polygon list", 106: "bbox [170.0, 10.0, 30.0, 30.0] lies outside the 160x120 image"}
    assert "instance 105" in result.stderr and "2 failed" in result.stderr
    # No temporary files left behind; the sidecar stays because two instances failed.
    assert sorted(p.name for p in output.parent.iterdir()) == ["refined.json", "refined.json.partial.jsonl"]

    before = json.loads(annotations.read_text())
    after = json.loads(output.read_text(encoding="utf-8"))
    assert_only_refined_fields_changed(before, after, {101, 102, 103})
    loaded = COCO(str(output))  # pycocotools loads it and decodes every instance
    for annotation in after["annotations"]:
        if annotation["id"] in (101, 102, 103):
            segmentation = annotation["segmentation"]
            assert set(segmentation) == {"size", "counts"} and isinstance(segmentation["counts"], str)
            rle = loaded.annToRLE(loaded.anns[annotation["id"]])
            mask = loaded.annToMask(loaded.anns[annotation["id"]])
            assert annotation["area"] == int(mask.sum()) == int(mask_utils.area(rle)) > 0
            assert annotation["bbox"] == mask_utils.toBbox(rle).tolist()
    by_id = {a["id"]: a for a in after["annotations"]}
    assert isinstance(by_id[102]["area"], int) and isinstance(by_id[101]["area"], float)
    # Failed instances keep their input, and the sidecar stays so a rerun retries only them.
    first_bytes = output.read_bytes()
    again = run_coco(annotations, images, output, "-w", str(shipped_weights), "-d", "cpu", "--json")
    second = json.loads(again.stdout)
    assert again.exit_code == 1 and (second["refined"], second["resumed"], second["failed"]) == (0, 3, 2)
    assert output.read_bytes() == first_bytes


def test_coco_category_and_area_filters_leave_instances_untouched(shipped_weights, tmp_path) -> None:  # noqa: ANN001
    annotations, images, gts = make_dataset(tmp_path)
    before = json.loads(annotations.read_text())
    before["annotations"] = before["annotations"][:4]  # only good instances and the crowd region
    annotations.write_text(json.dumps(before))
    output = tmp_path / "refined.json"
    small = int(blocky(gts[2]).sum())  # the disc is the smallest coarse instance
    result = run_coco(annotations, images, output, "-w", str(shipped_weights), "-d", "cpu", "--json",
                      "--category-ids", "1", "--min-area", str(small + 1))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["skipped_by_reason"] == {"crowd": 1, "category": 1, "min_area": 1}
    assert (summary["refined"], summary["failed"]) == (1, 0)
    assert_only_refined_fields_changed(before, json.loads(output.read_text()), {101})
    assert not coco.sidecar_path(output).exists()


def test_coco_usage_errors(tmp_path) -> None:  # noqa: ANN001
    annotations, images, _ = make_dataset(tmp_path)
    assert run_coco(annotations, images, annotations).exit_code == 2
    assert run_coco(annotations, images, tmp_path / "o.json", "--category-ids", "a,b").exit_code == 2
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = run_coco(broken, images, tmp_path / "o.json")
    assert result.exit_code == 1 and "not valid JSON" in result.stderr
    assert not (tmp_path / "o.json").exists()


def test_coco_list_options_and_nan_are_usage_errors_naming_the_option(tmp_path) -> None:  # noqa: ANN001
    annotations, images, _ = make_dataset(tmp_path)
    for extra, option in [(("--category-ids", "1,,2"), "--category-ids"), (("--category-ids", "1,"), "--category-ids"),
                          (("--category-ids", ""), "--category-ids"), (("--min-area", "nan"), "--min-area")]:
        result = run_coco(annotations, images, tmp_path / "o.json", *extra, "--json")
        assert result.exit_code == 2, result.output
        assert f"'{option}'" in result.stderr
        if option == "--min-area":  # click's own check, before the command runs: no record
            assert result.stdout == ""
        else:  # crm's own check: the failure record, as for a runtime failure
            assert json.loads(result.stdout)["status"] == "failed"
        if option == "--category-ids":
            # presets.split_items' refusal, as for --ratios and --labels.
            empty_item = f"category ids must be comma-separated, with no empty item; got {extra[1]!r}"
            assert empty_item in " ".join(result.stderr.split()), result.stderr
    assert not (tmp_path / "o.json").exists()
    help_text = " ".join(runner.invoke(app, ["coco", "--help"], terminal_width=200).output.split())
    assert "fixed (README). [default: auto]" in help_text


def test_category_ids_not_in_the_file_are_named(tmp_path) -> None:  # noqa: ANN001
    data = {"images": [], "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 99, "category_id": 1, "segmentation": []}]}
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps(data))
    output = tmp_path / "o.json"
    # Some ids unknown: a warning naming them; the rest run as asked (no instance of 2, so no model loads).
    some = run_coco(annotations, tmp_path, output, "--category-ids", "2,5,7", "-q", "--json")
    assert some.exit_code == 0, some.output
    assert " ".join(some.stderr.split()) == (f"warning: --category-ids: categories 5, 7 are not in {annotations}; "
                                             "refining category 2 only")
    assert json.loads(some.stdout)["skipped_by_reason"] == {"category": 1}
    output.unlink()
    # None known: nothing could be refined, a usage error before anything is written; with --json its
    # record, as for batch's and eval's "no pairs found".
    none = run_coco(annotations, tmp_path, output, "--category-ids", "5", "--json")
    assert none.exit_code == 2, none.output
    record = json.loads(none.stdout)
    assert record["status"] == "failed" and record["error"].startswith("--category-ids: category 5 is not in")
    assert none.stderr.count("error:") == 1
    assert (f"error: --category-ids: category 5 is not in {annotations} (its categories: 1 (cat), 2 (dog)); "
            "nothing to refine") in " ".join(none.stderr.split())
    assert "Try 'crm coco --help' for the options." in " ".join(none.stderr.split())  # the usage error's hint
    assert not output.exists() and not coco.sidecar_path(output).exists()
    # Without a 'categories' list, the ids the annotations use are the categories.
    del data["categories"]
    annotations.write_text(json.dumps(data))
    bare = run_coco(annotations, tmp_path, output, "--category-ids", "3,4")
    assert bare.exit_code == 2 and "none of categories 3, 4 is in" in bare.stderr
    assert "(its categories: 1);" in " ".join(bare.stderr.split())


def test_category_ids_used_by_annotations_count_even_when_the_categories_list_omits_them(tmp_path) -> None:  # noqa: ANN001
    # The annotations decide what can be refined: an empty or partial 'categories' list is no usage error.
    data = {"images": [], "categories": [],
            "annotations": [{"id": 1, "image_id": 99, "category_id": 1, "segmentation": []},
                            {"id": 2, "image_id": 99, "category_id": [1], "segmentation": []}]}
    annotations = tmp_path / "a.json"
    annotations.write_text(json.dumps(data))
    output = tmp_path / "o.json"
    result = run_coco(annotations, tmp_path, output, "--category-ids", "1", "--json")
    # Instance 1 is asked for but its image is missing (a failed instance, exit 1); instance 2's
    # list-valued category id is no category asked for, skipped without a traceback.
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    record = json.loads(result.stdout)
    assert record["skipped_by_reason"] == {"category": 1} and record["failed"] == 1


def test_quiet_coco_still_warns_that_earlier_progress_is_discarded(tmp_path) -> None:  # noqa: ANN001
    annotations, images, _ = make_dataset(tmp_path)
    data = json.loads(annotations.read_text())
    data["annotations"] = [{"id": 1, "image_id": 99, "category_id": 1,
                            "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]]}]
    annotations.write_text(json.dumps(data))  # nothing to refine, so no model loads
    output = tmp_path / "o.json"
    coco.sidecar_path(output).write_text('{"crm_coco_sidecar": 1, "input_sha256": "another file"}\n')
    result = run_coco(annotations, images, output, "-q")
    assert result.exit_code == 1
    assert "warning:" in result.stderr and "starting over" in " ".join(result.stderr.split())


def test_unhashable_image_ids_fail_their_instances_not_the_run(tmp_path) -> None:  # noqa: ANN001
    annotations, images, _ = make_dataset(tmp_path)
    data = json.loads(annotations.read_text())
    data["images"][1]["id"] = [9]  # b.png: a list cannot name an image
    data["annotations"][0]["image_id"] = [7]
    plan = coco.plan_jobs(data, images)  # was TypeError: unhashable type: 'list'
    assert {f["id"]: f["error"] for f in plan.failed} == {
        101: "image_id [7] not in 'images'", 103: "image_id 9 not in 'images'",
        105: "image_id 9 not in 'images'", 106: "image_id 9 not in 'images'"}
    assert [job["name"] for job in plan.jobs] == ["sub/a.png"]
    with pytest.raises(ValueError, match=r"annotation 101 \(image_id \[7\]\): its image_id is not in the ground "
                                         r"truth's 'images'"):
        coco.score_coco(data, data)
    del data["images"][0]["height"]
    data["annotations"][0]["image_id"] = 7
    with pytest.raises(ValueError, match=r"annotation 101 \(image_id 7\): its image needs a whole positive 'height' "
                                         r"and 'width', not None and 160"):  # was a KeyError
        coco.score_coco(data, data)


def test_interrupted_coco_run_resumes_and_matches_a_straight_run(shipped_weights, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    annotations, images, _ = make_dataset(tmp_path)
    data = json.loads(annotations.read_text())
    data["annotations"] = data["annotations"][:4]
    annotations.write_text(json.dumps(data))
    args = ("-w", str(shipped_weights), "-d", "cpu", "--json")
    straight = tmp_path / "straight.json"
    assert run_coco(annotations, images, straight, *args).exit_code == 0

    real = coco.refine_instance
    calls = []

    def interrupted(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    def interrupted_run(*extra: str) -> None:
        calls.clear()
        monkeypatch.setattr(coco.instances, "refine_instance", interrupted)
        result = run_coco(annotations, images, output, *extra)
        monkeypatch.setattr(coco.instances, "refine_instance", real)
        assert result.exit_code not in (0, 1, 2) and len(calls) == 3  # Ctrl-C on the third instance

    output = tmp_path / "resumed.json"
    interrupted_run(*args)
    sidecar = coco.sidecar_path(output)
    assert not output.exists()
    progress = sidecar.read_text()
    lines = progress.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["crm_coco_sidecar"] == 1  # header + 2 instances
    with sidecar.open("a") as handle:
        handle.write('{"index": 2, "id": 103, "status": "refi')  # a line torn by the interruption
    result = run_coco(annotations, images, output, *args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["refined"], summary["resumed"]) == (1, 2)
    assert output.read_bytes() == straight.read_bytes()
    assert not sidecar.exists()

    # Progress made with other settings is not mixed in.
    sidecar.write_text(progress)
    other = run_coco(annotations, images, output, *args, "--margin", "40")
    assert other.exit_code == 0 and "different input or settings" in other.stderr
    assert json.loads(other.stdout)["resumed"] == 0


def test_shipped_model_improves_every_instance(shipped_weights, tmp_path) -> None:  # noqa: ANN001
    height, width = 240, 320
    image, gts = shapes_scene(height, width, seed=2)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "s.png"), image[:, :, ::-1])
    coarse = [blocky(gt) for gt in gts]
    segmentations = [as_polygons(coarse[0]), uncompressed_rle(coarse[1]), compressed_rle(coarse[2])]
    data = {"images": [{"id": 1, "file_name": "s.png", "height": height, "width": width}],
            "categories": [{"id": 1, "name": "shape"}],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": s, "area": 0.0,
                             "bbox": [0, 0, 0, 0], "iscrowd": 0} for k, s in enumerate(segmentations)]}
    gt_data = copy.deepcopy(data)
    for annotation, gt in zip(gt_data["annotations"], gts, strict=True):
        annotation["segmentation"] = compressed_rle(gt)
    (tmp_path / "coarse.json").write_text(json.dumps(data))
    (tmp_path / "gt.json").write_text(json.dumps(gt_data))
    output = tmp_path / "refined.json"
    result = run_coco(tmp_path / "coarse.json", tmp_path / "images", output, "-w", str(shipped_weights), "-d", "cpu",
                      "-q")
    assert result.exit_code == 0, result.output
    refined = json.loads(output.read_text())

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.count_nonzero(a & b)) / float(np.count_nonzero(a | b))

    coarse_masks = [annotation_mask(a, height, width) for a in data["annotations"]]
    refined_masks = [annotation_mask(a, height, width) for a in refined["annotations"]]
    coarse_iou = [iou(mask, gt) for mask, gt in zip(coarse_masks, gts, strict=True)]
    refined_iou = [iou(mask, gt) for mask, gt in zip(refined_masks, gts, strict=True)]
    assert all(r >= c for r, c in zip(refined_iou, coarse_iou, strict=True)), (coarse_iou, refined_iou)
    assert np.mean(refined_iou) > np.mean(coarse_iou) + 0.02, (coarse_iou, refined_iou)

    # crm score on the two COCO files gives the same numbers as scoring the full masks one by one.
    scored = runner.invoke(app, ["score", str(output), str(tmp_path / "gt.json"), "--json"])
    assert scored.exit_code == 0, scored.output
    report = json.loads(scored.stdout)
    full = [score_pair(mask, gt) for mask, gt in zip(refined_masks, gts, strict=True)]
    assert report["n"] == 3 and [i["name"] for i in report["images"]] == ["s.png#1", "s.png#2", "s.png#3"]
    assert report["iou"] == pytest.approx(sum(s.intersection for s in full) / sum(s.union for s in full), abs=1e-12)
    assert report["mba"] == pytest.approx(np.mean([s.mba for s in full]), abs=1e-12)
    assert [i["iou"] for i in report["images"]] == pytest.approx(refined_iou, abs=1e-12)


def test_score_instance_on_a_window_equals_full_image_scoring() -> None:
    rng = np.random.default_rng(5)
    height, width = 300, 500
    for trial in range(6):
        gt = np.zeros((height, width), np.uint8)
        cv2.circle(gt, (int(rng.integers(0, width)), int(rng.integers(0, height))), int(rng.integers(3, 60)), 1, -1)
        pred = cv2.dilate(gt, np.ones((5, 5), np.uint8)) if trial % 2 else np.roll(gt, 7, axis=1)
        if trial == 5:
            pred = np.zeros_like(gt)
        runs = [coco.decode_rle_string(compressed_rle(m)["counts"]) for m in (pred, gt)]
        windowed = coco.score_instance(runs[0], runs[1], height, width)
        full = score_pair(pred.astype(bool), gt.astype(bool))
        assert (windowed.intersection, windowed.union) == (full.intersection, full.union)
        assert windowed.mba == pytest.approx(full.mba, abs=1e-12)


def test_score_coco_needs_a_prediction_for_every_gt_instance(tmp_path) -> None:  # noqa: ANN001
    annotations, _, _ = make_dataset(tmp_path)
    data = json.loads(annotations.read_text())
    data["annotations"] = data["annotations"][:4]
    (tmp_path / "gt.json").write_text(json.dumps(data))
    partial = copy.deepcopy(data)
    partial["annotations"] = partial["annotations"][:1]
    (tmp_path / "pred.json").write_text(json.dumps(partial))
    result = runner.invoke(app, ["score", str(tmp_path / "pred.json"), str(tmp_path / "gt.json")])
    assert result.exit_code == 1
    text = " ".join(result.stderr.split())
    assert "2 of 3 ground-truth instances failed" in text
    assert "annotation 102" in text and "annotation 103" in text  # each one on its own failed: line
    same = runner.invoke(app, ["score", str(tmp_path / "gt.json"), str(tmp_path / "gt.json"), "--json"])
    assert same.exit_code == 0 and json.loads(same.stdout)["iou"] == 1.0  # the crowd region is not scored
    assert json.loads(same.stdout)["n"] == 3
    mixed = runner.invoke(app, ["score", str(tmp_path / "gt.json"), str(tmp_path)])
    assert mixed.exit_code == 2


def test_score_refuses_unhashable_annotation_ids_in_one_line(tmp_path) -> None:  # noqa: ANN001
    square = [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]
    good = {"images": [{"id": 1, "file_name": "x.png", "height": 10, "width": 10}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "segmentation": square},
                            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": square}]}
    bad = copy.deepcopy(good)
    bad["annotations"][1]["id"] = [11]  # was TypeError: unhashable type: 'list'
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    for pred, gt, side in (("bad", "good", "predictions"), ("good", "bad", "ground truth")):
        result = runner.invoke(app, ["score", str(tmp_path / f"{pred}.json"), str(tmp_path / f"{gt}.json")])
        assert result.exit_code == 1, result.output
        assert " ".join(result.stderr.split()) == (f"error: {side}: annotation #1 has id [11]; an annotation id "
                                                   "must be a number or a string")
    bad["annotations"][1]["id"] = {"n": 11}
    with pytest.raises(ValueError, match=r"annotation #1 has id \{'n': 11\}"):
        coco.score_coco(bad, good)


def test_missing_images_and_size_mismatches_fail_their_instances_only(tmp_path) -> None:  # noqa: ANN001
    annotations, images, _ = make_dataset(tmp_path)
    data = json.loads(annotations.read_text())
    data["images"][1]["height"] = 100  # b.png is really 160x120
    data["images"].append({"id": 11, "file_name": "gone.png", "height": 120, "width": 160})
    data["annotations"] = data["annotations"][:4] + [
        {"id": 107, "image_id": 11, "category_id": 1, "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]]},
        {"id": 108, "image_id": 99, "category_id": 1, "segmentation": [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]]}]
    plan = coco.plan_jobs(data, images)
    assert [(f["id"], f["error"]) for f in plan.failed] == [(108, "image_id 99 not in 'images'")]
    assert [job["name"] for job in plan.jobs] == ["sub/a.png", "b.png", "gone.png"]
    assert plan.skipped == {"crowd": 1} and plan.instances == 4
    refiner = DilateRefiner()
    results = [coco.refine_image_job(refiner, job, coco.RefineOptions())["results"] for job in plan.jobs]
    assert [r["status"] for r in results[0]] == ["refined", "refined"]
    assert results[1][0]["status"] == "failed" and "image is 160x120 but the annotation file says 160x100" in \
        results[1][0]["error"]
    assert results[2][0]["status"] == "failed" and "gone.png" in results[2][0]["error"]
    assert len(refiner.shapes) == 2  # nothing was refined for the failed images


def test_image_job_yields_each_instance_as_soon_as_it_is_refined(tmp_path) -> None:  # noqa: ANN001
    annotations, images, _ = make_dataset(tmp_path)
    job = coco.plan_jobs(json.loads(annotations.read_text()), images).jobs[0]
    assert job["name"] == "sub/a.png" and len(job["instances"]) == 2
    refiner = DilateRefiner()
    stream = coco.iter_image_job(refiner, job, coco.RefineOptions())
    first = next(stream)
    assert first["id"] == job["instances"][0]["id"] and first["status"] == "refined"
    assert len(refiner.shapes) == 1  # the second instance is not refined yet (resume records the first now)
    lazily = [first, *stream]
    at_once = coco.refine_image_job(DilateRefiner(), job, coco.RefineOptions())["results"]
    without_time = [[{k: v for k, v in r.items() if k != "seconds"} for r in rs] for rs in (lazily, at_once)]
    assert without_time[0] == without_time[1] and len(lazily) == 2


def test_category_and_label_ids_are_worded_by_one_function(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from crm_cli import pipeline
    from crm_cli.cli.coco import UnknownCategoriesError, check_categories
    from crm_cli.masks import MaskData

    assert pipeline.ids_text([5], "category", "categories") == "category 5"
    assert pipeline.ids_text([5, 7], "category", "categories") == "categories 5, 7"
    assert pipeline.ids_text([3], "label") == "label 3" and pipeline.ids_text([3, 7], "label") == "labels 3, 7"
    assert pipeline.ids_text(list(range(1, 23)), "label") == f"labels {', '.join(map(str, range(1, 21)))}, ... (2 more)"

    # Both messages go through it: --category-ids of crm coco and --labels of refine/batch.
    monkeypatch.setattr(pipeline, "ids_text", lambda ids, one, many=None: f"<{one} {list(ids)}>")
    data = {"annotations": [{"id": 1, "image_id": 1, "category_id": 1}]}
    with pytest.raises(UnknownCategoriesError, match=r"^--category-ids: <category \[5\]> is not in") as raised:
        check_categories(data, {5}, tmp_path / "a.json")
    assert raised.value.exit_code == 2  # a usage error, through cli.failures.user_errors
    label_map = MaskData(np.array([[0, 1], [2, 2]], np.uint8), "gray8")
    notes, _ = pipeline.labels_notes(label_map, "labels", [1, 9], "m.png")
    assert notes == ["--labels: <label [9]> is not in m.png; refining <label [1]> only"]


def test_coco_warns_once_about_a_16bit_photo_read_on_a_smaller_scale(shipped_weights, tmp_path) -> None:  # noqa: ANN001
    annotations, images, _ = make_dataset(tmp_path)
    photo = images / "b.png"  # image 9: one refined instance and two that fail
    wide = cv2.imread(str(photo)).astype(np.uint16) * 16
    wide[0, 0] = 4095
    cv2.imwrite(str(photo), wide)
    output = tmp_path / "out.json"
    result = run_coco(annotations, images, output, "-w", str(shipped_weights), "-d", "cpu", "--json", "-q")
    assert result.exit_code == 1  # the two bad instances of make_dataset
    summary = json.loads(result.stdout)  # stdout stays JSON only
    assert summary["refined"] == 3
    note = "a 16-bit image whose largest value is 4095, read as 12-bit values (4095 = white)"
    assert " ".join(result.stderr.split()).count(note) == 1, result.stderr
    # The note is for the log, not a result: the resume sidecar does not record it.
    sidecar = tmp_path / "out.json.partial.jsonl"
    assert all("notes" not in json.loads(line) for line in sidecar.read_text().splitlines())
