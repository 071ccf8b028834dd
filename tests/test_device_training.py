"""The tools for a time-boxed training run on a borrowed machine: packing the data and sizing the run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from conftest import synthetic_scene

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_40(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small pairs: the fixed split holds out p00, p20 (every 20th in sorted order)."""
    root = tmp_path_factory.mktemp("duts")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for k in range(40):
        image, mask = synthetic_scene(48, 40, seed=k)
        cv2.imwrite(str(root / "images" / f"p{k:02d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"p{k:02d}.png"), mask)
    return root


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
    device_train = _script("device_train")
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
