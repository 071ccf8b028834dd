"""The Python API's errors as a web service meets them: each documented class raised for its cause
through the public functions, each importable from ``crm_cli`` itself, and ``import crm_cli`` still
light (no NumPy, Pillow, OpenCV or torch)."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model
from PIL import Image

import crm_cli
from crm_cli.engine import Refiner
from crm_cli.imageio import read_image, read_mask, read_photo
from crm_cli.pipeline import refine_files
from crm_cli.presets import get_preset
from crm_cli.writing import write_image

ERROR_CLASSES = {
    "ImageReadError": ("crm_cli.imageio", OSError),
    "SizeMismatchError": ("crm_cli.masks", ValueError),
    "WeightsError": ("crm_cli.checkpoint", RuntimeError),
    "DeviceError": ("crm_cli.devices", RuntimeError),
    "ImageWriteError": ("crm_cli.writing", OSError),
}
READERS = [read_image, read_mask, read_photo]


def png_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as a PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def refiner() -> Refiner:
    """The tiny random model on the CPU: every check below fails before the model would run."""
    return Refiner.from_model(make_tiny_model(), device="cpu")


def test_error_classes_import_from_the_package_top_level() -> None:
    from crm_cli import DeviceError, ImageReadError, ImageWriteError, SizeMismatchError, WeightsError

    imported = {"ImageReadError": ImageReadError, "SizeMismatchError": SizeMismatchError,
                "WeightsError": WeightsError, "DeviceError": DeviceError, "ImageWriteError": ImageWriteError}
    for name, (module_name, base) in ERROR_CLASSES.items():
        module = __import__(module_name, fromlist=[name])
        assert imported[name] is getattr(module, name), name  # the very class the module raises
        assert issubclass(imported[name], base), name
        assert name in crm_cli.__all__ and name in dir(crm_cli), name
    for name in crm_cli.__all__:  # each name the star import takes exists
        getattr(crm_cli, name)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchError'"):
        crm_cli.NoSuchError  # noqa: B018 - the lookup is the test


def test_import_crm_cli_stays_light() -> None:
    # A fresh process: this one has imported everything already. Touching __all__ and dir() imports nothing either.
    code = ("import sys, crm_cli; crm_cli.__all__; dir(crm_cli); "
            "print(sorted(m for m in ('numpy', 'PIL', 'cv2', 'torch', 'onnxruntime') if m in sys.modules))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "[]"


def test_star_import_gives_the_error_classes() -> None:
    code = ("from crm_cli import *; "
            "print(sorted(n for n in ('ImageReadError', 'SizeMismatchError', 'WeightsError', 'DeviceError', "
            "'ImageWriteError', 'Refiner') if n in globals()))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert shown.strip() == str(sorted([*ERROR_CLASSES, "Refiner"]))


@pytest.mark.parametrize("read", READERS, ids=lambda read: read.__name__)
def test_unreadable_files_raise_image_read_error(read, tmp_path: Path) -> None:  # noqa: ANN001
    whole = png_bytes(np.arange(24 * 24 * 3, dtype=np.uint8).reshape(24, 24, 3))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "corrupt.png").write_bytes(b"this is no image, whatever its name says")
    causes = {"missing.png": "no such file", "empty.png": "empty file", "truncated.png": "cannot decode",
              "corrupt.png": "not a recognised image file"}
    for name, reason in causes.items():
        with pytest.raises(crm_cli.ImageReadError, match=reason) as raised:
            read(tmp_path / name)
        assert isinstance(raised.value, OSError) and name in str(raised.value)
    # Bytes (an upload kept in memory) are named by ``name``.
    with pytest.raises(crm_cli.ImageReadError, match="upload-7: not a recognised image file"):
        read(b"\x89PNG but not really", name="upload-7")


def test_refine_size_mismatch_is_a_size_mismatch_error_and_a_value_error(refiner: Refiner) -> None:
    from crm_cli.masks import SizeMismatchError  # from its module: the type is the test, not the top-level name

    image = np.zeros((32, 40, 3), np.uint8)
    mask = np.zeros((32, 36), np.uint8)
    for refine in (refiner.refine, refiner.refine_detailed):
        with pytest.raises(SizeMismatchError, match="mask size 36x32 does not match image size 40x32"):
            refine(image, mask)
        with pytest.raises(ValueError, match="does not match"):  # the callers that caught ValueError still do
            refine(image, mask)


def test_bad_arrays_stay_value_and_type_errors_not_size_mismatch(refiner: Refiner) -> None:
    image = np.zeros((32, 40, 3), np.uint8)
    for mask, expected in ((np.full((32, 40), 2.0, np.float32), ValueError),
                           (np.zeros((32, 40, 1), np.uint8), ValueError),
                           (np.array([["a"] * 40] * 32), TypeError)):
        with pytest.raises(expected) as raised:
            refiner.refine(image, mask)
        assert not isinstance(raised.value, crm_cli.SizeMismatchError)


def test_refine_files_size_mismatch_is_a_size_mismatch_error(refiner: Refiner) -> None:
    image = png_bytes(np.zeros((16, 16, 3), np.uint8))
    mask = png_bytes(np.zeros((16, 12), np.uint8))
    with pytest.raises(crm_cli.SizeMismatchError, match="mask m.png is 12x16 but image i.png is 16x16"):
        refine_files(refiner, image, mask, get_preset("auto"), image_name="i.png", mask_name="m.png")


def test_bad_weights_raise_weights_error(tmp_path: Path) -> None:
    with pytest.raises(crm_cli.WeightsError, match="weights not found"):
        Refiner(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(crm_cli.WeightsError, match="not a crm checkpoint") as raised:
        Refiner(garbage)
    assert isinstance(raised.value, RuntimeError) and not isinstance(raised.value, (OSError, ValueError))


def test_missing_or_unknown_device_raises_device_error() -> None:
    with pytest.raises(crm_cli.DeviceError, match="unknown device 'tpu'"):
        Refiner(device="tpu")
    from crm_cli.devices import available_devices

    if any(name.startswith("cuda") for name in available_devices()):
        pytest.skip("this machine has a CUDA GPU, so device 'cuda' is present")
    with pytest.raises(crm_cli.DeviceError, match="no CUDA GPU is available"):
        Refiner(device="cuda")


def test_unwritable_output_raises_image_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(crm_cli.ImageWriteError) as raised:
        write_image(blocker / "out.png", np.zeros((4, 4), np.uint8))
    assert isinstance(raised.value, OSError) and "out.png" in str(raised.value)


def test_only_a_faint_mask_is_warned_of_not_an_empty_one(refiner: Refiner,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    # What the README's empty-mask sentence says: both give all zeros; only the faint one warns.
    image = np.zeros((32, 40, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="crm_cli.engine"):
        empty = refiner.refine(image, np.zeros((32, 40), np.uint8))
    assert not empty.any() and not caplog.records
    faint = np.zeros((32, 40), np.float32)
    faint[8:24, 10:30] = 0.4
    with caplog.at_level(logging.WARNING, logger="crm_cli.engine"):
        refined = refiner.refine(image, faint)
    assert not refined.any()
    assert [record.getMessage() for record in caplog.records] == [
        "the coarse mask: no pixel of the mask is above 0.5 (its largest value is 0.40), so nothing is foreground"]


def test_refine_labels_size_mismatch_is_a_size_mismatch_error() -> None:
    from crm_cli.labels import refine_labels

    labels = np.zeros((32, 36), np.uint8)
    labels[4:20, 4:20] = 3
    with pytest.raises(crm_cli.SizeMismatchError, match="mask size 36x32 does not match image size 40x32"):
        refine_labels(object(), np.zeros((32, 40, 3), np.uint8), labels)


@pytest.mark.parametrize("options", [{"output_kind": "jpeg"}, {"threshold": 1.5}])
def test_refine_files_refuses_bad_output_options_before_it_refines(tmp_path: Path, options: dict) -> None:
    """A bad output kind or threshold is refused before the files are read and the model runs."""

    class CountingRefiner:
        calls = 0

        def refine_detailed(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            CountingRefiner.calls += 1
            raise AssertionError("refined")

    with pytest.raises(ValueError, match="unknown output kind|threshold must be in"):
        refine_files(CountingRefiner(), tmp_path / "missing.png", tmp_path / "missing_mask.png",
                     get_preset("auto"), **options)
    assert CountingRefiner.calls == 0
