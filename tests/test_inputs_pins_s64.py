"""Pins for input pairing and reading that the suite let change unnoticed (session 64's mutation review of
pairing, image_sources, image_headers, image_limits, photo_depth, wide_colour, sample_values,
mask_decoding and decode_messages). Tiny synthetic inputs."""

from __future__ import annotations

import io
import os
import struct
import threading
import unicodedata
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from crm_cli import pairing
from crm_cli.decode_messages import caught_pillow_warnings, damaged_tags_note, decode_errors
from crm_cli.image_headers import ImageHeader, probe_image, refusal_needs_decoding
from crm_cli.image_limits import check_image_size
from crm_cli.image_sources import ImageReadError
from crm_cli.imageio import read_image, read_image_noted, read_mask
from crm_cli.pairing import FilePair, NoPairsError, ground_truth_pairs, scan_pairs, split_output_clashes
from crm_cli.wide_colour import check_same_pixels
from crm_cli.writing import NameFolding


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk; ``crc`` given: a wrong checksum."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _before_iend(png: bytes, chunk: bytes) -> bytes:
    """``png`` with ``chunk`` inserted before its IEND chunk (after the image data)."""
    return png[:-12] + chunk + png[-12:]


def _feed_pipe(data: bytes) -> int:
    """The read end of a pipe that a thread fills with ``data`` (as `<(cat file)` does)."""
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb") as handle:
            handle.write(data)

    threading.Thread(target=write, daemon=True).start()
    return read_end


# ---------------------------------------------------------------------------------------------
# pairing


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def test_the_mask_of_a_photo_in_the_output_folder_is_no_orphan(tmp_path: Path) -> None:
    """P12: masks taken by the photos left out in the output folder are not 'without an image'."""
    _touch(tmp_path, "images/a.png", "masks/a.png", "images/out/b.png", "masks/out/b.png")
    found = scan_pairs(tmp_path, exclude=tmp_path / "images" / "out")
    assert [pair.name for pair in found.pairs] == ["a"] and found.problems == []
    assert found.notes == [f"1 input pair left out: inside the output folder {tmp_path / 'images' / 'out'}"]


def test_an_ambiguous_pair_in_the_output_folder_is_counted_as_left_out(tmp_path: Path) -> None:
    """P13: photos in the output folder that two masks fit count among the input pairs left out."""
    _touch(tmp_path, "images/a.png", "masks/a.png", "images/out/b.png", "masks/out/b_mask.png",
           "masks/out/b-matte.png")
    found = scan_pairs(tmp_path, exclude=tmp_path / "images" / "out")
    assert [pair.name for pair in found.pairs] == ["a"] and found.problems == []
    assert found.notes == [f"1 input pair left out: inside the output folder {tmp_path / 'images' / 'out'}"]


def test_a_mask_in_the_output_folder_that_a_photo_outside_takes_stays_an_input(tmp_path: Path) -> None:
    """P23: the masks in the output folder that fit an unpaired photo are listed in left_out_inputs."""
    _touch(tmp_path, "images/a.png", "masks/a.png", "images/sub/b.png", "masks/sub/b.png")
    found = scan_pairs(tmp_path, exclude=tmp_path / "masks" / "sub")
    assert [pair.name for pair in found.pairs] == ["a"]
    assert [failure.name for failure in found.failures] == ["sub/b"]
    assert found.left_out_inputs == [tmp_path / "masks" / "sub" / "b.png"]


def test_outputs_one_only_in_unicode_form_clash_on_a_disk_that_folds_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """P17: outputs equal only in Unicode form make the disk be probed (here: one that folds that form)."""
    probed: list[Path] = []

    def folding(folder: Path) -> NameFolding:
        probed.append(folder)
        return NameFolding(case=False, unicode_form=True)

    monkeypatch.setattr(pairing, "name_folding", folding)
    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    pairs = [FilePair(name, tmp_path / f"{name}.jpg", tmp_path / f"{name}_mask.png", Path(f"{name}.png"))
             for name in (composed, decomposed)]
    kept, failures = split_output_clashes(pairs, tmp_path / "out")
    assert probed == [tmp_path / "out"]
    assert kept == [] and [failure.name for failure in failures] == [composed, decomposed]
    assert "which ignores Unicode form" in failures[0].error


