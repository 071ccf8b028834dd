"""COCO files as dataset builders write them (helper audit): degenerate and corrupt polygons, RLE counts
out of range, EXIF-rotated images annotated on their stored pixels, odd image sizes, lone surrogates in
the JSON, numbers written back with their own text, Windows file names, scoring against another file's
images and scoring past instances that cannot be decoded. Expected values are computed by hand or by crm's
own decoders; pycocotools is not imported here."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from crm_cli import coco
from crm_cli.cli import app
from crm_cli.coco import exactjson

runner = CliRunner()
SQUARE = [40.0, 30.0, 90.0, 30.0, 90.0, 80.0, 40.0, 80.0]  # pycocotools fills x 40..89, y 30..79: 2500 pixels


def square_mask(height: int = 120, width: int = 160) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[30:80, 40:90] = True
    return mask


class Recorder:
    """Stands in for the model: returns the coarse mask and records the crops it was given."""

    def __init__(self) -> None:
        self.crops: list[tuple[np.ndarray, np.ndarray]] = []

    def refine(self, image: np.ndarray, mask: np.ndarray, **options) -> np.ndarray:  # noqa: ANN003
        self.crops.append((image, mask > 127))
        return (mask > 127).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Polygons


def test_parts_of_fewer_than_3_points_are_left_out_as_pycocotools_adds_nothing_for_them() -> None:
    alone = coco.decode_segmentation([SQUARE], 120, 160)
    assert np.array_equal(alone, square_mask())  # the hand-computed rasterisation
    # A stray 2-point part (a click that made a line) failed the whole instance; a 4-coordinate first
    # part is even read as a box by pycocotools' frPyObjects.
    for parts in ([SQUARE, [1.0, 2.0, 3.0, 4.0]], [[1.0, 2.0, 3.0, 4.0], SQUARE], [SQUARE, [], [5.0, 5.0]]):
        assert np.array_equal(coco.decode_segmentation(parts, 120, 160), alone), parts
    # Only degenerate parts: nothing to refine, named.
    with pytest.raises(coco.InstanceError, match=r"polygon 0 has 4 coordinates"):
        coco.runs_from_segmentation([[1.0, 2.0, 3.0, 4.0]], 120, 160)
    with pytest.raises(coco.InstanceError, match=r"none of the 2 polygons has 3 points or more \(they have 4, 2"):
        coco.runs_from_segmentation([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0]], 120, 160)
    # An odd count is corrupt data (pycocotools drops the last value in silence): the instance fails.
    with pytest.raises(coco.InstanceError, match=r"polygon 1 has 9 coordinates, an odd number"):
        coco.runs_from_segmentation([SQUARE, [*SQUARE, 5.0]], 120, 160)


def test_a_flat_polygon_list_is_named_as_such() -> None:
    with pytest.raises(coco.InstanceError, match=r"one flat list of 8 numbers; COCO polygons are a list of lists"):
        coco.runs_from_segmentation(SQUARE, 120, 160)  # was "polygon 0 has float coordinates"
    with pytest.raises(coco.InstanceError, match=r"polygon 1 is dict, not a list of x, y coordinates"):
        coco.runs_from_segmentation([SQUARE, {"counts": "x"}], 120, 160)


def test_a_point_far_outside_the_image_fails_before_pycocotools_rasterises_it() -> None:
    # pycocotools walks the whole outline at 5 steps a pixel: x = 1e8 took gigabytes and crashed
    # `crm coco` with a segmentation fault. More than the image's size beyond an edge fails.
    for polygon, axis in (([10.0, 10.0, 50.0, 10.0, 1000.0, 50.0], "x = 1000"),
                          ([10.0, 10.0, 50.0, 10.0, 30.0, -121.0], "y = -121")):
        with pytest.raises(coco.InstanceError, match=rf"polygon 0 has {axis}, more than the image's size beyond"):
            coco.runs_from_segmentation([polygon], 120, 160)
    with pytest.raises(coco.InstanceError, match=r"polygon 0 has non-numeric or non-finite coordinates"):
        coco.runs_from_segmentation([[10, 10, 50, 10, 10**400, 50]], 120, 160)  # was OverflowError in float()
    # Points outside the image but within its size of it are clipped, as pycocotools clips them.
    inside = coco.decode_segmentation([[-160.0, 30.0, 90.0, 30.0, 90.0, 80.0, -160.0, 80.0]], 120, 160)
    expected = np.zeros((120, 160), bool)
    expected[30:80, 0:90] = True
    assert np.array_equal(inside, expected)


# ---------------------------------------------------------------------------------------------
# RLE counts


@pytest.mark.parametrize(("counts", "message"), [
    ([10**20, 5], "uncompressed RLE holds a run of more than"),  # was OverflowError, a traceback
    ([2**62, 2**62, 2**62, 2**62, 100], "uncompressed RLE holds a run of more than"),  # int64 sum wrapped to 100
    # Below that bound but past the image: 2048 runs of 2**53 summed (int64) to 0, so the counts added up
    # to the 10x10 image and a mask of 2**63 pixels was taken as valid.
    ([2**53] * 2048 + [100], "RLE holds a run of 9007199254740992 pixels, more than the 10x10 image"),
    ("o" * 20 + "0", "compressed RLE string holds a run of more than"),  # was OverflowError
])
def test_rle_runs_beyond_the_image_are_instance_errors(counts, message) -> None:  # noqa: ANN001
    with pytest.raises(coco.InstanceError, match=message):
        coco.runs_from_segmentation({"size": [10, 10], "counts": counts}, 10, 10)


def test_rle_runs_beyond_the_image_fail_their_instance_and_their_score_in_one_line(tmp_path) -> None:  # noqa: ANN001
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "a.png")
    job = {"image": str(tmp_path / "a.png"), "name": "a.png", "image_id": 1, "height": 10, "width": 10,
           "instances": [{"index": 0, "id": 7, "segmentation": {"size": [10, 10], "counts": [10**20, 5]}}]}
    (result,) = coco.iter_image_job(Recorder(), job, coco.RefineOptions())
    assert result["status"] == "failed" and "holds a run of more than" in result["error"]
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 10, "width": 10}],
            "annotations": [{"id": 7, "image_id": 1, "segmentation": {"size": [10, 10], "counts": [10**20, 5]}}]}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    scored = runner.invoke(app, ["score", str(tmp_path / "bad.json"), str(tmp_path / "bad.json")])
    assert scored.exit_code == 1 and "Traceback" not in scored.output
    assert ("failed: annotation 7 (image_id 1): ground truth: uncompressed RLE holds a run of more than "
            in " ".join(scored.stderr.split()))
    assert "error: no instance could be scored: all 1 failed" in scored.stderr


def test_whole_float_rle_counts_are_read_and_other_dicts_are_named() -> None:
    # pycocotools casts uncompressed counts to integers: 50.0 (a numpy export) is 50.
    runs = coco.runs_from_segmentation({"size": [10, 10], "counts": [50.0, 50.0]}, 10, 10)
    assert runs.tolist() == [50, 50] and runs.dtype == np.int64
    with pytest.raises(coco.InstanceError, match="must be non-negative integers"):
        coco.runs_from_segmentation({"size": [10, 10], "counts": [50.5, 49.5]}, 10, 10)
    with pytest.raises(coco.InstanceError, match=r"an RLE segmentation needs 'size' and 'counts'; this one has 'size'"):
        coco.runs_from_segmentation({"size": [10, 10]}, 10, 10)


# ---------------------------------------------------------------------------------------------
# Images: EXIF orientation and the file's sizes


def save_png(path: Path, pixels: np.ndarray, orientation: int | None = None) -> None:
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    Image.fromarray(pixels).save(path, **extra)


def test_images_annotated_on_their_stored_pixels_are_refined_on_them(tmp_path) -> None:  # noqa: ANN001
    # Stored 60 wide x 40 high with a bright block; EXIF 6 turns it upright to 40 x 60.
    stored = np.full((40, 60, 3), 30, np.uint8)
    stored[5:15, 10:30] = 250
    save_png(tmp_path / "turned.png", stored, orientation=6)
    save_png(tmp_path / "upside.png", stored, orientation=3)
    block = np.zeros((40, 60), bool)
    block[5:15, 10:30] = True
    upright_block = np.rot90(block, -1)  # as the picture displays

    def run(name: str, mask: np.ndarray) -> tuple[dict, Recorder]:
        height, width = mask.shape
        job = {"image": str(tmp_path / name), "name": name, "image_id": 1, "height": height, "width": width,
               "instances": [{"index": 0, "id": 1, "segmentation": coco.encode_mask(mask)}]}
        recorder = Recorder()
        (result,) = coco.iter_image_job(recorder, job, coco.RefineOptions())
        return result, recorder

    # The file's 60x40 is the stored size: annotated on the stored pixels (a tool that ignores the
    # tag). It failed as "the image is 40x60"; the block is now refined on the block's own pixels.
    result, recorder = run("turned.png", block)
    assert result["status"] == "refined", result
    image, coarse = recorder.crops[0]
    assert (image[coarse] == 250).all() and (image[~coarse] == 30).all()
    assert np.array_equal(coco.decode_segmentation(result["segmentation"], 40, 60), block)
    assert result["notes"] == ["turned.png: the annotation file's size 60x40 is the image as stored, before its EXIF "
                               "rotation (rotated 90° clockwise); its instances are refined on the stored pixels"]
    # The file's 40x60 is the upright size: the upright pixels, no note (as before).
    result, recorder = run("turned.png", upright_block)
    image, coarse = recorder.crops[0]
    assert result["status"] == "refined" and "notes" not in result
    assert (image[coarse] == 250).all() and (image[~coarse] == 30).all()
    # A 180° turn keeps the size: the upright pixels, and a note saying the file cannot tell.
    result, _ = run("upside.png", np.rot90(block, 2))
    assert result["status"] == "refined"
    assert "EXIF orientation 3 (rotated 180°) keeps the image's size" in result["notes"][0]
    # Neither size: the instance fails, naming both.
    result, _ = run("turned.png", np.zeros((30, 60), bool))
    assert result["error"] == ("turned.png: the image is 40x60 (upright, by its EXIF orientation 6) but the "
                               "annotation file says 60x30")


def test_non_finite_or_fractional_image_sizes_fail_their_instances(tmp_path) -> None:  # noqa: ANN001
    save_png(tmp_path / "a.png", np.zeros((10, 10, 3), np.uint8))
    square = [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0]]
    for height, shown in ((float("nan"), "nan"), (float("inf"), "inf"), (10.5, "10.5")):
        data = {"images": [{"id": 1, "file_name": "a.png", "height": height, "width": 10}],
                "annotations": [{"id": 3, "image_id": 1, "category_id": 1, "segmentation": square}]}
        plan = coco.plan_jobs(data, tmp_path)  # NaN was a ValueError and inf an OverflowError here; 10.5 read as 10
        (result,) = coco.iter_image_job(Recorder(), plan.jobs[0], coco.RefineOptions())
        assert result["status"] == "failed" and result["error"] == f"a.png: the image is 10x10 but the annotation " \
                                                                   f"file says 10x{shown}"
    data["images"][0]["height"] = 10.0  # a whole float is a size
    (result,) = coco.iter_image_job(Recorder(), coco.plan_jobs(data, tmp_path).jobs[0], coco.RefineOptions())
    assert result["status"] == "refined"


def test_a_box_beyond_float_range_is_not_a_traceback() -> None:
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    result = coco.refine_instance(Recorder(), np.zeros((20, 20, 3), np.uint8), coco.encode_mask(mask),
                                  coco.RefineOptions(), bbox=[10**400, 0, 1, 1])  # was OverflowError
    assert result["status"] == "refined" and result["bbox"] == [5.0, 5.0, 5.0, 5.0] and result["area"] == 25


# ---------------------------------------------------------------------------------------------
# The written file


def test_a_lone_surrogate_in_the_file_is_written_back_as_its_escape(tmp_path) -> None:  # noqa: ANN001
    # json reads "\ud800" into a str that has no UTF-8 form: the whole run was refined, then the
    # write failed ("surrogates not allowed"), and every rerun failed the same way.
    path = tmp_path / "o.json"
    data = {"info": {"note": "\ud800x \u00e9t\u00e9", "pair": "\U0001f600"}}
    coco.write_json_atomic(path, data)
    raw = path.read_bytes()
    assert raw == b'{"info":{"note":"\\ud800x \xc3\xa9t\xc3\xa9","pair":"\xf0\x9f\x98\x80"}}'
    assert json.loads(raw) == data


def test_coco_with_a_lone_surrogate_writes_its_output(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from crm_cli.cli.options import RefinerOptions

    monkeypatch.setattr(RefinerOptions, "load", lambda self, quiet=False: Recorder())
    save_png(tmp_path / "a.png", np.zeros((120, 160, 3), np.uint8))
    annotation = {"id": 5, "image_id": 1, "category_id": 1, "segmentation": [SQUARE], "area": 1,
                  "bbox": [0, 0, 1, 1], "iscrowd": 0}
    images = [{"id": 1, "file_name": "a.png", "height": 120, "width": 160}]
    # The file holds the escape \ud800 as json.dumps writes a lone surrogate.
    source = json.dumps({"info": {"description": "\ud800"}, "images": images, "annotations": [annotation]})
    assert '"\\ud800"' in source
    (tmp_path / "in.json").write_text(source)
    output = tmp_path / "out.json"
    result = runner.invoke(app, ["coco", str(tmp_path / "in.json"), "--images", str(tmp_path), "-o", str(output),
                                 "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["refined"] == 1
    written = json.loads(output.read_bytes())
    assert written["info"] == {"description": "\ud800"}
    annotation = written["annotations"][0]
    assert (annotation["area"], annotation["bbox"]) == (2500, [40.0, 30.0, 50.0, 50.0])
    assert np.array_equal(coco.decode_segmentation(annotation["segmentation"], 120, 160), square_mask())


# ---------------------------------------------------------------------------------------------
# crm score on COCO files


def score_files(tmp_path: Path, gt: dict, pred: dict) -> tuple[Path, Path]:
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    return tmp_path / "pred.json", tmp_path / "gt.json"


def two_images() -> dict:
    square = [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]
    return {"images": [{"id": 1, "file_name": "x.png", "height": 10, "width": 10},
                       {"id": 2, "file_name": "y.png", "height": 10, "width": 10}],
            "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "segmentation": square},
                            {"id": 12, "image_id": 2, "category_id": 1, "segmentation": square}]}


def test_score_refuses_a_prediction_of_another_image(tmp_path) -> None:  # noqa: ANN001
    gt, pred = two_images(), two_images()
    pred["annotations"][1]["image_id"] = 1  # the same annotation id in a file of other images: scored as a match
    with pytest.raises(ValueError, match=r"annotation 12: image_id 1 in the predictions but 2 in the ground truth"):
        coco.score_coco(pred, gt)
    result = runner.invoke(app, ["score", *map(str, score_files(tmp_path, gt, pred))])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "annotation 12: image_id 1 in the predictions but 2 in the ground truth" in " ".join(result.stderr.split())
    del pred["annotations"][1]["image_id"]  # no image_id: matched by the annotation id alone, as before
    assert coco.score_coco(pred, gt).iou == 1.0


@pytest.mark.parametrize("height", [-10, 0, 10.5, float("inf"), "10", True])
def test_score_refuses_image_sizes_that_are_not_whole_positive_numbers(height) -> None:  # noqa: ANN001
    # -10 reached pycocotools (OverflowError, a traceback), inf too; 10.5 was scored as 10. The string
    # "10" and true were scored as 10 and 1: scoring's rule for a size was int(value), not the one
    # whole-number rule of crm coco (where neither is a size) and of RLE counts.
    gt = two_images()
    gt["images"][0]["height"] = height
    with pytest.raises(ValueError, match=rf"annotation 10 \(image_id 1\): its image needs a whole positive 'height' "
                                         rf"and 'width', not {re.escape(repr(height))} and 10"):
        coco.score_coco(two_images(), gt)


def test_score_accepts_degenerate_polygon_parts(tmp_path) -> None:  # noqa: ANN001
    gt, pred = two_images(), two_images()
    pred["annotations"][0]["segmentation"].append([1.0, 1.0, 2.0, 2.0])  # was "polygon 1 has 4 coordinates"
    result = runner.invoke(app, ["score", *map(str, score_files(tmp_path, gt, pred)), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["iou"] == 1.0


def test_a_file_that_is_not_utf8_is_named_in_one_line(tmp_path) -> None:  # noqa: ANN001
    # A Latin-1 export: json's UnicodeDecodeError named neither the file nor what was wrong with it.
    path = tmp_path / "latin.json"
    path.write_bytes(b'{"images": [], "annotations": [], "info": {"author": "Jos\xe9"}}')
    with pytest.raises(coco.CocoFileError, match=r"latin\.json: not valid JSON \(byte 57 is 0xe9, not UTF-8 text\)"):
        coco.load_coco(path)
    result = runner.invoke(app, ["score", str(path), str(path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "latin.json: not valid JSON (byte 57 is 0xe9, not UTF-8 text)" in " ".join(result.stderr.split())


def test_an_overlong_compressed_run_is_refused_where_it_starts() -> None:
    """Decoding went on through the whole string, its integer growing 5 bits a character (a few MB
    took minutes), before the run's size was checked. It stops after 11 groups now: the error is
    the run's, not the invalid character at the string's end that the old decoder reached."""
    from crm_cli.coco.rle import MAX_RUN, InstanceError, decode_rle_string, encode_rle_string

    with pytest.raises(InstanceError, match="a run of more than"):
        decode_rle_string("o" * 200_000 + "!")
    for runs in ([0, MAX_RUN, 5], [3, MAX_RUN - 1, MAX_RUN]):  # the largest runs still read back
        assert decode_rle_string(encode_rle_string(runs)).tolist() == runs


# ---------------------------------------------------------------------------------------------
# Numbers as they were written, and strict JSON out


def strict_json(text: str | bytes) -> object:
    """Parse as a strict JSON parser (jq, JavaScript, Go) does: NaN and Infinity are no JSON."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


