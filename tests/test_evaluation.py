"""evaluation.evaluate: the threshold decides how the refined mask and every stage are scored."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.engine import RefineResult
from crm_cli.evaluation import Sample, evaluate, folder_samples
from crm_cli.masks import binarize
from crm_cli.pairing import FilePair

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


def twelve_bit_note(photo: Path, top: int) -> str:
    """The note crm refine gives for a 16-bit photo read on the 12-bit scale."""
    return f"{photo}: a 16-bit image whose largest value is {top}, read as 12-bit values (4095 = white)"


def test_folder_samples_note_a_16bit_photo_read_on_a_smaller_scale(tmp_path: Path) -> None:
    photo, top = write_12bit_big_pair(tmp_path)
    pair = FilePair("p", photo, tmp_path / "p_seg.png", Path("p.png"), tmp_path / "p_gt.png")

    (sample,) = folder_samples([pair])

    assert sample.notes == [twelve_bit_note(photo, top)]
    assert int(sample.image.max()) == 255  # rescaled: 4095 is white, as crm refine reads it


def test_eval_warns_once_on_stderr_about_a_16bit_photo_read_on_a_smaller_scale(tmp_path: Path,
                                                                                tiny_weights: Path) -> None:
    photo, top = write_12bit_big_pair(tmp_path / "big")

    result = runner.invoke(app, ["eval", str(tmp_path / "big"), "-w", str(tiny_weights), "-d", "cpu", "--json", "-q"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n"] == 1  # stdout holds the JSON only
    stderr = " ".join(result.stderr.split())
    assert stderr.count(f"warning: {twelve_bit_note(photo, top)}") == 1, stderr
