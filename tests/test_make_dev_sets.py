"""benchmarks/make_dev_sets.py: the dev sets rebuilt from a shared-data folder, on tiny stand-ins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import load_benchmark, synthetic_scene

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "make_dev_sets.py"


def write_shared_data(root: Path, cars: int = 6, size: tuple[int, int] = (24, 36)) -> Path:
    """A stand-in for ../shared/data: carvana-dev (BIG layout) and carvana-dev-real's two variants."""
    dev = root / "carvana-dev"
    dev.mkdir(parents=True)
    for variant in ("isnet1024", "isnet256"):
        (root / "carvana-dev-real" / variant).mkdir(parents=True)
    for k in range(cars):
        name = f"car_{k:02d}"
        image, gt = synthetic_scene(*size, seed=k)
        cv2.imwrite(str(dev / f"{name}_im.jpg"), image)
        cv2.imwrite(str(dev / f"{name}_gt.png"), gt)
        cv2.imwrite(str(dev / f"{name}_seg.png"), gt)
        for shift, variant in ((1, "isnet1024"), (3, "isnet256")):
            cv2.imwrite(str(root / "carvana-dev-real" / variant / f"{name}_seg.png"), np.roll(gt, shift, axis=1))
    return root


def test_enlarge_mask_is_bilinear_then_thresholded_at_128() -> None:
    """A 0/255 step enlarged 2x: bilinear puts 191 and 64 either side of the edge (3/4 and 1/4 of
    255), so the thresholded edge stays between the same two source pixels."""
    module = load_benchmark("make_dev_sets")
    mask = np.array([[0, 255]], dtype=np.uint8)
    assert cv2.resize(mask, (4, 2), interpolation=cv2.INTER_LINEAR)[0].tolist() == [0, 64, 191, 255]
    big = module.enlarge_mask(mask, 2)
    assert big.shape == (2, 4) and big.dtype == np.uint8
    assert big.tolist() == [[0, 0, 255, 255], [0, 0, 255, 255]]


def test_builds_the_real_sets_and_their_enlarged_copies(tmp_path: Path) -> None:
    """--only isnet1024_4k builds isnet1024 first (links to the shared files, masks from
    carvana-dev-real), then every 4th car of it at twice the size; the last stdout line lists the
    sets as NAME=FOLDER; a second run leaves built sets alone."""
    data = write_shared_data(tmp_path / "data")
    out = tmp_path / "sets"
    command = [sys.executable, str(SCRIPT), str(data), str(out), "--only", "isnet1024_4k"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"isnet1024={out / 'isnet1024'} isnet1024_4k={out / 'isnet1024_4k'}"
    real = out / "isnet1024"
    assert sorted(p.name for p in real.iterdir()) == sorted(
        f"car_{k:02d}_{kind}" for k in range(6) for kind in ("im.jpg", "gt.png", "seg.png"))
    assert (real / "car_02_seg.png").resolve() == (data / "carvana-dev-real" / "isnet1024" / "car_02_seg.png").resolve()
    assert (real / "car_02_im.jpg").resolve() == (data / "carvana-dev" / "car_02_im.jpg").resolve()
    big = out / "isnet1024_4k"
    assert sorted(p.name for p in big.glob("*_im.jpg")) == ["car_00_im.jpg", "car_04_im.jpg"]
    for name in ("car_00", "car_04"):
        photo = cv2.imread(str(big / f"{name}_im.jpg"))
        assert photo.shape == (48, 72, 3)
        for kind in ("gt", "seg"):
            small = cv2.imread(str(real / f"{name}_{kind}.png"), cv2.IMREAD_GRAYSCALE)
            enlarged = cv2.imread(str(big / f"{name}_{kind}.png"), cv2.IMREAD_GRAYSCALE)
            assert enlarged.shape == (48, 72) and set(np.unique(enlarged)) <= {0, 255}
            # Each source pixel's 2x2 block keeps its value away from edges: the area scales by 4.
            assert abs(int((enlarged > 0).sum()) - 4 * int((small > 0).sum())) <= 2 * (small.shape[0] + small.shape[1])
            assert np.array_equal(enlarged[::2, ::2][small == cv2.erode(small, np.ones((3, 3)))], small[
                small == cv2.erode(small, np.ones((3, 3)))])
    (big / "car_00_gt.png").write_bytes(b"kept")
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and (big / "car_00_gt.png").read_bytes() == b"kept"


@pytest.mark.parametrize("args, message", [
    (["--only", "nonesuch"], "unknown set(s) nonesuch"),
    (["--only", "thin_isnet"], "unknown set(s) thin_isnet"),  # it needs --isnet
    (["--isnet", "missing.onnx"], "missing.onnx: no such file"),
])
def test_bad_arguments_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    """Unknown sets, a set that needs the IS-Net model without it, and a missing model file: exit 1
    with one error line naming the problem, nothing built."""
    data = write_shared_data(tmp_path / "data", cars=1)
    done = subprocess.run([sys.executable, str(SCRIPT), str(data), str(tmp_path / "sets"), *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "sets").exists()


def test_a_missing_real_mask_names_its_file(tmp_path: Path) -> None:
    """A car without its IS-Net mask stops the build with the missing file's path, and leaves only
    the ``.partial`` folder, which the next run refuses to build over until it is removed."""
    data = write_shared_data(tmp_path / "data", cars=2)
    (data / "carvana-dev-real" / "isnet256" / "car_01_seg.png").unlink()
    command = [sys.executable, str(SCRIPT), str(data), str(tmp_path / "sets"), "--only", "isnet256"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "isnet256/car_01_seg.png: missing" in done.stderr
    assert not (tmp_path / "sets" / "isnet256").exists() and (tmp_path / "sets" / "isnet256.partial").is_dir()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "isnet256.partial is left from an interrupted run" in again.stderr


def test_isnet512_shows_the_network_each_photo_at_512_px(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 58's set of real masks: carvana-dev's photos and ground truths linked, beside the network's
    mask of each photo seen at 512 px on its long side (a stand-in network records what it is given)."""
    module = load_benchmark("make_dev_sets")
    network = load_benchmark("make_network_masks")
    seen: list[tuple[tuple[int, ...], int | None]] = []

    class StandIn:
        def __init__(self, onnx: Path, threads: int) -> None:
            assert onnx == tmp_path / "isnet.onnx" and threads == 2

        def mask(self, rgb: np.ndarray, seen_long_side: int | None = None) -> np.ndarray:
            seen.append((rgb.shape, seen_long_side))
            return np.full(rgb.shape[:2], 255, np.uint8)

    monkeypatch.setattr(network, "NetworkMasker", StandIn)
    monkeypatch.setitem(sys.modules, "make_network_masks", network)
    data = write_shared_data(tmp_path / "data", cars=2)
    builders = module.set_builders(data, tmp_path / "sets", tmp_path / "isnet.onnx", 2)
    assert "isnet512" not in module.set_builders(data, tmp_path / "sets", None, 2)
    out = tmp_path / "isnet512"
    builders["isnet512"](out)
    assert seen == [((24, 36, 3), 512), ((24, 36, 3), 512)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"car_{k:02d}_{kind}" for k in range(2) for kind in ("im.jpg", "gt.png", "seg.png"))
    assert (out / "car_01_gt.png").resolve() == (data / "carvana-dev" / "car_01_gt.png").resolve()
    assert (cv2.imread(str(out / "car_01_seg.png"), cv2.IMREAD_GRAYSCALE) == 255).all()
