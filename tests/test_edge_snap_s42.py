"""Edge snapping (edge_snap.py): the guided filter against a naive reference, hand-computed cases, the
tiled snap against the whole-image filter, thin parts kept, and the engine's and CLI's switches."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import featureless_photo
from typer.testing import CliRunner

from crm_cli.edge_snap import (
    SNAP_EPS,
    SNAP_MIN_SIDE,
    SNAP_MIN_VARIANCE,
    SNAP_RADIUS,
    TILE,
    guided_filter,
    snap_radius,
    snap_to_edges,
    window_statistics,
)
from crm_cli.morphology import near_boundary, thin_parts


def naive_guided_filter(guide: np.ndarray, values: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s filter written out window by window in float64 (borders mirrored as OpenCV's
    BORDER_REFLECT, numpy's "symmetric")."""
    height, width = guide.shape
    size = 2 * radius + 1
    padded_guide = np.pad(guide.astype(np.float64), radius, mode="symmetric")
    padded_values = np.pad(values.astype(np.float64), radius, mode="symmetric")
    slope = np.empty((height, width))
    offset = np.empty((height, width))
    for y in range(height):
        for x in range(width):
            g = padded_guide[y:y + size, x:x + size]
            v = padded_values[y:y + size, x:x + size]
            covariance = (g * v).mean() - g.mean() * v.mean()
            slope[y, x] = covariance / (g.var() + eps)
            offset[y, x] = v.mean() - slope[y, x] * g.mean()
    padded_slope = np.pad(slope, radius, mode="symmetric")
    padded_offset = np.pad(offset, radius, mode="symmetric")
    out = np.empty((height, width))
    for y in range(height):
        for x in range(width):
            out[y, x] = (padded_slope[y:y + size, x:x + size].mean() * guide[y, x]
                         + padded_offset[y:y + size, x:x + size].mean())
    return out


@pytest.mark.parametrize("radius, eps", [(1, 1e-3), (2, 1e-3), (3, 0.05)])
def test_guided_filter_equals_the_naive_reference(radius: int, eps: float) -> None:
    rng = np.random.default_rng(radius)
    guide = rng.random((13, 17), dtype=np.float32)
    values = rng.random((13, 17), dtype=np.float32)
    fast = guided_filter(guide, values, radius, eps)
    assert fast.dtype == np.float32 and fast.shape == (13, 17)
    np.testing.assert_allclose(fast, naive_guided_filter(guide, values, radius, eps), atol=2e-5)


def test_guided_filter_hand_computed_cases() -> None:
    # A flat guide explains nothing (slope 0): the output is the mean of the window means. On a
    # 1x5 row [0 0 0 0 5] with r = 1 and mirrored borders, the window means are
    # [0, 0, 0, 5/3, 10/3] and their window means [0, 0, 5/9, 5/3, 25/9].
    guide = np.zeros((1, 5), np.float32)
    values = np.array([[0, 0, 0, 0, 5]], np.float32)
    np.testing.assert_allclose(guided_filter(guide, values, 1, 1e-3)[0], [0, 0, 5 / 9, 5 / 3, 25 / 9], atol=1e-5)
    # Values that are a linear function of the guide are kept where eps is negligible: 0.5 g + 0.1.
    guide = np.random.default_rng(1).random((9, 11), dtype=np.float32)
    np.testing.assert_allclose(guided_filter(guide, 0.5 * guide + 0.1, 2, 1e-9), 0.5 * guide + 0.1, atol=1e-4)
    # A constant map stays constant, whatever the guide.
    np.testing.assert_allclose(guided_filter(guide, np.full_like(guide, 0.25), 2, 1e-3), 0.25, atol=1e-6)


def test_snap_radius_by_photo_size() -> None:
    assert snap_radius(SNAP_MIN_SIDE, 10) == snap_radius(10, SNAP_MIN_SIDE) == SNAP_RADIUS == 2
    assert snap_radius(SNAP_MIN_SIDE - 1, SNAP_MIN_SIDE - 1) == 0
    assert snap_radius(400, 300) == 0


