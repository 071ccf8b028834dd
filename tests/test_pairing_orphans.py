"""Side by side, a file named like a mask whose photo is missing (``b_mask.png`` with no ``b.*``
beside it) is a mask without an image, as in the images/ + masks/ layout, where other files of its
folder with the same suffix are the masks of photos beside them: a note, never a failure. Pairing
tests use empty files; the command test refines a 120x160 scene with the tiny test weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import flat, write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.pairing import FilePair, NoPairsError, Pairing, scan_pairs

runner = CliRunner()
TRIED = "(or .mask, -mask, _matte, .matte, -matte)"


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def pairs_of(found: Pairing[FilePair], root: Path) -> dict[str, tuple[str, str, str]]:
    """``{name: (image, mask, output)}``, image and mask relative to ``root``."""
    return {pair.name: (pair.image.relative_to(root).as_posix(), pair.mask.relative_to(root).as_posix(),
                        pair.relative_output.as_posix()) for pair in found.pairs}


def orphans_note(count: int, example: Path) -> str:
    """The note counting the masks without an image, naming one."""
    return f"{count} mask{'' if count == 1 else 's'} without an image ignored, e.g. {example}"


def test_a_mask_whose_photo_is_missing_is_a_note_beside_pairs_of_its_suffix(tmp_path: Path) -> None:
    """``b_mask.png`` and ``c_MASK.tif`` (the suffix in any letter case) beside ``a.jpg`` +
    ``a_mask.png``, and ``e-Matte.png`` beside ``d.png`` + ``d-matte.png``, have no photo: counted
    in the note, not failures asking for ``b_mask_mask.*``."""
    touch(tmp_path, "a.jpg", "a_mask.png", "b_mask.png", "c_MASK.tif", "d.png", "d-matte.png", "e-Matte.png")
    found = scan_pairs(tmp_path)
    assert pairs_of(found, tmp_path) == {"a": ("a.jpg", "a_mask.png", "a.png"), "d": ("d.png", "d-matte.png", "d.png")}
    assert found.failures == []
    assert found.notes == [orphans_note(3, tmp_path / "b_mask.png")]


def test_a_mask_whose_photo_is_missing_is_told_apart_with_zero_padding_ignored(tmp_path: Path) -> None:
    """``frame_0002_mask.png`` beside ``frame_1.png`` + ``frame_0001_mask.png``: the pair has the
    suffix ``_mask`` once zeros are ignored, so the mask of the missing frame 2 is a note."""
    shot = tmp_path / "shot"
    touch(shot, "frame_1.png", "frame_0001_mask.png", "frame_0002_mask.png")
    found = scan_pairs(shot)
    assert pairs_of(found, shot) == {"frame_1": ("frame_1.png", "frame_0001_mask.png", "frame_1.png")}
    assert found.failures == []
    assert found.notes[-1] == orphans_note(1, shot / "frame_0002_mask.png")


def test_a_mask_like_name_without_pairs_of_its_suffix_beside_it_stays_a_photo(tmp_path: Path) -> None:
    """``ski-mask.jpg`` alone beside ``_mask`` pairs is a photo without its mask (``-mask`` is
    another suffix), and so is ``y_mask.png`` in a folder whose one pair uses ``-matte``: only the
    masks of the file's own folder count."""
    touch(tmp_path, "cat.jpg", "cat_mask.png", "ski-mask.jpg", "sub/x.jpg", "sub/x-matte.png", "sub/y_mask.png")
    found = scan_pairs(tmp_path)
    assert pairs_of(found, tmp_path) == {"cat": ("cat.jpg", "cat_mask.png", "cat.png"),
                                         "sub/x": ("sub/x.jpg", "sub/x-matte.png", "sub/x.png")}
    assert found.problems == [f"{tmp_path / 'ski-mask.jpg'}: no mask ski-mask_mask.* {TRIED} beside it",
                              f"{tmp_path / 'sub/y_mask.png'}: no mask y_mask_mask.* {TRIED} beside it"]
    assert found.notes == []


def test_a_file_whose_own_mask_lies_beside_it_is_a_photo_whatever_its_name(tmp_path: Path) -> None:
    """``ski-mask.jpg`` with ``ski-mask_mask.png`` beside it is a photo even among ``-mask`` pairs,
    which make a lone ``boot-mask.jpg`` a mask without an image."""
    touch(tmp_path, "cat.jpg", "cat-mask.png", "ski-mask.jpg", "ski-mask_mask.png", "boot-mask.jpg")
    found = scan_pairs(tmp_path)
    assert pairs_of(found, tmp_path) == {"cat": ("cat.jpg", "cat-mask.png", "cat.png"),
                                         "ski-mask": ("ski-mask.jpg", "ski-mask_mask.png", "ski-mask.png")}
    assert found.failures == []
    assert found.notes == [orphans_note(1, tmp_path / "boot-mask.jpg")]


def test_a_folder_without_pairs_is_no_layout_as_before(tmp_path: Path) -> None:
    """No file of the folder is the mask of a photo beside it: ``b_mask.png`` is a photo, and the
    folder holds no layout at all."""
    touch(tmp_path, "a.jpg", "b_mask.png")
    with pytest.raises(NoPairsError, match="no pairs found"):
        scan_pairs(tmp_path)


def test_batch_refines_the_pair_and_notes_the_mask_without_its_photo(tiny_weights: Path, tmp_path: Path) -> None:
    """``crm batch`` on one pair and one mask whose photo is missing: one output, a warning naming
    the mask, no failure, exit 0."""
    data, out = tmp_path / "data", tmp_path / "out"
    write_scene_files(data, "a", "a_mask", size=(120, 160))
    (data / "b_mask.png").write_bytes((data / "a_mask.png").read_bytes())
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (1, 0)
    assert sorted(path.name for path in out.iterdir()) == ["a.png"]
    stderr = flat(result.stderr)
    assert f"warning: {orphans_note(1, data / 'b_mask.png')}" in stderr
    assert "b_mask_mask" not in stderr
