"""Session 38's leftovers, mended in session 39: batch's record names ``photo_bits`` only for photos whose
pixels it shapes (an 8-bit photo's output is kept by a rerun with another --photo-bits); the pairing hints
name the command running; --photo-bits on crm time, compare and coco; the notes of a fixed scale name
``photo_bits=`` to API callers and ``--photo-bits`` on the command line; and the unsure-change warning
says how much of the refinement was blended in just below the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from batch_records import record_of, stamps_of
from conftest import featureless_photo, flat, make_tiny_model, synthetic_scene, write_scene_files
from PIL import Image
from test_photo_bits_s38 import H, W, write_frame, write_mask
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()
HOT_VALUE = 4400  # a highlight over 4095 in a 12-bit frame (test_photo_bits_s38.HOT)
CLIP_API = "the white of the 12-bit scale asked for (photo_bits=12); clipped to white"
CLIP_CLI = "the white of the 12-bit scale asked for (--photo-bits 12); clipped to white"


def write_8bit_photo(path: Path, seed: int = 1) -> Path:
    """An 8-bit RGB PNG photo of the synthetic scene."""
    image, _ = synthetic_scene(H, W, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


# 1. batch records photo_bits only for a photo whose pixels it shapes.


def test_a_rerun_with_another_photo_bits_keeps_8bit_photos_outputs_and_redoes_16bit_ones(
        tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "shot", tmp_path / "out"
    write_8bit_photo(data / "images" / "p8.png")
    write_frame(data / "images" / "p16.png", hot_value=HOT_VALUE)
    for name in ("p8", "p16"):
        write_mask(data / "masks" / f"{name}.png")
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu"]

    result = runner.invoke(app, [*args, "--photo-bits", "12"])
    assert result.exit_code == 0, result.output
    assert "photo_bits" not in record_of(out / "p8.png")
    assert record_of(out / "p16.png")["photo_bits"] == 12
    assert CLIP_CLI in flat(result.stderr) and "photo_bits=" not in result.stderr

    for bits, recorded in (("10", 10), ("auto", None), ("10", 10)):
        (eight,), (sixteen,) = stamps_of(out, ["p8.png"]), stamps_of(out, ["p16.png"])
        result = runner.invoke(app, [*args, "--photo-bits", bits])
        assert result.exit_code == 0, result.output
        assert "1 output was made with other settings" in flat(result.stderr), bits
        assert stamps_of(out, ["p8.png"]) == [eight], bits  # skipped: the same pixels on any scale
        assert stamps_of(out, ["p16.png"]) != [sixteen], bits
        assert record_of(out / "p16.png").get("photo_bits") == recorded
        assert "photo_bits" not in record_of(out / "p8.png")


def test_the_record_names_photo_bits_only_for_a_photo_it_shapes() -> None:
    from crm_cli.cli.batch import OutputRecord
    from crm_cli.presets import PRESETS

    record = OutputRecord.of(mode="auto", labels=None, output_kind="cutout", threshold=None,
                             settings=PRESETS["auto"], weights="w", photo_bits=12)
    for passthrough in (False, True):
        assert json.loads(record.stamp("binary", "binary", passthrough))["photo_bits"] == 12
        assert "photo_bits" not in json.loads(record.stamp("binary", "binary", passthrough, scaled=False))


def test_records_that_differ_in_the_scale_alone_are_judged_by_the_photo_s_header(tmp_path: Path) -> None:
    from crm_cli.cli.batch import OutputRecord
    from crm_cli.presets import PRESETS

    def record_of_run(photo_bits: int | None, output_kind: str = "soft") -> OutputRecord:
        return OutputRecord.of(mode="auto", labels=None, output_kind=output_kind, threshold=None,
                               settings=PRESETS["auto"], weights="w", photo_bits=photo_bits)

    eight = write_8bit_photo(tmp_path / "p8.png")
    sixteen = tmp_path / "p16.png"
    write_frame(sixteen)
    # Session 38 recorded the scale for every photo; session 39 only for one it shapes.
    old_style = record_of_run(12).stamp("binary", "binary", False)
    new_8bit = record_of_run(12).stamp("binary", "binary", False, scaled=False)
    for run in (record_of_run(12), record_of_run(10), record_of_run(None)):
        for recorded in (old_style, new_8bit):
            same_scale = json.loads(recorded).get("photo_bits") == run.photo_bits
            assert run.accepts(recorded, eight)
            assert run.accepts(recorded, sixteen) is same_scale
            assert run.accepts(recorded) is same_scale
    # Anything else that differs is other settings, whatever the photo.
    assert not record_of_run(10, "binary").accepts(new_8bit, eight)
    assert not record_of_run(10, "binary").accepts(old_style, eight)


def test_file_takes_photo_bits_agrees_with_reading_the_photo(tmp_path: Path) -> None:
    from crm_cli.imageio import file_takes_photo_bits, read_photo

    image, _ = synthetic_scene(40, 50)
    grey = image[..., 0]
    files = {"rgb8.png": (image, None), "rgb8.jpg": (image, None), "grey8.png": (grey, None),
             "rgb16.png": (image.astype(np.uint16) * 16, None), "grey16.png": (grey.astype(np.uint16) * 16, None),
             "grey16.tif": (grey.astype(np.uint16) * 16, None), "float.tif": (grey.astype(np.float32) / 255, "F"),
             "int32.tif": (grey.astype(np.int32) * 16, "I")}
    for name, (values, mode) in files.items():
        if mode is None:
            cv2.imwrite(str(tmp_path / name), values[..., ::-1] if values.ndim == 3 else values)
        else:
            Image.fromarray(values, mode).save(tmp_path / name)
    Image.fromarray(image).convert("P").save(tmp_path / "palette.png")
    expected = {"rgb16.png", "grey16.png", "grey16.tif", "int32.tif"}
    for path in sorted(tmp_path.iterdir()):
        assert read_photo(path).takes_photo_bits is (path.name in expected), path.name
        assert file_takes_photo_bits(path) is (path.name in expected), path.name
    assert file_takes_photo_bits(tmp_path / "missing.png")  # unknown: taken for one it shapes


# 2. The pairing hints name the command running.


def sibling_folders(root: Path) -> Path:
    """``root`` holding frames/ (photos) and alpha/ (their masks) and no known layout."""
    image, gt = synthetic_scene(16, 16)
    for folder, pixels, suffix in (("frames", image, ".jpg"), ("alpha", gt, ".png")):
        (root / folder).mkdir(parents=True)
        Image.fromarray(pixels).save(root / folder / f"a{suffix}")
    return root


def test_crm_eval_s_hint_names_crm_eval_not_a_batch_layout(tmp_path: Path) -> None:
    siblings = sibling_folders(tmp_path / "siblings")
    half = tmp_path / "half"
    write_8bit_photo(half / "images" / "a.png")
    write_mask(half / "mattes" / "a.png")

    result = runner.invoke(app, ["eval", str(siblings)])
    assert result.exit_code == 2
    assert ("the masks in alpha/, but crm eval reads the BIG layout only (<name>_im + <name>_seg + <name>_gt in "
            f"one folder); crm batch {siblings / 'frames'} --masks {siblings / 'alpha'} refines them"
            in flat(result.stderr)), result.stderr
    assert "name the two" not in result.stderr

    result = runner.invoke(app, ["eval", str(half)])
    assert result.exit_code == 2
    assert ("it has images/ but no masks/ folder (beside it: mattes/): crm eval reads the BIG layout only"
            in flat(result.stderr)), result.stderr
    assert "must be named images/" not in flat(result.stderr) and "name the two" not in flat(result.stderr)


def test_crm_train_s_hint_names_no_option_it_lacks(tmp_path: Path) -> None:
    from crm_cli.pairing import NoPairsError
    from crm_cli.training.data import list_pairs

    siblings = sibling_folders(tmp_path / "siblings")
    with pytest.raises(NoPairsError) as error:
        list_pairs(siblings)
    assert str(error.value).endswith("the masks in alpha/: call frames/ images/ and alpha/ masks/ (links will do)")

    half = tmp_path / "half"
    write_8bit_photo(half / "images" / "a.png")
    write_mask(half / "mattes" / "a.png")
    with pytest.raises(NoPairsError) as error:
        list_pairs(half)
    assert str(error.value).endswith(f"(a link will do: ln -s mattes {half / 'masks'})")


def test_crm_batch_s_hints_are_as_before(tmp_path: Path) -> None:
    from crm_cli.pairing import NoPairsError, scan_pairs

    siblings = sibling_folders(tmp_path / "siblings")
    with pytest.raises(NoPairsError) as error:
        scan_pairs(siblings)
    assert str(error.value).endswith(f"the masks in alpha/: name the two: crm batch {siblings / 'frames'} --masks "
                                     f"{siblings / 'alpha'} (or call them images/ and masks/)")


# 3. --photo-bits on crm time, compare and coco.


def test_crm_time_takes_photo_bits(tiny_weights: Path, tmp_path: Path) -> None:
    photo, mask = tmp_path / "f.png", write_mask(tmp_path / "m.png")
    write_frame(photo, hot_value=HOT_VALUE)
    base = ["time", str(photo), str(mask), "-w", str(tiny_weights), "-d", "cpu", "-n", "1", "--json", "-q"]

    result = runner.invoke(app, [*base, "--photo-bits", "12"])
    assert result.exit_code == 0, result.output
    assert CLIP_CLI in flat(result.stderr)
    result = runner.invoke(app, base)
    assert result.exit_code == 0 and "read as 14-bit values" in flat(result.stderr), result.output


def test_crm_compare_takes_photo_bits(tmp_path: Path) -> None:
    photo, mask = tmp_path / "f.png", write_mask(tmp_path / "m.png")
    write_frame(photo, hot_value=HOT_VALUE)
    base = ["compare", str(photo), str(mask), str(mask), "-q"]

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "fixed.png"), "--photo-bits", "12"])
    assert result.exit_code == 0, result.output
    assert CLIP_CLI in flat(result.stderr)
    runner.invoke(app, [*base, "-o", str(tmp_path / "auto.png")])
    # The strip's first panel shows the photo: on the 12-bit scale it is brighter than on the 14-bit scale
    # its highlight gives it on its own (4x darker).
    fixed = np.asarray(Image.open(tmp_path / "fixed.png"))[:H, :W].astype(int)
    auto = np.asarray(Image.open(tmp_path / "auto.png"))[:H, :W].astype(int)
    assert fixed.mean() > 2 * auto.mean()


def test_crm_coco_takes_photo_bits_and_resumes_only_with_the_same_scale(tiny_weights: Path, tmp_path: Path) -> None:
    from crm_cli.coco import RefineOptions

    images = tmp_path / "images"
    write_frame(images / "f.png", hot_value=HOT_VALUE)
    data = {"images": [{"id": 1, "file_name": "f.png", "height": H, "width": W}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 2400.0,
                             "bbox": [30.0, 20.0, 60.0, 40.0],
                             "segmentation": [[30.0, 20.0, 90.0, 20.0, 90.0, 60.0, 30.0, 60.0]]}]}
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps(data))
    result = runner.invoke(app, ["coco", str(annotations), "--images", str(images), "-o", str(tmp_path / "out.json"),
                                 "--photo-bits", "12", "-w", str(tiny_weights), "-d", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert CLIP_CLI in flat(result.stderr)

    assert "photo_bits" not in RefineOptions().fingerprint()  # the partial runs of earlier versions resume
    assert RefineOptions(photo_bits=12).fingerprint()["photo_bits"] == 12


# 4. The notes of a fixed scale name photo_bits= to the API and --photo-bits on the command line.


def test_the_api_s_notes_name_the_keyword(tmp_path: Path) -> None:
    from crm_cli.engine import Refiner
    from crm_cli.imageio import read_image_noted
    from crm_cli.pipeline import refine_files
    from crm_cli.presets import PRESETS

    hot, plain = tmp_path / "hot.png", tmp_path / "plain.png"
    write_frame(hot, hot_value=HOT_VALUE)
    write_frame(plain)
    (clipped,) = read_image_noted(hot, photo_bits=12)[2]
    assert clipped.endswith(CLIP_API) and "--photo-bits" not in clipped
    (own_scale,) = read_image_noted(plain)[2]
    assert own_scale.endswith("so frames of one sequence can differ: photo_bits=N fixes it")

    refiner = Refiner.from_model(make_tiny_model(), device="cpu")
    result = refine_files(refiner, hot, write_mask(tmp_path / "m.png"), PRESETS["auto"], photo_bits=12)
    assert result.notes[0].endswith(CLIP_API)


def test_cli_note_names_the_option_and_leaves_other_notes_alone(tmp_path: Path) -> None:
    from crm_cli.imageio import read_image_noted
    from crm_cli.photo_depth import cli_note

    hot, plain = tmp_path / "hot.png", tmp_path / "plain.png"
    write_frame(hot, hot_value=HOT_VALUE)
    write_frame(plain)
    for bits in (8, 10, 12):  # the highlight, 4400, lies above each white
        (note,) = read_image_noted(hot, photo_bits=bits)[2]
        assert cli_note(note) == note.replace(f"(photo_bits={bits})", f"(--photo-bits {bits})")
    (note,) = read_image_noted(plain)[2]
    assert cli_note(note).endswith("frames of one sequence can differ: --photo-bits N fixes it")
    # Only the ending the readers write is replaced.
    named = f"{tmp_path / 'photo_bits=12.gif'}: holds 2 frames; the first is used"
    assert cli_note(named) == named


def test_crm_refine_names_the_option(tiny_weights: Path, tmp_path: Path) -> None:
    photo, mask = tmp_path / "hot.png", write_mask(tmp_path / "m.png")
    write_frame(photo, hot_value=HOT_VALUE)
    result = runner.invoke(app, ["refine", str(photo), str(mask), "-o", str(tmp_path / "out.png"), "--photo-bits",
                                 "12", "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert CLIP_CLI in flat(result.stderr) and "photo_bits=" not in result.stderr
    assert any(warning.endswith(CLIP_CLI) for warning in json.loads(result.stdout)["warnings"])


# 5. Just below the threshold, the warning says how much of the refinement was blended in.


def test_the_kept_coarse_note_says_what_share_was_blended_in() -> None:
    from crm_cli.pipeline import kept_coarse_note

    unsure = "the model was unsure of its changes (confidence 0.49): the coarse mask was"
    assert kept_coarse_note(0.49, 0.3) == f"{unsure} mostly kept: 30% of the refinement blended in"
    assert kept_coarse_note(0.49, 0.004) == f"{unsure} mostly kept: under 1% of the refinement blended in"
    assert kept_coarse_note(0.30, 0.0) == ("the model was unsure of its changes (confidence 0.30): the coarse mask "
                                           "was kept")


def test_the_engine_keeps_the_share_it_took(monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    coarse = np.zeros((480, 640), np.float32)
    coarse[120:360, 160:480] = 1.0
    image = featureless_photo(480, 640)
    refiner = Refiner.from_model(make_tiny_model(), device="cpu")
    for value, weight, kept in ((0.745, 0.3, True), (0.7375, 0.0, True), (0.755, 0.7, False), (0.9, 1.0, False)):
        changed = coarse.copy()
        changed[112:120, 200:208] = value  # a change of confidence 2 * value - 1 (test_gate_ramp_s38)
        monkeypatch.setattr(refiner, "_run_stages", lambda *args, changed=changed, **kwargs: changed.copy())
        result = refiner.refine_detailed(image, coarse)
        assert result.kept_coarse is kept and result.change_weight == pytest.approx(weight, abs=1e-6), value


@pytest.mark.parametrize("confidence, told", [
    (0.49, "the coarse mask was mostly kept: 30% of the refinement blended in"),
    (0.30, "the coarse mask was kept"),
])
def test_crm_refine_says_how_much_was_blended_in(tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                confidence: float, told: str) -> None:
    import crm_cli.engine as engine

    image_path, mask_path = write_scene_files(tmp_path, size=(240, 320))
    monkeypatch.setattr(engine, "change_confidence", lambda probability, reference: confidence)
    result = runner.invoke(app, ["refine", str(image_path), str(mask_path), "-o", str(tmp_path / "out.png"),
                                 "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kept_coarse"] == 1  # below the threshold, as before
    assert f"(confidence {confidence:.2f}): {told}" in flat(result.stderr)
    assert ("mostly kept" in result.stderr) is (confidence > 0.475)
