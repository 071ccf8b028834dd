"""Session 64 mutation review: crm's stderr console
(cli/output.py: ``Console(stderr=True, soft_wrap=True)``) keeps Rich's emoji codes on, so a name holding
``:smile:``, ``:b:``, ``:x:`` ... in an error or warning line is printed as an emoji, not as given.
``rich.markup.escape`` escapes markup only, not emoji codes. The console now has emoji off."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def test_an_error_line_names_a_file_with_colons_as_given(tmp_path: Path) -> None:
    """`crm compare x:smile:y.png ...` said "x😄y.png: no such file"."""
    missing = tmp_path / "scan:smile:1.png"
    result = runner.invoke(app, ["compare", str(missing), str(tmp_path / "c.png"), str(tmp_path / "r.png"),
                                 "-o", str(tmp_path / "cmp.png")])
    assert result.exit_code == 1
    assert f"{missing}: no such file" in " ".join(result.stderr.split())
