"""Pins from a mutation review of label-map refinement (labels.py) and COCO instance refinement
(coco/instances.py, coco/files.py, cli/coco.py): each test fails on a small change to that code
that the rest of the suite let through."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from crm_cli import coco
from crm_cli.labels import refine_labels, select_labels

# ---------------------------------------------------------------------------------------------
# Label maps


class MapRefiner:
    """Returns a fixed probability map per label (the label read from the coarse 0/255 mask) and
    records the order of the labels it was asked for."""

    def __init__(self, labels: np.ndarray, maps: dict[int, np.ndarray]) -> None:
        self.labels, self.maps, self.calls = labels, maps, []

    def refine(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (label,) = set(self.labels[mask == 255].tolist())
        self.calls.append(int(label))
        return self.maps[int(label)]


def test_a_probability_of_exactly_one_half_keeps_its_label() -> None:
    """A pixel keeps a label when its best probability reaches 0.5 (>=), and loses it just below."""
    labels = np.array([[1, 1]], np.uint8)
    maps = {1: np.array([[0.5, np.nextafter(np.float32(0.5), np.float32(0))]], np.float32)}
    refined = refine_labels(MapRefiner(labels, maps), np.zeros((1, 2, 3), np.uint8), labels)
    np.testing.assert_array_equal(refined, [[1, 0]])


def test_exact_ties_go_to_the_lower_id_and_ids_are_refined_in_ascending_order() -> None:
    """Two ids claiming a pixel with the same probability: the lower id takes it; the refiner is
    called id by id, ascending (the per-label notes of crm refine rely on that order)."""
    labels = np.array([[5, 2, 9]], np.uint8)
    maps = {2: np.array([[0.8, 0.8, 0.7]], np.float32), 5: np.array([[0.8, 0.8, 0.7]], np.float32),
            9: np.array([[0.1, 0.1, 0.7]], np.float32)}
    refiner = MapRefiner(labels, maps)
    refined = refine_labels(refiner, np.zeros((1, 3, 3), np.uint8), labels)
    assert refiner.calls == [2, 5, 9]
    np.testing.assert_array_equal(refined, [[2, 2, 2]])


def test_select_labels_never_names_the_background_as_missing() -> None:
    """--labels 0,1,9 on a map of 1 and 2: refine 1; only 9 is missing (0 is neither)."""
    assert select_labels([1, 2], [0, 1, 9]) == ([1], [9])
    assert select_labels([1, 2], [0]) == ([], [])


def test_a_refiner_returning_another_shape_is_a_value_error() -> None:
    """A probability map of the wrong shape is refused with a clear ValueError, not an IndexError."""
    labels = np.array([[1, 0], [1, 0]], np.uint8)
    maps = {1: np.ones((1, 2), np.float32)}
    with pytest.raises(ValueError, match=r"refiner returned shape \(1, 2\) for a \(2, 2\) mask"):
        refine_labels(MapRefiner(labels, maps), np.zeros((2, 2, 3), np.uint8), labels)


# ---------------------------------------------------------------------------------------------
# COCO instances


def rle(mask: np.ndarray) -> dict:
    """pycocotools' compressed RLE with str counts."""
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def decoded(segmentation: dict) -> np.ndarray:
    return mask_utils.decode({"size": segmentation["size"],
                              "counts": segmentation["counts"].encode("ascii")}).astype(bool)


class ConstRefiner:
    """Returns ``inside`` on the coarse mask and ``outside`` elsewhere; records the presets it got."""

    def __init__(self, inside: float = 1.0, outside: float = 0.0) -> None:
        self.inside, self.outside, self.presets = inside, outside, []

    def refine(self, image: np.ndarray, mask: np.ndarray, preset=None) -> np.ndarray:  # noqa: ANN001
        self.presets.append(preset)
        return np.where(mask > 127, self.inside, self.outside).astype(np.float32)


def square(height: int = 50, width: int = 60) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[10:14, 20:24] = True  # 16 pixels
    return mask


def test_min_area_equal_to_the_area_is_refined() -> None:
    """--min-area skips instances with FEWER pixels: a 16-pixel instance with min_area 16 is refined."""
    image = np.zeros((50, 60, 3), np.uint8)
    result = coco.refine_instance(ConstRefiner(), image, rle(square()), coco.RefineOptions(min_area=16))
    assert result["status"] == "refined" and result["area"] == 16 and result["bbox"] == [20.0, 10.0, 4.0, 4.0]
    assert coco.refine_instance(ConstRefiner(), image, rle(square()), coco.RefineOptions(min_area=16.5)) == {
        "status": "skipped", "reason": "min_area"}


def test_a_probability_of_exactly_one_half_is_not_foreground() -> None:
    """Instances are cut at p > 0.5, as crm refine's binary output: a crop of 0.5 around the object
    adds nothing to it."""
    image = np.zeros((50, 60, 3), np.uint8)
    result = coco.refine_instance(ConstRefiner(1.0, 0.5), image, rle(square()), coco.RefineOptions())
    assert result["area"] == 16 and result["bbox"] == [20.0, 10.0, 4.0, 4.0]
    assert np.array_equal(decoded(result["segmentation"]), square())


def test_an_instance_the_model_erases_is_kept_as_refined_empty(tmp_path: Path) -> None:
    """A refinement to nothing is a skip with reason refined_empty (the instance keeps its input),
    not a crash and not an empty mask; the image job reports it the same way."""
    image = np.zeros((50, 60, 3), np.uint8)
    assert coco.refine_instance(ConstRefiner(0.0), image, rle(square()), coco.RefineOptions()) == {
        "status": "skipped", "reason": "refined_empty"}
    cv2.imwrite(str(tmp_path / "a.png"), image)
    job = {"image": str(tmp_path / "a.png"), "name": "a.png", "height": 50, "width": 60,
           "instances": [{"index": 0, "id": 7, "segmentation": rle(square()), "bbox": None}]}
    [result] = coco.refine_image_job(ConstRefiner(0.0), job, coco.RefineOptions())["results"]
    assert (result["status"], result["reason"], result["id"]) == ("skipped", "refined_empty", 7)


