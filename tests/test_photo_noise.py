"""Session 59. Noise in the photo: the white-noise estimate and its kernel gains by hand, the edge
alignment read above the noise's own gradient, and a photo of nothing but noise keeping its mask."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from crm_cli.edge_snap import SNAP_MIN_VARIANCE, SNAP_NOISE_DEVIATIONS, least_window_variance, snap_to_edges
from crm_cli.photo_noise import (
    NOISE_ONLY_REDUCTION,
    WHITE_NOISE_PER_RESIDUAL,
    cell_deviation,
    cell_means,
    noise_gradient,
    photo_is_noise,
    reduced_noise_gradient,
    residual_level,
    white_noise_level,
)
from crm_cli.schedule import (
    NOISE_FLOOR_SHARE,
    NOISE_MIN_LEVEL,
    SHARP_BOUNDARY_MIN,
    TRUST_LOW,
    BoundaryGeometry,
    boundary_sharpness,
    choose_schedule,
    edge_alignment,
    photo_noise_level,
)


def disc_on_noise(height: int, width: int, step: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """``do_no_harm.disc_under_noise``: a grey photo of a disc ``step`` levels above mid grey under
    normal noise of std ``noise``, and the disc's exact mask (bool)."""
    from conftest import load_benchmark

    case = load_benchmark("do_no_harm").disc_under_noise(height, width, step, noise)
    return case.photo, case.mask > 0


def test_noise_gradient_is_the_kernels_gain_by_hand() -> None:
    # Unblurred: Sobel x's squares sum to 1+4+1+1+4+1 = 12; x and y are uncorrelated with equal variance,
    # so the magnitude is Rayleigh, whose mean is the root of pi/2 times the component's std.
    assert noise_gradient(0.0) == pytest.approx(np.sqrt(12.0) * np.sqrt(np.pi / 2), rel=1e-6)
    unit = np.random.default_rng(3).normal(0.0, 1.0, (512, 512)).astype(np.float32)
    for blur in (0.0, 1.0):
        seen = unit if blur == 0 else cv2.GaussianBlur(unit, (0, 0), blur)
        magnitude = cv2.magnitude(cv2.Sobel(seen, cv2.CV_32F, 1, 0), cv2.Sobel(seen, cv2.CV_32F, 0, 1))
        assert float(magnitude.mean()) == pytest.approx(noise_gradient(blur), rel=0.01)
    assert noise_gradient(1.0) < noise_gradient(0.0) / 2  # the blur takes most of it
    # Reduced 2x by area averaging, white noise stays white at half its std: half the gain.
    assert reduced_noise_gradient(1.0, (1024, 1024), (512, 512)) == pytest.approx(noise_gradient(1.0) / 2, rel=0.02)
    assert reduced_noise_gradient(1.0, (300, 400), (300, 400)) == noise_gradient(1.0)
    # By a factor that is not whole, the averaging is uneven and correlates the noise: measured, and
    # checked here on a noise field of another seed; at most the unreduced gain over the reduction.
    for full, reduced in (((1465, 1465), (1000, 1000)), ((1536, 2054), (1532, 2048))):
        field = np.random.default_rng(8).normal(0.0, 1.0, full).astype(np.float32)
        small = cv2.GaussianBlur(cv2.resize(field, reduced[::-1], interpolation=cv2.INTER_AREA), (0, 0), 1.0)
        magnitude = cv2.magnitude(cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1))
        gain = reduced_noise_gradient(1.0, full, reduced)
        assert float(magnitude[8:-8, 8:-8].mean()) == pytest.approx(gain, rel=0.02)
        assert gain < noise_gradient(1.0) / (full[1] / reduced[1])


def test_white_noise_level_reads_the_noise_and_not_the_texture() -> None:
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[:400, :600]
    plane = (60 + rows + 2 * cols).astype(np.float64)  # the second difference of a plane is 0
    assert residual_level(plane) == 0.0 and white_noise_level(plane) == 0.0
    noisy = plane / 10 + rng.normal(0.0, 10.0, plane.shape)
    assert white_noise_level(noisy) == pytest.approx(10.0, rel=0.05)
    assert residual_level(noisy) == pytest.approx(10.0, rel=0.05)
    # Texture: random values enlarged 2x (grains two px across) holds a large second difference at full
    # size and more at half size, so it is not read as noise.
    blotches = cv2.resize(rng.uniform(0, 255, (200, 300)).astype(np.float32), (600, 400), interpolation=cv2.INTER_CUBIC)
    assert residual_level(blotches) > 5.0
    assert white_noise_level(blotches) < 0.2 * residual_level(blotches)
    both = blotches + rng.normal(0.0, 10.0, plane.shape)
    assert white_noise_level(both) <= WHITE_NOISE_PER_RESIDUAL * residual_level(both)
    assert white_noise_level(np.zeros((6, 6))) == 0.0 and residual_level(np.zeros((3, 9))) == 0.0


