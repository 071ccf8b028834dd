"""crm_cli.resampling (NumPy/OpenCV) against the torch expressions it replaces."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crm_cli.resampling import pad_stage_input, resize_probability

TOLERANCE = 2e-6


def torch_resize_probability(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The torch original, on a (1, 1, H, W) tensor."""
    mask = torch.from_numpy(np.ascontiguousarray(values))[None, None]
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask[0, 0].numpy()
    shrink = size[0] < mask.shape[-2] or size[1] < mask.shape[-1]
    out = F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=shrink).clamp_(0, 1)
    return out[0, 0].numpy()


def torch_pad_stage_input(values: np.ndarray, pad: int = 32, multiple: int = 16) -> np.ndarray:
    """The torch original, on a (1, C, H, W) tensor built from an (H, W) or (H, W, C) array."""
    x = torch.from_numpy(np.ascontiguousarray(values))
    x = x[None, None] if values.ndim == 2 else x.permute(2, 0, 1)[None]
    height, width = x.shape[-2:]
    extra_y = (-(height + 2 * pad)) % multiple
    extra_x = (-(width + 2 * pad)) % multiple
    amounts = (pad, pad + extra_x, pad, pad + extra_y)
    mode = "reflect" if max(pad + extra_y, 0) < height and max(pad + extra_x, 0) < width else "replicate"
    out = F.pad(x, amounts, mode=mode)[0]
    return (out[0] if values.ndim == 2 else out.permute(1, 2, 0)).numpy()


def random_map(shape: tuple[int, int], seed: int = 0, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=shape).astype(np.float32)


def check_against_torch(shape: tuple[int, int], size: tuple[int, int], seed: int = 0) -> float:
    values = random_map(shape, seed)
    ours = resize_probability(values, size)
    expected = torch_resize_probability(values, size)
    assert ours.dtype == np.float32
    assert ours.shape == tuple(size)
    difference = float(np.abs(ours.astype(np.float64) - expected).max())
    assert difference <= TOLERANCE, f"{shape} -> {size}: max abs difference {difference}"
    return difference


# ----------------------------------------------------------------------------- resize_probability


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        # shrink, integer and non-integer factors
        ((64, 96), (16, 24)),
        ((64, 96), (32, 48)),
        ((61, 97), (23, 40)),
        ((100, 150), (99, 149)),
        ((216, 384), (27, 48)),
        # enlarge
        ((16, 24), (64, 96)),
        ((13, 17), (50, 71)),
        ((27, 48), (216, 384)),
        # mixed: one axis up, the other down (antialias on both axes)
        ((40, 30), (17, 77)),
        ((30, 40), (77, 17)),
        ((54, 96), (200, 60)),
        # one axis unchanged
        ((32, 48), (32, 20)),
        ((32, 48), (70, 48)),
        ((32, 48), (32, 100)),
        # tiny
        ((1, 7), (1, 3)),
        ((1, 4), (1, 9)),
        ((3, 3), (1, 1)),
        ((5, 7), (40, 3)),
        ((1, 1), (4, 5)),
        ((2, 2), (1, 1)),
        ((7, 1), (2, 5)),
        ((1, 9), (6, 1)),
        ((2, 3), (3, 2)),
    ],
)
def test_resize_matches_torch(shape: tuple[int, int], size: tuple[int, int]) -> None:
    check_against_torch(shape, size, seed=sum(shape) + sum(size))


def _torch_fuses_source_coordinate() -> bool:
    """Whether this torch build computes bilinear's ``scale * (i + 0.5) - 0.5`` with a fused multiply-add.

    The AVX2/AVX512 CPU kernels do (x86-64 with FMA); the baseline ``ATEN_CPU_CAPABILITY=default`` kernel
    does not, and then long rows differ by up to ~1e-5 at a few outputs. resampling follows the fused form.
    """
    n_in, n_out = 1000, 3001
    values = random_map((1, n_in), seed=5)
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    first = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    frac = np.clip(src - first.astype(np.float32), 0, 1).astype(np.float32)
    unfused = values[0, first] * (1 - frac) + values[0, np.minimum(first + 1, n_in - 1)] * frac
    expected = torch_resize_probability(values, (1, n_out))[0]
    return float(np.abs(unfused - expected).max()) > TOLERANCE


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((3, 1000), (5, 3001)),  # plain bilinear: float32 coordinate rounding near 1000 is ~6e-5 px
        ((2, 333), (3, 4097)),
        ((6, 1000), (2, 3001)),  # antialiased enlarging axis: differs from plain bilinear by ~1e-5 here
        ((8, 4097), (3, 1001)),  # antialiased shrink by a non-integer factor on a long axis
        ((4000, 3), (2999, 2)),
    ],
)
def test_resize_matches_torch_on_long_axes(shape: tuple[int, int], size: tuple[int, int]) -> None:
    if not _torch_fuses_source_coordinate():
        pytest.skip("this torch build rounds bilinear source coordinates without FMA (baseline CPU kernel)")
    check_against_torch(shape, size, seed=1)


