"""Session 38: near the unsure-change threshold the refinement is taken in part (a linear ramp), so
that the frames of a sequence whose confidence hovers at the threshold do not flip between the
coarse mask and the refined one."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import featureless_photo, make_tiny_model

from crm_cli.guard import change_weight
from crm_cli.schedule import CHANGE_CONFIDENCE_RAMP, MIN_CHANGE_CONFIDENCE, FinalStage


def test_change_weight_by_hand() -> None:
    # threshold 0.5, ramp 0.025: 0 up to 0.475, 1 from 0.525, linear between.
    assert change_weight(0.40, 0.5, 0.025) == 0.0
    assert change_weight(0.475, 0.5, 0.025) == 0.0
    assert change_weight(0.49, 0.5, 0.025) == pytest.approx(0.3)
    assert change_weight(0.50, 0.5, 0.025) == pytest.approx(0.5)
    assert change_weight(0.51, 0.5, 0.025) == pytest.approx(0.7)
    assert change_weight(0.525, 0.5, 0.025) == 1.0
    assert change_weight(0.9, 0.5, 0.025) == 1.0
    # No gate (threshold 0) takes everything; no ramp is the hard cut.
    assert change_weight(0.01, 0.0, 0.025) == 1.0
    assert change_weight(0.499, 0.5, 0.0) == 0.0
    assert change_weight(0.5, 0.5, 0.0) == 1.0


def test_the_default_ramp_sits_around_the_default_threshold() -> None:
    assert (MIN_CHANGE_CONFIDENCE, CHANGE_CONFIDENCE_RAMP) == (0.5, 0.025)


def _scene() -> tuple[np.ndarray, np.ndarray]:
    coarse = np.zeros((480, 640), np.float32)
    coarse[120:360, 160:480] = 1.0
    image = featureless_photo(480, 640)  # no edges vouch for the boundary: trust 0
    return image, coarse


@pytest.mark.parametrize("value, weight, kept", [
    (0.755, 0.7, False),  # confidence 0.51: 70% of the change
    (0.745, 0.3, True),   # confidence 0.49: below the threshold, 30% blended in, none changes side
    (0.7625, 1.0, False),  # confidence 0.525: all of it
    (0.7375, 0.0, True),  # confidence 0.475: none of it
])
def test_a_change_near_the_threshold_is_taken_in_part(monkeypatch: pytest.MonkeyPatch, value: float,
                                                       weight: float, kept: bool) -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene()
    refiner = Refiner.from_model(make_tiny_model(), device="cpu")
    # The stubbed stages grow the mask by one 8x8 block just outside its boundary (within the free
    # distance, so the guard leaves it), drawn at ``value``.
    changed = coarse.copy()
    changed[112:120, 200:208] = value

    def fake_stages(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return changed.copy()

    monkeypatch.setattr(refiner, "_run_stages", fake_stages)
    result = refiner.refine_detailed(image, coarse)
    assert result.change_confidence == pytest.approx(2 * value - 1, abs=1e-6)
    assert result.kept_coarse is kept
    expected = coarse.copy()
    expected[112:120, 200:208] = weight * value
    np.testing.assert_allclose(result.probability, expected, atol=1e-5)
    # A pixel changes side only past the threshold: with less than half of the change, none does.
    assert np.array_equal(result.probability > 0.5, changed > 0.5) is (weight * value > 0.5)


def test_a_weights_threshold_of_zero_takes_every_change(monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    image, coarse = _scene()
    changed = coarse.copy()
    changed[112:120, 200:208] = 0.51  # confidence 0.02

    def fake_stages(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return changed.copy()

    refiner = Refiner.from_model(make_tiny_model(), device="cpu", final_stage=FinalStage(min_change_confidence=0.0))
    monkeypatch.setattr(refiner, "_run_stages", fake_stages)
    result = refiner.refine_detailed(image, coarse)
    assert not result.kept_coarse
    np.testing.assert_array_equal(result.probability, changed)


def test_the_ramp_narrows_near_a_threshold_of_0_or_1() -> None:
    # A threshold of 0.01 takes none of a change of no confidence; one of 1.0 all of a certain change.
    assert change_weight(0.0, 0.01, 0.025) == 0.0
    assert change_weight(0.01, 0.01, 0.025) == pytest.approx(0.5)
    assert change_weight(0.02, 0.01, 0.025) == 1.0
    assert change_weight(1.0, 1.0, 0.025) == 1.0
    assert change_weight(0.99, 1.0, 0.025) == 0.0
