"""evaluation.evaluate: the threshold decides how the refined mask and every stage are scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import coarse_of, flat, synthetic_scene, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.engine import RefineResult
from crm_cli.evaluation import Sample, evaluate, folder_samples
from crm_cli.masks import binarize
from crm_cli.pairing import FilePair
from crm_cli.writing import NameFolding

runner = CliRunner()
WIDTH = 101  # the ramp's column x holds p = x / 100


class RampRefiner:
    """Stands in for engine.Refiner: the refined mask (and its one stage) is a left-to-right ramp."""

    def refine_detailed(self, image, mask, ratios=None, keep_stages=False, preset=None):  # noqa: ANN001, ANN201
        ramp = np.tile(np.linspace(0.0, 1.0, mask.shape[1], dtype=np.float32), (mask.shape[0], 1))
        return RefineResult(probability=ramp, stages=[ramp] if keep_stages else [], ratios=(1.0,))


def ramp_sample() -> Sample:
    gt = np.zeros((40, WIDTH), np.uint8)
    gt[:, 71:] = 255  # p > 0.7 exactly: columns 71..100
    coarse = np.zeros((40, WIDTH), np.float32)
    coarse[:, 40:] = 1.0
    return Sample("ramp", np.zeros((40, WIDTH, 3), np.uint8), coarse, gt)


@pytest.mark.parametrize(("threshold", "iou"), [(None, 30 / 50), (0.7, 1.0), (0.5, 30 / 50)])
def test_the_threshold_binarises_the_refined_mask_and_the_stages(threshold: float | None, iou: float) -> None:
    # Without a threshold the 8-bit soft mask is scored > 128: round(255 x / 100) > 128 from x = 51,
    # 50 columns against the GT's 30. At 0.7 the mask is exactly the GT. At 0.5, p > 0.5 from x = 51.
    written = []
    result = evaluate(RampRefiner(), [ramp_sample()], per_stage=True, threshold=threshold,
                      on_sample=lambda sample, refined: written.append(refined))
    assert result.refined.iou == pytest.approx(iou)
    assert [stage.iou for stage in result.stages_by_ratio.values()] == [pytest.approx(iou)]
    values = set(np.unique(written[0]).tolist())
    assert values == {0, 255} if threshold is not None else len(values) > 2


def test_folder_samples_rotate_masks_made_from_a_rotated_photos_stored_pixels(tmp_path: Path) -> None:
    # Stored 40x60 with EXIF orientation 6 (upright 60 high, 40 wide); the coarse mask and the GT
    # were drawn on the stored pixels (no tag of their own), the GT at half size.
    stored = np.zeros((40, 60), np.uint8)
    stored[:10, :20] = 255  # top-left as stored: top-right once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.dstack([stored] * 3)).save(tmp_path / "a_im.png", exif=exif)
    Image.fromarray(stored).save(tmp_path / "a_seg.png")
    Image.fromarray(stored[::2, ::2]).save(tmp_path / "a_gt.png")

    pair = FilePair("a", tmp_path / "a_im.png", tmp_path / "a_seg.png", Path("a.png"), tmp_path / "a_gt.png")
    (sample,) = folder_samples([pair])

    upright = np.rot90(stored, -1)
    assert sample.image.shape == (60, 40, 3) and np.array_equal(sample.image[..., 0], upright)
    assert np.array_equal(sample.coarse > 0.5, upright > 0)
    assert binarize(sample.gt).shape == (60, 40) and binarize(sample.gt)[2, 35] and not binarize(sample.gt)[50, 5]
    assert len(sample.notes) == 3 and "a_gt.png: upsampled" in sample.notes[2]
    assert all("as stored, before its EXIF rotation" in note for note in sample.notes[:2])


def write_12bit_big_pair(folder: Path, name: str = "p") -> tuple[Path, int]:
    """A BIG-layout pair whose photo is a 16-bit colour PNG holding 12-bit values; (photo, its top value)."""
    image, gt = synthetic_scene(96, 128, seed=3)
    wide = image.astype(np.uint16) * 16  # 8-bit values on the 12-bit scale: at most 4080
    wide[0, 0] = 4095
    folder.mkdir(parents=True, exist_ok=True)
    photo = folder / f"{name}_im.png"
    cv2.imwrite(str(photo), np.ascontiguousarray(wide[..., ::-1]))
    cv2.imwrite(str(folder / f"{name}_seg.png"), coarse_of(gt))
    cv2.imwrite(str(folder / f"{name}_gt.png"), gt)
    return photo, int(wide.max())


def twelve_bit_note(photo: Path, top: int, option: str = "--photo-bits N") -> str:
    """The note crm refine gives for a 16-bit photo read on the 12-bit scale; the API's readers name
    ``option`` as ``photo_bits=N``."""
    return (f"{photo}: a 16-bit image whose largest value is {top}, read as 12-bit values (4095 = white); the scale "
            f"follows each file's values, so frames of one sequence can differ: {option} fixes it")


def test_folder_samples_note_a_16bit_photo_read_on_a_smaller_scale(tmp_path: Path) -> None:
    photo, top = write_12bit_big_pair(tmp_path)
    pair = FilePair("p", photo, tmp_path / "p_seg.png", Path("p.png"), tmp_path / "p_gt.png")

    (sample,) = folder_samples([pair])

    assert sample.notes == [twelve_bit_note(photo, top, "photo_bits=N")]
    assert int(sample.image.max()) == 255  # rescaled: 4095 is white, as crm refine reads it


def test_eval_warns_once_on_stderr_about_a_16bit_photo_read_on_a_smaller_scale(tmp_path: Path,
                                                                                tiny_weights: Path) -> None:
    photo, top = write_12bit_big_pair(tmp_path / "big")

    result = runner.invoke(app, ["eval", str(tmp_path / "big"), "-w", str(tiny_weights), "-d", "cpu", "--json", "-q"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 1  # stdout holds the JSON only
    stderr = " ".join(result.stderr.split())
    assert stderr.count(f"warning: {twelve_bit_note(photo, top)}") == 1, stderr


def test_eval_with_an_output_folder_fails_pairs_whose_outputs_are_one_file_on_some_disks(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``A_im`` and ``a_im`` would both be written to ``a_mask.png`` on macOS and Windows: with -o
    each fails before the model loads, named with the other and the shared output, as eval reports
    any failed pair (left out of the scores, exit 1); the other pair is scored and written. Without
    -o nothing is written, so all three are scored."""
    (tmp_path / "Case_Probe").touch()
    if (tmp_path / "case_probe").exists():
        pytest.skip("this disk ignores letter case in file names")
    monkeypatch.setattr("crm_cli.pairing.name_folding", lambda folder: NameFolding(case=True, unicode_form=True))
    data, out = tmp_path / "big", tmp_path / "out"
    for seed, stem in enumerate(("A", "a", "b")):
        _, seg = write_scene_files(data, f"{stem}_im", f"{stem}_seg", size=(96, 128), seed=seed)
        shutil.copy(seg, data / f"{stem}_gt.png")
    args = ["eval", str(data), "-w", str(tiny_weights), "-d", "cpu", "--json"]

    result = runner.invoke(app, [*args, "-o", str(out)])

    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["n"], summary["failed"]) == (1, 2)
    assert [(failure["name"], failure["image"]) for failure in summary["failures"]] == [
        ("A", str(data / "A_im.jpg")), ("a", str(data / "a_im.jpg"))]
    assert summary["failures"][0]["error"].startswith(
        f"{data / 'A_im.jpg'}: its output {out / 'A_mask.png'} and {out / 'a_mask.png'} (of {data / 'a_im.jpg'}) "
        "are one file on the output disk, which ignores letter case and Unicode form")
    assert f"failed: a: {data / 'a_im.jpg'}: its output {out / 'a_mask.png'}" in flat(result.stderr)
    assert sorted(path.name for path in out.iterdir()) == ["b_mask.png"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["n"], json.loads(result.stdout)["failed"]) == (3, 0)


