"""16-bit photos in a sequence (audit s38, a video editor's view): each 16-bit photo is read on the scale
of its own largest value, so one frame of a 12-bit shot with a highlight over 4095 was read as 14-bit,
4x darker than its neighbours. ``--photo-bits N`` (``photo_bits=N`` in the API) reads every file on one
scale, clipping what lies above it with a note; the per-file note names the option. And a cut-out of a
photo of more than 8 bits per channel, written in 8 bits, says so."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from batch_records import record_of, stamps_of
from conftest import flat, synthetic_scene
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.engine import RefineResult
from crm_cli.imageio import read_image_noted, read_photo
from crm_cli.pipeline import read_pair, read_photo_pair, refine_files
from crm_cli.presets import PRESETS

runner = CliRunner()
H, W = 96, 128
HOT = (5, 7)  # where the highlight of the second frame lies
BITS = (8, 10, 12, 14, 16)  # the scales --photo-bits offers (imageio.PHOTO_BITS_CHOICES)


def write_frame(path: Path, hot_value: int | None = None, seed: int = 0) -> np.ndarray:
    """A 16-bit RGB PNG frame of a dark 12-bit shot (values up to 4080), with one hot pixel of
    ``hot_value`` when given; returns its RGB uint16 values."""
    image, _ = synthetic_scene(H, W, seed=seed)
    values = image.astype(np.uint16) * 16
    if hot_value is not None:
        values[HOT] = hot_value
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), values[..., ::-1])
    return values


def write_mask(path: Path, seed: int = 0) -> Path:
    _, gt = synthetic_scene(H, W, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gt).save(path)
    return path


def on_scale(values: np.ndarray, bits: int) -> np.ndarray:
    """uint16 values read as ``bits``-bit: value / (2**bits - 1) * 255, rounded, clipped at white."""
    white = (1 << bits) - 1
    return np.round(np.minimum(values, white).astype(np.float64) / white * 255).astype(np.uint8)


def test_fixed_photo_bits_reads_every_frame_of_a_sequence_on_one_scale(tmp_path: Path) -> None:
    plain = write_frame(tmp_path / "f1.png")
    hot = write_frame(tmp_path / "f2.png", hot_value=4400)

    # On each file's own scale the frame with the highlight is read as 14-bit: 4x darker.
    auto_plain, auto_hot = read_photo(tmp_path / "f1.png").pixels, read_photo(tmp_path / "f2.png").pixels
    rest_of_hot = np.delete(auto_hot.reshape(-1, 3), HOT[0] * W + HOT[1], axis=0)
    assert int(rest_of_hot.max()) < int(auto_plain.max()) // 3

    first = read_photo(tmp_path / "f1.png", photo_bits=12)
    second = read_photo(tmp_path / "f2.png", photo_bits=12)
    assert np.array_equal(first.pixels, on_scale(plain, 12))
    assert np.array_equal(second.pixels, on_scale(hot, 12))
    differs = np.argwhere((first.pixels != second.pixels).any(axis=2))
    assert differs.tolist() == [list(HOT)]  # only the highlight, clipped to white
    assert second.pixels[HOT].tolist() == [255, 255, 255]
    assert first.notes == []
    assert second.notes == [f"{tmp_path / 'f2.png'}: 1 pixel holds a value above 4095, the white of the 12-bit scale "
                            "asked for (photo_bits=12); clipped to white"]


def test_the_clip_note_counts_pixels_not_channels(tmp_path: Path) -> None:
    values = np.full((4, 5, 3), 1000, np.uint16)
    values[0, 0] = 5000  # three channels over 4095: one pixel
    values[1, 1, 2] = 4096  # one channel over: one more pixel
    cv2.imwrite(str(tmp_path / "c.png"), values[..., ::-1])
    grey = np.full((4, 5), 100, np.uint16)
    grey[2, :3] = 300
    cv2.imwrite(str(tmp_path / "g.png"), grey)

    _, _, notes = read_image_noted(tmp_path / "c.png", photo_bits=12)
    assert len(notes) == 1 and ": 2 pixels hold values above 4095" in notes[0]
    pixels, _, notes = read_image_noted(tmp_path / "g.png", photo_bits=8)
    assert len(notes) == 1 and ": 3 pixels hold values above 255" in notes[0]
    assert pixels[2, :4, 0].tolist() == [255, 255, 255, 100]


@pytest.mark.parametrize("bits", BITS)
def test_each_fixed_scale_is_value_over_its_white(tmp_path: Path, bits: int) -> None:
    values = np.array([[0, 1, 127, 128, 255, 1023, 4095, 16383, 40000, 65535]] * 2, np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), values)

    pixels, _, notes = read_image_noted(tmp_path / "g.png", photo_bits=bits)

    assert np.array_equal(pixels[..., 0], on_scale(values, bits))
    white = (1 << bits) - 1
    clipped = int(np.count_nonzero(values > white))
    assert len(notes) == (1 if clipped else 0)
    if bits == 16:  # the 16-bit scale is the one auto takes for a full-range photo
        assert np.array_equal(pixels, read_image_noted(tmp_path / "g.png")[0])


def test_a_fixed_scale_is_never_stretched(tmp_path: Path) -> None:
    # A narrow window (a CT slice at 30000-34000) is stretched on its own scale; a fixed scale is kept
    # as asked, or the frames of a sequence would be stretched each by its own range again.
    values = np.tile(np.linspace(30000, 34000, 64).astype(np.uint16), (8, 1))
    cv2.imwrite(str(tmp_path / "ct.png"), values)

    auto, _, auto_notes = read_image_noted(tmp_path / "ct.png")
    fixed, _, fixed_notes = read_image_noted(tmp_path / "ct.png", photo_bits=16)

    assert int(auto.min()) == 0 and int(auto.max()) == 255 and "stretched" in auto_notes[0]
    assert np.array_equal(fixed[..., 0], on_scale(values, 16)) and fixed_notes == []


def test_8bit_and_floating_point_photos_ignore_photo_bits(tmp_path: Path) -> None:
    image, _ = synthetic_scene(H, W)
    Image.fromarray(image).save(tmp_path / "p8.png")
    Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), mode="F").save(tmp_path / "f.tif")
    for name in ("p8.png", "f.tif"):
        for bits in (8, 12):
            assert np.array_equal(read_photo(tmp_path / name, photo_bits=bits).pixels,
                                  read_photo(tmp_path / name).pixels), name
            assert read_photo(tmp_path / name, photo_bits=bits).notes == []


@pytest.mark.parametrize("bad", [9, 0, "12", 12.0, True, -1])
def test_photo_bits_outside_the_choices_is_a_value_error(tmp_path: Path, bad: object) -> None:
    write_frame(tmp_path / "f.png")
    with pytest.raises(ValueError, match="photo_bits must be None"):
        read_photo(tmp_path / "f.png", photo_bits=bad)  # type: ignore[arg-type]


def test_numpy_integers_are_taken_as_photo_bits(tmp_path: Path) -> None:
    values = write_frame(tmp_path / "f.png")
    assert np.array_equal(read_photo(tmp_path / "f.png", photo_bits=np.int64(12)).pixels,  # type: ignore[arg-type]
                          on_scale(values, 12))


def test_the_note_of_each_file_s_own_scale_names_the_option(tmp_path: Path) -> None:
    top = int(write_frame(tmp_path / "f.png").max())
    cv2.imwrite(str(tmp_path / "ct.png"), np.tile(np.linspace(30000, 34000, 64).astype(np.uint16), (8, 1)))

    (twelve,) = read_photo(tmp_path / "f.png").notes
    (stretched,) = read_photo(tmp_path / "ct.png").notes

    assert twelve.startswith(f"{tmp_path / 'f.png'}: a 16-bit image whose largest value is {top}, read as 12-bit "
                             "values (4095 = white); ")
    for note in (twelve, stretched):
        assert note.endswith("frames of one sequence can differ: photo_bits=N fixes it")  # the API's name (s39)


def test_read_pair_and_read_photo_pair_take_photo_bits(tmp_path: Path) -> None:
    values = write_frame(tmp_path / "f.png", hot_value=4400)
    mask = write_mask(tmp_path / "m.png")

    image, _, notes = read_pair(tmp_path / "f.png", mask, photo_bits=12)
    photo, _, pair_notes = read_photo_pair(tmp_path / "f.png", mask, photo_bits=12)

    assert np.array_equal(image, on_scale(values, 12)) and np.array_equal(photo.pixels, image)
    assert notes == pair_notes and "clipped to white" in notes[0]


def test_a_photo_records_the_bits_its_file_stored(tmp_path: Path) -> None:
    write_frame(tmp_path / "rgb16.png")
    cv2.imwrite(str(tmp_path / "grey16.png"), np.full((4, 4), 3000, np.uint16))
    Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F").save(tmp_path / "f.tif")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "p8.png")
    bits = {name: read_photo(tmp_path / name).stored_bits for name in ("rgb16.png", "grey16.png", "f.tif", "p8.png")}
    assert bits == {"rgb16.png": 16, "grey16.png": 16, "f.tif": 32, "p8.png": 8}


class SeeingRefiner:
    """A stand-in for engine.Refiner that keeps the image it was given and gives the coarse mask back."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def refine_detailed(self, image: np.ndarray, coarse: np.ndarray, preset: object = None) -> RefineResult:
        self.images.append(image.copy())
        return RefineResult(probability=coarse.astype(np.float32), ratios=(1.0,))


