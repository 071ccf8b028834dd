"""Session 62: the photo-only work of several refinements of one photo (a label map's ids) is done once
(``photo_memo.same_photo``), and the answers are exactly those computed afresh."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_scene

import crm_cli.labels as labels_module
from crm_cli.labels import refine_labels
from crm_cli.photo_memo import memoized, same_photo


def counting(value: object) -> tuple[list[int], object]:
    """A compute function that counts its calls, and the call list."""
    calls: list[int] = []

    def compute() -> object:
        calls.append(1)
        return value

    return calls, compute


def test_kept_only_for_the_very_photo_of_the_open_context() -> None:
    photo = np.zeros((4, 5, 3), np.uint8)
    twin = photo.copy()  # equal pixels, another array: not the same photo
    calls, compute = counting(7)
    assert memoized(photo, "k", compute) == 7 and memoized(photo, "k", compute) == 7
    assert len(calls) == 2  # no context: computed every time
    with same_photo(photo) as memo:
        assert [memoized(photo, "k", compute) for _ in range(3)] == [7, 7, 7]
        assert len(calls) == 3 and memo.values == {"k": 7}
        memoized(twin, "k", compute)
        memoized(photo[1:], "k", compute)  # a view is another photo too
        assert len(calls) == 5
        memoized(photo, "other", compute)  # another key is computed
        assert len(calls) == 6
    memoized(photo, "k", compute)  # the context is closed
    assert len(calls) == 7


def test_nested_contexts_keep_their_own_photo() -> None:
    outer, inner = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    with same_photo(outer) as kept_outer:
        with same_photo(inner) as kept_inner:
            memoized(inner, "k", lambda: 1)
            memoized(outer, "k", lambda: 2)  # not the innermost photo: computed, not kept
        memoized(outer, "k", lambda: 3)
    assert kept_inner.values == {"k": 1} and kept_outer.values == {"k": 3}


def test_kept_arrays_are_read_only_but_never_the_photo_itself() -> None:
    photo = np.zeros((4, 5, 3), np.uint8)
    with same_photo(photo):
        grey = memoized(photo, "grey", lambda: photo[..., 0].astype(np.float32))
        pair = memoized(photo, "pair", lambda: (np.zeros(3), np.ones(2)))
        same = memoized(photo, "itself", lambda: photo[1:3])  # a view of the caller's photo
    assert not grey.flags.writeable
    assert not pair[0].flags.writeable and not pair[1].flags.writeable
    assert same.flags.writeable and photo.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        grey[0, 0] = 1.0


def test_label_map_answers_are_those_computed_afresh() -> None:
    """The shipped weights on ONNX Runtime (the CPU default: stage inputs, schedule and photo checks all
    kept) at 1000x660, three ids: the memo's label map equals the one refined without it, pixel for
    pixel, and every refinement after the first found the photo's work kept."""
    from crm_cli import Refiner

    photo, gt = synthetic_scene(660, 1000, seed=3)
    ids = np.zeros(gt.shape, np.uint8)
    ids[gt > 0] = 1
    ids[100:300, 100:400] = 2
    ids[450:620, 600:950] = 3
    refiner = Refiner()  # the shipped default
    kept = refine_labels(refiner, photo, ids)
    fresh_calls = []
    original = labels_module.same_photo
    try:
        labels_module.same_photo = lambda image: (fresh_calls.append(1), nullcontext())[1]
        fresh = refine_labels(refiner, photo, ids)
    finally:
        labels_module.same_photo = original
    assert fresh_calls == [1]
    np.testing.assert_array_equal(kept, fresh)
    assert set(np.unique(kept)) == {0, 1, 2, 3}

    with same_photo(photo) as memo:
        first = refiner.refine_detailed(photo, (ids == 2).astype(np.uint8) * 255)
        keys = set(memo.values)
        second = refiner.refine_detailed(photo, (ids == 3).astype(np.uint8) * 255)
    assert {"photo_is_flat", "photo_is_noise", "photo_noise"} <= keys
    assert any(isinstance(key, tuple) and key[0] == "padded_stage_rgb" for key in keys)
    assert any(isinstance(key, tuple) and key[0] == "alignment_grey" for key in keys)
    assert set(memo.values) >= keys
    for label, result in ((2, first), (3, second)):
        alone = refiner.refine_detailed(photo, (ids == label).astype(np.uint8) * 255)
        np.testing.assert_array_equal(result.probability, alone.probability)


