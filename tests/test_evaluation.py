"""evaluation.evaluate: the threshold decides how the refined mask and every stage are scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crm_cli.engine import RefineResult
from crm_cli.evaluation import Sample, evaluate, folder_samples
from crm_cli.masks import binarize
from crm_cli.pairing import FilePair

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
