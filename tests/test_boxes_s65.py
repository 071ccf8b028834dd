"""Session 65: the region pass's ``holes_on_edges`` works on the box of the holes it is given.

A label map's id (or one object's few holes) on a 4K photo labelled and measured the whole map per
call (27 ms at 3840x2160). The boxed path must see exactly the windows the whole map's path sees.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from crm_cli import boxes, guard
from crm_cli.guard import HOLE_WINDOW_MARGIN, holes_on_edges

NEVER = 1 << 62  # a MIN_BOXED_ELEMENTS no map reaches: the whole map's path


def photo_with_holes(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A noisy photo with bright discs, and holes to judge: some of them the discs (on the photo's
    edges), some drawn where the photo is plain, near one point (some cut by the image's edge)."""
    height, width = shape
    photo = rng.integers(40, 80, (height, width, 3)).astype(np.uint8)
    filled = np.zeros(shape, np.uint8)
    cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
    for _ in range(int(rng.integers(1, 6))):
        centre = (int(cx + rng.integers(-40, 40)), int(cy + rng.integers(-40, 40)))
        radius = int(rng.integers(2, 15))
        if rng.random() < 0.5:
            cv2.circle(photo, centre, radius, (230, 230, 230), -1)
            cv2.circle(filled, centre, radius, 1, -1)
        else:
            cv2.circle(filled, centre, radius, 1, -1)
    return photo, filled > 0


class WindowLog:
    """Records the (photo window, region) pairs the alignment is read on, as bytes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.windows: list[tuple[tuple[int, ...], bytes, bytes]] = []
        original = guard.BoundaryGeometry

        def recorded(image: np.ndarray, mask: np.ndarray, **kwargs: object) -> object:
            self.windows.append((image.shape, image.tobytes(), np.asarray(mask).tobytes()))
            return original(image, mask, **kwargs)

        monkeypatch.setattr(guard, "BoundaryGeometry", recorded)


def test_holes_on_the_box_equal_the_whole_map(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(65)
    sizes_seen, found_some, boxed_runs = 0, 0, 0
    whole_calls: list[tuple[int, int]] = []
    original = guard._holes_on_edges

    def spied(image: np.ndarray, filled: np.ndarray, min_alignment: float) -> np.ndarray:
        whole_calls.append(filled.shape)
        return original(image, filled, min_alignment)

    monkeypatch.setattr(guard, "_holes_on_edges", spied)
    for _ in range(40):
        shape = (int(rng.integers(80, 320)), int(rng.integers(80, 320)))
        photo, filled = photo_with_holes(rng, shape)
        log = WindowLog(monkeypatch)
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
        whole_calls.clear()
        boxed = holes_on_edges(photo, filled)
        boxed_windows = log.windows[:]
        boxed_runs += bool(whole_calls) and whole_calls[0] != shape
        log.windows.clear()
        monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", NEVER)
        whole = holes_on_edges(photo, filled)
        np.testing.assert_array_equal(boxed, whole)
        # The same windows, pixel for pixel (OpenCV's labels may come in another order on a crop).
        assert sorted(boxed_windows) == sorted(log.windows)
        sizes_seen += len(log.windows)
        found_some += bool(whole.any())
    assert boxed_runs >= 30 and found_some >= 15 and sizes_seen >= 60


def test_holes_of_an_empty_map_and_a_hole_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
    photo = np.full((120, 160, 3), 60, np.uint8)
    assert not holes_on_edges(photo, np.zeros((120, 160), bool)).any()
    # A bright disc in the photo, its hole given: on the photo's edges, so found whole.
    cv2.circle(photo, (30, 100), 9, (240, 240, 240), -1)
    filled = cv2.circle(np.zeros((120, 160), np.uint8), (30, 100), 9, 1, -1) > 0
    noise = np.random.default_rng(1).integers(-3, 4, photo.shape)
    photo = np.clip(photo.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(holes_on_edges(photo, filled), filled)
    # The same hole where the photo is plain: not found.
    plain = np.clip(np.full((120, 160, 3), 60, np.int16) + noise, 0, 255).astype(np.uint8)
    assert not holes_on_edges(plain, filled).any()


def test_the_window_margin_covers_the_alignment_bands() -> None:
    """The alignment's outer band ends 8 px from the outline; the window (and the box) reach 10 px."""
    assert HOLE_WINDOW_MARGIN == 10


def test_on_box_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """boxes.on_box: None for a small map or a large box, zeros for no box, the work placed on the grown box."""
    from crm_cli.boxes import on_box

    calls: list[tuple[slice, slice]] = []

    def work(box: tuple[slice, slice]) -> np.ndarray:
        calls.append(box)
        return np.full((box[0].stop - box[0].start, box[1].stop - box[1].start), 7, np.uint8)

    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1000)
    assert on_box((20, 30), np.uint8, lambda: (slice(5, 6), slice(5, 6)), 1, work) is None  # 600 values
    monkeypatch.setattr(boxes, "MIN_BOXED_ELEMENTS", 1)
    empty = on_box((20, 30), np.uint8, lambda: None, 1, work)
    assert empty is not None and empty.dtype == np.uint8 and not empty.any()
    assert on_box((20, 30), np.uint8, lambda: (slice(0, 15), slice(0, 20)), 1, work) is None  # 16 x 21 > half
    out = on_box((20, 30), np.uint8, lambda: (slice(5, 7), slice(0, 3)), 2, work)
    assert calls == [(slice(3, 9), slice(0, 5))]  # grown by 2, clipped at the left edge
    expected = np.zeros((20, 30), np.uint8)
    expected[3:9, 0:5] = 7
    np.testing.assert_array_equal(out, expected)
