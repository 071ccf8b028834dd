"""Pins for training (mutation review s63): the query window, the coarse-mask mix, the sample recipe, the
synthetic painter, the logs and the checkpoint a run resumes from. Tiny inputs, mostly direct calls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, synthetic_scene, write_training_pairs

from crm_cli.training import coarse, data, synthesis
from crm_cli.training.coarse import CoarseMix, make_coarse, mask_iou, synthesize_coarse
from crm_cli.training.data import DataMix, make_sample, random_crop, synthetic_coarse, too_many_unreadable
from crm_cli.training.logs import checked_header
from crm_cli.training.options import TrainOptions, query_window
from crm_cli.training.painter import Painter


# ---------------------------------------------------------------------------------------------- options
def test_the_query_window_reaches_every_position_of_the_crop() -> None:
    """query_window: the window's top and left take every value 0 .. size - window, the last one included."""
    tops, lefts = set(), set()
    for step in range(200):
        top, bottom, left, right = query_window(20, 16, seed=3, step=step)
        assert bottom - top == 16 and right - left == 16
        tops.add(top)
        lefts.add(left)
    assert tops == lefts == {0, 1, 2, 3, 4}
    assert query_window(20, 64, seed=3, step=0) == (0, 20, 0, 20)  # a window larger than the crop is the crop


def test_no_coarse_mix_is_the_papers_recipe_not_the_default_mix() -> None:
    """TrainOptions.data_mix: coarse_mix "" means the paper's perturbation only (None), not CoarseMix()."""
    assert TrainOptions(data="", out="").data_mix().coarse is None
    assert TrainOptions(data="", out="", coarse_mix="sam=1").data_mix().coarse == CoarseMix(0, 0, 1, 0, 0)


# ---------------------------------------------------------------------------------------------- coarse masks
def test_two_empty_masks_have_iou_one() -> None:
    """mask_iou: two empty masks agree (1.0), so an empty GT's coarse mask stops perturbing at once."""
    empty = np.zeros((8, 8), bool)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(empty, np.ones((8, 8), bool)) == 0.0


def test_a_coarse_mix_with_a_negative_weight_is_refused() -> None:
    """CoarseMix.parse refuses a negative weight even when the sum stays positive."""
    with pytest.raises(ValueError, match="weights must be >= 0"):
        CoarseMix.parse("paper=-1,sam=2")


def test_a_mix_of_network_only_falls_back_to_sam_for_composites() -> None:
    """CoarseMix.without_network: a mix whose only weight is network leaves sam (the fallback), not clean."""
    assert CoarseMix.parse("network=1").without_network() == CoarseMix(paper=0, lowres=0, sam=1, clean=0, network=0)
    assert CoarseMix.parse("paper=1,network=3").without_network() == CoarseMix(1, 0, 0, 0, 0)


def test_the_network_share_counts_every_mode() -> None:
    """CoarseMix.network_share is network's weight over all weights (network included): 0.5 for an even mix."""
    assert CoarseMix.parse("paper=0.5,network=0.5").network_share() == pytest.approx(0.5)
    assert CoarseMix.parse("paper=1,sam=1,network=2").network_share() == pytest.approx(0.5)


def test_lowres_cells_are_counted_along_the_long_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """lowres_coarse: n cells along the long side of a tall mask are n * width / height along its width."""
    seen = []

    def spy(gt8: np.ndarray, cells: int, seed: int) -> np.ndarray:
        seen.append(cells)
        return gt8

    monkeypatch.setattr(coarse, "lowres_network_mask", spy)
    coarse.lowres_coarse(np.zeros((200, 100), np.float32), np.random.default_rng(0), (20.0, 20.0))
    coarse.lowres_coarse(np.zeros((100, 200), np.float32), np.random.default_rng(0), (20.0, 20.0))
    assert seen == [10, 20]


def test_clean_mode_thresholds_above_one_half() -> None:
    """make_coarse clean: a GT value of exactly 0.5 is background, as everywhere else (gt > 0.5)."""
    gt = np.array([[0.5, 0.51], [0.0, 1.0]], np.float32)
    np.testing.assert_array_equal(make_coarse(gt, np.random.default_rng(0), "clean"), [[0, 1], [0, 1]])


