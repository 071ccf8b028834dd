"""A colour mask's colours are counted only where the photo warning is asked for (masks.photo_note),
not on every read (training reads thousands); crm batch still warns of a photo given as a mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import flat, synthetic_scene, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.imageio import read_mask
from crm_cli.masks import photo_note

runner = CliRunner()
SWAPPED = "not a mask: are the image and mask swapped?"


def distinct_colours(rgb: np.ndarray) -> int:
    """How many distinct colours an (H, W, 3) uint8 array holds."""
    return int(np.unique(rgb.reshape(-1, 3), axis=0).shape[0])


def test_colours_are_counted_once_and_only_when_the_note_is_asked(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    photo, _ = synthetic_scene(96, 128)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    calls: list[tuple[int, ...]] = []
    unique = np.unique

    def counting_unique(values: np.ndarray, *args: object, **kwargs: object) -> object:
        calls.append(np.shape(values))
        return unique(values, *args, **kwargs)

    monkeypatch.setattr(np, "unique", counting_unique)

    mask = read_mask(tmp_path / "photo.png")

    assert mask.kind == "rgb" and mask.colours is not None
    # Read: only the colour-coded label map check's count of an even sample of at most 65,536 pixels
    # (mask_decoding._colour_classes; all of a mask this small), which turns a photo away.
    assert calls == [(96, 128)]
    note = photo_note(mask, "photo.png")
    assert calls == [(96, 128)] * 2  # every pixel of a mask this small, packed into one value each
    assert photo_note(mask, "photo.png") == note and calls == [(96, 128)] * 2  # counted once
    monkeypatch.undo()
    assert note == f"photo.png: looks like a photo (colour, {distinct_colours(photo)} distinct colours), {SWAPPED}"


def test_batch_warns_of_a_photo_given_as_a_mask(tiny_weights: Path, tmp_path: Path) -> None:
    photo, _ = write_scene_files(tmp_path / "data", "x_im", "x_seg")
    as_mask = tmp_path / "data" / "x_seg.png"
    Image.open(photo).save(as_mask)  # the photo saved where its mask belongs
    colours = distinct_colours(np.asarray(Image.open(as_mask).convert("RGB")))

    result = runner.invoke(app, ["batch", str(tmp_path / "data"), "-o", str(tmp_path / "out"),
                                 "-w", str(tiny_weights), "-d", "cpu"])

    assert result.exit_code == 0, result.output
    assert (f"warning: {as_mask}: looks like a photo (colour, {colours} distinct colours), {SWAPPED}"
            in flat(result.stderr))
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["x_mask.png"]  # still refined