EXACT_SOURCE = ('{"info":{"tiny":1e-7,"huge":1e400,"tiny_neg":-1E-400,"padded":1.50,"zero":-0,"neg_zero":-0.0,'
                '"big":123456789012345678901234567890,"precise":0.1000000000000000055511151231257827,'
                '"plain":[640,480.5,-3],"text":"\\ud800 \u00e9t\u00e9 \U0001f600"},'
                '"images":[{"id":1,"file_name":"a.png","height":120,"width":160,"exposure":1E400}],"annotations":[]}')


def test_numbers_are_written_back_with_their_text(tmp_path) -> None:  # noqa: ANN001
    """json wrote 1e-7 as 1e-07, 1.50 as 1.5, -0 as 0 and 1e400 (read as infinity) as Infinity, which
    strict parsers refuse: a file crm did not change came back as another text, or as no JSON at all."""
    import pickle

    source = tmp_path / "in.json"
    source.write_bytes(EXACT_SOURCE.encode("utf-8"))
    data = coco.load_coco(source)
    info = data["info"]
    # The values are the numbers json reads; only their text is kept beside them.
    assert isinstance(info["tiny"], float) and info["tiny"] == 1e-7 and info["huge"] == float("inf")
    assert info["zero"] == 0 and isinstance(info["zero"], int) and info["big"] == 123456789012345678901234567890
    assert str(info["neg_zero"]) == "-0.0" and info["text"] == "\ud800 \u00e9t\u00e9 \U0001f600"
    output = tmp_path / "out.json"
    assert coco.write_json_atomic(output, data) == 0  # no NaN written as null
    assert output.read_bytes() == EXACT_SOURCE.encode("utf-8")
    assert strict_json(output.read_bytes())["info"]["tiny"] == 1e-7
    # A Ray job carries the values across processes: they keep their text there too.
    coco.write_json_atomic(output, pickle.loads(pickle.dumps(data)))
    assert output.read_bytes() == EXACT_SOURCE.encode("utf-8")


