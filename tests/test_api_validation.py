"""What the Python API and the weights tools refuse, and how: one clear error instead of a
traceback from deep inside, a silently wrong mask, or a setup that looks fine and is not."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, coarse_of, flat, make_tiny_model, synthetic_scene, write_scene_files
from typer.testing import CliRunner

from crm_cli.checkpoint import WeightsError, load_model, save_weights, sha256_file, sidecar_path
from crm_cli.cli import app
from crm_cli.config import ArchConfig, Provenance
from crm_cli.devices import DeviceError, resolve_device
from crm_cli.engine import Refiner, choose_backend
from crm_cli.masks import MaskData

runner = CliRunner()


@pytest.fixture(scope="module")
def refiner() -> Refiner:
    """The tiny random model on the CPU (torch)."""
    return Refiner.from_model(make_tiny_model(), device="cpu")


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """(image, coarse uint8 0/255) at 96x128."""
    image, gt = synthetic_scene(96, 128)
    return image, coarse_of(gt)


@pytest.fixture(scope="module")
def exported(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny weights (with sidecar) whose encoder is exported beside it."""
    pytest.importorskip("onnx")
    from crm_cli.onnx_export import export_encoder

    folder = tmp_path_factory.mktemp("exported")
    weights = folder / tiny_weights.name
    shutil.copyfile(tiny_weights, weights)
    shutil.copyfile(sidecar_path(tiny_weights), sidecar_path(weights))
    export_encoder(weights)
    return weights


