"""--photo-bits beyond refine and batch's refined pairs (audit s38): crm eval reads its photos on the fixed
scale too (evaluation.folder_samples), and a pair too small to refine, passed through, renders its cut-out
from the photo read on that scale, says that the cut-out is 8-bit, and records the scale in batch."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from batch_records import record_of
from conftest import flat
from PIL import Image
from test_photo_bits_s38 import on_scale, write_frame, write_mask
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.evaluation import folder_samples
from crm_cli.pairing import FilePair

runner = CliRunner()


def big_pair(folder: Path) -> tuple[FilePair, np.ndarray]:
    values = write_frame(folder / "p_im.png", hot_value=4400)
    write_mask(folder / "p_seg.png")
    write_mask(folder / "p_gt.png")
    return FilePair("p", folder / "p_im.png", folder / "p_seg.png", Path("p.png"), folder / "p_gt.png"), values


def test_folder_samples_read_the_photo_on_the_fixed_scale(tmp_path: Path) -> None:
    pair, values = big_pair(tmp_path)

    (sample,) = folder_samples([pair], photo_bits=12)

    assert np.array_equal(sample.image, on_scale(values, 12))
    assert "clipped to white" in sample.notes[0]


def test_crm_eval_photo_bits(tiny_weights: Path, tmp_path: Path) -> None:
    big_pair(tmp_path / "big")
    args = ["eval", str(tmp_path / "big"), "-w", str(tiny_weights), "-d", "cpu", "--json"]

    fixed = runner.invoke(app, [*args, "--photo-bits", "12"])
    auto = runner.invoke(app, args)

    assert fixed.exit_code == 0 and auto.exit_code == 0, fixed.output + auto.output
    assert "holds a value above 4095" in flat(fixed.stderr) and "read as 14-bit" not in flat(fixed.stderr)
    assert "read as 14-bit values" in flat(auto.stderr)
    assert json.loads(fixed.stdout)["n"] == 1


def small_pair(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """A 16-bit photo under 96 px a side (passed through unrefined), with a hot pixel, and its mask, as
    images/s.png and masks/s.png under ``folder``."""
    values = write_frame(folder / "full.png", hot_value=4400)[:64, :80]
    mask = np.asarray(Image.open(write_mask(folder / "full_mask.png")))[:64, :80]
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    cv2.imwrite(str(folder / "images" / "s.png"), values[..., ::-1])
    Image.fromarray(mask).save(folder / "masks" / "s.png")
    (folder / "full.png").unlink()
    (folder / "full_mask.png").unlink()
    return folder / "images" / "s.png", folder / "masks" / "s.png", values


def test_a_pair_passed_through_renders_its_cutout_on_the_fixed_scale(tiny_weights: Path, tmp_path: Path) -> None:
    photo, mask, values = small_pair(tmp_path / "shot")

    # As TIFF the cut-out is 8-bit, on the scale asked for (as PNG it keeps the file's 16 bits: session 41).
    result = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "cut.tif"), "-k", "cutout",
                                 "--photo-bits", "12", "-w", str(tiny_weights), "-d", "cpu"])

    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "cut.tif"))[..., :3], on_scale(values, 12))
    assert "a 16-bit photo, but its cut-out is written with 8-bit colour" in flat(result.stderr)

    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(tmp_path / "shot"), "-o", str(out), "-k", "cutout",
                                 "--photo-bits", "12", "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert record_of(out / "s.png")["photo_bits"] == 12 and record_of(out / "s.png")["passthrough"] is True
    passed = cv2.imread(str(out / "s.png"), cv2.IMREAD_UNCHANGED)
    assert passed.dtype == np.uint16 and np.array_equal(passed[..., 2::-1], values)
