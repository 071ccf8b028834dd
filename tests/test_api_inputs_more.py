"""More inputs at the Python API's door (``Refiner``): a Refiner shared between threads, options
checked when it is built, stages that must not share memory with the caller's mask, read-only,
big-endian and PIL inputs. Each case was a silently wrong result or a late, unclear error."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import coarse_of, make_tiny_model, synthetic_scene

from crm_cli.checkpoint import default_weights_path
from crm_cli.engine import Refiner
from crm_cli.schedule import FinalStage

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(scope="module")
def tiny() -> Refiner:
    """The tiny random model on the CPU (torch)."""
    return Refiner.from_model(make_tiny_model(), device="cpu")


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """(image, coarse uint8 0/255) at 96x128."""
    image, gt = synthetic_scene(96, 128)
    return image, coarse_of(gt)


def onnx_refiner(**options: int) -> Refiner:
    """The shipped weights on the onnx backend (skipped where it cannot run)."""
    pytest.importorskip("onnxruntime")
    weights = Path(default_weights_path())
    if not weights.exists():
        pytest.skip("no shipped weights")
    return Refiner(weights, device="cpu", backend="onnx", **options)


# A Refiner shared between threads --------------------------------------------------------------------------------


def test_one_refiner_shared_between_threads_gives_every_thread_its_own_result() -> None:
    # Small tiles, so that even small images are encoded into the latent the onnx runner keeps
    # between calls: two threads wrote into that one buffer and decoded each other's latents.
    refiner = onnx_refiner(tile_size=64, tile_margin=8, roi_tile_size=32, roi_tile_margin=8, roi_window_size=64)
    scenes = []
    for seed in range(3):
        image, gt = synthetic_scene(160, 208, seed=seed)
        scenes.append((image, coarse_of(gt)))
    expected = [refiner.refine(image, coarse, preset="quality") for image, coarse in scenes]
    assert not np.array_equal(expected[0], expected[1])
    start = threading.Barrier(len(scenes))
    results: dict[int, list[np.ndarray]] = {k: [] for k in range(len(scenes))}

    def work(k: int) -> None:
        start.wait()
        for _ in range(2):
            results[k].append(refiner.refine(*scenes[k], preset="quality"))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(scenes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for k, outputs in results.items():
        assert len(outputs) == 2
        for output in outputs:
            np.testing.assert_array_equal(output, expected[k])


# Options checked when the Refiner is built ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-5, 224.5, "224", None, True, float("nan")])
def test_min_stage_side_must_be_a_whole_number(value: object) -> None:
    # Before: -5, 224.5, True and NaN were taken silently; "224" and None failed in the first
    # refine with a TypeError from deep inside the schedule.
    with pytest.raises(ValueError, match=r"min_stage_side must be a whole number >= 0"):
        Refiner.from_model(make_tiny_model(), device="cpu", min_stage_side=value)  # type: ignore[arg-type]


def test_min_stage_side_keeps_its_meaning(scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, coarse = scene
    every = Refiner.from_model(make_tiny_model(), device="cpu", min_stage_side=np.int64(0))
    assert every.min_stage_side == 0
    result = every.refine_detailed(image, coarse, preset="balanced")
    assert [timing.encode_s > 0 for timing in result.timings] == [True] * 4  # no stage skipped


def test_final_stage_must_be_a_final_stage(scene: tuple[np.ndarray, np.ndarray]) -> None:
    # Before: built fine, then an AttributeError ('str' object has no attribute 'scale') in refine.
    with pytest.raises(TypeError, match="final_stage must be a crm_cli.schedule.FinalStage"):
        Refiner.from_model(make_tiny_model(), device="cpu", final_stage="x")  # type: ignore[arg-type]
    image, coarse = scene
    custom = Refiner.from_model(make_tiny_model(), device="cpu", final_stage=FinalStage(scale=2.0))
    assert custom.final_stage.scale == 2.0
    assert custom.refine(image, coarse).shape == coarse.shape


# Stages and the caller's mask ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_kept_stages_never_share_memory_with_the_mask(backend: str, tiny: Refiner,
                                                      scene: tuple[np.ndarray, np.ndarray]) -> None:
    refiner = tiny if backend == "torch" else onnx_refiner()
    image, coarse = scene
    mask = (coarse > 127).astype(np.float32)
    original = mask.copy()
    result = refiner.refine_detailed(image, mask, preset="balanced", keep_stages=True)
    # At 96x128 the stages before the last are too small and skipped: their entries are the coarse
    # mask, which was the caller's own array, so writing into a stage wrote into the mask.
    assert len(result.stages) == 4
    for stage in result.stages[:3]:
        np.testing.assert_array_equal(stage, original)
    for stage in result.stages:
        assert not np.shares_memory(stage, mask)
        stage[...] = 0.5
    np.testing.assert_array_equal(mask, original)


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_kept_stages_of_a_mask_without_boundary_are_separate_arrays(fill: float, tiny: Refiner,
                                                                    scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, _ = scene
    mask = np.full(image.shape[:2], fill, np.float32)
    result = tiny.refine_detailed(image, mask, preset="balanced", keep_stages=True)
    assert len(result.stages) == 4
    result.stages[0][...] = 0.5  # writing into one stage changes neither the others nor the result
    for stage in result.stages[1:]:
        assert np.all(stage == fill)
    assert np.all(result.probability == fill)


def test_read_only_inputs_reach_torch_writable(tiny: Refiner, scene: tuple[np.ndarray, np.ndarray],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # torch.from_numpy on a read-only array (np.asarray of a PIL image is one) warns of "undefined
    # behavior" (once per process, so the arrays it is given are checked here).
    import torch

    image, coarse = scene
    mask = (coarse > 127).astype(np.float32)
    expected = tiny.refine(image, mask, preset="quality")
    seen: list[bool] = []
    from_numpy = torch.from_numpy

    def recording(values: np.ndarray) -> torch.Tensor:
        seen.append(bool(values.flags.writeable))
        return from_numpy(values)

    monkeypatch.setattr(torch, "from_numpy", recording)
    read_only_image, read_only_mask = image.copy(), mask.copy()
    read_only_image.flags.writeable = False
    read_only_mask.flags.writeable = False
    np.testing.assert_array_equal(tiny.refine(read_only_image, read_only_mask, preset="quality"), expected)
    assert seen and all(seen)
    # The caller's arrays are left as they were.
    assert not read_only_image.flags.writeable and not read_only_mask.flags.writeable


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_read_only_inputs_are_copied_for_torch_only(backend: str, tiny: Refiner, scene: tuple[np.ndarray, np.ndarray],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The copy keeps torch.from_numpy's warning away; the onnx backend never hands the arrays to
    # torch, and copying a 4K image and mask there cost 25 MB for nothing.
    import crm_cli.engine as engine

    refiner = tiny if backend == "torch" else onnx_refiner()
    image, coarse = scene
    mask = (coarse > 127).astype(np.float32)
    expected = refiner.refine(image, mask, preset="quality")
    read_only_image, read_only_mask = image.copy(), mask.copy()
    read_only_image.flags.writeable = False
    read_only_mask.flags.writeable = False
    planned: list[np.ndarray] = []
    plan_schedule = engine.plan_schedule

    def recording(settings: object, image: np.ndarray, *rest: object) -> object:
        planned.append(image)
        return plan_schedule(settings, image, *rest)

    monkeypatch.setattr(engine, "plan_schedule", recording)
    np.testing.assert_array_equal(refiner.refine(read_only_image, read_only_mask, preset="quality"), expected)
    assert len(planned) == 1
    assert np.shares_memory(planned[0], read_only_image) == (backend == "onnx")


# A Refiner pickled or copied --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_torch_refiner_pickles_and_deep_copies(how: str, scene: tuple[np.ndarray, np.ndarray]) -> None:
    # The lock that serialises refinements made a Refiner unpicklable ("cannot pickle '_thread.RLock'
    # object"), and copy.deepcopy failed the same way; both worked before the lock.
    import copy
    import pickle

    image, coarse = scene
    refiner = Refiner.from_model(make_tiny_model(), device="cpu")
    expected = refiner.refine(image, coarse, preset="quality")
    twin = pickle.loads(pickle.dumps(refiner)) if how == "pickle" else copy.deepcopy(refiner)
    assert twin is not refiner and twin.runner is not refiner.runner
    assert twin._lock is not refiner._lock
    np.testing.assert_array_equal(twin.refine(image, coarse, preset="quality"), expected)
    np.testing.assert_array_equal(refiner.refine(image, coarse, preset="quality"), expected)


# Byte order ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,scale", [(">u2", 65535), (">u2", 255), (">f4", 1.0), (">f8", 1.0), (">i4", 1)])
def test_big_endian_masks_are_read_like_native_ones(tiny: Refiner, scene: tuple[np.ndarray, np.ndarray],
                                                    dtype: str, scale: float) -> None:
    # Before: a big-endian uint16 mask (PIL "I;16B", np.frombuffer(data, ">u2")) is not equal to
    # np.uint16, and was refused as "an integer mask of type >u2 must hold only 0 and 1".
    image, coarse = scene
    expected = tiny.refine(image, coarse, preset="quality")
    mask = ((coarse > 127) * scale).astype(dtype)
    assert not mask.dtype.isnative
    np.testing.assert_array_equal(tiny.refine(image, mask, preset="quality"), expected)


@pytest.mark.parametrize("top", [65535, 255])
def test_binarize_and_mask_to_float_read_big_endian_uint16_like_native(top: int) -> None:
    # compare, overlays, metrics.score_pair and crm score binarise masks without checked_mask: a
    # '>u2' mask is not equal to np.uint16, so binarize thresholded its raw values at 128 and
    # mask_to_float clipped them to 1 (65535-scale 300 became foreground, 1.0).
    from crm_cli.masks import binarize, mask_to_float, native_order

    native = np.array([[0, 100, 129, 300], [32896, 32897, 40000, top]], dtype=np.uint16)
    if top == 255:
        native = np.minimum(native, 255).astype(np.uint16)
    swapped = native.astype(">u2")
    assert not swapped.dtype.isnative and np.array_equal(swapped, native)
    np.testing.assert_array_equal(binarize(swapped), binarize(native))
    np.testing.assert_array_equal(mask_to_float(swapped), mask_to_float(native))
    assert mask_to_float(swapped).dtype == np.float32
    assert native_order(native) is native and native_order(swapped).dtype == np.uint16


# PIL images ---------------------------------------------------------------------------------------------------------


def test_a_pil_rgb_image_and_grey_mask_work_as_arrays(tiny: Refiner, scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, coarse = scene
    expected = tiny.refine(image, coarse, preset="quality")
    np.testing.assert_array_equal(
        tiny.refine(Image.fromarray(image), Image.fromarray(coarse), preset="quality"), expected)


@pytest.mark.parametrize("mode", ["YCbCr", "HSV"])
def test_a_pil_image_in_another_colour_space_is_refused(tiny: Refiner, scene: tuple[np.ndarray, np.ndarray],
                                                        mode: str) -> None:
    # Before: three uint8 channels, so it was refined as if they were R, G and B.
    image, coarse = scene
    converted = Image.fromarray(image).convert(mode)
    assert np.asarray(converted).shape == image.shape
    with pytest.raises(ValueError, match=rf"PIL image in mode {mode}; pass image.convert\('RGB'\)"):
        tiny.refine(converted, coarse)


def test_a_pil_palette_mask_is_refused(tiny: Refiner, scene: tuple[np.ndarray, np.ndarray]) -> None:
    # Before: index 15 (VOC's "person") read as 15/255, all background: an empty mask, no error.
    image, coarse = scene
    palette = Image.new("P", (coarse.shape[1], coarse.shape[0]))
    palette.putpalette([0, 0, 0] + [192, 128, 128] * 255)
    palette.putdata(((coarse > 127) * 15).ravel().tolist())
    assert set(np.unique(np.asarray(palette))) == {0, 15}
    with pytest.raises(ValueError, match=r"PIL palette image \(mode P\).*read_mask\(path\).probability\(\)"):
        tiny.refine(image, palette)
    # What the message suggests gives the binary mask's result.
    np.testing.assert_array_equal(tiny.refine(image, np.asarray(palette) != 0), tiny.refine(image, coarse))


def test_a_mask_with_nothing_above_one_half_gives_an_empty_result_and_says_why(
        tiny: Refiner, scene: tuple[np.ndarray, np.ndarray], caplog: pytest.LogCaptureFixture) -> None:
    import logging

    image, coarse = scene
    faint = (coarse / 255.0 * 0.4).astype(np.float32)  # a soft mask that never reaches 0.5
    dim = (coarse // 255 * 100).astype(np.uint8)  # 0/100 of 255
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert not tiny.refine(image, faint).any()
        assert not tiny.refine(image, dim).any()
    notes = [r.getMessage() for r in caplog.records if r.name == "crm_cli.engine"]
    assert notes == [
        "the coarse mask: no pixel of the mask is above 0.5 (its largest value is 0.40), so nothing is foreground",
        "the coarse mask: no pixel of the mask is above 0.5 (its largest value is 0.39), so nothing is foreground",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert not tiny.refine(image, np.zeros_like(coarse)).any()  # empty: nothing to say
        assert tiny.refine(image, coarse).any()
    assert [r.getMessage() for r in caplog.records if r.name == "crm_cli.engine"] == []
