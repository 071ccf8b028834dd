"""The tools for a time-boxed training run on a borrowed machine: packing the data and sizing the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import load_benchmark, synthetic_scene, write_training_pairs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_40(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small pairs: the fixed split holds out p00, p20 (every 20th in sorted order)."""
    return write_training_pairs(tmp_path_factory.mktemp("duts"), 40, (48, 40))


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.iterdir())


def test_pack_keeps_held_out_pairs_out_of_training(data_40: Path, tmp_path: Path) -> None:
    out = tmp_path / "pack"
    command = [sys.executable, str(ROOT / "benchmarks" / "pack_training_data.py"), str(data_40), str(out),
               "--pairs", "10", "--val", "2", "--quality", "60"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    trained = _names(out / "train" / "images")
    assert len(trained) == 10 and _names(out / "train" / "masks") == trained
    assert not {"p00", "p20"} & set(trained)
    # Spread over the 38 training pairs: the first and the last are both taken.
    assert trained[0] == "p01" and trained[-1] == "p39"
    assert _names(out / "val" / "images") == ["p00", "p20"]
    # Masks travel byte for byte; photos are re-encoded at the same size.
    assert (out / "train" / "masks" / "p01.png").read_bytes() == (data_40 / "masks" / "p01.png").read_bytes()
    photo = cv2.imread(str(out / "train" / "images" / "p01.jpg"))
    original = cv2.imread(str(data_40 / "images" / "p01.jpg"))
    assert photo.shape == original.shape
    # The same upright photo, only recompressed: strongly correlated pixel for pixel.
    assert np.corrcoef(photo.ravel().astype(float), original.ravel().astype(float))[0, 1] > 0.9

    too_small = subprocess.run([*command, "--max-mib", "0.001"], capture_output=True, text=True, timeout=120)
    assert too_small.returncode == 1 and "over --max-mib" in too_small.stderr


def test_run_sizing_from_a_probe_log(tmp_path: Path) -> None:
    device_train = load_benchmark("device_train")
    log = tmp_path / "log.csv"
    log.write_text("step,lr,seconds\n1,0.1,5.0\n2,0.1,0.03\n3,0.1,0.02\n4,0.1,0.04\n5,0.1,0.02\n")
    assert device_train.seconds_per_step(log, skip=1) == pytest.approx(0.025)  # median of 0.03, 0.02, 0.04, 0.02
    assert device_train.planned_steps(480.0, 0.025, 0.8) == 15360
    assert device_train.planned_steps(1.0, 10.0, 0.8) == 1  # never zero steps
    with pytest.raises(ValueError, match="no step"):
        device_train.seconds_per_step(log, skip=9)


def test_device_train_probes_then_runs_the_planned_steps(data_40: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, str(ROOT / "benchmarks" / "device_train.py"), "--minutes", "0.5", "--out", str(out),
               "--probe-steps", "3", "--", "--data", str(data_40), "--device", "cpu", "--threads", "1",
               "--batch", "2", "--query-window", "32", "--val-images", "1", "--synthetic", "0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = int(done.stderr.split("planning ")[1].split()[0])
    reached = torch.load(out / "last.pt", weights_only=True)["step"]
    assert planned >= 1 and 1 <= reached <= planned
    assert (out / "model.safetensors").exists() and (out / "val.jsonl").exists()
    refused = subprocess.run([*command, "--steps", "5"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "this script's to set" in refused.stderr


def test_heldout_blocky_coarse_by_hand() -> None:
    heldout = load_benchmark("make_heldout_val")
    gt = np.zeros((16, 16), np.float32)
    gt[:12, :12] = 1.0
    # 8x8 blocks: the top-left one is full, its right and lower neighbours exactly half (not > 0.5).
    expected = np.zeros((16, 16), np.float32)
    expected[:8, :8] = 1.0
    assert np.array_equal(heldout.heldout_coarse(gt, 0, "blocky"), expected)
    with pytest.raises(ValueError, match="unknown coarse kind"):
        heldout.heldout_coarse(gt, 0, "sam")


def test_heldout_lowres_coarse_is_seeded_per_image() -> None:
    heldout = load_benchmark("make_heldout_val")
    _, mask = synthetic_scene(300, 400, seed=3)
    gt = mask.astype(np.float32) / 255.0
    first, again, other = (heldout.heldout_coarse(gt, k, "lowres") for k in (5, 5, 6))
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert set(np.unique(first)) <= {0.0, 1.0}
    overlap = np.logical_and(first > 0.5, gt > 0.5).sum() / np.logical_or(first > 0.5, gt > 0.5).sum()
    assert 0.8 < overlap < 1.0  # a coarse version of the object, not the GT itself


def test_make_heldout_val_writes_the_chosen_coarse_kind(data_40: Path, tmp_path: Path) -> None:
    heldout = load_benchmark("make_heldout_val")
    out = tmp_path / "blocky"
    command = [sys.executable, str(ROOT / "benchmarks" / "make_heldout_val.py"), str(data_40), str(out),
               "--coarse", "blocky"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert _names(out) == ["p00_gt", "p00_im", "p00_seg", "p20_gt", "p20_im", "p20_seg"]
    for name in ("p00", "p20"):
        gt = cv2.imread(str(out / f"{name}_gt.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
        seg = cv2.imread(str(out / f"{name}_seg.png"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(seg, (heldout.blocky_coarse(gt) * 255).astype(np.uint8))
