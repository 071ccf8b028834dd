"""Session 53's audits: what a dataset builder, a photo editor, an imaging pipeline and a library
user met, each reproduced here before it was mended."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_folder_holding_inputs_never_takes_an_input_for_an_output(tmp_path: Path, overwrite: bool) -> None:
    """With -o a sub-folder of masks/ that holds masks, pair a's output path was the coarse mask of
    the pair sub/a (left out for lying in the output folder): it counted as done (exit 0), and under
    --overwrite the refined mask replaced that input."""
    root = tmp_path / "D"
    write_scene_files(root / "images", "a", "unused", seed=1)
    write_scene_files(root / "images" / "sub", "a", "unused", seed=2)
    write_scene_files(root / "masks", "unused_im", "a", seed=1)
    _, inside_mask = write_scene_files(root / "masks" / "sub", "unused_im", "a", seed=2)
    for stray in root.rglob("unused*"):
        stray.unlink()
    before = digest(inside_mask)
    result = runner.invoke(app, ["batch", str(root), "-o", str(inside_mask.parent), "-d", "cpu", "--json",
                                 *(["--overwrite"] if overwrite else [])])
    assert result.exit_code == 1, result.output
    assert digest(inside_mask) == before
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert items["a"]["status"] == "failed" and items["a"]["output"] == str(inside_mask)
    assert items["a"]["error"].startswith(f"{inside_mask} is an input (the output folder {inside_mask.parent} holds")
    # The photo whose mask lies in the output folder fails on its own, saying so.
    assert items["sub/a"]["status"] == "failed" and "lies in the output folder" in items["sub/a"]["error"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_photo_in_the_output_folder_is_no_finished_output(tmp_path: Path, overwrite: bool) -> None:
    """The same with -o a sub-folder of images/ holding a PNG photo: the photo of the pair sub/a,
    left out, was taken for pair a's finished output, or replaced by it under --overwrite."""
    import shutil

    root = tmp_path / "D"
    for sub, seed in (("", 1), ("sub", 2)):
        photo, mask = write_scene_files(root / "tmp", "photo", "mask", seed=seed)
        (root / "images" / sub).mkdir(parents=True, exist_ok=True)
        (root / "masks" / sub).mkdir(parents=True, exist_ok=True)
        shutil.move(mask, root / "masks" / sub / "a.png")
        if sub:  # a PNG photo, so that pair a's output path is this file
            import cv2
            cv2.imwrite(str(root / "images" / sub / "a.png"), cv2.imread(str(photo)))
            photo.unlink()
        else:
            shutil.move(photo, root / "images" / "a.jpg")
    (root / "tmp").rmdir()
    inside_photo = root / "images" / "sub" / "a.png"
    before = digest(inside_photo)
    result = runner.invoke(app, ["batch", str(root), "-o", str(inside_photo.parent), "-d", "cpu", "--json",
                                 *(["--overwrite"] if overwrite else [])])
    assert result.exit_code == 1, result.output
    assert digest(inside_photo) == before
    (item,) = json.loads(result.stdout)["items"]
    assert item["status"] == "failed" and item["error"].startswith(f"{inside_photo} is an input")
    assert "1 input pair left out: inside the output folder" in result.stderr
