"""The torch backend hands glibc's free heap back to the system (malloc_trim) every
``engine.TRIM_PIXELS`` refined pixels; without glibc the trim does nothing and never fails a refine."""

from __future__ import annotations

import importlib.util
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import coarse_of, make_tiny_model, synthetic_scene

from crm_cli import engine
from crm_cli.engine import Refiner

SIDE = 64  # every test image is SIDE x SIDE


@pytest.fixture(scope="module")
def refiner() -> Refiner:
    """A tiny in-memory model on the CPU: the torch backend."""
    return Refiner.from_model(make_tiny_model(), device="cpu")


@pytest.fixture
def trims(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replaces the trim with a counter; its list gets one entry per trim."""
    calls: list[int] = []

    def counted() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(engine, "release_free_heap", counted)
    return calls


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    """The cached libc lookup forgotten before and after the test, so a faked library stays in it."""
    engine._glibc_malloc_trim.cache_clear()
    yield
    engine._glibc_malloc_trim.cache_clear()


def refine_some(refiner: Refiner, count: int) -> None:
    image, gt = synthetic_scene(SIDE, SIDE)
    for _ in range(count):
        refiner.refine(image, coarse_of(gt, 4))


def test_trims_once_per_budget_of_pixels(refiner: Refiner, trims: list[int],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "TRIM_PIXELS", 3 * SIDE * SIDE)
    refiner._pixels_since_trim = 0
    refine_some(refiner, 2)
    assert trims == []
    refine_some(refiner, 1)  # the third image reaches the budget
    assert len(trims) == 1
    refine_some(refiner, 4)
    assert len(trims) == 2  # images 4-6 make the next budget, the 7th starts another


def test_an_image_as_large_as_the_budget_is_trimmed_after_at_once(refiner: Refiner, trims: list[int],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "TRIM_PIXELS", SIDE * SIDE)
    refiner._pixels_since_trim = 0
    refine_some(refiner, 2)
    assert len(trims) == 2


def test_a_failed_refine_counts_and_still_raises(refiner: Refiner, trims: list[int],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "TRIM_PIXELS", SIDE * SIDE)
    refiner._pixels_since_trim = 0
    image, _ = synthetic_scene(SIDE, SIDE)
    with pytest.raises(ValueError):
        refiner.refine(image, np.zeros((SIDE + 1, SIDE), np.uint8))  # another size than the image
    assert len(trims) == 1


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
def test_the_onnx_backend_does_not_trim(trims: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    weights = Path(__file__).resolve().parents[1] / "weights" / "crm_mobilenet_v2_blend.safetensors"
    if not weights.is_file():
        pytest.skip("no shipped weights in this checkout")
    monkeypatch.setattr(engine, "TRIM_PIXELS", 1)
    onnx = Refiner(weights, device="cpu", backend="onnx")
    refine_some(onnx, 2)
    assert trims == []


def test_missing_malloc_trim_is_a_no_op(refiner: Refiner, fresh_lookup: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTrim:
        """A C library without malloc_trim (musl)."""

    monkeypatch.setattr(engine.ctypes, "CDLL", lambda name: NoTrim())
    assert engine.release_free_heap() is False
    monkeypatch.setattr(engine, "TRIM_PIXELS", 1)
    refine_some(refiner, 1)  # refines as before


def test_unloadable_libc_is_a_no_op(fresh_lookup: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str | None) -> None:
        raise OSError(f"cannot open {name}")

    monkeypatch.setattr(engine.ctypes, "CDLL", refuse)
    assert engine.release_free_heap() is False


def test_other_systems_do_not_look_for_libc(fresh_lookup: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def unexpected(name: str | None) -> None:
        raise AssertionError("the C library was opened")

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(engine.ctypes, "CDLL", unexpected)
    assert engine.release_free_heap() is False


def test_a_trim_that_raises_never_fails_a_refine(refiner: Refiner, fresh_lookup: None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenLibc:
        @staticmethod
        def malloc_trim(pad: int) -> int:
            raise RuntimeError("broken")

    monkeypatch.setattr(engine.ctypes, "CDLL", lambda name: BrokenLibc())
    assert engine.release_free_heap() is False
    monkeypatch.setattr(engine, "TRIM_PIXELS", 1)
    refine_some(refiner, 1)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
def test_glibc_trim_runs(fresh_lookup: None) -> None:
    assert engine.release_free_heap() is True
