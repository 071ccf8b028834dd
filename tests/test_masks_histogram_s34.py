"""A grey label map holding the void index 255 is counted once: is_label_map and label_ids, asked in turn
as the refine path asks them, read one histogram (cv2.calcHist), not a second count of every pixel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest

from crm_cli.masks import VOID_ID, MaskData


def void_map(dtype: type) -> np.ndarray:
    """A 60x80 map of ids 3 and 8 on background, each edged with a 1-pixel void band (VOC style)."""
    values = np.zeros((60, 80), dtype)
    values[9:31, 9:41] = VOID_ID
    values[10:30, 10:40] = 3
    values[34:56, 44:76] = VOID_ID
    values[35:55, 45:75] = 8
    return values


@pytest.mark.parametrize(("dtype", "kind"), [(np.uint8, "gray8"), (np.uint16, "gray16")])
def test_void_label_map_is_counted_once(monkeypatch: pytest.MonkeyPatch, dtype: type, kind: str) -> None:
    calls: list[str] = []

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(np, "bincount", counting("bincount", np.bincount))
    monkeypatch.setattr(cv2, "calcHist", counting("calcHist", cv2.calcHist))
    mask = MaskData(void_map(dtype), kind)

    assert mask.is_label_map() is True
    assert mask.label_ids == [3, 8, VOID_ID]
    assert len(calls) == 1, calls