def test_thin_parts_and_near_boundary_by_hand() -> None:
    foreground = np.zeros((20, 20), bool)
    foreground[2:18, 2:12] = True  # a 10-px-wide block
    foreground[2:18, 14:16] = True  # a 2-px strand, a 2-px gap from the block
    thin = thin_parts(foreground, 2)
    assert thin[2:18, 14:16].all()  # a disc of radius 2 (5 px across) fits in no part of the strand
    assert thin[5:15, 12:14].all()  # nor in the gap between block and strand
    assert not thin[5:15, 3:11].any()  # the block is thick
    near = near_boundary(foreground, 1)
    # Within 1 px (3x3 disc) of a pixel with a neighbour across the boundary: columns 1..4 of the
    # block's left side, the boundary at column 2 (pixels 1 and 2 each touch the other side).
    assert near[10, 0:5].tolist() == [True, True, True, True, False]


def edge_scene(height: int, width: int, edge_col: int) -> np.ndarray:
    """Grey 60 left of ``edge_col``, 200 from it on, with mild noise, as RGB uint8."""
    rng = np.random.default_rng(3)
    grey = np.full((height, width), 60.0)
    grey[:, edge_col:] = 200.0
    grey += rng.normal(0, 2, grey.shape)
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_snap_moves_a_boundary_one_pixel_off_onto_the_edge() -> None:
    image = edge_scene(64, 64, 30)
    probability = np.zeros((64, 64), np.float32)
    probability[:, 31:] = 1.0  # one column short of the edge at 30
    probability[:, 30] = 0.3
    snapped = snap_to_edges(image, probability, radius=2)
    expected = np.zeros((64, 64), bool)
    expected[:, 30:] = True
    np.testing.assert_array_equal(snapped > 0.5, expected)
    assert snapped.dtype == np.float32 and snapped.min() >= 0.0 and snapped.max() <= 1.0
    np.testing.assert_array_equal(snapped[:, :26], 0.0)  # farther than r from the boundary: untouched
    np.testing.assert_array_equal(snapped[:, 35:], 1.0)
    assert probability[0, 30] == np.float32(0.3)  # the input is not written into


def test_tiled_snap_equals_the_whole_image_filter_where_it_may_move() -> None:
    rng = np.random.default_rng(7)
    height, width = TILE + 137, 2 * TILE + 59  # tiles cut through the boundary, with a partial last tile
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 1.5)
    yy, xx = np.mgrid[0:height, 0:width]
    inside = ((yy - height / 2) / (0.35 * height)) ** 2 + ((xx - width / 2) / (0.4 * width)) ** 2
    probability = np.clip(1.5 - inside, 0, 1).astype(np.float32) + rng.normal(0, 0.05, (height, width)).astype(
        np.float32)
    probability = np.clip(probability, 0, 1)
    snapped = snap_to_edges(image, probability, radius=2)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    whole = np.clip(guided_filter(grey, probability, 2, SNAP_EPS), 0, 1)
    foreground = probability > 0.5
    movable = near_boundary(foreground, 2) & ~thin_parts(foreground, 2)
    movable &= window_statistics(grey, 2)[1] >= SNAP_MIN_VARIANCE
    assert movable.sum() > 1000 and (~movable).sum() > 1000
    np.testing.assert_allclose(snapped[movable], whole[movable], atol=1e-5)
    np.testing.assert_array_equal(snapped[~movable], probability[~movable])


def test_a_thin_low_contrast_strand_is_kept() -> None:
    image = edge_scene(80, 80, 40)  # a strong edge at column 40...
    image[:, 20:22] += 12  # ...and a 2-px strand that differs little from its background
    probability = np.zeros((80, 80), np.float32)
    probability[:, 40:] = 1.0
    probability[:, 20:22] = 0.65  # drawn, the model unsure of it
    snapped = snap_to_edges(image, probability, radius=2)
    np.testing.assert_array_equal(snapped[:, 20:22], np.float32(0.65))  # the window's average would erase it
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    assert (window_statistics(grey, 2)[1][:, 18:24] >= SNAP_MIN_VARIANCE).all()  # not flat: thin_parts keeps it
    assert (guided_filter(grey, probability, 2, SNAP_EPS)[:, 20:22] < 0.5).all()  # as the filter alone does
    assert (snapped[:, 40:] > 0.5).all() and (snapped[:, :38] <= 0.5)[:, 23:].all()


