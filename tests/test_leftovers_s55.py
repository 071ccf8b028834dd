"""Session 55: the audits' leftovers and findings. Each test of a mend fails on the code before it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_training_pairs
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def flat(text: str) -> str:
    """``text`` with Rich's line wrapping undone."""
    return " ".join(text.split())


def _unsearchable_below(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Stat of everything under ``folder`` raises PermissionError, as when a folder on the way
    cannot be searched (Python 3.11's exists() and is_dir() raise then); root searches everything, so
    it is stood in for."""
    real_stat = Path.stat
    prefix = str(folder)

    def stat(self: Path, *args: object, **kwargs: object) -> os.stat_result:
        if str(self).startswith(prefix + os.sep):
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "stat", stat)


@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--dry-run"]])
def test_batch_output_under_a_folder_that_cannot_be_searched_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      extra: list[str]) -> None:
    """Session 54's leftover: crm batch -o under a folder the user cannot search stat'ed the output folder
    with is_dir() before the write check, a traceback; and each pair was first warned of as "incomplete
    (cannot be read: Permission denied)", an output nobody could see."""
    folder = write_training_pairs(tmp_path / "in", 1)  # images/p00.jpg, masks/p00.png
    out = tmp_path / "locked" / "out"
    _unsearchable_below(monkeypatch, tmp_path / "locked")
    result = runner.invoke(app, ["batch", str(folder), "-o", str(out), "--json", *extra])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["status"] == "failed"
    assert record["error"] == f"cannot write into {out}: permission denied on the way to it"
    assert "incomplete" not in result.stderr
    assert not (tmp_path / "locked").exists()


def test_batch_refines_again_an_output_it_cannot_read(tiny_weights: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An output file that exists but cannot be opened is still named as incomplete and made again."""
    import crm_cli.writing as writing

    folder = write_training_pairs(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "p00.png").write_bytes(b"x")
    real_open = open

    def guarded_open(file: object, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if os.fspath(file) == str(out / "p00.png") and "r" in str(args[0] if args else kwargs.get("mode", "r")):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(writing, "open", guarded_open, raising=False)
    result = runner.invoke(app, ["batch", str(folder), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    message = f"{out / 'p00.png'} is incomplete (cannot be read: Permission denied); refining p00 again"
    assert message in flat(result.stderr)
    assert (out / "p00.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
