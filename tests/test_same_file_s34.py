"""``checks.same_as_any``: which of many paths names one existing file, the target stat'ed once.

``crm score --csv`` and ``crm compare -o`` refuse an output that is one of their inputs; both ask
this one helper (score used to keep its own os.stat loop, compare a same_file loop)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crm_cli.cli.checks import same_as_any, same_file


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two distinct files and a hard link to the second: (a, b, link_to_b)."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    link = tmp_path / "link.png"
    os.link(b, link)
    return a, b, link


def test_the_first_path_naming_the_target_is_returned(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    a, b, link = files
    other_spelling = tmp_path / "sub" / ".." / "b.png"
    (tmp_path / "sub").mkdir()
    assert same_as_any(b, [a, other_spelling, b]) is other_spelling
    assert same_as_any(link, [a, b]) is b  # through a link
    assert same_as_any(a, [b, link]) is None


def test_none_missing_and_nul_paths_are_skipped(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    a, b, _ = files
    assert same_as_any(a, [None, tmp_path / "missing.png", Path("x\0y"), a]) is a
    assert same_as_any(tmp_path / "missing.png", [a, b]) is None
    assert same_as_any(Path("x\0y"), [a]) is None
    assert same_as_any(a, []) is None


def test_the_target_is_stated_once(files: tuple[Path, Path, Path], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, _ = files
    real = os.stat
    stated: list[str] = []

    def counting(path: object, *args: object, **kwargs: object) -> os.stat_result:
        stated.append(os.fspath(path))  # type: ignore[arg-type]
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting)
    others = [tmp_path / f"o{i}.png" for i in range(5)]
    for other in others:
        other.write_bytes(b"o")
    assert same_as_any(a, [*others, b]) is None
    assert stated.count(str(a)) == 1 and len(stated) == 1 + len(others) + 1


def test_same_file_agrees(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    a, b, link = files
    assert same_file(b, link) and same_file(link, b) and same_file(a, a)
    assert not same_file(a, b) and not same_file(a, tmp_path / "missing.png") and not same_file(a, Path("x\0y"))
