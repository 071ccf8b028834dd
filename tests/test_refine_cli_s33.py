"""crm refine (and the options it shares) as a user audit found it: a stdout reader that closes
part-way, a mask given by a pipe with no -o, --device cuda:N, IMAGE and MASK being one file,
OpenCV running out of memory, usage errors under --json and the warnings of a --json record."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
from command_lines import command_inputs
from command_lines import command_line as any_command_line
from conftest import coarse_of, synthetic_scene, write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.cli.options import RefinerOptions
from crm_cli.devices import DeviceError, resolve_device

runner = CliRunner()
MEMORY_ADVICE = "; try a smaller --tile-size, the 'fast' preset, or a smaller image"


def lines_starting(text: str, prefix: str) -> list[str]:
    """The lines of ``text`` that start with ``prefix``, without it."""
    return [line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)]


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights on the CPU."""
    return ["-w", str(weights), "-d", "cpu", "--threads", "1"]


# 1. -o - and a reader that closes part-way --------------------------------------------------------------------


def test_a_stdout_reader_that_closes_part_way_fails_the_refine(tiny_weights: Path, tmp_path: Path) -> None:
    # Noise does not compress: the cut-out's PNG (RGB noise + alpha) is far larger than a pipe's 64 KiB.
    rng = np.random.default_rng(0)
    image = tmp_path / "noise.png"
    Image.fromarray(rng.integers(0, 256, (400, 400, 3), dtype=np.uint8)).save(image)
    mask = tmp_path / "noise_mask.png"
    _, gt = synthetic_scene(400, 400)
    cv2.imwrite(str(mask), coarse_of(gt, 8))
    args = ["refine", str(image), str(mask), "-k", "cutout", "--preset", "fast", *cpu(tiny_weights)]
    whole = runner.invoke(app, [*args, "-o", str(tmp_path / "whole.png")])
    assert whole.exit_code == 0, whole.output
    assert (tmp_path / "whole.png").stat().st_size > 200_000

    process = subprocess.Popen([sys.executable, "-m", "crm_cli", *args, "-o", "-"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert process.stdout.read(10) == b"\x89PNG\r\n\x1a\n\x00\x00"  # crm has begun writing the PNG
    process.stdout.close()  # as `| head -c 10` does
    stderr = process.stderr.read().decode()
    process.wait(timeout=120)
    assert process.returncode == 1, stderr
    assert lines_starting(stderr, "error: ") == ["standard output was closed before the output was written"]
    assert "wrote" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr


# 2. A mask that is a pipe, with no -o ---------------------------------------------------------------------------


def test_a_mask_from_a_pipe_without_output_is_a_usage_error(tiny_weights: Path, tmp_path: Path) -> None:
    image, mask_file = write_scene_files(tmp_path / "src")
    folder = tmp_path / "work"
    folder.mkdir()
    fifo = folder / "mask.png"
    os.mkfifo(fifo)
    data = mask_file.read_bytes()
    assert len(data) < 65536  # the pipe's buffer holds it all: the writer never waits for a read

    def write_mask() -> None:
        try:
            with open(fifo, "wb") as pipe:  # waits until a reader opens the pipe
                pipe.write(data)
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=write_mask, daemon=True)
    writer.start()
    result = runner.invoke(app, ["refine", str(image), str(fifo), *cpu(tiny_weights), "--json"])
    # Release the writer (crm, rightly, never opened the pipe).
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer.join(timeout=60)
    finally:
        os.close(reader)
    assert not writer.is_alive()

    message = f"Invalid value: give -o OUT (or -o -) when the mask comes from a pipe or device: {fifo} is a pipe"
    assert result.exit_code == 2, result.output
    assert lines_starting(result.stderr, "error: ") == [message]
    assert "device: cpu" not in result.stderr  # refused before the model loads
    assert json.loads(result.stdout) == {"image": str(image), "mask": str(fifo), "output": None,
                                         "status": "failed", "error": message, "warnings": []}
    assert sorted(os.listdir(folder)) == ["mask.png"]  # nothing written beside the pipe


def test_special_file_names_pipes_and_leaves_files_alone(tmp_path: Path) -> None:
    from crm_cli.cli.refine import special_file

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file.png").write_bytes(b"x")
    assert special_file(tmp_path / "pipe") == "a pipe"
    assert special_file(tmp_path / "file.png") is None
    assert special_file(tmp_path / "missing.png") is None  # reading it names it
    assert special_file(tmp_path) == "a folder"
    # A descriptor's name for a regular file (/dev/stdin from `< mask.png` is one): no folder to write in.
    with open(tmp_path / "file.png", "rb") as opened:
        assert special_file(Path(f"/proc/self/fd/{opened.fileno()}")) == "a file descriptor"


def test_a_mask_named_by_its_descriptor_without_output_is_a_usage_error(tiny_weights: Path, tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path)
    with open(mask, "rb") as opened:
        named = f"/proc/self/fd/{opened.fileno()}"
        result = runner.invoke(app, ["refine", str(image), named, *cpu(tiny_weights)])
    assert result.exit_code == 2, result.output
    assert lines_starting(result.stderr, "error: ") == [
        f"Invalid value: give -o OUT (or -o -) when the mask comes from a pipe or device: {named} is a file "
        "descriptor"]
    assert "device: cpu" not in result.stderr


# 3. --device cuda:N --------------------------------------------------------------------------------------------


def test_device_names_are_checked_and_spelled_without_torch() -> None:
    from crm_cli.devices import device_name

    assert [device_name(name) for name in ("auto", " CPU ", "cuda", "CUDA:0", "cuda:12", "cuda:01", "mps", "MPS:0",
                                           None, "Auto", "cpu:0", " CPU:1")] == [
        "auto", "cpu", "cuda", "cuda:0", "cuda:12", "cuda:1", "mps", "mps", "auto", "auto", "cpu", "cpu"]
    for name in ("", "  "):  # session 53: an empty name is no longer taken for auto
        with pytest.raises(DeviceError, match="the device name is empty"):
            device_name(name)
    for name in ("cuda:", "cuda:-1", "cuda:x", "cuda: 0", "cuda:１"):
        with pytest.raises(DeviceError, match="the GPU index must be a whole number"):
            device_name(name)
    for name in ("cpu:", "cpu:x", "cpu:-1"):
        with pytest.raises(DeviceError, match=r"the CPU index must be a whole number \('cpu' or 'cpu:0'\)"):
            device_name(name)
    with pytest.raises(DeviceError, match="Apple MPS is one device, 'mps' or 'mps:0'"):
        device_name("mps:1")
    for name in ("tpu", "auto:0", "gpu"):
        with pytest.raises(DeviceError, match=r"unknown device .*; choose from auto, cpu, cuda, cuda:N"):
            device_name(name)


def test_a_gpu_index_is_resolved_or_refused_against_the_gpus_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("CUDA:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError) as beyond:
        resolve_device("cuda:2")
    assert str(beyond.value) == "device 'cuda:2' was requested but only 2 CUDA GPUs are present (cuda:0, cuda:1)"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError) as beyond:
        resolve_device("cuda:1")
    assert str(beyond.value) == "device 'cuda:1' was requested but only 1 CUDA GPU is present (cuda:0)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError) as missing:
        resolve_device("cuda:0")
    assert str(missing.value) == ("device 'cuda:0' was requested but no CUDA GPU is available "
                                  "(use device 'cpu' or 'auto')")


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA GPU and no Apple MPS, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("crm_cli.devices._mps_available", lambda torch: False)


def command_line(command: str, tmp_path: Path, weights: Path) -> list[str]:
    """A ``crm COMMAND`` line that would run on the CPU, for each test to add its --device option."""
    return any_command_line(command, command_inputs(tmp_path), "-w", str(weights), "--backend", "torch")


@pytest.mark.parametrize("command", ["refine", "batch", "eval", "time", "coco"])
def test_a_gpu_index_that_is_not_present_is_the_missing_device_error(command: str, tiny_weights: Path,
                                                                     tmp_path: Path, no_gpu: None) -> None:
    args = command_line(command, tmp_path, tiny_weights)
    missing = "device 'cuda:0' was requested but no CUDA GPU is available (use device 'cpu' or 'auto')"
    for device in (["-d", "cuda:0"], ["--device", "CUDA:0"]):
        result = runner.invoke(app, [*args, *device])
        assert result.exit_code == 1, result.output
        assert lines_starting(result.stderr, "error: ") == [missing]
    from_env = runner.invoke(app, args, env={"CRM_DEVICE": "cuda:0"})
    # Named as CRM_DEVICE's since session 53: a user who typed no device would not know where it came from.
    assert from_env.exit_code == 1 and lines_starting(from_env.stderr, "error: ") == [
        missing.replace("'cuda:0' was", "'cuda:0' (from CRM_DEVICE) was")]
    mps = runner.invoke(app, [*args, "-d", "mps:0"])
    assert mps.exit_code == 1
    assert lines_starting(mps.stderr, "error: ") == [
        "device 'mps' was requested but Apple MPS is not available (use device 'cpu' or 'auto')"]
    assert not (tmp_path / "out" / "o.png").exists()


def test_a_gpu_index_beyond_the_gpus_present_is_an_error(tiny_weights: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = runner.invoke(app, [*command_line("refine", tmp_path, tiny_weights), "-d", "cuda:1", "--json"])
    assert result.exit_code == 1, result.output
    message = "device 'cuda:1' was requested but only 1 CUDA GPU is present (cuda:0)"
    assert lines_starting(result.stderr, "error: ") == [message]
    assert json.loads(result.stdout)["error"] == message


@pytest.mark.parametrize("device, why", [
    ("cuda:x", "the GPU index must be a whole number"), ("cuda:", "the GPU index must be a whole number"),
    ("mps:1", "Apple MPS is one device"), ("tpu", "unknown device 'tpu'")])
def test_a_malformed_device_is_a_usage_error_before_the_model_loads(device: str, why: str, tiny_weights: Path,
                                                                    tmp_path: Path) -> None:
    args = command_line("refine", tmp_path, tiny_weights)
    for result in (runner.invoke(app, [*args, "-d", device]), runner.invoke(app, args, env={"CRM_DEVICE": device})):
        assert result.exit_code == 2, result.output
        errors = lines_starting(result.stderr, "error: ")
        assert len(errors) == 1 and errors[0].startswith("Invalid value for '-d' / '--device'") and why in errors[0]
        assert "device:" not in result.stderr
    # The CPU, named in any case, runs and is logged as before.
    result = runner.invoke(app, [*args, "-d", "CPU", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "device: cpu (1 thread)" in result.stderr and (tmp_path / "out" / "o.png").exists()


def test_the_help_names_gpu_indices() -> None:
    for command in ("refine", "batch", "eval", "time", "coco", "train"):
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}).stdout
        assert "-d, --device <auto|cpu|cuda|cuda:N|mps>" in text, command
        assert "cuda:N: GPU number N." in " ".join(text.split()), command


def test_the_device_option_keeps_the_library_spelling() -> None:
    from crm_cli.cli.options import parse_device

    assert parse_device("CUDA:3") == "cuda:3" and type(parse_device("CUDA:3")) is str  # the library's name, as is
    assert RefinerOptions().device == "auto" and RefinerOptions(device=parse_device("mps:0")).device == "mps"
    with pytest.raises(typer.BadParameter, match="GPU index"):
        parse_device("cuda:a")


def test_ray_refuses_one_gpu_index_for_all_its_actors() -> None:
    # Ray gives each actor a GPU of its own (raybatch.plan_actors): one index for all cannot hold.
    with pytest.raises(typer.Exit) as refused:
        RefinerOptions(device="cuda:1").ray_spec()
    assert refused.value.exit_code == 2
    assert RefinerOptions(device="cuda").ray_spec().device == "cuda"


# 4. IMAGE and MASK are one file --------------------------------------------------------------------------------


def test_image_and_mask_that_are_one_file_are_a_usage_error(tiny_weights: Path, tmp_path: Path) -> None:
    image, _ = write_scene_files(tmp_path)
    link = tmp_path / "link.jpg"
    link.symlink_to(image)
    hard = tmp_path / "hard.jpg"
    os.link(image, hard)
    cases = [("refine", image, image), ("refine", link, image), ("refine", image, hard), ("time", image, link)]
    for command, first, second in cases:
        result = runner.invoke(app, [command, str(first), str(second), *cpu(tiny_weights)])
        names = str(first) if first == second else f"{first} and {second}"
        assert result.exit_code == 2, (command, result.output)
        assert lines_starting(result.stderr, "error: ") == [
            f"IMAGE and MASK are the same file ({names}); give the photo, then its coarse mask"]
        assert "device:" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hard.jpg", "im.jpg", "link.jpg", "seg.png"]
    # Two missing files are no same file: the missing file is named, as ever.
    missing = tmp_path / "missing.png"
    result = runner.invoke(app, ["refine", str(missing), str(missing), "-o", str(tmp_path / "o.png"),
                                 *cpu(tiny_weights)])
    assert result.exit_code == 1, result.output
    errors = lines_starting(result.stderr, "error: ")
    assert len(errors) == 1 and str(missing) in errors[0] and "same file" not in errors[0]




# 5. OpenCV out of memory ---------------------------------------------------------------------------------------


OUT_OF_MEMORY = [
    ("OpenCV(4.10.0) /io/opencv/modules/core/src/alloc.cpp:73: error: (-4:Insufficient memory) Failed to "
     "allocate 47185920 bytes in function 'OutOfMemoryError'\n", "Unable to allocate 45.0 MiB in OpenCV"),
    ("... Insufficient memory ...", "Unable to allocate memory in OpenCV"),
    ("OpenCV: Failed to allocate 512 bytes", "Unable to allocate 512 bytes in OpenCV"),
]


def test_opencv_out_of_memory_is_one_clean_line(tiny_weights: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    image, mask = write_scene_files(tmp_path)
    for text, line in OUT_OF_MEMORY:
        def refine_files(*args: object, text: str = text, **kwargs: object) -> None:
            raise cv2.error(text)  # as cv2.dilate (roi.dilate_array) raised it under `ulimit -v`

        monkeypatch.setattr("crm_cli.pipeline.refine_files", refine_files)
        result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                                     *cpu(tiny_weights), "--json"])
        assert result.exit_code == 1, result.output
        assert lines_starting(result.stderr, "error: ") == [line + MEMORY_ADVICE]
        assert "Traceback" not in result.stderr and isinstance(result.exception, SystemExit)  # typer's exit, no cv2
        assert json.loads(result.stdout)["error"] == line + MEMORY_ADVICE
        assert not (tmp_path / "o.png").exists()

    def failed_assertion(*args: object, **kwargs: object) -> None:
        raise cv2.error("(-215:Assertion failed) !_src.empty()")

    # Any other OpenCV error is a bug: it stays a traceback, not a misleading memory line.
    monkeypatch.setattr("crm_cli.pipeline.refine_files", failed_assertion)
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"), *cpu(tiny_weights)])
    assert isinstance(result.exception, cv2.error)


# 6. Usage errors under --json ----------------------------------------------------------------------------------


def test_usage_errors_of_refine_print_a_json_record(tiny_weights: Path, tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path)
    base = ["refine", str(image), str(mask), *cpu(tiny_weights), "--json"]
    jpeg = tmp_path / "x.jpg"
    cases = [
        (["-o", str(jpeg)], str(jpeg),
         f"{jpeg}: JPEG is lossy and would alter the mask; name the output .png, .tif, .tiff, .webp"),
        (["--labels", "x"], str(tmp_path / "seg_refined.png"),
         "Invalid value for '--labels': label ids must be comma-separated integers >= 0, got 'x'"),
        (["-o", str(tmp_path / "o.png"), "--backend", "onnx", "--precision", "fp16"], str(tmp_path / "o.png"),
         "--backend onnx runs in fp32, not --precision fp16 (use --backend torch)"),
    ]
    for extra, output, message in cases:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert lines_starting(result.stderr, "error: ") == [message]
        assert result.stdout.count("\n") == 1, result.stdout  # one record, even where two paths reach it
        assert json.loads(result.stdout) == {"image": str(image), "mask": str(mask), "output": output,
                                             "status": "failed", "error": message, "warnings": []}
        assert "device:" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["im.jpg", "seg.png"]
    # Where stdout is asked for the image too, the record alone goes there (no image is written).
    both = runner.invoke(app, ["refine", str(image), str(mask), "-o", "-", "--json", *cpu(tiny_weights)])
    message = "Invalid value: -o - and --json both want stdout; choose one"
    assert both.exit_code == 2 and lines_starting(both.stderr, "error: ") == [message]
    assert json.loads(both.stdout) == {"image": str(image), "mask": str(mask), "output": "-", "status": "failed",
                                       "error": message, "warnings": []}
    # No record: for click's own parsing errors, and without --json.
    parsed = runner.invoke(app, ["refine", str(image), str(mask), "-t", "2", "--json", *cpu(tiny_weights)])
    plain = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(jpeg), *cpu(tiny_weights)])
    for result in (parsed, plain):
        assert result.exit_code == 2 and result.stdout == "", result.output




