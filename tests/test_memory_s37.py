"""Refiner.release_memory hands glibc's free heap back to the system (malloc_trim); without glibc it
does nothing and never raises."""

from __future__ import annotations

import platform
import sys
import threading
from collections.abc import Iterator

import pytest
from conftest import coarse_of, make_tiny_model, synthetic_scene

from crm_cli import engine, runtime
from crm_cli.engine import Refiner

SIDE = 64  # every test image is SIDE x SIDE


@pytest.fixture(scope="module")
def refiner() -> Refiner:
    """A tiny in-memory model on the CPU: the torch backend."""
    return Refiner.from_model(make_tiny_model(), device="cpu")


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    """The cached libc lookup forgotten before and after the test, so a faked library stays in it."""
    runtime._glibc_malloc_trim.cache_clear()
    yield
    runtime._glibc_malloc_trim.cache_clear()


def refine_once(refiner: Refiner) -> None:
    image, gt = synthetic_scene(SIDE, SIDE)
    refiner.refine(image, coarse_of(gt, 4))


def test_refining_does_not_trim_by_itself(refiner: Refiner, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(engine, "release_free_heap", lambda: calls.append(1) or True)
    refine_once(refiner)
    assert calls == []
    assert refiner.release_memory() is True and calls == [1]


def test_release_memory_waits_for_a_refinement_in_another_thread(refiner: Refiner,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(engine, "release_free_heap", lambda: events.append("trim") or True)
    with refiner._lock:  # a refinement running in this thread
        other = threading.Thread(target=refiner.release_memory)
        other.start()
        other.join(timeout=0.2)
        events.append("refined")
    other.join()
    assert events == ["refined", "trim"]


def test_missing_malloc_trim_is_a_no_op(refiner: Refiner, fresh_lookup: None,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTrim:
        """A C library without malloc_trim (musl)."""

    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: NoTrim())
    assert runtime.release_free_heap() is False
    assert refiner.release_memory() is False
    refine_once(refiner)  # refines as before


def test_unloadable_libc_is_a_no_op(fresh_lookup: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str | None) -> None:
        raise OSError(f"cannot open {name}")

    monkeypatch.setattr(runtime.ctypes, "CDLL", refuse)
    assert runtime.release_free_heap() is False


def test_other_systems_do_not_look_for_libc(fresh_lookup: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def unexpected(name: str | None) -> None:
        raise AssertionError("the C library was opened")

    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(runtime.ctypes, "CDLL", unexpected)
    assert runtime.release_free_heap() is False


def test_a_trim_that_raises_is_false_not_an_error(refiner: Refiner, fresh_lookup: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenLibc:
        @staticmethod
        def malloc_trim(pad: int) -> int:
            raise RuntimeError("broken")

    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: BrokenLibc())
    assert refiner.release_memory() is False


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
def test_glibc_trim_runs(refiner: Refiner, fresh_lookup: None) -> None:
    assert refiner.release_memory() is True
