"""Pins for input reading and output writing that the suite let change unnoticed (session 62's
mutation review of masks, imageio, image_headers, writing, labels and the batch record). Tiny inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crm_cli.cli.batch import OutputRecord
from crm_cli.imageio import read_mask, read_photo
from crm_cli.labels import refine_labels, select_labels
from crm_cli.masks import weak_mask_note
from crm_cli.writing import check_output, write_atomic


class _Constant:
    """A stand-in refiner: the same probability for every label and pixel."""

    def __init__(self, value: float) -> None:
        self.value = value

    def refine(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.full(mask.shape, self.value, np.float32)


class _Settings:
    """A stand-in preset: OutputRecord.of reads only its record()."""

    def record(self) -> dict[str, int]:
        return {"ratio": 1}


def _record(output_kind: str, threshold: float | None) -> OutputRecord:
    return OutputRecord.of(mode="binary", labels=None, output_kind=output_kind, threshold=threshold,
                           settings=_Settings(), weights="w")


def test_16bit_pixels_kept_for_a_cutout_are_turned_by_exif_like_the_photo(tmp_path: Path) -> None:
    """keep_16bit's pixels16 get the EXIF orientation (6: a quarter turn clockwise), as the 8-bit pixels do."""
    stored = np.array([[0, 1000, 2000], [3000, 4000, 5000]], "<u2")
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "p16.png"
    Image.fromarray(stored).save(path, exif=exif)
    photo = read_photo(path, keep_16bit=True)
    assert photo.orientation == 6 and photo.pixels.shape == (3, 2, 3)
    assert photo.pixels16 is not None and photo.pixels16.shape == (3, 2, 3)
    np.testing.assert_array_equal(photo.pixels16[..., 0], [[3000, 0], [4000, 1000], [5000, 2000]])


def test_rgba_cutout_of_a_grey_photo_is_read_from_its_alpha(tmp_path: Path) -> None:
    """An RGBA file whose colours are grey (R = G = B, varying) and whose alpha varies is read by its alpha."""
    rgba = np.zeros((1, 4, 4), np.uint8)
    rgba[..., :3] = np.array([10, 200, 50, 90], np.uint8)[:, None]
    rgba[..., 3] = [0, 255, 128, 0]
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    mask = read_mask(path)
    assert mask.kind == "alpha"
    np.testing.assert_array_equal(mask.values, [[0, 255, 128, 0]])


def test_a_largest_value_of_exactly_one_half_gets_the_weak_mask_note() -> None:
    """No pixel above 0.5 (the largest is exactly 0.5) is a weak mask: nothing would be foreground."""
    note = weak_mask_note(np.array([[0.0, 0.5]], np.float32), "m.png")
    assert note == ("m.png: no pixel of the mask is above 0.5 (its largest value is 0.50), "
                    "so nothing is foreground")


def test_label_ties_go_to_the_lower_id() -> None:
    """Two labels refined to the same probability: every editable pixel takes the lower id."""
    values = np.array([[0, 1, 2]], np.uint8)
    image = np.zeros((1, 3, 3), np.uint8)
    result = refine_labels(_Constant(0.8), image, values)
    np.testing.assert_array_equal(result, [[1, 1, 1]])


def test_a_label_probability_of_exactly_one_half_keeps_the_label() -> None:
    """A best probability that reaches FOREGROUND_MIN (0.5) keeps its label; below it is background."""
    values = np.array([[0, 1]], np.uint8)
    image = np.zeros((1, 2, 3), np.uint8)
    np.testing.assert_array_equal(refine_labels(_Constant(0.5), image, values), [[1, 1]])
    np.testing.assert_array_equal(refine_labels(_Constant(0.49), image, values), [[0, 0]])


def test_select_labels_never_reports_the_background_as_missing() -> None:
    """--labels 0,1 on a map of 1 and 2: 1 is refined, and 0 is no missing id (it is never refined)."""
    assert select_labels([1, 2], [0, 1]) == ([1], [])
    assert select_labels([1, 2], [0, 9]) == ([], [9])


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during write_atomic's fsync: the old output stays whole and the temp file is removed."""
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"new bytes")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.png"]


def test_a_tiff_whose_image_data_ends_at_the_last_byte_is_complete(tmp_path: Path) -> None:
    """An uncompressed TIFF (Pillow writes its strip last) is a finished output, not a truncated one."""
    path = tmp_path / "out.tif"
    Image.fromarray(np.full((2, 3), 255, np.uint8)).save(path, format="TIFF")
    with Image.open(path) as image:
        end = image.tag_v2[273][0] + image.tag_v2[279][0]
    assert end == path.stat().st_size  # the premise: the data runs to the very end
    assert check_output(path).problem is None


def test_record_of_another_threshold_is_not_accepted() -> None:
    """A binary output made with --threshold 0.5 is redone by a run with --threshold 0.7."""
    stamp = _record("binary", 0.5).stamp("binary", "binary", False)
    assert _record("binary", 0.5).accepts(stamp)
    assert not _record("binary", 0.7).accepts(stamp)


def test_record_of_another_output_kind_is_not_accepted() -> None:
    """Outputs of another kind with the same threshold (soft/soft16, binary/overlay) are redone."""
    soft = _record("soft", None).stamp("binary", "binary", False)
    assert _record("soft", None).accepts(soft)
    assert not _record("soft16", None).accepts(soft)
    binary = _record("binary", None).stamp("binary", "binary", False)
    assert _record("binary", None).accepts(binary)
    assert not _record("overlay", None).accepts(binary)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_zero_one_mask_is_scored_as_zero_one(dtype: type) -> None:
    """The review's bug: ``binarize`` took a 0/1 integer mask's 1 below the > 128 threshold, so
    ``score_pair`` read two such masks as empty (intersection 0) and two disjoint ones as equal (IoU
    1.0), where every other reader takes them as 0/1 masks (README, ``mask_to_float``)."""
    from crm_cli.masks import binarize
    from crm_cli.metrics import score_pair

    top = np.zeros((4, 4), dtype)
    top[:2] = 1
    bottom = np.zeros((4, 4), dtype)
    bottom[2:] = 1
    np.testing.assert_array_equal(binarize(top), top == 1)
    assert score_pair(top, top).intersection == 8 and score_pair(top, top).iou == 1.0
    assert score_pair(bottom, top).intersection == 0 and score_pair(bottom, top).union == 16
    levels = np.array([[0, 1, 2, 129]], dtype)  # largest value over 1: 8-bit levels, > 128 as before
    np.testing.assert_array_equal(binarize(levels), [[False, False, False, True]])
