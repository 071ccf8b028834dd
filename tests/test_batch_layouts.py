"""``crm batch`` on the folder layouts photo and video editors' tools make: frame sequences with
masks named ``<frame>_mask`` or ``<frame>-matte``, photos and masks side by side, linked folders,
names in two Unicode forms or letter cases, an output folder around the input, a dry run, and what
the user is told (a line before the run, JSON items, a bounded summary). Pairing tests use empty
files; the command tests refine 120x160 scenes with the tiny test weights."""

from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import flat, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.pairing import (
    FilePair,
    NoPairsError,
    scan_folder_pairs,
    scan_pairs,
    split_output_clashes,
)
from crm_cli.pairing_hints import MAX_LISTED
from crm_cli.score_pairs import scan_predictions
from crm_cli.writing import NameFolding, name_folding

runner = CliRunner()
SIZE = (120, 160)


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def paired(root: Path, exclude: Path | None = None) -> dict[str, tuple[str, str, str]]:
    """``{name: (image, mask, output)}``, image and mask relative to ``root``."""
    found = scan_pairs(root, exclude)
    return {pair.name: (pair.image.relative_to(root).as_posix(), pair.mask.relative_to(root).as_posix(),
                        pair.relative_output.as_posix()) for pair in found.pairs}


def scene(image: Path, mask: Path, seed: int = 0) -> None:
    """A 120x160 photo and its coarse mask at these paths (any image extensions)."""
    made_image, made_mask = write_scene_files(image.parent / "_scene", "im", "seg", size=SIZE, seed=seed)
    mask.parent.mkdir(parents=True, exist_ok=True)
    Image.open(made_image).save(image)
    Image.open(made_mask).save(mask)
    made_image.unlink()
    made_mask.unlink()
    made_image.parent.rmdir()


