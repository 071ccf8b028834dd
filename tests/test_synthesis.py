"""Synthetic training data: exact composites, coarse-mask modes, the training mix, CSV log and curve."""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import TINY_ARCH, synthetic_scene, write_training_pairs

from crm_cli.training import synthesis
from crm_cli.training.coarse import CoarseMix, lowres_coarse, make_coarse, mask_iou, sam_like_coarse
from crm_cli.training.data import DataMix, PairCache, list_pairs, make_training_sample, split_pairs
from crm_cli.training.painter import Painter
from crm_cli.training.synthesis import ArrayLibrary, composite, composite_from_seed

ROOT = Path(__file__).resolve().parents[1]


def _library(n: int = 4, size: tuple[int, int] = (90, 120)) -> ArrayLibrary:
    """Noise-textured images with rectangle masks (no external data)."""
    rng = np.random.default_rng(123)
    images, masks = [], []
    for k in range(n):
        small = rng.integers(0, 256, size=(6, 8, 3)).astype(np.uint8)
        image = cv2.resize(small, size[::-1], interpolation=cv2.INTER_CUBIC)
        images.append(np.clip(image.astype(np.int16) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8))
        mask = np.zeros(size, np.float32)
        mask[20 + k:70, 30:90 - k] = 1.0
        masks.append(mask)
    return ArrayLibrary(images, masks)


# ---------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("kind", [*synthesis.SHAPES, "paste"])
def test_same_seed_gives_the_same_bytes_for_every_kind(kind: str) -> None:
    library = _library()
    a = composite_from_seed([4, 2], library, 64, 80, kinds={kind: 1.0}, layers=(1, 1))
    b = composite_from_seed([4, 2], library, 64, 80, kinds={kind: 1.0}, layers=(1, 1))
    assert a.kinds == b.kinds == [kind]
    assert a.image.tobytes() == b.image.tobytes() and a.gt.tobytes() == b.gt.tobytes()
    assert a.image.shape == (64, 80, 3) and a.image.dtype == np.uint8 and a.gt.dtype == np.float32


def test_different_seeds_give_different_samples() -> None:
    library = _library()
    a = composite_from_seed(1, library, 64, 80)
    b = composite_from_seed(2, library, 64, 80)
    assert a.image.tobytes() != b.image.tobytes() and a.gt.tobytes() != b.gt.tobytes()


# ---------------------------------------------------------------------------------------------- exact GT
def test_rectangle_and_bar_coverage_match_hand_computed_areas() -> None:
    p = Painter(40, 50, supersample=4)
    p.rect(10, 5, 30, 12)
    alpha = p.alpha()
    assert alpha.sum() == 20 * 7 and alpha[5:12, 10:30].min() == 1.0 and alpha.max() == 1.0
    # A box on the quarter-pixel grid: 10.5 x 2.5 px, partial columns at 0.75 and 0.75 coverage.
    p = Painter(40, 50, supersample=4)
    p.rect(10.25, 5.5, 20.75, 8.0)
    alpha = p.alpha()
    assert alpha.sum() == pytest.approx(10.5 * 2.5, abs=1e-6)
    assert alpha[6, 10] == 0.75 and alpha[6, 20] == 0.75 and alpha[5, 15] == 0.5 and alpha[7, 15] == 1.0
    # A 3-px bar centred on y = 20 covers rows 18.5..21.5: half of row 18, rows 19-20, half of row 21.
    p = Painter(40, 50, supersample=4)
    p.bar((5, 20), (45, 20), width=3)
    alpha = p.alpha()
    assert alpha.sum() == pytest.approx(40 * 3, abs=1e-6)
    np.testing.assert_array_equal(alpha[17:23, 25], [0, 0.5, 1, 1, 0.5, 0])
    # A 1-px bar on a pixel row, drawn without supersampling: exactly that row, 20 pixels.
    p = Painter(40, 50, supersample=1)
    p.bar((5, 10.5), (25, 10.5), width=1)
    assert p.alpha().sum() == 20 and p.alpha()[10, 5:25].min() == 1.0
    # A slanted bar: area = length x width up to sampling error.
    p = Painter(80, 80, supersample=4)
    p.bar((10, 10), (60, 40), width=4)
    assert p.alpha().sum() == pytest.approx(np.hypot(50, 30) * 4, rel=0.01)
    # An exact stroke is a capsule: length x width plus a disc for the two round ends.
    p = Painter(40, 80, supersample=4)
    p.stroke(np.array([[10, 20], [40, 20], [70, 20]]), width=6)
    assert p.alpha().sum() == pytest.approx(60 * 6 + np.pi * 9, rel=0.01)


