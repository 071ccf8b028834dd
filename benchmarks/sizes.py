"""Photo sizes given to the benchmark scripts as ``WIDTHxHEIGHT`` (``--size 3840x2160``, ``--sizes
3840x2160,6000x4000``), read as argparse types so that a malformed one is a usage error of one line."""

from __future__ import annotations

import argparse


def size(text: str) -> tuple[int, int]:
    """``"3840x2160"`` -> (3840, 2160); argparse.ArgumentTypeError for anything else."""
    width, separator, height = text.lower().strip().partition("x")
    try:
        if not separator:
            raise ValueError
        parsed = int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size looks like 3840x2160, not {text!r}") from None
    if min(parsed) < 1:
        raise argparse.ArgumentTypeError(f"a size's sides are at least 1 px, not {text!r}")
    return parsed


def sizes(text: str) -> list[tuple[int, int]]:
    """``"3840x2160,6000x4000"`` -> [(3840, 2160), (6000, 4000)]; empty items are skipped."""
    return [size(item) for item in text.split(",") if item.strip()]