def test_eval_names_the_pair_of_a_photo_without_its_coarse_mask_in_json(tiny_weights: Path, tmp_path: Path) -> None:
    """A photo with no ``_seg`` mask is a failure whose --json item names its pair and image, as every
    other failed pair's does (it was ``"name": null``)."""
    data = tmp_path / "big"
    _, seg = write_scene_files(data, "a_im", "a_seg", size=(96, 128))
    shutil.copy(seg, data / "a_gt.png")
    write_scene_files(data, "b_im", "b_unused", size=(96, 128), seed=1)
    result = runner.invoke(app, ["eval", str(data), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["n"], summary["failed"]) == (1, 1)
    assert summary["failures"] == [{"name": "b", "image": str(data / "b_im.jpg"),
                                    "error": f"{data / 'b_im.jpg'}: no matching b_seg.* mask"}]


def test_backend_versions_name_the_partners_threads_only_where_they_differ() -> None:
    """A partner on another backend with another thread count: both are reported, the main weights'
    keys are not overwritten; a partner like its weights adds only ``partner_backend``."""
    import onnxruntime
    import torch

    from crm_cli.evaluation import backend_versions

    def fake(backend: str, threads: int | None = None, partner: object = None) -> SimpleNamespace:
        return SimpleNamespace(backend=backend, runner=SimpleNamespace(threads=threads), partner=partner)

    torch_threads = torch.get_num_threads()
    mixed = backend_versions(fake("onnx", torch_threads + 3, fake("torch")))
    assert mixed == {"backend": "onnx", "onnxruntime": onnxruntime.__version__, "threads": torch_threads + 3,
                     "partner_backend": "torch", "partner_threads": torch_threads, "torch": torch.__version__}
    alike = backend_versions(fake("onnx", 2, fake("onnx", 2)))
    assert alike == {"backend": "onnx", "onnxruntime": onnxruntime.__version__, "threads": 2,
                     "partner_backend": "onnx"}
    assert backend_versions(fake("onnx", None)) == {"backend": "onnx", "onnxruntime": onnxruntime.__version__,
                                                    "threads": None}