def test_coco_writes_unchanged_numbers_with_their_text_and_always_strict_json(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from crm_cli.cli.options import RefinerOptions

    monkeypatch.setattr(RefinerOptions, "load", lambda self, quiet=False: Recorder())
    save_png(tmp_path / "a.png", np.zeros((120, 160, 3), np.uint8))
    square = json.dumps([SQUARE])
    annotation = ('{"id":5,"image_id":1,"category_id":1,"segmentation":' + square
                  + ',"area":1,"bbox":[0,0,1,1],"iscrowd":0,"score":1e-7,"weight":NaN}')
    text = EXACT_SOURCE.replace('"annotations":[]', f'"annotations":[{annotation}]')
    (tmp_path / "in.json").write_text(text, encoding="utf-8")
    output = tmp_path / "out.json"
    result = runner.invoke(app, ["coco", str(tmp_path / "in.json"), "--images", str(tmp_path), "-o", str(output),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["refined"] == 1
    written = output.read_text(encoding="utf-8", errors="strict")
    before, _, _ = EXACT_SOURCE.partition('"annotations":[]')
    assert written.startswith(before)  # every number of info and images with its own text
    annotation = strict_json(written)["annotations"][0]  # was: Infinity and NaN, no JSON
    assert (annotation["area"], annotation["bbox"]) == (2500, [40.0, 30.0, 50.0, 50.0])
    assert '"score":1e-7,"weight":null}' in written  # was 1e-07; NaN has no JSON form
    assert ("warning: " f"{tmp_path / 'in.json'}: 1 NaN or Infinity value(s) written as null in {output}"
            in " ".join(result.stderr.split()))


def checked_loads(raw: str | bytes) -> object:
    """What ``exactjson.loads`` returned before its scan, the rule it keeps: every float whose ``repr`` is
    not its text, and ``-0``, with its text; every other number plain."""

    def parse_float(text: str) -> float:
        number = float(text)
        return number if repr(number) == text else exactjson.JsonFloat(text)

    def parse_int(text: str) -> int:
        return exactjson.JsonInt(text) if text == "-0" else int(text)

    return json.loads(raw, parse_float=parse_float, parse_int=parse_int)


def assert_same_numbers(value: object, expected: object) -> None:
    """Equal, with the same types all through, and the same kept texts."""
    assert type(value) is type(expected), (value, expected)
    if isinstance(expected, list):
        assert len(value) == len(expected)  # type: ignore[arg-type]
        for item, expected_item in zip(value, expected, strict=True):  # type: ignore[call-overload]
            assert_same_numbers(item, expected_item)
    elif isinstance(expected, dict):
        assert list(value) == list(expected)  # type: ignore[call-overload]
        for key in expected:
            assert_same_numbers(value[key], expected[key])  # type: ignore[index]
    elif expected != expected:  # NaN
        assert value != value
    else:
        assert value == expected and getattr(value, "text", None) == getattr(expected, "text", None), (value, expected)


DENSE_FIXED = "[" + ",".join(f"{i % 400 / 4:.2f}" for i in range(20_000)) + "]"  # %.2f output: 1 in 2 ends in 0
JSON_CASES = [
    # Numbers inside strings, keys that look like numbers, escaped quotes.
    '{"name": "1e5", "file": "img_1.50.png", "note": "x 1.50, -0 y", "n": 2.5, "hash": "2c9e5a_1E400"}',
    '{"1.50": [1.5, "1.50", 2.50], "-0": -0, "1e5": 1e5, "0.0000": "0.00001"}',
    '["a\\", 1.50, \\"", 1.5, "\\\\", -0.5]',
    '[[[-0.0, -0, 0, 0.0, [-0, [-0.0]]]]]',
    '[123456789012345678901234567890, -123456789012345678901234567890, -0, 1E400, -1E400, 1e-400, 1.0e0, 1E5]',
    '[1e+16, 1e16, 1.5e-05, 1e-07, 1e-7, 1E-7, 0.00001, 0.0001, 0.00010, 12345678901234567.0, 1234567890123456.0]',
    '[0.1000000000000000055511151231257827, 0.30000000000000004, 0.10000000000000001, 100.00, 5.0, 5.10]',
    '{"\u00e9t\u00e9": [1.10 ,\n2.0\t, NaN, -Infinity, Infinity], "x":\r\n-0 }',
    "1.50", " -0 ", "1e5", "0.5", "-0.0", '"1.50"', "[]", "{}",
    # Numbers to keep on every line: the cache, and the check of each float where texts do not repeat.
    DENSE_FIXED,
    "[" + ",".join(f"{i / 7:.17g}" for i in range(1, 20_000)) + ", 1e-7]",
    "[" + ",".join(repr(i / 7) for i in range(1, 20_000)) + "]",
    # A number longer than the scan reads.
    "[" + "1" * 150 + ".50, 2.5, " + "9" * 120 + "]",
]


@pytest.mark.parametrize("text", JSON_CASES, ids=range(len(JSON_CASES)))
def test_loads_keeps_the_same_numbers_whichever_way_it_parses(text: str) -> None:
    """loads now picks how to parse from a scan of the text (plain json, a table of the texts to keep,
    a cache, or the check of every float): each way gives what checking every number gave."""
    expected = checked_loads(text)
    for raw in (text, text.encode("utf-8"), b"\xef\xbb\xbf" + text.encode("utf-8"), text.encode("utf-16")):
        value = exactjson.loads(raw)
        assert_same_numbers(value, expected)
        assert exactjson.dumps(value) == exactjson.dumps(expected)


def test_loads_shares_one_object_per_number_text_it_keeps() -> None:
    """Each kept number was its own float subclass holding its own text (about 110 bytes where json's
    float takes 32): a %.2f file took 2.6 times json's memory. Equal texts share one object now."""
    value = exactjson.loads("[1.50, 2.5, 1.50, 1e-7, 1e-7]")
    assert type(value[0]) is exactjson.JsonFloat and value[0] is value[2] and value[3] is value[4]
    # Where such numbers are on every line (%.2f output), every number text is converted once.
    dense = exactjson.loads(DENSE_FIXED)
    assert len({id(number) for number in dense}) == len(set(DENSE_FIXED[1:-1].split(","))) == 400


@pytest.mark.parametrize("raw", [
    "[1.50,", "[1e5 1]", '{"a": 1.50,}', "\ufeff[1.50]", b"\xef\xbb\xbf\xef\xbb\xbf[1.50]", b"[1.50, \xff]",
    "[" + "1" * 5000 + "]", "[-0, 01]", "[1.50, -]", "",
])
def test_loads_refuses_what_json_refuses_with_the_same_error(raw: str | bytes) -> None:
    with pytest.raises(ValueError) as expected:
        checked_loads(raw)
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        exactjson.loads(raw)


def test_a_file_whose_numbers_read_back_as_written_is_parsed_by_json_alone(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """Every number went through a Python hook (5 times json's time on a COCO file) to find the few
    whose text repr does not give back; a file with none is parsed by json's own C code now."""
    hooks = []
    real_init = json.JSONDecoder.__init__

    def spy(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN003
        hooks.append((kwargs.get("parse_float"), kwargs.get("parse_int")))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(json.JSONDecoder, "__init__", spy)
    rng = np.random.default_rng(0)
    data = {"info": {"version": "1.0", "url": "http://farm4.staticflickr.com/1/2_2c9e5_z.jpg", "scale": 1e-07},
            "images": [{"id": 1, "file_name": "000000391895.jpg", "height": 480, "width": 640}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": [[round(float(v), 2) for v in rng.uniform(0, 640, 20)]],
                             "area": float(rng.uniform(0, 9000)), "bbox": [1.5, 2.0, 30.25, -0.0]} for i in range(50)]}
    path = tmp_path / "exact.json"
    path.write_text(json.dumps(data))
    assert coco.load_coco(path) == data
    assert hooks and all(hook == (None, None) for hook in hooks), hooks
    # A few numbers to keep: json looks each number up in a table of them, in C (no Python call per number).
    hooks.clear()
    path.write_text(json.dumps(data).replace("1e-07", "1e-7"))
    assert coco.load_coco(path)["info"]["scale"].text == "1e-7"
    ((parse_float, parse_int),) = hooks
    assert isinstance(parse_float, types.BuiltinMethodType) and parse_int is None


def test_the_check_without_repr_agrees_with_repr() -> None:
    """Most floats are checked without repr (which costs more than the parse): that shortcut must say what
    repr says."""
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.uniform(-1000, 1000, 3000), rng.uniform(-1e-3, 1e-3, 3000),
                             10.0 ** rng.uniform(-20, 20, 3000), np.round(rng.uniform(-100, 100, 3000), 1)])
    texts = {"0.0", "-0.0", "0.0001", "-0.0001", "0.00009", "1e-05", "1234567890123.5", "12345678901234.5"}
    for value in values.tolist():
        texts.update({repr(value), f"{value:.2f}", f"{value:.6f}", f"{value:.15g}", f"{value:.17g}", f"{value:g}"})
    for text in texts:
        if re.fullmatch(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?", text) and ("." in text or "e" in text):
            number = exactjson._exact_float(text)
            assert number == float(text) and (type(number) is float) == (repr(float(text)) == text), text


# ---------------------------------------------------------------------------------------------
# Windows file names


def test_file_names_with_backslashes_are_found_with_slashes(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A file written on Windows names `sub\\a.png`; on Linux that is one file name holding a
    backslash, so the image was missing and every instance on it failed."""
    from crm_cli.cli.options import RefinerOptions

    monkeypatch.setattr(RefinerOptions, "load", lambda self, quiet=False: Recorder())
    (tmp_path / "images" / "sub" / "deeper").mkdir(parents=True)
    save_png(tmp_path / "images" / "sub" / "deeper" / "a.png", np.zeros((120, 160, 3), np.uint8))
    data = {"images": [{"id": 1, "file_name": "sub\\deeper\\a.png", "height": 120, "width": 160}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "segmentation": [SQUARE], "iscrowd": 0}]}
    (tmp_path / "in.json").write_text(json.dumps(data))
    output = tmp_path / "out.json"
    result = runner.invoke(app, ["coco", str(tmp_path / "in.json"), "--images", str(tmp_path / "images"),
                                 "-o", str(output), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["refined"] == 1
    assert json.loads(output.read_text())["images"][0]["file_name"] == "sub\\deeper\\a.png"  # kept as written

    # Only when the name as written is missing: on Linux a backslash may be part of a real file name.
    images = tmp_path / "images"
    job = coco.plan_jobs(data, images).jobs[0]
    assert job["image"] == str((images / "sub" / "deeper" / "a.png").absolute()) and job["name"] == "sub\\deeper\\a.png"
    save_png(images / "sub\\deeper\\a.png", np.zeros((120, 160, 3), np.uint8))
    assert coco.plan_jobs(data, images).jobs[0]["image"] == str((images / "sub\\deeper\\a.png").absolute())
    # Neither there: the name as written, which the instance's error names.
    data["images"][0]["file_name"] = "gone\\a.png"
    (result,) = coco.iter_image_job(Recorder(), coco.plan_jobs(data, images).jobs[0], coco.RefineOptions())
    assert result["status"] == "failed" and "gone\\a.png" in result["error"]


# ---------------------------------------------------------------------------------------------
# crm score: an instance that cannot be scored is reported and left out


def test_score_reports_instances_it_cannot_decode_and_scores_the_rest(tmp_path) -> None:  # noqa: ANN001
    """The first bad instance stopped the whole score with one error line and no scores."""
    square = [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]
    gt = {"images": [{"id": 1, "file_name": "x.png", "height": 10, "width": 10},
                     {"id": 2, "file_name": "huge.png", "height": 10**30, "width": 10}],
          "annotations": [{"id": 10, "image_id": 1, "category_id": 1, "segmentation": square},
                          {"id": 11, "image_id": 1, "category_id": 1, "segmentation": {"size": [10, 10],
                                                                                     "counts": [10**20, 5]}},
                          {"id": 12, "image_id": 1, "category_id": 1, "segmentation": square},
                          {"id": 13, "image_id": 99, "category_id": 1, "segmentation": square},
                          {"id": 14, "image_id": 2, "category_id": 1, "segmentation": square},
                          {"id": 15, "image_id": 1, "category_id": 1, "segmentation": square}]}
    pred = json.loads(json.dumps(gt))
    pred["annotations"][2]["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0]]  # an odd number of coordinates
    pred["annotations"][5]["segmentation"] = [[2.0, 2.0, 5.0, 2.0, 5.0, 8.0, 2.0, 8.0]]  # half the square
    pred_path, gt_path = score_files(tmp_path, gt, pred)
    result = runner.invoke(app, ["score", str(pred_path), str(gt_path), "--json"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output  # 10**30 was an OverflowError out of pycocotools
    report = json.loads(result.stdout)
    assert report["n"] == 2 and [image["name"] for image in report["images"]] == ["x.png#10", "x.png#15"]
    assert report["iou"] == (36 + 18) / (36 + 36)
    assert report["failed"] == 4
    failures = {failure["id"]: (failure["image_id"], failure["error"]) for failure in report["failures"]}
    assert list(failures) == [11, 12, 13, 14]
    assert failures[11] == (1, f"ground truth: uncompressed RLE holds a run of more than {2**53} pixels")
    assert failures[12] == (1, "prediction: polygon 0 has 5 coordinates, an odd number (they are x, y pairs)")
    assert failures[13] == (99, "its image_id is not in the ground truth's 'images'")
    assert failures[14][0] == 2 and failures[14][1].startswith(f"ground truth: cannot be decoded at the image's "
                                                               f"size 10x{10**30}")
    stderr = " ".join(result.stderr.split())
    for key, (image_id, error) in failures.items():
        assert f"failed: annotation {key} (image_id {image_id}): {error}" in stderr
    assert "4 of 6 ground-truth instances failed (listed above) and are left out of the scores" in stderr
    assert "error:" not in stderr and "dataset (n=2)" in stderr
    # Without --json: the same lines and the table, exit 1.
    plain = runner.invoke(app, ["score", str(pred_path), str(gt_path)])
    assert plain.exit_code == 1 and plain.stdout == "" and " ".join(plain.stderr.split()) == stderr
    # Nothing left to score: one error line, and with --json the record counts the failures.
    gt["annotations"], pred["annotations"] = gt["annotations"][1:2], pred["annotations"][1:2]
    pred_path, gt_path = score_files(tmp_path, gt, pred)
    none = runner.invoke(app, ["score", str(pred_path), str(gt_path), "--json"])
    assert none.exit_code == 1
    record = json.loads(none.stdout)
    assert (record["status"], record["error"], record["failed"]) == ("failed", "no instance could be scored: all "
                                                                     "1 failed", 1)


def test_polygons_on_images_past_pycocotools_32_bit_runs_fail_in_one_line() -> None:
    # pycocotools counts runs in 32 bits: on a 10 x 2**40 image its runs wrapped around and crm
    # took them as the mask (scoring then failed reshaping them).
    with pytest.raises(coco.InstanceError, match=r"cannot be rasterised on a 10x1099511627776 image: pycocotools' "
                                                 r"32-bit run lengths overflowed"):
        coco.runs_from_segmentation([[2.0, 2.0, 8.0, 2.0, 8.0, 8.0]], 2**40, 10)


# ---------------------------------------------------------------------------------------------
# One rule for whole numbers


@pytest.mark.parametrize(("value", "whole"), [
    (3, 3), (3.0, 3), (-2, -2), (10**30, 10**30), (1e20, 10**20), (2.5, None), (float("nan"), None),
    (float("inf"), None), (True, None), ("3", None), (None, None), ([3], None),
])
def test_one_whole_number_rule_for_sizes_counts_and_sides(value, whole) -> None:  # noqa: ANN001
    from crm_cli.coco.files import _side
    from crm_cli.coco.instances import _size
    from crm_cli.coco.rle import whole_number

    assert whole_number(value) == whole and type(whole_number(value)) is type(whole)
    # crm coco's image side: a whole number as an int; another number as it is (the size check names
    # it); no number: None (the image's own size is used).
    number = isinstance(value, int | float) and not isinstance(value, bool)
    side = _side(value)
    expected = whole if whole is not None else value if number else None
    assert side == expected or (side != side and value != value), side  # NaN stays NaN
    # crm score's image side: whole and positive.
    assert _size(value) == (whole if whole is not None and whole > 0 else None)
    # RLE counts: whole and not negative (none of these adds up to the 1x4 image).
    with pytest.raises(coco.InstanceError) as raised:
        coco.runs_from_segmentation({"size": [1, 4], "counts": [value]}, 1, 4)
    assert ("must be non-negative integers" in str(raised.value)) == (whole is None or whole < 0), raised.value


@pytest.mark.parametrize("exact_numbers", [True, False])
@pytest.mark.parametrize("text", ['{"images": [], "annotations": [], "n": ' + "7" * 5000 + "}",
                                  '{"images": [], "annotations": [], "deep": ' + "[" * 200000 + "]" * 200000 + "}"])
def test_a_file_json_cannot_hold_in_python_is_one_line_naming_it(tmp_path: Path, text: str,
                                                                 exact_numbers: bool) -> None:
    """An integer of over 4,300 digits (Python's limit on int conversion) or nesting deeper than the
    parser's recursion raised a bare ValueError or RecursionError traceback."""
    from crm_cli.coco.files import CocoFileError, load_coco

    path = tmp_path / "big.json"
    path.write_text(text)
    with pytest.raises(CocoFileError, match=rf"^{re.escape(str(path))}: cannot be read as JSON \("):
        load_coco(path, exact_numbers)
