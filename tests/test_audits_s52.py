"""Audits of session 52. A researcher's of the scores (`crm eval` and `crm score` reading a mask as one
object the same way, `-t` on binary predictions, the 16-bit scale warning) and a dataset builder's of
`crm coco` (resuming across changed filters or weights, failed instances naming their image)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_tiny_model, synthetic_scene
from test_coco import make_dataset, run_coco
from typer.testing import CliRunner

from crm_cli import coco
from crm_cli.cli import app
from crm_cli.masks import MaskData

runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# A grey label map read as one object


def label_map(height: int = 40, width: int = 60) -> np.ndarray:
    """Ids 1 and 2 side by side on background, 0 elsewhere (a grey label map by masks' rule)."""
    ids = np.zeros((height, width), np.uint8)
    ids[10:30, 10:30] = 1
    ids[10:30, 30:50] = 2
    return ids


def test_a_grey_label_map_read_as_one_object_is_its_ids_union_as_scoring_reads_it() -> None:
    """probability() read ids 1 and 2 on the 8-bit scale (at most 2/255), so crm eval refined an empty
    mask while scoring the coarse one as the object; --mode binary refined nothing."""
    ids = label_map()
    mask = MaskData(ids, "gray8")
    assert mask.is_label_map()
    probability = mask.probability()
    assert probability.dtype == np.float32
    np.testing.assert_array_equal(probability, (ids != 0).astype(np.float32))
    np.testing.assert_array_equal(probability > 0.5, mask.scoring_values())
    # Soft and 0/255 masks keep their scale.
    soft = np.linspace(0, 255, 40 * 60).reshape(40, 60).astype(np.uint8)
    np.testing.assert_allclose(MaskData(soft, "gray8").probability(), soft / np.float32(255), atol=1e-7)


def test_crm_eval_refines_a_label_map_coarse_mask_as_the_object_it_scores(tmp_path: Path) -> None:
    """A photo under crm's smallest refined side is passed through: its refined score must equal the
    coarse one (it was 0.0 against 0.82 before), and crm score of the written file must agree."""
    folder, out = tmp_path / "big", tmp_path / "out"
    folder.mkdir()
    image, _ = synthetic_scene(40, 60)
    gt = np.zeros((40, 60), np.uint8)
    gt[8:32, 10:50] = 255
    cv2.imwrite(str(folder / "s_im.png"), image[:, :, ::-1])
    cv2.imwrite(str(folder / "s_gt.png"), gt)
    cv2.imwrite(str(folder / "s_seg.png"), label_map())
    result = runner.invoke(app, ["eval", str(folder), "-o", str(out), "--json", "-d", "cpu"])
    assert result.exit_code == 0, result.output
    image_record = json.loads(result.stdout)["images"][0]
    # By hand: the ids cover 20 x 40 = 800 pixels, all inside the 24 x 40 = 960 of the truth.
    assert image_record["coarse_iou"] == pytest.approx(800 / 960)
    assert image_record["refined_iou"] == pytest.approx(image_record["coarse_iou"])
    scored = runner.invoke(app, ["score", str(out), str(folder), "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["iou"] == pytest.approx(800 / 960)


def test_refine_mode_binary_reads_a_grey_label_map_as_one_object(tmp_path: Path) -> None:
    image, _ = synthetic_scene(40, 60)
    cv2.imwrite(str(tmp_path / "im.png"), image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "ids.png"), label_map())
    result = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "ids.png"), "--mode", "binary",
                                 "-o", str(tmp_path / "out.png"), "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert "no pixel of the mask is above 0.5" not in result.stderr
    written = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(written, np.where(label_map() != 0, 255, 0))  # passed through at 40x60


# ---------------------------------------------------------------------------------------------
# crm score: the 16-bit scale warning, the note of an upsampled mask


def test_score_warns_of_a_16bit_mask_read_on_the_8bit_scale(tmp_path: Path) -> None:
    """README promises the warning; crm refine and crm eval gave it, crm score did not."""
    gt = np.zeros((30, 40), np.uint8)
    gt[5:25, 5:35] = 255
    pred = np.zeros((30, 40), np.uint16)
    pred[5:25, 5:35] = 200  # a soft 8-bit mask saved in a 16-bit file
    pred[5, 5] = 100
    cv2.imwrite(str(tmp_path / "gt.png"), gt)
    cv2.imwrite(str(tmp_path / "pred.png"), pred)
    result = runner.invoke(app, ["score", str(tmp_path / "pred.png"), str(tmp_path / "gt.png"), "--json"])
    assert result.exit_code == 0, result.output
    assert f"{tmp_path / 'pred.png'}: a 16-bit mask whose largest value is 200, read as 8-bit values" in result.stderr
    # On the 8-bit scale 200 > 128 and 100 is not: one pixel of 600 missed.
    assert json.loads(result.stdout)["iou"] == pytest.approx(599 / 600)


def test_score_names_the_mask_whose_size_was_taken(tmp_path: Path) -> None:
    """crm score has no image, yet the note said "upsampled to the image size"."""
    gt = np.zeros((30, 40), np.uint8)
    gt[5:25, 5:35] = 255
    cv2.imwrite(str(tmp_path / "gt.png"), gt)
    cv2.imwrite(str(tmp_path / "pred.png"), gt[::2, ::2].copy())
    result = runner.invoke(app, ["score", str(tmp_path / "pred.png"), str(tmp_path / "gt.png")])
    assert result.exit_code == 0, result.output
    assert (f"{tmp_path / 'pred.png'}: upsampled to the size of {tmp_path / 'gt.png'}, 40x30"
            in " ".join(result.stderr.split()))


def test_score_help_says_how_binary_predictions_and_empty_truths_count() -> None:
    text = " ".join(runner.invoke(app, ["score", "--help"]).stdout.split())
    assert "a binary one (0 and one value, 0/1, label ids) is its object as it is" in text
    assert "has no mBA and is left out of that mean" in text


# ---------------------------------------------------------------------------------------------
# crm coco: resuming


def interrupted_coco(monkeypatch: pytest.MonkeyPatch, annotations: Path, images: Path, output: Path,
                     *args: str, after: int = 1) -> None:
    """A crm coco run stopped by Ctrl-C when it starts its instance number ``after`` + 1."""
    real, calls = coco.refine_instance, []

    def interrupted(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(coco.instances, "refine_instance", interrupted)
    try:
        result = run_coco(annotations, images, output, *args)
    finally:
        monkeypatch.setattr(coco.instances, "refine_instance", real)
    assert result.exit_code == 130 and coco.sidecar_path(output).exists(), result.output


def test_coco_resume_leaves_out_instances_the_new_categories_skip(tmp_path: Path, tiny_weights: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Instance 101 (category 1) refined before the stop reached the output of a rerun for category 2."""
    annotations, images, _ = make_dataset(tmp_path)
    before = json.loads(annotations.read_text())
    output = tmp_path / "out.json"
    args = ("-w", str(tiny_weights), "-d", "cpu")
    interrupted_coco(monkeypatch, annotations, images, output, *args, "--category-ids", "1")
    result = run_coco(annotations, images, output, *args, "--category-ids", "2", "--json")
    summary = json.loads(result.stdout)
    assert summary["resumed"] == 0 and summary["skipped_by_reason"] == {"category": 2, "crowd": 1}, result.output
    after = {a["id"]: a for a in json.loads(output.read_text())["annotations"]}
    for annotation in before["annotations"]:
        if annotation["category_id"] == 1:
            assert after[annotation["id"]] == annotation


@pytest.mark.parametrize("change", ["min_area", "weights"])
def test_coco_resume_starts_over_when_min_area_or_the_weights_file_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    """--min-area was not in the progress file's header, and named weights were recorded by their path
    only, so a file replaced in place had two models' masks mixed in one output."""
    from crm_cli.checkpoint import save_weights
    from crm_cli.config import Provenance

    annotations, images, _ = make_dataset(tmp_path)
    weights = tmp_path / "w" / "model.safetensors"
    weights.parent.mkdir()
    save_weights(make_tiny_model(0), weights, Provenance(notes="A"))
    output = tmp_path / "out.json"
    args = ("-w", str(weights), "-d", "cpu", "--json")
    interrupted_coco(monkeypatch, annotations, images, output, *args)
    extra: tuple[str, ...] = ()
    if change == "min_area":
        extra = ("--min-area", "5000")
    else:
        shutil.rmtree(weights.parent)
        weights.parent.mkdir()
        save_weights(make_tiny_model(1), weights, Provenance(notes="B"))
    result = run_coco(annotations, images, output, *args, *extra)
    assert f"{coco.sidecar_path(output)}: progress from a different input or settings; starting over" in (
        " ".join(result.stderr.split()))
    assert json.loads(result.stdout)["resumed"] == 0


def test_coco_resume_with_the_same_settings_still_resumes(tmp_path: Path, tiny_weights: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    annotations, images, _ = make_dataset(tmp_path)
    output = tmp_path / "out.json"
    args = ("-w", str(tiny_weights), "-d", "cpu", "--category-ids", "1", "--min-area", "10", "--json")
    interrupted_coco(monkeypatch, annotations, images, output, *args)
    result = run_coco(annotations, images, output, *args)
    assert "starting over" not in result.stderr
    assert json.loads(result.stdout)["resumed"] == 1


def test_a_failed_instance_names_its_image(tmp_path: Path, tiny_weights: Path) -> None:
    """An instance's own failure named only its id; in a large file the image is the lead."""
    annotations, images, _ = make_dataset(tmp_path)
    output = tmp_path / "out.json"
    result = run_coco(annotations, images, output, "-w", str(tiny_weights), "-d", "cpu", "--json")
    assert result.exit_code == 1
    failures = {failure["id"]: failure for failure in json.loads(result.stdout)["failures"]}
    assert failures[105]["file_name"] == "b.png" and failures[106]["file_name"] == "b.png"
    stderr = " ".join(result.stderr.split())
    assert "failed: instance 105 (annotation #4, b.png): " in stderr


# ---------------------------------------------------------------------------------------------
# A photo editor's and a script author's audit of crm compare, crm time and crm info


@pytest.fixture()
def small_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A 200x150 photo with an sRGB colour profile embedded, and a coarse 0/255 mask."""
    from PIL import Image, ImageCms

    image, gt = synthetic_scene(150, 200)
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(image).save(tmp_path / "photo.jpg", quality=95, icc_profile=profile)
    cv2.imwrite(str(tmp_path / "coarse.png"), np.where(gt > 127, 255, 0).astype(np.uint8))
    return tmp_path / "photo.jpg", tmp_path / "coarse.png"


@pytest.mark.parametrize("suffix", [".png", ".jpg", "-"])
def test_compare_keeps_the_photos_colour_profile(small_pair: tuple[Path, Path], tmp_path: Path, suffix: str) -> None:
    """A Display P3 photo's strip showed its pixels without its profile: duller colours in an editor."""
    import io

    from PIL import Image

    photo, coarse = small_pair
    expected = Image.open(photo).info["icc_profile"]
    output = "-" if suffix == "-" else str(tmp_path / f"strip{suffix}")
    result = runner.invoke(app, ["compare", str(photo), str(coarse), str(coarse), "-o", output, "--crops", "0"])
    assert result.exit_code == 0, result.output
    strip = Image.open(io.BytesIO(result.stdout_bytes)) if suffix == "-" else Image.open(output)
    assert strip.info.get("icc_profile") == expected


def test_compare_of_masks_that_agree_says_what_the_crops_show(small_pair: tuple[Path, Path], tmp_path: Path) -> None:
    photo, coarse = small_pair
    result = runner.invoke(app, ["compare", str(photo), str(coarse), str(coarse), "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert f"{coarse} and {coarse} agree at every pixel (> 128): the crops show the refined mask's boundary" in (
        " ".join(result.stderr.split()))
    refined = tmp_path / "refined.png"
    differing = cv2.imread(str(coarse), cv2.IMREAD_UNCHANGED)
    differing[70:80, 95:105] = 255 - differing[70:80, 95:105]
    cv2.imwrite(str(refined), differing)
    result = runner.invoke(app, ["compare", str(photo), str(coarse), str(refined), "-o", str(tmp_path / "s.png")])
    assert result.exit_code == 0 and "agree at every pixel" not in result.stderr


def test_compare_checks_its_output_name_before_any_work(small_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """A name over the file system's limit failed with a bare OSError after the strip was made."""
    photo, coarse = small_pair
    output = tmp_path / ("a" * 300 + ".png")
    result = runner.invoke(app, ["compare", str(photo), str(coarse), str(coarse), "-o", str(output)])
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert message.startswith(f"error: cannot write {output}") and "Errno" not in message


@pytest.mark.parametrize("command", ["compare", "time"])
def test_standard_input_for_an_input_file_is_a_usage_error(small_pair: tuple[Path, Path], tmp_path: Path,
                                                           command: str) -> None:
    """It read "-: no such file"."""
    photo, coarse = small_pair
    args = [command, "-", str(coarse), *([str(coarse), "-o", str(tmp_path / "s.png")] if command == "compare" else [])]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "standard input" in result.stderr and "no such file" not in result.stderr


def test_time_says_when_it_times_what_crm_refine_would_not_run(tmp_path: Path) -> None:
    """A photo under crm's smallest refined side and a label map (refined label by label) were timed as
    one model run each, with no word of it; the --json record now lists the warnings."""
    image, _ = synthetic_scene(60, 80)
    cv2.imwrite(str(tmp_path / "im.png"), image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "ids.png"), label_map(60, 80))
    result = runner.invoke(app, ["time", str(tmp_path / "im.png"), str(tmp_path / "ids.png"), "-n", "1", "--json",
                                 "-d", "cpu"])
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert warnings == [
        f"{tmp_path / 'ids.png'}: a label map (labels 1, 2), which crm refine refines label by label; these times "
        "are of one refinement of them all as one object",
        f"{tmp_path / 'im.png'} is 80x60, under the 96-px minimum side crm refines; crm refine passes it through "
        "without running the model; these times are of the model run all the same"]
    for warning in warnings:
        assert warning in " ".join(result.stderr.split())


def test_time_of_an_ordinary_pair_lists_no_warnings(small_pair: tuple[Path, Path]) -> None:
    photo, coarse = small_pair
    result = runner.invoke(app, ["time", str(photo), str(coarse), "-n", "1", "--json", "-d", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == []


def test_reduced_precision_on_the_cpu_is_warned_of_once_for_a_pair_of_weights(
        small_pair: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    """The shipped weights' partner repeated the main weights' warning."""
    from crm_cli.engine import Refiner

    with caplog.at_level("WARNING", logger="crm_cli.engine"):
        refiner = Refiner(device="cpu", precision="fp16")
    assert refiner.partner is not None
    assert [r.getMessage() for r in caplog.records].count(
        "precision fp16 is much slower than fp32 on the CPU (fp16 took 11x as long in one measurement): "
        "reduced precision is meant for GPUs") == 1


def test_info_reports_the_device_backend_and_threads_the_environment_asks_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """crm info ignored CRM_DEVICE, CRM_BACKEND and CRM_THREADS: "ok" for a setting every other command
    refuses, and the backend and threads of auto instead of those the commands would take."""
    import torch

    monkeypatch.setenv("CRM_BACKEND", "torch")
    monkeypatch.setenv("CRM_THREADS", "1")
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["default_backend"] == "torch" and data["settings_error"] is None
    assert [device["threads"] for device in data["devices"] if device["id"] == "cpu"] == [1]
    monkeypatch.delenv("CRM_BACKEND")
    monkeypatch.delenv("CRM_THREADS")
    monkeypatch.setenv("CRM_DEVICE", "bogus")
    assert runner.invoke(app, ["info"]).exit_code == 2  # as every command that takes --device
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: CRM_DEVICE=cuda is no missing device here")
    monkeypatch.setenv("CRM_DEVICE", "cuda")
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["status"] == "failed" and data["default_device"] is None
    assert data["settings_error"] == ("device 'cuda' (from CRM_DEVICE) was requested but no CUDA GPU is "
                                      "available (use device 'cpu' or 'auto')")
    assert result.stderr.strip().endswith(f"error: {data['settings_error']}")


def test_info_names_an_onnx_backend_that_cannot_run_the_weights(tiny_weights: Path) -> None:
    result = runner.invoke(app, ["info", "-w", str(tiny_weights), "--backend", "onnx", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["settings_error"].startswith(f"{tiny_weights}: no ONNX encoder exported from these weights")
    assert data["default_backend"] is None


def test_score_says_when_a_ground_truth_has_more_than_one_prediction(tmp_path: Path) -> None:
    """A stale a_mask.png beside a.png was scored in silence; the order is documented, the choice now named."""
    pred, gt = tmp_path / "p", tmp_path / "g"
    pred.mkdir()
    gt.mkdir()
    mask = np.zeros((30, 40), np.uint8)
    mask[5:25, 5:30] = 255
    for name in ("a", "b"):
        cv2.imwrite(str(gt / f"{name}.png"), mask)
        cv2.imwrite(str(pred / f"{name}_mask.png"), mask)
    cv2.imwrite(str(pred / "a.png"), 255 - mask)
    result = runner.invoke(app, ["score", str(pred), str(gt), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["iou"] == 1.0  # a_mask.png, the first of the documented order
    assert (f"warning: {pred}: 1 ground truth has more than one prediction here (e.g. a_mask.png, a.png); each is "
            "scored with the first found of <name>_mask, <name>, <name>_seg; --pred-suffix chooses one"
            in " ".join(result.stderr.split()))
    alone = runner.invoke(app, ["score", str(pred), str(gt), "--pred-suffix", "_mask"])
    assert alone.exit_code == 0 and "more than one prediction" not in alone.stderr


# ---------------------------------------------------------------------------------------------
# An ML engineer's audit of crm train


def crm_train(*args: str) -> tuple[int, str]:
    """``crm train`` with tiny settings; (exit code, stderr on one line)."""
    result = runner.invoke(app, ["train", "--batch", "2", "--query-window", "32", "--init", "random",
                                 "--val-images", "2", "--threads", "1", *args])
    assert "Traceback" not in result.stderr
    return result.exit_code, " ".join(result.stderr.split())


def test_train_warns_of_targets_that_crm_refine_would_warn_of(tmp_path: Path) -> None:
    """A 12-bit ground truth in a 16-bit file (every target under 0.07: the model learns to erase) and a
    photo in the masks folder trained to the end with exit 0 and no word."""
    from conftest import write_training_pairs

    data = write_training_pairs(tmp_path / "data", 6)
    twelve_bit = data / "masks" / "p01.png"
    soft = cv2.GaussianBlur(cv2.imread(str(twelve_bit), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255, (9, 9), 2)
    cv2.imwrite(str(twelve_bit), np.round(soft * 4095).astype(np.uint16))  # soft, on a 12-bit scale
    # Pairs are read as the batches first draw them: every other training target is a photo's noise.
    for index in range(2, 6):
        noisy = np.random.default_rng(index).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        cv2.imwrite(str(data / "masks" / f"p{index:02d}.png"), noisy)
    code, stderr = crm_train("--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--val-every", "100")
    assert code == 0, stderr
    assert (f"warning: {twelve_bit}: no pixel of the mask is above 0.5 (its largest value is 0.06), so nothing is "
            "foreground; used as read") in stderr
    assert f"{data / 'masks'}/p0" in stderr and ".png: looks like a photo (colour, " in stderr


def test_target_warnings_stop_after_the_first_twenty(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from crm_cli.training import data

    monkeypatch.setattr(data, "_target_warnings", [0])
    faint = np.linspace(0, 100, 64).round().astype(np.uint8).reshape(8, 8)  # a soft mask, at most 100 of 255
    mask = MaskData(faint, "gray8")
    with caplog.at_level("WARNING", logger="crm_cli.training.data"):
        for index in range(25):
            data.warn_of_target(mask, mask.probability(), f"m{index}.png")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 21 and messages[0].startswith("m0.png: no pixel of the mask is above 0.5")
    assert messages[19].startswith("m19.png:")
    assert messages[20] == "more warnings about ground-truth masks are not shown (20 were)"


def test_a_resumed_run_refuses_other_pairs_but_follows_a_moved_folder(tmp_path: Path) -> None:
    """--resume --data OTHER trained the last steps on another folder's photos, exit 0."""
    from conftest import write_training_pairs

    data = write_training_pairs(tmp_path / "data", 6)
    other = write_training_pairs(tmp_path / "other", 6, name="q{:02d}")
    run = str(tmp_path / "run")
    common = ("--out", run, "--steps", "4", "--val-every", "100", "--ckpt-every", "1")
    assert crm_train("--data", str(data), *common, "--stop-at", "2")[0] == 0
    code, stderr = crm_train("--data", str(other), *common, "--resume")
    assert code != 0
    assert (f"the run trained on other pairs than the 6 of --data {other} (it used 6 pairs of --data '{data}')"
            in stderr)
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    code, stderr = crm_train("--data", str(moved), *common, "--resume")
    assert code == 0 and "resumed from" in stderr, stderr


def test_a_partial_imagenet_init_is_refused() -> None:
    """A checkpoint holding the first 6 of the encoder's tensors left the other 228 random, exit 0."""
    import torch

    from crm_cli.config import PRESET_ARCHS
    from crm_cli.model import build_crm
    from crm_cli.model.pretrained import _init_mobilenet_v2

    model = build_crm(PRESET_ARCHS["mobilenet_v2"])
    own = model.encoder.state_dict()
    partial = {key: torch.zeros_like(value) for key, value in list(own.items())[:6]}
    stem = next(iter(own))
    partial[stem] = torch.zeros(own[stem].shape[0], 3, *own[stem].shape[2:])  # ImageNet's RGB stem, widened
    with pytest.raises(ValueError, match=f"the checkpoint holds 6 tensors, fewer than the {len(own)} of the encoder"):
        _init_mobilenet_v2(model.encoder, partial)


def test_network_masks_without_a_network_weight_are_warned_of(tmp_path: Path) -> None:
    from conftest import write_training_pairs

    data = write_training_pairs(tmp_path / "data", 4)
    masks = tmp_path / "network"
    masks.mkdir()
    code, stderr = crm_train("--data", str(data), "--out", str(tmp_path / "run"), "--steps", "1", "--val-every", "100",
                             "--network-masks", str(masks))
    assert code == 0, stderr
    assert "warning: --network-masks: the coarse mix gives network no weight, so these masks are not used" in stderr


def test_a_missing_init_says_a_resume_does_not_need_it(tmp_path: Path) -> None:
    from conftest import write_training_pairs

    data = write_training_pairs(tmp_path / "data", 4)
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    missing = tmp_path / "gone.safetensors"
    code, stderr = crm_train("--data", str(data), "--out", str(run), "--steps", "2", "--resume", "--init", str(missing))
    assert code != 0
    assert f"--init {missing}: no such file; --resume from {run / 'last.pt'} needs no --init: leave it out" in stderr


# ---------------------------------------------------------------------------------------------
# A new engineer's run through the benchmark scripts


def test_gate_threshold_refuses_a_set_the_partner_refines(tmp_path: Path) -> None:
    """The sweep moved only the main weights' gate: for photos under the partner's side its "gate off"
    rows were the partner's gate at 0.5, printed as if swept."""
    from conftest import load_benchmark

    from crm_cli.engine import Refiner

    gate_threshold = load_benchmark("gate_threshold")
    image, gt = synthetic_scene(120, 160)
    cv2.imwrite(str(tmp_path / "s_im.png"), image[:, :, ::-1])
    cv2.imwrite(str(tmp_path / "s_gt.png"), gt)
    cv2.imwrite(str(tmp_path / "s_seg.png"), cv2.resize(cv2.resize(gt, (20, 15)), (160, 120)))
    refiner = Refiner(device="cpu")  # the shipped pair: photos under 1000 px are the partner's
    with pytest.raises(SystemExit, match=r"1 of 1 photos are refined by the weights' partner \(.*"
                                         r"crm_mobilenet_v2_blend\.safetensors, photos under 1000 px\)"):
        gate_threshold.sweep(refiner, tmp_path, [0.3, 0.5])


def test_choose_checkpoint_keeps_results_of_other_eval_options_apart(tmp_path: Path, tiny_weights: Path) -> None:
    """`-- --preset fast` printed the default preset's kept table."""
    from conftest import load_benchmark

    choose = load_benchmark("choose_checkpoint")
    plain = choose.result_path(tmp_path, tiny_weights, tmp_path)
    assert plain == choose.result_path(tmp_path, tiny_weights, tmp_path, ())  # results kept before still count
    fast = choose.result_path(tmp_path, tiny_weights, tmp_path, ("--preset", "fast"))
    assert fast != plain and fast.parent == plain.parent
    assert fast != choose.result_path(tmp_path, tiny_weights, tmp_path, ("--preset", "quality"))


@pytest.mark.parametrize("text", ["320", "3by2", "x", "0x10", "axb"])
def test_a_malformed_size_is_a_usage_error_of_one_line(text: str) -> None:
    import argparse

    from conftest import load_benchmark

    sizes = load_benchmark("sizes")
    with pytest.raises(argparse.ArgumentTypeError):
        sizes.size(text)
    assert sizes.size("3840X2160") == (3840, 2160) and sizes.sizes("32x24,,64x48") == [(32, 24), (64, 48)]


def test_scripts_refuse_a_malformed_size_without_a_traceback() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "concurrency.py"
    done = subprocess.run([sys.executable, str(script), "--size", "3by2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("error: argument --size: a size looks like 3840x2160, not '3by2'")


def test_a_resume_after_removing_the_damaged_pairs_it_left_out_goes_on(tmp_path: Path) -> None:
    """The advice of a run stopped for damaged data ("fix or remove them and continue with --resume")
    must still work with the pairs' digest: the checkpoint's left-out pairs may be gone."""
    from conftest import write_training_pairs

    data = write_training_pairs(tmp_path / "data", 8)
    val = write_training_pairs(tmp_path / "val", 2, name="v{:02d}")
    damaged = data / "masks" / "p03.png"
    damaged.write_bytes(damaged.read_bytes()[:60])  # damaged after its header: found when first drawn
    common = ("--out", str(tmp_path / "run"), "--steps", "12", "--val-every", "100", "--val", str(val))
    code, stderr = crm_train("--data", str(data), *common)
    assert code == 1 and "continue with --resume" in stderr and "p03.png" in stderr, stderr
    damaged.unlink()
    (data / "images" / "p03.jpg").unlink()
    code, stderr = crm_train("--data", str(data), *common, "--resume")
    assert code == 0 and "resumed from" in stderr, stderr


def test_an_earlier_versions_coco_progress_still_resumes(tmp_path: Path, tiny_weights: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its header lacks the images folder and the named weights' identity, which this version adds."""
    annotations, images, _ = make_dataset(tmp_path)
    output = tmp_path / "out.json"
    args = ("-w", str(tiny_weights), "-d", "cpu", "--json")
    interrupted_coco(monkeypatch, annotations, images, output, *args)
    sidecar = coco.sidecar_path(output)
    lines = sidecar.read_text().splitlines()
    header = json.loads(lines[0])
    for key in ("images", "weights_identity"):
        del header[key]
    sidecar.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    result = run_coco(annotations, images, output, *args)
    assert "starting over" not in result.stderr and json.loads(result.stdout)["resumed"] == 1
    # Another folder of images is another input, whatever the header's age.
    header["images"] = str(tmp_path / "elsewhere")
    interrupted_coco(monkeypatch, annotations, images, output, *args)
    lines = sidecar.read_text().splitlines()
    sidecar.write_text("\n".join([json.dumps({**json.loads(lines[0]), "images": str(tmp_path)}), *lines[1:]]) + "\n")
    assert "starting over" in run_coco(annotations, images, output, *args).stderr


def test_coco_keeps_the_progress_of_categories_a_rerun_leaves_out(tmp_path: Path, tiny_weights: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--category-ids 1, stopped; then 2; then 1 again: the first run's finished instance is not refined twice."""
    annotations, images, _ = make_dataset(tmp_path)
    output = tmp_path / "out.json"
    args = ("-w", str(tiny_weights), "-d", "cpu", "--json")
    interrupted_coco(monkeypatch, annotations, images, output, *args, "--category-ids", "1")
    interrupted_coco(monkeypatch, annotations, images, output, *args, "--category-ids", "2")
    result = run_coco(annotations, images, output, *args, "--category-ids", "1")
    assert json.loads(result.stdout)["resumed"] == 1, result.output


# ---------------------------------------------------------------------------------------------
# A benchmark user's audit of crm eval


def big_triples(folder: Path, names: tuple[str, ...] = ("a", "b")) -> Path:
    """BIG-layout triples of 120x160 (passed through: no model runs) with a blocky coarse mask."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        image, gt = synthetic_scene(120, 160, seed=index)
        cv2.imwrite(str(folder / f"{name}_im.png"), image[:, :, ::-1])
        cv2.imwrite(str(folder / f"{name}_gt.png"), gt)
        cv2.imwrite(str(folder / f"{name}_seg.png"), cv2.resize(cv2.resize(gt, (20, 15)), (160, 120),
                                                                interpolation=cv2.INTER_NEAREST))
    return folder


def test_eval_warns_of_masks_an_earlier_run_left_in_its_output_folder(tmp_path: Path) -> None:
    """A pair that failed (or lay past --limit) kept its old mask in -o, which crm score then scored."""
    folder, out = big_triples(tmp_path / "big"), tmp_path / "out"
    assert runner.invoke(app, ["eval", str(folder), "-o", str(out), "-d", "cpu"]).exit_code == 0
    result = runner.invoke(app, ["eval", str(folder), "-o", str(out), "-d", "cpu", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert (f"warning: {out}: 1 refined mask of an earlier run, for pairs this run did not write (failed to refine or "
            f"to write, or past --limit), e.g. {out / 'b_mask.png'}; crm score {out} {folder} would score them too"
            in " ".join(result.stderr.split()))
    again = runner.invoke(app, ["eval", str(folder), "-o", str(out), "-d", "cpu"])
    assert again.exit_code == 0 and "earlier run" not in again.stderr


def test_eval_without_any_boundary_in_its_ground_truths_has_no_mba_change(tmp_path: Path) -> None:
    """The JSON said "delta": {"mba": 0.0} while both mBA values were null."""
    folder = big_triples(tmp_path / "big", ("a",))
    cv2.imwrite(str(folder / "a_gt.png"), np.zeros((120, 160), np.uint8))
    result = runner.invoke(app, ["eval", str(folder), "--json", "-d", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["coarse"]["mba"] is None and record["refined"]["mba"] is None and record["delta"]["mba"] is None
    assert "ΔmBA -)" in result.stderr
