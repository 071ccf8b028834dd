"""Session 63: a mask written as given without the model says why in its record, as session 62's
kept masks do: ``"kept_given": "small_photo"`` for a photo under the minimum side, ``"no_label"`` for a
label map holding none of the ids asked for (``config.PASSED_THROUGH_REASONS``). Their records had
said ``null``, the value of a mask the stages refined."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.config import MIN_REFINE_SIDE, PASSED_THROUGH_REASONS
from crm_cli.engine import KEPT_GIVEN_REASONS


def write_pair(folder: Path, name: str, height: int, width: int) -> tuple[Path, Path]:
    """A grey photo with a brighter square and the square's mask, both (height, width)."""
    photo = np.full((height, width, 3), 60, np.uint8)
    mask = np.zeros((height, width), np.uint8)
    photo[height // 4:3 * height // 4, width // 4:3 * width // 4] = 200
    mask[height // 4:3 * height // 4, width // 4:3 * width // 4] = 255
    cv2.imwrite(str(folder / f"{name}.png"), photo)
    cv2.imwrite(str(folder / f"{name}_mask.png"), mask)
    return folder / f"{name}.png", folder / f"{name}_mask.png"


def test_reasons_are_apart_from_the_engines() -> None:
    """A record's reason names one cause: the pass-through reasons are not engine reasons."""
    assert PASSED_THROUGH_REASONS == ("small_photo", "no_label")
    assert not set(PASSED_THROUGH_REASONS) & set(KEPT_GIVEN_REASONS)


def test_refine_record_of_a_small_photo(tiny_weights: Path, tmp_path: Path) -> None:
    photo, mask = write_pair(tmp_path, "small", 48, MIN_REFINE_SIDE + 20)
    result = CliRunner().invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "o.png"), "--json",
                                      "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["passthrough"] is True and record["schedule"] is None
    assert record["kept_given"] == "small_photo"
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_GRAYSCALE),
                                  cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE))


def test_refine_record_of_a_label_map_without_the_ids(tiny_weights: Path, tmp_path: Path) -> None:
    photo, _ = write_pair(tmp_path, "scene", 120, 160)
    ids = np.zeros((120, 160), np.uint8)
    ids[20:60, 20:80], ids[70:110, 60:140] = 1, 2
    cv2.imwrite(str(tmp_path / "ids.png"), ids)
    result = CliRunner().invoke(app, ["refine", str(photo), str(tmp_path / "ids.png"), "-o", str(tmp_path / "o.png"),
                                      "--labels", "7", "--json", "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["passthrough"] is False and record["schedule"] is None
    assert record["kept_given"] == "no_label"
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED), ids)


def test_batch_and_eval_records_of_a_small_photo(tiny_weights: Path, tmp_path: Path) -> None:
    """Batch: the small pair says ``small_photo``, the refined one null; eval's images the same."""
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    write_pair(pairs, "small", 48, 64)
    write_pair(pairs, "large", 120, 160)
    runner = CliRunner()
    batch = runner.invoke(app, ["batch", str(pairs), "-o", str(tmp_path / "out"), "--json",
                                "-w", str(tiny_weights), "-d", "cpu"])
    assert batch.exit_code == 0, batch.output
    items = {item["name"]: item for item in json.loads(batch.stdout)["items"]}
    assert items["small"]["passthrough"] is True and items["small"]["kept_given"] == "small_photo"
    assert items["large"]["passthrough"] is False and items["large"]["schedule"]
    assert items["large"]["kept_given"] is None

    from crm_cli import Refiner
    from crm_cli.evaluation import Sample, evaluate

    small, square = np.full((48, 64, 3), 60, np.uint8), np.zeros((48, 64), np.uint8)
    square[12:36, 16:48] = 255
    (image,) = evaluate(Refiner(tiny_weights, device="cpu"), [Sample("small", small, square, square > 128)],
                        min_side=MIN_REFINE_SIDE).images
    assert image["passthrough"] is True and image["kept_given"] == "small_photo"
