"""Shared fixtures: tiny random checkpoints and synthetic images (no external data)."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

TINY_ARCH = {
    "encoder": "mobilenet_v2",
    "skip_dims": [8, 8, 8],
    "latent_dim": 16,
    "fusion": "separable",
    "hidden_dim": 8,
    "hidden_layers": 2,
    "dropout": 0.0,
    "width_mult": 0.25,
}


@pytest.fixture(autouse=True)
def ctrl_c_raises() -> Iterator[None]:
    """Each test starts with Python's own SIGINT handler, as under an interactive shell. A suite
    started as a background job without job control (``cmd &`` in a script, some CI runners)
    inherits SIGINT ignored, which the training rightly keeps, and the Ctrl-C tests would see nothing."""
    import threading

    if threading.current_thread() is not threading.main_thread():  # signal.signal works on the main thread only
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``'s worker count: the CPUs crm itself would use (affinity mask, container quota).
    pytest-xdist's own count is psutil's physical cores where psutil is installed, which gives one
    worker on a VM of two hyper-threads of one core."""
    from crm_cli.runtime import available_cpus

    return available_cpus()


def _worker_threads() -> int | None:
    """Torch threads for one pytest-xdist worker: the CPUs shared out among the workers. None when the
    suite runs in one process (torch keeps its own default)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return None
    from crm_cli.runtime import available_cpus

    return max(1, available_cpus() // workers)


WORKER_THREADS = _worker_threads()


@pytest.fixture(autouse=True)
def worker_threads() -> Iterator[None]:
    """Under ``pytest -n N`` each test starts with its worker's share of the CPUs as torch's thread
    count. Two workers of two torch threads each on a 2-core CI machine made a 12-s test take 60 s;
    a test that sets its own count is not carried into the next one."""
    if WORKER_THREADS is not None and "torch" in sys.modules:
        import torch

        if torch.get_num_threads() != WORKER_THREADS:
            torch.set_num_threads(WORKER_THREADS)
    yield


def flat(text: str) -> str:
    """Collapse Rich's wrapping so messages can be matched whatever the terminal width."""
    return " ".join(text.split())


