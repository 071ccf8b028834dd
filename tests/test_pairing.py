"""Folder pairing for ``crm batch`` / ``crm eval``: layouts, output names, duplicates, hidden files,
the output folder. Pairing only looks at names, so the files are empty."""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from crm_cli.pairing import (
    LAYOUT_MASKS_DIR,
    FilePair,
    NoPairsError,
    scan_folder_pairs,
    scan_pairs,
)
from crm_cli.score_pairs import scan_predictions


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def _outputs(root: Path, exclude: Path | None = None) -> dict[str, tuple[str, str, str]]:
    """``{name: (image, mask, output)}`` with paths relative to ``root``; fails on any problem."""
    found = scan_pairs(root, exclude)
    assert found.problems == []
    return {pair.name: (pair.image.relative_to(root).as_posix(), pair.mask.relative_to(root).as_posix(),
                        pair.relative_output.as_posix()) for pair in found.pairs}


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
    found = scan_pairs(tmp_path)
    assert [pair.name for pair in found.pairs] == ["a"]
    assert found.problems == [f"{tmp_path / 'w_im.png'}: no matching w_seg.* mask"]


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


def _relative(pairs: list[FilePair], images_dir: Path, masks_dir: Path) -> list[tuple[str, str, str, str]]:
    """(name, image, mask, output) of each pair, image and mask relative to their folders."""
    return [(pair.name, pair.image.relative_to(images_dir).as_posix(), pair.mask.relative_to(masks_dir).as_posix(),
             pair.relative_output.as_posix()) for pair in pairs]


def test_two_folders_of_any_names_pair_as_images_and_masks_do(tmp_path: Path) -> None:
    """``shots/`` + ``mattes/`` (``crm batch shots --masks mattes``) pair by the rules of images/ +
    masks/: the same name first, then a mask suffix, sub-folders mirrored, Unicode forms and letter
    case, two fitting masks a failure; messages name the real folders."""
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    photos = ["f1.png", "f2.png", "sub/f3.jpg", "IMG_4.JPG", f"{nfd}.jpg", "both.png", "lonely.png"]
    masks = ["f1_mask.png", "f2.png", "f2_mask.png", "sub/f3-matte.tif", "img_4.png", f"{nfc}.png",
             "both_mask.png", "both.matte.png", "orphan.png"]
    shots, mattes = tmp_path / "shots", tmp_path / "mattes"
    _touch(shots, *photos)
    _touch(mattes, *masks)
    _touch(tmp_path / "data", *(f"images/{name}" for name in photos), *(f"masks/{name}" for name in masks))

    found = scan_folder_pairs(shots, mattes)

    assert found.layout == LAYOUT_MASKS_DIR == "a photos folder + a --masks folder"
    assert _relative(found.pairs, shots, mattes) == [
        ("IMG_4", "IMG_4.JPG", "img_4.png", "IMG_4.png"), (nfd, f"{nfd}.jpg", f"{nfc}.png", f"{nfd}.png"),
        ("f1", "f1.png", "f1_mask.png", "f1.png"), ("f2", "f2.png", "f2.png", "f2.png"),
        ("sub/f3", "sub/f3.jpg", "sub/f3-matte.tif", "sub/f3.png")]
    folders = scan_pairs(tmp_path / "data")  # the images/ + masks/ layout of the same files: the same pairing
    data = tmp_path / "data"
    assert _relative(found.pairs, shots, mattes) == _relative(folders.pairs, data / "images", data / "masks")
    assert [failure.name for failure in found.failures] == [failure.name for failure in folders.failures] == [
        "both", "lonely"]
    assert "2 masks fit it" in found.problems[0] and str(mattes / "both_mask.png") in found.problems[0]
    assert found.problems[1] == (f"{shots / 'lonely.png'}: no mask lonely.* or lonely_mask.* (or .mask, -mask, "
                                 f"_matte, .matte, -matte) under {mattes}")
    assert found.notes == [f"2 masks without an image ignored, e.g. {mattes / 'f2_mask.png'}"]


def test_a_masks_folder_inside_the_photos_folder_is_no_photos_and_the_reverse(tmp_path: Path) -> None:
    """``crm batch shots --masks shots/mattes``: the masks are no photos (without masks of their
    own); ``crm batch mattes/photos --masks mattes``: the photos are no masks (without photos). The
    folder the user named is left out silently; a link into the other folder is noted."""
    shots = tmp_path / "shots"
    _touch(shots, "a.jpg", "sub/b.jpg", "mattes/a.png", "mattes/sub/b_mask.png", "mattes/c.png")
    found = scan_folder_pairs(shots, shots / "mattes")
    assert _relative(found.pairs, shots, shots / "mattes") == [("a", "a.jpg", "a.png", "a.png"),
                                                               ("sub/b", "sub/b.jpg", "sub/b_mask.png", "sub/b.png")]
    assert found.failures == []
    assert found.notes == [f"1 mask without an image ignored, e.g. {shots / 'mattes/c.png'}"]

    mattes = tmp_path / "mattes"
    _touch(mattes, "a.png", "photos/a.jpg", "photos/d.jpg")
    found = scan_folder_pairs(mattes / "photos", mattes)
    assert _relative(found.pairs, mattes / "photos", mattes) == [("a", "a.jpg", "a.png", "a.png")]
    assert [failure.name for failure in found.failures] == ["d"] and found.notes == []

    # A link in the masks folder to a photo: no mask of that photo (nor of itself).
    (mattes / "d.jpg").symlink_to("photos/d.jpg")
    found = scan_folder_pairs(mattes / "photos", mattes)
    assert [failure.name for failure in found.failures] == ["d"]
    real = Path(os.path.realpath(mattes / "photos/d.jpg"))
    assert found.notes == [f"1 path leading into the photos folder skipped, e.g. {mattes / 'd.jpg'} -> {real}: "
                           f"what lies in {mattes / 'photos'} is a photo, not a mask"]