# 7. Warnings in the --json record ------------------------------------------------------------------------------


def test_the_json_record_lists_the_warnings_shown_for_the_image(tiny_weights: Path, tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), (64, 48),
                                       interpolation=cv2.INTER_NEAREST))
    result = runner.invoke(app, ["refine", str(image), str(small), "-o", str(tmp_path / "o.png"), *cpu(tiny_weights),
                                 "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["warnings"] == [f"{small}: upsampled to the image size 128x96"]
    assert lines_starting(result.stderr, "warning: ") == record["warnings"]

    plain = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "p.png"), *cpu(tiny_weights),
                                "--json"])
    assert plain.exit_code == 0 and json.loads(plain.stdout)["warnings"] == []


def test_logged_warnings_of_the_image_are_listed_and_those_of_the_weights_are_not(tiny_weights: Path,
                                                                                   tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path)
    drawn = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    pages = tmp_path / "pages.tif"
    Image.fromarray(drawn).save(pages, save_all=True, append_images=[Image.fromarray(np.zeros_like(drawn))])
    bare = tmp_path / "bare" / tiny_weights.name  # no sidecar: the weights are not verified, with a warning
    bare.parent.mkdir()
    shutil.copyfile(tiny_weights, bare)
    result = runner.invoke(app, ["refine", str(image), str(pages), "-o", str(tmp_path / "o.png"), *cpu(bare),
                                 "--json"])
    assert result.exit_code == 0, result.output
    shown = lines_starting(result.stderr, "warning: ")
    frames = f"{pages}: holds 2 frames (an animation or a multi-page file); only the first is read"
    assert frames in shown and any(line.startswith(f"weights {bare} are not verified") for line in shown)
    assert json.loads(result.stdout)["warnings"] == [line for line in shown if not line.startswith("weights ")]
    assert frames in json.loads(result.stdout)["warnings"]


def test_the_warnings_shown_before_a_failure_are_in_its_record(tiny_weights: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def write_image(*args: object, **kwargs: object) -> None:
        raise OSError(f"cannot write {tmp_path / 'o.png'}: No space left on device")

    monkeypatch.setattr("crm_cli.writing.write_image", write_image)
    image, mask = write_scene_files(tmp_path)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), cv2.resize(cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE), (64, 48),
                                       interpolation=cv2.INTER_NEAREST))
    result = runner.invoke(app, ["refine", str(image), str(small), "-o", str(tmp_path / "o.png"), *cpu(tiny_weights),
                                 "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout) == {
        "image": str(image), "mask": str(small), "output": str(tmp_path / "o.png"), "status": "failed",
        "error": f"cannot write {tmp_path / 'o.png'}: No space left on device",
        "warnings": [f"{small}: upsampled to the image size 128x96"]}
    assert lines_starting(result.stderr, "warning: ") == [f"{small}: upsampled to the image size 128x96"]