def test_refine_files_gives_the_model_the_photo_on_the_fixed_scale(tmp_path: Path) -> None:
    values = write_frame(tmp_path / "f.png", hot_value=4400)
    mask = write_mask(tmp_path / "m.png")
    refiner = SeeingRefiner()

    result = refine_files(refiner, tmp_path / "f.png", mask, PRESETS["balanced"], photo_bits=12)

    assert np.array_equal(refiner.images[0], on_scale(values, 12))
    assert any("clipped to white" in note for note in result.notes)


def test_a_cutout_of_a_16bit_photo_says_it_is_written_in_8_bits(tmp_path: Path) -> None:
    write_frame(tmp_path / "f.png")
    image, _ = synthetic_scene(H, W)
    Image.fromarray(image).save(tmp_path / "p8.png")
    mask = write_mask(tmp_path / "m.png")
    depth_note = (f"{tmp_path / 'f.png'}: a 16-bit photo, but its cut-out is written with 8-bit colour and alpha; "
                  "refine_files(..., cutout_bits=16) keeps 16 bits, written as PNG")  # (session 41)

    cutout = refine_files(SeeingRefiner(), tmp_path / "f.png", mask, PRESETS["balanced"], output_kind="cutout")
    soft = refine_files(SeeingRefiner(), tmp_path / "f.png", mask, PRESETS["balanced"], output_kind="soft")
    eight = refine_files(SeeingRefiner(), tmp_path / "p8.png", mask, PRESETS["balanced"], output_kind="cutout")

    assert depth_note in cutout.notes and cutout.output.dtype == np.uint8 and cutout.output.shape == (H, W, 4)
    assert not any("cut-out is written" in note for note in soft.notes + eight.notes)


