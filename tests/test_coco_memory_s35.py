"""Session-35: running out of memory on one COCO instance (or while reading one image) fails that
instance (or that image's instances) in crm refine's words, and crm coco goes on, as crm batch fails
one pair and goes on; the out-of-memory wording lives in the library (crm_cli.errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import flat, synthetic_scene, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli import engine
from crm_cli.cli import app
from crm_cli.coco import instances

runner = CliRunner()
MEMORY_ADVICE = "; try a smaller --tile-size, the 'fast' preset, or a smaller image"
NUMPY_SHORTAGE = "Unable to allocate 3.00 GiB for an array with shape (32768, 24576) and data type float32"
CUDA_SHORTAGE = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"
# Three separate squares (x, y, side) on each 120x160 image: every one is refined by the tiny model.
SQUARES = [(10.0, 10.0, 30.0), (60.0, 40.0, 40.0), (110.0, 70.0, 30.0)]


def write_coco(folder: Path, names: tuple[str, ...] = ("a.png",)) -> Path:
    """Synthetic photos named ``names`` and a COCO file with the three SQUARES on each (ids 10, 11,
    12 on the first image, 20, 21, 22 on the second ...); returns the COCO file's path."""
    images, annotations = [], []
    for number, name in enumerate(names, start=1):
        Image.fromarray(synthetic_scene(120, 160, seed=number)[0]).save(folder / name)
        images.append({"id": number, "file_name": name, "height": 120, "width": 160})
        for offset, (x, y, side) in enumerate(SQUARES):
            annotations.append({"id": 10 * number + offset, "image_id": number, "category_id": 1,
                                "segmentation": [[x, y, x + side, y, x + side, y + side, x, y + side]],
                                "area": side * side, "bbox": [x, y, side, side], "iscrowd": 0})
    path = folder / "in.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "square"}]}))
    return path


def fail_one_refine(monkeypatch: pytest.MonkeyPatch, error: BaseException, failing_call: int = 2) -> None:
    """The engine's refine raises ``error`` on its ``failing_call``-th call only (one instance: a
    local coco run refines its instances one after another); every other call refines."""
    real = engine.Refiner.refine
    calls: list[int] = []

    def refine(self: engine.Refiner, *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(1)
        if len(calls) == failing_call:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.Refiner, "refine", refine)


def run_coco(annotations: Path, output: Path, weights: Path) -> Any:  # noqa: ANN401 - click's Result
    """crm coco on ``annotations`` (images beside it), on the CPU, with --json."""
    return runner.invoke(app, ["coco", str(annotations), "--images", str(annotations.parent), "-o", str(output),
                               "-w", str(weights), "-d", "cpu", "--json"])


def assert_only_failed_kept(annotations: Path, output: Path, failed_ids: set[int]) -> None:
    """The failed instances are written as they came; every other one was refined (a compressed RLE)."""
    before = {a["id"]: a for a in json.loads(annotations.read_text())["annotations"]}
    after = {a["id"]: a for a in json.loads(output.read_text())["annotations"]}
    assert set(after) == set(before)
    for number, annotation in after.items():
        if number in failed_ids:
            assert annotation == before[number], number
        else:
            assert isinstance(annotation["segmentation"], dict), number
            assert isinstance(annotation["segmentation"]["counts"], str), number


