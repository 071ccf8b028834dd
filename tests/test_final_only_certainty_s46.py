"""How sure the model must be for the trust region to let a far pixel change when the final stage refines
alone (``FinalStage.final_only_certainty``, session 46): its pull by hand, its sidecar checks, and which
refinements the engine gives it to."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import coarse_of, make_tiny_model, synthetic_scene

import crm_cli.engine as engine_module
from crm_cli.guard import GUARD_CERTAINTY, GUARD_STRENGTH, apply_guard, certainty_pull
from crm_cli.schedule import FINAL_ONLY_CERTAINTY, FinalStage, Schedule


def test_certainty_pull_by_hand() -> None:
    assert certainty_pull(GUARD_CERTAINTY) == GUARD_STRENGTH == math.log(99.0)  # the guard's own, to the bit
    assert certainty_pull(0.95) == pytest.approx(math.log(19.0), rel=1e-12)
    assert certainty_pull(0.9) == pytest.approx(math.log(9.0), rel=1e-12)
    assert certainty_pull(0.5) == 0.0  # no pull at all
    assert FINAL_ONLY_CERTAINTY == GUARD_CERTAINTY == 0.99  # by default nothing changes
    for certainty in (0.49, 1.0, float("nan")):
        with pytest.raises(ValueError, match="a certainty must be at least 0.5 and below 1"):
            certainty_pull(certainty)


def test_a_lower_certainty_lets_a_far_change_through_that_the_guard_stops() -> None:
    coarse = np.zeros((100, 100), bool)
    coarse[:, :50] = True
    prob = coarse.astype(np.float32)
    prob[50, 5] = 0.03  # 44 px inside the object; the model is 97% sure it is background
    strict, restored_strict = apply_guard(prob, coarse, 16.0)
    loose, restored_loose = apply_guard(prob, coarse, 16.0, certainty_pull(0.95))
    # logit(0.03) + log 99 = log(2.97 / 0.97) > 0: kept as foreground; + log 19 = log(0.57 / 0.97) < 0.
    assert strict[50, 5] == pytest.approx(0.03 * 99 / (0.97 + 0.03 * 99), rel=1e-5) and strict[50, 5] > 0.5
    assert loose[50, 5] == pytest.approx(0.03 * 19 / (0.97 + 0.03 * 19), rel=1e-5) and loose[50, 5] < 0.5
    assert (restored_strict, restored_loose) == (1, 0)


def test_final_only_certainty_hints() -> None:
    assert FinalStage().final_only_certainty == FINAL_ONLY_CERTAINTY
    assert FinalStage.from_hints({"final_only_certainty": 0.95}) == FinalStage(final_only_certainty=0.95)
    assert FinalStage.from_hints({"final_only_certainty": 0.5}).final_only_certainty == 0.5
    for value in (0.4, 1, 1.5):
        with pytest.raises(ValueError, match="final_only_certainty must be at least 0.5 and below 1, not"):
            FinalStage.from_hints({"final_only_certainty": value})
    with pytest.raises(ValueError, match="must be a number >= 0"):
        FinalStage.from_hints({"final_only_certainty": "sure"})


@pytest.mark.parametrize(("schedule", "expected"), [
    # The final stage alone: the weights' certainty.
    (Schedule((1.5,), 16.0, trust=1.0, final_only=True), math.log(9.0)),
    # A region pass ran first, or coarse stages did: the guard's own.
    (Schedule((1.5,), 16.0, trust=1.0, regions=(0.25, 0.5), final_only=True), GUARD_STRENGTH),
    (Schedule((0.5, 1.5), 32.0), GUARD_STRENGTH),
])
def test_the_engine_gives_the_weights_certainty_to_the_final_stage_alone(
        monkeypatch: pytest.MonkeyPatch, schedule: Schedule, expected: float) -> None:
    image, gt = synthetic_scene(256, 320)
    coarse = coarse_of(gt, 8)
    refiner = engine_module.Refiner.from_model(make_tiny_model(), device="cpu",
                                               final_stage=FinalStage(final_only_certainty=0.9))
    monkeypatch.setattr(engine_module, "plan_schedule", lambda *args, **kwargs: schedule)
    # The region pass itself is not under test: it hands the mask on unchanged.
    monkeypatch.setattr(refiner, "_correct_regions",
                        lambda image, mask, foreground, *args: (mask, foreground, None))
    strengths: list[float] = []
    original = engine_module.apply_guard

    def spy(probability, reference, free_px, strength=GUARD_STRENGTH, **kwargs):  # noqa: ANN001, ANN202
        strengths.append(strength)
        return original(probability, reference, free_px, strength, **kwargs)

    monkeypatch.setattr(engine_module, "apply_guard", spy)
    result = refiner.refine_detailed(image, coarse)
    assert strengths == [pytest.approx(expected, rel=1e-12)]
    assert result.probability.shape == coarse.shape