def batch_args(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return ["batch", str(data), "-o", str(out), "-w", str(weights), "-d", "cpu", *extra]


def padded_note(count: int, image: Path, mask: Path) -> str:
    """The note counting the pairs matched only with zero-padding ignored, naming one."""
    return (f"{count} pair{'' if count == 1 else 's'} matched only by ignoring zero-padding in the last number of "
            f"the name, e.g. {image} + {mask}")


def skip_unless_case_sensitive(folder: Path) -> None:
    """Skip the test where ``folder``'s disk cannot hold ``A.png`` and ``a.png`` as two files."""
    (folder / "Case_Probe").touch()
    same = (folder / "case_probe").exists()
    (folder / "Case_Probe").unlink()
    if same:
        pytest.skip("this disk ignores letter case in file names")


# ---------------------------------------------------------------------------------------------
# Pairing


def test_masks_named_after_their_frame_pair_in_the_masks_folder(tmp_path: Path) -> None:
    """Rotoscoping and matting tools name a frame's mask <frame>_mask, <frame>.mask or <frame>-matte;
    the mask with the frame's own name comes first, and two that fit one frame are a failure."""
    touch(tmp_path, "images/frame_000001.png", "masks/frame_000001_mask.png",
          "images/frame_000002.png", "masks/frame_000002.mask.png",
          "images/frame_000003.png", "masks/frame_000003-matte.png",
          "images/frame_000004.png", "masks/frame_000004_Mask.PNG",
          "images/sub/frame_000005.jpg", "masks/sub/frame_000005_matte.tif",
          "images/same.png", "masks/same.png", "masks/same_mask.png",  # the same name wins
          "images/both.png", "masks/both_mask.png", "masks/both-matte.png",  # two fit: a failure
          "images/e.png", "images/e_mask.png", "masks/e_mask.png")  # e_mask.png is the photo e_mask's
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {
        "e_mask": ("images/e_mask.png", "masks/e_mask.png", "e_mask.png"),
        "frame_000001": ("images/frame_000001.png", "masks/frame_000001_mask.png", "frame_000001.png"),
        "frame_000002": ("images/frame_000002.png", "masks/frame_000002.mask.png", "frame_000002.png"),
        "frame_000003": ("images/frame_000003.png", "masks/frame_000003-matte.png", "frame_000003.png"),
        "frame_000004": ("images/frame_000004.png", "masks/frame_000004_Mask.PNG", "frame_000004.png"),
        "same": ("images/same.png", "masks/same.png", "same.png"),
        "sub/frame_000005": ("images/sub/frame_000005.jpg", "masks/sub/frame_000005_matte.tif",
                             "sub/frame_000005.png")}
    assert [(failure.name, failure.image) for failure in found.failures] == [
        ("both", tmp_path / "images/both.png"), ("e", tmp_path / "images/e.png")]
    assert "2 masks fit it" in found.problems[0] and "both_mask.png" in found.problems[0] \
        and "both-matte.png" in found.problems[0]
    assert "e_mask.*" in found.problems[1]
    assert found.notes == [f"1 mask without an image ignored, e.g. {tmp_path / 'masks/same_mask.png'}"]


def test_photos_and_masks_side_by_side(tmp_path: Path) -> None:
    """A folder of frames with each mask beside its frame pairs without images/ and masks/ folders;
    the junk of macOS and Windows (AppleDouble ._ files, .DS_Store, Thumbs.db) is skipped silently."""
    touch(tmp_path, "shot/frame_000001.png", "shot/frame_000001_mask.png", "shot/frame_000002.JPG",
          "shot/frame_000002-matte.PNG", "shot/sub/x y é.jpeg", "shot/sub/x y é.mask.png",
          "shot/._frame_000001.png", "shot/._frame_000001_mask.png", "shot/.DS_Store", "shot/Thumbs.db",
          "shot/desktop.ini", "shot/lonely.png")
    found = scan_pairs(tmp_path / "shot")
    assert paired(tmp_path / "shot") == {
        "frame_000001": ("frame_000001.png", "frame_000001_mask.png", "frame_000001.png"),
        "frame_000002": ("frame_000002.JPG", "frame_000002-matte.PNG", "frame_000002.png"),
        "sub/x y é": ("sub/x y é.jpeg", "sub/x y é.mask.png", "sub/x y é.png")}
    assert found.layout.startswith("side by side") and found.notes == []
    assert found.problems == [f"{tmp_path / 'shot/lonely.png'}: no mask lonely_mask.* "
                              "(or .mask, -mask, _matte, .matte, -matte) beside it"]
    # Photos alone, or masks that fit no photo, are no layout at all: nothing to pair, a usage error.
    touch(tmp_path, "photos/a.jpg", "photos/b.jpg", "odd/a.jpg", "odd/b_mask.png")
    for folder in ("photos", "odd"):
        with pytest.raises(NoPairsError, match="no pairs found"):
            scan_pairs(tmp_path / folder)


def test_side_by_side_reruns_leave_earlier_outputs_and_the_output_folder_alone(tmp_path: Path) -> None:
    """Outputs (<name>.png) of an earlier run into a folder inside the input look like photos: a
    folder holding no mask is no part of the layout, so they are a note, never failures; input
    pairs inside the output folder are counted."""
    shot = tmp_path / "shot"
    touch(shot, "a.png", "a_mask.png", "refined/a.png", "sub/b.jpg", "sub/b-matte.png")
    found = scan_pairs(shot, exclude=shot / "refined")
    assert [pair.name for pair in found.pairs] == ["a", "sub/b"] and found.problems == [] and found.notes == []
    found = scan_pairs(shot, exclude=shot / "refined2")
    assert [pair.name for pair in found.pairs] == ["a", "sub/b"] and found.problems == []
    assert found.notes == ["1 photo in folders without any <name>_mask.* mask not paired, "
                           f"e.g. {shot / 'refined/a.png'}"]
    found = scan_pairs(shot, exclude=shot / "sub")
    assert [pair.name for pair in found.pairs] == ["a"] and found.problems == []
    assert f"1 input pair left out: inside the output folder {shot / 'sub'}" in found.notes


def test_a_frames_folder_beside_masks_is_named_in_the_error(tmp_path: Path) -> None:
    """frames/ + masks/ is not the images/ + masks/ layout: the error says which folder to name
    images/, and a link named images/ then pairs them (linked folders are followed)."""
    touch(tmp_path, "frames/frame_000001.png", "masks/frame_000001.png", "frames/frame_000002.png",
          "masks/frame_000002_mask.png")
    with pytest.raises(NoPairsError) as error:
        scan_pairs(tmp_path)
    assert "no images/ folder (beside it: frames/)" in str(error.value)
    assert f"ln -s frames {tmp_path / 'images'}" in str(error.value)
    assert f"or name the two: crm batch {tmp_path / 'frames'} --masks {tmp_path / 'masks'}" in str(error.value)
    (tmp_path / "images").symlink_to("frames")
    assert sorted(paired(tmp_path)) == ["frame_000001", "frame_000002"]


def test_linked_sub_folders_are_followed_and_loops_end(tmp_path: Path) -> None:
    touch(tmp_path, "footage/shot1/f1.png", "footage/shot1/f2.png", "mattes/shot1/f1.png", "mattes/shot1/f2.png",
          "data/images/own.jpg", "data/masks/own.png")
    data = tmp_path / "data"
    (data / "images" / "shot1").symlink_to(tmp_path / "footage" / "shot1")
    (data / "masks" / "shot1").symlink_to(tmp_path / "mattes" / "shot1")
    (data / "images" / "loop").symlink_to("..")  # a link to a folder above: followed once, not for ever
    (data / "images" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    found = scan_pairs(data)
    assert [pair.name for pair in found.pairs] == ["own", "shot1/f1", "shot1/f2"]
    assert paired(data)["shot1/f1"] == ("images/shot1/f1.png", "masks/shot1/f1.png", "shot1/f1.png")
    assert found.problems == []  # data/ is not walked again through the link: masks/own.png is no photo
    assert found.notes == [f"1 linked folder skipped, e.g. {data / 'images/loop'} -> {data}: each leads to a "
                           "folder searched already or to one holding the folder searched (each folder is "
                           "searched once)",
                           f"1 link to a missing file skipped, e.g. {data / 'images/gone.jpg'}"]


def test_links_to_a_folder_around_the_input_are_never_followed(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A link from the input to a folder holding it (``images/ds -> /data`` for the input
    /data/proj, or one to /) would search it all again, taking masks for photos, or the whole disk:
    it is skipped with a note. The folders listed are counted, so the old walk fails, never hangs."""
    proj = tmp_path / "proj"
    touch(proj, "images/a.jpg", "masks/a.png")
    (proj / "images" / "ds").symlink_to(tmp_path)
    (proj / "masks" / "root").symlink_to("/")
    import crm_cli.pair_inputs

    listed_folders = 0
    scandir = os.scandir

    def counted(path: object) -> object:
        nonlocal listed_folders
        listed_folders += 1
        assert listed_folders < 100, "the walk went on past the input"
        return scandir(path)

    monkeypatch.setattr(crm_cli.pair_inputs.os, "scandir", counted)
    found = scan_pairs(proj)
    monkeypatch.undo()
    assert [pair.name for pair in found.pairs] == ["a"] and found.problems == []
    assert len(found.notes) == 1 and found.notes[0].startswith(
        f"2 linked folders skipped, e.g. {proj / 'images/ds'} -> {tmp_path}: ")


def test_a_folder_linked_twice_is_paired_once_by_its_own_path(tmp_path: Path) -> None:
    """``latest -> 2023`` beside 2023/ (in images/ and in masks/) is one folder under two names:
    each frame is paired once, under the folder's own name, even where the link sorts first."""
    touch(tmp_path, "images/2023/a.jpg", "masks/2023/a.png", "images/z/b.jpg", "masks/z/b.png")
    for side in ("images", "masks"):
        (tmp_path / side / "latest").symlink_to("2023")
        (tmp_path / side / "a_link").symlink_to("z")  # sorts before z/
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {"2023/a": ("images/2023/a.jpg", "masks/2023/a.png", "2023/a.png"),
                                "z/b": ("images/z/b.jpg", "masks/z/b.png", "z/b.png")}
    assert found.problems == []
    assert found.notes == [f"4 linked folders skipped, e.g. {tmp_path / 'images/a_link'} -> {tmp_path / 'images/z'}"
                           ": each leads to a folder searched already or to one holding the folder searched (each "
                           "folder is searched once)"]
    # Two links to one folder outside the input: the first in name order is searched.
    touch(tmp_path, "shared/c.png")
    (tmp_path / "images/p").symlink_to(tmp_path / "shared")
    (tmp_path / "images/q").symlink_to(tmp_path / "shared")
    (tmp_path / "masks/p").symlink_to(tmp_path / "shared")
    assert "p/c" in paired(tmp_path) and "q/c" not in paired(tmp_path)


def test_links_from_images_into_the_masks_folder_lead_to_no_photos(tmp_path: Path) -> None:
    """``images/b.png -> ../masks/b.png`` or ``images/m -> ../masks``: a mask reached from images/
    is no photo (it was refined as its own photo, or failed for want of a mask of its own); one
    note counts the paths skipped, as for links around the input, and what they reach is masks."""
    touch(tmp_path, "images/a.jpg", "masks/a.png", "masks/b.png", "masks/sub/c.png")
    (tmp_path / "images/b.png").symlink_to("../masks/b.png")
    (tmp_path / "images/m").symlink_to("../masks")
    (tmp_path / "images/s").symlink_to(tmp_path / "masks/sub")
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {"a": ("images/a.jpg", "masks/a.png", "a.png")} and found.problems == []
    masks = Path(os.path.realpath(tmp_path / "masks"))
    assert found.notes == [f"3 paths leading into the masks folder skipped, e.g. {tmp_path / 'images/b.png'} -> "
                           f"{masks / 'b.png'}: what lies in {tmp_path / 'masks'} is a mask, not a photo",
                           f"2 masks without an image ignored, e.g. {tmp_path / 'masks/b.png'}"]
    # masks/ a link to a folder inside images/: that folder holds no photos, and is left out without a
    # note, as the masks folder itself; a link of images/' own to it is noted.
    nested = tmp_path / "nested"
    touch(nested, "images/x.jpg", "images/mattes/x.png")
    (nested / "masks").symlink_to("images/mattes")
    found = scan_pairs(nested)
    assert paired(nested) == {"x": ("images/x.jpg", "masks/x.png", "x.png")} and found.problems == []
    assert found.notes == []
    (nested / "images/alias").symlink_to("mattes")
    found = scan_pairs(nested)
    assert paired(nested) == {"x": ("images/x.jpg", "masks/x.png", "x.png")} and found.problems == []
    assert len(found.notes) == 1 and found.notes[0].startswith(
        f"1 path leading into the masks folder skipped, e.g. {nested / 'images/alias'} -> ")
    # images/ a link to a folder inside masks/: all of it is photos still.
    inner = tmp_path / "inner"
    touch(inner, "masks/photos/y.jpg", "masks/y.png")
    (inner / "images").symlink_to("masks/photos")
    assert paired(inner) == {"y": ("images/y.jpg", "masks/y.png", "y.png")}
    # Nothing but links to masks in images/: no photo at all, and the error says why.
    only = tmp_path / "only"
    touch(only, "masks/a.png")
    (only / "images").mkdir()
    (only / "images/a.png").symlink_to("../masks/a.png")
    with pytest.raises(NoPairsError, match="holds no image files; 1 path leading into the masks folder skipped"):
        scan_pairs(only)


def test_links_from_masks_into_the_images_folder_lead_to_no_masks(tmp_path: Path) -> None:
    """``masks/b.jpg -> ../images/b.jpg`` or ``masks/sub -> ../images/sub``: a photo reached from
    masks/ is no mask (its photo would be refined with itself as its mask): the photo fails for want
    of a mask, and one note counts the paths skipped."""
    touch(tmp_path, "images/a.jpg", "masks/a.png", "images/b.jpg", "images/sub/c.jpg")
    (tmp_path / "masks/b.jpg").symlink_to("../images/b.jpg")
    (tmp_path / "masks/sub").symlink_to("../images/sub")
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {"a": ("images/a.jpg", "masks/a.png", "a.png")}
    assert [failure.name for failure in found.failures] == ["b", "sub/c"]
    images = Path(os.path.realpath(tmp_path / "images"))
    assert found.notes == [f"2 paths leading into the photos folder skipped, e.g. {tmp_path / 'masks/b.jpg'} -> "
                           f"{images / 'b.jpg'}: what lies in {tmp_path / 'images'} is a photo, not a mask"]


def test_dry_run_warns_of_linked_folders_skipped(tiny_weights: Path, tmp_path: Path) -> None:
    """`crm batch` refines a frame reached through two names once, and says so."""
    data, out = tmp_path / "data", tmp_path / "out"
    scene(data / "images/2023/a.png", data / "masks/2023/a.png")
    for side in ("images", "masks"):
        (data / side / "latest").symlink_to("2023")
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--dry-run", "--json"))
    assert result.exit_code == 0, result.output
    assert [item["name"] for item in json.loads(result.stdout)["items"]] == ["2023/a"]
    assert f"warning: 2 linked folders skipped, e.g. {data / 'images/latest'} -> {data / 'images/2023'}" \
        in flat(result.stderr)


def test_crm_score_counts_a_linked_folder_once_and_never_a_link_into_the_predictions(tmp_path: Path) -> None:
    """``gt/current -> v2`` and ``pred/current -> v2``: each ground truth is scored once; a link from
    the ground truths to the predictions' folder is no folder of ground truths."""
    touch(tmp_path, "gt/v2/a.png", "gt/v2/b.png", "pred/v2/a.png", "pred/v2/b.png")
    (tmp_path / "gt/current").symlink_to("v2")
    (tmp_path / "pred/current").symlink_to("v2")
    found = scan_predictions(tmp_path / "pred", tmp_path / "gt")
    assert [pair.name for pair in found.pairs] == ["v2/a", "v2/b"]
    assert found.notes == [f"2 linked folders skipped, e.g. {tmp_path / 'gt/current'} -> {tmp_path / 'gt/v2'}: "
                           "each leads to a folder searched already or to one holding the folder searched (each "
                           "folder is searched once)"]
    touch(tmp_path, "gt2/a.png", "pred2/a.png")
    (tmp_path / "gt2/preds").symlink_to("../pred2")
    (tmp_path / "pred2/truth").symlink_to("../gt2")
    found = scan_predictions(tmp_path / "pred2", tmp_path / "gt2")
    assert [(pair.name, pair.pred, pair.gt) for pair in found.pairs] == [
        ("a", tmp_path / "pred2/a.png", tmp_path / "gt2/a.png")]
    assert found.notes == []


def test_side_by_side_a_photo_with_its_own_mask_is_a_photo_whatever_its_name(tmp_path: Path) -> None:
    """``ski-mask.jpg`` ends like a mask name, but its own mask lies beside it: a photo. A mask-like
    name is a mask only where the photo it names lies beside it; otherwise a photo without a mask."""
    touch(tmp_path, "ski-mask.jpg", "ski-mask_mask.png", "cat.jpg", "cat_mask.png", "face_matte.jpg",
          "sub/x.jpg", "sub/X_MASK.png", "sub/party-Mask.jpg", "sub/party-Mask_mask.png")
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {"cat": ("cat.jpg", "cat_mask.png", "cat.png"),
                                "ski-mask": ("ski-mask.jpg", "ski-mask_mask.png", "ski-mask.png"),
                                "sub/party-Mask": ("sub/party-Mask.jpg", "sub/party-Mask_mask.png",
                                                   "sub/party-Mask.png"),
                                "sub/x": ("sub/x.jpg", "sub/X_MASK.png", "sub/x.png")}
    assert found.problems == [f"{tmp_path / 'face_matte.jpg'}: no mask face_matte_mask.* "
                              "(or .mask, -mask, _matte, .matte, -matte) beside it"]
    assert found.notes == []


def test_side_by_side_ground_truths_and_coarse_masks_are_left_out(tmp_path: Path) -> None:
    """``a_gt.png`` and ``a_seg.png`` beside ``a.jpg`` + ``a_mask.png`` are no photos without masks:
    left out, with one note, and the run has no failure."""
    touch(tmp_path, "a.jpg", "a_mask.png", "a_gt.png", "a_seg.png", "sub/b.jpg", "sub/b-matte.png", "sub/b_gt.tif")
    found = scan_pairs(tmp_path)
    assert [pair.name for pair in found.pairs] == ["a", "sub/b"] and found.problems == []
    assert found.notes == [f"3 files named *_gt/*_seg left out: {tmp_path / 'a_gt.png'}, {tmp_path / 'a_seg.png'}, "
                           f"{tmp_path / 'sub/b_gt.tif'} (taken for ground truths or coarse masks, not photos)"]


def test_a_mask_that_fits_several_photos_by_letter_case_goes_to_none(tmp_path: Path) -> None:
    """``Cat.jpg`` and ``cat.jpg`` both fit ``CAT.png`` only with case ignored: not a guess for the
    first in sort order, a failure for each naming the photos and the mask."""
    touch(tmp_path, "images/Cat.jpg", "images/cat.jpg", "masks/CAT.png", "images/dog.jpg", "masks/DOG_mask.png")
    found = scan_pairs(tmp_path)
    assert [pair.name for pair in found.pairs] == ["dog"]
    assert [(failure.name, failure.image) for failure in found.failures] == [
        ("Cat", tmp_path / "images/Cat.jpg"), ("cat", tmp_path / "images/cat.jpg")]
    photos = f"{tmp_path / 'images/Cat.jpg'}, {tmp_path / 'images/cat.jpg'}"
    assert found.problems == [f"{tmp_path / 'images' / name}: the mask {tmp_path / 'masks/CAT.png'} fits 2 photos, "
                              f"{photos}: name it as one of them exactly (letter case too), and the others' masks "
                              "as theirs" for name in ("Cat.jpg", "cat.jpg")]
    assert found.notes == []  # CAT.png fits photos: no mask without an image
    # One photo of the exact case takes its mask, in an earlier round.
    touch(tmp_path, "masks/cat.png")
    assert paired(tmp_path)["cat"] == ("images/cat.jpg", "masks/cat.png", "cat.png")
    assert "Cat" in paired(tmp_path)



def test_frames_numbered_with_other_zero_padding_pair_in_the_masks_folder(tmp_path: Path) -> None:
    """ffmpeg numbers the photos frame_1 ... frame_120 (%d) and a matting tool the masks frame_0001
    ... (%04d): they pair once the name's last number is read without its zeros, in sub-folders too
    (of the same names), and the output keeps the photo's name; one note counts these pairs. Runs
    longer than any integer type compare too; non-ASCII digits are no digits."""
    for index in (1, 9, 10, 100, 120):
        touch(tmp_path, f"images/frame_{index}.png", f"masks/frame_{index:04d}.png")
    long_number = "1234567890123456789012345"
    touch(tmp_path, "images/shot2_frame_010.jpg", "masks/shot2_frame_10.png",
          "images/shot2/frame_7.jpg", "masks/shot2/frame_000007.tif",
          "images/sub/frame_0.png", "masks/sub/frame_0000.png",
          f"images/clip_000000{long_number}.png", f"masks/clip_{long_number}.png",
          "images/arabic_\u0661.png", "masks/arabic_01.png")
    expected = {f"frame_{index}": (f"images/frame_{index}.png", f"masks/frame_{index:04d}.png", f"frame_{index}.png")
                for index in (1, 9, 10, 100, 120)}
    expected.update({
        "shot2_frame_010": ("images/shot2_frame_010.jpg", "masks/shot2_frame_10.png", "shot2_frame_010.png"),
        "shot2/frame_7": ("images/shot2/frame_7.jpg", "masks/shot2/frame_000007.tif", "shot2/frame_7.png"),
        "sub/frame_0": ("images/sub/frame_0.png", "masks/sub/frame_0000.png", "sub/frame_0.png"),
        f"clip_000000{long_number}": (f"images/clip_000000{long_number}.png", f"masks/clip_{long_number}.png",
                                      f"clip_000000{long_number}.png")})
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == expected
    assert [failure.name for failure in found.failures] == ["arabic_\u0661"]
    assert found.notes == [
        f"9 pairs matched only by ignoring zero-padding in the last number of the name, e.g. "
        f"{tmp_path / f'images/clip_000000{long_number}.png'} + {tmp_path / f'masks/clip_{long_number}.png'}",
        f"1 mask without an image ignored, e.g. {tmp_path / 'masks/arabic_01.png'}"]
    # crm batch FOLDER --masks DIR: the same pairs.
    by_folders = scan_folder_pairs(tmp_path / "images", tmp_path / "masks")
    assert {pair.name: pair.mask for pair in by_folders.pairs} == {
        name: tmp_path / mask for name, (_, mask, _) in expected.items()}


def test_mask_suffixes_and_zero_padding_pair_together(tmp_path: Path) -> None:
    """frame_1.png + frame_000001_mask.png (or -Matte, .mask, in any letter case), in images/ +
    masks/ and in two folders of any names."""
    touch(tmp_path, "images/frame_1.png", "masks/frame_000001_mask.png", "images/Frame_2.png",
          "masks/frame_0002-Matte.png", "images/sub/frame_3.jpg", "masks/sub/frame_003.mask.tif")
    expected = {"frame_1": ("images/frame_1.png", "masks/frame_000001_mask.png", "frame_1.png"),
                "Frame_2": ("images/Frame_2.png", "masks/frame_0002-Matte.png", "Frame_2.png"),
                "sub/frame_3": ("images/sub/frame_3.jpg", "masks/sub/frame_003.mask.tif", "sub/frame_3.png")}
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == expected and found.problems == []
    assert found.notes == [padded_note(3, tmp_path / "images/Frame_2.png", tmp_path / "masks/frame_0002-Matte.png")]
    (tmp_path / "images").rename(tmp_path / "shots")
    (tmp_path / "masks").rename(tmp_path / "mattes")
    found = scan_folder_pairs(tmp_path / "shots", tmp_path / "mattes")
    assert found.problems == []
    assert found.notes == [padded_note(3, tmp_path / "shots/Frame_2.png", tmp_path / "mattes/frame_0002-Matte.png")]
    assert {pair.name: pair.mask.relative_to(tmp_path).as_posix() for pair in found.pairs} == {
        name: mask.replace("masks/", "mattes/") for name, (_, mask, _) in expected.items()}


def test_side_by_side_frames_pair_with_zero_padded_masks(tmp_path: Path) -> None:
    """frame_0001_mask.png beside frame_1.png is its mask, not a photo without one."""
    touch(tmp_path, "shot/frame_1.png", "shot/frame_0001_mask.png", "shot/frame_2.jpg",
          "shot/frame_000002-matte.png", "shot/sub/take_07.jpg", "shot/sub/take_7_Mask.png")
    found = scan_pairs(tmp_path / "shot")
    assert found.layout == "side by side: <name> + <name>_mask"
    assert paired(tmp_path / "shot") == {
        "frame_1": ("frame_1.png", "frame_0001_mask.png", "frame_1.png"),
        "frame_2": ("frame_2.jpg", "frame_000002-matte.png", "frame_2.png"),
        "sub/take_07": ("sub/take_07.jpg", "sub/take_7_Mask.png", "sub/take_07.png")}
    shot = tmp_path / "shot"
    assert found.problems == []
    assert found.notes == [padded_note(3, shot / "frame_1.png", shot / "frame_0001_mask.png")]


def test_big_layout_names_pair_across_zero_padding(tmp_path: Path) -> None:
    """frame_1_im + frame_0001_seg (+ frame_001_gt): one pair, with its ground truth, output named
    after the photo."""
    touch(tmp_path, "frame_1_im.jpg", "frame_0001_seg.png", "frame_001_gt.png", "frame_2_im.jpg", "frame_2_seg.png")
    found = scan_pairs(tmp_path)
    assert found.layout == "BIG layout: <name>_im + <name>_seg" and found.problems == []
    assert found.notes == [padded_note(1, tmp_path / "frame_1_im.jpg", tmp_path / "frame_0001_seg.png")]
    assert [(pair.name, pair.image.name, pair.mask.name, pair.gt.name if pair.gt else None,
             pair.relative_output.as_posix()) for pair in found.pairs] == [
        ("frame_1", "frame_1_im.jpg", "frame_0001_seg.png", "frame_001_gt.png", "frame_1_mask.png"),
        ("frame_2", "frame_2_im.jpg", "frame_2_seg.png", None, "frame_2_mask.png")]


def test_zero_padding_that_fits_two_ways_is_a_failure_naming_the_files(tmp_path: Path) -> None:
    """Two masks that fit one photo only with zero-padding ignored (frame_1.png and frame_01.png for
    frame_0001.jpg), or one mask that fits two photos so (take_001.png for take_1 and take_01): each
    such photo fails, naming the candidates; the other photos pair."""
    touch(tmp_path, "images/frame_0001.jpg", "masks/frame_1.png", "masks/frame_01.png",
          "images/take_1.jpg", "images/take_01.jpg", "masks/take_001.png", "images/ok_7.jpg", "masks/ok_007.png")
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {"ok_7": ("images/ok_7.jpg", "masks/ok_007.png", "ok_7.png")}
    images, masks = tmp_path / "images", tmp_path / "masks"
    assert [(failure.name, failure.image) for failure in found.failures] == [
        ("frame_0001", images / "frame_0001.jpg"), ("take_01", images / "take_01.jpg"),
        ("take_1", images / "take_1.jpg")]
    photos = f"{images / 'take_01.jpg'}, {images / 'take_1.jpg'}"
    assert found.problems == [
        f"{images / 'frame_0001.jpg'}: 2 masks fit it, {masks / 'frame_01.png'}, {masks / 'frame_1.png'}: rename or "
        "remove all but one",
        *(f"{images / name}: the mask {masks / 'take_001.png'} fits 2 photos, {photos}: name it as one of them "
          "exactly (letter case too), and the others' masks as theirs" for name in ("take_01.jpg", "take_1.jpg"))]
    # Every mask fits a photo: the one note counts the pair matched by padding.
    assert found.notes == [padded_note(1, images / "ok_7.jpg", masks / "ok_007.png")]
    # Side by side: the same two ways.
    touch(tmp_path, "shot/a_1.png", "shot/a_01_mask.png", "shot/a_001-matte.png",
          "shot/b_1.png", "shot/b_01.png", "shot/b_001_mask.png", "shot/c_2.png", "shot/c_02_mask.png")
    shot = tmp_path / "shot"
    found = scan_pairs(shot)
    assert [pair.name for pair in found.pairs] == ["c_2"]
    assert [failure.name for failure in found.failures] == ["a_1", "b_01", "b_1"]
    assert f"2 masks fit it, {shot / 'a_01_mask.png'}, {shot / 'a_001-matte.png'}" in found.problems[0]
    assert f"the mask {shot / 'b_001_mask.png'} fits 2 photos, {shot / 'b_01.png'}, {shot / 'b_1.png'}" \
        in found.problems[1]


def test_a_mask_of_the_photos_own_name_beats_a_zero_padded_one(tmp_path: Path) -> None:
    """Zero-padding is the last round: the same name, the same name + _mask, and the same name in
    another letter case each win over a name with other padding, which is then a mask without an
    image; a name that fits only so pairs beside them."""
    touch(tmp_path, "images/frame_1.png", "masks/frame_1.png", "masks/frame_0001.png",
          "images/frame_2.png", "masks/frame_2_mask.png", "masks/frame_0002.png",
          "images/Frame_3.png", "masks/frame_3.png", "masks/Frame_0003.png",
          "images/frame_4.png", "masks/frame_0004.png")
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {"frame_1": ("images/frame_1.png", "masks/frame_1.png", "frame_1.png"),
                                "frame_2": ("images/frame_2.png", "masks/frame_2_mask.png", "frame_2.png"),
                                "Frame_3": ("images/Frame_3.png", "masks/frame_3.png", "Frame_3.png"),
                                "frame_4": ("images/frame_4.png", "masks/frame_0004.png", "frame_4.png")}
    assert found.problems == []
    assert found.notes == [padded_note(1, tmp_path / "images/frame_4.png", tmp_path / "masks/frame_0004.png"),
                           f"3 masks without an image ignored, e.g. {tmp_path / 'masks/Frame_0003.png'}"]
    # Side by side: frame_1_mask.png is frame_1's mask, frame_0001_mask.png a mask without a photo.
    touch(tmp_path, "shot/frame_1.png", "shot/frame_1_mask.png", "shot/frame_0001_mask.png")
    found = scan_pairs(tmp_path / "shot")
    assert [(pair.name, pair.mask.name) for pair in found.pairs] == [("frame_1", "frame_1_mask.png")]
    assert found.problems == []
    assert found.notes == [f"1 mask without an image ignored, e.g. {tmp_path / 'shot/frame_0001_mask.png'}"]


def test_a_name_that_fits_only_with_padding_takes_no_mask_another_photo_fits_exactly(tmp_path: Path) -> None:
    """Photos frame_1 and frame_01, one mask frame_01.png: it is frame_01's; frame_1 fails for want
    of its own mask, never paired with its neighbour's (nor is a padded name contested by it)."""
    touch(tmp_path, "images/frame_1.png", "images/frame_01.png", "masks/frame_01.png",
          "images/f_2.png", "images/f_02.png", "masks/f_02_mask.png", "images/g_3.png", "masks/g_003.png")
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {"f_02": ("images/f_02.png", "masks/f_02_mask.png", "f_02.png"),
                                "frame_01": ("images/frame_01.png", "masks/frame_01.png", "frame_01.png"),
                                "g_3": ("images/g_3.png", "masks/g_003.png", "g_3.png")}
    assert [failure.name for failure in found.failures] == ["f_2", "frame_1"]
    assert found.problems[1] == (f"{tmp_path / 'images/frame_1.png'}: no mask frame_1.* or frame_1_mask.* (or "
                                 f".mask, -mask, _matte, .matte, -matte) under {tmp_path / 'masks'}")
    # Side by side: the same.
    touch(tmp_path, "shot/x_1.png", "shot/x_01.png", "shot/x_01_mask.png", "shot/y_5.png", "shot/y_05_mask.png")
    found = scan_pairs(tmp_path / "shot")
    assert [(pair.name, pair.mask.name) for pair in found.pairs] == [("x_01", "x_01_mask.png"),
                                                                     ("y_5", "y_05_mask.png")]
    assert [failure.name for failure in found.failures] == ["x_1"]


def test_zero_padding_is_ignored_only_in_the_last_number_of_the_file_name(tmp_path: Path) -> None:
    """Only the file name's last number may differ in its zeros, and only where it is no decimal
    fraction (crop_0.05, v1.02) nor part of a word (0001a): other numbers and folder names must be
    the same (letter case and Unicode form aside), so crop_0.05 never takes crop_0.5's mask."""
    touch(tmp_path, "images/crop_0.05.jpg", "masks/crop_0.5.png", "images/a00b1.jpg", "masks/a0b01.png",
          "images/scan_v1.2.jpg", "masks/scan_v1.02.png", "images/shot1/a.jpg", "masks/shot01/a.png",
          "images/take_1a.jpg", "masks/take_0001a.png",
          "images/frame_7.jpg", "masks/frame_0007.png", "images/clip_7.jpg", "masks/clip_000007_mask.png",
          "images/2023-01-05_shot3.jpg", "images/2023-1-5_shot3.jpg", "masks/2023-01-05_shot03.png",
          "images/Day_2/Shot_5.jpg", "masks/day_2/shot_005-matte.png")
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {
        "2023-01-05_shot3": ("images/2023-01-05_shot3.jpg", "masks/2023-01-05_shot03.png", "2023-01-05_shot3.png"),
        "Day_2/Shot_5": ("images/Day_2/Shot_5.jpg", "masks/day_2/shot_005-matte.png", "Day_2/Shot_5.png"),
        "clip_7": ("images/clip_7.jpg", "masks/clip_000007_mask.png", "clip_7.png"),
        "frame_7": ("images/frame_7.jpg", "masks/frame_0007.png", "frame_7.png")}
    assert [failure.name for failure in found.failures] == [
        "2023-1-5_shot3", "a00b1", "crop_0.05", "scan_v1.2", "shot1/a", "take_1a"]
    assert found.failures[2].error.startswith(f"{tmp_path / 'images/crop_0.05.jpg'}: no mask crop_0.05.* or ")
    assert found.notes == [
        padded_note(4, tmp_path / "images/2023-01-05_shot3.jpg", tmp_path / "masks/2023-01-05_shot03.png"),
        f"5 masks without an image ignored, e.g. {tmp_path / 'masks/a0b01.png'}"]
    # crm batch FOLDER --masks DIR and the side-by-side layout: the same rule.
    by_folders = scan_folder_pairs(tmp_path / "images", tmp_path / "masks")
    assert sorted(pair.name for pair in by_folders.pairs) == sorted(paired(tmp_path))
    touch(tmp_path, "shot/crop_0.05.jpg", "shot/crop_0.5_mask.png", "shot/frame_7.jpg", "shot/frame_0007_mask.png",
          "shot/v1.2.jpg", "shot/v1.02_mask.png")
    found = scan_pairs(tmp_path / "shot")
    assert [(pair.name, pair.mask.name) for pair in found.pairs] == [("frame_7", "frame_0007_mask.png")]
    assert [failure.name for failure in found.failures] == ["crop_0.05", "v1.2"]
    # Their photos missing, crop_0.5_mask.png and v1.02_mask.png are masks (as frame_0007_mask.png is) left out.
    assert found.notes == [padded_note(1, tmp_path / "shot/frame_7.jpg", tmp_path / "shot/frame_0007_mask.png"),
                           f"2 masks without an image ignored, e.g. {tmp_path / 'shot/crop_0.5_mask.png'}"]


def test_photos_of_one_name_with_padding_ignored_take_no_mask_by_it(tmp_path: Path) -> None:
    """Photos a_1 and a_01, masks a_01.png and a_001.png: a_01 takes its own mask, and a_1 fails
    naming a_01 rather than take a_001.png, which fits both as well once zeros are ignored; the
    same side by side and in the BIG layout."""
    touch(tmp_path, "images/a_1.jpg", "images/a_01.jpg", "masks/a_01.png", "masks/a_001.png")
    images, masks = tmp_path / "images", tmp_path / "masks"
    found = scan_pairs(tmp_path)
    assert paired(tmp_path) == {"a_01": ("images/a_01.jpg", "masks/a_01.png", "a_01.png")}
    assert found.problems == [
        f"{images / 'a_1.jpg'}: the mask {masks / 'a_001.png'} fits 2 photos, {images / 'a_01.jpg'}, "
        f"{images / 'a_1.jpg'}: name it as one of them exactly (letter case too), and the others' masks as theirs"]
    assert found.notes == []
    touch(tmp_path, "shot/a_1.png", "shot/a_01.png", "shot/a_01_mask.png", "shot/a_001_mask.png",
          "big/a_1_im.png", "big/a_01_im.png", "big/a_01_seg.png", "big/a_001_seg.png")
    for folder in (tmp_path / "shot", tmp_path / "big"):
        found = scan_pairs(folder)
        assert [pair.name for pair in found.pairs] == ["a_01"]
        assert [failure.name for failure in found.failures] == ["a_1"] and "fits 2 photos" in found.problems[0]
        assert found.notes == []


def test_crm_score_pairs_no_names_across_zero_padding(tmp_path: Path) -> None:
    """crm score pairs a ground truth with the prediction at its own relative path (crm eval -o
    writes them so): frame_0001.png is no prediction of frame_1.png."""
    touch(tmp_path, "gt/frame_1.png", "pred/frame_0001.png")
    found = scan_predictions(tmp_path / "pred", tmp_path / "gt")
    assert found.pairs == []
    assert [(failure.name, failure.image.name) for failure in found.failures] == [("frame_1", "frame_1.png")]

def test_eval_says_what_it_reads_for_the_layout_found(tmp_path: Path) -> None:
    """A side-by-side folder has no <name>_im files to speak of: eval says it reads the BIG layout."""
    touch(tmp_path, "shot/a.jpg", "shot/a_mask.png")
    result = runner.invoke(app, ["eval", str(tmp_path / "shot")])
    assert result.exit_code == 2, result.output
    stderr = flat(result.stderr)
    assert "crm eval reads the BIG layout: <name>_im.* (the photo), <name>_seg.* (its coarse mask) and " \
           "<name>_gt.* (its ground truth) in one folder, not photos with their masks beside them" in stderr
    assert "beside the <name>_im.*" not in stderr


def test_names_pair_across_unicode_forms_and_letter_case(tmp_path: Path) -> None:
    """macOS writes é decomposed (NFD), most tools composed (NFC): the two look the same and pair;
    so do IMG_0001.JPG and img_0001.png, where no mask has the photo's own letter case."""
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    touch(tmp_path, f"images/{nfd}.jpg", f"masks/{nfc}.png", "images/IMG_0001.JPG", "masks/img_0001.png",
          "images/日本.png", "masks/日本_mask.png")
    found = scan_pairs(tmp_path)
    assert found.problems == [] and found.notes == []
    assert {pair.name: pair.mask.name for pair in found.pairs} == {nfd: f"{nfc}.png", "IMG_0001": "img_0001.png",
                                                                   "日本": "日本_mask.png"}
    # crm score pairs the two forms too.
    touch(tmp_path, f"pred/{nfc}.png", f"gt/{nfd}.png")
    assert [pair.pred.name for pair in scan_predictions(tmp_path / "pred", tmp_path / "gt").pairs] == [f"{nfc}.png"]


def test_outputs_one_file_where_letter_case_and_unicode_form_are_ignored_fail(tmp_path: Path) -> None:
    """``A.png`` and ``a.png``, ``Shot/x.png`` and ``shot/x.png``, ``café.png`` in NFC and in NFD:
    one file each on macOS and Windows disks, so every pair of such a group fails, naming the other
    photos and the outputs; the other pairs are kept. ``c.jpg`` and ``c.png`` in one folder are no
    clash: one photo is used, with a note."""
    nfd, nfc = unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFC", "café")
    out = tmp_path / "out"

    def made(name: str, image: str) -> FilePair:
        return FilePair(name, tmp_path / image, tmp_path / "mask.png", Path(name + ".png"))

    pairs = [made("A", "A.jpg"), made("a", "a.png"), made("b", "b.jpg"), made("Shot/x", "Shot/x.jpg"),
             made("shot/x", "shot/x.jpg"), made(nfd, f"{nfd}.jpg"), made(nfc, f"{nfc}.jpg")]
    kept, failures = split_output_clashes(pairs, out, NameFolding(case=True, unicode_form=True))
    assert [pair.name for pair in kept] == ["b"]
    assert [(failure.name, failure.image.name) for failure in failures] == [
        ("A", "A.jpg"), ("a", "a.png"), ("Shot/x", "x.jpg"), ("shot/x", "x.jpg"), (nfd, f"{nfd}.jpg"),
        (nfc, f"{nfc}.jpg")]
    assert failures[0].error == (f"{tmp_path / 'A.jpg'}: its output {out / 'A.png'} and {out / 'a.png'} (of "
                                 f"{tmp_path / 'a.png'}) are one file on the output disk, which ignores letter "
                                 "case and Unicode form, so one would overwrite the other: rename the photos so "
                                 "their names differ in more than that")
    assert f"{out / 'Shot/x.png'} (of {tmp_path / 'Shot/x.jpg'})" in failures[3].error
    touch(tmp_path, "data/images/c.jpg", "data/images/c.png", "data/masks/c.png")
    found = scan_pairs(tmp_path / "data")
    assert split_output_clashes(found.pairs, out) == (found.pairs, []) and len(found.notes) == 1
    # A disk that ignores letter case only (Windows): the two Unicode forms are two files there.
    kept, failures = split_output_clashes(pairs, out, NameFolding(case=True, unicode_form=False))
    assert sorted(pair.name for pair in kept) == sorted(["b", nfd, nfc])
    assert "which ignores letter case, so" in failures[0].error
    # A disk that tells every spelling apart (Linux): each photo keeps its own output, as it has its own file.
    assert split_output_clashes(pairs, out, NameFolding(case=False, unicode_form=False)) == (pairs, [])


def test_outputs_on_a_disk_that_could_not_be_probed_are_refused_saying_so(tmp_path: Path) -> None:
    """Where no probe file can be made, names are compared as macOS does, and the message says that
    this is an assumption rather than what the disk does."""
    out = tmp_path / "out"
    pairs = [FilePair(name, tmp_path / f"{name}.jpg", tmp_path / "mask.png", Path(f"{name}.png")) for name in "Aa"]
    kept, failures = split_output_clashes(pairs, out, NameFolding(True, True, probed=False))
    assert kept == [] and len(failures) == 2
    assert failures[0].error == (
        f"{tmp_path / 'A.jpg'}: its output {out / 'A.png'} and {out / 'a.png'} (of {tmp_path / 'a.jpg'}) may be one "
        "file on the output disk (it could not be probed, so names are compared as macOS and Windows disks compare "
        "them: letter case and Unicode form ignored), so one would overwrite the other: rename the photos so their "
        "names differ in more than that")
    assert "which ignores" not in failures[0].error


def test_outputs_that_differ_in_sharp_s_are_two_files_on_case_folding_disks(tmp_path: Path) -> None:
    """APFS and NTFS fold letter case letter by letter: Straße.png and STRASSE.png are two files
    there (Python's casefold would make them one), while Straße.png and STRAßE.png are one."""
    folding = NameFolding(case=True, unicode_form=True)
    assert folding.key("Straße.png") != folding.key("STRASSE.png")
    assert folding.key("ﬁle.png") != folding.key("file.png")
    assert folding.key("Straße.png") == folding.key("STRAßE.png")
    out = tmp_path / "out"
    pairs = [FilePair(name, tmp_path / f"{name}.jpg", tmp_path / "mask.png", Path(f"{name}.png"))
             for name in ("Straße", "STRASSE", "STRAßE")]
    kept, failures = split_output_clashes(pairs, out, folding)
    assert [pair.name for pair in kept] == ["STRASSE"]
    assert [failure.name for failure in failures] == ["Straße", "STRAßE"]


def test_name_folding_is_probed_on_the_output_disk_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """The probe answers what the disk does (a second spelling of the probe exists or not), looks in
    the nearest existing parent of an output folder not made yet, and removes its probe file. A
    folder it cannot write in is taken to fold both, so clashes there are refused."""
    (tmp_path / "Case_Probe").touch()
    case = (tmp_path / "case_probe").exists()
    composed = unicodedata.normalize("NFC", "caf\u00e9")
    (tmp_path / composed).touch()
    unicode_form = (tmp_path / unicodedata.normalize("NFD", composed)).exists()
    before = sorted(tmp_path.iterdir())
    assert name_folding(tmp_path) == NameFolding(case, unicode_form)
    assert name_folding(tmp_path / "not" / "made" / "yet") == NameFolding(case, unicode_form)
    assert sorted(tmp_path.iterdir()) == before and not (tmp_path / "not").exists()
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            assert name_folding(locked) == NameFolding(True, True, probed=False)
        finally:
            locked.chmod(0o700)
    elif Path("/proc/self").is_dir():  # root may write anywhere but in /proc
        assert name_folding(Path("/proc/self")) == NameFolding(True, True, probed=False)
    else:
        pytest.skip("no folder here refuses a new file")


def test_an_output_folder_around_the_input_leaves_the_input_whole(tmp_path: Path) -> None:
    """`crm batch work/shots -o work`: every input lies in the output folder, none of them an output."""
    touch(tmp_path, "work/shots/images/a.jpg", "work/shots/masks/a.png")
    assert sorted(paired(tmp_path / "work/shots", exclude=tmp_path / "work")) == ["a"]


def test_a_folder_of_formats_crm_does_not_read_says_which(tmp_path: Path) -> None:
    touch(tmp_path, "images/f1.exr", "images/f2.exr", "masks/f1.png", "masks/f2.png", "images/Thumbs.db")
    with pytest.raises(NoPairsError, match=r"holds no image files \(it holds 2 \.exr files"):
        scan_pairs(tmp_path)


def test_many_duplicate_formats_give_a_bounded_number_of_notes(tmp_path: Path) -> None:
    """A JPEG and a PNG export of each of 30 frames: 20 notes name files, one counts the rest."""
    for index in range(30):
        touch(tmp_path, f"images/f{index:02d}.jpg", f"images/f{index:02d}.png", f"masks/f{index:02d}.png")
    found = scan_pairs(tmp_path)
    assert len(found.pairs) == 30 and len(found.notes) == MAX_LISTED + 1
    assert found.notes[-1] == "10 more files ignored: another format of the same name is used"


def test_crm_score_follows_linked_folders(tmp_path: Path) -> None:
    touch(tmp_path, "runs/r1/a.png", "gt/r1/a.png", "gt/b.png", "pred/b.png")
    (tmp_path / "pred" / "r1").symlink_to(tmp_path / "runs" / "r1")
    pairs = scan_predictions(tmp_path / "pred", tmp_path / "gt").pairs
    assert sorted(pair.name for pair in pairs) == ["b", "r1/a"]


@pytest.mark.parametrize("photo", ["frame_{:06d}", "frame_{}"], ids=["same-padding", "other-padding"])
def test_pairing_20000_frames_compares_each_name_a_bounded_number_of_times(tmp_path: Path, photo: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard against quadratic pairing without a timed assertion: 20,000 frames with _mask masks
    (40,000 files) pair with each name put in comparable form a few times (an index per round),
    not once per other name (about a second on the 2-core development machine); frames numbered
    without zero-padding (frame_7 + frame_000007_mask) pair in the last round, as few times."""
    import crm_cli.naming

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(20000):
        (images / f"{photo.format(index)}.png").touch()
        (masks / f"frame_{index:06d}_mask.png").touch()
    calls = 0
    normalize = crm_cli.naming.unicodedata.normalize

    def counted(form: str, text: str) -> str:
        nonlocal calls
        calls += 1
        return normalize(form, text)

    monkeypatch.setattr(crm_cli.naming.unicodedata, "normalize", counted)
    found = scan_pairs(tmp_path, exclude=tmp_path / "out")
    assert len(found.pairs) == 20000 and found.problems == []
    assert calls <= 8 * 20000, calls


# ---------------------------------------------------------------------------------------------
# The command


def test_dry_run_lists_the_pairs_and_writes_nothing(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "shot", tmp_path / "out"
    for index in (1, 2):
        scene(data / f"frame_{index:06d}.png", data / f"frame_{index:06d}_mask.png", seed=index)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--dry-run", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True and summary["todo"] == 2 and summary["done"] == 0
    assert [(item["name"], item["status"], Path(item["mask"]).name, Path(item["output"]).name)
            for item in summary["items"]] == [("frame_000001", "todo", "frame_000001_mask.png", "frame_000001.png"),
                                              ("frame_000002", "todo", "frame_000002_mask.png", "frame_000002.png")]
    assert not out.exists()
    stderr = flat(result.stderr)
    assert f"batch: 2 pairs found in {data} (side by side: <name> + <name>_mask); would refine 2" in stderr
    assert "frame_000001_mask.png ->" in stderr
    # A frame without its mask: named, and the dry run exits 1 as the run would.
    scene(data / "frame_000003.png", tmp_path / "elsewhere.png", seed=3)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--dry-run"))
    assert result.exit_code == 1 and "frame_000003.png: no mask frame_000003_mask.*" in flat(result.stderr)
    assert not out.exists()


def test_frames_without_masks_are_json_items_and_the_summary_is_bounded(tiny_weights: Path,
                                                                        tmp_path: Path) -> None:
    """25 frames whose masks are missing and one with its mask: each failure is named once as
    found; the closing summary lists 20 of them; --json gives each its name and image."""
    data, out = tmp_path / "data", tmp_path / "out"
    scene(data / "images/frame_000000.png", data / "masks/frame_000000.png")
    for index in range(1, 26):
        (data / "images" / f"frame_{index:06d}.png").write_bytes((data / "images/frame_000000.png").read_bytes())
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["done"] == 1 and summary["failed"] == 25
    missing = [item for item in summary["items"] if item["status"] == "failed"]
    assert missing[0]["name"] == "frame_000001" and missing[0]["image"] == str(data / "images/frame_000001.png")
    assert missing[0]["mask"] is None and missing[0]["output"] is None
    assert (out / "frame_000000.png").is_file()
    lines = result.stderr.splitlines()
    assert sum(line.startswith("failed:") for line in lines) == 25
    assert sum(line.startswith("  failed") for line in lines) == MAX_LISTED
    assert "  ... and 5 more failed (each named above)" in lines
    assert (f"batch: 1 pair found in {data} (images/ + masks/ folders), 25 images not paired; refining 1"
            in flat(result.stderr))


def test_photos_whose_outputs_differ_only_in_letter_case_fail_and_the_others_run(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``A_im.jpg`` and ``a_im.jpg``, each with its mask, would both be written to ``a_mask.png``
    on a disk that ignores letter case (macOS, Windows; imitated here, the photos need a disk that
    does not): each fails before the model loads, named with the other and the shared output, in
    --dry-run as in the run, and the exit code is 1; the other pair is refined."""
    skip_unless_case_sensitive(tmp_path)
    monkeypatch.setattr("crm_cli.pairing.name_folding", lambda folder: NameFolding(case=True, unicode_form=True))
    data, out = tmp_path / "big", tmp_path / "out"
    for seed, stem in enumerate(("A", "a", "b")):
        write_scene_files(data, f"{stem}_im", f"{stem}_seg", size=SIZE, seed=seed)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--dry-run", "--json"))
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert {item["name"]: item["status"] for item in summary["items"]} == {"A": "failed", "a": "failed",
                                                                          "b": "todo"}
    assert (summary["failed"], summary["todo"]) == (2, 1)
    (item,) = [item for item in summary["items"] if item["name"] == "A"]
    assert item["image"] == str(data / "A_im.jpg") and item["output"] is None
    assert item["error"].startswith(f"{data / 'A_im.jpg'}: its output {out / 'A_mask.png'} and "
                                    f"{out / 'a_mask.png'} (of {data / 'a_im.jpg'}) are one file")
    stderr = flat(result.stderr)
    assert (f"batch: 3 pairs found in {data} (BIG layout: <name>_im + <name>_seg), 2 sharing an output file; "
            "would refine 1") in stderr
    assert f"failed: {data / 'a_im.jpg'}: its output {out / 'a_mask.png'} and {out / 'A_mask.png'}" in stderr
    assert not out.exists()
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["failed"]) == (1, 2)
    assert sorted(path.name for path in out.iterdir()) == ["b_mask.png"]


def test_photos_whose_outputs_differ_only_in_letter_case_each_get_theirs_where_the_disk_tells_them_apart(
        tiny_weights: Path, tmp_path: Path) -> None:
    """On a disk that holds ``A_im.jpg`` and ``a_im.jpg`` as two files (Linux), their outputs are two
    files too: all three pairs are refined, exit 0."""
    skip_unless_case_sensitive(tmp_path)
    data, out = tmp_path / "big", tmp_path / "out"
    for seed, stem in enumerate(("A", "a", "b")):
        write_scene_files(data, f"{stem}_im", f"{stem}_seg", size=SIZE, seed=seed)
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "--json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == 3
    assert sorted(path.name for path in out.iterdir()) == ["A_mask.png", "a_mask.png", "b_mask.png"]


def test_each_pair_warning_names_its_pair_also_with_q(tiny_weights: Path, tmp_path: Path) -> None:
    """A warning about one pair among thousands says which, even with -q, where no other line does."""
    data, out = tmp_path / "data", tmp_path / "out"
    scene(data / "images/shot.png", data / "masks/shot.png")
    labels = np.zeros(SIZE, np.uint8)
    labels[20:60, 20:70], labels[60:110, 90:150] = 1, 2
    palette = Image.fromarray(labels, "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(data / "masks/shot.png")
    result = runner.invoke(app, batch_args(data, out, tiny_weights, "-q", "-k", "cutout"))
    assert result.exit_code == 0, result.output
    assert "warning: shot: label maps are written as label images" in flat(result.stderr)


def test_batch_masks_pairs_a_photos_folder_with_a_masks_folder_and_resumes(tiny_weights: Path,
                                                                           tmp_path: Path) -> None:
    """``crm batch shots --masks mattes``: the folders keep their names; the line before the run
    names both and the layout, --dry-run lists the pairs, and a second run skips what is done."""
    shots, mattes, out = tmp_path / "shots", tmp_path / "mattes", tmp_path / "out"
    scene(shots / "f1.png", mattes / "f1_matte.png", seed=1)
    scene(shots / "sub/f2.jpg", mattes / "sub/f2.png", seed=2)
    result = runner.invoke(app, batch_args(shots, out, tiny_weights, "--masks", str(mattes), "--dry-run", "--json"))
    assert result.exit_code == 0, result.output
    assert [(item["name"], item["image"], item["mask"], item["output"], item["status"])
            for item in json.loads(result.stdout)["items"]] == [
        ("f1", str(shots / "f1.png"), str(mattes / "f1_matte.png"), str(out / "f1.png"), "todo"),
        ("sub/f2", str(shots / "sub/f2.jpg"), str(mattes / "sub/f2.png"), str(out / "sub/f2.png"), "todo")]
    assert (f"batch: 2 pairs found in {shots} + {mattes} (a photos folder + a --masks folder); would refine 2 -> "
            f"{out}") in flat(result.stderr)
    assert not out.exists()
    result = runner.invoke(app, batch_args(shots, out, tiny_weights, "--masks", str(mattes), "--json"))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == 2
    assert (out / "f1.png").is_file() and (out / "sub/f2.png").is_file()
    result = runner.invoke(app, batch_args(shots, out, tiny_weights, "--masks", str(mattes), "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["done"], summary["skipped"]) == (0, 2)


def test_batch_masks_inside_the_photos_folder_and_the_output_there_are_no_photos(tiny_weights: Path,
                                                                                 tmp_path: Path) -> None:
    """``crm batch shots --masks shots/mattes -o shots/refined``: the masks and the outputs lie
    inside the photos' folder, and neither is taken for a photo, in this run or the next."""
    shots = tmp_path / "shots"
    scene(shots / "a.png", shots / "mattes/a.png")
    args = batch_args(shots, shots / "refined", tiny_weights, "--masks", str(shots / "mattes"), "--json")
    for done, skipped in ((1, 0), (0, 1)):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert [item["name"] for item in summary["items"]] == ["a"]
        assert (summary["done"], summary["skipped"], summary["failed"]) == (done, skipped, 0)
        assert "warning" not in result.stderr


def test_batch_masks_usage_errors_come_before_the_model(tmp_path: Path) -> None:
    """A masks folder that is missing, a file, the photos' folder itself (the error names the
    side-by-side layout) or the output folder: exit 2, before the weights (junk here) are read."""
    shots = tmp_path / "shots"
    touch(shots, "a.jpg", "a_mask.png")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights")
    touch(tmp_path, "notes.txt", "mattes/a.png")
    cases = {tmp_path / "nowhere": "Invalid value for '--masks'", tmp_path / "notes.txt": "Invalid value for '--masks'",
             shots: "is this folder itself", tmp_path / "mattes": "the output folder must differ"}
    for masks, message in cases.items():
        out = tmp_path / "mattes" if message.startswith("the output") else tmp_path / "out"
        result = runner.invoke(app, batch_args(shots, out, junk, "--masks", str(masks)))
        assert result.exit_code == 2, result.output
        assert message in flat(result.stderr), result.stderr
    result = runner.invoke(app, batch_args(shots, tmp_path / "out", junk, "--masks", str(shots), "--json"))
    assert result.exit_code == 2 and "side-by-side layout" in json.loads(result.stdout)["error"]


def test_batch_masks_on_ray_sends_the_masks_folders_masks(tiny_weights: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--ray gets the jobs of the two folders (absolute paths), as the plain run does."""
    from contextlib import contextmanager

    from crm_cli import raybatch

    shots, mattes, out = tmp_path / "shots", tmp_path / "mattes", tmp_path / "out"
    scene(shots / "a.png", mattes / "a-matte.png")
    sent: list[dict] = []

    @contextmanager
    def fake_ray_run(address, jobs, work, spec, *, quiet=False, log=None):  # noqa: ANN001, ANN202
        sent.extend(jobs)
        yield iter((index, {"status": "ok", "seconds": 0.0}) for index in range(len(jobs)))

    monkeypatch.setattr(raybatch, "require_ray", lambda: None)
    monkeypatch.setattr(raybatch, "ray_run", fake_ray_run)
    result = runner.invoke(app, batch_args(shots, out, tiny_weights, "--masks", str(mattes), "--ray", "local",
                                           "--json"))
    assert result.exit_code == 0, result.output
    assert [(job["image"], job["mask"], job["output"]) for job in sent] == [
        (str((shots / "a.png").absolute()), str((mattes / "a-matte.png").absolute()), str((out / "a.png").absolute()))]


def test_pairing_layout_names_every_layout(tmp_path: Path) -> None:
    touch(tmp_path, "big/a_im.jpg", "big/a_seg.png", "folders/images/a.jpg", "folders/masks/a.png")
    assert scan_pairs(tmp_path / "big").layout == "BIG layout: <name>_im + <name>_seg"
    assert scan_pairs(tmp_path / "folders").layout == "images/ + masks/ folders"


@pytest.mark.skipif(os.name != "posix", reason="file names with any bytes")
def test_names_with_spaces_dots_and_upper_case_extensions_pair(tmp_path: Path) -> None:
    touch(tmp_path, "images/My Shot 01.JPG", "masks/My Shot 01.PNG", "images/a.b.c.Tif", "masks/a.b.c.tif",
          "images/x.jpeg", "masks/x.png", "images/._x.jpeg", "masks/._x.png")
    assert paired(tmp_path) == {"My Shot 01": ("images/My Shot 01.JPG", "masks/My Shot 01.PNG", "My Shot 01.png"),
                                "a.b.c": ("images/a.b.c.Tif", "masks/a.b.c.tif", "a.b.c.png"),
                                "x": ("images/x.jpeg", "masks/x.png", "x.png")}
