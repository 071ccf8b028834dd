"""What depends on the photo alone, worked out once for several masks of one photo.

A label map refines each of its ids on the whole photo, and each refinement reads the photo the same
way: whether it is flat or noise, its grey image and gradients for the schedule, its noise level, its
resized and padded copy for every stage. Inside :func:`same_photo` those results are kept for that
photo (the very array: ``is``, not equality) and handed out again; outside it, or for any other array
(a crop, a mirrored copy), :func:`memoized` just computes. The answers are the same either way: only
the time differs.

The caller must not change the photo's pixels while the context is open. Kept arrays are made
read-only, so that no caller can change what the next one is given.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class PhotoMemo:
    """The results kept for one photo, by key."""

    def __init__(self, photo: np.ndarray) -> None:
        self.photo = photo
        self.values: dict[Hashable, Any] = {}


_ACTIVE: ContextVar[PhotoMemo | None] = ContextVar("crm_photo_memo", default=None)


@contextmanager
def same_photo(photo: np.ndarray) -> Iterator[PhotoMemo]:
    """Keep the photo-only results computed for ``photo`` until the context ends (per thread:
    a context variable). Nested contexts each keep their own photo's."""
    memo = PhotoMemo(photo)
    token = _ACTIVE.set(memo)
    try:
        yield memo
    finally:
        _ACTIVE.reset(token)


def held_photo(image: np.ndarray) -> np.ndarray:
    """``image`` as the one array several refinements can share, so that the memo applies: contiguous
    (the engine's own form) and writeable (the torch path copies a read-only photo, such as
    ``np.asarray`` of a PIL image, on every refinement); itself when it is both already."""
    image = np.ascontiguousarray(image)
    return image if image.flags.writeable else image.copy()


def memoized(photo: np.ndarray, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, kept under ``key`` when ``photo`` is the open :func:`same_photo` context's photo.

    ``key`` must name everything the result depends on besides the photo (sizes, ratios). A kept
    array (or arrays in a tuple) is made read-only."""
    memo = _ACTIVE.get()
    if memo is None or memo.photo is not photo:
        return compute()
    if key not in memo.values:
        memo.values[key] = _read_only(compute(), photo)
    return memo.values[key]


def _read_only(value: T, photo: np.ndarray) -> T:
    """``value`` with its arrays (itself, or a tuple's items) marked read-only, except any that may
    share the photo's memory (the caller's own array stays as it was)."""
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, np.ndarray) and not np.may_share_memory(item, photo):
            item.flags.writeable = False
    return value
