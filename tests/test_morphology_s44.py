"""morphology.py: the shared disc, and the two boundary bands it builds, on hand-drawn masks."""

from __future__ import annotations

import numpy as np
import pytest

from crm_cli.metrics import boundary_band
from crm_cli.morphology import disc, near_boundary, thin_parts


def test_disc_is_opencvs_ellipse_of_side_2r_plus_1() -> None:
    assert disc(0).tolist() == [[1]]
    assert disc(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    two = disc(2)
    assert two.shape == (5, 5) and two.dtype == np.uint8
    assert two.tolist() == [[0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]]


@pytest.mark.parametrize("radius", [1, 2, 3, 5])
def test_bands_across_a_straight_boundary(radius: int) -> None:
    """Object from column 20 on: mBA's band holds r columns on each side, near_boundary r + 1."""
    mask = np.zeros((40, 40), bool)
    mask[:, 20:] = True
    row = 20
    assert boundary_band(mask, radius)[row].nonzero()[0].tolist() == list(range(20 - radius, 20 + radius))
    assert near_boundary(mask, radius)[row].nonzero()[0].tolist() == list(range(19 - radius, 21 + radius))


def test_thin_parts_are_lines_and_gaps_narrower_than_the_disc() -> None:
    mask = np.zeros((30, 40), bool)
    mask[:, 10:12] = True  # a 2-px line: thin at radius 2 (a 5-px disc does not fit)
    mask[:, 25:] = True  # 15 px wide: thick
    thin = thin_parts(mask, 2)
    assert thin[:, 10:12].all()
    assert not thin[:, 25:].any() and not thin[:, :10].any() and not thin[:, 12:25].any()
    gap = np.ones((30, 40), bool)
    gap[:, 15:17] = False  # a 2-px gap between two thick parts: thin background
    thin = thin_parts(gap, 2)
    assert thin[:, 15:17].all()
    assert not thin[:, :15].any() and not thin[:, 17:].any()