# ---------------------------------------------------------------------------------------------- samples
def test_zoom_of_one_spends_no_draw_and_never_zooms(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_sample at zoom 1 never calls zoom_in (and so draws no number for it): earlier runs' samples stay."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("zoom_in called at zoom 1")

    monkeypatch.setattr(data, "zoom_in", refuse)
    image, mask = synthetic_scene(230, 240, seed=1)
    gt = mask.astype(np.float32) / 255
    for seed in range(8):
        make_sample(image, gt, np.random.default_rng(seed), CoarseMix.parse("clean=1"), zoom=1.0)


def test_validation_pairs_get_coarse_masks_of_their_own_index() -> None:
    """synthetic_coarse: pair k's coarse mask is synthesize_coarse with default_rng([12345, k])."""
    _, mask = synthetic_scene(96, 96, seed=2)
    gt = mask.astype(np.float32) / 255
    for index in (0, 1):
        np.testing.assert_array_equal(synthetic_coarse(gt, index),
                                      synthesize_coarse(gt, np.random.default_rng([12345, index])))
    assert not np.array_equal(synthetic_coarse(gt, 0), synthetic_coarse(gt, 1))


def test_exactly_a_tenth_unreadable_is_still_left_out() -> None:
    """too_many_unreadable: a run leaves out up to 10% of its pairs; only more than that stops it."""
    assert not too_many_unreadable(1, 10)
    assert too_many_unreadable(2, 10)
    assert not too_many_unreadable(0, 0)


def test_a_random_crop_reaches_the_last_column_and_row() -> None:
    """random_crop: on a 226 x 226 photo the 224 crop starts at 0, 1 or 2, the last offset included."""
    image = np.zeros((226, 226, 3), np.uint8)
    gt = np.zeros((226, 226), np.float32)
    gt[:, :] = 1000 * np.arange(226)[:, None] + np.arange(226)[None, :]
    tops, lefts = set(), set()
    for seed in range(40):
        _, crop, _ = random_crop(image, gt, np.random.default_rng(seed))
        tops.add(int(crop[0, 0]) // 1000)
        lefts.add(int(crop[0, 0]) % 1000)
    assert tops == lefts == {0, 1, 2}


# ---------------------------------------------------------------------------------------------- synthesis
def test_contrast_moves_the_other_way_when_there_is_no_room() -> None:
    """ensure_contrast: a texture brighter than a very bright background (mean > 200) is made darker."""
    texture = np.full((2, 2, 3), 252.0, np.float32)
    below = np.full((2, 2, 3), 250.0, np.float32)
    shifted = synthesis.ensure_contrast(texture, below, np.ones((2, 2), bool), 16.0)
    np.testing.assert_allclose(shifted, 252.0 - 14.0)
    dark = synthesis.ensure_contrast(np.full((2, 2, 3), 40.0, np.float32), np.full((2, 2, 3), 50.0, np.float32),
                                     np.ones((2, 2), bool), 16.0)
    np.testing.assert_allclose(dark, 40.0 + 6.0)  # darker than a dark (< 55) background: made brighter


# ---------------------------------------------------------------------------------------------- logs
def test_a_resumed_log_accepts_its_validation_sets_in_another_order(tmp_path: Path) -> None:
    """checked_header compares the sets, not their order: --val-set b=.. a=.. resumes a run given a=.. b=.."""
    first = "step,lr,a_coarse_iou,b_coarse_iou\r\n"
    assert checked_header(tmp_path / "log.csv", first, ["b", "a"]) == ["step", "lr", "a_coarse_iou", "b_coarse_iou"]


# ---------------------------------------------------------------------------------------------- loss
def test_the_gradient_term_weighs_twice() -> None:
    """crm_loss: total = bce + 0.5 l1 + 0.5 l2 + 2 grad, checked where the gradient term is not 0."""
    from crm_cli.training.loss import crm_loss

    gt = torch.zeros(1, 8, 8)
    gt[:, :, 4:] = 1.0
    total, terms = crm_loss(torch.zeros(1, 8, 8), gt)
    assert terms["grad"] > 0.1
    expected = terms["bce"] + 0.5 * terms["l1"] + 0.5 * terms["l2"] + 2.0 * terms["grad"]
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_bce_learns_the_binarised_ground_truth() -> None:
    """crm_loss: the BCE target is gt > 0.5 (a soft 0.7 counts as 1, 0.5 as 0); L1 and L2 use the soft GT."""
    from crm_cli.training.loss import crm_loss

    logits = torch.zeros(1, 2, 2)
    _, terms = crm_loss(logits, torch.full((1, 2, 2), 0.7))
    # sigmoid(0) = 0.5 against the target 1: log 2, whatever the soft value.
    assert terms["bce"] == pytest.approx(np.log(2), abs=1e-6)
    logits = torch.full((1, 2, 2), 3.0)
    _, soft = crm_loss(logits, torch.full((1, 2, 2), 0.7))
    assert soft["bce"] == pytest.approx(float(np.log1p(np.exp(-3.0))), abs=1e-6)  # -log sigmoid(3)
    _, half = crm_loss(logits, torch.full((1, 2, 2), 0.5))
    assert half["bce"] == pytest.approx(float(np.log1p(np.exp(3.0))), abs=1e-5)  # target 0: -log(1 - sigmoid(3))
    assert soft["l1"] == pytest.approx(abs(1 / (1 + np.exp(-3.0)) - 0.7), abs=1e-6)


def test_a_ground_truth_of_one_half_is_background_for_the_boundary_band() -> None:
    """boundary_band: the GT's edge is where it crosses > 0.5; a 0.5 plateau next to 0 is no boundary."""
    from crm_cli.training.loss import boundary_band

    gt = torch.zeros(1, 6, 6)
    gt[:, :, 3:] = 0.5
    assert boundary_band(gt, radius=1).sum() == 0
    gt[:, :, 3:] = 0.51
    assert boundary_band(gt, radius=1)[0, 0].tolist() == [0, 0, 1, 1, 0, 0]


# ---------------------------------------------------------------------------------------------- trainer
@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 small image/mask pairs in the DUTS-TR layout (pair 0 held out, 4 to train on)."""
    return write_training_pairs(tmp_path_factory.mktemp("pins_duts"), 5, (48, 56))


def _options(data_dir: Path, out: Path, **changes: object) -> TrainOptions:
    options = TrainOptions(data=str(data_dir), out=str(out), steps=4, batch=1, seed=7, val_every=1000,
                           ckpt_every=1000, val_images=2, arch=dict(TINY_ARCH, dropout=0.2), query_window=32,
                           init="random")
    for name, value in changes.items():
        setattr(options, name, value)
    return options


def test_a_checkpoint_from_before_a_schedule_field_existed_resumes(pairs: Path, tmp_path: Path) -> None:
    """Trainer.resume: a schedule field missing from the checkpoint's options is not compared (no KeyError)."""
    from crm_cli.training.loop import Trainer

    first = Trainer(_options(pairs, tmp_path / "r"))
    first.save_checkpoint()
    payload = torch.load(tmp_path / "r" / "last.pt", weights_only=False)
    del payload["options"]["query_window"]
    torch.save(payload, tmp_path / "r" / "last.pt")
    assert Trainer(_options(pairs, tmp_path / "r")).resume()


def test_a_resumed_trainer_knows_last_pt_holds_its_step(pairs: Path, tmp_path: Path) -> None:
    """Trainer.resume sets saved_step: a stop before the next step neither rewrites last.pt nor says otherwise."""
    from crm_cli.training.loop import Trainer

    first = Trainer(_options(pairs, tmp_path / "s"))
    first.train_step()
    first.save_checkpoint()
    resumed = Trainer(_options(pairs, tmp_path / "s"))
    assert resumed.resume() and resumed.step == 1 and resumed.saved_step == 1


def test_a_stop_before_the_first_step_writes_no_checkpoint(pairs: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Trainer.run: a Ctrl-C taken before any step leaves no last.pt at step 0 (there is nothing to resume)."""
    from crm_cli.training.loop import Trainer

    trainer = Trainer(_options(pairs, tmp_path / "c"))
    batches = trainer.batches

    def interrupted_batches():  # noqa: ANN202
        trainer.interrupted = True  # as the handler sets it for a Ctrl-C that comes now
        return batches()

    monkeypatch.setattr(trainer, "batches", interrupted_batches)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert trainer.step == 0 and trainer.saved_step is None
    assert not (tmp_path / "c" / "last.pt").exists()


def test_each_step_seeds_torch_from_seed_and_step_at_the_given_lr(pairs: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """train_step seeds torch with seed * 1_000_003 + step (new dropout masks each step) and uses --lr."""
    from crm_cli.training.loop import Trainer

    trainer = Trainer(_options(pairs, tmp_path / "t", lr=1e-3))
    seeds: list[int] = []
    real = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda seed: seeds.append(int(seed)) or real(seed))
    stats = [trainer.train_step() for _ in range(2)]
    assert seeds == [7 * 1_000_003, 7 * 1_000_003 + 1]
    assert [s["lr"] for s in stats] == [1e-3, 1e-3]
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3


def test_a_checkpoint_without_its_optimiser_is_not_a_training_checkpoint(tmp_path: Path) -> None:
    """read_checkpoint wants config, model, optimizer and step: one without the optimiser is refused by name."""
    from crm_cli.training.loop import read_checkpoint

    path = tmp_path / "last.pt"
    torch.save({"config": {}, "model": {}, "step": 3}, path)
    with pytest.raises(ValueError, match="last.pt: not a training checkpoint of crm train"):
        read_checkpoint(path)


def test_val_images_limits_the_validation_pairs_given(pairs: Path, tmp_path: Path) -> None:
    """Trainer: --val-images takes the first N of --val's pairs."""
    from crm_cli.training.data import list_pairs
    from crm_cli.training.loop import Trainer

    given = list_pairs(pairs)
    trainer = Trainer(_options(pairs, tmp_path / "v", val_images=2), val_pairs=given)
    assert trainer.val_pairs == given[:2]


def test_a_fresh_run_replaces_a_stale_log_of_other_validation_sets(pairs: Path, tmp_path: Path) -> None:
    """Trainer.start_logs at step 0 starts a new log, whatever an old log.csv in --out held."""
    from crm_cli.training.loop import Trainer

    out = tmp_path / "f"
    out.mkdir()
    (out / "log.csv").write_text("step,lr,other_coarse_iou\r\n1,0.1,0.5\r\n")
    trainer = Trainer(_options(pairs, out))
    columns = trainer.start_logs()
    assert columns == trainer.log_columns()
    assert (out / "log.csv").read_text().splitlines() == [",".join(columns)]


def test_an_out_holding_a_run_needs_resume(pairs: Path, tmp_path: Path) -> None:
    """crm train: an --out that holds last.pt without --resume is a usage error (exit 2) naming --out."""
    from typer.testing import CliRunner

    from crm_cli.cli import app

    out = tmp_path / "held"
    out.mkdir()
    (out / "last.pt").write_bytes(b"a run")
    result = CliRunner().invoke(app, ["train", "--data", str(pairs), "--out", str(out), "--steps", "1", "--batch",
                                      "1", "--init", "random", "--query-window", "32", "--val-images", "1"])
    assert result.exit_code == 2
    assert "already holds a run; pass --resume" in result.stderr
    assert (out / "last.pt").read_bytes() == b"a run"


def test_paper_coarse_masks_stop_just_below_their_drawn_iou_target() -> None:
    """synthesize_coarse: the target is the generator's first draw, U(0.8, 1.0); the mask ends below it, above 0.75."""
    _, mask = synthetic_scene(224, 224, seed=3)
    gt = mask.astype(np.float32) / 255
    for seed in range(12):
        target = np.random.default_rng(seed).uniform(0.8, 1.0)
        iou = mask_iou(synthesize_coarse(gt, np.random.default_rng(seed)) > 0.5, gt > 0.5)
        assert 0.75 < iou < target, (seed, target, iou)


def test_photo_crops_of_a_network_mix_draw_from_the_other_modes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """mix_sample: with network masks, a crop not taken for the network mode uses the mix without network."""
    import shutil

    from crm_cli.training.data import NETWORK_ONLY, PairCache, list_pairs, mix_sample

    root = write_training_pairs(tmp_path / "d", 2, (48, 56))
    (tmp_path / "net").mkdir()
    shutil.copy(root / "masks" / "p00.png", tmp_path / "net" / "p00.png")
    cache = PairCache(list_pairs(root), (tmp_path / "net",), stand_ins=True)
    seen: list[CoarseMix | None] = []
    real = data.sample_coarse

    def spy(gt, image, rng, coarse_mix, network_masks=()):  # noqa: ANN001, ANN202
        seen.append(coarse_mix)
        return real(gt, image, rng, coarse_mix, network_masks)

    monkeypatch.setattr(data, "sample_coarse", spy)
    for seed in range(10):
        mix_sample(cache, 1, np.random.default_rng(seed), DataMix(coarse=CoarseMix.parse("paper=1,network=1")))
    assert NETWORK_ONLY in seen and CoarseMix(1, 0, 0, 0, 0) in seen
    assert set(seen) <= {NETWORK_ONLY, CoarseMix(1, 0, 0, 0, 0)}


def test_averaging_checkpoints_of_two_architectures_is_refused_by_name(tmp_path: Path) -> None:
    """average_checkpoints: two files of different architectures are a ValueError naming both."""
    from conftest import make_tiny_model

    from crm_cli.checkpoint import save_weights
    from crm_cli.config import ArchConfig
    from crm_cli.model import build_crm
    from crm_cli.training.averaging import average_checkpoints

    base, other = tmp_path / "base.safetensors", tmp_path / "other.safetensors"
    save_weights(make_tiny_model(0), base, half=False)
    save_weights(build_crm(ArchConfig.from_dict(dict(TINY_ARCH, hidden_dim=4))).eval(), other, half=False)
    with pytest.raises(ValueError, match="base.safetensors and .*other.safetensors have different architectures"):
        average_checkpoints(base, other, 0.5, tmp_path / "avg.safetensors")
    assert not (tmp_path / "avg.safetensors").exists()


@pytest.mark.parametrize(("side", "draws"), [(8, 1), (4, 8)])
def test_a_composite_is_redrawn_only_under_half_a_percent_coverage(side: int, draws: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """composite: a draw covering 1% of the image is kept; one covering 0.4% is redrawn (max_tries times)."""
    calls = []

    def box(painter: Painter, rng: np.random.Generator, scale: float) -> None:
        calls.append(1)
        painter.rect(10, 10, 10 + side, 10 + side)

    monkeypatch.setitem(synthesis.SHAPES, "box", box)
    library = synthesis.ArrayLibrary([np.full((80, 80, 3), 90, np.uint8)])
    sample = synthesis.composite(np.random.default_rng(0), library, 80, 80, kinds={"box": 1.0}, layers=(1, 1))
    assert len(calls) == draws
    assert float(sample.gt.mean()) == pytest.approx(side * side / 6400)


# ---------------------------------------------------------------------------------------------- painter
def test_a_frame_is_a_rectangle_with_a_hole() -> None:
    """Painter: a rect drawn with value=False clears what lies under it (frames in draw_polygons)."""
    p = Painter(20, 20, supersample=2)
    p.rect(2, 2, 12, 12)
    p.rect(4, 4, 10, 10, value=False)
    alpha = p.alpha()
    assert alpha.sum() == 100 - 36 and alpha[5, 5] == 0 and alpha[2, 2] == 1


def test_stripes_cover_the_points_strictly_below_their_width() -> None:
    """Painter.stripes: a centre whose distance modulo spacing equals the width is outside ("below width")."""
    p = Painter(8, 4, supersample=1)
    p.stripes((0, 0, 4, 8), angle=0.0, spacing=4.0, width=1.5)  # row centres 0.5, 1.5, 2.5, 3.5 across
    np.testing.assert_array_equal(p.alpha()[:, 0], [1, 0, 0, 0, 1, 0, 0, 0])


def test_a_capsule_holds_the_points_at_exactly_its_radius() -> None:
    """Painter.capsule: all points within the radius, its boundary included (distance <= radius)."""
    p = Painter(5, 5, supersample=1)
    p.capsule((2.5, 2.5), (2.5, 2.5), 1.0)  # centres at distance 1 from the point: its four neighbours
    assert p.alpha().sum() == 5 and p.alpha()[1, 2] == 1 and p.alpha()[2, 1] == 1


def test_a_subpixel_centre_on_a_rectangles_left_edge_is_inside() -> None:
    """Painter.rect spans [x0, x1): a sub-pixel centre lying on x0 is drawn."""
    p = Painter(1, 1, supersample=4)
    p.rect(0.125, 0, 1.0, 1.0)  # sub-pixel centres at x = 0.125, 0.375, 0.625, 0.875
    assert p.alpha()[0, 0] == 1.0


def test_min_contrast_is_against_what_lies_below_not_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    """composite: a second layer of the first one's colour over it is shifted by min_contrast (it would vanish)."""
    monkeypatch.setitem(synthesis.SHAPES, "box", lambda painter, rng, scale: painter.rect(10, 10, 30, 30))
    monkeypatch.setattr(synthesis, "foreground_texture",
                        lambda rng, lib, background, index: np.full(background.shape, 150.0, np.float32))
    library = synthesis.ArrayLibrary([np.full((40, 40, 3), 90, np.uint8)])
    sample = synthesis.composite(np.random.default_rng(0), library, 40, 40, kinds={"box": 1.0}, layers=(2, 2),
                                 min_contrast=16.0)
    assert sample.kinds == ["box", "box"]
    assert (sample.image[10:30, 10:30] == 166).all() and (sample.image[:10] == 90).all()


# ---------------------------------------------------------------------------------------------- options of crm train
def test_a_validation_set_named_twice_or_without_a_folder_is_refused(tmp_path: Path) -> None:
    """parse_val_sets: a NAME given twice, or NAME= with no folder (not the current folder), is refused."""
    from crm_cli.training.validation import parse_val_sets

    with pytest.raises(ValueError, match="validation set 'a' given twice"):
        parse_val_sets([f"a={tmp_path}", f"a={tmp_path}"])
    with pytest.raises(ValueError, match="expected NAME=FOLDER"):
        parse_val_sets(["a="])
    assert parse_val_sets([f"a={tmp_path}"]) == {"a": tmp_path}


def test_the_check_is_announced_from_a_thousand_pairs_on(capsys: pytest.CaptureFixture[str]) -> None:
    """announce_check: exactly ANNOUNCED_CHECK_PAIRS (1,000) pairs are announced."""
    from crm_cli.cli.train import announce_check

    announce_check(1000)
    assert capsys.readouterr().err == "train: checking 1,000 pairs...\n"


def test_a_big_layout_validation_set_takes_its_first_val_images_triples(tmp_path: Path) -> None:
    """folder_set: a BIG-layout set keeps only its first ``limit`` triples (--val-images)."""
    import cv2

    from crm_cli.training.validation import folder_set

    for k in range(3):
        image, mask = synthetic_scene(40, 48, seed=k)
        cv2.imwrite(str(tmp_path / f"t{k}_im.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(tmp_path / f"t{k}_gt.png"), mask)
        cv2.imwrite(str(tmp_path / f"t{k}_seg.png"), mask)
    chosen = folder_set(tmp_path, "thin", 2, None)
    assert chosen.prefix == "thin_" and len(chosen.samples) == 2


def test_held_out_pairs_are_refined_in_one_stage_at_full_size(pairs: Path) -> None:
    """synthetic_set: the held-out (low-resolution) pairs are scored with one stage at s = 1, ratios (1.0,)."""
    from crm_cli.training.data import list_pairs
    from crm_cli.training.validation import synthetic_set

    held_out = synthetic_set("", list_pairs(pairs)[:2], "to validate on")
    assert held_out.ratios == (1.0,) and len(held_out.samples) == 2 and held_out.left_out == ()


def test_a_run_resumes_after_its_unreadable_pairs_were_removed(tmp_path: Path) -> None:
    """Trainer.resume: the pairs of --data may lack those the checkpoint left out as unreadable (removed since)."""
    from crm_cli.training.loop import Trainer

    root = write_training_pairs(tmp_path / "d", 5, (48, 56))
    first = Trainer(_options(root, tmp_path / "o"))
    first.left_out["p04"] = "p04.jpg: damaged"
    first.save_checkpoint()
    (root / "images" / "p04.jpg").unlink()
    (root / "masks" / "p04.png").unlink()
    resumed = Trainer(_options(root, tmp_path / "o"))
    assert resumed.resume() and resumed.left_out == {}
    (root / "masks" / "p03.png").rename(root / "masks" / "p05.png")
    (root / "images" / "p03.jpg").rename(root / "images" / "p05.jpg")
    with pytest.raises(ValueError, match="the run trained on other pairs than the 4 of --data"):
        Trainer(_options(root, tmp_path / "o")).resume()
