"""The no-pairs hint for photo and mask folders of other names reads at most its cap (session 34 review):
_HINT_ENTRIES entries of each folder, taken from the disk one by one, and each real folder once however many
links lead to it."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from types import TracebackType

import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli import pairing_hints
from crm_cli.cli import app

runner = CliRunner()


class _Reads:
    """Counts, by real folder, the ``os.scandir`` calls and the entries they hand out (``os.walk``
    lists folders with ``os.scandir`` too)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scans: Counter[str] = Counter()
        self.entries: Counter[str] = Counter()
        scandir = os.scandir
        reads = self

        class Scan:
            def __init__(self, path: str | os.PathLike[str]) -> None:
                self.real = os.path.realpath(path)
                self.scan = scandir(path)
                reads.scans[self.real] += 1

            def __enter__(self) -> Scan:
                return self

            def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                         trace: TracebackType | None) -> None:
                self.scan.close()

            def __iter__(self) -> Scan:
                return self

            def __next__(self) -> os.DirEntry[str]:
                entry = next(self.scan)
                reads.entries[self.real] += 1
                return entry

            def close(self) -> None:
                self.scan.close()

        monkeypatch.setattr(os, "scandir", Scan)


def empty_files(folder: Path, count: int, suffix: str) -> None:
    """``count`` empty files ``f0000<suffix>``... in ``folder`` (the hint reads names, not pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (folder / f"f{number:04d}{suffix}").touch()


@pytest.mark.parametrize("sub_folders", [0, 30])
def test_the_hint_takes_at_most_its_cap_of_entries_from_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  sub_folders: int) -> None:
    # 3000 files in one folder, or 30 sub-folders of 100 files each.
    folder = tmp_path / "frames"
    if sub_folders:
        for index in range(sub_folders):
            empty_files(folder / f"s{index:02d}", 100, ".png")
    else:
        empty_files(folder, 3000, ".png")
    reads = _Reads(monkeypatch)
    found = pairing_hints._hint_names(folder)
    assert sum(reads.entries.values()) == pairing_hints._HINT_ENTRIES == 2000
    names, complete = found
    assert not complete
    # Every entry taken is an image file of its own name, or one of the 30 sub-folders read first (breadth first).
    assert len(names) == 2000 - sub_folders
    if sub_folders:
        assert reads.entries[str(folder.resolve())] == 30
        assert {path.parent.name for path in names.values()} == {f"s{index:02d}" for index in range(20)}


def test_linked_folders_are_read_once_and_after_folders_of_their_own(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "shoot"
    (root / "alpha").mkdir(parents=True)
    for stem, seed in (("a", 0), ("b", 1)):
        write_scene_files(root / "frames", stem, "unused", seed=seed)
        (root / "frames" / "unused.png").replace(root / "alpha" / f"{stem}.png")
    # 20 links to frames/ named before it, and a link back to the folder itself.
    for index in range(20):
        (root / f"a{index:02d}").symlink_to(root / "frames", target_is_directory=True)
    (root / "above").symlink_to(root, target_is_directory=True)
    reads = _Reads(monkeypatch)
    assert pairing_hints._sibling_hint(root) == (
        f"; frames/ and alpha/ share 2 image names (e.g. {root / 'frames' / 'a.jpg'} + {root / 'alpha' / 'a.png'}), "
        f"the masks in alpha/: name the two: crm batch {root / 'frames'} --masks {root / 'alpha'} (or call them "
        "images/ and masks/)")
    real = root.resolve()
    assert reads.scans == {str(real): 1, str(real / "frames"): 1, str(real / "alpha"): 1}


def test_the_hint_on_big_folders_says_the_names_are_a_sample(tmp_path: Path) -> None:
    root = tmp_path / "big"
    empty_files(root / "frames", 3000, ".jpg")
    empty_files(root / "alpha", 3000, ".png")
    result = runner.invoke(app, ["batch", str(root), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    folders = re.escape(f"{root / 'alpha'}/f") + r"(\d{4})\.png \+ " + re.escape(f"{root / 'frames'}/f") + r"(\d{4})"
    found = re.fullmatch(
        re.escape(f"error: {root}: no pairs found; expected images/ and masks/ folders, <name>_im.* with <name>_seg.* "
                  "(BIG layout), or photos with their masks beside them named <name>_mask.*; alpha/ and frames/ "
                  "share at least ") + r"(\d+) image names \(e\.g\. " + folders + re.escape(
            ".jpg): if one holds the photos and the other their masks, name the two, the masks' folder after "
            f"--masks: crm batch {root / 'alpha'} --masks {root / 'frames'} (or call them images/ and masks/)"),
        line)
    assert found is not None, line
    shared, first, second = found.groups()
    # 2000 names of each folder's 3000 are read, so at least 1000 are read in both.
    assert 1000 <= int(shared) <= 2000
    assert first == second