def copy_without_sidecar(weights: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / weights.name
    shutil.copyfile(weights, out)
    return out



# 1-3. Masks at the Refiner's entry ------------------------------------------------------------------------------


def test_nan_in_a_float_mask_is_refused(refiner: Refiner, scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, coarse = scene
    mask = (coarse > 127).astype(np.float32)
    mask[:, :5] = np.nan
    with pytest.raises(ValueError, match="mask contains NaN"):
        refiner.refine(image, mask)


@pytest.mark.parametrize("make", [
    lambda m: m[:, :, None], lambda m: np.dstack([m] * 3), lambda m: m.ravel(), lambda m: np.array(1.0),
], ids=["HxWx1", "HxWx3", "1-D", "0-D"])
def test_a_mask_must_be_two_dimensional(refiner: Refiner, scene: tuple[np.ndarray, np.ndarray], make) -> None:  # noqa: ANN001
    image, coarse = scene
    with pytest.raises(ValueError, match=r"mask must be \(H, W\), got shape"):
        refiner.refine(image, make(coarse))


def test_a_mask_that_is_not_a_numeric_array_is_a_type_error(refiner: Refiner,
                                                            scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, coarse = scene
    with pytest.raises(TypeError, match="got None"):
        refiner.refine(image, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="numeric"):
        refiner.refine(image, coarse.astype(str))


def test_masks_that_would_be_silently_binarised_are_refused(refiner: Refiner,
                                                           scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, coarse = scene
    with pytest.raises(ValueError, match=r"\[0, 1\], got values in \[0, 255\]"):
        refiner.refine(image, coarse.astype(np.float64))
    with pytest.raises(ValueError, match=r"type int32 must hold only 0 and 1.*uint8"):
        refiner.refine(image, coarse.astype(np.int32))
    with pytest.raises(ValueError, match=r"got values in \[-1"):
        refiner.refine(image, np.where(coarse > 127, 1.0, -1.0))


def test_every_documented_mask_type_gives_the_uint8_result(refiner: Refiner,
                                                           scene: tuple[np.ndarray, np.ndarray]) -> None:
    image, coarse = scene
    binary = coarse > 127
    expected = refiner.refine(image, coarse)
    for mask in (binary, binary.astype(np.uint16) * 65535, binary.astype(np.uint16) * 255, binary.astype(np.int64),
                 binary.astype(np.int8), binary.astype(np.float16), binary.astype(np.float64),
                 np.zeros_like(coarse, np.int32) + binary):
        np.testing.assert_array_equal(refiner.refine(image, mask), expected)
    # What the CLI passes: MaskData.probability() of every kind the reader makes.
    for values, kind in ((coarse, "gray8"), (binary.astype(np.uint16) * 65535, "gray16"),
                         (binary.astype(np.float32), "float"), (binary.astype(np.uint8), "palette")):
        np.testing.assert_array_equal(refiner.refine(image, MaskData(values, kind).probability()), expected)


def test_an_empty_image_is_a_value_error(refiner: Refiner) -> None:
    with pytest.raises(ValueError, match="empty"):
        refiner.refine(np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8))


# 8, 11. Constructor options -------------------------------------------------------------------------------------


@pytest.mark.parametrize("tiles", [{"tile_size": -64}, {"tile_size": 0}, {"roi_tile_size": 0}, {"tile_size": 8},
                                   {"tile_margin": -1}, {"roi_window_size": 0}, {"decode_budget_mb": 0},
                                   {"tile_size": 256.5}])
def test_tile_options_are_checked_when_the_refiner_is_built(tiles: dict) -> None:
    name = next(iter(tiles))
    with pytest.raises(ValueError, match=name):
        Refiner.from_model(make_tiny_model(), device="cpu", **tiles)


def test_unknown_tile_option_and_the_smallest_tile(scene: tuple[np.ndarray, np.ndarray]) -> None:
    with pytest.raises(TypeError, match="tile_sizes"):
        Refiner.from_model(make_tiny_model(), device="cpu", tile_sizes=512)
    image, coarse = scene
    small = Refiner.from_model(make_tiny_model(), device="cpu", tile_size=16, roi_tile_size=16, tile_margin=0)
    assert small.refine(image, coarse, preset="quality").shape == coarse.shape


@pytest.mark.parametrize("threads", [-1, "2", 1.5, True])
def test_threads_must_be_a_whole_number(exported: Path, threads: object) -> None:
    with pytest.raises(ValueError, match="threads"):
        Refiner(exported, device="cpu", threads=threads)  # type: ignore[arg-type]


def test_backend_names_ignore_case_like_devices(exported: Path) -> None:
    encoder = exported.with_name("tiny.encoder.onnx")
    assert choose_backend(exported, "cpu", "fp32", "ONNX") == encoder
    assert choose_backend(exported, "cpu", "fp32", " Torch ") is None
    assert Refiner(exported, device="CPU", backend="Onnx").backend == "onnx"
    assert Refiner(exported, device="cpu", backend="TORCH", threads=0).backend == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        Refiner(exported, device="cpu", backend="tensorrt")


def test_reduced_precision_on_the_cpu_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        Refiner.from_model(make_tiny_model(), device="cpu")
        assert not caplog.records
        Refiner.from_model(make_tiny_model(), device="cpu", precision="fp16")
    assert any("precision fp16 is much slower than fp32 on the CPU" in record.getMessage() for record in caplog.records)


def test_a_malformed_gpu_index_is_a_device_error() -> None:
    for name in ("cuda:x", "cuda:-1", "cuda: 0"):
        with pytest.raises(DeviceError, match="GPU index"):
            resolve_device(name)


def test_device_errors_name_the_api_argument_not_a_cli_option(exported: Path, tiny_weights: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("crm_cli.devices._mps_available", lambda torch: False)
    for name in ("cuda", "mps"):
        with pytest.raises(DeviceError) as error:
            Refiner(tiny_weights, device=name, backend="torch")
        assert str(error.value).endswith("(use device 'cpu' or 'auto')") and "--" not in str(error.value)
    with pytest.raises(ValueError) as refused:
        choose_backend(exported, "cuda", "fp32", "onnx")
    assert "not on device 'cuda' (use the torch backend)" in str(refused.value) and "--" not in str(refused.value)
    with pytest.raises(ValueError) as refused:
        choose_backend(exported, "cpu", "fp16", "onnx")
    assert "not in precision 'fp16' (use the torch backend)" in str(refused.value) and "--" not in str(refused.value)
    # The same wording reads as well on the command line.
    image, mask = write_scene_files(tmp_path)
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "out.png"), "-d", "cuda",
                                 "-w", str(tiny_weights)])
    assert result.exit_code == 1
    assert "device 'cuda' was requested but no CUDA GPU is available (use device 'cpu' or 'auto')" in flat(
        result.stderr)


# 5. Weights without a sidecar -----------------------------------------------------------------------------------


def test_unverified_weights_load_with_a_warning(tiny_weights: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        checked = Refiner(tiny_weights, device="cpu", backend="torch")
        assert not caplog.records
        bare = copy_without_sidecar(tiny_weights, tmp_path / "bare")
        unchecked = Refiner(bare, device="cpu")
    assert [r.getMessage() for r in caplog.records] == [
        f"weights {bare} are not verified: no sidecar with a sha256 (tiny.json); without it no exported ONNX "
        "encoder, the faster CPU backend, is used either: copy the .json file (and any .encoder.onnx) that came "
        "with the weights beside them"]
    assert checked.weights_info.verified and checked.weights_info.sha256 == sha256_file(tiny_weights)
    assert not unchecked.weights_info.verified and unchecked.weights_info.sha256 == sha256_file(bare)
    # A sidecar without a "sha256" verifies nothing either.
    sidecar_path(bare).write_text(json.dumps({"file": bare.name}))
    assert not load_model(bare)[1].verified


# 4, 15. Exporting the ONNX encoder ------------------------------------------------------------------------------


def test_export_without_a_sidecar_creates_one_the_onnx_backend_accepts(tiny_weights: Path, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("onnx")
    from crm_cli.onnx_export import main

    bare = copy_without_sidecar(tiny_weights, tmp_path / "bare")
    elsewhere = tmp_path / "elsewhere" / "enc.onnx"
    main([str(bare), "-o", str(elsewhere)])
    assert elsewhere.is_file() and not sidecar_path(bare).exists()
    assert "not recorded" in capsys.readouterr().err

    main([str(bare)])
    out, err = capsys.readouterr()
    entry = json.loads(out)
    sidecar = json.loads(sidecar_path(bare).read_text())
    assert sidecar["sha256"] == sha256_file(bare) and sidecar["onnx"] == entry
    assert "created tiny.json" in err
    encoder = bare.with_name("tiny.encoder.onnx")
    assert choose_backend(bare, "cpu", "fp32", "onnx") == encoder
    assert Refiner(bare, device="cpu").backend == "onnx"


def test_export_of_symlinked_weights_is_recorded_beside_the_link(tiny_weights: Path, tmp_path: Path) -> None:
    """The backend reads the sidecar and encoder beside the path it is given, the link's folder."""
    pytest.importorskip("onnx")
    from crm_cli.onnx_export import main

    target = copy_without_sidecar(tiny_weights, tmp_path / "store")
    link = tmp_path / "links" / "tiny.safetensors"
    link.parent.mkdir()
    link.symlink_to(target)
    main([str(link)])
    assert choose_backend(link, "cpu", "fp32", "onnx") == link.with_name("tiny.encoder.onnx")


def test_export_of_missing_weights_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from crm_cli.onnx_export import main

    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "absent.safetensors")])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: weights not found") and "Traceback" not in err


