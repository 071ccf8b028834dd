"""The ``NAME=FOLDER`` dev-set arguments of the benchmark scripts, checked before any work starts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def named_folders(items: Iterable[str], what: str) -> list[tuple[str, Path]]:
    """``(name, folder)`` of each ``NAME=FOLDER`` item; a SystemExit naming ``what`` (the option or
    argument) for one without ``=`` or whose folder does not exist."""
    sets = []
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            raise SystemExit(f"{what} wants NAME=FOLDER with an existing folder, got {item!r}")
        sets.append((name, Path(folder)))
    return sets