def test_mixed_resize_uses_antialiased_weights_on_the_enlarging_axis() -> None:
    # torch's antialiased kernel on an enlarging axis is bilinear in exact arithmetic, but rounds differently:
    # the mixed case must follow it, not the plain bilinear path.
    values = random_map((6, 1000), seed=3)
    ours = resize_probability(values, (2, 3001))
    antialiased = torch_resize_probability(values, (2, 3001))
    np.testing.assert_allclose(ours, antialiased, rtol=0, atol=TOLERANCE)


def test_resize_clips_to_unit_interval() -> None:
    values = random_map((20, 30), seed=7, low=-0.5, high=1.5)
    for size in [(7, 11), (45, 70), (9, 80)]:
        ours = resize_probability(values, size)
        assert ours.min() >= 0.0 and ours.max() <= 1.0
        np.testing.assert_allclose(ours, torch_resize_probability(values, size), rtol=0, atol=TOLERANCE)


def test_same_size_returns_the_input_itself() -> None:
    values = random_map((12, 34))
    assert resize_probability(values, (12, 34)) is values


def test_resize_accepts_views_and_read_only_input() -> None:
    base = random_map((50, 40), seed=9)
    view = base.T  # Fortran-ordered (40, 50) view
    view.flags.writeable = False
    for size in [(10, 13), (90, 120), (15, 120)]:
        ours = resize_probability(view, size)
        np.testing.assert_allclose(ours, torch_resize_probability(view, size), rtol=0, atol=TOLERANCE)
    assert base.min() >= 0.0  # untouched


def test_resize_output_is_a_new_array() -> None:
    values = random_map((8, 8))
    out = resize_probability(values, (8, 4))
    assert not np.shares_memory(out, values)