def test_a_masks_folder_given_by_a_link_to_it_inside_the_photos_folder_is_left_out_silently(tmp_path: Path) -> None:
    """``crm batch shots --masks m`` with ``m -> shots/mattes``: the masks folder met in the photos'
    one is the folder the user named, as when named ``shots/mattes``: no note. A link of the
    photos folder's own into it is still noted."""
    shots = tmp_path / "shots"
    _touch(shots, "a.jpg", "mattes/a.png")
    (tmp_path / "m").symlink_to("shots/mattes")
    found = scan_folder_pairs(shots, tmp_path / "m")
    assert _relative(found.pairs, shots, tmp_path / "m") == [("a", "a.jpg", "a.png", "a.png")]
    assert found.failures == [] and found.notes == []
    (shots / "alias").symlink_to("mattes")
    found = scan_folder_pairs(shots, tmp_path / "m")
    real = Path(os.path.realpath(shots / "mattes"))
    assert found.notes == [f"1 path leading into the masks folder skipped, e.g. {shots / 'alias'} -> {real}: "
                           f"what lies in {tmp_path / 'm'} is a mask, not a photo"]


def test_two_folders_that_are_one_are_no_layout(tmp_path: Path) -> None:
    """``--masks`` naming the photos' folder itself, by its path or a link: photos with their masks
    beside them are the side-by-side layout, which the error names."""
    _touch(tmp_path, "shots/a.jpg", "shots/a_mask.png")
    (tmp_path / "alias").symlink_to("shots")
    for masks in (tmp_path / "shots", tmp_path / "alias"):
        with pytest.raises(NoPairsError, match=r"is this folder itself: .*<name>_mask.*side-by-side layout"):
            scan_folder_pairs(tmp_path / "shots", masks)


def test_two_folders_leave_out_the_output_folder(tmp_path: Path) -> None:
    """Earlier outputs in ``shots/refined`` (``-o shots/refined``) are no photos; an output folder
    around the photos' folder (``-o .``) holds it whole."""
    shots, mattes = tmp_path / "shots", tmp_path / "mattes"
    _touch(shots, "a.jpg", "refined/a.png", "refined/x.png")
    _touch(mattes, "a.png")
    found = scan_folder_pairs(shots, mattes, exclude=shots / "refined")
    assert [pair.name for pair in found.pairs] == ["a"] and found.failures == [] and found.notes == []
    assert [pair.name for pair in scan_folder_pairs(shots, mattes, exclude=tmp_path).pairs] == ["a"]
    assert [failure.name for failure in scan_folder_pairs(shots, mattes).failures] == ["refined/a", "refined/x"]


def test_each_name_is_put_in_nfc_once_across_the_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Frame_1`` pairs with ``frame_0001_mask`` only with letter case and zero-padding ignored, in
    the last of the rounds: each name is still put in NFC once, its other forms built on that."""
    _touch(tmp_path, "shots/Frame_1.jpg", "shots/b.jpg", "mattes/frame_0001_mask.png", "mattes/B.png")
    texts: Counter[str] = Counter()
    normalize = unicodedata.normalize

    def counting(form: str, text: str) -> str:
        texts[text] += 1
        return normalize(form, text)

    monkeypatch.setattr(unicodedata, "normalize", counting)
    found = scan_folder_pairs(tmp_path / "shots", tmp_path / "mattes")
    assert {pair.name: pair.mask.name for pair in found.pairs} == {"Frame_1": "frame_0001_mask.png", "b": "B.png"}
    assert texts == Counter({"Frame_1": 1, "b": 1, "frame_0001_mask": 1, "B": 1})


def test_each_of_two_folders_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``crm batch shots --masks mattes -o out``: each folder is resolved once and passed down, not
    again by each step that needs it (no link below them: nothing else is resolved)."""
    _touch(tmp_path, "shots/a.jpg", "shots/sub/b.jpg", "mattes/a.png", "mattes/sub/b_mask.png")
    resolved: list[str] = []
    realpath = os.path.realpath

    def counting(path: str | os.PathLike[str], *args: bool, **kwargs: bool) -> str:
        resolved.append(os.fspath(path))
        return realpath(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", counting)
    found = scan_folder_pairs(tmp_path / "shots", tmp_path / "mattes", exclude=tmp_path / "out")
    assert [pair.name for pair in found.pairs] == ["a", "sub/b"] and found.failures == [] and found.notes == []
    assert sorted(resolved) == [str(tmp_path / name) for name in ("mattes", "out", "shots")]
