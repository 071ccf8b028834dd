"""crm eval outlives one image that OpenCV has no memory for (session 33).

``crm refine`` turns OpenCV's out-of-memory error into one line, and ``crm batch`` fails just that
pair; ``crm eval`` stopped the whole run with a traceback, since ``cv2.error`` is none of the
errors a pair may fail with."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from conftest import flat, write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.cli.failures import MEMORY_ADVICE
from crm_cli.engine import Refiner
from crm_cli.evaluation import pair_failure

runner = CliRunner()
OPENCV_SHORTAGE = "OpenCV(4.x) error: (-4:Insufficient memory) Failed to allocate 47185920 bytes in function 'x'"


def test_pair_failure_takes_a_pairs_errors_and_opencvs_shortage_only() -> None:
    error = ValueError("bad pair")
    assert pair_failure(error) is error
    shortage = pair_failure(cv2.error(OPENCV_SHORTAGE))
    assert isinstance(shortage, MemoryError) and str(shortage) == "Unable to allocate 45.0 MiB in OpenCV"
    assert pair_failure(cv2.error("(-215:Assertion failed) size.width>0")) is None
    assert pair_failure(KeyError("bug")) is None


def test_eval_fails_the_image_opencv_had_no_memory_for_and_scores_the_rest(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for stem, seed in (("a", 0), ("c", 2)):
        write_scene_files(tmp_path, f"{stem}_im", f"{stem}_seg", seed=seed)
        write_scene_files(tmp_path, f"{stem}_im", f"{stem}_gt", seed=seed)
    real = Refiner.refine_detailed
    calls = []

    def first_call_short_of_memory(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 1:
            raise cv2.error(OPENCV_SHORTAGE)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Refiner, "refine_detailed", first_call_short_of_memory)
    result = runner.invoke(app, ["eval", str(tmp_path), "-w", str(tiny_weights), "-d", "cpu", "--backend", "torch",
                                 "--json"])
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["n"] == 1 and [image["name"] for image in record["images"]] == ["c"]
    # Worded as crm refine and a crm batch item word it, with the same advice.
    assert [(failure["name"], failure["error"]) for failure in record["failures"]] == [
        ("a", "Unable to allocate 45.0 MiB in OpenCV" + MEMORY_ADVICE)]
    assert "Traceback" not in result.output
    assert "failed: a: Unable to allocate 45.0 MiB in OpenCV" in flat(result.stderr)
