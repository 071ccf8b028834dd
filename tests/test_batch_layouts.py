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
from crm_cli.pairing import MAX_LISTED, NoPairsError, scan_pairs, scan_predictions

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
    assert len(found.problems) == 2 and found.unpaired == [("both", tmp_path / "images/both.png"),
                                                           ("e", tmp_path / "images/e.png")]
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
    assert found.notes == [f"1 link to a missing file skipped, e.g. {data / 'images/gone.jpg'}"]


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


def test_pairing_20000_frames_compares_each_name_a_bounded_number_of_times(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard against quadratic pairing without a timed assertion: 20,000 frames with _mask masks
    (40,000 files) pair with each name put in comparable form a few times (an index per round),
    not once per other name (about a second on the 2-core development machine)."""
    import crm_cli.pairing

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(20000):
        (images / f"frame_{index:06d}.png").touch()
        (masks / f"frame_{index:06d}_mask.png").touch()
    calls = 0
    normalize = crm_cli.pairing.unicodedata.normalize

    def counted(form: str, text: str) -> str:
        nonlocal calls
        calls += 1
        return normalize(form, text)

    monkeypatch.setattr(crm_cli.pairing.unicodedata, "normalize", counted)
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
