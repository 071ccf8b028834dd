"""Video frames in crm batch (session 38 audit, a video editor's point of view): frames numbered as
ffmpeg's ``%d`` writes them pair and list in frame order; a mask sequence numbered from 0 beside
photos numbered from 1 gets a warning; photos and masks of one name in two formats in one folder get
a hint in the no-pairs error; masks named with a mask word before the frame number get a hint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.pairing import NoPairsError, scan_folder_pairs, scan_pairs
from crm_cli.score_pairs import scan_predictions

runner = CliRunner()
TIMELINE = [f"frame_{number}" for number in range(1, 13)]


def touch(root: Path, *names: str) -> None:
    """Empty files ``names`` below ``root`` (pairing reads names, not pixels)."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def write_png(path: Path, grey: bool) -> None:
    """A tiny real image: a one-channel mask, or an RGB photo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (8, 8) if grey else (8, 8, 3)
    pixels = np.zeros(shape, np.uint8)
    pixels[2:6, 2:6] = 255
    Image.fromarray(pixels).save(path)


# --- 1. frames in frame order ------------------------------------------------------------------------


def test_frames_numbered_without_padding_pair_in_frame_order(tmp_path: Path) -> None:
    """Was: frame_1, frame_10, frame_11, frame_12, frame_2, ... (sorted as text)."""
    touch(tmp_path, *(f"frames/{name}.png" for name in TIMELINE), *(f"mattes/{name}.png" for name in TIMELINE))
    found = scan_folder_pairs(tmp_path / "frames", tmp_path / "mattes")
    assert [pair.name for pair in found.pairs] == TIMELINE
    # images/ + masks/, masks padded otherwise, and side by side: the same order.
    touch(tmp_path / "layout", *(f"images/{name}.png" for name in TIMELINE),
          *(f"masks/frame_{number:05d}.png" for number in range(1, 13)))
    assert [pair.name for pair in scan_pairs(tmp_path / "layout").pairs] == TIMELINE
    touch(tmp_path / "beside", *(f"{name}.jpg" for name in TIMELINE), *(f"{name}_mask.png" for name in TIMELINE))
    assert [pair.name for pair in scan_pairs(tmp_path / "beside").pairs] == TIMELINE


def test_photos_without_a_mask_and_folders_come_in_frame_order_too(tmp_path: Path) -> None:
    touch(tmp_path, *(f"images/shot{shot}/{name}.png" for shot in (2, 10) for name in TIMELINE),
          *(f"masks/shot{shot}/{name}.png" for shot in (2, 10) for name in TIMELINE if name != "frame_3"))
    found = scan_pairs(tmp_path)
    assert [pair.name for pair in found.pairs] == [f"shot{shot}/{name}" for shot in (2, 10) for name in TIMELINE
                                                   if name != "frame_3"]
    assert [failure.name for failure in found.failures] == ["shot2/frame_3", "shot10/frame_3"]


def test_zero_padded_names_keep_their_order_and_leading_zeros_break_ties_by_the_text(tmp_path: Path) -> None:
    from crm_cli.naming import natural_key

    padded = [f"frame_{number:04d}.png" for number in (1, 2, 9, 10, 11, 100)] + ["frame_0100_b.png", "take.png"]
    assert sorted(padded, key=natural_key) == sorted(padded)
    mixed = ["frame_1.png", "frame_01.png", "frame_001.png", "frame_2.png", "frame_10.png"]
    assert sorted(mixed, key=natural_key) == ["frame_001.png", "frame_01.png", "frame_1.png", "frame_2.png",
                                              "frame_10.png"]
    assert sorted(reversed(mixed), key=natural_key) == sorted(mixed, key=natural_key)
    assert sorted([Path("s10/a.png"), Path("s2/b.png"), Path("s2/a.png")], key=natural_key) == [
        Path("s2/a.png"), Path("s2/b.png"), Path("s10/a.png")]


def test_crm_score_pairs_frames_in_frame_order(tmp_path: Path) -> None:
    touch(tmp_path, *(f"pred/{name}.png" for name in TIMELINE), *(f"gt/{name}.png" for name in TIMELINE))
    assert [pair.name for pair in scan_predictions(tmp_path / "pred", tmp_path / "gt").pairs] == TIMELINE


def test_batch_dry_run_lists_frames_in_frame_order(tmp_path: Path) -> None:
    """--dry-run's lines and its --json items, in frame order (no model is loaded by --dry-run)."""
    for name in TIMELINE:
        write_png(tmp_path / "frames" / f"{name}.png", grey=False)
        write_png(tmp_path / "mattes" / f"{name}.png", grey=True)
    args = ["batch", str(tmp_path / "frames"), "--masks", str(tmp_path / "mattes"), "-o", str(tmp_path / "out"),
            "--dry-run", "-d", "cpu"]
    result = runner.invoke(app, [*args, "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert [item["name"] for item in json.loads(result.stdout)["items"]] == TIMELINE
    listed = runner.invoke(app, args)
    assert listed.exit_code == 0, listed.output
    lines = [line.strip().split(":")[0] for line in listed.output.splitlines() if line.startswith("  frame_")]
    assert lines == TIMELINE


# --- 2. mask numbers offset from the photos' ---------------------------------------------------------


def offset_notes(notes: list[str]) -> list[str]:
    return [note for note in notes if "numbered from" in note]


def test_masks_numbered_from_0_beside_photos_numbered_from_1_get_a_warning(tmp_path: Path) -> None:
    touch(tmp_path, *(f"frames/frame_{number:05d}.png" for number in range(1, 6)),
          *(f"mattes/frame_{number:05d}.png" for number in range(0, 5)))
    found = scan_folder_pairs(tmp_path / "frames", tmp_path / "mattes")
    assert len(found.pairs) == 4 and [failure.name for failure in found.failures] == ["frame_00005"]
    assert offset_notes(found.notes) == [
        f"the masks are numbered from 0 and the photos from 1 (e.g. {tmp_path / 'mattes/frame_00000.png'} and "
        f"{tmp_path / 'frames/frame_00001.png'}): if mask N belongs to photo N+1, rename the masks; pairs are made "
        "by name, so 4 photos were paired with the mask of their own number"]


def test_an_offset_the_other_way_with_mask_suffixes_and_no_pair_at_all(tmp_path: Path) -> None:
    touch(tmp_path, *(f"images/f{number}.jpg" for number in range(1, 4)),
          *(f"masks/f{number}_mask.png" for number in range(101, 104)))
    found = scan_pairs(tmp_path)
    assert not found.pairs
    assert offset_notes(found.notes) == [
        f"the masks are numbered from 101 and the photos from 1 (e.g. {tmp_path / 'masks/f101_mask.png'} and "
        f"{tmp_path / 'images/f1.jpg'}): if mask N belongs to photo N-100, rename the masks; pairs are made by name"]


@pytest.mark.parametrize(("photos", "masks"), [
    (range(1, 6), (1, 2, 4, 5)),  # a missing mask
    (range(1, 6), (1, 2, 4, 5, 7)),  # a missing mask and a stray one
    (range(1, 6), range(0, 6)),  # an extra mask numbered 0, every photo paired
    ((1,), (2,)),  # one frame each: too little to call it a sequence
])
def test_ordinary_missing_or_stray_masks_get_no_offset_warning(tmp_path: Path, photos: range,
                                                               masks: tuple[int, ...]) -> None:
    touch(tmp_path, *(f"images/frame_{number:04d}.png" for number in photos),
          *(f"masks/frame_{number:04d}.png" for number in masks))
    assert offset_notes(scan_pairs(tmp_path).notes) == []


# --- 3. photos and masks of one name in two formats, in one folder -----------------------------------


def test_jpeg_photos_beside_png_masks_of_the_same_names_get_a_hint(tmp_path: Path) -> None:
    for number in range(1, 4):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / f"frame_{number:05d}.jpg")
        write_png(tmp_path / f"frame_{number:05d}.png", grey=True)
    with pytest.raises(NoPairsError) as raised:
        scan_pairs(tmp_path)
    assert str(raised.value).endswith(
        f"; 3 names have both a .jpg and a .png file (e.g. {tmp_path / 'frame_00001.jpg'} + "
        f"{tmp_path / 'frame_00001.png'}, frame_00001.png reads as a mask and frame_00001.jpg as a photo), and the "
        "files of one name are one photo in any format: if the .png files are the masks, put them in a folder of "
        f"their own (for crm batch and train: masks/ beside a folder images/ of the photos, or crm batch {tmp_path} "
        "--masks FOLDER; crm eval reads the BIG layout, NAME_im + NAME_seg + NAME_gt)")


def test_the_two_formats_hint_holds_for_crm_eval_too(tmp_path: Path) -> None:
    """Was: "... name the two: crm batch ROOT --masks FOLDER", told to crm eval, which has no --masks
    and no images/ + masks/ layout: the hint says what each command takes."""
    for number in range(1, 3):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / f"frame_{number:05d}.jpg")
        write_png(tmp_path / f"frame_{number:05d}.png", grey=True)
    result = runner.invoke(app, ["eval", str(tmp_path), "-d", "cpu"])
    assert result.exit_code == 2, result.output
    assert "crm eval reads the BIG layout, NAME_im + NAME_seg + NAME_gt" in " ".join(result.output.split())
    assert "name the two" not in result.output