def test_ground_truth_pairs_without_needs_leaves_the_refusal_to_its_caller(tmp_path: Path) -> None:
    """P16: with needs=None no BIG-layout ground truth is a warning, not a NoPairsError (crm eval words its own)."""
    _touch(tmp_path, "a_im.png", "a_seg.png")
    found = scan_pairs(tmp_path)
    pairs, notes = ground_truth_pairs(found, tmp_path, "not scored", None)
    assert pairs == []
    assert notes == [f"{tmp_path}: 1 BIG-layout pair without a ground truth <name>_gt.* not scored, e.g. "
                     f"{tmp_path / 'a_im.png'} + {tmp_path / 'a_seg.png'}"]
    with pytest.raises(NoPairsError, match="has its ground truth <name>_gt.* beside it, e.g. .*a_im.png: to score"):
        ground_truth_pairs(found, tmp_path, "not scored", "to score")


# ---------------------------------------------------------------------------------------------
# image_sources


def test_a_folder_given_as_an_image_is_named_as_a_folder(tmp_path: Path) -> None:
    """S1: a folder is 'a directory, not an image file', not a generic read failure."""
    with pytest.raises(ImageReadError, match=r": is a directory, not an image file$"):
        read_image(tmp_path)


def test_the_name_given_labels_a_missing_path(tmp_path: Path) -> None:
    """S8: ``name`` labels a path source's errors, not the path."""
    with pytest.raises(ImageReadError, match=r"^the photo: no such file$"):
        read_image(tmp_path / "missing.png", name="the photo")


def test_a_photo_and_a_mask_both_piped_are_probed_then_read(tmp_path: Path) -> None:
    """S4: a pair's two pipes stay kept between their probes and their reads."""
    photo = np.full((6, 8, 3), 90, np.uint8)
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:6] = 255
    ends = [_feed_pipe(_png(photo)), _feed_pipe(_png(mask))]
    paths = [f"/dev/fd/{end}" for end in ends]
    try:
        assert probe_image(paths[0]).shape == probe_image(paths[1]).shape == (6, 8)
        assert np.array_equal(read_image(paths[0]), photo)
        assert np.array_equal(read_mask(paths[1]).values, mask)
    finally:
        for end in ends:
            os.close(end)


def test_a_new_pipe_behind_a_reused_fd_path_is_read_afresh() -> None:
    """S5: the pipe bytes kept are keyed by the pipe (inode), not only by its /dev/fd path."""
    first = np.full((4, 4), 10, np.uint8)
    second = np.full((4, 4), 200, np.uint8)
    end = _feed_pipe(_png(first))
    path = f"/dev/fd/{end}"
    try:
        assert np.array_equal(read_mask(path).values, first)
        newer = _feed_pipe(_png(second))
        os.dup2(newer, end)  # the same /dev/fd/N path, another pipe
        os.close(newer)
        assert np.array_equal(read_mask(path).values, second)
    finally:
        os.close(end)


# ---------------------------------------------------------------------------------------------
# image_headers


def test_an_empty_file_is_probed_as_empty(tmp_path: Path) -> None:
    """H9: probe_image says 'empty file' of a 0-byte path, not 'not a recognised image file'."""
    (tmp_path / "a.png").touch()
    with pytest.raises(ImageReadError, match=r"a\.png: empty file$"):
        probe_image(tmp_path / "a.png")


def test_a_jpeg_compressed_tiff_of_compression_7_is_lossy(tmp_path: Path) -> None:
    """H4: TIFF compression 7 (new-style JPEG, what Pillow writes) is lossy, and a 0/1 mask in it refused."""
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 3
    Image.fromarray(mask).save(tmp_path / "m.tif", compression="jpeg")
    assert probe_image(tmp_path / "m.tif").lossy == "JPEG-compressed TIFF"
    with pytest.raises(ImageReadError, match="a JPEG-compressed TIFF mask of small values"):
        read_mask(tmp_path / "m.tif")


def test_a_lossy_webp_after_an_odd_sized_chunk_is_lossy(tmp_path: Path) -> None:
    """H5: WebP chunks are padded to an even size; a 13-byte ICC profile before VP8 must be skipped whole."""
    Image.new("RGB", (8, 8), (10, 200, 30)).save(tmp_path / "a.webp", quality=80, icc_profile=b"x" * 13)
    assert probe_image(tmp_path / "a.webp").lossy == "lossy WebP"


def test_only_a_mask_in_lossy_compression_needs_decoding_to_be_refused() -> None:
    """H7: an 8-bit JPEG photo cannot be refused by its values; as a mask it can (class ids)."""
    header = ImageHeader(8, 8, "L", "JPEG", lossy="JPEG")
    assert refusal_needs_decoding(header, as_mask=False) is False
    assert refusal_needs_decoding(header, as_mask=True) is True


