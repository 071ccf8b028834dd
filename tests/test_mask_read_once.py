"""Masks read once: a label map counted once per decode (``MaskData`` shares
one histogram between the label-map test and its ids), and the one rule of the EXIF
orientations that swap the axes. Tiny synthetic masks; one test loads a tiny model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import synthetic_scene
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.image_headers import apply_orientation
from crm_cli.imageio import probe_image, read_mask
from crm_cli.labels import label_ids
from crm_cli.masks import LABEL_ID_LIMIT, MaskData, drawn_on_stored_pixels, swaps_axes

runner = CliRunner()


def label_values(dtype: type, top: int = 3) -> np.ndarray:
    """A 12x16 map holding ids 1..``top`` in boxes on background 0."""
    values = np.zeros((12, 16), dtype)
    for label in range(1, top + 1):
        values[label - 1, 2 * label:2 * label + 3] = label
    return values


class Counting:
    """Wraps a NumPy function, counting its calls on arrays of ``size`` elements."""

    def __init__(self, function, size: int) -> None:  # noqa: ANN001 - a NumPy function
        self.function, self.size, self.calls = function, size, 0

    def __call__(self, values, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN204
        if np.size(values) == self.size:
            self.calls += 1
        return self.function(values, *args, **kwargs)


class Histograms:
    """Patches ``np.bincount`` and ``cv2.calcHist`` (``MaskData`` counts values with either), counting
    their calls on arrays of ``size`` elements together."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
        self.counters = (Counting(np.bincount, size), Counting(cv2.calcHist, size))
        monkeypatch.setattr(np, "bincount", self.counters[0])
        monkeypatch.setattr(cv2, "calcHist", self.counters[1])

    @property
    def calls(self) -> int:
        """Calls of either function on arrays of ``size`` elements."""
        return sum(counter.calls for counter in self.counters)


@pytest.mark.parametrize(("kind", "dtype"), [("gray8", np.uint8), ("palette", np.uint8), ("gray16", np.uint16)])
def test_a_label_map_is_counted_once_for_its_test_and_its_ids(kind: str, dtype: type,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    values = label_values(dtype)
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756 if kind == "palette" else None
    mask = MaskData(values, kind, palette)
    histograms, unique = Histograms(monkeypatch, values.size), Counting(np.unique, values.size)
    monkeypatch.setattr(np, "unique", unique)

    assert mask.is_label_map() and mask.is_label_map()
    assert mask.label_ids == [1, 2, 3] and mask.label_ids == [1, 2, 3]
    assert (histograms.calls, unique.calls) == (1, 0)


def test_ids_come_from_counts_only_where_the_map_was_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 16-bit map of large ids is no label map by the test (never counted); --mode labels still
    # reads its ids, found by np.unique as before rather than by a 65536-entry count.
    values = label_values(np.uint16) * 1000
    mask = MaskData(values, "gray16")
    histograms, unique = Histograms(monkeypatch, values.size), Counting(np.unique, values.size)
    monkeypatch.setattr(np, "unique", unique)

    assert not mask.is_label_map() and mask.maximum >= LABEL_ID_LIMIT
    assert mask.label_ids == [1000, 2000, 3000]
    assert (histograms.calls, unique.calls) == (0, 1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_label_ids_from_given_counts_match_its_own(dtype: type) -> None:
    values = label_values(dtype, top=5)
    expected = label_ids(values)
    assert expected == [1, 2, 3, 4, 5]
    assert label_ids(values, np.bincount(values.ravel())) == expected
    assert label_ids(values, np.bincount(values.ravel(), minlength=256)) == expected


def write_label_pair(folder: Path) -> np.ndarray:
    """A 96x128 photo ``im.png`` and a grey label map ``ids.png`` holding ids 1 and 2; returns the map."""
    image, _ = synthetic_scene(96, 128)
    cv2.imwrite(str(folder / "im.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    values = np.zeros((96, 128), np.uint8)  # a grey label map: no count while decoding it (a palette has one)
    values[10:40, 10:50], values[50:90, 60:110] = 1, 2
    cv2.imwrite(str(folder / "ids.png"), values)
    return values


def count_decodes_and_counts(monkeypatch: pytest.MonkeyPatch, size: int) -> tuple[list, Histograms]:
    """Patch the mask decoder and the histograms to record decoded mask files and counts of ``size`` values."""
    from crm_cli import imageio

    histograms = Histograms(monkeypatch, size)
    decodes: list = []
    mask_data = imageio.decoded_mask_data  # called once per decoded mask file
    monkeypatch.setattr(imageio, "decoded_mask_data",
                        lambda *args, **kwargs: decodes.append(args) or mask_data(*args, **kwargs))
    return decodes, histograms


def test_refine_labels_decodes_and_counts_the_map_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    values = write_label_pair(tmp_path)
    decodes, histograms = count_decodes_and_counts(monkeypatch, values.size)

    # No id there: nothing to refine, so no model loads (these weights are absent).
    result = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "ids.png"), "-o",
                                 str(tmp_path / "out.png"), "-w", str(tmp_path / "absent.safetensors"), "-d", "cpu",
                                 "--labels", "9"])

    assert result.exit_code == 0, result.output
    assert "it holds labels 1, 2: nothing to refine" in " ".join(result.stderr.split())
    # The pre-model checks' decode is the one the output is made from.
    assert (len(decodes), histograms.calls) == (1, 1)
    np.testing.assert_array_equal(read_mask(tmp_path / "out.png").values, values)


def test_refine_labels_with_the_model_decodes_the_map_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           tiny_weights: Path) -> None:
    values = write_label_pair(tmp_path)
    decodes, _ = count_decodes_and_counts(monkeypatch, values.size)

    result = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "ids.png"), "-o",
                                 str(tmp_path / "out.png"), "-w", str(tiny_weights), "-d", "cpu",
                                 "--labels", "2,9"])

    assert result.exit_code == 0, result.output
    assert len(decodes) == 1
    refined = read_mask(tmp_path / "out.png").values
    assert refined.shape == values.shape and set(np.unique(refined)) <= {0, 1, 2}
    np.testing.assert_array_equal(refined == 1, values == 1)  # a label not asked for is kept as it was


@pytest.mark.parametrize("orientation", range(1, 9))
def test_swaps_axes_is_the_rule_apply_orientation_follows(orientation: int) -> None:
    stored = np.zeros((2, 3), np.uint8)
    upright_shape = apply_orientation(stored, orientation).shape
    # By hand: orientations 5-8 turn the picture a quarter (EXIF 2.3, with or without a mirror).
    assert swaps_axes(orientation) == (orientation in (5, 6, 7, 8))
    assert upright_shape == ((3, 2) if orientation in (5, 6, 7, 8) else (2, 3))
    # The mask rule turns a mask drawn on the stored pixels only where the axes swap.
    assert drawn_on_stored_pixels((2, 3), 1, upright_shape, orientation) == swaps_axes(orientation)


@pytest.mark.parametrize("orientation", [1, 3, 5, 6, 8])
def test_header_and_pixels_agree_on_the_upright_size(orientation: int, tmp_path: Path) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "tagged.png"
    Image.fromarray(label_values(np.uint8)).save(path, exif=exif)

    header = probe_image(path)
    mask = read_mask(path)

    assert header.shape == mask.shape == ((16, 12) if swaps_axes(orientation) else (12, 16))
    assert header.orientation == mask.orientation == orientation
