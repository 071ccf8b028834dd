"""Reading what crm batch recorded in its outputs: the settings record of a PNG output and the
outputs' modification stamps (which a rerun that skips leaves alone)."""

from __future__ import annotations

import json
from pathlib import Path


def record_of(path: Path) -> dict:
    """The settings record batch wrote in the PNG output ``path`` (fails when there is none)."""
    from crm_cli.cli.batch import SETTINGS_KEYWORD
    from crm_cli.writing import read_png_text

    text = read_png_text(path, SETTINGS_KEYWORD)
    assert text is not None
    return json.loads(text)


def stamps_of(out: Path, names: list[str]) -> list[int]:
    """The modification times (ns) of the outputs ``names`` under ``out``."""
    return [(out / name).stat().st_mtime_ns for name in names]