@pytest.mark.parametrize(("outside", "inside"), [([60, 5, 10, 10], [59, 5, 10, 10]),
                                                 ([5, 50, 10, 10], [5, 49, 10, 10]),
                                                 ([-10, 5, 10, 10], [-9, 5, 10, 10]),
                                                 ([5, -10, 10, 10], [5, -9, 10, 10])])
def test_a_box_just_touching_the_image_edge_from_outside_is_refused(outside: list[int], inside: list[int]) -> None:
    """A COCO box [x, y, w, h] that starts at the right/bottom edge, or ends at the left/top edge,
    holds no pixel of the 60x50 image: the instance is bad; one pixel further in, it is refined."""
    image = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(coco.InstanceError, match="lies outside the 60x50 image"):
        coco.refine_instance(ConstRefiner(), image, rle(square()), coco.RefineOptions(), bbox=outside)
    assert coco.refine_instance(ConstRefiner(), image, rle(square()), coco.RefineOptions(),
                                bbox=inside)["status"] == "refined"


def test_the_preset_reaches_the_refiner() -> None:
    """RefineOptions.preset (crm coco's refine settings) is what every instance is refined with."""
    preset = object()
    refiner = ConstRefiner()
    coco.refine_instance(refiner, np.zeros((50, 60, 3), np.uint8), rle(square()), coco.RefineOptions(preset=preset))
    assert refiner.presets == [preset]


def annotations_file() -> dict:
    """Two crowd regions and three instances of categories 1, 2, 1 on one image."""
    polygon = [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0]]
    return {"images": [{"id": 1, "file_name": "a.png", "height": 50, "width": 60}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "segmentation": polygon, "iscrowd": 1},
                            {"id": 11, "image_id": 1, "category_id": 1, "segmentation": polygon, "iscrowd": 1},
                            {"id": 12, "image_id": 1, "category_id": 1, "segmentation": polygon, "iscrowd": 0},
                            {"id": 13, "image_id": 1, "category_id": 2, "segmentation": polygon, "iscrowd": 0},
                            {"id": 14, "image_id": 1, "category_id": 1, "segmentation": polygon}]}


def test_plan_counts_every_skip_and_never_resumes_a_left_out_instance(tmp_path: Path) -> None:
    """Skips are counted per instance; a recorded (done) instance that is a crowd region or of a
    category this run leaves out is skipped, not resumed."""
    plan = coco.plan_jobs(annotations_file(), tmp_path, category_ids=[1], done=[0, 3, 4])
    assert plan.skipped == {"crowd": 2, "category": 1}
    assert plan.resumed == {4}
    assert [i["id"] for job in plan.jobs for i in job["instances"]] == [12]


def test_an_empty_category_list_filters_nothing(tmp_path: Path) -> None:
    """plan_jobs(category_ids=[]) is no filter, as None (crm coco treats an empty set so as well)."""
    data = annotations_file()
    assert coco.plan_jobs(data, tmp_path, category_ids=[]).skipped == {"crowd": 2}
    assert coco.plan_jobs(data, tmp_path, category_ids=[]).instances == 3


def test_apply_results_never_touches_iscrowd() -> None:
    """Only segmentation, area and bbox change: an iscrowd of false stays false, a missing one missing."""
    data = {"annotations": [{"id": 1, "segmentation": [], "area": 3, "bbox": [0, 0, 1, 1], "iscrowd": False},
                            {"id": 2, "segmentation": [], "area": 3.0, "bbox": [0, 0, 1, 1]}]}
    result = {"status": "refined", "segmentation": {"size": [2, 2], "counts": "04"}, "area": 4,
              "bbox": [0.0, 0.0, 2.0, 2.0]}
    assert coco.apply_results(data, [{**result, "index": 0}, {**result, "index": 1}]) == 2
    first, second = data["annotations"]
    assert first["iscrowd"] is False and "iscrowd" not in second
    assert list(second) == ["id", "segmentation", "area", "bbox"] and second["area"] == 4.0


def test_full_image_option_reaches_every_instance(tiny_weights: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """crm coco --full-image refines each instance on the whole image (and --margin sets the crop)."""
    from crm_cli.cli import app

    cv2.imwrite(str(tmp_path / "a.png"), np.full((50, 60, 3), 90, np.uint8))
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 50, "width": 60}],
            "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "segmentation": rle(square()),
                             "area": 16, "bbox": [20, 10, 4, 4], "iscrowd": 0}]}
    (tmp_path / "in.json").write_text(json.dumps(data))
    seen = []

    def recording(refiner, image, segmentation, options, bbox=None):  # noqa: ANN001, ANN202
        seen.append((options.full_image, options.min_margin))
        return {"status": "skipped", "reason": "min_area"}

    monkeypatch.setattr(coco.instances, "refine_instance", recording)
    base = ["coco", str(tmp_path / "in.json"), "--images", str(tmp_path), "-w", str(tiny_weights), "-d", "cpu", "-q"]
    for extra in (["--full-image"], ["--margin", "7"]):
        result = CliRunner().invoke(app, [*base, "-o", str(tmp_path / f"out{len(seen)}.json"), *extra])
        assert result.exit_code == 0, result.output
    assert seen == [(True, 32), (False, 7)]
