"""Folder pairing for ``crm batch`` / ``crm eval``: layouts, output names, duplicates, hidden files,
the output folder. Pairing only looks at names, so the files are empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from crm_cli.pairing import NoPairsError, find_pairs, scan_pairs, scan_predictions


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _outputs(root: Path, exclude: Path | None = None) -> dict[str, tuple[str, str, str]]:
    """``{name: (image, mask, output)}`` with paths relative to ``root``; fails on any problem."""
    pairs, problems = find_pairs(root, exclude)
    assert problems == []
    return {pair.name: (pair.image.relative_to(root).as_posix(), pair.mask.relative_to(root).as_posix(),
                        pair.relative_output.as_posix()) for pair in pairs}


def test_folder_layout_keeps_dotted_names_whole(tmp_path: Path) -> None:
    _touch(tmp_path, "images/frame.001.jpg", "masks/frame.001.png", "images/frame.002.jpg", "masks/frame.002.png",
           "images/IMG_1.final.png", "masks/IMG_1.final.png", "images/x.jpg", "masks/x.png",
           "images/sub/y.jpg", "masks/sub/y.png")
    outputs = {name: output for name, (_, _, output) in _outputs(tmp_path).items()}
    assert outputs == {"IMG_1.final": "IMG_1.final.png", "frame.001": "frame.001.png",
                       "frame.002": "frame.002.png", "sub/y": "sub/y.png", "x": "x.png"}


def test_big_layout_keeps_dotted_names_whole(tmp_path: Path) -> None:
    _touch(tmp_path, "frame.001_im.jpg", "frame.001_seg.png", "frame.002_im.jpg", "frame.002_seg.png",
           "a_im.jpg", "a_seg.png", "sub/c_im.jpg", "sub/c_seg.png")
    outputs = {name: output for name, (_, _, output) in _outputs(tmp_path).items()}
    assert outputs == {"a": "a_mask.png", "frame.001": "frame.001_mask.png", "frame.002": "frame.002_mask.png",
                       "sub/c": "sub/c_mask.png"}


def test_images_and_masks_folders_win_over_im_names(tmp_path: Path) -> None:
    _touch(tmp_path, "images/x.png", "masks/x.png", "images/shot_im.png", "masks/shot_im.png")
    assert _outputs(tmp_path) == {"shot_im": ("images/shot_im.png", "masks/shot_im.png", "shot_im.png"),
                                  "x": ("images/x.png", "masks/x.png", "x.png")}
    _touch(tmp_path, "loose_im.png", "loose_seg.png")
    found = scan_pairs(tmp_path)
    assert [pair.name for pair in found.pairs] == ["shot_im", "x"] and found.problems == []
    assert len(found.notes) == 1 and "loose_im.png" in found.notes[0]


def test_duplicate_formats_prefer_lossless_files_with_a_note(tmp_path: Path) -> None:
    folders = tmp_path / "folders"
    _touch(folders, "images/u.jpg", "masks/u.jpg", "masks/u.png", "images/v.jpg", "masks/v.bmp", "masks/v.tif")
    found = scan_pairs(folders)
    assert {pair.name: pair.mask.name for pair in found.pairs} == {"u": "u.png", "v": "v.tif"}
    assert len(found.notes) == 2
    assert all(str(folders / "masks" / name) in " ".join(found.notes) for name in ("u.jpg", "u.png", "v.bmp"))

    big = tmp_path / "big"
    _touch(big, "a_im.jpg", "a_im.png", "a_seg.png", "a_gt.jpeg", "a_gt.webp", "b_im.jpg", "b_seg.png")
    found = scan_pairs(big)
    assert [(pair.image.name, pair.mask.name, pair.gt and pair.gt.name) for pair in found.pairs] == [
        ("a_im.png", "a_seg.png", "a_gt.webp"), ("b_im.jpg", "b_seg.png", None)]
    assert found.problems == [] and len(found.notes) == 2
    assert str(big / "a_im.jpg") in found.notes[0] and str(big / "a_im.png") in found.notes[0]
    assert str(big / "a_gt.jpeg") in found.notes[1] and str(big / "a_gt.webp") in found.notes[1]


def test_normal_names_give_no_notes(tmp_path: Path) -> None:
    _touch(tmp_path, "a_im.jpg", "a_seg.png", "a_gt.png", "sub/b_im.png", "sub/b_seg.png")
    found = scan_pairs(tmp_path)
    assert len(found.pairs) == 2 and found.problems == [] and found.notes == []


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    big = tmp_path / "big"
    _touch(big, "a_im.png", "a_seg.png", "._a_im.png", ".ipynb_checkpoints/b-checkpoint_im.png", "sub/c_im.png",
           "sub/c_seg.png", "sub/.cache/d_im.png", "sub/.cache/d_seg.png")
    assert sorted(_outputs(big)) == ["a", "sub/c"]
    folders = tmp_path / "folders"
    _touch(folders, "images/x.jpg", "masks/x.png", "images/._x.jpg", "images/.ipynb_checkpoints/x-checkpoint.jpg")
    assert sorted(_outputs(folders)) == ["x"]


def test_input_pairs_inside_the_output_folder_are_counted(tmp_path: Path) -> None:
    _touch(tmp_path, "a_im.png", "a_seg.png", "b_im.png", "b_seg.png", "out/c_im.png", "out/c_seg.png",
           "out/d_im.png", "out/d_seg.png", "out/a_mask.png")
    found = scan_pairs(tmp_path, exclude=tmp_path / "out")
    assert [pair.name for pair in found.pairs] == ["a", "b"] and found.problems == []
    assert found.notes == [f"2 input pairs left out: inside the output folder {tmp_path / 'out'}"]
    assert scan_pairs(tmp_path, exclude=tmp_path / "elsewhere").notes == []
    # A folder holding only outputs, an image without its mask or a lone mask gives no note.
    (tmp_path / "out" / "c_seg.png").unlink()
    (tmp_path / "out" / "d_im.png").unlink()
    assert scan_pairs(tmp_path, exclude=tmp_path / "out").notes == []


def test_outputs_in_the_images_folder_give_no_note(tmp_path: Path) -> None:
    _touch(tmp_path, "images/x.jpg", "masks/x.png", "images/out/x.png")
    found = scan_pairs(tmp_path, exclude=tmp_path / "images" / "out")
    assert [pair.name for pair in found.pairs] == ["x"] and found.problems == [] and found.notes == []


def test_missing_masks_are_still_problems(tmp_path: Path) -> None:
    _touch(tmp_path, "a_im.png", "a_seg.png", "w_im.png", "_im.png")
    pairs, problems = find_pairs(tmp_path)
    assert [pair.name for pair in pairs] == ["a"]
    assert problems == [f"{tmp_path / 'w_im.png'}: no matching w_seg.* mask"]


def test_masks_without_an_image_are_counted_in_a_note(tmp_path: Path) -> None:
    _touch(tmp_path, "a_im.png", "a_seg.png", "f_seg.png", "g_seg.png", "h_im.psd", "h_seg.png")
    found = scan_pairs(tmp_path)
    assert [pair.name for pair in found.pairs] == ["a"] and found.problems == []
    assert found.notes == [f"3 masks without an image ignored, e.g. {tmp_path / 'f_seg.png'}"]
    folders = tmp_path / "folders"
    _touch(folders, "images/x.jpg", "masks/x.png", "masks/v.png")
    assert scan_pairs(folders).notes == [f"1 mask without an image ignored, e.g. {folders / 'masks' / 'v.png'}"]


def test_nothing_to_pair_is_one_error_in_both_layouts_and_for_scoring(tmp_path: Path) -> None:
    """No image (batch, eval) or no ground truth (score) at all: NoPairsError, which the commands
    report as a usage error; images without masks are problems, not this error."""
    _touch(tmp_path, "big/notes.txt", "folders/masks/x.png", "gt/readme.txt", "plain/x.png")
    (tmp_path / "folders" / "images").mkdir()
    for root in (tmp_path / "big", tmp_path / "folders"):
        with pytest.raises(NoPairsError, match="no pairs found"):
            scan_pairs(root)
    with pytest.raises(NoPairsError, match="no pairs found"):
        scan_predictions(tmp_path / "plain", tmp_path / "gt")
    with pytest.raises(NoPairsError, match="_gt"):  # a folder scored against itself needs <name>_gt files
        scan_predictions(tmp_path / "plain", tmp_path / "plain")
    _touch(tmp_path, "folders/images/y.jpg")
    assert scan_pairs(tmp_path / "folders").problems != []