# 6. A .pt checkpoint beside an exported encoder -----------------------------------------------------------------


def test_a_pt_checkpoint_never_takes_the_onnx_backend(exported: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    model = make_tiny_model()
    pt = tmp_path / "train.pt"
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, pt)
    # A sidecar with its hash and an "onnx" entry tied to it, as an older onnx_export wrote.
    encoder = shutil.copyfile(exported.with_name("tiny.encoder.onnx"), tmp_path / "train.encoder.onnx")
    digest = sha256_file(pt)
    sidecar_path(pt).write_text(json.dumps({"sha256": digest, "onnx": {
        "file": encoder.name, "sha256": sha256_file(encoder), "weights_sha256": digest}}))
    assert choose_backend(pt, "cpu", "fp32", "auto") is None
    with pytest.raises(WeightsError, match="runs .safetensors weights"):
        choose_backend(pt, "cpu", "fp32", "onnx")
    assert Refiner(pt, device="cpu").backend == "torch"

    from crm_cli.onnx_export import main

    with pytest.raises(SystemExit):
        main([str(pt)])
    assert "torch training checkpoint" in capsys.readouterr().err


# 9. Missing and wrong weights paths -----------------------------------------------------------------------------


def test_missing_weights_and_directories_are_named(tmp_path: Path) -> None:
    absent = tmp_path / "absent.safetensors"
    with pytest.raises(WeightsError, match="weights not found"):
        choose_backend(absent, "cpu", "fp32", "onnx")
    with pytest.raises(WeightsError, match="weights not found"):
        Refiner(absent, device="cpu", backend="onnx")
    with pytest.raises(WeightsError, match="is a directory"):
        Refiner(tmp_path, device="cpu")
    with pytest.raises(WeightsError, match="is a directory"):
        Refiner(tmp_path, device="cpu", backend="onnx")


def test_the_sidecar_passed_as_weights_is_not_a_checkpoint(tiny_weights: Path) -> None:
    with pytest.raises(WeightsError, match="not a crm checkpoint"):
        Refiner(sidecar_path(tiny_weights), device="cpu")


# 10. Config values of the wrong type ----------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("hidden_dim", "32"), ("latent_dim", 64.0), ("hidden_layers", -1),
                                            ("skip_dims", [8, 8]), ("dropout", 1.5), ("width_mult", True),
                                            ("fusion", "bogus"), ("encoder", 3), ("rgb_mean", [0.5, "x", 0.5])])
