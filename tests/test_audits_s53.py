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


def _blocks_until_released(lock: object, call: object) -> bool:
    """Whether ``call()`` in another thread waits while ``lock`` is held here, and ends once it is not."""
    import threading

    done = threading.Event()
    worker = threading.Thread(target=lambda: (call(), done.set()))
    with lock:  # type: ignore[attr-defined]
        worker.start()
        waited = not done.wait(1.0)
    worker.join(60)
    return waited and done.is_set()


def test_a_shallow_copy_and_the_partner_take_the_refiners_turns() -> None:
    """copy.copy(refiner) shared the runner but made a lock of its own, and the partner (whose runner
    the Refiner runs under its own lock) had its own too: two threads got each other's latents, a
    silently wrong mask (4.7% of a 1024x768 photo on the wrong side). Now both wait for the
    Refiner's turn; a deep copy has runners, and a lock, of its own."""
    import copy

    import numpy as np
    from conftest import make_tiny_model, synthetic_scene

    from crm_cli import Refiner

    refiner = Refiner.from_model(make_tiny_model(0), device="cpu", partner_model=make_tiny_model(1))
    image, gt = synthetic_scene(64, 80)
    shallow, deep = copy.copy(refiner), copy.deepcopy(refiner)
    assert shallow.runner is refiner.runner and deep.runner is not refiner.runner
    assert deep.partner is not None and deep.partner._lock is deep._lock and deep._lock is not refiner._lock
    expected = refiner.refine(image, gt)  # also warms up, so that a call that need not wait ends at once
    for call in (lambda: shallow.refine(image, gt), lambda: refiner.partner.refine(image, gt)):
        assert _blocks_until_released(refiner._lock, call)
    np.testing.assert_array_equal(shallow.refine(image, gt), expected)


def test_empty_names_are_errors_not_defaults() -> None:
    """Refiner('') loaded the shipped weights and device='' ran as auto (the CLI's --weights '' was an
    error: the two disagreed)."""
    from crm_cli import DeviceError, Refiner

    with pytest.raises(ValueError, match="model is an empty path"):
        Refiner("", device="cpu")
    for name in ("", "   "):
        with pytest.raises(DeviceError, match="the device name is empty"):
            Refiner(device=name)
    result = runner.invoke(app, ["refine", "a.jpg", "a.png", "-o", "x.png", "--device", ""])
    assert result.exit_code == 2 and "the device name is empty" in result.stderr


@pytest.mark.parametrize("reader", ["read_image", "read_mask", "probe_image"])
def test_a_reader_given_no_path_says_what_it_takes(reader: str) -> None:
    """An array, a PIL image or a file object given to the readers met os.stat first: a TypeError in
    its words, or for an all-zero array a ValueError about an embedded null character."""
    import io

    import numpy as np
    from PIL import Image

    from crm_cli import imageio

    for source in (np.zeros((2, 2), np.uint8), io.BytesIO(b"x"), Image.new("L", (2, 2))):
        with pytest.raises(TypeError, match="an image source must be a path .* or the file's encoded bytes, not "):
            getattr(imageio, reader)(source)


def test_a_photo_stamped_in_the_future_does_not_redo_its_output_on_every_run(tiny_weights: Path,
                                                                             tmp_path: Path) -> None:
    """Files copied from a camera card with their stamps (local time on FAT) or from a camera with a
    wrong clock lie in the future: every output was older than its photo, so every rerun refined the
    pair again and said "output older than its photo or mask". A photo replaced in the past still is."""
    import os
    import time

    data, out = tmp_path / "in", tmp_path / "out"
    photo, _ = write_scene_files(data, "a_im", "a_seg")
    future = time.time_ns() + 3 * 3600 * 10**9
    os.utime(photo, ns=(future, future))
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (json.loads(again.stdout)["done"], json.loads(again.stdout)["skipped"]) == (0, 1)
    assert "older than" not in again.stderr
    written = (out / "a_mask.png").stat().st_mtime_ns
    # The photo replaced after the output was written, and neither in the future.
    os.utime(photo, ns=(written - 5 * 10**8, written - 5 * 10**8))
    os.utime(out / "a_mask.png", ns=(written - 10**9, written - 10**9))
    stale = runner.invoke(app, args)
    assert json.loads(stale.stdout)["done"] == 1 and "1 output older than its photo or mask" in stale.stderr


def test_the_progress_bar_shows_a_name_with_a_line_break_escaped(tiny_weights: Path, tmp_path: Path) -> None:
    from crm_cli.cli.output import printable

    data, out = tmp_path / "in", tmp_path / "out"
    write_scene_files(data, "new\nline_im", "new\nline_seg")
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert printable("new\nline") == "new\\nline" and "new\\nline" in result.stderr
    assert not any(line.rstrip().endswith("new") for line in result.stderr.splitlines())


