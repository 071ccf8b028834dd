"""Pins for the fast inference path found weak by a mutation review (session 62).

The NumPy decoder was only compared with the torch decoder, and the code both backends share
(tile windows and margins, the ROI band, the band's map onto the stage input, the stage image
resize) only with itself. These tests compare it with the literal reference
(tests/reference_decoder.py), with the GPU formulas, or with values worked out by hand.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from conftest import make_tiny_model, synthetic_scene
from reference_decoder import naive_decode

from crm_cli.model import ImplicitDecoder
from crm_cli.onnx_runner import NumpyDecoder, OnnxStageRunner, sigmoid
from crm_cli.roi import _band_to_stage_tensor, band_to_stage_array, roi_band_array
from crm_cli.stage_geometry import STAGE_PAD, TiledRunner, encode_windows, tile_windows

LATENT = 24


def decoders(seed: int) -> tuple[ImplicitDecoder, NumpyDecoder]:
    """A random torch decoder (weights large enough that every input matters) and its NumPy twin."""
    torch.manual_seed(seed)
    decoder = ImplicitDecoder(LATENT, 16, 3)
    with torch.no_grad():
        for layer in decoder.layers:
            layer.weight.normal_(0, 1.5 / math.sqrt(layer.in_features))
            layer.bias.normal_(0, 0.5)
    layers = [(layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()) for layer in decoder.layers]
    return decoder, NumpyDecoder(layers, LATENT)


def padded_cells(n_stage: int, pad: int = STAGE_PAD) -> int:
    padded = n_stage + 2 * pad
    return (padded + (-padded) % 16) // 2


def latent_and_g(decoder: ImplicitDecoder, shape: tuple[int, int], seed: int) -> tuple[torch.Tensor, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, LATENT, *shape, generator=generator)
    with torch.no_grad():
        g = decoder.project(latent)[0].numpy().copy()
    return latent, g


@pytest.mark.parametrize(("target", "stage"), [((23, 31), (11, 16)), ((20, 17), (20, 17)), ((10, 14), (18, 25)),
                                               ((9, 13), (18, 26))])
def test_numpy_dense_decode_equals_the_literal_reference(target, stage) -> None:  # noqa: ANN001
    """NumpyDecoder.decode (row bands of 2 rows, and of 1) equals naive_decode, the stage shrunk, kept and
    enlarged; 9x13 onto 18x26 puts target pixels exactly on latent cells' centres, where the reference's
    +-half-cell points fell onto one neighbour (up to 0.84 apart) until it shifted them by TIE_SHIFT."""
    decoder, numpy_decoder = decoders(seed=target[0])
    latent, g = latent_and_g(decoder, (padded_cells(stage[0]), padded_cells(stage[1])), seed=1)
    with torch.no_grad():
        slow = naive_decode(decoder.layers, latent, target, stage, STAGE_PAD)[0].numpy()
    assert slow.std() > 0.1  # the logits vary: not a constant comparison
    fast = numpy_decoder.decode(g, target, stage, STAGE_PAD, chunk=2 * target[1])
    np.testing.assert_allclose(fast, slow, atol=1e-4, rtol=0)
    single_rows = numpy_decoder.decode(g, target, stage, STAGE_PAD, chunk=1)
    np.testing.assert_allclose(single_rows, slow, atol=1e-4, rtol=0)


def test_numpy_scattered_decode_equals_the_literal_reference() -> None:
    """decode_scattered in 5-point chunks (the last one short) equals naive_decode at those pixels
    (a 40 x 56 latent: the flat index must use its width)."""
    target, stage = (30, 47), (15, 40)
    decoder, numpy_decoder = decoders(seed=4)
    latent, g = latent_and_g(decoder, (padded_cells(stage[0]), padded_cells(stage[1])), seed=2)
    with torch.no_grad():
        slow = naive_decode(decoder.layers, latent, target, stage, STAGE_PAD)[0].numpy()
    rows = numpy_decoder.axis_table(target[0], stage[0], g.shape[0], STAGE_PAD, axis=0)
    cols = numpy_decoder.axis_table(target[1], stage[1], g.shape[1], STAGE_PAD, axis=1)
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, target[0], 23), rng.integers(0, target[1], 23)
    ys[-1], xs[-1] = target[0] - 1, target[1] - 1
    got = numpy_decoder.decode_scattered(g, rows, cols, ys, xs, chunk=5)
    np.testing.assert_allclose(got, slow[ys, xs], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("n_target", "n_stage", "n_latent", "pad"), [(6, 4, 2, 0), (60, 20, 10, 0), (37, 91, 78, 32)])
def test_numpy_blend_weights_sum_to_one_everywhere(n_target: int, n_stage: int, n_latent: int, pad: int) -> None:
    """Per axis the two support weights sum to 1, also where both supports clamp onto one cell and the
    pixel sits on its centre (6 on 4 unpadded, pixel 4: rel 0 on both, split evenly, not 0 + 0)."""
    _, numpy_decoder = decoders(seed=9)
    for axis in (0, 1):
        table = numpy_decoder.axis_table(n_target, n_stage, n_latent, pad, axis)
        np.testing.assert_allclose(table.weight.sum(0), np.ones(n_target), atol=1e-6, rtol=0)
    if n_target == 6:
        assert table.index[:, 4].tolist() == [1, 1] and table.weight[:, 4].tolist() == [0.5, 0.5]


def test_sigmoid_is_the_logistic_function() -> None:
    """sigmoid(x) = 1 / (1 + exp(-x)), also far out in both tails."""
    x = np.array([-200.0, -7.5, -1.0, 0.0, 0.3, 2.0, 9.0, 200.0], np.float32)
    expected = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    got = sigmoid(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-7, rtol=0)


# Tiles and margins --------------------------------------------------------------------------------------------


class CellGrid:
    """A fake padded stage input whose 'encoding' of a crop is each cell's absolute (row, column)."""

    def __init__(self, height: int, width: int) -> None:
        self.shape = (height, width)
        self.crops: list[tuple[int, int, int, int]] = []

    def crop(self, y0: int, y1: int, x0: int, x1: int) -> tuple[int, int, int, int]:
        self.crops.append((y0, y1, x0, x1))
        return (y0, y1, x0, x1)