def test_the_cli_choices_are_imageio_s() -> None:
    from crm_cli.cli.options import PhotoBits, photo_bits_value
    from crm_cli.photo_depth import PHOTO_BITS_CHOICES

    assert PHOTO_BITS_CHOICES == BITS
    assert [choice.value for choice in PhotoBits] == ["auto", *map(str, BITS)]
    assert [photo_bits_value(choice) for choice in PhotoBits] == [None, *BITS]


def test_crm_refine_photo_bits(tiny_weights: Path, tmp_path: Path) -> None:
    values = write_frame(tmp_path / "f2.png", hot_value=4400)
    mask = write_mask(tmp_path / "m.png")
    base = ["refine", str(tmp_path / "f2.png"), str(mask), "-w", str(tiny_weights), "-d", "cpu", "-k", "cutout"]

    # A TIFF cut-out is 8-bit (session 41: a PNG one keeps the file's 16 bits): the scale shapes its pixels.
    result = runner.invoke(app, [*base, "-o", str(tmp_path / "fixed.tif"), "--photo-bits", "12"])
    assert result.exit_code == 0, result.output
    cut = np.asarray(Image.open(tmp_path / "fixed.tif"))
    assert np.array_equal(cut[..., :3], on_scale(values, 12))
    stderr = flat(result.stderr)
    assert "1 pixel holds a value above 4095" in stderr
    assert "a 16-bit photo, but its cut-out is written with 8-bit colour and alpha" in stderr

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "auto.tif")])
    assert result.exit_code == 0, result.output
    assert "read as 14-bit values (16383 = white); the scale follows each file's values" in flat(result.stderr)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "auto.tif"))[..., :3], on_scale(values, 14))

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "bad.png"), "--photo-bits", "11"])
    assert result.exit_code == 2 and "--photo-bits" in result.stderr


def test_crm_batch_photo_bits_reads_the_sequence_on_one_scale_and_records_it(tiny_weights: Path,
                                                                          tmp_path: Path) -> None:
    data, out = tmp_path / "shot", tmp_path / "out"
    frames = {name: write_frame(data / "images" / f"{name}.png", hot_value=4400 if name == "f2" else None)
              for name in ("f1", "f2", "f3")}
    for name in frames:
        write_mask(data / "masks" / f"{name}.png")
    names = [f"{name}.png" for name in frames]
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "-k", "cutout"]

    result = runner.invoke(app, [*args, "--photo-bits", "12"])
    assert result.exit_code == 0, result.output
    for name, values in frames.items():
        # The cut-out carries each file's own 16-bit values (session 41); the model saw them on the 12-bit scale.
        cut = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert cut.dtype == np.uint16 and np.array_equal(cut[..., 2::-1], values), name
        assert record_of(out / f"{name}.png")["photo_bits"] == 12
    assert flat(result.stderr).count("clipped to white") == 1

    stamps = stamps_of(out, names)
    result = runner.invoke(app, [*args, "--photo-bits", "12"])  # the same settings: all skipped
    assert result.exit_code == 0 and stamps_of(out, names) == stamps, result.output

    result = runner.invoke(app, args)  # each file's own scale: other settings, refined again
    assert result.exit_code == 0, result.output
    assert "3 outputs were made with other settings" in flat(result.stderr)
    assert all("photo_bits" not in record_of(out / name) for name in names)
    assert "f2.png: a 16-bit image whose largest value is 4400, read as 14-bit values" in flat(result.stderr)
