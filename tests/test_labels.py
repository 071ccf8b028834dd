"""Multi-object label maps: per-label refinement, recombination, and palette round trips."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_tiny_model

from crm_cli.imageio import read_mask
from crm_cli.labels import label_ids, refine_labels
from crm_cli.writing import write_png

IDS = (1, 2, 5)
COLOURS = {1: (220, 40, 40), 2: (40, 200, 60), 5: (60, 90, 230)}


def three_object_scene(height: int = 96, width: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Textured background with an ellipse (id 1), a rotated box (id 2) and a disc (id 5)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 90, size=(height, width, 3)).astype(np.uint8)
    gt = np.zeros((height, width), np.uint8)
    cv2.ellipse(gt, (width // 4, height // 3), (width // 6, height // 5), 20, 0, 360, 1, -1)
    box = cv2.boxPoints(((int(width * 0.7), int(height * 0.3)), (width * 0.3, height * 0.25), 30))
    cv2.fillPoly(gt, [np.round(box).astype(np.int32)], 2)
    cv2.circle(gt, (width // 2, int(height * 0.75)), height // 6, 5, -1)
    for label, colour in COLOURS.items():
        inside = gt == label
        noise = rng.integers(-20, 21, size=(int(inside.sum()), 3))
        image[inside] = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
    return image, gt


def blocky(labels: np.ndarray, factor: int = 8) -> np.ndarray:
    """Coarse label map: nearest down-then-up sampling keeps ids but makes the boundaries blocky."""
    height, width = labels.shape
    small = cv2.resize(labels, (width // factor, height // factor), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b)) / max(1, int(np.count_nonzero(a | b)))


class OracleRefiner:
    """Returns the GT of whichever label the coarse mask mostly covers, as a float map."""

    def __init__(self, gt: np.ndarray) -> None:
        self.gt = gt
        self.calls: list[int] = []

    def refine(self, image: np.ndarray, mask: np.ndarray, ratios: Sequence[float] = (1.0,)) -> np.ndarray:
        on = mask > 127
        counts = np.bincount(self.gt[on], minlength=256)
        counts[0] = 0
        label = int(np.argmax(counts))
        self.calls.append(label)
        return (self.gt == label).astype(np.float32)


class TableRefiner:
    """Returns a fixed probability map per label; the label is read from the coarse mask."""

    def __init__(self, labels: np.ndarray, maps: dict[int, np.ndarray]) -> None:
        self.labels, self.maps = labels, maps

    def refine(self, image: np.ndarray, mask: np.ndarray, ratios: Sequence[float] = (1.0,)) -> np.ndarray:
        (label,) = set(self.labels[mask > 127].tolist())
        return self.maps[int(label)]


@pytest.fixture
def palette() -> list[int]:
    flat = [0] * 768
    for label, colour in COLOURS.items():
        flat[3 * label:3 * label + 3] = colour
    flat[3 * 7:3 * 7 + 3] = (1, 2, 3)  # an unused entry must survive too
    return flat


def test_label_ids() -> None:
    assert label_ids(np.array([[0, 5, 2], [2, 0, 1]], np.uint8)) == [1, 2, 5]
    assert label_ids(np.array([[0, 300], [1000, 0]], np.uint16)) == [300, 1000]
    assert label_ids(np.zeros((3, 3), np.uint8)) == []
    with pytest.raises(ValueError):
        label_ids(np.zeros((3, 3), np.float32))


def test_palette_mask_refined_per_label(tmp_path: Path, palette: list[int]) -> None:
    """The 'done when' test: a 3-label palette PNG keeps ids and palette and every label improves."""
    image, gt = three_object_scene()
    coarse = blocky(gt)
    assert set(label_ids(coarse)) == set(IDS)
    write_png(tmp_path / "coarse.png", coarse, palette)
    mask = read_mask(tmp_path / "coarse.png")
    assert mask.kind == "palette" and mask.is_label_map()

    refiner = OracleRefiner(gt)
    refined = refine_labels(refiner, image, mask.values)
    assert sorted(refiner.calls) == list(IDS)
    write_png(tmp_path / "refined.png", refined, mask.palette)
    back = read_mask(tmp_path / "refined.png")

    assert back.kind == "palette" and back.palette == palette
    assert back.values.dtype == np.uint8 and label_ids(back.values) == list(IDS)
    for label in IDS:
        before = iou(coarse == label, gt == label)
        after = iou(back.values == label, gt == label)
        assert after >= before
        assert after == 1.0
    np.testing.assert_array_equal(back.values, gt)


def test_real_tiny_model_keeps_ids_palette_and_dtype(tmp_path: Path, palette: list[int]) -> None:
    from crm_cli.engine import Refiner

    image, gt = three_object_scene(64, 80, seed=1)
    coarse = blocky(gt)
    refiner = Refiner.from_model(make_tiny_model(), device="cpu")
    refined = refine_labels(refiner, image, coarse)
    assert refined.dtype == np.uint8 and refined.shape == coarse.shape
    assert set(label_ids(refined)) <= set(IDS)
    write_png(tmp_path / "out.png", refined, palette)
    assert read_mask(tmp_path / "out.png").palette == palette


def test_selected_labels_leave_others_untouched() -> None:
    image, gt = three_object_scene()
    coarse = blocky(gt)
    # Label 2's "refinement" spills over everything; it may only claim background and label 2.
    spill = cv2.dilate((gt == 2).astype(np.uint8), np.ones((41, 41), np.uint8)).astype(np.float32)
    refiner = TableRefiner(coarse, {2: spill})
    refined = refine_labels(refiner, image, coarse, labels=[2])

    others = (coarse != 0) & (coarse != 2)
    assert others.any()
    assert refined[others].tobytes() == coarse[others].tobytes()
    claimable = (coarse == 0) | (coarse == 2)
    np.testing.assert_array_equal(refined[claimable], np.where(spill[claimable] >= 0.5, 2, 0))
    # Ids that are absent, or background, select nothing.
    assert refine_labels(refiner, image, coarse, labels=[0, 9]).tobytes() == coarse.tobytes()


def test_background_where_every_probability_is_low() -> None:
    labels = np.array([[1, 1, 0], [2, 2, 0]], np.uint8)
    image = np.zeros((2, 3, 3), np.uint8)
    maps = {1: np.full((2, 3), 0.49, np.float32), 2: np.array([[0.2, 0.3, 0.1], [0.4, 0.6, 0.0]], np.float32)}
    refined = refine_labels(TableRefiner(labels, maps), image, labels)
    np.testing.assert_array_equal(refined, [[0, 0, 0], [0, 2, 0]])


def test_argmax_on_overlaps() -> None:
    """Two pixels, both claimed by both labels: each goes to the label with the higher probability."""
    labels = np.array([[1, 2]], np.uint8)
    image = np.zeros((1, 2, 3), np.uint8)
    maps = {1: np.array([[0.6, 0.9]], np.float32), 2: np.array([[0.8, 0.7]], np.float32)}
    refined = refine_labels(TableRefiner(labels, maps), image, labels)
    np.testing.assert_array_equal(refined, [[2, 1]])


def test_uint16_ids_are_kept() -> None:
    labels = np.zeros((4, 4), np.uint16)
    labels[:2, :2], labels[2:, 2:] = 300, 1000
    image = np.zeros((4, 4, 3), np.uint8)
    maps = {lab: (labels == lab).astype(np.float32) for lab in (300, 1000)}
    refined = refine_labels(TableRefiner(labels, maps), image, labels)
    assert refined.dtype == np.uint16
    np.testing.assert_array_equal(refined, labels)


def test_size_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not match"):
        refine_labels(OracleRefiner(np.zeros((4, 4), np.uint8)), np.zeros((4, 5, 3), np.uint8),
                      np.zeros((4, 4), np.uint8))


def test_shipped_model_refines_a_palette_label_map(tmp_path: Path, palette: list[int]) -> None:
    """Done-when check: a 3-label palette mask refines to a palette PNG with the same ids and palette,
    and no label's IoU against the synthetic GT drops below the coarse one."""
    from typer.testing import CliRunner

    from crm_cli.checkpoint import default_weights_path
    from crm_cli.cli import app

    if not default_weights_path().exists():
        pytest.skip("no shipped weights")
    image, gt = three_object_scene(384, 512, seed=3)
    coarse = blocky(gt, 16)
    cv2.imwrite(str(tmp_path / "im.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    write_png(tmp_path / "coarse.png", coarse, palette)
    result = CliRunner().invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "coarse.png"),
                                      "-o", str(tmp_path / "out.png"), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert '"mode": "labels"' in result.stdout
    refined = read_mask(tmp_path / "out.png")
    assert refined.kind == "palette" and refined.palette[: len(palette)] == palette
    assert label_ids(refined.values) == list(IDS)
    for label in IDS:
        assert iou(refined.values == label, gt == label) >= iou(coarse == label, gt == label), label