def encode_cells(box: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = box
    cy, cx = np.mgrid[y0 // 2:y1 // 2, x0 // 2:x1 // 2]
    return np.stack([cy, cx], axis=-1).astype(np.float32)


@pytest.mark.parametrize("margin", [0, 16, 48])
def test_encode_windows_crops_each_window_with_its_margin_and_pastes_its_own_cells(margin: int) -> None:
    """Each window is encoded as window +- margin clamped to the input, and only its own cells are pasted."""
    height, width = 96, 80
    stage = CellGrid(height, width)
    windows = tile_windows(height, width, 32)
    latent = np.full((height // 2, width // 2, 2), np.nan, np.float32)
    encode_windows(latent, stage, windows, margin, encode_cells)
    assert stage.crops == [(max(0, y0 - margin), min(height, y1 + margin), max(0, x0 - margin), min(width, x1 + margin))
                           for y0, y1, x0, x1 in windows]
    np.testing.assert_array_equal(latent, encode_cells((0, height, 0, width)))


def test_tile_sides_and_margins_round_up_to_the_padding_multiple() -> None:
    """Odd tile options are rounded up to a multiple of 16, as --help says."""
    runner = TiledRunner(tile_size=100, tile_margin=20, roi_tile_size=17, roi_tile_margin=1, roi_window_size=100)
    assert (runner.tile_size, runner.tile_margin, runner.roi_tile_size, runner.roi_tile_margin) == (112, 32, 32, 16)
    assert runner.tiling(roi=True) == (32, 16, 3) and runner.tiling(roi=False) == (112, 32, 1)


# The ROI band ---------------------------------------------------------------------------------------------------


def test_roi_band_thresholds_by_hand() -> None:
    """Uncertain means strictly between 0.02 and 0.98 (float32 inputs, as the runners pass them)."""
    low = np.zeros((5, 9), np.float32)
    low[2, 1], low[2, 3], low[2, 5], low[2, 7] = 0.015, 0.03, np.float32(0.02), 0.45
    high = np.ones((5, 9), np.float32)
    high[2, 1], high[2, 3], high[2, 5], high[2, 7] = 0.985, 0.97, np.float32(0.98), 0.55
    for prob in (low, high):
        expected = np.zeros((5, 9), bool)
        expected[2, 3] = expected[2, 7] = True
        np.testing.assert_array_equal(roi_band_array(prob, radius=0), expected)
        grown = np.zeros((5, 9), bool)
        grown[1:4, 2:5] = grown[1:4, 6:9] = True
        np.testing.assert_array_equal(roi_band_array(prob, radius=1), grown)


def gpu_band_to_stage(band: np.ndarray, stage_hw: tuple[int, int], padded_hw: tuple[int, int], pad: int) -> np.ndarray:
    """roi.band_to_stage_input's non-CPU way (adaptive max-pool or the shared nearest indices, max-pool
    dilation), run on the CPU."""
    return _band_to_stage_tensor(torch.from_numpy(band), stage_hw, padded_hw, pad).numpy()


BAND_CASES = [((90, 120), (45, 60)), ((97, 61), (23, 20)), ((40, 50), (40, 50)), ((24, 30), (45, 61)),
              ((10, 13), (37, 40)), ((3, 50), (3, 23)),
              # one axis grows and the other shrinks (the review's: nearest indices lost lone pixels)
              ((20, 90), (21, 40)), ((37, 46), (38, 45)), ((40, 50), (30, 61)), ((9, 70), (31, 17))]


@pytest.mark.parametrize(("band_hw", "stage_hw"), BAND_CASES)
def test_band_to_stage_array_equals_the_gpu_formula(band_hw, stage_hw) -> None:  # noqa: ANN001
    """The CPU band map (INTER_AREA > 0, nearest indices, +4 px) equals the GPU one (adaptive max-pool,
    the same nearest indices, 9x9 max-pool): both backends encode the same tiles."""
    rng = np.random.default_rng(band_hw[0])
    band = rng.random(band_hw) > 0.93
    padded_hw = (2 * padded_cells(stage_hw[0]), 2 * padded_cells(stage_hw[1]))
    got = band_to_stage_array(band, stage_hw, padded_hw, STAGE_PAD)
    np.testing.assert_array_equal(got, gpu_band_to_stage(band, stage_hw, padded_hw, STAGE_PAD))


@pytest.mark.parametrize(("band_hw", "stage_hw"), BAND_CASES)
def test_every_support_cell_of_a_band_pixel_is_needed(band_hw, stage_hw) -> None:  # noqa: ANN001
    """Both pixels of every latent cell the decoder reads for a band pixel lie in the needed map, for
    a dense random band and for single-pixel bands (a lone pixel must not vanish when shrunk)."""
    rng = np.random.default_rng(band_hw[1])
    padded_hw = (2 * padded_cells(stage_hw[0]), 2 * padded_cells(stage_hw[1]))
    _, numpy_decoder = decoders(seed=0)
    rows = numpy_decoder.axis_table(band_hw[0], stage_hw[0], padded_hw[0] // 2, STAGE_PAD, axis=0)
    cols = numpy_decoder.axis_table(band_hw[1], stage_hw[1], padded_hw[1] // 2, STAGE_PAD, axis=1)
    bands = [rng.random(band_hw) > 0.9]
    for _ in range(40):
        lone = np.zeros(band_hw, bool)
        lone[rng.integers(0, band_hw[0]), rng.integers(0, band_hw[1])] = True
        bands.append(lone)
    for band in bands:
        needed = band_to_stage_array(band, stage_hw, padded_hw, STAGE_PAD)
        cells = needed.reshape(padded_hw[0] // 2, 2, padded_hw[1] // 2, 2).all(axis=(1, 3))
        ys, xs = np.nonzero(band)
        for a in range(2):
            for b in range(2):
                assert cells[rows.index[a][ys], cols.index[b][xs]].all()


# The stage input ------------------------------------------------------------------------------------------------


def test_the_stage_image_is_shrunk_with_inter_area_on_both_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 0.3 stage (19 x 24 of 64 x 80) feeds the encoder cv2.INTER_AREA's shrunk image, on the torch
    runner and on the NumPy runner (the reference resizes bilinearly; crm antialiases, as for the mask)."""
    from crm_cli.engine import Refiner

    image, gt = synthetic_scene(64, 80, seed=1)
    mask = (gt > 0).astype(np.float32)
    expected = cv2.resize(image, (24, 19), interpolation=cv2.INTER_AREA)
    assert not np.array_equal(expected, cv2.resize(image, (24, 19), interpolation=cv2.INTER_LINEAR))

    runner = Refiner.from_model(make_tiny_model(), device="cpu").runner
    seen = []
    encode = runner._encode
    monkeypatch.setattr(runner, "_encode", lambda x, needed=None: seen.append(x) or encode(x, needed))
    with torch.inference_mode():
        runner._stage(image, torch.from_numpy(mask).view(1, 1, 64, 80), 0.3, (64, 80))
    rgb = seen[0].rgb[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(rgb[STAGE_PAD:STAGE_PAD + 19, STAGE_PAD:STAGE_PAD + 24], expected)

    _, numpy_decoder = decoders(seed=1)
    recorded = []

    def fake_encode(x, needed=None):  # noqa: ANN001, ANN202
        recorded.append(x)
        return np.zeros((x.shape[0] // 2, x.shape[1] // 2, numpy_decoder.hidden_dim), np.float32)

    fake = SimpleNamespace(decoder=numpy_decoder, input_norm=runner.model.config.input_norm, _encode=fake_encode,
                           decoder_pool=None)
    OnnxStageRunner._stage(fake, image, mask, 0.3, (64, 80))
    np.testing.assert_array_equal(recorded[0].rgb[STAGE_PAD:STAGE_PAD + 19, STAGE_PAD:STAGE_PAD + 24], expected)


def test_roi_stage_decodes_exactly_the_band_of_two_stage_pixels() -> None:
    """NumPy ROI stage at 0.5 on 40x80: the pixels of roi_band_array(upsampled, radius ceil(2 H / hs) = 4)
    get the dense decoder's value, every other pixel keeps the upsampled incoming value."""
    from crm_cli.resampling import resize_probability

    _, numpy_decoder = decoders(seed=2)
    image, gt = synthetic_scene(40, 80, seed=2)
    incoming = resize_probability((gt > 0).astype(np.float32), (20, 40))
    g = np.random.default_rng(5).normal(0, 1, (padded_cells(20), padded_cells(40), numpy_decoder.hidden_dim))
    g = g.astype(np.float32)
    fake = SimpleNamespace(decoder=numpy_decoder, input_norm=((0.5,) * 3, (0.25,) * 3), decoder_pool=None,
                           _encode=lambda x, needed=None: g)
    got, _ = OnnxStageRunner._stage(fake, image, incoming, 0.5, (40, 80), roi=True)
    dense = sigmoid(numpy_decoder.decode(g, (40, 80), (20, 40), STAGE_PAD))
    upsampled = resize_probability(incoming, (40, 80))
    band = roi_band_array(upsampled, radius=4)
    assert 0 < band.sum() < band.size and not np.array_equal(band, roi_band_array(upsampled, radius=3))
    assert np.abs(dense - upsampled)[band].min() > 1e-3  # a kept pixel would show
    np.testing.assert_allclose(got[band], dense[band], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got[~band], upsampled[~band])


@pytest.mark.parametrize("size", [(32, 40), (40, 32), (50, 60)])
def test_torch_stage_padding_equals_the_numpy_twin_where_the_pad_equals_the_side(size: tuple[int, int]) -> None:
    """32 and 40 px sides get exactly their own length of bottom/right padding: reflect is impossible
    there (torch needs pad < side), so both twins replicate; 50 x 60 reflects."""
    from crm_cli.resampling import pad_stage_input as numpy_pad
    from crm_cli.stages import pad_stage_input as torch_pad

    values = np.random.default_rng(size[0]).random((4, *size)).astype(np.float32)
    got = torch_pad(torch.from_numpy(values)[None])[0].numpy()
    np.testing.assert_array_equal(got, numpy_pad(values.transpose(1, 2, 0)).transpose(2, 0, 1))
