"""Benchmark scripts that lack something on this machine (a GPU, weights, data, a package) stop with
one clear line (a SystemExit), not a traceback (session 36)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import cv2
import pytest
from conftest import load_benchmark, synthetic_scene, write_training_pairs

SCRIPTS = {name: load_benchmark(name) for name in (
    "choose_checkpoint", "coco_crop", "device_train", "edge_offset", "gate_threshold", "heldout_val",
    "make_heldout_val", "make_network_masks", "make_thin_train", "make_thin_val", "pack_training_data", "speedups",
    "training_curve", "vs_cascadepsp")}
edge_offset, vs_cascadepsp = SCRIPTS["edge_offset"], SCRIPTS["vs_cascadepsp"]

NO_PAIRS = "no pairs found"
MISSING_WEIGHTS = "weights not found"


@pytest.fixture
def big_folder(tmp_path: Path) -> Path:
    """One BIG-layout triple (a_im, a_gt, a_seg) of 48x40 px."""
    folder = tmp_path / "big"
    folder.mkdir()
    image, mask = synthetic_scene(40, 48)
    cv2.imwrite(str(folder / "a_im.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "a_gt.png"), mask)
    cv2.imwrite(str(folder / "a_seg.png"), mask)
    return folder


@pytest.fixture
def training_folder(tmp_path: Path) -> Path:
    """images/ + masks/ with two small pairs."""
    return write_training_pairs(tmp_path / "train", 2, (40, 48), name="p{}")


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    """A folder with nothing in it (no pairs, no log)."""
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def run_main(monkeypatch: pytest.MonkeyPatch, module: ModuleType, *args: str) -> None:
    """Call a script's ``main()`` with ``args`` as its command line."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py", *args])
    module.main()


def cuda_present() -> bool:
    import torch

    return torch.cuda.is_available()


def command_line(template: list[str], folders: dict[str, Path]) -> list[str]:
    """``template`` with ``{big}``, ``{train}``, ``{empty}`` and ``{tmp}`` filled in."""
    return [item.format(**{name: str(path) for name, path in folders.items()}) for item in template]


@pytest.fixture
def folders(tmp_path: Path, big_folder: Path, training_folder: Path, empty_folder: Path) -> dict[str, Path]:
    """The folders a command line template names."""
    return {"big": big_folder, "train": training_folder, "empty": empty_folder, "tmp": tmp_path}


@pytest.mark.parametrize(("script", "template", "expected"), [
    ("heldout_val", ["--data", "{train}", "--weights", "{tmp}/missing.safetensors"], MISSING_WEIGHTS),
    ("gate_threshold", ["a={big}", "--weights", "{tmp}/missing.safetensors"], MISSING_WEIGHTS),
    ("choose_checkpoint", ["{tmp}", "--set", "a={big}", "--baseline", "{tmp}/missing.safetensors"],
     r"no such weights file \(--baseline\)"),
    ("heldout_val", ["--data", "{empty}"], NO_PAIRS),
    ("gate_threshold", ["a={empty}"], NO_PAIRS),
    ("make_heldout_val", ["{empty}", "{tmp}/out"], NO_PAIRS),
    ("make_thin_val", ["{empty}", "{tmp}/out"], NO_PAIRS),
    ("make_thin_train", ["{empty}", "{tmp}/out"], NO_PAIRS),
    ("pack_training_data", ["{empty}", "{tmp}/out"], NO_PAIRS),
    ("edge_offset", ["{empty}"], NO_PAIRS),
    ("make_network_masks", ["{tmp}/missing.onnx", "{train}", "{tmp}/out"], "missing.onnx: no such file"),
    ("training_curve", ["{empty}", "-o", "{tmp}/curve.png"], "log.csv: no such file"),
    ("device_train", ["--minutes", "1", "--out", "{tmp}/run", "--", "--data", "{empty}"],
     r"crm train failed \(exit code [1-9]"),
])
def test_what_is_missing_is_one_line(monkeypatch: pytest.MonkeyPatch, folders: dict[str, Path], script: str,
                                     template: list[str], expected: str) -> None:
    with pytest.raises(SystemExit, match=expected):
        run_main(monkeypatch, SCRIPTS[script], *command_line(template, folders))


@pytest.mark.parametrize("script", ["gate_threshold", "schedules", "pipeline_ceiling", "choose_checkpoint"])
@pytest.mark.parametrize("item", ["a", "a={tmp}/missing"])
def test_a_bad_named_set_is_one_line_before_any_work(monkeypatch: pytest.MonkeyPatch, folders: dict[str, Path],
                                                     script: str, item: str) -> None:
    module = load_benchmark(script)
    # Checked before the weights are loaded: the line names the set, not the missing weights file.
    # (choose_checkpoint checks its --baseline file first, so it keeps the shipped one here.)
    if script == "choose_checkpoint":
        named, weights = ["{tmp}", "--set", item], []
    else:
        named, weights = [item], ["--weights", str(folders["tmp"] / "none.safetensors")]
    with pytest.raises(SystemExit, match=r"wants NAME=FOLDER with an existing folder, got 'a"):
        run_main(monkeypatch, module, *command_line(named, folders), *weights)


def test_edge_offset_names_the_pairs_without_a_refined_mask(big_folder: Path, empty_folder: Path) -> None:
    with pytest.raises(SystemExit, match=r"no refined mask for 1 of the 1 pairs measured \(a\); write them with "
                                         r"crm eval"):
        edge_offset.main([str(big_folder), "--pred", str(empty_folder)])


def test_vs_cascadepsp_without_cascadepsp_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "segmentation_refinement", None)  # any import of it fails
    with pytest.raises(SystemExit, match="pip install segmentation-refinement"):
        vs_cascadepsp.run_one("cascadepsp", "64x48", "fast", "cpu", None, 1)


@pytest.mark.skipif(cuda_present(), reason="checks a machine without a CUDA GPU")
@pytest.mark.parametrize(("script", "template"), [
    ("vs_cascadepsp", ["--sizes", "64x48", "--presets", "fast"]),
    ("speedups", ["--size", "64x48", "--repeat", "1", "--variants", "1 thread"]),
    ("coco_crop", ["--size", "96x64", "--instances", "1", "--full-instances", "0"]),
    ("heldout_val", ["--data", "{train}"]),
    ("gate_threshold", ["a={big}"]),
])
def test_cuda_without_a_gpu_is_one_line(monkeypatch: pytest.MonkeyPatch, folders: dict[str, Path], script: str,
                                        template: list[str]) -> None:
    with pytest.raises(SystemExit, match="no CUDA GPU is available"):
        run_main(monkeypatch, SCRIPTS[script], *command_line(template, folders), "--device", "cuda")
