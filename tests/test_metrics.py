"""IoU and mBA (DESIGN §4): hand-computed cases, and agreement of ``crm score`` with an independent
implementation on random blob masks up to 4000x3000."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from crm_cli.masks import binarize, mask_to_float
from crm_cli.metrics import (
    DatasetScore,
    boundary_accuracy,
    boundary_band,
    boundary_radii,
    score_pair,
)


def _square(shape: tuple[int, int], top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[top:top + side, left:left + side] = 255
    return mask


# ---------------------------------------------------------------------------------------------- IoU


def test_square_against_shifted_square() -> None:
    gt = _square((60, 60), 10, 10, 20)
    pred = _square((60, 60), 13, 15, 20)  # shifted 3 rows down, 5 columns right
    intersection = (20 - 3) * (20 - 5)
    union = 20 * 20 + 20 * 20 - intersection
    score = score_pair(pred, gt, "sq")
    assert (score.intersection, score.union) == (255, 545) == (intersection, union)
    assert score.iou == 255 / 545


def test_identical_masks_score_one() -> None:
    gt = _square((80, 90), 20, 30, 25)
    score = score_pair(gt.copy(), gt)
    assert score.iou == 1.0
    assert score.mba == 1.0


def test_dataset_iou_is_sum_over_sum_not_mean() -> None:
    small_gt = np.zeros((10, 10), np.uint8)
    small_gt[0, 0:2] = 255
    small_pred = np.zeros((10, 10), np.uint8)
    small_pred[0, 0] = 255  # 1 / 2
    big_gt = _square((40, 40), 0, 0, 10)
    big_pred = big_gt.copy()
    big_pred[9, :10] = 0  # 90 / 100
    scores = DatasetScore()
    scores.add(score_pair(small_pred, small_gt, "small"))
    scores.add(score_pair(big_pred, big_gt, "big"))
    assert [s.iou for s in scores.images] == [0.5, 0.9]
    assert scores.iou == 91 / 102
    assert scores.iou != pytest.approx((0.5 + 0.9) / 2)


def test_size_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="does not match"):
        score_pair(np.zeros((10, 12), np.uint8), np.zeros((10, 10), np.uint8), "x")


# ------------------------------------------------------------------------------------- binarisation


def test_threshold_8bit() -> None:
    assert binarize(np.array([0, 127, 128, 129, 255], np.uint8)).tolist() == [False, False, False, True, True]


def test_threshold_16bit_scaled_exactly() -> None:
    # 65535 = 255 * 257, so uint16 v is v / 257 on the 8-bit scale: 32896 / 257 == 128 exactly
    # (background), 32897 / 257 = 128.004 (foreground).
    assert 128 * 257 == 32896
    values = np.array([0, 32768, 32896, 32897, 33024, 65535], np.uint16)
    assert binarize(values).tolist() == [False, False, False, True, True, True]


def test_threshold_16bit_holding_8bit_values() -> None:
    # A largest value of 2..255 marks 8-bit values in a 16-bit array: > 128 as on 8-bit.
    assert binarize(np.array([0, 128, 129, 255], np.uint16)).tolist() == [False, False, True, True]
    assert binarize(np.array([0, 128, 129, 254], np.uint16)).tolist() == [False, False, True, True]
    assert mask_to_float(np.array([0, 51, 255], np.uint16)).tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert mask_to_float(np.array([0, 51, 250], np.uint16)).tolist() == pytest.approx([0.0, 0.2, 250 / 255])
    # From 256 up the values are 16-bit levels.
    assert binarize(np.array([0, 129, 256], np.uint16)).tolist() == [False, False, False]
    assert mask_to_float(np.array([0, 51, 256], np.uint16)).tolist() == pytest.approx([0.0, 51 / 65535, 256 / 65535])


def test_mask_to_float_copies_only_what_needs_converting() -> None:
    in_range = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert mask_to_float(in_range) is in_range
    over = np.array([[-0.5, 0.5, 1.5]], np.float32)
    assert mask_to_float(over).tolist() == [[0.0, 0.5, 1.0]] and over[0, 0] == -0.5
    as_double = mask_to_float(np.array([[0.25]], np.float64))
    assert as_double.dtype == np.float32 and as_double.tolist() == [[0.25]]
    assert mask_to_float(np.array([0, 51, 255], np.uint8)).tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_threshold_16bit_agrees_with_8bit() -> None:
    gt8 = np.zeros((30, 30), np.uint8)
    gt8[5:20, 5:25] = 255
    pred8 = np.zeros((30, 30), np.uint8)
    pred8[8:22, 3:20] = 200
    a = score_pair(pred8, gt8)
    b = score_pair(pred8.astype(np.uint16) * 257, gt8.astype(np.uint16) * 257)
    assert (a.intersection, a.union, a.mba) == (b.intersection, b.union, b.mba)


def test_float_masks_use_the_same_scale() -> None:
    assert binarize(np.array([0.0, 128 / 255, 0.51, 1.0])).tolist() == [False, False, True, True]


# ---------------------------------------------------------------------------------------------- mBA


@pytest.mark.parametrize(("height", "width", "radii"), [
    (2160, 3840, [1, 4, 8, 12, 16]),
    (1600, 2048, [1, 3, 5, 7, 9]),
    (50, 70, [1, 1, 1, 1, 1]),  # max_r < 1: int() truncates towards zero, like the reference
])
def test_radii(height: int, width: int, radii: list[int]) -> None:
    assert boundary_radii(height, width) == radii


def test_band_radius_one_is_cross_gradient() -> None:
    # At r = 1 the OpenCV ellipse is the 4-neighbour cross.
    assert cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    gt = np.zeros((7, 7), bool)
    gt[2:5, 2:5] = True  # 3x3 square
    expected = {
        (1, 2), (1, 3), (1, 4),
        (2, 1), (2, 2), (2, 3), (2, 4), (2, 5),
        (3, 1), (3, 2), (3, 4), (3, 5),
        (4, 1), (4, 2), (4, 3), (4, 4), (4, 5),
        (5, 2), (5, 3), (5, 4),
    }  # dilation (5x5 minus corners) minus erosion (the centre)
    assert set(zip(*np.nonzero(boundary_band(gt, 1)), strict=True)) == expected


def test_band_ignores_the_image_border() -> None:
    # A square in the corner: the image edge is not a boundary (OpenCV's default border values).
    gt = np.zeros((6, 6), bool)
    gt[0:3, 0:3] = True
    expected = {
        (0, 2), (1, 2), (2, 0), (2, 1), (2, 2),
        (0, 3), (1, 3), (2, 3), (3, 0), (3, 1), (3, 2),
    }
    assert set(zip(*np.nonzero(boundary_band(gt, 1)), strict=True)) == expected


def test_all_wrong_in_band_gives_zero() -> None:
    gt = _square((120, 150), 30, 40, 50)
    score = score_pair(255 - gt, gt)
    assert score.mba == 0.0
    assert score.iou == 0.0


def test_band_only_accuracy_by_hand() -> None:
    # 7x7, r = 1 everywhere (max_r < 1); pred misses 2 of the 20 band pixels of the 3x3 square.
    gt = np.zeros((7, 7), bool)
    gt[2:5, 2:5] = True
    pred = gt.copy()
    pred[2, 2] = False  # band pixel, now wrong
    pred[1, 3] = True  # band pixel, now wrong
    pred[0, 0] = True  # outside the band: does not count
    assert boundary_accuracy(pred, gt) == pytest.approx(18 / 20, abs=0)


@pytest.mark.parametrize("fill", [0, 255])
def test_uniform_gt_has_no_mba_and_is_left_out_of_the_mean(fill: int) -> None:
    flat_gt = np.full((40, 50), fill, np.uint8)
    flat = score_pair(_square((40, 50), 5, 5, 10), flat_gt, "flat")
    assert flat.mba is None
    gt = _square((40, 50), 10, 10, 20)
    pred = _square((40, 50), 11, 10, 20)
    normal = score_pair(pred, gt, "normal")
    assert normal.mba is not None and 0 < normal.mba < 1
    scores = DatasetScore([normal, flat])
    assert scores.mba == normal.mba
    assert scores.no_boundary == 1
    payload = scores.to_dict()
    assert payload["n"] == 2
    assert payload["images"][1] == {"name": "flat", "iou": flat.iou, "mba": None}


def test_dataset_without_any_boundary() -> None:
    scores = DatasetScore([score_pair(np.zeros((9, 9), np.uint8), np.zeros((9, 9), np.uint8), "empty")])
    assert scores.to_dict() == {"iou": 1.0, "mba": None, "n": 1,
                                "images": [{"name": "empty", "iou": 1.0, "mba": None}]}


# ----------------------------------------------------------- agreement with an independent reference


def _reference_foreground(values: np.ndarray) -> np.ndarray:
    """> 128 on the 8-bit scale, written independently: uint16 v counts if v * 255 > 128 * 65535."""
    if values.dtype == np.uint16:
        return values.astype(np.int64) * 255 > 128 * 65535
    return values.astype(np.int64) > 128


def _reference_image(pred_values: np.ndarray, gt_values: np.ndarray) -> tuple[int, int, float | None]:
    """(intersection, union, mBA or None) following DESIGN §4 and CascadePSP's compute_boundary_acc."""
    pred = _reference_foreground(pred_values).astype(np.int64)
    gt = _reference_foreground(gt_values).astype(np.int64)
    intersection = int((pred * gt).sum())
    union = int(((pred + gt) > 0).sum())
    height, width = gt.shape
    max_radius = (width + height) / 300
    accuracies = []
    for i in range(5):
        radius = 1 + int((max_radius - 1) / 5 * i)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        gt8 = gt.astype(np.uint8)
        gradient = cv2.dilate(gt8, kernel).astype(np.int16) - cv2.erode(gt8, kernel).astype(np.int16)
        band = gradient != 0
        edge_pixels = int(band.sum())
        if edge_pixels == 0:
            return intersection, union, None
        g, p = gt[band], pred[band]
        good = int((g * p + (1 - g) * (1 - p)).sum())
        accuracies.append(good / edge_pixels)
    return intersection, union, sum(accuracies) / 5


