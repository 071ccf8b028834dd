"""Pins for scoring behaviour that the suite let change unnoticed (mutation review s62): tiny
hand-computed inputs for metrics, COCO RLE scoring, crm score and evaluation.evaluate."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from crm_cli import coco
from crm_cli.cli import app
from crm_cli.engine import RefineResult
from crm_cli.evaluation import Evaluation, Sample, evaluate
from crm_cli.metrics import DatasetScore, ImageScore, score_pair

runner = CliRunner()


def _square_7x7() -> np.ndarray:
    gt = np.zeros((7, 7), bool)
    gt[2:5, 2:5] = True
    return gt


# ------------------------------------------------------------------------------------- metrics.py


@pytest.mark.parametrize(("pred_shape", "gt_shape"), [((2, 3), (3, 2)), ((1, 4), (4, 1))])
def test_transposed_sizes_are_refused_not_broadcast(pred_shape, gt_shape) -> None:  # noqa: ANN001
    """Same pixel count, other shape: a size mismatch (1x4 against 4x1 would broadcast to 4x4)."""
    with pytest.raises(ValueError, match="does not match"):
        score_pair(np.zeros(pred_shape, np.uint8), np.zeros(gt_shape, np.uint8), "t")


def test_an_mba_of_zero_is_not_an_image_without_boundary() -> None:
    """An all-wrong band scores mBA 0.0 and still counts as an image with a GT boundary."""
    gt = _square_7x7()
    # (7 + 7) / 300 < 1: all 5 radii are 1; the r=1 band of the 3x3 square has 20 pixels and the
    # inverted prediction is wrong on all of them: 0 / 20 at every radius, mean 0.0.
    score = score_pair(~gt, gt, "inverted")
    assert score.mba == 0.0
    scores = DatasetScore([score])
    assert scores.no_boundary == 0
    assert scores.mba == 0.0


# ------------------------------------------------------------------------------------ coco/rle.py


def test_zero_length_foreground_runs_hold_no_column() -> None:
    """A foreground run of length 0 is no foreground: [25, 0] is an empty 5x5 mask."""
    assert coco.foreground_columns(np.array([25, 0]), 5) is None
    # [0, 0, 12, 1, 12]: the one foreground pixel starts at 0 + 0 + 12 = 12, column 12 // 5 = 2.
    assert coco.foreground_columns(np.array([0, 0, 12, 1, 12]), 5) == (2, 3)
    empty = coco.score_instance(np.array([25, 0]), np.array([25, 0]), 5, 5)
    assert (empty.intersection, empty.union, empty.mba, empty.iou) == (0, 0, None, 1.0)


def test_window_starts_at_the_first_foreground_column_of_a_long_run() -> None:
    """One run covering whole columns: the window starts at its first pixel, not its last."""
    # 5 x 20, columns 2..11 full height: runs 2*5 = 10 background, 10*5 = 50 foreground, 8*5 = 40.
    runs = np.array([10, 50, 40])
    assert coco.foreground_columns(runs, 5) == (2, 12)  # pixels 10..59: columns 10//5 = 2 .. 59//5 + 1 = 12
    score = coco.score_instance(runs, runs, 5, 20)
    assert (score.intersection, score.union) == (50, 50)
    assert score.mba == 1.0


def test_uncompressed_rle_may_start_with_a_foreground_run() -> None:
    """counts [0, 2, 4] on 2x3: no background first, then column 0 (2 pixels) foreground."""
    segmentation = {"size": [2, 3], "counts": [0, 2, 4]}
    assert coco.runs_from_segmentation(segmentation, 2, 3).tolist() == [0, 2, 4]
    assert coco.decode_segmentation(segmentation, 2, 3).tolist() == [[True, False, False], [True, False, False]]


def test_huge_negative_runs_are_instance_errors() -> None:
    """A run beyond -2**53 is refused as one, before it can overflow int64."""
    with pytest.raises(coco.InstanceError, match="more than"):
        coco.decode_rle_string(coco.encode_rle_string([-(2**53) - 1]))
    # Odd runs -(k+1) * 2**59 (stored as deltas of -2**59 each): the 17th is -17 * 2**59 < -2**63.
    runs = [v for k in range(17) for v in (0, -(k + 1) * 2**59)]
    with pytest.raises(coco.InstanceError, match="more than"):
        coco.decode_rle_string(coco.encode_rle_string(runs))


# ------------------------------------------------------------------------------------ cli/score.py


def _score_json(tmp_path, pred: np.ndarray, gt: np.ndarray, *args: str) -> dict:  # noqa: ANN001
    cv2.imwrite(str(tmp_path / "p.png"), pred)
    cv2.imwrite(str(tmp_path / "g.png"), gt)
    result = runner.invoke(app, ["score", str(tmp_path / "p.png"), str(tmp_path / "g.png"), "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_threshold_zero_keeps_zero_pixels_out(tmp_path) -> None:  # noqa: ANN001
    """-t 0 is allowed and means p > 0: a pixel of 0 stays background."""
    pred = np.zeros((4, 4), np.uint8)
    pred[:, :3] = 200  # 12 pixels > 0
    gt = np.zeros((4, 4), np.uint8)
    gt[:, :2] = 255  # 8 pixels
    # intersection 8, union 12 -> 2/3 (with p >= 0 every pixel would count: 8 / 16).
    assert _score_json(tmp_path, pred, gt, "-t", "0")["iou"] == pytest.approx(2 / 3, abs=1e-12)


def test_threshold_applies_to_the_prediction_only(tmp_path) -> None:  # noqa: ANN001
    """The ground truth keeps the > 128 rule under -t."""
    gt = np.zeros((4, 4), np.uint8)
    gt[:, 0] = 255
    gt[:, 1] = 100  # soft GT (values 0, 100, 255): 100 is background by > 128
    pred = np.zeros((4, 4), np.uint8)
    pred[:, :2] = 255
    # GT 4 pixels, pred 8: intersection 4, union 8 -> 0.5 (100/255 = 0.39 > 0.3 would make it 1.0).
    assert _score_json(tmp_path, pred, gt, "-t", "0.3")["iou"] == 0.5


def test_csv_leaves_the_mba_of_an_image_without_boundary_empty(tmp_path) -> None:  # noqa: ANN001
    """An empty GT has no mBA: its CSV cell is empty, not 0.0."""
    empty = np.zeros((4, 4), np.uint8)
    cv2.imwrite(str(tmp_path / "p.png"), empty)
    cv2.imwrite(str(tmp_path / "g.png"), empty)
    result = runner.invoke(app, ["score", str(tmp_path / "p.png"), str(tmp_path / "g.png"),
                                 "--csv", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[1].split(",")[1:] == ["1.0", "", "0", "0"]  # both empty: IoU 1.0, no mBA, 0 and 0


# ---------------------------------------------------------------------------------- evaluation.py


class ConstantRefiner:
    """Stands in for engine.Refiner: every pixel refined to p = 0.502."""

    def refine_detailed(self, image, mask, ratios=None, keep_stages=False, preset=None):  # noqa: ANN001, ANN201
        return RefineResult(probability=np.full(mask.shape, 0.502, np.float32), ratios=(1.0,))


def test_evaluate_scores_the_written_8bit_mask_and_keeps_coarse_apart() -> None:
    """The refined mask is scored as written (round(p * 255)), the coarse one as given."""
    gt = np.zeros((4, 4), np.uint8)
    gt[:, :2] = 255
    sample = Sample("s", np.zeros((4, 4, 3), np.uint8), (gt > 0).astype(np.float32), gt)
    result = evaluate(ConstantRefiner(), [sample])
    # coarse == GT: 8 / 8 = 1.0. Refined: round(0.502 * 255) = round(128.01) = 128, not > 128, so the
    # written mask is empty: 0 / 8 (the float 128.01 > 128 would fill it: 8 / 16 = 0.5).
    assert (result.coarse.iou, result.refined.iou) == (1.0, 0.0)
    assert (result.coarse.mba, result.refined.mba) == (1.0, 0.5)  # empty pred: right on the band's outer half


def test_scores_keep_each_value_in_its_key() -> None:
    """Evaluation.scores: each of the four values under its own key, a missing mBA as 0.0."""
    evaluation = Evaluation(coarse=DatasetScore([ImageScore("a", 1, 2, None)]),
                            refined=DatasetScore([ImageScore("a", 3, 5, 0.75)]))
    assert evaluation.scores("v_") == {"v_coarse_iou": 0.5, "v_coarse_mba": 0.0,  # 1/2, None -> 0.0
                                       "v_refined_iou": 0.6, "v_refined_mba": 0.75}  # 3/5


@pytest.mark.parametrize("which", ["prediction", "ground truth"])
def test_a_mask_with_a_channel_axis_is_refused_not_broadcast(which: str) -> None:
    """The review's bug: an (H, W, 1) prediction on a square image broadcast against the (H, W) truth
    (intersection 16, union 48, mBA 2.0 where 8, 8, 1.0 was right); the truth as (H, W, 1) was a
    TypeError. Both are now one ValueError naming the shape."""
    gt = np.zeros((4, 4), np.uint8)
    gt[:, :2] = 255
    pred, truth = (gt[..., None], gt) if which == "prediction" else (gt, gt[..., None])
    with pytest.raises(ValueError, match=rf"the {which} must be an \(H, W\) mask, not of shape \(4, 4, 1\)"):
        score_pair(pred, truth, "t")
    assert score_pair(gt, gt) == ImageScore(name="", intersection=8, union=8, mba=1.0)