def test_a_png_with_a_damaged_text_chunk_is_probed_without_it(tmp_path: Path) -> None:
    """H10: probe_image drops a metadata chunk whose checksum fails, as the readers do."""
    png = _png(np.full((5, 7), 128, np.uint8))
    (tmp_path / "a.png").write_bytes(png[:33] + _chunk(b"tEXt", b"Comment\x00hi", crc=0) + png[33:])
    header = probe_image(tmp_path / "a.png")
    assert (header.width, header.height, header.mode) == (7, 5, "L")


def test_an_xmp_orientation_after_the_image_data_turns_the_header(tmp_path: Path) -> None:
    """H12: an orientation in a text chunk after IDAT is read (by decoding) in the header too."""
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    itxt = _chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp)
    (tmp_path / "a.png").write_bytes(_before_iend(_png(np.zeros((4, 10), np.uint8)), itxt))
    header = probe_image(tmp_path / "a.png")
    assert header.orientation == 6 and header.shape == (10, 4)
    assert read_mask(tmp_path / "a.png").shape == (10, 4)


# ---------------------------------------------------------------------------------------------
# image_limits


def test_a_side_of_exactly_the_limit_is_allowed() -> None:
    """L1: MAX_IMAGE_SIDE (65535, JPEG's) is itself allowed; one more is not."""
    check_image_size(65_535, 2, "a.png")
    with pytest.raises(ImageReadError, match="65535 px per side"):
        check_image_size(65_536, 2, "a.png")
def test_an_image_of_exactly_the_pixel_limit_is_allowed() -> None:
    """L2: MAX_IMAGE_PIXELS (150 MP) is itself allowed; one row more is not."""
    check_image_size(15_000, 10_000, "a.png")
    with pytest.raises(ImageReadError, match=r"15000x10001 \(150\.01 MP\) is larger than crm's limit of 150 MP;"):
        check_image_size(15_000, 10_001, "a.png")


def test_pillows_own_lowered_limit_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """L6: an image within crm's limits that Pillow refuses names PIL.Image.MAX_IMAGE_PIXELS, not crm's limit."""
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    with pytest.raises(ImageReadError, match=r"a\.png: 10x10 \(0\.00 MP\) is larger than the limit set by "
                                             r"PIL\.Image\.MAX_IMAGE_PIXELS in this process$"):
        read_image(tmp_path / "a.png")


# ---------------------------------------------------------------------------------------------
# wide_colour


def test_a_16bit_rgba_photo_is_read_at_full_precision(tmp_path: Path) -> None:
    """W1: a 16-bit RGBA PNG goes to OpenCV (rounded to 8 bits), not to Pillow (truncated)."""
    rgba = np.zeros((2, 2, 4), np.uint16)
    rgba[..., 3] = 65535
    rgba[0, 0, :3] = 255  # 0x00FF: rounds to 1, truncates to 0
    rgba[1, 1, :3] = 65535
    cv2.imwrite(str(tmp_path / "a.png"), rgba[..., [2, 1, 0, 3]])
    pixels = read_image(tmp_path / "a.png")
    assert pixels[0, 0].tolist() == [1, 1, 1] and pixels[1, 1].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() == [0, 0, 0]


def test_16bit_pixels_that_differ_from_pillows_by_more_than_a_level_are_refused() -> None:
    """W4: OpenCV's and Pillow's readings may differ by one level on average, not by ten."""
    loaded = Image.fromarray(np.full((2, 2, 3), 110, np.uint8))
    check_same_pixels(np.full((2, 2, 3), 111 << 8, np.uint16), loaded, "a.tif")  # one level: same file
    with pytest.raises(ImageReadError, match="decode differently in OpenCV and Pillow"):
        check_same_pixels(np.full((2, 2, 3), 100 << 8, np.uint16), loaded, "a.tif")


# ---------------------------------------------------------------------------------------------
# photo_depth


def _grey16(path: Path, values: np.ndarray) -> Path:
    Image.fromarray(values.astype(np.uint16)).save(path)
    return path


def test_a_largest_value_of_256_is_read_on_the_10bit_scale(tmp_path: Path) -> None:
    """D2: 256 does not fit 8 bits (white 255): read as 10-bit, 256 -> round(256 * 255 / 1023) = 64."""
    values = np.zeros((2, 2))
    values[0, 0] = 256
    pixels, _, notes = read_image_noted(_grey16(tmp_path / "a.png", values))
    assert pixels[0, 0].tolist() == [64, 64, 64] and pixels[1, 1].tolist() == [0, 0, 0]
    assert notes == [f"{tmp_path / 'a.png'}: a 16-bit image whose largest value is 256, read as 10-bit values "
                     "(1023 = white); the scale follows each file's values, so frames of one sequence can differ: "
                     "photo_bits=N fixes it"]