def test_config_values_of_the_wrong_type_are_named(key: str, value: object, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(ValueError, match=key):
        ArchConfig.from_dict({**TINY_ARCH, key: value})
    # The same config inside a checkpoint: a WeightsError naming the file and the key.
    path = tmp_path / "bad.safetensors"
    state = {k: v.contiguous() for k, v in make_tiny_model().state_dict().items()}
    save_file(state, str(path), metadata={"format": "crm-cli/1", "config": json.dumps({**TINY_ARCH, key: value})})
    with pytest.raises(WeightsError, match=rf"bad.safetensors: .*{key}"):
        Refiner(path, device="cpu")


def test_valid_configs_still_load() -> None:
    assert ArchConfig.from_dict(TINY_ARCH).skip_dims == (8, 8, 8)
    assert ArchConfig.from_dict({**TINY_ARCH, "width_mult": 1, "dropout": 0, "rgb_mean": None}).width_mult == 1


# 7. crm info: exit 1 for weights refine would refuse ------------------------------------------------------------


def test_info_checks_the_exported_encoder(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tampered"
    folder.mkdir()
    for name in (exported.name, sidecar_path(exported).name, "tiny.encoder.onnx"):
        shutil.copyfile(exported.with_name(name), folder / name)
    weights = folder / exported.name
    result = runner.invoke(app, ["info", "-w", str(weights), "--json"])
    assert result.exit_code == 0, result.stderr
    encoder = json.loads(result.stdout)["weights"]["onnx"]
    assert encoder == {"path": str(folder / "tiny.encoder.onnx"), "exists": True, "sha256_ok": True, "used": True,
                       "error": None}

    onnx_file = folder / "tiny.encoder.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    result = runner.invoke(app, ["info", "-w", str(weights), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["weights"]["onnx"]["sha256_ok"] is False and report["default_backend"] is None
    assert "tiny.encoder.onnx" in flat(result.stderr) and "sha256" in flat(result.stderr)
    # With a long path (in a terminal of 80 columns, as here, it wraps), the verdict stays whole on its
    # own line above the path.
    long_folder = folder / ("a-rather-long-folder-name-" * 4)
    long_folder.mkdir()
    for file in folder.glob("tiny*"):
        file.rename(long_folder / file.name)
    table = runner.invoke(app, ["info", "-w", str(long_folder / weights.name)])
    cells = [cell.strip() for line in table.stderr.splitlines() for cell in line.split("│")]
    assert table.exit_code == 1 and "sha256 does NOT match sidecar" in cells


def test_info_builds_the_recorded_architecture(tmp_path: Path) -> None:
    # hidden_layers 3 is a valid config, but these tensors hold 2 hidden layers.
    model = make_tiny_model()
    path = tmp_path / "misfit.safetensors"
    save_weights(model, path, Provenance())
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    metadata["config"] = json.dumps({**json.loads(metadata["config"]), "hidden_layers": 3})
    save_file(state, str(path), metadata=metadata)
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**sidecar, "sha256": sha256_file(path)}))
    result = runner.invoke(app, ["info", "-w", str(path), "--json"])
    assert result.exit_code == 1
    assert "do not fit their recorded architecture" in flat(result.stderr)


def test_ratios_as_the_clis_string_equal_the_tuple(refiner: Refiner, scene: tuple[np.ndarray, np.ndarray]) -> None:
    from crm_cli.presets import check_ratios

    assert check_ratios("0.25, 0.5,1") == (0.25, 0.5, 1.0)
    image, mask = scene
    as_text = refiner.refine(image, mask, ratios="0.5,1")
    assert np.array_equal(as_text, refiner.refine(image, mask, ratios=(0.5, 1.0)))
    with pytest.raises(ValueError, match="ratios must be numbers"):
        check_ratios("0.5,x")
    with pytest.raises(ValueError, match="ratios must increase"):
        check_ratios("1,0.5")


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_mask_in_fortran_order_or_a_transposed_view_gives_the_same_result(
        backend: str, exported: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    # Both runners write decoded pixels through a flat view of the mask's resized copy; a Fortran-order
    # mask used to crash torch (view of a non-contiguous tensor) and lose the onnx decode silently.
    image, mask = scene
    refiner = Refiner(exported, device="cpu", backend=backend)
    expected = refiner.refine(image, mask)
    assert np.array_equal(refiner.refine(image, np.asfortranarray(mask)), expected)
    assert np.array_equal(refiner.refine(image, np.ascontiguousarray(mask.T).T), expected)


def test_weights_given_as_any_path_like_load(tiny_weights: Path, scene: tuple[np.ndarray, np.ndarray]) -> None:
    from pathlib import PurePosixPath

    class WeightsLocation:  # an os.PathLike of a user's own
        def __fspath__(self) -> str:
            return str(tiny_weights)

    image, mask = scene
    expected = Refiner(tiny_weights, device="cpu").refine(image, mask)
    for given in (PurePosixPath(tiny_weights), WeightsLocation(), str(tiny_weights)):
        refiner = Refiner(given, device="cpu")
        assert refiner.weights_info.verified
        np.testing.assert_array_equal(refiner.refine(image, mask), expected)