def test_nothing_moves_on_a_flat_photo_and_a_drawn_rectangle_stays_exact() -> None:
    probability = np.zeros((300, 400), np.float32)
    probability[50:200, 80:300] = 1.0
    flat = np.full((300, 400, 3), 128, np.uint8)
    np.testing.assert_array_equal(snap_to_edges(flat, probability, radius=2), probability)
    grey = np.zeros((300, 400), np.float32)
    assert (guided_filter(grey, probability, 2, SNAP_EPS)[50, 80] < 0.5)  # the filter alone rounds the corner
    drawn = np.full((300, 400, 3), 60, np.uint8)
    drawn[50:200, 80:300] = 190
    np.testing.assert_array_equal(snap_to_edges(drawn, probability, radius=2) > 0.5, probability > 0.5)


def test_radius_zero_and_nothing_to_move_return_copies() -> None:
    image = edge_scene(32, 32, 16)
    probability = np.zeros((32, 32), np.float32)
    probability[:, 16:] = 1.0
    empty = np.zeros((32, 32), np.float32)
    for radius in (0, 2):
        out = snap_to_edges(image, empty, radius=radius)
        assert not np.shares_memory(out, empty) and not out.any()
    out = snap_to_edges(image, probability, radius=0)
    assert not np.shares_memory(out, probability)
    np.testing.assert_array_equal(out, probability)
    fortran = np.asfortranarray(probability)
    assert snap_to_edges(image, fortran, radius=2).flags.c_contiguous