def test_the_masks_format_is_the_one_that_reads_as_a_mask(tmp_path: Path) -> None:
    """PNG photos beside grey TIFF masks: the hint names the .tif files, though PNG comes first."""
    write_png(tmp_path / "a.png", grey=False)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.tif")
    with pytest.raises(NoPairsError, match=r"1 name has both a \.png and a \.tif file .*if the \.tif files are "
                                           r"the masks"):
        scan_pairs(tmp_path)


def test_no_two_formats_hint_for_a_folder_of_photos_only(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.png")
    with pytest.raises(NoPairsError) as raised:
        scan_pairs(tmp_path)
    assert "both a" not in str(raised.value)


# --- 4. masks named with a mask word before the frame number -----------------------------------------


@pytest.mark.parametrize(("photo", "mask"), [
    ("plate.{:04d}", "plate_matte.{:04d}"),
    ("frame_{:05d}", "frame_mask_{:05d}"),
    ("frame_{:05d}", "mask_{:05d}"),
    ("shot_{:03d}", "shot_alpha_{:03d}_mask"),
])
def test_masks_named_with_a_mask_word_before_the_number_get_a_rename_hint(tmp_path: Path, photo: str,
                                                                            mask: str) -> None:
    touch(tmp_path, *(f"frames/{photo.format(number)}.png" for number in range(1, 6)),
          *(f"mattes/{mask.format(number)}.png" for number in range(1, 6)))
    found = scan_folder_pairs(tmp_path / "frames", tmp_path / "mattes")
    assert not found.pairs and len(found.failures) == 5  # a hint, never a pair
    first_photo, first_mask = photo.format(1), mask.format(1)
    assert found.notes[-1] == (
        f"5 masks without an image are numbered as photos without a mask and named otherwise before the number, "
        f"e.g. {first_mask}.png for {first_photo}.png: a mask is paired by its photo's name, {first_photo}.* or "
        f"{first_photo}_mask.* (or .mask, -mask, _matte, .matte, -matte); if these are their masks, rename them "
        f"({first_mask}.png -> {first_photo}.png)")


@pytest.mark.parametrize("mask", ["other_{:05d}", "mask_{:05d}_b"])
def test_no_rename_hint_without_a_mask_word_or_without_the_photos_text_after_the_number(tmp_path: Path,
                                                                                         mask: str) -> None:
    touch(tmp_path, *(f"images/frame_{number:05d}.png" for number in range(1, 4)),
          *(f"masks/{mask.format(number)}.png" for number in range(1, 4)))
    assert not [note for note in scan_pairs(tmp_path).notes if "named otherwise" in note]


def test_no_rename_hint_for_masks_of_other_numbers(tmp_path: Path) -> None:
    touch(tmp_path, *(f"images/frame_{number:05d}.png" for number in range(1, 4)),
          *(f"masks/mask_{number:05d}.png" for number in range(7, 10)))
    assert not [note for note in scan_pairs(tmp_path).notes if "named otherwise" in note]


@pytest.mark.parametrize("mask", ["take_mask_{:05d}", "frame_mask_{:05d}_b"])
def test_no_rename_hint_for_masks_whose_name_without_the_mask_word_is_no_photos(tmp_path: Path, mask: str) -> None:
    """Was: take_mask_00001 taken for frame_00001's mask, as any mask sequence with a mask word was for
    any photo sequence of the same folder and numbers: a mask word is taken out, not the whole name."""
    touch(tmp_path, *(f"images/frame_{number:05d}.png" for number in range(1, 4)),
          *(f"masks/{mask.format(number)}.png" for number in range(1, 4)))
    assert not [note for note in scan_pairs(tmp_path).notes if "named otherwise" in note]


def test_the_rename_hint_counts_the_masks_of_every_sequence_and_names_the_biggest(tmp_path: Path) -> None:
    """Was: "5 masks ..." for shot A's 3 and shot B's 5 (the biggest sequence's count alone)."""
    touch(tmp_path, *(f"images/shot{shot}.{number:04d}.png" for shot, last in (("a", 3), ("b", 5))
                      for number in range(1, last + 1)),
          *(f"masks/shot{shot}_alpha_mask.{number:04d}.png" for shot, last in (("a", 3), ("b", 5))
            for number in range(1, last + 1)))
    (note,) = [note for note in scan_pairs(tmp_path).notes if "named otherwise" in note]
    assert note.startswith("8 masks without an image are numbered as photos without a mask and named otherwise "
                           "before the number, e.g. shotb_alpha_mask.0001.png for shotb.0001.png:")
    assert note.endswith("(shotb_alpha_mask.0001.png -> shotb.0001.png)")


class CountedWords(tuple):
    """_MASK_WORDS, counting how often it is read through: each read is one name compared."""

    reads = 0

    def __iter__(self) -> Iterator[str]:
        CountedWords.reads += 1
        return super().__iter__()


def test_the_rename_hint_compares_each_mask_sequence_with_its_own_photos_not_with_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """N photos <word>_<i>.jpg, each with a mask <word>_mask_<i>.png (none pairs: the mask word comes
    before the number): the note read every photo sequence for every mask sequence, N * N comparisons
    (N = 3,000 took 10 s); each mask sequence is now looked up by its name without the mask word.
    Counted, not timed: the reads of the mask words and the comparisons of numbers grow as N."""
    from crm_cli import pairing_hints

    count = 200
    words = ["shot" + "".join(chr(ord("a") + index // 26 ** place % 26) for place in (2, 1, 0))
             for index in range(count)]
    touch(tmp_path, *(f"images/{word}_{index}.jpg" for index, word in enumerate(words)),
          *(f"masks/{word}_mask_{index}.png" for index, word in enumerate(words)))
    monkeypatch.setattr(CountedWords, "reads", 0)
    monkeypatch.setattr(pairing_hints, "_MASK_WORDS", CountedWords(pairing_hints._MASK_WORDS))
    compared: list[tuple[int, ...]] = []
    numbers_in_common = getattr(pairing_hints, "_numbers_in_common", None)

    def counted(mask_numbers: dict, photo_numbers: dict) -> set[int]:
        compared.append(tuple(mask_numbers))
        return numbers_in_common(mask_numbers, photo_numbers)  # type: ignore[misc]

    monkeypatch.setattr(pairing_hints, "_numbers_in_common", counted, raising=False)
    found = scan_pairs(tmp_path)
    assert not found.pairs and len(found.failures) == count
    assert CountedWords.reads <= 5 * count  # was count * count + count
    assert len(compared) == count  # each mask sequence with its own photo's, once
    assert found.notes[-1].startswith(f"{count} masks without an image are numbered as photos without a mask and "
                                      "named otherwise before the number, e.g. shotaaa_mask_0.png for "
                                      "shotaaa_0.jpg:")


def test_batch_json_puts_a_frame_without_its_mask_in_frame_order(tmp_path: Path) -> None:
    """batch --json items in frame order when frame_10 has no mask: frame_9, frame_10, frame_11."""
    from crm_cli.cli.batch import input_order
    from crm_cli.pairing import scan_pairs

    for number in (2, 9, 10, 11):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"frame_{number}.jpg")
        if number != 10:
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / f"frame_{number}_mask.png")
    order = input_order(scan_pairs(tmp_path))
    assert sorted(order, key=order.__getitem__) == ["frame_2", "frame_9", "frame_10", "frame_11"]


@pytest.mark.parametrize("mask_stem", ["alpha_matte_", "seg_mask_", "segmask_"])
def test_masks_named_with_mask_words_only_get_the_rename_hint(tmp_path: Path, mask_stem: str) -> None:
    """Masks whose text before the number is mask words only fit photos of any name, as mask_ does."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for number in (1, 2, 3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / f"frame_{number:04d}.jpg")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / f"{mask_stem}{number:04d}.png")
    (note,) = [note for note in scan_pairs(tmp_path).notes if "named otherwise" in note]
    assert f"{mask_stem}0001.png for frame_0001" in note
