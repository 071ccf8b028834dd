"""crm score --csv: the CSV's path is looked up once, not once per file to score, and a CSV that is
one of them (also through a link) is still refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from score_helpers import GT, SHIFTED, squash, write_mask
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def csv_lookups(folder: Path, names: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """How often ``crm score`` looks up (os.stat) its existing --csv file when scoring a pair per name
    in ``folder``/pred and ``folder``/gt; checks the rows it writes."""
    for name in names:
        write_mask(folder / "gt" / f"{name}.png", GT)
        write_mask(folder / "pred" / f"{name}.png", SHIFTED)
    out = folder / "scores.csv"
    out.write_text("old")
    looked_up: list[str] = []
    stat = os.stat

    def counting_stat(path: os.PathLike | str, *args: object, **kwargs: object) -> os.stat_result:
        looked_up.append(os.fspath(path))
        return stat(path, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "stat", counting_stat)
        result = runner.invoke(app, ["score", str(folder / "pred"), str(folder / "gt"), "--csv", str(out)])

    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    assert [(row[0], row[1], row[3], row[4]) for row in rows] == [(name, repr(360 / 440), "360", "440")
                                                                 for name in names]
    return looked_up.count(str(out))


def test_the_csv_path_is_looked_up_as_often_for_six_pairs_as_for_one(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    one = csv_lookups(tmp_path / "one", "a", monkeypatch)
    six = csv_lookups(tmp_path / "six", "abcdef", monkeypatch)

    assert 0 < one == six  # the check that the CSV is none of the inputs stats it once, whatever their number


def test_a_csv_linked_to_a_ground_truth_in_the_folders_is_refused(tmp_path: Path) -> None:
    for name in "ab":
        write_mask(tmp_path / "gt" / f"{name}.png", GT)
        write_mask(tmp_path / "pred" / f"{name}.png", SHIFTED)
    link = tmp_path / "scores.csv"
    link.symlink_to(tmp_path / "gt" / "b.png")
    before = (tmp_path / "gt" / "b.png").read_bytes()

    result = runner.invoke(app, ["score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--csv", str(link)])

    assert result.exit_code == 2, result.output
    assert squash(f"{link} is the ground truth {tmp_path / 'gt' / 'b.png'}; writing the CSV there would replace it") \
        in squash(result.stderr)
    assert (tmp_path / "gt" / "b.png").read_bytes() == before and link.is_symlink()