def test_an_all_black_16bit_photo_has_no_note(tmp_path: Path) -> None:
    """D4: an all-black photo is black on any scale: no 'read as 8-bit values' note."""
    pixels, _, notes = read_image_noted(_grey16(tmp_path / "a.png", np.zeros((3, 3))))
    assert notes == [] and not pixels.any()


def test_one_hot_pixel_in_a_thousand_over_a_10bit_frame_is_noted(tmp_path: Path) -> None:
    """D5, D6, D16: exactly FEW_ABOVE_SHARE of the pixels above 1023 (1 of 1000) still gets the note, for 10 bits."""
    values = np.tile(np.arange(1000) % 1024, 1).reshape(10, 100)
    values[0, 0] = 65535
    pixels, _, notes = read_image_noted(_grey16(tmp_path / "a.png", values))
    assert pixels.max() == 255 and pixels[0, 1].tolist() == [0, 0, 0]
    assert len(notes) == 1
    assert "read on the 16-bit scale for 1 pixel above 1023 (0.1% of them); the rest hold 10-bit values and " \
           "read almost black (at most 4 of 255): a 10-bit frame with hot or saturated pixels?" in notes[0]


def test_a_window_of_40_levels_is_stretched(tmp_path: Path) -> None:
    """D9: a 16-bit photo whose 8-bit reading holds 40 levels (< 64) is stretched from black to white."""
    values = np.arange(100 * 257, 100 * 257 + 10_100).reshape(100, 101)
    values[values > 139 * 257] = 139 * 257  # 8-bit reading: 100..139, 40 levels
    pixels, _, notes = read_image_noted(_grey16(tmp_path / "a.png", values))
    assert (pixels.min(), pixels.max()) == (0, 255)
    assert len(notes) == 1 and "its values run from 25700 to 35723 only, 40 levels of 256" in notes[0]


# ---------------------------------------------------------------------------------------------
# sample_values


def test_a_max_sample_value_below_the_values_is_not_taken_for_their_white(tmp_path: Path) -> None:
    """V3: a white-is-zero TIFF whose MaxSampleValue (1000) is below its values (4000) is turned over on the
    12-bit scale its values need (4095 - v), not on 1000 (which would wrap round)."""
    Image.fromarray(np.array([[0, 4000, 1000]], np.uint16)).save(tmp_path / "w.tif", tiffinfo={262: 0, 281: 1000})
    mask = read_mask(tmp_path / "w.tif")
    assert mask.kind == "gray16" and mask.values.tolist() == [[4095, 95, 3095]]


def test_a_signed_8bit_tiff_whose_lowest_value_is_minus_one_is_refused(tmp_path: Path) -> None:
    """V5: -1 is below 0 (it would read as 255)."""
    Image.fromarray(np.array([[-1, 5], [0, 0]], np.int8).view(np.uint8)).save(tmp_path / "s.tif",
                                                                            tiffinfo={339: 2})
    with pytest.raises(ImageReadError, match=r"s\.tif: this signed 8-bit TIFF holds values below 0 \(from -1 to 5\)"):
        read_mask(tmp_path / "s.tif")


# ---------------------------------------------------------------------------------------------
# mask_decoding


def _blocks(colours: list[tuple[int, int, int]], side: int = 4) -> np.ndarray:
    """An RGB map of ``side`` x ``side`` blocks, one per colour, in a row."""
    return np.concatenate([np.tile(np.array(colour, np.uint8), (side, side, 1)) for colour in colours], axis=1)


def test_a_colour_coded_map_of_twenty_colours_is_one_object(tmp_path: Path) -> None:
    """M2: up to 256 exact colours of several hues in flat regions make a colour-coded map: all but black is 255."""
    colours = [(0, 0, 0)] + [(64 + 8 * i, 0, 0) if i % 2 else (0, 0, 64 + 8 * i) for i in range(20)]
    Image.fromarray(_blocks(colours)).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.kind == "rgb" and mask.values[0, :4].tolist() == [0] * 4
    assert (mask.values[:, 4:] == 255).all()


def test_a_map_with_five_percent_blended_edges_is_read_by_its_brightest_channel(tmp_path: Path) -> None:
    """M3: more than 1% of the coloured pixels in blends (no region of their own): no colour-coded map."""
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[:, :9] = (200, 0, 0)
    rgb[:, 9] = (100, 0, 100)  # one blended column: 5% of the pixels
    rgb[:, 10:] = (0, 0, 200)
    Image.fromarray(rgb).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.values[0, 0] == 200 and mask.values[0, 9] == 100 and mask.values[0, 19] == 200