def test_refine_labels_keeps_the_photo_contiguous_for_the_engine(tiny_weights: Path) -> None:
    """A photo given as a non-contiguous view is made contiguous once, so every id's refinement gets
    the same array (the engine's own form of it) and the memo applies; the labels come out as with a
    contiguous copy."""
    from crm_cli import Refiner

    photo, gt = synthetic_scene(160, 200, seed=1)
    ids = np.zeros(gt.shape, np.uint8)
    ids[gt > 0], ids[10:40, 10:60] = 1, 2
    flipped = photo[:, ::-1]  # a view with a negative stride
    refiner = Refiner(tiny_weights, device="cpu")
    seen: list[int] = []

    class Recording:
        def refine(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
            seen.append(id(image))
            assert image.flags.c_contiguous
            return refiner.refine(image, mask)

    out = refine_labels(Recording(), flipped, ids[:, ::-1])
    assert len(seen) == 2 and seen[0] == seen[1]
    np.testing.assert_array_equal(out, refine_labels(refiner, np.ascontiguousarray(flipped), ids[:, ::-1].copy()))


def test_refine_many_is_refine_of_each_mask(tiny_weights: Path) -> None:
    """``Refiner.refine_many``: the same arrays as ``refine`` mask by mask (also from a PIL photo and with
    settings), in order; a bad mask raises refine's own error."""
    from PIL import Image

    from crm_cli import Refiner, SizeMismatchError

    photo, gt = synthetic_scene(160, 200, seed=2)
    masks = [gt, np.roll(gt, 9, axis=1), (gt > 0).astype(np.float32) * 0.8]
    refiner = Refiner(tiny_weights, device="cpu")
    many = refiner.refine_many(Image.fromarray(photo), masks, preset="fast")
    assert len(many) == 3
    for mask, result in zip(masks, many, strict=True):
        np.testing.assert_array_equal(result, refiner.refine(photo, mask, preset="fast"))
    assert refiner.refine_many(photo, []) == []
    with pytest.raises(SizeMismatchError, match="mask size 20x10"):
        refiner.refine_many(photo, [gt, np.zeros((10, 20), np.uint8)])


def test_refine_many_keeps_the_photo_s_work_for_a_read_only_photo_on_torch(tiny_weights: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's find: the torch path copies a read-only photo (``np.asarray`` of a PIL image) on every
    refinement, so the memo never saw the same array twice; refine_many and refine_labels copy it once."""
    from PIL import Image

    import crm_cli.engine as engine
    import crm_cli.photo_memo as photo_memo
    import crm_cli.schedule as schedule
    from crm_cli import Refiner

    photo, gt = synthetic_scene(160, 200, seed=5)
    refiner = Refiner(tiny_weights, device="cpu", backend="torch")
    computed: list[object] = []
    real = photo_memo.memoized

    def counting(image: np.ndarray, key: object, compute):  # noqa: ANN001, ANN202
        return real(image, key, lambda: computed.append(key) or compute())

    monkeypatch.setattr(engine, "memoized", counting)
    monkeypatch.setattr(schedule, "memoized", counting)
    read_only = np.asarray(Image.fromarray(photo))
    assert not read_only.flags.writeable
    masks = [gt, np.roll(gt, 7, axis=0), np.roll(gt, 7, axis=1)]
    refiner.refine_many(read_only, masks)
    assert computed and len(computed) == len(set(computed))  # each photo-only result worked out once
    computed.clear()
    ids = np.zeros(gt.shape, np.uint8)
    ids[gt > 0], ids[5:40, 5:60] = 1, 2
    refine_labels(refiner, read_only, ids)
    assert computed and len(computed) == len(set(computed))
    assert not read_only.flags.writeable  # the caller's array is left as it was


def test_eval_scores_a_soft_output_whose_largest_level_is_one_as_levels(tiny_weights: Path) -> None:
    """``binarize`` reads an integer mask holding only 0 and 1 as a 0/1 mask (a file's convention), but a
    rendered soft output is 8-bit levels whatever its largest: ``crm eval`` cuts it at > 128 itself."""
    from crm_cli.evaluation import Sample, evaluate, soft_foreground

    np.testing.assert_array_equal(soft_foreground(np.array([[0, 1, 128, 129]], np.uint8)), [[0, 0, 0, 1]])

    class Faint:
        """A refiner whose answer is 0.003 (level 1 of 255) in a corner, nothing elsewhere."""

        device_type = "cpu"

        def refine_detailed(self, image, mask, ratios=None, keep_stages=False, preset=None):  # noqa: ANN001, ANN201
            from crm_cli.engine import RefineResult

            probability = np.zeros(mask.shape, np.float32)
            probability[:30, :30] = 0.003
            return RefineResult(probability=probability, ratios=(1.0,))

    gt = np.zeros((100, 100), bool)
    gt[60:80, 60:80] = True
    sample = Sample(name="faint", image=np.zeros((100, 100, 3), np.uint8), coarse=gt.astype(np.uint8) * 255, gt=gt)
    (image,) = evaluate(Faint(), [sample]).images
    assert image["refined_iou"] == 0.0  # nothing over level 128 (the 900 corner pixels would make it 0.083)
