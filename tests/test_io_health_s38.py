"""I/O health items of session 38: bytes that spell a file's path instead of holding its contents, and
check_output's TIFF check taking turns with the record of Pillow's warnings."""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crm_cli import writing
from crm_cli.imageio import ImageReadError, probe_image, read_image, read_image_noted, read_mask

# An EXIF block whose first directory is cut short: Pillow warns "Corrupt EXIF data" and reads no tag.
CORRUPT_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"
READERS = [probe_image, read_image, read_mask]


# 1. Bytes are encoded image data: a path given as bytes is told so, and unnamed bytes are not "<stdin>" ------


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: reader.__name__)
def test_a_path_given_as_bytes_is_told_to_be_passed_as_str(tmp_path: Path, reader) -> None:
    path = tmp_path / "mask.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    with pytest.raises(ImageReadError) as info:
        reader(os.fsencode(path))
    message = str(info.value)
    assert "bytes are read as encoded image data" in message
    assert "pass its path as a str or Path (os.fsdecode(path))" in message
    assert message.startswith("<bytes>: not a recognised image file; ")
    assert reader(os.fsdecode(os.fsencode(path))) is not None  # what the message advises reads the file


@pytest.mark.parametrize("reader", READERS, ids=lambda reader: reader.__name__)
def test_bytes_that_are_no_image_and_no_existing_path_get_no_hint(tmp_path: Path, reader) -> None:
    for data in (b"not an image", os.fsencode(tmp_path / "missing.png"), b"\x00" + os.fsencode(tmp_path)):
        with pytest.raises(ImageReadError) as info:
            reader(data)
        assert str(info.value) == "<bytes>: not a recognised image file"


def test_bytes_keep_the_name_given_and_stdin_is_named_only_by_its_caller(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match=r"^upload\.png: not a recognised image file$"):
        read_mask(b"junk", name="upload.png")
    with pytest.raises(ImageReadError, match=r"^<stdin>: not a recognised image file$"):
        read_image(b"junk", name="<stdin>")
    with pytest.raises(ImageReadError, match=r"^<bytes>: empty file$"):
        probe_image(b"")


# 2. _incomplete_tiff's filter takes turns with the record of Pillow's warnings ------------------------------


def _damaged_photo_and_tiff(tmp_path: Path) -> tuple[Path, Path]:
    """A JPEG whose EXIF block Pillow warns about, and a complete TIFF for check_output."""
    rng = np.random.default_rng(0)
    damaged, tiff = tmp_path / "damaged.jpg", tmp_path / "out.tif"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(damaged, exif=CORRUPT_EXIF)
    writing.write_image(tiff, rng.integers(0, 256, (16, 16), np.uint8))
    return damaged, tiff


def test_a_tiff_check_in_another_thread_loses_no_damaged_exif_note_and_restores_the_warning_state(
        tmp_path: Path) -> None:
    # One thread decodes a photo with a damaged EXIF block (its note is recorded by imageio's
    # caught_pillow_warnings) while another checks a TIFF output (_incomplete_tiff ignores every warning).
    # Unguarded, the check's filter swallowed the note, and interleaved exits left the wrong saved
    # filters and warning output in place for the whole process.
    damaged, tiff = _damaged_photo_and_tiff(tmp_path)
    rounds = 1000
    filters, show, show_impl = warnings.filters, warnings.showwarning, warnings._showwarnmsg_impl
    filters_before = list(filters)
    lost: list[int] = []
    problems: list[str | None] = []
    start = threading.Barrier(2)

    def decode_damaged() -> None:
        start.wait()
        for k in range(rounds):
            if not read_image_noted(damaged)[2]:
                lost.append(k)

    def check_tiff() -> None:
        start.wait()
        for _ in range(rounds):
            problems.append(writing.check_output(tiff).problem)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=decode_damaged), threading.Thread(target=check_tiff)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        state = (list(warnings.filters), warnings.showwarning, warnings._showwarnmsg_impl)
    finally:
        sys.setswitchinterval(interval)
        # Whatever happened, later tests get the warning state back.
        warnings.filters, warnings.showwarning, warnings._showwarnmsg_impl = filters, show, show_impl
        warnings._filters_mutated()
    assert lost == []
    assert problems == [None] * rounds
    assert state == (filters_before, show, show_impl)


def test_the_tiff_check_changes_the_warning_state_only_under_the_shared_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Deterministic: at the moment _incomplete_tiff enters catch_warnings, no other thread can take the
    # lock that imageio's warning contexts hold.
    _, tiff = _damaged_photo_and_tiff(tmp_path)
    lock = writing.WARNING_STATE_LOCK
    real_catch_warnings = warnings.catch_warnings
    taken_elsewhere: list[bool] = []

    def try_lock_in_another_thread() -> None:
        if taken := lock.acquire(blocking=False):
            lock.release()
        taken_elsewhere.append(taken)

    def watched_catch_warnings(*args, **kwargs):
        prober = threading.Thread(target=try_lock_in_another_thread)
        prober.start()
        prober.join()
        return real_catch_warnings(*args, **kwargs)

    monkeypatch.setattr(warnings, "catch_warnings", watched_catch_warnings)
    assert writing.check_output(tiff).problem is None
    assert taken_elsewhere == [False]


def test_a_pair_read_from_bytes_names_them_bytes_not_stdin(tmp_path: Path) -> None:
    """pipeline.read_pair given encoded bytes without names: the error says <bytes>; only the CLI,
    which reads standard input, names it <stdin>."""
    from crm_cli.pipeline import read_pair

    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(photo)
    with pytest.raises(ImageReadError, match="^<bytes>: ") as raised:
        read_pair(photo, b"not a mask")
    assert "<stdin>" not in str(raised.value)


def test_standard_input_and_folders_get_no_path_hint(tmp_path: Path) -> None:
    """The CLI names standard input <stdin>: piped bytes that spell a path get no API advice; nor do
    bytes that name a folder."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"not an image")
    with pytest.raises(ImageReadError) as raised:
        read_image(os.fsencode(photo), name="<stdin>")
    assert "str or Path" not in str(raised.value)
    with pytest.raises(ImageReadError) as raised:
        read_image(os.fsencode(tmp_path))
    assert "str or Path" not in str(raised.value)


def test_a_16bit_pgm_is_stored_in_16_bits(tmp_path: Path) -> None:
    from crm_cli.imageio import read_photo

    path = tmp_path / "frame.pgm"
    values = np.arange(64, dtype=np.uint16).reshape(8, 8) * 60
    path.write_bytes(b"P5\n8 8\n4095\n" + values.astype(">u2").tobytes())
    assert read_photo(path).stored_bits == 16


@pytest.mark.parametrize("source", [bytearray(b"garbage"), memoryview(b"garbage")])
def test_a_pair_from_a_bytearray_is_named_bytes(tmp_path: Path, source) -> None:
    from crm_cli.pipeline import source_name

    assert source_name(source) == "<bytes>"