def test_photo_is_noise_by_hand() -> None:
    rng = np.random.default_rng(2)
    assert photo_is_noise(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))  # do_no_harm's "disc noise"
    assert photo_is_noise(np.clip(128 + rng.normal(0, 20, (480, 640, 3)), 0, 255).astype(np.uint8))
    assert photo_is_noise(np.full((64, 64, 3), 9, np.uint8))  # flat: no noise and nothing else
    # Visible under the noise: a disc 20 levels up under noise of std 30, a small bright square.
    assert not photo_is_noise(disc_on_noise(480, 640, 20.0, 30.0)[0])
    square = np.clip(128 + rng.normal(0, 10, (480, 640, 3)), 0, 255)
    square[200:240, 300:340] += 60
    assert not photo_is_noise(square.astype(np.uint8))
    # Colour alone: a red disc on a green field of the same grey, both noisy.
    colour = np.clip(rng.normal(0, 10, (480, 640, 3)) + [60, 120, 60], 0, 255)
    colour[disc_on_noise(480, 640, 0, 0)[1]] = np.clip(rng.normal(0, 10, (3,)) + [160, 70, 60], 0, 255)
    assert not photo_is_noise(colour.astype(np.uint8))
    # A photo: smooth blotches, however noisy its pixels.
    blotches = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    assert not photo_is_noise(np.clip(blotches + rng.normal(0, 20, blotches.shape), 0, 255).astype(np.uint8))
    # Too small to reduce 8-fold to 8 cells a side: never noise.
    assert not photo_is_noise(rng.integers(0, 256, (8 * NOISE_ONLY_REDUCTION - 1, 200, 3), dtype=np.uint8))


def test_cell_deviation_by_hand() -> None:
    # Four gaps of 2 (two rows, two columns); the lower 90% keeps 3 of them, mean 2. For unit normal
    # cells that mean is root 2 x 2 (phi(0) - phi(1.6449)) / 0.9 = 0.92963.
    assert cell_deviation(np.array([[0, 2], [2, 0]], np.uint8)) == pytest.approx(2 / 0.929630, rel=1e-5)
    rng = np.random.default_rng(5)
    assert cell_deviation(rng.normal(0, 3.0, (600, 800))) == pytest.approx(3.0, rel=0.01)
    # A step of 100 between two noisy halves: its one row of gaps is in the top tenth, left out.
    halves = rng.normal(0, 2.0, (600, 800))
    halves[300:] += 100
    assert cell_deviation(halves) == pytest.approx(2.0, rel=0.03)


def jpeg_of(photo: np.ndarray, quality: int) -> np.ndarray:
    """``photo`` through a JPEG of ``quality`` with Pillow's default 4:2:0 chroma, read as crm reads it."""
    import io

    from PIL import Image

    from crm_cli.imageio import read_image

    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", quality=quality)
    return read_image(buffer.getvalue())


def test_noise_saved_as_jpeg_is_still_noise() -> None:
    """Session 61: JPEG's 4:2:0 chroma and lost fine frequencies keep each 8x8 block's mean, so the
    cells deviate about 1.3 times what the full-size spread predicts; seeds 0 and 2 read as content
    (by 6.23 and 6.07 deviations against 6) and a disc's exact mask on them came back frayed."""
    for seed in range(3):
        photo = np.random.default_rng(seed).integers(0, 256, (1536, 2048, 3), dtype=np.uint8)
        assert photo_is_noise(photo)
        assert photo_is_noise(jpeg_of(photo, 95)), seed
        assert photo_is_noise(jpeg_of(photo, 75)), seed
    # What the noise hides stays visible through the JPEG: a disc 20 levels up under noise of std 30.
    assert not photo_is_noise(jpeg_of(disc_on_noise(1536, 2048, 20.0, 30.0)[0], 75))