def test_an_identity_grey_palette_of_one_used_entry_stays_a_palette(tmp_path: Path) -> None:
    """M8: an empty frame of an identity grey palette (one used entry) is left to its palette."""
    image = Image.new("P", (4, 4))
    image.putpalette([level for level in range(256) for _ in range(3)])
    image.putdata([200] * 16)
    image.save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.kind == "palette" and (mask.values == 200).all()


def test_a_renumbered_two_tone_palette_of_opaque_entries_has_no_transparency(tmp_path: Path) -> None:
    """M9: black at index 1 and red at 0, both opaque: renumbered 0/1 with no transparency (None)."""
    image = Image.new("P", (4, 4))
    image.putpalette([255, 0, 0, 0, 0, 0])
    image.putdata([1] * 8 + [0] * 8)
    image.save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.kind == "palette" and mask.values.tolist() == [[0] * 4] * 2 + [[1] * 4] * 2
    assert mask.transparency is None and mask.palette[:6] == [0, 0, 0, 255, 0, 0]


def test_a_quantised_cutout_whose_alpha_is_not_only_its_background_reads_its_alpha(tmp_path: Path) -> None:
    """M12: a palette photo (70 colours) whose transparency hides black but leaves others half-transparent
    is a cut-out: the transparency draws the mask, not the indices."""
    indices = np.arange(80, dtype=np.uint8).reshape(8, 10) % 70
    image = Image.fromarray(indices, "P")
    image.putpalette([value for i in range(70) for value in (0, 0, 0) if i == 0]
                     + [value for i in range(1, 70) for value in (3 * i, 255 - 3 * i, 90)])
    image.info["transparency"] = bytes([0] + [128] * 35 + [255] * 34)
    image.save(tmp_path / "m.png", transparency=image.info["transparency"])
    mask = read_mask(tmp_path / "m.png")
    assert mask.kind == "alpha"
    assert mask.values[0, :3].tolist() == [0, 128, 128] and mask.values[4, 0] == 255  # indices 0, 1, 2 and 40


# ---------------------------------------------------------------------------------------------
# decode_messages


# A big-endian EXIF block of two entries, the first an orientation of 6; cut short, the second cannot be read.
_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x02\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"


def _jpeg_with_exif(exif: bytes) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_damaged_exif_notes_say_whether_the_orientation_was_applied() -> None:
    """E6, E7: the note on a damaged EXIF block says whether its orientation still applied, each warning once."""
    pixels, orientation, notes = read_image_noted(_jpeg_with_exif(_EXIF), "a.jpg")
    assert pixels.shape == (6, 4, 3) and orientation == 6
    assert notes == ["a.jpg: damaged EXIF data (Corrupt EXIF data. Expecting to read 12 bytes but only got 0); "
                     "its orientation tag (6) was still applied"]
    pixels, orientation, notes = read_image_noted(_jpeg_with_exif(_EXIF[:20]), "a.jpg")
    assert pixels.shape == (4, 6, 3) and orientation == 1
    assert notes == ["a.jpg: damaged EXIF data ignored, so no EXIF orientation was applied (Corrupt EXIF data. "
                     "Expecting to read 12 bytes but only got 4)"]
    assert probe_image(_jpeg_with_exif(_EXIF[:20]), "a.jpg").damaged_tags == notes[0]


def test_a_struct_error_of_pillow_is_a_decode_error_naming_the_file() -> None:
    """E1: struct.error (truncated headers in some plugins) is one of the failures named as the file's."""
    with pytest.raises(ImageReadError, match=r"^a\.png: cannot decode image \(unpack requires a buffer of 4 bytes\)$"):
        with decode_errors("a.png", "image"):
            struct.unpack(">I", b"\x00")


def test_a_pillow_warning_given_twice_is_kept_once() -> None:
    """E7: caught_pillow_warnings keeps each distinct warning once, however often Pillow gives it."""
    plugin = str(Path(Image.__file__).with_name("TiffImagePlugin.py"))
    with caught_pillow_warnings() as kept:
        for _ in range(2):
            warnings.warn_explicit("Corrupt EXIF data.  Expecting to read 12 bytes", UserWarning, plugin, 1)
    assert len(kept) == 1 and kept[0].about_tags
    assert damaged_tags_note(kept, "a.tif", "TIFF", 3) == ("a.tif: damaged TIFF tags (Corrupt EXIF data. Expecting to "
                                                           "read 12 bytes); its orientation tag (3) was still applied")
