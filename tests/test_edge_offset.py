"""benchmarks/edge_offset.py: where a mask's boundary lies relative to the image's edges."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import load_benchmark

edge_offset = load_benchmark("edge_offset")

SIZE = 64
EDGE = 32  # columns < EDGE are bright, the rest dark: the image's edge lies between 31 and 32


def step_image(ramp: bool = False) -> np.ndarray:
    """RGB uint8: a vertical step edge (200 | 50); with ``ramp`` the bright side rises 2 per column."""
    grey = np.full((SIZE, SIZE), 50.0)
    columns = np.arange(EDGE)
    grey[:, :EDGE] = 100 + 2 * columns if ramp else 200
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


def columns_mask(last_inside: int) -> np.ndarray:
    """The mask of columns 0..last_inside."""
    mask = np.zeros((SIZE, SIZE), bool)
    mask[:, : last_inside + 1] = True
    return mask


def offset_of(image: np.ndarray, mask: np.ndarray) -> float | None:
    sums, counts = edge_offset.layer_sums(edge_offset.gradient_magnitude(image), mask)
    return edge_offset.edge_offset(sums, counts)


@pytest.mark.parametrize(("last_inside", "expected"), [(31, 0.0), (30, 1.0), (33, -2.0)])
def test_offset_of_a_step_edge(last_inside: int, expected: float) -> None:
    # Sobel puts 4 x 150 on the two columns beside the step and 0 elsewhere, so the centroid is the
    # mean of those two columns' layers: -0.5 and +0.5 for a mask ending at column 31, +0.5 and
    # +1.5 for one ending a column early (drawn tight), -2.5 and -1.5 for one two columns late.
    assert offset_of(step_image(), columns_mask(last_inside)) == pytest.approx(expected, abs=1e-9)


def test_each_sides_texture_level_is_subtracted() -> None:
    # Sobel is 4 x the central difference here. Inside, the ramp gives every column 4 x 4 = 16; at
    # the step, column 31 gets 4 x |I(32) - I(30)| = 4 x |50 - 160| = 440 and column 32
    # 4 x |I(33) - I(31)| = 4 x |50 - 162| = 448. Less each side's far level (16 inside, 0 outside):
    # 424 at -0.5 and 448 at +0.5.
    expected = (-0.5 * 424 + 0.5 * 448) / (424 + 448)
    assert offset_of(step_image(ramp=True), columns_mask(31)) == pytest.approx(expected, abs=1e-9)


def test_a_boundary_off_the_edges_has_low_contrast_and_a_sharp_one_high() -> None:
    image = step_image(ramp=True)
    on = edge_offset.layer_sums(edge_offset.gradient_magnitude(image), columns_mask(31))
    off = edge_offset.layer_sums(edge_offset.gradient_magnitude(image), columns_mask(12))
    assert edge_offset.edge_contrast(*on) == pytest.approx(448 / 8)  # far layers: 16 inside, 0 outside
    assert edge_offset.edge_contrast(*off) == pytest.approx(1.0)  # the ramp alone: 16 on every layer


def test_an_image_without_edges_has_no_offset() -> None:
    flat = np.full((SIZE, SIZE, 3), 90, np.uint8)
    assert offset_of(flat, columns_mask(31)) is None


def test_the_script_measures_gt_coarse_and_refined(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, refined = tmp_path / "set", tmp_path / "refined"
    folder.mkdir()
    refined.mkdir()
    cv2.imwrite(str(folder / "a_im.png"), step_image())
    cv2.imwrite(str(folder / "a_gt.png"), columns_mask(31).astype(np.uint8) * 255)
    cv2.imwrite(str(folder / "a_seg.png"), columns_mask(30).astype(np.uint8) * 255)
    cv2.imwrite(str(refined / "a_mask.png"), columns_mask(33).astype(np.uint8) * 255)
    edge_offset.main([str(folder), "--pred", str(refined)])
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:3]
            for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows == {"ground truth": ["1", "+0.00"], "coarse": ["1", "+1.00"], "refined": ["1", "-2.00"]}


def test_the_script_refuses_a_folder_without_ground_truth(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a_im.png"), step_image())
    cv2.imwrite(str(tmp_path / "a_seg.png"), columns_mask(31).astype(np.uint8) * 255)
    with pytest.raises(SystemExit, match="no image/mask/GT triples"):
        edge_offset.main([str(tmp_path)])
