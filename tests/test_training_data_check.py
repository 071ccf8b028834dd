"""`crm train` checks every pair before the run: a pair it cannot read used to stop the run when
first drawn, which on real data is hours in (a JPEG mask of class ids, a garbage file, a mask of
another shape). Now the run does not start, and every bad pair is named at once."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import synthetic_scene
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.training.data import list_pairs, pair_problems, unusable_pairs_error


def write_pair(root: Path, name: str, height: int = 48, width: int = 64, seed: int = 0) -> None:
    image, mask = synthetic_scene(height, width, seed=seed)
    cv2.imwrite(str(root / "images" / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)


def jpeg_of_class_ids(path: Path) -> None:
    """A 0/1 mask saved as JPEG: its edges decode as 0, 1 and 2 (checked below)."""
    ids = np.zeros((48, 64), np.uint8)
    cv2.circle(ids, (30, 22), 15, 1, -1)
    cv2.imwrite(str(path), ids, [cv2.IMWRITE_JPEG_QUALITY, 75])
    assert set(np.unique(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)).tolist()) > {0, 1}


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """Six good pairs and three bad ones: a photo that is no image, a mask of another shape, and a
    JPEG mask of class ids."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(6):
        write_pair(root, f"good{k}", seed=k)
    write_pair(root, "garbage")
    (root / "images" / "garbage.jpg").write_bytes(b"not a JPEG at all")
    write_pair(root, "shape")
    cv2.imwrite(str(root / "masks" / "shape.png"), np.zeros((48, 48), np.uint8))  # 48x48 for a 64x48 photo
    write_pair(root, "ids")
    (root / "masks" / "ids.png").unlink()
    jpeg_of_class_ids(root / "masks" / "ids.jpg")
    return root


def test_every_bad_pair_is_found_and_named(data: Path) -> None:
    pairs = list_pairs(data)
    assert len(pairs) == 9
    problems = pair_problems(pairs)
    assert len(problems) == 3
    garbage, ids, shape = problems  # in the pairs' sorted order
    assert garbage.startswith(str(data / "images" / "garbage.jpg")) and "not a recognised image" in garbage
    assert str(data / "masks" / "ids.jpg") in ids and "save the mask as PNG" in ids
    assert str(data / "masks" / "shape.png") in shape and "48x48" in shape and "64x48" in shape
    assert pair_problems([p for p in pairs if p.name.startswith("good")]) == []


def test_a_network_mask_that_cannot_fit_its_photo_is_found(data: Path, tmp_path: Path) -> None:
    network = tmp_path / "network"
    network.mkdir()
    cv2.imwrite(str(network / "good1.png"), np.zeros((32, 32), np.uint8))  # square, for a 64x48 photo
    cv2.imwrite(str(network / "good2.png"), np.zeros((24, 32), np.uint8))  # a smaller copy: fine
    good = [p for p in list_pairs(data) if p.name.startswith("good")]
    problems = pair_problems(good, [network])
    assert len(problems) == 1 and str(network / "good1.png") in problems[0]


def test_the_error_counts_them_and_lists_the_first_ones() -> None:
    message = str(unusable_pairs_error([f"f{k}: bad" for k in range(13)], 100, "under D", shown=10))
    lines = message.splitlines()
    assert lines[0] == "13 of 100 pairs under D cannot be read; fix or remove them:"
    assert lines[1:11] == [f"  f{k}: bad" for k in range(10)]
    assert lines[11:] == ["  ... and 3 more"]


def test_crm_train_names_every_bad_pair_and_does_not_start(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Sorted, "garbage" is pair 0, held out for validation; --val-images 1 validates on it.
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(out), "--steps", "2",
                                      "--batch", "2", "--init", "random", "--query-window", "32",
                                      "--val-images", "1"])
    assert result.exit_code == 1, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "error: 3 of 9 pairs that the run reads cannot be read; fix or remove them:"
    for name in ("garbage.jpg", "ids.jpg", "shape.png"):
        assert any(name in line for line in lines[1:4]), name
    assert not out.exists()  # nothing was written: the run never started


def test_validation_pairs_given_apart_are_checked_too(data: Path, tmp_path: Path) -> None:
    from crm_cli.training.loop import Trainer
    from crm_cli.training.options import TrainOptions

    good = tmp_path / "good"
    (good / "images").mkdir(parents=True)
    (good / "masks").mkdir()
    for k in range(4):
        write_pair(good, f"g{k}", seed=k)
    options = TrainOptions(data=str(good), out=str(tmp_path / "run"), steps=1, batch=2, init="random",
                           val_images=9)
    # The 4 training pairs (none is held out with --val) and the 9 given.
    with pytest.raises(ValueError, match=r"^3 of 13 pairs that the run reads cannot be read"):
        Trainer(options, val_pairs=list_pairs(data))


def test_a_held_out_pair_the_run_never_reads_is_not_checked(tmp_path: Path) -> None:
    from crm_cli.training.loop import Trainer
    from crm_cli.training.options import TrainOptions

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k in range(21):
        write_pair(root, f"p{k:02d}", seed=k)
    (root / "images" / "p20.jpg").write_bytes(b"junk")  # held out (every 20th), beyond --val-images 1
    options = TrainOptions(data=str(root), out=str(tmp_path / "run"), steps=1, batch=2, init="random",
                           val_images=1, query_window=32)
    assert [p.name for p in Trainer(options).val_pairs] == ["p00"]
    (root / "images" / "p00.jpg").write_bytes(b"junk")  # the one it validates on
    with pytest.raises(ValueError, match=r"^1 of 20 pairs that the run reads cannot be read"):
        Trainer(options)


def test_values_that_training_would_refuse_are_found(tmp_path: Path) -> None:
    """A signed photo (a CT slice) and a float mask outside [0, 1] pass every header check; the
    run used to stop when it first drew them."""
    from PIL import Image

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    write_pair(root, "ct")
    signed = (np.arange(48 * 64, dtype=np.int32).reshape(48, 64) - 1000).astype(np.int16)
    (root / "images" / "ct.jpg").unlink()
    cv2.imwrite(str(root / "images" / "ct.tif"), signed)
    write_pair(root, "float")
    (root / "masks" / "float.png").unlink()
    Image.fromarray(np.full((48, 64), 255.0, np.float32)).save(root / "masks" / "float.tif")

    problems = pair_problems(list_pairs(root))

    assert len(problems) == 2
    assert "ct.tif" in problems[0] and "-1000" in problems[0]
    assert "float.tif" in problems[1] and "floating-point" in problems[1]


def test_a_mask_drawn_on_an_exif_photo_s_stored_pixels_is_found(tmp_path: Path) -> None:
    """crm refine rotates such a mask like the photo; training fits masks to the upright photo
    only, so the pair would stop the run."""
    from PIL import Image

    from crm_cli.training.data import load_pair

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    write_pair(root, "turned")  # a 64x48 photo and mask
    photo = Image.open(root / "images" / "turned.jpg")
    exif = photo.getexif()
    exif[0x0112] = 6  # shown turned a quarter: upright it is 48x64
    photo.save(root / "images" / "turned.jpg", exif=exif)
    pairs = list_pairs(root)

    problems = pair_problems(pairs)

    assert len(problems) == 1 and "turned.png" in problems[0]
    with pytest.raises(ValueError):
        load_pair(pairs[0])