def make_tiny_model(seed: int = 0):
    """A tiny randomly initialised CRMNet (about 20k parameters), in eval mode."""
    import torch

    from crm_cli.config import ArchConfig
    from crm_cli.model import build_crm

    torch.manual_seed(seed)
    model = build_crm(ArchConfig.from_dict(TINY_ARCH))
    # Random BN statistics so the network is not an identity-ish map.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def engine_devices() -> list[str]:
    """The devices engine tests run on: the CPU always, CUDA and MPS when this machine has them."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    backend = getattr(torch.backends, "mps", None)
    if backend is not None and backend.is_available():
        found.append("mps")
    return found


@pytest.fixture(scope="module", params=engine_devices())
def device(request: pytest.FixtureRequest) -> str:
    """Each device of :func:`engine_devices` in turn (module scope, so a module's models load once per device)."""
    return request.param


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to a tiny random checkpoint in the shipped format (fp16 safetensors + sidecar)."""
    from crm_cli.checkpoint import save_weights
    from crm_cli.config import Provenance

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(make_tiny_model(), path, Provenance(notes="random test weights"))
    return path


def spy_on_stages(refiner, monkeypatch: pytest.MonkeyPatch) -> list[float]:  # noqa: ANN001
    """The ratios of the stages ``refiner``'s runner runs, in order (a mirrored stage runs twice)."""
    ratios: list[float] = []
    original = refiner.runner._stage

    def spy(image, mask, ratio, *args, **kw):  # noqa: ANN001, ANN202
        ratios.append(ratio)
        return original(image, mask, ratio, *args, **kw)

    monkeypatch.setattr(refiner.runner, "_stage", spy)
    return ratios


def featureless_photo(height: int, width: int, value: int = 128) -> np.ndarray:
    """A photo with no edges near any mask: one grey ``value`` with a 4x4 black mark in its top-left
    corner, so that it is not one flat colour (for which the engine keeps the mask as given)."""
    photo = np.full((height, width, 3), value, np.uint8)
    photo[:4, :4] = 0
    return photo


def synthetic_scene(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured RGB image (uint8) with a bright ellipse object and its binary GT (uint8 0/255)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * rng.uniform(0.4, 0.6), width * rng.uniform(0.4, 0.6)
    ry, rx = height * rng.uniform(0.2, 0.3), width * rng.uniform(0.2, 0.3)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    image = rng.integers(20, 90, size=(height, width, 3)).astype(np.uint8)
    image[inside] = rng.integers(160, 240, size=(int(inside.sum()), 3)).astype(np.uint8)
    return image, (inside * 255).astype(np.uint8)


def rectangles_scene(scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 640x480 background (times ``scale``) with two flat axis-aligned rectangles, and their
    label map (ids 1 and 2): the rectangles a label map of boxes holds."""
    import cv2

    rng = np.random.default_rng(0)
    height, width = 480 * scale, 640 * scale
    image = cv2.resize(rng.integers(40, 160, size=(6, 8, 3)).astype(np.uint8), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    labels = np.zeros((height, width), np.uint8)
    labels[100 * scale:300 * scale, 150 * scale:450 * scale] = 1
    labels[320 * scale:420 * scale, 60 * scale:200 * scale] = 2
    image[labels == 1] = (200, 60, 50)
    image[labels == 2] = (40, 180, 90)
    return image, labels


def coarse_of(gt: np.ndarray, factor: int = 8) -> np.ndarray:
    """A blocky coarse version of a 0/255 GT: nearest down-then-up sampling."""
    import cv2

    height, width = gt.shape
    small = cv2.resize(gt, (max(1, width // factor), max(1, height // factor)), interpolation=cv2.INTER_AREA)
    return (cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST) > 127).astype(np.uint8) * 255


def write_scene_files(folder: Path, stem_image: str = "im", stem_mask: str = "seg",
                      size: tuple[int, int] = (96, 128), seed: int = 0) -> tuple[Path, Path]:
    """A synthetic JPEG photo and its blocky coarse PNG mask in ``folder``; returns their paths."""
    import cv2

    image, gt = synthetic_scene(*size, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    image_path, mask_path = folder / f"{stem_image}.jpg", folder / f"{stem_mask}.png"
    cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(mask_path), coarse_of(gt, 8))
    return image_path, mask_path


def write_training_pairs(root: Path, count: int, size: tuple[int, int] | Callable[[int], tuple[int, int]] = (64, 64),
                         name: str = "p{:02d}", skip_masks: Container[int] = ()) -> Path:
    """``count`` synthetic pairs in the DUTS-TR layout under ``root`` (made with its parents): pair k,
    named ``name.format(k)``, is ``synthetic_scene`` of seed k at ``size`` (height, width), or at
    ``size(k)``, as ``images/NAME.jpg`` and its exact mask ``masks/NAME.png`` (none for k in
    ``skip_masks``). Returns ``root``."""
    import cv2

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for k in range(count):
        height, width = size(k) if callable(size) else size
        image, mask = synthetic_scene(height, width, seed=k)
        cv2.imwrite(str(root / "images" / f"{name.format(k)}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if k not in skip_masks:
            cv2.imwrite(str(root / "masks" / f"{name.format(k)}.png"), mask)
    return root


@pytest.fixture
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, gt, coarse) at 96x128."""
    image, gt = synthetic_scene(96, 128)
    return image, gt, coarse_of(gt)


@pytest.fixture()
def no_model(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every model a crm train run would build (none, when it stops first) and fails it at once."""
    from crm_cli.training import loop

    built: list[object] = []

    def build(*args: object) -> None:
        built.append(args)
        raise RuntimeError("the model was built")

    monkeypatch.setattr(loop, "initial_model", build)
    return built


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (a script folder, not a package) as a module."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:  # as when run as a script: the folder's helpers import
        sys.path.append(str(path.parent))
    sys.modules[name] = module  # dataclasses look their module up there while the class is made
    spec.loader.exec_module(module)
    return module


def palette_png(path: Path, indices: np.ndarray, palette: list[int]) -> Path:
    """Save ``indices`` verbatim as a P-mode PNG with ``palette``."""
    from PIL import Image

    image = Image.new("P", (indices.shape[1], indices.shape[0]))
    image.frombytes(indices.astype(np.uint8).tobytes())
    image.putpalette(palette)
    image.save(path)
    return path
