"""A photo's colour profile travels to the outputs that carry its pixels (session 33).

A Display P3 or Adobe RGB photo cut out with ``-k cutout`` lost its ICC profile, so a photo editor
showed the cut-out in other colours than the photo."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import coarse_of, synthetic_scene
from PIL import Image, ImageCms
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import read_image_noted, read_photo
from crm_cli.pipeline import read_photo_pair

runner = CliRunner()


def _profile(space: bytes = b"RGB ") -> bytes:
    """An ICC profile (Pillow's sRGB) whose header names the colour space ``space``."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    data[16:20] = space
    return bytes(data)


def _scene(folder: Path, profile: bytes | None, fmt: str = "JPEG",
           size: tuple[int, int] = (120, 160)) -> tuple[Path, Path]:
    image, gt = synthetic_scene(*size, seed=3)
    photo = folder / f"photo.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
    extra = {"icc_profile": profile} if profile is not None else {}
    Image.fromarray(image).save(photo, format=fmt, **extra)
    mask = folder / "photo_mask.png"
    Image.fromarray(coarse_of(gt)).save(mask)
    return photo, mask


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF"])
def test_read_photo_keeps_an_rgb_profile(tmp_path: Path, fmt: str) -> None:
    profile = _profile()
    photo, mask = _scene(tmp_path, profile, fmt)
    read = read_photo(photo)
    assert read.rgb_profile == profile
    # The pixels and notes are read_image_noted's, as before.
    pixels, orientation, notes = read_image_noted(photo)
    assert np.array_equal(read.pixels, pixels) and (read.orientation, read.notes) == (orientation, notes)
    assert read_photo_pair(photo, mask)[0].rgb_profile == profile


def test_a_profile_of_other_colours_or_none_is_not_kept(tmp_path: Path) -> None:
    """A CMYK or grey file is read as RGB pixels its profile does not describe."""
    (tmp_path / "cmyk").mkdir()
    (tmp_path / "none").mkdir()
    assert read_photo(_scene(tmp_path / "cmyk", _profile(b"CMYK"))[0]).rgb_profile is None
    assert read_photo(_scene(tmp_path / "none", None)[0]).rgb_profile is None


def _png_profile(data: bytes) -> bytes | None:
    with Image.open(io.BytesIO(data)) as image:
        return image.info.get("icc_profile")


@pytest.mark.parametrize("kind", ["cutout", "overlay"])
def test_refine_writes_the_photos_profile_into_a_cutout_or_overlay(tmp_path: Path, tiny_weights: Path,
                                                                   kind: str) -> None:
    profile = _profile()
    photo, mask = _scene(tmp_path, profile)
    out = tmp_path / f"{kind}.png"
    result = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(out), "-k", kind, "-d", "cpu",
                                 "-w", str(tiny_weights)])
    assert result.exit_code == 0, result.output
    assert _png_profile(out.read_bytes()) == profile
    to_stdout = runner.invoke(app, ["refine", str(photo), str(mask), "-o", "-", "-k", kind, "-d", "cpu",
                                    "-w", str(tiny_weights)])
    assert to_stdout.exit_code == 0, to_stdout.output
    assert _png_profile(to_stdout.stdout_bytes) == profile
    tiff = tmp_path / f"{kind}.tif"
    assert runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tiff), "-k", kind, "-d", "cpu",
                               "-w", str(tiny_weights)]).exit_code == 0
    with Image.open(tiff) as image:
        assert image.info.get("icc_profile") == profile


def test_a_mask_output_carries_no_profile(tmp_path: Path, tiny_weights: Path) -> None:
    """A soft or binary mask holds no colours for a profile to describe."""
    photo, mask = _scene(tmp_path, _profile())
    for kind in ("soft", "binary"):
        out = tmp_path / f"{kind}.png"
        result = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(out), "-k", kind, "-d", "cpu",
                                     "-w", str(tiny_weights)])
        assert result.exit_code == 0, result.output
        assert _png_profile(out.read_bytes()) is None


def test_batch_cutouts_carry_each_photos_profile(tmp_path: Path, tiny_weights: Path) -> None:
    profile = _profile()
    folder = tmp_path / "shots"
    (folder / "p3").mkdir(parents=True)
    (folder / "plain").mkdir()
    _scene(folder / "p3", profile)
    _scene(folder / "plain", None)
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(folder), "-o", str(out), "-k", "cutout", "-d", "cpu",
                                 "-w", str(tiny_weights), "--json"])
    assert result.exit_code == 0, result.output
    assert [item["status"] for item in json.loads(result.stdout)["items"]] == ["ok", "ok"]
    assert _png_profile((out / "p3" / "photo.png").read_bytes()) == profile
    assert _png_profile((out / "plain" / "photo.png").read_bytes()) is None