def stub_stages(refiner, monkeypatch: pytest.MonkeyPatch, output: np.ndarray) -> None:  # noqa: ANN001
    def fake_stages(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return output.copy()

    monkeypatch.setattr(refiner, "_run_stages", fake_stages)


def test_engine_snaps_large_photos_only_and_obeys_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_tiny_model

    from crm_cli.engine import Refiner

    refiner = Refiner.from_model(make_tiny_model(), device="cpu")
    for size, radius in ((1024, 2), (600, 0)):
        image = edge_scene(size, size, size // 2)
        model_output = np.zeros((size, size), np.float32)
        model_output[:, size // 2 + 1:] = 1.0  # a pixel short of the edge, as the stub's "model" says
        model_output[:, size // 2] = 0.3
        coarse = np.zeros((size, size), np.float32)
        coarse[:, size // 2 - 3:] = 1.0
        stub_stages(refiner, monkeypatch, model_output)
        result = refiner.refine_detailed(image, coarse, preset="balanced")
        assert result.snap_px == radius
        if radius:
            assert (result.probability[:, size // 2] > 0.5).all()  # moved onto the edge
        else:
            np.testing.assert_array_equal(result.probability, model_output)
        plain = refiner.refine_detailed(image, coarse, preset="balanced", snap=False)
        assert plain.snap_px == 0
        np.testing.assert_array_equal(plain.probability, model_output)
        np.testing.assert_array_equal(refiner.refine(image, coarse, preset="balanced", snap=False), model_output)


def test_a_kept_coarse_mask_is_not_snapped(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_tiny_model

    from crm_cli.engine import Refiner

    refiner = Refiner.from_model(make_tiny_model(), device="cpu")
    size = 1024
    image = featureless_photo(size, size)  # no edges vouch for the boundary: trust 0
    coarse = np.zeros((size, size), np.float32)
    coarse[:, size // 2:] = 1.0
    unsure = coarse.copy()
    unsure[100:108, size // 2 - 8:size // 2] = 0.6  # a change the model is unsure of: the gate keeps coarse
    stub_stages(refiner, monkeypatch, unsure)
    result = refiner.refine_detailed(image, coarse, ratios="0.5,1")
    assert result.kept_coarse and result.snap_px == 0
    np.testing.assert_array_equal(result.probability, coarse)
    # Taken (no gate without the guard), the same output is snapped onto an edge 1 px away.
    edged = edge_scene(size, size, size // 2 + 1)
    taken = refiner.refine_detailed(edged, coarse, ratios="0.5,1", guard=False)
    assert taken.snap_px == 2 and (taken.probability[200:, size // 2] < 0.5).all()  # rows clear of the block


def test_in_a_blend_the_snap_is_taken_in_the_refinement_s_share(monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import make_tiny_model

    import crm_cli.engine as engine

    refiner = engine.Refiner.from_model(make_tiny_model(), device="cpu")
    size = 1024
    image = featureless_photo(size, size)
    coarse = np.zeros((size, size), np.float32)
    coarse[:, size // 2:] = 1.0
    near_threshold = coarse.copy()
    near_threshold[100:108, size // 2 - 8:size // 2] = 0.745  # change confidence 0.49: a blend
    stub_stages(refiner, monkeypatch, near_threshold)
    marked = near_threshold.copy()
    marked[600:610, size // 2 - 4:size // 2] = 1.0  # what the stand-in snap makes of the refinement

    def fake_snap(image, probability, radius, noise):  # noqa: ANN001, ANN202
        np.testing.assert_array_equal(probability, near_threshold)  # the refinement, not the blend
        assert noise == 0.0  # a photo without noise
        return marked.copy()

    monkeypatch.setattr(engine, "snap_to_edges", fake_snap)
    result = refiner.refine_detailed(image, coarse)
    assert result.kept_coarse and 0.0 < result.change_weight < 0.5 and result.snap_px == 2
    weight = np.float32(result.change_weight)
    np.testing.assert_allclose(result.probability, coarse + weight * (marked - coarse), atol=1e-7)


def big_scene_files(folder: Path) -> tuple[Path, Path]:
    """A 1024x768 synthetic photo and its exact mask, where the snap runs."""
    from conftest import synthetic_scene

    folder.mkdir(parents=True, exist_ok=True)
    image, gt = synthetic_scene(768, 1024)
    cv2.imwrite(str(folder / "a_im.png"), image[..., ::-1])
    cv2.imwrite(str(folder / "a_gt.png"), gt)
    cv2.imwrite(str(folder / "a_seg.png"), gt)
    return folder / "a_im.png", folder / "a_seg.png"


def test_cli_switch_reaches_refine_eval_time_and_batch(tmp_path: Path, tiny_weights: Path) -> None:  # noqa: ANN001
    from crm_cli.cli import app

    image, mask = big_scene_files(tmp_path / "big")
    runner = CliRunner()
    common = ["-w", str(tiny_weights), "--preset", "balanced", "--json", "-q"]  # no gate: the change is taken
    for flag, radius in (([], 2), (["--snap"], 2), (["--no-snap"], 0)):
        out = tmp_path / f"out{len(flag)}{radius}.png"
        result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), *common, *flag])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["snap_px"] == radius and out.is_file()
        result = runner.invoke(app, ["eval", str(tmp_path / "big"), *common, *flag])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["snap"] is bool(radius) and summary["images"][0]["snap_px"] == radius
    for flag, radius in (([], 2), (["--no-snap"], 0)):
        result = runner.invoke(app, ["time", "--size", "1024x768", "--repeat", "1", *common, *flag])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["snap_px"] == radius
    outputs = tmp_path / "batch"
    result = runner.invoke(app, ["batch", str(tmp_path / "big"), "-o", str(outputs), *common, "--no-snap"])
    assert result.exit_code == 0, result.output
    assert [item.get("snap_px") for item in json.loads(result.stdout)["items"]] == [0]


def test_cli_switch_and_json_fields(tmp_path: Path, tiny_weights: Path) -> None:  # noqa: ANN001
    from conftest import synthetic_scene

    from crm_cli.cli import app

    image, gt = synthetic_scene(96, 128)
    cv2.imwrite(str(tmp_path / "im.png"), image[..., ::-1])
    cv2.imwrite(str(tmp_path / "mask.png"), gt)
    runner = CliRunner()
    for flag, snap in (("--snap", True), ("--no-snap", False)):
        out = tmp_path / f"out{snap}.png"
        result = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "mask.png"), "-o", str(out),
                                     "-w", str(tiny_weights), "--json", "-q", flag])
        assert result.exit_code == 0, result.output
        record = json.loads(result.stdout)
        assert record["snap_px"] == 0  # 128 px: below SNAP_MIN_SIDE either way
        assert out.is_file()
    folder = tmp_path / "big"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_im.png"), image[..., ::-1])
    cv2.imwrite(str(folder / "a_gt.png"), gt)
    cv2.imwrite(str(folder / "a_seg.png"), gt)
    for flag, snap in (([], True), (["--no-snap"], False)):
        result = runner.invoke(app, ["eval", str(folder), "-w", str(tiny_weights), "--json", "-q", *flag])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["snap"] is snap and summary["images"][0]["snap_px"] == 0


def test_label_map_rectangles_stay_exact_where_the_snap_runs() -> None:
    """test_auto's rectangles at 1280x960, where the shipped model's output is snapped."""
    from conftest import rectangles_scene

    from crm_cli.engine import Refiner
    from crm_cli.labels import refine_labels
    from crm_cli.pipeline import PresetRefiner
    from crm_cli.presets import PRESETS

    image, labels = rectangles_scene(scale=2)
    per_label = PresetRefiner(Refiner(device="cpu"), PRESETS["auto"])
    refined = refine_labels(per_label, image, labels)
    assert [detail.snap_px for detail in per_label.details] == [2, 2]
    for label in (1, 2):
        np.testing.assert_array_equal(refined == label, labels == label)


def test_batch_records_name_the_snap_only_when_on_and_resume_accordingly(tmp_path: Path,
                                                                         tiny_weights: Path) -> None:  # noqa: ANN001
    from batch_records import record_of

    from crm_cli.cli import app
    from crm_cli.presets import PRESETS

    assert PRESETS["auto"].record()["snap"] is True
    assert "snap" not in PRESETS["auto"].overridden(snap=False).record()
    big_scene_files(tmp_path / "big")
    runner = CliRunner()
    outputs = tmp_path / "out"
    args = ["batch", str(tmp_path / "big"), "-o", str(outputs), "-w", str(tiny_weights), "--json", "-q"]
    result = runner.invoke(app, [*args, "--no-snap"])
    assert result.exit_code == 0, result.output
    (output,) = outputs.iterdir()
    assert "snap" not in record_of(output)["preset"]  # as every record written before the snap
    again = runner.invoke(app, [*args, "--no-snap"])
    assert json.loads(again.stdout)["skipped"] == 1
    # The default run (snap on) makes other pixels: the older record is refined again, with the warning.
    default = runner.invoke(app, args[:-2] + ["--json"])
    assert default.exit_code == 0, default.output
    assert json.loads(default.stdout)["done"] == 1 and "edge snap" in default.stderr
    assert record_of(output)["preset"]["snap"] is True
    # A photo under 1000 px, which the snap leaves as it is: its older output is kept by the default run.
    from conftest import synthetic_scene

    small = tmp_path / "small"
    small.mkdir()
    image, gt = synthetic_scene(480, 640)
    cv2.imwrite(str(small / "b_im.png"), image[..., ::-1])
    cv2.imwrite(str(small / "b_seg.png"), gt)
    small_args = ["batch", str(small), "-o", str(tmp_path / "small_out"), "-w", str(tiny_weights), "--json"]
    assert runner.invoke(app, [*small_args, "-q", "--no-snap"]).exit_code == 0
    kept = runner.invoke(app, small_args)
    assert kept.exit_code == 0, kept.output
    assert json.loads(kept.stdout)["skipped"] == 1 and "edge snap" not in kept.stderr