def test_resize_enlarge_by_hand() -> None:
    # 1x4 row [0, 1, 0, 1] -> 1x8, plain bilinear (nothing shrinks), half-pixel centres:
    # src = 0.5 * (i + 0.5) - 0.5 = -0.25, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25.
    # i=0: -0.25 clamps to 0 -> v[0] = 0;  i=1: 0.75*v0 + 0.25*v1 = 0.25;  i=2: 0.25*v0 + 0.75*v1 = 0.75;
    # i=3: 0.75*v1 + 0.25*v2 = 0.75;  i=4: 0.25*v1 + 0.75*v2 = 0.25;  i=5: 0.75*v2 + 0.25*v3 = 0.25;
    # i=6: 0.25*v2 + 0.75*v3 = 0.75;  i=7: 3.25 -> index 3 with its neighbour clamped to 3 -> v3 = 1.
    row = np.array([[0, 1, 0, 1]], dtype=np.float32)
    expected = np.array([[0, 0.25, 0.75, 0.75, 0.25, 0.25, 0.75, 1]], dtype=np.float32)
    np.testing.assert_allclose(resize_probability(row, (1, 8)), expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(torch_resize_probability(row, (1, 8)), expected, rtol=0, atol=1e-7)


def test_resize_shrink_by_hand() -> None:
    # 1x4 row [0, 1, 0, 1] -> 1x2 with the antialias triangle filter: scale = 2, so support = 2 input pixels
    # and weight(x) = max(0, 1 - |x - center| / 2) at pixel centres x = j + 0.5.
    # Output 0: center = 1, window [trunc(1 - 2 + 0.5), trunc(1 + 2 + 0.5)) = [0, 3) (pixel -1 falls off the map):
    #   weights 0.75, 0.75, 0.25 / 1.75 = 3/7, 3/7, 1/7 -> 0*3/7 + 1*3/7 + 0*1/7 = 3/7.
    # Output 1: center = 3, window [trunc(1.5), min(trunc(5.5), 4)) = [1, 4):
    #   weights 0.25, 0.75, 0.75 / 1.75 = 1/7, 3/7, 3/7 -> 1*1/7 + 0*3/7 + 1*3/7 = 4/7.
    # (An interior output would use 4 taps 1/8, 3/8, 3/8, 1/8; at the border the window is cut and renormalised.)
    row = np.array([[0, 1, 0, 1]], dtype=np.float32)
    expected = np.array([[3 / 7, 4 / 7]], dtype=np.float32)
    np.testing.assert_allclose(resize_probability(row, (1, 2)), expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(torch_resize_probability(row, (1, 2)), expected, rtol=0, atol=1e-7)


def test_resize_3x3_to_1x1_by_hand() -> None:
    # scale 3, support 3, center 1.5: window [0, 3), weights 1 - |j - 1| / 3 = 2/3, 1, 2/3 -> 2/7, 3/7, 2/7 per axis.
    values = np.zeros((3, 3), dtype=np.float32)
    values[1, 1] = 1.0
    values[0, 0] = 0.5
    expected = (3 / 7) ** 2 + 0.5 * (2 / 7) ** 2
    assert resize_probability(values, (1, 1))[0, 0] == pytest.approx(expected, abs=1e-7)
    assert torch_resize_probability(values, (1, 1))[0, 0] == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("size", [(0, 3), (3, 0), (-1, 2)])
def test_resize_rejects_empty_sizes(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        resize_probability(random_map((4, 4)), size)


def test_resize_rejects_non_2d_input() -> None:
    with pytest.raises(ValueError):
        resize_probability(np.zeros((4, 4, 1), dtype=np.float32), (2, 2))


def test_module_does_not_import_torch() -> None:
    code = "import sys, crm_cli.resampling; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- pad_stage_input


@pytest.mark.parametrize(
    ("shape", "pad", "multiple"),
    [
        ((50, 70), 32, 16),  # reflect, extra on bottom/right
        ((64, 96), 32, 16),  # already a multiple: no extra
        ((33, 40), 32, 16),  # bottom pad 32 + 15 >= 33 -> replicate everywhere
        ((40, 33), 32, 16),  # right side too small -> replicate everywhere
        ((1, 20), 32, 16),
        ((20, 1), 4, 8),
        ((1, 1), 0, 16),  # pad 0 with extra 15 >= 1 -> replicate
        ((17, 19), 0, 1),  # nothing to pad
        ((17, 19), 5, 7),
        ((3, 3), 1, 1),  # reflect with the smallest room
        ((2, 2), 1, 1),
    ],
)
@pytest.mark.parametrize("channels", [None, 1, 3, 6])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_pad_matches_torch(shape: tuple[int, int], pad: int, multiple: int, channels: int | None, dtype: type) -> None:
    rng = np.random.default_rng(sum(shape) + pad)
    full = shape if channels is None else (*shape, channels)
    if dtype is np.uint8:
        values = rng.integers(0, 256, size=full, dtype=np.uint8)
    else:
        values = rng.random(full, dtype=np.float32)
    ours = pad_stage_input(values, pad, multiple)
    expected = torch_pad_stage_input(values, pad, multiple)
    assert ours.dtype == values.dtype
    assert ours.shape == expected.shape
    assert ours.shape[0] % multiple == 0 and ours.shape[1] % multiple == 0
    assert ours.shape[2:] == values.shape[2:]
    np.testing.assert_array_equal(ours, expected)
    # the original sits at (pad, pad)
    np.testing.assert_array_equal(ours[pad : pad + shape[0], pad : pad + shape[1]], values)


def test_pad_reflect_does_not_repeat_the_edge() -> None:
    values = np.arange(1, 6, dtype=np.float32)[None].repeat(5, axis=0)  # rows [1 2 3 4 5]
    out = pad_stage_input(values, pad=2, multiple=1)
    np.testing.assert_array_equal(out[2], [3, 2, 1, 2, 3, 4, 5, 4, 3])


def test_pad_other_dtypes_fall_back_losslessly() -> None:
    values = np.arange(30, dtype=np.int64).reshape(5, 6) + 2**40
    out = pad_stage_input(values, pad=1, multiple=4)  # bottom 1 + 1, right 1 + 0: reflect
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, np.pad(values, ((1, 2), (1, 1)), mode="reflect"))
    flags = np.zeros((5, 6), dtype=bool)
    flags[0, 0] = True
    out = pad_stage_input(flags, pad=2, multiple=4)  # bottom 2 + 3 = 5 is not < 5: replicate
    assert out.dtype == bool and out.shape == (12, 12)
    np.testing.assert_array_equal(out, np.pad(flags, ((2, 5), (2, 4)), mode="edge"))


@pytest.mark.parametrize("channels", [3, 8])
def test_pad_many_channels_and_views(channels: int) -> None:
    values = np.random.default_rng(2).random((9, 11, channels), dtype=np.float32)[:, ::-1]
    out = pad_stage_input(values, pad=3, multiple=8)
    np.testing.assert_array_equal(out, torch_pad_stage_input(values, pad=3, multiple=8))


def test_pad_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        pad_stage_input(np.zeros((4, 4), dtype=np.uint8), pad=-1)
    with pytest.raises(ValueError):
        pad_stage_input(np.zeros((4, 4), dtype=np.uint8), multiple=0)
    with pytest.raises(ValueError):
        pad_stage_input(np.zeros((4,), dtype=np.uint8))