def _random_blobs(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """A 0/255 mask made of random filled ellipses and rectangles."""
    mask = np.zeros((height, width), np.uint8)
    scale = min(height, width)
    for _ in range(count):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.6:
            axes = (int(rng.integers(2, max(3, scale // 4))), int(rng.integers(2, max(3, scale // 4))))
            cv2.ellipse(mask, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 255, thickness=-1)
        else:
            w, h = int(rng.integers(2, max(3, scale // 3))), int(rng.integers(2, max(3, scale // 3)))
            cv2.rectangle(mask, (cx, cy), (cx + w, cy + h), 255, thickness=-1)
    return mask


def _perturbed(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """A soft 8-bit prediction: GT plus and minus a few blobs, shifted, then blurred (values 0..255)."""
    height, width = gt.shape
    pred = gt.copy()
    pred[_random_blobs(rng, height, width, 3) > 0] = 255
    pred[_random_blobs(rng, height, width, 3) > 0] = 0
    shift = np.float32([[1, 0, rng.integers(-3, 4)], [0, 1, rng.integers(-3, 4)]])
    pred = cv2.warpAffine(pred, shift, (width, height), flags=cv2.INTER_NEAREST)
    sigma = max(1.0, min(height, width) / 200)
    return cv2.GaussianBlur(pred, (0, 0), sigma)


AGREEMENT_SIZES = [(50, 70), (97, 131), (300, 200), (480, 640), (1080, 1920), (1600, 2048), (3000, 4000)]


def test_score_command_agrees_with_independent_reference(tmp_path: Path) -> None:
    from crm_cli.cli import app

    rng = np.random.default_rng(2024)
    folder = tmp_path / "big"
    folder.mkdir()
    expected: dict[str, tuple[int, int, float | None]] = {}
    for k, (height, width) in enumerate(AGREEMENT_SIZES):
        gt = _random_blobs(rng, height, width, int(rng.integers(3, 12)))
        pred = _perturbed(rng, gt)
        name = f"img{k:02d}_{width}x{height}"
        if k == 2:  # one 16-bit pair, values spread over the whole range
            gt, pred = gt.astype(np.uint16) * 257, pred.astype(np.uint16) * 257 + rng.integers(
                0, 257, size=pred.shape).astype(np.uint16) * (pred < 255)
        cv2.imwrite(str(folder / f"{name}_gt.png"), gt, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        cv2.imwrite(str(folder / f"{name}_seg.png"), pred, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        expected[name] = _reference_image(pred, gt)
    empty = np.zeros((60, 80), np.uint8)
    cv2.imwrite(str(folder / "zz_empty_gt.png"), empty)
    cv2.imwrite(str(folder / "zz_empty_seg.png"), _random_blobs(rng, 60, 80, 2))
    expected["zz_empty"] = _reference_image(cv2.imread(str(folder / "zz_empty_seg.png"), 0), empty)

    result = CliRunner().invoke(app, ["score", str(folder), str(folder), "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)

    ref_iou = sum(e[0] for e in expected.values()) / sum(e[1] for e in expected.values())
    ref_mbas = [e[2] for e in expected.values() if e[2] is not None]
    ref_mba = sum(ref_mbas) / len(ref_mbas)
    assert expected["zz_empty"][2] is None and len(ref_mbas) == len(expected) - 1
    assert payload["n"] == len(expected)
    assert [image["name"] for image in payload["images"]] == sorted(expected)

    deltas = [abs(payload["iou"] - ref_iou), abs(payload["mba"] - ref_mba)]
    for image in payload["images"]:
        intersection, union, mba = expected[image["name"]]
        deltas.append(abs(image["iou"] - intersection / union))
        if mba is None:
            assert image["mba"] is None
        else:
            deltas.append(abs(image["mba"] - mba))
    assert 0 < ref_iou < 1 and 0 < ref_mba < 1
    print(f"agreement max |delta| = {max(deltas):.3g} over {len(expected)} images")
    assert max(deltas) <= 1e-6
