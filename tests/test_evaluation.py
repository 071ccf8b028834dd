"""evaluation.evaluate: the threshold decides how the refined mask and every stage are scored."""

from __future__ import annotations

import numpy as np
import pytest

from crm_cli.engine import RefineResult
from crm_cli.evaluation import Sample, evaluate

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
    assert [stage.iou for stage in result.stages] == [pytest.approx(iou)]
    values = set(np.unique(written[0]).tolist())
    assert values == {0, 255} if threshold is not None else len(values) > 2