def test_running_out_of_memory_on_one_instance_fails_it_and_the_run_goes_on(
        tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A MemoryError on one instance used to stop the whole run, nothing written.
    annotations, output = write_coco(tmp_path), tmp_path / "out.json"
    fail_one_refine(monkeypatch, MemoryError(NUMPY_SHORTAGE))
    result = run_coco(annotations, output, tiny_weights)
    assert result.exit_code == 1 and not isinstance(result.exception, MemoryError), result.output
    summary = json.loads(result.stdout)
    assert (summary["refined"], summary["failed"], summary["skipped"]) == (2, 1, 0), summary
    assert summary["failures"] == [{"index": 1, "id": 11, "error": NUMPY_SHORTAGE + MEMORY_ADVICE,
                                    "file_name": "a.png"}]
    assert f"instance 11 (annotation #1, a.png): {NUMPY_SHORTAGE + MEMORY_ADVICE}" in flat(result.stderr)
    assert_only_failed_kept(annotations, output, {11})
    assert output.with_name("out.json.partial.jsonl").exists()  # kept: a rerun retries instance 11 only


def test_cuda_out_of_memory_on_one_instance_reads_as_crm_refine(
        tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # It read "RuntimeError: CUDA out of memory. ..." without crm refine's advice to try the CPU.
    error = RuntimeError(CUDA_SHORTAGE)

    def refine_detailed(self: engine.Refiner, *args: Any, **kwargs: Any) -> None:
        raise error

    photo, mask = write_scene_files(tmp_path / "pair")
    with monkeypatch.context() as patched:
        patched.setattr(engine.Refiner, "refine_detailed", refine_detailed)
        refine = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "o.png"),
                                     "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert refine.exit_code == 1, refine.output
    refine_error = json.loads(refine.stdout)["error"]
    assert refine_error.startswith(CUDA_SHORTAGE) and "--device cpu" in refine_error

    annotations, output = write_coco(tmp_path), tmp_path / "out.json"
    fail_one_refine(monkeypatch, error)
    result = run_coco(annotations, output, tiny_weights)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["refined"] == 2 and summary["failures"] == [
        {"index": 1, "id": 11, "error": refine_error, "file_name": "a.png"}]
    assert_only_failed_kept(annotations, output, {11})


def test_an_image_too_large_to_read_fails_its_instances_only(
        tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A MemoryError while one image was read used to stop the whole run, as on one instance.
    from crm_cli import imageio

    annotations, output = write_coco(tmp_path, ("a.png", "b.png")), tmp_path / "out.json"
    real = imageio.read_image_noted

    def read_image_noted(path: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - as the real one's
        if Path(path).name == "a.png":
            raise MemoryError(NUMPY_SHORTAGE)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(imageio, "read_image_noted", read_image_noted)
    result = run_coco(annotations, output, tiny_weights)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["refined"] == 3 and {f["id"]: f["error"] for f in summary["failures"]} == {
        number: NUMPY_SHORTAGE + MEMORY_ADVICE for number in (10, 11, 12)}
    assert_only_failed_kept(annotations, output, {10, 11, 12})


class CropRefiner:
    """Stands in for the model: raises ``error`` on its ``failing_call``-th crop, returns the coarse mask otherwise."""

    def __init__(self, error: BaseException, failing_call: int = 2) -> None:
        self.error, self.failing_call, self.calls = error, failing_call, 0

    def refine(self, image: np.ndarray, mask: np.ndarray, **options: object) -> np.ndarray:
        self.calls += 1
        if self.calls == self.failing_call:
            raise self.error
        return (mask > 127).astype(np.float32)


def image_job(folder: Path) -> dict[str, Any]:
    """A job of plan_jobs' shape: the three SQUARES on one saved synthetic photo."""
    Image.fromarray(synthetic_scene(120, 160)[0]).save(folder / "a.png")
    return {"image": str(folder / "a.png"), "name": "a.png", "height": 120, "width": 160, "instances": [
        {"index": index, "id": 10 + index, "segmentation": [[x, y, x + side, y, x + side, y + side, x, y + side]]}
        for index, (x, y, side) in enumerate(SQUARES)]}


def test_opencv_out_of_memory_fails_its_instance_and_other_opencv_errors_are_raised(tmp_path: Path) -> None:
    # OpenCV's shortage is one instance's failure, as crm batch takes it for one pair (evaluation.pair_failure).
    job = image_job(tmp_path)
    shortage = cv2.error("OpenCV(4.10.0) alloc.cpp:73: error: (-4:Insufficient memory) "
                         "Failed to allocate 47185920 bytes in function 'OutOfMemoryError'")
    results = list(instances.iter_image_job(CropRefiner(shortage), job, instances.RefineOptions()))
    assert [r["status"] for r in results] == ["refined", "failed", "refined"]
    assert results[1]["error"] == "Unable to allocate 45.0 MiB in OpenCV" + MEMORY_ADVICE
    # Any other OpenCV error is no instance's own failure: it stops the run, as in crm batch.
    other = cv2.error("OpenCV(4.10.0) resize.cpp:4152: error: (-215:Assertion failed) !ssize.empty()")
    with pytest.raises(cv2.error):
        list(instances.iter_image_job(CropRefiner(other), job, instances.RefineOptions()))


def test_the_wording_is_the_librarys_and_loads_neither_torch_nor_opencv() -> None:
    # The CLI keeps its names (cli.failures re-exports them); importing them stays instant.
    check = ("import sys\n"
             "from crm_cli import errors\n"
             "from crm_cli.cli import failures\n"
             "assert failures.out_of_memory_message is errors.out_of_memory_message\n"
             "assert failures.MEMORY_ADVICE == errors.MEMORY_ADVICE\n"
             "print(sorted({'torch', 'cv2'} & set(sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
