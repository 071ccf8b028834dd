"""`crm eval --json` in its own process, its summary kept as a file so an interrupted benchmark resumes.

Shared by ``schedules.py`` and ``choose_checkpoint.py`` (run as scripts, this folder is on
``sys.path``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def cached_eval(folder: Path, options: list[str], result_path: Path) -> dict:
    """The summary of ``crm eval FOLDER --json -q OPTIONS``, read from ``result_path`` when an
    earlier call saved it there; a failed eval raises SystemExit with its stderr."""
    if result_path.exists():
        return json.loads(result_path.read_text())
    command = [sys.executable, "-m", "crm_cli", "eval", str(folder), "--json", "-q", *options]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.strip()}")
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(done.stdout)
    return json.loads(done.stdout)