def test_fast_stroke_width_is_at_most_one_subpixel_thinner() -> None:
    for width in (1.0, 2.0, 3.5, 7.25, 12.0):
        p = Painter(40, 200, supersample=4, fast_strokes=True)
        p.stroke(np.array([[20, 20.3], [180, 20.3]]), width)
        column = p.alpha()[:, 100].sum()
        assert width - 0.25 - 1e-6 <= column <= width + 1e-6, (width, column)


@pytest.mark.parametrize("kind", list(synthesis.SHAPES))
def test_gt_is_exactly_where_the_foreground_was_composited(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With plain-colour textures: binary at supersample 1, linear in the coverage at supersample 4."""
    fg = np.array([250.0, 10.0, 200.0], np.float32)
    bg = np.array([20.0, 180.0, 40.0], np.uint8)
    library = ArrayLibrary([np.broadcast_to(bg, (50, 60, 3)).copy()])
    monkeypatch.setattr(synthesis, "foreground_texture",
                        lambda rng, lib, background, index: np.broadcast_to(fg, background.shape).copy())
    sample = composite(np.random.default_rng(3), library, 64, 72, kinds={kind: 1.0}, layers=(1, 1), supersample=1)
    assert set(np.unique(sample.gt)) <= {0.0, 1.0} and sample.gt.any()
    inside = sample.gt == 1
    assert (sample.image[inside] == fg.astype(np.uint8)).all()
    assert (sample.image[~inside] == bg).all()
    sample = composite(np.random.default_rng(3), library, 64, 72, kinds={kind: 1.0}, layers=(1, 2), supersample=4)
    expected = sample.gt[..., None] * fg + (1 - sample.gt[..., None]) * bg
    assert np.abs(sample.image - expected).max() <= 0.5 + 1e-3
    assert ((sample.gt > 0) & (sample.gt < 1)).any()  # anti-aliased edges


def test_min_contrast_makes_a_camouflaged_layer_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    bg = np.array([100, 120, 140], np.uint8)
    library = ArrayLibrary([np.broadcast_to(bg, (50, 60, 3)).copy()])
    monkeypatch.setattr(synthesis, "foreground_texture",
                        lambda rng, lib, background, index: background.copy())  # the same colour: invisible
    hidden = composite(np.random.default_rng(0), library, 48, 64, kinds={"polygons": 1.0}, layers=(1, 1))
    assert (hidden.image == bg).all() and hidden.gt.any()
    shown = composite(np.random.default_rng(0), library, 48, 64, kinds={"polygons": 1.0}, layers=(1, 1),
                      min_contrast=16)
    np.testing.assert_array_equal(shown.gt, hidden.gt)  # same draws, only the texture moved
    inside = shown.gt == 1
    assert (shown.image[inside].astype(int) - bg == 16).all() and (shown.image[shown.gt == 0] == bg).all()
    busy = np.full((4, 4, 3), 200.0, np.float32)
    assert synthesis.ensure_contrast(busy, np.zeros_like(busy), np.ones((4, 4), bool), 16) is busy


def test_pasted_foreground_uses_its_mask_as_alpha() -> None:
    colours = [np.array(c, np.uint8) for c in ((200, 30, 30), (30, 30, 200))]
    masks = [np.zeros((40, 50), np.float32) for _ in colours]
    for m in masks:
        m[10:30, 12:40] = 1.0
    library = ArrayLibrary([np.broadcast_to(c, (40, 50, 3)).copy() for c in colours], masks)
    for seed in range(4):
        sample = composite(np.random.default_rng(seed), library, 48, 64, kinds={"paste": 1.0}, layers=(1, 1))
        fg = sample.image[sample.gt == 1][0].astype(np.float32)
        bg = sample.image[sample.gt == 0][0].astype(np.float32)
        expected = sample.gt[..., None] * fg + (1 - sample.gt[..., None]) * bg
        assert np.abs(sample.image - expected).max() <= 0.5 + 1e-3


# ---------------------------------------------------------------------------------------------- coarse modes
def _bar_pattern() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """1-px wires 12 px apart, then 12-px slats with 3-px gaps; regions to measure."""
    gt = np.zeros((160, 240), np.float32)
    regions = {name: np.zeros(gt.shape, bool) for name in ("wires", "gaps", "slats")}
    for k in range(6):
        gt[20:140, 10 + 12 * k] = 1
        regions["wires"][20:140, 10 + 12 * k] = True
    for k in range(6):
        x = 90 + 15 * k
        gt[20:140, x:x + 12] = 1
        regions["slats"][26:134, x + 3:x + 9] = True
        if k < 5:
            regions["gaps"][30:130, x + 12:x + 15] = True
    return gt, regions


def test_clean_mode_is_the_gt() -> None:
    _, mask = synthetic_scene(96, 128, seed=1)
    gt = mask.astype(np.float32) / 255
    np.testing.assert_array_equal(make_coarse(gt, np.random.default_rng(0), "clean"), (gt > 0.5).astype(np.float32))


def test_sam_like_mode_drops_thin_parts_and_merges_gaps() -> None:
    gt, regions = _bar_pattern()
    kept_wires, filled_gaps, kept_slats = [], [], []
    for seed in range(8):
        coarse = sam_like_coarse(gt, np.random.default_rng(seed), cell=4.0) > 0.5
        kept_wires.append(coarse[regions["wires"]].mean())
        filled_gaps.append(coarse[regions["gaps"]].mean())
        kept_slats.append(coarse[regions["slats"]].mean())
    assert np.mean(kept_wires) < 0.1  # 1-px wires mostly vanish at a 4-px logit cell
    assert np.mean(filled_gaps) > 0.4  # 3-px gaps between slats mostly filled
    assert np.mean(kept_slats) > 0.85  # the slats themselves survive
    same = sam_like_coarse(gt, np.random.default_rng(5), cell=4.0)
    np.testing.assert_array_equal(same, sam_like_coarse(gt, np.random.default_rng(5), cell=4.0))


def test_lowres_mode_has_no_detail_finer_than_its_grid() -> None:
    yy, xx = np.mgrid[0:240, 0:240]
    gt = ((yy - 120) ** 2 + (xx - 100) ** 2 < 70**2).astype(np.float32)
    lines = np.zeros(gt.shape, bool)
    for k in range(5):
        gt[10:230, 200 + 6 * k] = 1
        lines[10:230, 200 + 6 * k] = True
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    for seed in range(4):
        coarse = lowres_coarse(gt, np.random.default_rng(seed), cells=(40, 40)) > 0.5  # 6-px cells
        assert 0.85 < mask_iou(coarse, gt > 0.5) < 0.97
        assert coarse[lines].mean() < 0.05  # 1-px lines 6 px apart are below the grid
        opened = cv2.morphologyEx(coarse.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0
        assert (opened != coarse).mean() < 0.001  # nothing 1-2 px thin survives


def test_paper_mode_is_the_original_perturbation() -> None:
    from crm_cli.training.coarse import synthesize_coarse

    _, mask = synthetic_scene(128, 128, seed=2)
    gt = mask.astype(np.float32) / 255
    np.testing.assert_array_equal(make_coarse(gt, np.random.default_rng(9), "paper"),
                                  synthesize_coarse(gt, np.random.default_rng(9)))


def test_coarse_mix_parses_and_draws_by_weight() -> None:
    mix = CoarseMix.parse("paper=1, sam=3")
    assert (mix.paper, mix.lowres, mix.sam, mix.clean) == (1.0, 0.0, 3.0, 0.0)
    assert CoarseMix.parse(str(CoarseMix())) == CoarseMix()
    rng = np.random.default_rng(0)
    draws = [mix.choose(rng) for _ in range(2000)]
    assert set(draws) == {"paper", "sam"} and 0.72 < draws.count("sam") / 2000 < 0.78
    for bad in ("bogus=1", "paper", "paper=-1", "paper=0"):
        with pytest.raises(ValueError):
            CoarseMix.parse(bad)
    with pytest.raises(ValueError):
        make_coarse(np.zeros((8, 8), np.float32), rng, "nope")


# ---------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DUTS-like folder of 6 synthetic scenes and a 2-triple BIG-layout validation folder."""
    root = tmp_path_factory.mktemp("synthdata")
    (root / "duts" / "images").mkdir(parents=True)
    (root / "duts" / "masks").mkdir(parents=True)
    for k in range(6):
        image, mask = synthetic_scene(100, 130, seed=k)
        cv2.imwrite(str(root / "duts" / "images" / f"s{k}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "duts" / "masks" / f"s{k}.png"), mask)
    big = root / "big"
    big.mkdir()
    library = _library()
    for k in range(2):
        sample = composite_from_seed(k, library, 72, 96, kinds=synthesis.THIN_KINDS)
        coarse = sam_like_coarse(sample.gt, np.random.default_rng(k), sample.image, cell=2.0)
        cv2.imwrite(str(big / f"t{k}_im.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(big / f"t{k}_gt.png"), np.rint(sample.gt * 255).astype(np.uint8))
        cv2.imwrite(str(big / f"t{k}_seg.png"), (coarse * 255).astype(np.uint8))
    return root


def test_training_sample_uses_the_mix(tiny_data: Path) -> None:
    cache = PairCache(list_pairs(tiny_data / "duts"))
    clean = DataMix(synthetic=1.0, coarse=CoarseMix(paper=0, lowres=0, sam=0, clean=1))
    rgb, coarse, gt = make_training_sample(cache, 0, np.random.default_rng(1), clean)
    assert rgb.shape == (224, 224, 3) and gt.shape == coarse.shape == (224, 224)
    np.testing.assert_array_equal(coarse, (gt > 0.5).astype(np.float32))
    again = make_training_sample(cache, 0, np.random.default_rng(1), clean)
    assert all(a.tobytes() == b.tobytes() for a, b in zip((rgb, coarse, gt), again, strict=True))
    # The legacy mix (no composites, paper coarse masks) is the pre-mix sample, draw for draw.
    from crm_cli.training.data import make_sample

    image, soft = cache.get(2)
    old = make_sample(image, soft, np.random.default_rng(7))
    new = make_training_sample(cache, 2, np.random.default_rng(7), DataMix())
    assert all(a.tobytes() == b.tobytes() for a, b in zip(old, new, strict=True))


def test_zoom_enlarges_photo_and_masks_together() -> None:
    from crm_cli.training.data import zoom_in

    gt = np.zeros((40, 60), np.float32)
    gt[10:30, 20:40] = 1.0  # a 20 x 20 square
    image = np.dstack([np.rint(gt * 200).astype(np.uint8)] * 3)
    network = (gt > 0.5).astype(np.float32)
    draw = np.random.default_rng(5).uniform(1.0, 2.5)  # the factor zoom_in will draw from this seed
    big_image, big_gt, (big_network,) = zoom_in(image, gt, np.random.default_rng(5), 2.5, (network,))
    assert big_gt.shape == (round(40 * draw), round(60 * draw)) and big_image.shape == (*big_gt.shape, 3)
    # The square grows by the factor (area by its square) and stays where it was, relative to the photo.
    assert (big_gt >= 0.5).sum() == pytest.approx(400 * draw**2, rel=0.1)
    assert set(np.unique(big_network)) == {0.0, 1.0}
    np.testing.assert_array_equal(big_network, (big_gt >= 0.5).astype(np.float32))
    rows, cols = np.nonzero(big_gt >= 0.5)
    assert rows.mean() / big_gt.shape[0] == pytest.approx(0.5, abs=0.02)
    assert cols.mean() / big_gt.shape[1] == pytest.approx(0.5, abs=0.02)
    # The edge is now several pixels wide, as in a large photo.
    assert ((big_gt > 0.05) & (big_gt < 0.95)).sum() > 0


def test_zoom_in_training_samples_is_seeded_and_off_by_default(tiny_data: Path) -> None:
    cache = PairCache(list_pairs(tiny_data / "duts"))
    zoomed = DataMix(zoom=3.0)
    first = [make_training_sample(cache, k, np.random.default_rng(k), zoomed) for k in range(6)]
    again = [make_training_sample(cache, k, np.random.default_rng(k), zoomed) for k in range(6)]
    plain = [make_training_sample(cache, k, np.random.default_rng(k), DataMix()) for k in range(6)]
    for one, two in zip(first, again, strict=True):
        assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two, strict=True))
        assert one[0].shape == (224, 224, 3)
    # Some of the six were enlarged (a different crop), so they differ from the plain samples.
    assert any(one[2].tobytes() != three[2].tobytes() for one, three in zip(first, plain, strict=True))


def test_transpose_turns_whole_samples_on_their_diagonal(tiny_data: Path) -> None:
    cache = PairCache(list_pairs(tiny_data / "duts"))
    # Every kind of sample: photo crops with the paper's masks, composites, and the mix's other masks.
    for mix in (DataMix(), DataMix(synthetic=1.0), DataMix(coarse=CoarseMix(paper=0, lowres=1, sam=1, clean=0))):
        for k in range(3):
            plain = make_training_sample(cache, k, np.random.default_rng(k), mix)
            turned = make_training_sample(cache, k, np.random.default_rng(k), replace(mix, transpose=1.0))
            # The turn is drawn last, so the sample is the plain one's, turned: photo, coarse mask and GT alike.
            for before, after in zip(plain, turned, strict=True):
                np.testing.assert_array_equal(after, np.swapaxes(before, 0, 1))
                assert after.flags.c_contiguous
            assert turned[0].shape == (224, 224, 3) and turned[1].shape == turned[2].shape == (224, 224)
    half = DataMix(transpose=0.5)
    draws = [np.random.default_rng(k) for k in range(12)]
    samples = [make_training_sample(cache, k % 6, rng, half) for k, rng in enumerate(draws)]
    again = [make_training_sample(cache, k % 6, np.random.default_rng(k), half) for k in range(12)]
    plain = [make_training_sample(cache, k % 6, np.random.default_rng(k), DataMix()) for k in range(12)]
    turned = [not np.array_equal(one[2], three[2]) for one, three in zip(samples, plain, strict=True)]
    assert 0 < sum(turned) < 12  # a share, not all or none
    for one, two in zip(samples, again, strict=True):
        assert all(a.tobytes() == b.tobytes() for a, b in zip(one, two, strict=True))


def test_network_mode_crops_the_real_mask_with_the_photo(tiny_data: Path, tmp_path: Path) -> None:
    pairs = list_pairs(tiny_data / "duts")
    network = tmp_path / "isnet"
    network.mkdir()
    # The "network" mask of s2 is its GT thresholded, so a correctly cropped and flipped copy equals
    # the GT crop thresholded, pixel for pixel.
    gt2 = cv2.imread(str(tiny_data / "duts" / "masks" / "s2.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(network / f"{pairs[2].name}.png"), np.where(gt2 >= 128, 255, 0).astype(np.uint8))
    cache = PairCache(pairs, (network,))
    assert cache.network_indices == [2] and len(cache.network_masks(2)) == 1 and cache.network_masks(1) == ()
    from crm_cli.training.data import random_crop

    window = random_crop(*cache.get(2), np.random.default_rng(0))[1]  # s2 padded to its one 224 window
    s2_crops = {window.tobytes(), np.ascontiguousarray(window[:, ::-1]).tobytes()}
    only_network = DataMix(coarse=CoarseMix(paper=0, lowres=0, sam=0, clean=0, network=1))
    crops = set()
    for seed in range(6):
        # Whatever pair the step drew, the network share is a crop of a photo that has a mask.
        _, coarse, gt = make_training_sample(cache, 0, np.random.default_rng(seed), only_network)
        np.testing.assert_array_equal(coarse, (gt >= 0.5).astype(np.float32))
        crops.add(gt.tobytes())
    assert crops == s2_crops  # that window, flipped and unflipped
    # Half network: the other half are crops of the drawn pair with the remaining modes.
    half = DataMix(coarse=CoarseMix(paper=0, lowres=0, sam=0, clean=1, network=1))
    drawn = [make_training_sample(cache, 0, np.random.default_rng(seed), half)[2].tobytes() for seed in range(40)]
    assert 10 <= sum(g in s2_crops for g in drawn) <= 30
    # Composites have no network mask: they draw from the other modes (here: sam only).
    composite_mix = DataMix(synthetic=1.0, coarse=CoarseMix(paper=0, lowres=0, sam=1, clean=0, network=1))
    sam_mix = DataMix(synthetic=1.0, coarse=CoarseMix(paper=0, lowres=0, sam=1, clean=0))
    a = make_training_sample(cache, 0, np.random.default_rng(4), composite_mix)
    b = make_training_sample(cache, 0, np.random.default_rng(4), sam_mix)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))


def test_network_masks_are_kept_as_bool_and_handed_out_as_float32_copies(tiny_data: Path, tmp_path: Path) -> None:
    pairs = list_pairs(tiny_data / "duts")
    network = tmp_path / "isnet"
    network.mkdir()
    gt = cv2.imread(str(tiny_data / "duts" / "masks" / "s1.png"), cv2.IMREAD_GRAYSCALE)
    drawn = np.zeros(gt.shape, np.uint8)
    drawn[2:9, 3:7] = 255
    drawn[10, 0] = 127  # under half: background
    drawn[11, 1] = 128  # half and over: foreground, as inference reads a mask at 0.5
    cv2.imwrite(str(network / f"{pairs[1].name}.png"), drawn)
    cache = PairCache(pairs, (network,))
    (mask,) = cache.network_masks(1)
    expected = np.zeros(gt.shape, np.float32)
    expected[2:9, 3:7] = 1.0
    expected[11, 1] = 1.0
    assert mask.dtype == np.float32
    np.testing.assert_array_equal(mask, expected)
    # The cache holds a quarter of the bytes (bool), and what it hands out is a copy a sample may write into.
    (kept,) = cache._network[1]
    assert kept.dtype == np.bool_ and kept.nbytes * 4 == mask.nbytes
    mask[:] = 0.5
    np.testing.assert_array_equal(cache.network_masks(1)[0], expected)


def test_tiny_run_writes_csv_log_with_named_validation_and_a_curve(tiny_data: Path, tmp_path: Path) -> None:
    import torch

    from crm_cli.training.loop import Trainer
    from crm_cli.training.options import TrainOptions

    out = tmp_path / "run"
    options = TrainOptions(data=str(tiny_data / "duts"), out=str(out), steps=2, batch=2, seed=3, val_every=2,
                           ckpt_every=2, val_images=2, arch=dict(TINY_ARCH), query_window=32, synthetic=0.5,
                           coarse_mix="paper=1,lowres=1,sam=1,clean=1", val_sets=[f"thin={tiny_data / 'big'}"],
                           val_ratios="0.5,1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(options).run()
    finally:
        torch.set_num_threads(threads)
    with open(out / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["1", "2"]
    header = list(rows[0])
    assert header[:8] == ["step", "lr", "loss", "bce", "l1", "l2", "grad", "seconds"]
    assert {"refined_mba", "thin_coarse_iou", "thin_coarse_mba", "thin_refined_iou", "thin_refined_mba"} <= set(header)
    assert rows[0]["thin_refined_mba"] == "" and rows[0]["loss"] != ""
    for row in rows[1:]:  # validated at the last step
        assert 0 <= float(row["thin_refined_iou"]) <= 1 and 0 < float(row["thin_coarse_iou"]) <= 1
        assert 0 < float(row["coarse_iou"]) <= 1 and 0 <= float(row["refined_mba"]) <= 1
    assert float(rows[0]["lr"]) == pytest.approx(options.lr)
    # The thin set's coarse scores are those of its _seg files, independent of the model.
    from crm_cli.metrics import DatasetScore, score_pair

    expected = DatasetScore()
    for k in range(2):
        seg = cv2.imread(str(tiny_data / "big" / f"t{k}_seg.png"), cv2.IMREAD_GRAYSCALE)
        gt = cv2.imread(str(tiny_data / "big" / f"t{k}_gt.png"), cv2.IMREAD_GRAYSCALE)
        expected.add(score_pair(seg, gt))
    assert float(rows[1]["thin_coarse_iou"]) == pytest.approx(expected.iou, abs=1e-5)
    # Resuming with another data mix is refused: the replayed batches would differ.
    for change in ({"coarse_mix": "paper=1"}, {"zoom": 2.0}, {"transpose": 0.5}):
        changed = TrainOptions(**{**options.__dict__, **change})
        with pytest.raises(ValueError, match="data mix"):
            Trainer(changed).resume()
    # A checkpoint written before --transpose existed holds no such option: it ran without a turn, and
    # resumes as such (and not with one).
    payload = torch.load(out / "last.pt", weights_only=False)
    del payload["options"]["transpose"]
    torch.save(payload, out / "last.pt")
    Trainer(options).resume()
    with pytest.raises(ValueError, match="data mix"):
        Trainer(TrainOptions(**{**options.__dict__, "transpose": 0.5})).resume()

    png = tmp_path / "curve.png"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "training_curve.py"), str(out), "-o", str(png),
                           "--width", "640", "--height", "400"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    image = cv2.imread(str(png))
    assert image.shape == (400, 640, 3)
    assert (image != 255).any(axis=2).mean() > 0.02  # something was drawn


def test_make_thin_val_writes_big_triples(tmp_path: Path) -> None:
    """The validation-set script on stand-in DUTS pairs (it skipped wherever ../shared/data was absent,
    CI included, until session 53)."""
    data = write_training_pairs(tmp_path / "duts", 21, (64, 80))
    out = tmp_path / "thin"
    command = [sys.executable, str(ROOT / "benchmarks" / "make_thin_val.py"), str(data), str(out), "--n", "1",
               "--min-side", "256", "--max-side", "320"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    image = cv2.imread(str(out / "thin000_im.jpg"))
    gt = cv2.imread(str(out / "thin000_gt.png"), cv2.IMREAD_GRAYSCALE)
    seg = cv2.imread(str(out / "thin000_seg.png"), cv2.IMREAD_GRAYSCALE)
    assert 256 <= max(image.shape[:2]) <= 320 and image.shape[:2] == gt.shape == seg.shape
    assert set(np.unique(seg)) <= {0, 255} and 0 < (gt > 128).mean() < 1
    again = tmp_path / "again"
    subprocess.run([*command[:3], str(again), *command[4:]], check=True, capture_output=True, timeout=300)
    assert (again / "thin000_seg.png").read_bytes() == (out / "thin000_seg.png").read_bytes()


def test_make_thin_train_links_the_photos_and_adds_composites_after_them(tmp_path: Path) -> None:
    """Session 47's training folder: every photo linked, composites whose names sort last (so the
    every-20th held-out split keeps the photos' own), each with a SAM-like mask of its size that
    the training reads as a network mask; the same command writes the same bytes."""
    duts = write_training_pairs(tmp_path / "duts", 21, (64, 80))
    out = tmp_path / "train"
    command = [sys.executable, str(ROOT / "benchmarks" / "make_thin_train.py"), str(duts), str(out), "--n", "2",
               "--min-side", "96", "--max-side", "128", "--seed", "5"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    pairs = list_pairs(out / "data")
    names = [pair.name for pair in pairs]
    assert names == [f"p{k:02d}" for k in range(21)] + ["zz_thin_0000", "zz_thin_0001"]
    assert all((out / "data" / "images" / f"p{k:02d}.jpg").resolve() == (duts / "images" / f"p{k:02d}.jpg").resolve()
               for k in range(21))
    assert [p.name for p in split_pairs(pairs)[1]] == [p.name for p in split_pairs(list_pairs(duts))[1]]
    for k in range(2):
        name = f"zz_thin_{k:04d}"
        image = cv2.imread(str(out / "data" / "images" / f"{name}.jpg"))
        gt = cv2.imread(str(out / "data" / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        coarse = cv2.imread(str(out / "coarse" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        assert 96 <= max(image.shape[:2]) <= 128 and image.shape[:2] == gt.shape == coarse.shape
        assert set(np.unique(coarse)) <= {0, 255} and 0 < (gt > 128).mean() < 1
    cache = PairCache(pairs, network_dirs=(out / "coarse",))
    assert cache.network_indices == [21, 22]
    # Drawn two at a time (session 58, for a GPU machine's cores), the same command writes the same bytes.
    again = tmp_path / "again"
    subprocess.run([*command[:3], str(again), *command[4:], "--workers", "2"], check=True, capture_output=True,
                   timeout=300)
    for name in ("zz_thin_0000", "zz_thin_0001"):
        for sub in (f"data/images/{name}.jpg", f"data/masks/{name}.png", f"coarse/{name}.png"):
            assert (again / sub).read_bytes() == (out / sub).read_bytes()
    no_workers = subprocess.run([*command[:3], str(tmp_path / "none"), *command[4:], "--workers", "0"],
                                capture_output=True, text=True, timeout=300)
    assert no_workers.returncode != 0 and "--workers must be at least 1" in no_workers.stderr
    # A folder that already holds composites is not the photos' own: refused in one line.
    refused = subprocess.run([*command[:2], str(out / "data"), str(tmp_path / "x")], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and "already holds zz_thin_" in refused.stderr
