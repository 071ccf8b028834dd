"""benchmarks/label_maps.py: its scene, and a run whose boxed and whole label maps agree."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark

from crm_cli import boxes

label_maps = load_benchmark("label_maps")


def test_label_scene_holds_each_id_in_its_own_cell() -> None:
    photo, label_map = label_maps.label_scene(200, 300, 5)
    assert photo.shape == (200, 300, 3) and photo.dtype == np.uint8
    assert label_map.shape == (200, 300) and label_map.dtype == np.uint8
    assert sorted(np.unique(label_map)) == [0, 1, 2, 3, 4, 5]
    # 5 ids on a 300x200 photo: 3 columns of 100 px and 2 rows of 100 px; id 4 starts the second row.
    rows, cols = np.nonzero(label_map == 4)
    assert rows.min() >= 100 and cols.max() < 100
    with pytest.raises(ValueError, match="between 1 and 255 ids"):
        label_maps.label_scene(100, 100, 0)


def test_a_run_prints_a_row_whose_maps_agree(capsys: pytest.CaptureFixture[str]) -> None:
    default = boxes.MIN_BOXED_ELEMENTS
    assert label_maps.main(["--sizes", "1200x400", "--ids", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| size | ids | boxed s")
    row = out[2].split("|")
    assert row[1].strip() == "1200x400" and row[2].strip() == "2" and row[-2].strip() == "yes"
    assert boxes.MIN_BOXED_ELEMENTS == default  # the switch is put back


def test_ids_that_are_not_counts_are_a_usage_error() -> None:
    with pytest.raises(SystemExit) as stopped:
        label_maps.main(["--ids", "five"])
    assert stopped.value.code == 2