def test_cells_that_vary_more_than_jpeg_noise_are_no_noise() -> None:
    """The cells' own deviation counts up to NOISE_ONLY_MAX_CELL_GAIN times the spread's: noise
    smoothed over a pixel or more (texture at the cells' scale: theirs reads about 3 times) stays content."""
    rng = np.random.default_rng(3)
    smooth = cv2.GaussianBlur(rng.normal(0, 1, (768, 1024, 3)).astype(np.float32), (0, 0), 1.0)
    photo = np.clip(128 + smooth * 40 / smooth.std(), 0, 255).astype(np.uint8)
    cells = cv2.resize(photo, (1024 // 8, 768 // 8), interpolation=cv2.INTER_AREA)
    _, spread = cv2.meanStdDev(photo)
    assert cell_deviation(cells[..., 0]) / (spread.ravel()[0] / 8) > 2.5
    assert not photo_is_noise(photo)


def test_cell_means_are_exact_where_8_bits_would_round() -> None:
    # Cells of 0 and 1 in a checkerboard: a mean of 0.5, which an 8-bit reduction rounds to 0 or 1.
    board = (np.indices((16, 24)).sum(axis=0) % 2).astype(np.uint8)
    np.testing.assert_array_equal(cell_means(board, 8), np.full((2, 3, 1), 0.5, np.float32))
    photo = np.random.default_rng(6).integers(0, 256, (1040, 64, 3), dtype=np.uint8)  # strips of 512 rows and a rest
    expected = photo.reshape(130, 8, 8, 8, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(cell_means(photo, 8), expected, atol=1 / 512)


def test_faint_noise_as_jpeg_is_noise() -> None:
    """Faint noise as JPEG (4:2:0): its cells deviate by about a third of a level, which 8-bit cells round
    away. Std 4 at quality 75: two of these three seeds read as content before session 61."""
    for seed in range(3):
        noise = np.random.default_rng(100 + seed).standard_normal((480, 640, 3))
        photo = np.clip(128 + 4 * noise, 0, 255).astype(np.uint8)
        assert photo_is_noise(jpeg_of(photo, 75)), seed
    # Std 2 at quality 95, 1024x768: all three read as content from cells rounded to whole levels.
    for seed in range(3):
        noise = np.random.default_rng(100 + seed).standard_normal((768, 1024, 3))
        photo = np.clip(128 + 2 * noise, 0, 255).astype(np.uint8)
        assert photo_is_noise(jpeg_of(photo, 95)), seed


def test_small_photos_read_noise_by_the_spread_alone() -> None:
    """Under 16 cells on the short side (128 px) the cells' own deviation is not taken: too few to tell
    content by (a real photo of a ladybird at 64 px read as noise with it). Texture at 96x128 stays content."""
    for seed in (1, 4):
        rng = np.random.default_rng(seed)
        smooth = cv2.GaussianBlur(rng.normal(0, 1, (96, 128, 3)).astype(np.float32), (0, 0), 1.0)
        photo = np.clip(128 + smooth * 40 / smooth.std(), 0, 255).astype(np.uint8)
        assert not photo_is_noise(photo), seed


def test_a_mask_on_a_noisy_edge_reads_as_on_the_edge() -> None:
    photo, disc = disc_on_noise(768, 1024, 20.0, 30.0)
    as_measured = BoundaryGeometry(photo, disc, above_noise=False)
    above_noise = BoundaryGeometry(photo, disc)
    assert as_measured.alignment() < 1.6 < TRUST_LOW  # the noise's gradient fills both bands
    assert above_noise.alignment() > TRUST_LOW
    assert above_noise.sharpness() > as_measured.sharpness()
    # A clean textured photo (under the floor's share): both read as the bands' plain ratio, to the bit.
    from conftest import load_benchmark

    textured = load_benchmark("do_no_harm").textured_photo(768, 1024, seed=3)
    textured = cv2.GaussianBlur(textured, (0, 0), 1.0)  # its fine noise taken away
    geometry = BoundaryGeometry(textured, disc)
    blurred = cv2.GaussianBlur(geometry.grey.astype(np.float32), (0, 0), 1.0)
    magnitude = cv2.magnitude(cv2.Sobel(blurred, cv2.CV_32F, 1, 0), cv2.Sobel(blurred, cv2.CV_32F, 0, 1))
    distance = geometry.distance
    near = magnitude[(distance >= 0.5) & (distance <= 2.5)]
    outer = magnitude[(distance >= 4) & (distance <= 8)]
    assert geometry.alignment() == float(near.mean() / (outer.mean() + 1e-6))
    assert geometry.alignment() == BoundaryGeometry(textured, disc, above_noise=False).alignment()
    assert geometry.noise_floor(1.0, float(outer.mean())) == 0.0
    # A mask 12 px off the disc on the noisy photo is still off its edges.
    shifted = np.roll(disc, 12, axis=1)
    assert BoundaryGeometry(photo, shifted).alignment() < 1.5
    schedule = choose_schedule(disc, (0.125, 0.25, 0.5, 1.0), photo, min_side=64)
    assert schedule.final_only and schedule.trust > 0


def test_the_floor_applies_only_where_it_is_a_large_share_of_the_outer_band() -> None:
    photo, disc = disc_on_noise(480, 640, 40.0, 8.0)
    geometry = BoundaryGeometry(photo, disc)
    floor = noise_gradient(1.0) * white_noise_level(geometry.grey)
    assert floor > 0
    assert geometry.noise_floor(1.0, floor / NOISE_FLOOR_SHARE * 0.99) == pytest.approx(floor)
    assert geometry.noise_floor(1.0, floor / NOISE_FLOOR_SHARE * 1.01) == 0.0


def test_a_photo_of_nothing_but_noise_keeps_its_mask_as_given(tiny_weights: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """do_no_harm's "disc noise" came back frayed (2048x1536: 92.56 / 54.39); there is nothing in such a
    photo to refine against, so the guard keeps the given mask, and says so."""
    from crm_cli import Refiner

    photo = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), np.float32)
    cv2.circle(mask, (64, 48), 30, 1.0, -1)
    refiner = Refiner(tiny_weights, device="cpu")
    with caplog.at_level("WARNING", logger="crm_cli.engine"):
        kept = refiner.refine(photo, mask)
    np.testing.assert_array_equal(kept, mask)
    assert "the photo holds nothing but noise" in caplog.text
    refined = refiner.refine(photo, mask, guard=False)  # without the guard the model answers
    assert not np.array_equal(refined, mask)


def test_noise_level_is_read_at_full_size_and_only_above_its_minimum() -> None:
    rng = np.random.default_rng(4)
    flat = np.full((600, 800, 3), 100.0)
    noisy = np.clip(flat + rng.normal(0.0, 12.0, (600, 800, 1)), 0, 255).astype(np.uint8)
    assert photo_noise_level(noisy) == pytest.approx(12.0, rel=0.05)
    assert BoundaryGeometry(noisy, np.zeros((600, 800), bool)).reduction == 1.0
    # Beyond ALIGNMENT_SIDE the grey image is reduced (area averaging divides independent noise by the
    # factor); the level is given back at full size.
    wide = np.clip(np.full((1200, 4096, 3), 100.0) + rng.normal(0.0, 12.0, (1200, 4096, 1)), 0, 255).astype(np.uint8)
    geometry = BoundaryGeometry(wide, np.zeros((1200, 4096), bool))
    assert geometry.reduction == pytest.approx(2.0)
    assert geometry.noise_level() == pytest.approx(12.0, rel=0.05)
    # Under NOISE_MIN_LEVEL: 0, whether the residual level rules it out or the estimate itself.
    for std in (0.8 * NOISE_MIN_LEVEL, 0.95 * NOISE_MIN_LEVEL):
        faint = np.clip(flat + rng.normal(0.0, std, (600, 800, 1)), 0, 255).astype(np.uint8)
        assert photo_noise_level(faint) == 0.0
    # A reduction by a factor that is not whole (3000x2000 to 2048x1365): read on full-size crops.
    large = np.clip(np.full((2000, 3000, 3), 100.0) + rng.normal(0.0, 12.0, (2000, 3000, 1)), 0, 255)
    assert photo_noise_level(large.astype(np.uint8)) == pytest.approx(12.0, rel=0.05)
    photo, disc = disc_on_noise(2000, 3000, 20.0, 30.0)
    assert edge_alignment(photo, disc) > TRUST_LOW > 1.6 > edge_alignment(photo, disc, above_noise=False)
    # Reduced by a hair (2054 to 2048 px): the unevenly averaged noise is measured, not assumed white.
    photo, disc = disc_on_noise(1536, 2054, 20.0, 30.0)
    assert edge_alignment(photo, disc) > TRUST_LOW and boundary_sharpness(photo, disc) > SHARP_BOUNDARY_MIN
    photo, disc = disc_on_noise(768, 1024, 20.0, 30.0)
    assert choose_schedule(disc, (0.125, 0.25, 0.5, 1.0), photo, min_side=64).noise == pytest.approx(30.0, rel=0.05)
    assert choose_schedule(disc, (0.125, 0.25, 0.5, 1.0), None, min_side=64).noise is None


def test_the_snap_stands_an_edge_out_of_the_noise() -> None:
    assert least_window_variance(0.0) == 0.0
    assert least_window_variance(25.5) == pytest.approx((SNAP_NOISE_DEVIATIONS * 0.1) ** 2)
    photo, disc = disc_on_noise(512, 512, 20.0, 30.0)
    given = disc.astype(np.float32)
    frayed = snap_to_edges(photo, given, 2)
    kept = snap_to_edges(photo, given, 2, noise=30.0)
    assert np.count_nonzero((frayed > 0.5) != disc) > 100  # the filter followed the noise
    assert np.count_nonzero((kept > 0.5) != disc) == 0
    # Noise too faint to raise the variance a window needs changes nothing, to the bit.
    faint = 0.9 * 255 * SNAP_MIN_VARIANCE**0.5 / SNAP_NOISE_DEVIATIONS
    assert least_window_variance(faint) < SNAP_MIN_VARIANCE
    np.testing.assert_array_equal(snap_to_edges(photo, given, 2, noise=faint), frayed)
