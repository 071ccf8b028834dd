"""Session 38: torch's many-line errors read as one error with indented lines; ``crm info`` and the
refining commands where torch does not import; names that reached Python as surrogate escapes
(LC_ALL=C) written in ``--json`` as the text they spell; and crm refine's refusals staying the last
word after a mask's reading notes were held back.

The subprocess tests run ``python -m crm_cli`` with an environment of their own (see test_shell_s37)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_scene, write_scene_files
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from crm_cli.cli import app, failures, output
from crm_cli.errors import out_of_memory_message

runner = CliRunner()
CRM = [sys.executable, "-m", "crm_cli"]

# What torch says when a CUDA kernel runs out of memory (its text, three lines).
CUDA_SHORTAGE = ("CUDA error: out of memory\n"
                 "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace "
                 "below might be incorrect.\n"
                 "For debugging consider passing CUDA_LAUNCH_BLOCKING=1\n")
TORCH_ADVICE = ". Try --device cpu, a smaller --tile-size or the 'fast' preset."
SHOWN_SHORTAGE = [
    "CUDA error: out of memory" + TORCH_ADVICE,
    "  CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might "
    "be incorrect.",
    "  For debugging consider passing CUDA_LAUNCH_BLOCKING=1",
]


def child_environment(**changes: str) -> dict[str, str]:
    """This process's environment without crm's ONNX Runtime switch (a child sets it itself), with ``changes``."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env.update(changes)
    return env


def cpu(weights: Path) -> list[str]:
    """The options that load the tiny test weights with torch on the CPU."""
    return ["-w", str(weights), "-d", "cpu", "--threads", "1", "--backend", "torch"]


# 1. A torch error of many lines ------------------------------------------------------------------------------