def test_a_frame_read_on_the_16_bit_scale_for_a_few_hot_pixels_is_warned_of(tmp_path: Path) -> None:
    """One hot pixel (65535) in a 12-bit X-ray frame put it on the 16-bit scale, 16 times darker, with
    no warning, while the same frame without it was read as 12-bit values with a note: the model kept
    the coarse mask of that one frame in silence. The reading is kept (a dark photo with lamps is read
    as it is); the note names the smaller scale and --photo-bits."""
    import cv2
    import numpy as np

    from crm_cli.imageio import read_image_noted

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 4096, (40, 50, 3)).astype(np.uint16)
    frame[3, 4, 1] = 65535
    cv2.imwrite(str(tmp_path / "hot.png"), frame)
    image, _, notes = read_image_noted(tmp_path / "hot.png")
    np.testing.assert_array_equal(image, ((frame[..., ::-1].astype(np.uint32) + 128) // 257).astype(np.uint8))
    (note,) = notes
    assert note.startswith(f"{tmp_path / 'hot.png'}: a 16-bit image read on the 16-bit scale for 1 pixel above 4095 "
                           "(0.05% of them); the rest hold 12-bit values and read almost black (at most 16 of 255)")
    assert note.endswith("photo_bits=N fixes it")
    # 2 hot pixels of 2000 (0.1%) still are; 3 are too many, and a full-scale photo is read without a note.
    frame[5, 6] = 65535
    cv2.imwrite(str(tmp_path / "two.png"), frame)
    assert "for 2 pixels above 4095" in read_image_noted(tmp_path / "two.png")[2][0]
    frame[7, 8] = 65535
    cv2.imwrite(str(tmp_path / "three.png"), frame)
    assert read_image_noted(tmp_path / "three.png")[2] == []
    cv2.imwrite(str(tmp_path / "full.png"), rng.integers(0, 65536, (40, 50, 3)).astype(np.uint16))
    assert read_image_noted(tmp_path / "full.png")[2] == []


def test_a_16_bit_mask_of_0_and_255_is_read_as_binary_without_a_warning(tmp_path: Path) -> None:
    """README: a mask of 0 and one value is binary, with no warning; a 16-bit 0/255 mask was read
    right but warned of as "read as 8-bit values" on every file."""
    import cv2
    import numpy as np

    from crm_cli.imageio import read_mask
    from crm_cli.masks import scale_note

    values = np.zeros((20, 30), np.uint16)
    values[5:15, 8:20] = 255
    cv2.imwrite(str(tmp_path / "m16.png"), values)
    mask = read_mask(tmp_path / "m16.png")
    assert mask.kind == "gray16" and scale_note(mask, "m16.png") is None
    np.testing.assert_array_equal(mask.probability(), (values == 255).astype(np.float32))
    values[0, 0] = 128  # a soft 8-bit mask in a 16-bit file is still warned of
    cv2.imwrite(str(tmp_path / "soft16.png"), values)
    assert scale_note(read_mask(tmp_path / "soft16.png"), "soft16.png") == (
        "soft16.png: a 16-bit mask whose largest value is 255, read as 8-bit values (255 = foreground)")


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_an_instance_map_of_more_than_32_ids_is_warned_of(dtype: str) -> None:
    """A cellpose-style map of 132 instance ids was read as a soft mask without a word: every object
    under half the scale vanished (100 of 128 in the audit), exit 0. An unsure network's sigmoid
    output enlarged by nearest neighbour (many flat levels stepping one into the next) is not warned of."""
    import cv2
    import numpy as np

    from crm_cli.masks import MaskData, ids_note

    ids = np.zeros((384, 512), np.dtype(dtype))
    count = 0
    for y in range(20, 364, 32):
        for x in range(20, 492, 40):
            count += 1
            cv2.circle(ids, (x, y), 11, count, -1)
    assert count == 132
    mask = MaskData(ids, "gray16" if dtype == "uint16" else "gray8")
    assert not mask.is_label_map() and mask.looks_like_ids()
    assert ids_note(mask, "cells.png").startswith("cells.png: its values 1, 2, 3, 4, 5, 6, 7, 8, ... fill flat regions")
    rng = np.random.default_rng(0)
    field = cv2.GaussianBlur(rng.normal(0, 1, (32, 32)).astype(np.float32), (0, 0), 5)
    sigmoid = np.round(255 / (1 + np.exp(-3 * field / field.std()))).astype(np.uint8)
    enlarged = cv2.resize(sigmoid, (512, 512), interpolation=cv2.INTER_NEAREST)
    soft = MaskData(enlarged, "gray8")
    assert soft.distinct_values > 32 and not soft.looks_like_ids()


def test_a_pair_that_ran_out_of_memory_hands_back_what_the_refiner_kept(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ulimit -v one large pair's MemoryError failed every smaller pair after it: what its
    refinement left in the runners' keeping (the arena, the latent buffer) stayed mapped. The job now
    calls release_memory() after such a failure (measured: 2048x1536 then three 192x144 pairs at
    1.2 and 1.3 GB, 0 of 3 refined before, 3 of 3 after); any other failure leaves it alone."""
    import crm_cli.pipeline
    from crm_cli.cli.batch import refine_pair_job
    from crm_cli.presets import get_preset

    class Refiner:
        released = 0

        def release_memory(self) -> bool:
            self.released += 1
            return True

    photo, mask = write_scene_files(tmp_path, "a_im", "a_seg")
    job = {"name": "a", "image": str(photo), "mask": str(mask), "output": str(tmp_path / "out" / "a.png"),
           "image_name": str(photo), "mask_name": str(mask)}
    refiner = Refiner()
    for error, released in ((MemoryError("Unable to allocate 3.52 MiB"), 1), (ValueError("bad pair"), 1)):
        def failing(*args: object, error: Exception = error, **kwargs: object) -> None:
            raise error
        monkeypatch.setattr(crm_cli.pipeline, "refine_files", failing)
        outcome = refine_pair_job(refiner, job, settings=get_preset("auto"), mode="auto", labels=None,
                                  output_kind="soft", threshold=None, hold_warnings=True)
        assert outcome["status"] == "failed" and refiner.released == released
    assert not (tmp_path / "out" / "a.png").exists()


def test_a_photo_and_its_mask_of_one_name_beside_pairs_get_the_two_formats_hint(tmp_path: Path) -> None:
    """README: photos and masks of the same names in one folder (a.jpg + a.png) get a hint to put the
    masks in a folder of their own. Beside proper pairs the hint was missing: the photo was dropped
    for the PNG of its name, and the mask failed as a photo without a mask."""
    import shutil

    folder = tmp_path / "in"
    write_scene_files(folder, "a", "a_mask")
    photo, mask = write_scene_files(tmp_path / "tmp", "b", "b")
    shutil.move(photo, folder / "b.jpg")
    shutil.move(mask, folder / "b.png")
    result = runner.invoke(app, ["batch", str(folder), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert (f"warning: 1 name has both a .jpg and a .png file (e.g. {folder / 'b.jpg'} + {folder / 'b.png'}, b.png "
            "reads as a mask and b.jpg as a photo)") in text
    assert "if the .png files are the masks, put them in a folder of their own" in text
    # Two formats of one photo beside its mask pair as before, without the hint.
    shutil.copy(folder / "b.jpg", folder / "c.jpg")
    shutil.copy(folder / "b.jpg", folder / "c.webp")
    shutil.copy(folder / "b.png", folder / "c_mask.png")
    (folder / "b.jpg").unlink()
    (folder / "b.png").unlink()
    again = runner.invoke(app, ["batch", str(folder), "-o", str(tmp_path / "out"), "--dry-run"])
    assert again.exit_code == 0, again.output
    assert "has both a" not in again.stderr


def test_a_size_mismatch_from_the_masks_own_exif_turn_says_so(tmp_path: Path) -> None:
    """An upright mask saved with the photo's EXIF (orientation 6) is turned by its own tag, and the
    size error named sizes the file viewer did not show, without the tag."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 40), (90, 120, 30)).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "p.jpg", exif=exif)
    Image.new("L", (64, 40), 255).save(tmp_path / "m.png", exif=exif)
    result = runner.invoke(app, ["refine", str(tmp_path / "p.jpg"), str(tmp_path / "m.png"), "-o",
                                 str(tmp_path / "o.png"), "-d", "cpu"])
    assert result.exit_code == 1
    assert " ".join(result.stderr.split()) == (
        f"error: mask {tmp_path / 'm.png'} is 40x64 but image {tmp_path / 'p.jpg'} is 64x40; a mask must have the "
        "image's size or be a smaller copy with the same aspect ratio ("
        f"{tmp_path / 'm.png'} carries EXIF orientation 6, which turns its stored 64x40 pixels; if they are upright "
        "already, remove the tag)")


@pytest.mark.parametrize("args", [["batch", "{folder}", "-o", ""], ["eval", "{folder}", "-o", ""],
                                  ["refine", "", "{mask}", "-o", "x.png"], ["refine", "{photo}", "{mask}", "-o", ""],
                                  ["refine", "{photo}", "{mask}", "-o", "x.png", "-w", ""],
                                  ["batch", "{folder}", "-o", "out", "--masks", ""]])
def test_an_empty_path_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    """pathlib reads "" as the working folder: `crm batch in -o "$OUT"` with OUT unset wrote every output
    into the folder the script ran in, exit 0; an empty IMAGE read as "." named a folder."""
    monkeypatch.chdir(tmp_path)
    photo, mask = write_scene_files(tmp_path / "in", "a_im", "a_seg")
    given = [arg.format(folder=tmp_path / "in", photo=photo, mask=mask) for arg in args]
    result = runner.invoke(app, given)
    assert result.exit_code == 2, result.output
    assert "an empty path (a shell variable that is not set?)" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in"]  # nothing written in the working folder


def test_a_label_kept_coarse_is_said(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: under auto, a coarse mask kept for want of confidence is logged ("kept_coarse" counts the
    labels of a label map). For a label map the count was right but nothing was said, nor listed in
    the record's warnings."""
    import numpy as np
    from PIL import Image

    from crm_cli.engine import Refiner

    image, _ = write_scene_files(tmp_path, "p", "unused", size=(128, 160))
    labels = np.zeros((128, 160), np.uint8)
    labels[20:60, 20:80] = 3
    labels[70:120, 90:150] = 7
    Image.fromarray(labels).save(tmp_path / "lab.png")
    original = Refiner.refine_detailed

    def kept_for_label_3(self: Refiner, image: object, mask: object, *args: object, **kwargs: object) -> object:
        detail = original(self, image, mask, *args, **kwargs)
        # Label 3's coarse mask kept, as the gate keeps an unsure change; label 7's refined.
        kept = bool(np.asarray(mask)[30, 30])
        detail.kept_coarse, detail.change_confidence, detail.change_weight = kept, 0.12 if kept else 0.9, 1.0 - kept
        return detail

    monkeypatch.setattr(Refiner, "refine_detailed", kept_for_label_3)
    result = runner.invoke(app, ["refine", str(image), str(tmp_path / "lab.png"), "-o", str(tmp_path / "o.png"),
                                 "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    note = "label 3: the model was unsure of its changes (confidence 0.12): the coarse mask was kept"
    assert record["kept_coarse"] == 1 and record["warnings"] == [note]
    assert f"warning: {note}" in result.stderr


def test_minus_as_a_folder_of_eval_or_train_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """crm eval -o - and crm train --out - made a folder named "-" in silence (exit 0), where crm batch
    and crm coco refuse it: everywhere else - is standard output."""
    monkeypatch.chdir(tmp_path)
    write_scene_files(tmp_path / "big", "a_im", "a_seg")
    (tmp_path / "big" / "a_gt.png").write_bytes((tmp_path / "big" / "a_seg.png").read_bytes())
    result = runner.invoke(app, ["eval", str(tmp_path / "big"), "-o", "-"])
    assert result.exit_code == 2 and "not to standard output; give a folder name" in result.stderr
    from conftest import write_training_pairs

    write_training_pairs(tmp_path / "pairs", 3)
    trained = runner.invoke(app, ["train", "--data", str(tmp_path / "pairs"), "--out", "-", "--steps", "1",
                                  "-d", "cpu"])
    assert trained.exit_code == 2 and "not standard output; give a folder name" in trained.stderr
    assert not (tmp_path / "-").exists()


def test_a_dry_run_checks_the_weights_and_the_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """crm batch --dry-run said exit 0 (2 pairs would be refined) for a run that fails at once: weights
    not found, or CRM_DEVICE=cuda on a machine without a GPU."""
    import torch

    write_scene_files(tmp_path / "in", "a_im", "a_seg")
    args = ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--dry-run", "--json"]
    missing = runner.invoke(app, [*args, "-w", str(tmp_path / "nope.safetensors")])
    assert missing.exit_code == 1 and "weights not found" in missing.stderr
    assert json.loads(missing.stdout)["status"] == "failed"
    # Session 61: the pairs are still listed, as README says of a dry run (the record held no item).
    assert [item["status"] for item in json.loads(missing.stdout)["items"]] == ["todo"]
    assert "a: " in missing.stderr and " -> " in missing.stderr
    if not torch.cuda.is_available():
        monkeypatch.setenv("CRM_DEVICE", "cuda")
        no_gpu = runner.invoke(app, args)
        assert no_gpu.exit_code == 1 and "no CUDA GPU is available" in no_gpu.stderr
        monkeypatch.delenv("CRM_DEVICE")
    fine = runner.invoke(app, args)
    assert fine.exit_code == 0 and json.loads(fine.stdout)["todo"] == 1
    assert not (tmp_path / "out").exists()


def test_time_given_both_inputs_and_a_size_says_so(tmp_path: Path) -> None:
    photo, mask = write_scene_files(tmp_path, "p", "m")
    result = runner.invoke(app, ["time", str(photo), str(mask), "--size", "100x100"])
    assert result.exit_code == 2 and "give IMAGE and MASK, or --size WxH, not both" in result.stderr


def test_a_rerun_into_a_folder_of_left_out_pairs_skips_its_own_outputs(tiny_weights: Path, tmp_path: Path) -> None:
    """Review of the mend above: -o root/sub, where sub holds a photo and its mask (left out), wrote
    sub/a.png for pair a; the rerun took that output for another format of the left-out photo sub/a,
    an input, and failed the pair. crm's own outputs (their settings record) are no inputs."""
    root = tmp_path / "root"
    write_scene_files(root, "a", "a_mask")
    write_scene_files(root / "sub", "a", "a_mask", seed=2)
    args = ["batch", str(root), "-o", str(root / "sub"), "-w", str(tiny_weights), "-d", "cpu", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert [item["status"] for item in json.loads(again.stdout)["items"]] == ["skipped"]


def test_a_dry_run_needs_the_weights_only_where_the_run_loads_them(tmp_path: Path) -> None:
    """Review: with only photos under 96 px to do (written unchanged, no model), the run exits 0 with
    missing weights, so the dry run must too."""
    write_scene_files(tmp_path / "in", "a_im", "a_seg", size=(64, 80))
    args = ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-w", str(tmp_path / "nope.safetensors")]
    assert runner.invoke(app, [*args, "--dry-run"]).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0


def test_an_unreadable_folder_clock_judges_stale_outputs_as_before(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Review: where the output folder's clock could not be read (no file can be made there), every
    newer input was taken for one stamped in the future, and stale outputs counted as done."""
    import os

    import crm_cli.locks
    from crm_cli.cli.batch import older_than_inputs
    from crm_cli.locks import FolderClocks

    output, photo = tmp_path / "out.png", tmp_path / "photo.png"
    output.write_bytes(b"x")
    photo.write_bytes(b"y")
    stamp = output.stat().st_mtime_ns
    os.utime(output, ns=(stamp - 10**9, stamp - 10**9))
    monkeypatch.setattr(crm_cli.locks, "probe_folder_time_ns", lambda folder: None)
    assert older_than_inputs(output, [photo], FolderClocks())


def test_a_confident_sigmoid_of_small_objects_is_no_instance_map() -> None:
    """Review: small objects of a network's sigmoid output on an exact-0 background, enlarged by nearest
    neighbour, lie on background too; each steps through several levels, where an instance is one value."""
    import cv2
    import numpy as np

    from crm_cli.masks import MaskData

    rng = np.random.default_rng(2)
    low = np.full((96, 128), -8.0, np.float32)
    rows, cols = np.mgrid[0:96, 0:128]
    for _ in range(40):
        y, x = rng.integers(2, 94), rng.integers(2, 126)
        distance = np.hypot(rows - y, cols - x)
        low = np.maximum(low, np.where(distance <= 3.5, 4 - 8 * distance / 3.5 + rng.normal(0, 0.3), -8))
    sigmoid = np.round(255 / (1 + np.exp(-low))).astype(np.uint8)
    mask = MaskData(cv2.resize(sigmoid, (1024, 768), interpolation=cv2.INTER_NEAREST), "gray8")
    assert mask.distinct_values > 32 and mask._on_background() >= 0.25 and not mask.looks_like_ids()


@pytest.mark.parametrize("command", ["refine", "eval", "score"])
def test_a_threshold_of_1_is_a_usage_error(tmp_path: Path, command: str) -> None:
    """No probability is above 1: -t 1 wrote (or scored) an empty mask without a word."""
    photo, mask = write_scene_files(tmp_path, "a_im", "a_seg")
    args = {"refine": ["refine", str(photo), str(mask), "-o", str(tmp_path / "o.png")],
            "eval": ["eval", str(tmp_path)], "score": ["score", str(mask), str(mask)]}[command]
    result = runner.invoke(app, [*args, "-t", "1"])
    assert result.exit_code == 2 and "no probability is above 1, so every mask would be empty" in result.stderr
    assert not (tmp_path / "o.png").exists()
    assert "would be empty" not in runner.invoke(app, [*args, "-t", "0.99", "--help"]).stderr