@pytest.fixture
def cuda_short_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refinement fails as torch does when a CUDA kernel runs out of memory."""
    from crm_cli.engine import Refiner

    def short_of_memory(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise RuntimeError(CUDA_SHORTAGE)

    monkeypatch.setattr(Refiner, "refine_detailed", short_of_memory)


def test_continued_lines_puts_the_advice_after_the_first_line_and_indents_the_rest() -> None:
    from crm_cli.errors import continued_lines

    assert continued_lines("one line", "; advice") == "one line; advice"
    assert continued_lines("\n first \n\n second\nthird  \n", ".") == "first.\n   second\n  third"
    assert out_of_memory_message(RuntimeError(CUDA_SHORTAGE)) == "\n".join(SHOWN_SHORTAGE)


def test_refine_shows_a_many_line_torch_error_as_one_error_with_indented_lines(
        tiny_weights: Path, tmp_path: Path, cuda_short_of_memory: None) -> None:
    image, mask = write_scene_files(tmp_path)
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"), *cpu(tiny_weights),
                                 "-q", "--json"])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [f"error: {SHOWN_SHORTAGE[0]}", *SHOWN_SHORTAGE[1:]]
    assert json.loads(result.stdout)["error"] == "\n".join(SHOWN_SHORTAGE)


def test_batch_shows_a_many_line_torch_error_indented_under_its_pair(
        tiny_weights: Path, tmp_path: Path, cuda_short_of_memory: None) -> None:
    write_scene_files(tmp_path / "data", "a", "a_mask")
    result = runner.invoke(app, ["batch", str(tmp_path / "data"), "-o", str(tmp_path / "out"), *cpu(tiny_weights)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    first = lines.index(f"failed: a: {SHOWN_SHORTAGE[0]}")
    assert lines[first + 1:first + 3] == SHOWN_SHORTAGE[1:]
    # In the summary's list, whose items are indented, its lines are indented further.
    listed = lines.index(f"  failed a: {SHOWN_SHORTAGE[0]}")
    assert lines[listed + 1:listed + 3] == ["  " + line for line in SHOWN_SHORTAGE[1:]]


def test_a_failed_line_still_shows_a_line_break_in_a_name_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=shown, width=500))
    output.report_failure("a\n  failed forged.png: ", "bad\nforged: line", prefix="  failed")
    from crm_cli.errors import ContinuedText

    output.report_failure("b: ", ContinuedText("first\n  second"))  # a library's own lines
    assert shown.getvalue().splitlines() == [r"  failed a\n  failed forged.png: bad\nforged: line",
                                             "failed: b: first", "  second"]


# 2. torch does not import ---------------------------------------------------------------------------------------


@pytest.fixture
def torch_that_does_not_import(tmp_path: Path) -> dict[str, str]:
    """An environment where torch is installed but its import fails (a native library missing)."""
    package = tmp_path / "site" / "torch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("libtorch_cpu.so: cannot open shared object file")\n')
    return child_environment(PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))


TORCH_PROBLEM = "ImportError: libtorch_cpu.so: cannot open shared object file"


def test_info_without_torch_reports_what_it_can_and_exits_1(torch_that_does_not_import: dict[str, str],
                                                            tiny_weights: Path) -> None:
    done = subprocess.run([*CRM, "info", "-w", str(tiny_weights), "--json"], capture_output=True, text=True,
                          timeout=300, env=torch_that_does_not_import)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"error: torch does not import ({TORCH_PROBLEM})"]
    data = json.loads(done.stdout)
    assert (data["torch"], data["cuda"], data["torch_error"], data["status"]) == (None, None, TORCH_PROBLEM, "failed")
    assert data["version"] and data["python"] and [device["id"] for device in data["devices"]] == ["cpu"]
    # The tiny weights ship no ONNX encoder: no backend runs them without torch.
    assert data["default_backend"] is None and data["default_device"] is None
    weights = data["weights"]
    assert weights["sha256_ok"] is True and weights["config"]["encoder"] == "mobilenet_v2" and weights["error"] is None
    table = subprocess.run([*CRM, "info", "-w", str(tiny_weights)], capture_output=True, text=True, timeout=300,
                           env=torch_that_does_not_import)
    assert table.returncode == 1 and "Traceback" not in table.stderr, table.stderr
    assert "does not import" in table.stderr and "mobilenet_v2" in table.stderr


def test_refine_without_torch_is_one_error_line(torch_that_does_not_import: dict[str, str], tiny_weights: Path,
                                                tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path)
    done = subprocess.run([*CRM, "refine", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                           "-w", str(tiny_weights), "--json"],
                          capture_output=True, text=True, timeout=300, env=torch_that_does_not_import)
    assert done.returncode == 1, done.stderr
    message = f"cannot load the model: torch does not import ({TORCH_PROBLEM})"
    assert done.stderr.splitlines() == [f"error: {message}"]
    assert json.loads(done.stdout)["error"] == message


# 3. Names under LC_ALL=C -------------------------------------------------------------------------------------


def test_json_writes_surrogate_escapes_of_utf8_bytes_as_the_text_they_spell() -> None:
    escaped = os.fsdecode("café".encode()) if sys.getfilesystemencoding() == "ascii" else "caf\udcc3\udca9"
    record = {"items": [{"name": escaped, "warnings": [f"{escaped}.png: note", "x\udce9"]}], escaped: ("été",)}
    assert output._decoded_names(record) == {"items": [{"name": "café", "warnings": ["café.png: note", "x\udce9"]}],
                                             "café": ["été"]}


def test_batch_json_under_the_c_locale_names_a_utf8_file_as_it_is(tiny_weights: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    image, mask = write_scene_files(data, "im", "im_mask")
    os.rename(image, os.path.join(os.fsencode(data), "café.jpg".encode()))
    os.rename(mask, os.path.join(os.fsencode(data), "café_mask.png".encode()))
    image, mask = write_scene_files(data, "im", "im_mask")  # a Latin-1 name: bytes that are no UTF-8
    os.rename(image, os.path.join(os.fsencode(data), b"caf\xe9.jpg"))
    os.rename(mask, os.path.join(os.fsencode(data), b"caf\xe9_mask.png"))
    done = subprocess.run([*CRM, "batch", str(data), "-o", str(tmp_path / "out"), "-w", str(tiny_weights),
                           "--dry-run", "--json"], capture_output=True, timeout=300,
                          env=child_environment(LC_ALL="C", PYTHONUTF8="0"))
    assert done.returncode == 0, done.stderr
    names = sorted(item["name"] for item in json.loads(done.stdout)["items"])
    assert names == ["café", "caf\udce9"]
    item = next(item for item in json.loads(done.stdout)["items"] if item["name"] == "café")
    assert item["image"] == str(data / "café.jpg") and item["output"] == str(tmp_path / "out" / "café.png")


# 5. crm refine's refusal stays the last word -------------------------------------------------------------------


def test_a_refusal_after_the_mask_was_decoded_is_the_last_word(tmp_path: Path) -> None:
    # Why refine keeps its own except-block rather than pipeline._shown_if_failing: a refusal
    # (typer.Exit) has printed its error already, and no held-back reading note may follow it.
    photo, gt = synthetic_scene(96, 128)
    Image.fromarray(photo).save(tmp_path / "im.png")
    labels = (gt // 255).astype(np.uint8)
    labels[:10] = 2
    damaged_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff"
    Image.fromarray(labels).save(tmp_path / "labels.png", exif=damaged_exif)
    result = runner.invoke(app, ["refine", str(tmp_path / "im.png"), str(tmp_path / "labels.png"),
                                 "-o", str(tmp_path / "o.webp"), "--mode", "labels"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("error: ") and "WebP stores grey as RGB" in lines[-2]
    assert lines[-1] == "Try 'crm refine --help' for the options."


# Closing follow-ups: torch's other many-line errors in lists of failures; crm train without torch ------------

# A device-side fault as torch reports it (no shortage of memory: no advice is added).
CUDA_ASSERT = ("CUDA error: device-side assert triggered\n"
               "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.\n")


def test_failure_text_indents_a_library_error_and_leaves_crm_errors_as_they_are() -> None:
    from crm_cli.errors import failure_text
    from crm_cli.imageio import ImageReadError

    assert failure_text(RuntimeError(CUDA_ASSERT)) == (
        "CUDA error: device-side assert triggered\n  Compile with `TORCH_USE_CUDA_DSA` to enable device-side "
        "assertions.")
    # crm's own errors name files: a line break in a name stays in the text, for the printer to escape.
    named = "a\nb.png: not a recognised image file"
    assert failure_text(ImageReadError(named)) == named
    assert failure_text(ValueError("")) == "ValueError"


def test_batch_shows_a_device_fault_as_one_error_with_an_indented_line(
        tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_cli.engine import Refiner

    def device_fault(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise RuntimeError(CUDA_ASSERT)

    monkeypatch.setattr(Refiner, "refine_detailed", device_fault)
    write_scene_files(tmp_path / "data", "a", "a_mask")
    result = runner.invoke(app, ["batch", str(tmp_path / "data"), "-o", str(tmp_path / "out"), *cpu(tiny_weights)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    first = lines.index("failed: a: CUDA error: device-side assert triggered")
    assert lines[first + 1] == "  Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."


def test_train_without_torch_is_one_error_line(torch_that_does_not_import: dict[str, str], tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_scene_files(tmp_path / "data", name, f"{name}_mask")
    done = subprocess.run([*CRM, "train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                           "--steps", "1"], capture_output=True, text=True, timeout=300, env=torch_that_does_not_import)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"error: crm train needs torch, which does not import ({TORCH_PROBLEM})"]


# Review mends: torch failing to import in other ways ----------------------------------------------------------

# The first import fails for the real reason; a second one (half of torch loaded) would fail for another.
FLAKY_TORCH = '''import builtins
if getattr(builtins, "_crm_test_torch_tried", False):
    raise RuntimeError("function '_has_torch_function' already has a docstring")
builtins._crm_test_torch_tried = True
raise ImportError("numpy.core.multiarray failed to import")
'''


def _broken_torch(tmp_path: Path, source: str) -> dict[str, str]:
    package = tmp_path / "site" / "torch"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(source)
    return child_environment(PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.parametrize("source, problem", [
    ('raise AttributeError("module numpy has no attribute _no_nep50_warning")\n',
     "AttributeError: module numpy has no attribute _no_nep50_warning"),
    (FLAKY_TORCH, "ImportError: numpy.core.multiarray failed to import"),
])
def test_refine_names_the_first_reason_torch_did_not_import(tmp_path: Path, tiny_weights: Path, source: str,
                                                            problem: str) -> None:
    env = _broken_torch(tmp_path, source)
    image, mask = write_scene_files(tmp_path)
    done = subprocess.run([*CRM, "refine", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                           "-w", str(tiny_weights), "--backend", "torch"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"error: cannot load the model: torch does not import ({problem})"]


def test_info_of_a_training_checkpoint_without_torch_is_no_traceback(tmp_path: Path) -> None:
    env = _broken_torch(tmp_path, 'raise AttributeError("module numpy has no attribute _no_nep50_warning")\n')
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"PK\x03\x04 not really a torch file")
    done = subprocess.run([*CRM, "info", "-w", str(checkpoint), "--json"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    data = json.loads(done.stdout)
    assert data["torch_error"] == "AttributeError: module numpy has no attribute _no_nep50_warning"
    assert "only torch reads" in data["weights"]["error"]


def test_a_name_holding_a_line_break_and_two_spaces_forges_no_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """crm's own errors name files: their line breaks are escaped, even "\\n  " (which a library's
    many-line message keeps, as errors.ContinuedText)."""
    import pickle

    from crm_cli.errors import ContinuedText, continued_lines, failure_text
    from crm_cli.imageio import ImageReadError

    shown = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=shown, width=500))
    named = failure_text(ImageReadError("forge/x\n  failed evil.png: not a recognised image file"))
    output.report_failure("x\n  failed evil: ", named)
    output.report_failure("a: ", failure_text(RuntimeError(CUDA_ASSERT)), prefix="  failed")
    assert shown.getvalue().splitlines() == [
        r"failed: x\n  failed evil: forge/x\n  failed evil.png: not a recognised image file",
        "  failed a: CUDA error: device-side assert triggered",
        "    Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."]
    # The mark survives the trip to a Ray worker and back, and JSON writes it as a string.
    laid_out = continued_lines(CUDA_ASSERT)
    assert isinstance(pickle.loads(pickle.dumps(laid_out)), ContinuedText)
    assert json.loads(json.dumps({"error": laid_out}))["error"] == str(laid_out)


def test_coco_names_an_empty_runtime_error_once() -> None:
    from crm_cli.coco.instances import instance_error

    assert instance_error(RuntimeError()) == "RuntimeError"
    assert instance_error(RuntimeError("CUDA error: x\nmore")) == "RuntimeError: CUDA error: x\n  more"


def test_a_torch_that_imported_is_never_taken_for_one_that_did_not() -> None:
    """An ImportError of a name torch lacks, raised once torch is in sys.modules, is no failed import,
    and is not remembered as one."""
    import torch  # noqa: F401 - imported, as the refining commands have it

    error = ImportError("cannot import name 'no_such_helper' from 'torch.nn.utils.fusion'",
                        name="torch.nn.utils.fusion")
    assert failures.torch_import_failure(error) is None
    assert failures.torch_import_problem() is None


def test_ray_results_keep_a_library_messages_lines() -> None:
    """Results cross from Ray's actors to the driver as JSON: a ContinuedText comes back as one."""
    from crm_cli.errors import ContinuedText, continued_lines
    from crm_cli.raybatch import _continued_text, _tagged

    result = {"status": "failed", "error": continued_lines(CUDA_ASSERT), "warnings": ["a\n  b"]}
    back = json.loads(json.dumps(_tagged(result)), object_hook=_continued_text)
    assert back == result and isinstance(back["error"], ContinuedText)
    assert not isinstance(back["warnings"][0], ContinuedText)


def test_an_error_line_naming_a_file_with_a_line_break_and_two_spaces_stays_one_line(tmp_path: Path) -> None:
    """`crm refine $'x\\n  warning: forged.png' ...`: the name is escaped under `error:` too; only crm's
    own lists (errors.ContinuedText) keep their lines there."""
    from crm_cli.errors import ContinuedText

    forged = tmp_path / "x\n  warning: forged.png"
    mask = tmp_path / "m.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask)
    result = runner.invoke(app, ["refine", str(forged), str(mask), "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 1, result.output  # a missing file: a runtime failure (README's exit codes)
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: ") and "\\n  warning: forged.png" in lines[0]
    assert not any(line.startswith("  warning") for line in lines[1:])
    shown = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(output, "console", Console(file=shown, width=500))
        output.fail(ContinuedText("2 pairs cannot be read:\n  a.png: bad\n  b.png: bad"))
        output.fail("x\n  y.png: no such file")
    assert shown.getvalue().splitlines() == ["error: 2 pairs cannot be read:", "  a.png: bad", "  b.png: bad",
                                             r"error: x\n  y.png: no such file"]
