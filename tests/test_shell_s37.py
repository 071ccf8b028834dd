"""What a shell can do to ``crm`` around its command line (session 37's audit): a read-only or
fresh home folder (ONNX Runtime's telemetry files and warning), standard streams closed with
``>&-`` / ``<&-``, a Ctrl-C while the CLI loads, and file names holding newlines or escape codes.

The subprocess tests run ``python -m crm_cli`` with an environment of their own: the test process
imported crm_cli, which set ORT_DISABLE_TELEMETRY in ``os.environ``, so it is removed for a child
that must set it itself."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import write_scene_files
from rich.console import Console
from typer.testing import CliRunner

from crm_cli import runtime
from crm_cli.cli import app, output

runner = CliRunner()
CRM = [sys.executable, "-m", "crm_cli"]


def child_environment(**changes: str) -> dict[str, str]:
    """This process's environment without crm's ONNX Runtime switch (a child must set it itself), with ``changes``."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    env.update(changes)
    return env


def files_under(folder: Path) -> list[str]:
    """Every path under ``folder``, relative to it (hidden ones included)."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def in_shell(redirection: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m crm_cli ARGS`` run by sh with ``redirection`` (``>&-``: stdout closed) applied."""
    return subprocess.run(["sh", "-c", f'exec "$@" {redirection}', "sh", *CRM, *args], capture_output=True,
                          text=True, timeout=120, env=env or child_environment())


# --- ONNX Runtime's telemetry ---------------------------------------------------------------------


def test_configure_onnxruntime_turns_telemetry_off_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    assert runtime.configure_onnxruntime(env) is True and env == {"ORT_DISABLE_TELEMETRY": "1"}
    for chosen in ("0", "1", ""):
        env = {"ORT_DISABLE_TELEMETRY": chosen}
        assert runtime.configure_onnxruntime(env) is False and env == {"ORT_DISABLE_TELEMETRY": chosen}


def test_importing_onnxruntime_after_crm_writes_nothing_in_home_or_the_temp_folder(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    home, temp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    temp.mkdir()
    code = "import os, crm_cli, onnxruntime; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=child_environment(HOME=str(home), TMPDIR=str(temp)))
    assert done.returncode == 0, done.stderr
    assert files_under(home) == [] and files_under(temp) == []
    assert done.stdout.strip() == "1" and done.stderr == ""
    # The user's own choice is kept.
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=child_environment(HOME=str(home), TMPDIR=str(temp), ORT_DISABLE_TELEMETRY="0"))
    assert kept.stdout.strip() == "0"


def test_refine_on_onnx_with_a_read_only_home_prints_no_escape_codes_and_leaves_no_file(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    image, mask = write_scene_files(tmp_path / "in")  # 96x128: refined, so the ONNX encoder loads
    blocker = tmp_path / "a_file"
    blocker.write_bytes(b"")
    temp = tmp_path / "tmp"
    temp.mkdir()
    # A home under a regular file cannot be created, even by root (for whom a chmod'ed folder is writable).
    env = child_environment(HOME=str(blocker / "home"), TMPDIR=str(temp))
    done = subprocess.run([*CRM, "refine", str(image), str(mask), "-o", str(tmp_path / "out.png"), "-d", "cpu",
                           "--backend", "onnx"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "onnxruntime" in done.stderr  # the device line: the ONNX backend ran
    assert "\x1b" not in done.stderr and "telemetry" not in done.stderr, done.stderr
    assert files_under(temp) == []


# --- closed standard streams ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A pair under the minimum side crm refines: passed through without loading a model (fast)."""
    return write_scene_files(tmp_path_factory.mktemp("small"), size=(48, 64))


@pytest.mark.parametrize("redirection, extra, line", [
    (">&-", ["--json"], "error: --json writes to standard output, but standard output is closed"),
    (">&-", ["-o", "-"], "error: -o - writes to standard output, but standard output is closed"),
])
def test_stdout_closed_when_a_command_needs_it_is_one_line_and_exit_1(small_pair: tuple[Path, Path], tmp_path: Path,
                                                                      redirection: str, extra: list[str],
                                                                      line: str) -> None:
    image, mask = small_pair
    output = [] if "-o" in extra else ["-o", str(tmp_path / "out.png")]
    done = in_shell(redirection, "refine", str(image), str(mask), *output, *extra)
    assert done.returncode == 1 and done.stderr.splitlines() == [line], done.stderr
    assert not (tmp_path / "out.png").exists()  # refused before any work


def test_info_json_with_stdout_closed_is_one_line_and_exit_1() -> None:
    done = in_shell(">&-", "info", "--json")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == ["error: --json writes to standard output, but standard output is closed"]


def test_image_from_a_closed_stdin_is_one_line_and_exit_1(small_pair: tuple[Path, Path], tmp_path: Path) -> None:
    done = in_shell("<&-", "refine", "-", str(small_pair[1]), "-o", str(tmp_path / "out.png"))
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == ["error: <stdin>: standard input is closed"]


def test_refine_needs_neither_stdout_nor_stdin(small_pair: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    done = in_shell(">&- <&-", "refine", str(small_pair[0]), str(small_pair[1]), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "Traceback" not in done.stderr


def test_main_holds_closed_standard_descriptors_so_no_file_takes_their_number(tmp_path: Path) -> None:
    # With descriptor 1 closed, the next file opened would be number 1, and whatever a library writes
    # to "stdout" at the C level would land in it.
    code = ("import os, sys\n"
            "from crm_cli.cli import main\n"
            "sys.argv = ['crm', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "os.write(2, str(os.open(os.devnull, os.O_RDONLY)).encode())\n")
    done = subprocess.run(["sh", "-c", 'exec "$@" >&- <&-', "sh", sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=120, env=child_environment())
    assert done.returncode == 0, done.stderr
    assert int(done.stderr) > 2


def test_emit_json_to_a_closed_stdout_exits_1_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=shown, width=200))
    monkeypatch.setattr(sys, "stdout", None)
    with pytest.raises(typer.Exit) as stop:
        output.emit_json({"status": "ok"})
    assert stop.value.exit_code == 1
    assert shown.getvalue() == "error: cannot write the JSON to standard output: it is closed\n"
    output.FailureRecord(True, lambda failure: failure).emit("boom")  # a failure record: no second error


# --- Ctrl-C while the CLI loads -------------------------------------------------------------------

# Runs crm's main() with a Ctrl-C (KeyboardInterrupt) raised when the module sys.argv[1] is imported.
INTERRUPTING_DRIVER = """
import sys
module = sys.argv[1]

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["crm", "--help"]
from crm_cli.cli import main
main()
"""


@pytest.mark.parametrize("module", ["typer", "crm_cli.cli.batch", "crm_cli.cli.train"])
def test_ctrl_c_while_the_commands_load_exits_130_quietly(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", INTERRUPTING_DRIVER, module], capture_output=True, text=True,
                          timeout=120, env=child_environment())
    assert (done.returncode, done.stderr, done.stdout) == (130, "", "")


# --- control characters in names ------------------------------------------------------------------


def test_printable_escapes_control_characters_as_repr_does() -> None:
    assert output.printable("a\nb\r\tc\x1b[31md\x7f\u2028\u202e\udcff") == r"a\nb\r\tc\x1b[31md\x7f\u2028\u202e\udcff"
    for name in ("plain.png", "café 画像 [x].png", "a\\nb.png"):
        assert output.printable(name) == name
    listing = "2 pairs cannot be read:\n  a\nb.png: bad\n  c.png: bad"
    assert output.printable(listing, continued=True) == "2 pairs cannot be read:\n  a\\nb.png: bad\n  c.png: bad"
    assert output.printable(listing) == listing.replace("\n", "\\n")


def test_say_warn_failed_and_error_lines_escape_names(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=shown, width=500))
    name = "x\nerror: forged\x1b[31m.png"
    output.say(f"wrote {name}")
    with output.collect_warnings() as kept:
        output.warn(f"{name} is small")
        output.show_library_warnings()
        logging.getLogger("crm_cli.test_shell_s37").warning("%s: logged", name)
    output.report_failure(f"{name}: ", "unreadable")
    output.fail(f"cannot read {name}")
    assert shown.getvalue().splitlines() == [
        r"wrote x\nerror: forged\x1b[31m.png",
        r"warning: x\nerror: forged\x1b[31m.png is small",
        r"warning: x\nerror: forged\x1b[31m.png: logged",
        r"failed: x\nerror: forged\x1b[31m.png: unreadable",
        r"error: cannot read x\nerror: forged\x1b[31m.png",
    ]
    assert kept == [f"{name} is small", f"{name}: logged"]  # a --json record keeps the name as it is


def test_refine_messages_show_a_newline_in_a_name_escaped(tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path, "im\nwarning: forged", "seg", size=(48, 64))  # passed through
    out = tmp_path / "out\nwrote forged.png"
    done = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "--json"])
    assert done.exit_code == 0, done.output
    assert out.is_file()
    lines = done.stderr.splitlines()
    assert len(lines) == 2, lines  # the pass-through warning and the wrote line
    assert lines[0].startswith("warning: ") and "im\\nwarning: forged.jpg" in lines[0]
    assert lines[1].startswith(f"wrote {tmp_path}/out\\nwrote forged.png (")
    # The JSON record: one line, holding the names exactly.
    records = done.stdout.splitlines()
    assert len(records) == 1
    record = json.loads(records[0])
    assert record["image"] == str(image) and record["output"] == str(out)
    assert record["warnings"] and "\nwarning: forged" in record["warnings"][0]


def test_usage_and_read_errors_show_names_escaped(tmp_path: Path) -> None:
    mask = tmp_path / "m.png"
    mask.write_bytes(b"")
    if hasattr(os, "mkfifo"):  # crm's own usage error (a typer.BadParameter) naming the mask
        pipe = tmp_path / "p\nerror: forged"
        os.mkfifo(pipe)
        usage = runner.invoke(app, ["refine", str(mask), str(pipe)])
        assert usage.exit_code == 2
        assert len(usage.stderr.splitlines()) == 2 and "p\\nerror: forged is a pipe" in usage.stderr  # error, hint
    empty = tmp_path / "e\nerror: forged.png"
    empty.write_bytes(b"")
    failed = runner.invoke(app, ["refine", str(empty), str(mask), "-o", str(tmp_path / "o.png")])
    assert failed.exit_code == 1
    assert failed.stderr.splitlines() == [f"error: {tmp_path}/e\\nerror: forged.png: empty file"]


def test_score_csv_to_a_closed_stdout_is_one_line_and_exit_1(tmp_path: Path) -> None:
    _, gt = write_scene_files(tmp_path, "im", "gt", size=(48, 64))
    done = in_shell(">&-", "score", str(gt), str(gt), "--csv", "-")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == ["error: --csv - writes to standard output, but standard output is closed"]


def test_score_table_shows_a_newline_in_a_name_escaped(tmp_path: Path) -> None:
    _, gt = write_scene_files(tmp_path / "gt", "a\nb_im", "a\nb_gt", size=(48, 64))
    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / "a\nb.png").write_bytes(gt.read_bytes())
    result = runner.invoke(app, ["score", str(predictions), str(tmp_path / "gt")])
    assert result.exit_code == 0, result.output
    assert "a\\nb" in result.stderr and not any(line.strip().startswith("b ") for line in result.stderr.splitlines())


def test_score_csv_lines_end_in_a_bare_newline(tmp_path: Path) -> None:
    _, gt = write_scene_files(tmp_path, "im", "gt", size=(48, 64))
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["score", str(gt), str(gt), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert b"\r" not in data and data.endswith(b"\n") and data.count(b"\n") == 2  # header and one row


def test_printable_keeps_spaces_and_joiners_of_real_names() -> None:
    # U+202F: macOS screenshot names; U+3000: the Japanese full-width space; U+200D: inside emoji.
    for name in ("Screenshot 2024-05-01 at 10.15.32\u202fAM.png", "写真\u3000001.png", "a\u00a0b.png",
                 "\U0001f468\u200d\U0001f469.png"):
        assert output.printable(name) == name


def test_batch_lists_a_macos_screenshot_name_as_it_is(tmp_path: Path) -> None:
    stem = "Screenshot 2024-05-01 at 10.15.32\u202fAM"
    write_scene_files(tmp_path / "in", f"{stem}_im", f"{stem}_seg", size=(48, 64))
    result = runner.invoke(app, ["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"  {stem}: " in result.stderr and "\\u202f" not in result.stderr


def test_a_line_break_in_a_training_pairs_name_cannot_start_a_listed_line() -> None:
    from crm_cli.training.data import listed_problems

    listed = listed_problems(["a\n  forged.png: bad", "c\r.png: bad"])
    assert listed == "\n  a\\n  forged.png: bad\n  c\\r.png: bad"
    assert output.printable(f"2 pairs cannot be read:{listed}", continued=True).count("\n") == 2


SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "crm_mobilenet_v2_blend.safetensors"


@pytest.fixture
def broken_onnxruntime(tmp_path: Path) -> dict[str, str]:
    """An environment where onnxruntime is installed but its import fails (a container without libgomp)."""
    package = tmp_path / "site" / "onnxruntime"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("libgomp.so.1: cannot open shared object file")\n')
    return child_environment(PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))


@pytest.mark.skipif(not SHIPPED_WEIGHTS.is_file(), reason="needs the shipped weights and their ONNX encoder")
def test_an_onnxruntime_that_does_not_import_falls_back_to_torch_and_says_why(
        broken_onnxruntime: dict[str, str], tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path / "in", size=(112, 128))
    out = tmp_path / "o.png"
    done = subprocess.run([*CRM, "refine", str(image), str(mask), "-o", str(out), "-d", "cpu"], capture_output=True,
                          text=True, timeout=300, env=broken_onnxruntime)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "Traceback" not in done.stderr
    assert ("warning: onnxruntime is installed, but it does not import (ImportError: libgomp.so.1: cannot open "
            "shared object file): refining with torch (slower on a CPU)") in done.stderr
    assert "device: cpu (onnxruntime)" not in done.stderr  # torch refined it
    insisted = subprocess.run([*CRM, "refine", str(image), str(mask), "-o", str(out), "--backend", "onnx"],
                              capture_output=True, text=True, timeout=300, env=broken_onnxruntime)
    assert insisted.returncode != 0 and "Traceback" not in insisted.stderr
    assert "the onnx backend needs onnxruntime, but it does not import (ImportError" in insisted.stderr
    info = subprocess.run([*CRM, "info", "--json"], capture_output=True, text=True, timeout=300,
                          env=broken_onnxruntime)
    assert json.loads(info.stdout)["default_backend"] == "torch", info.stdout


class ShortWrites(io.RawIOBase):
    """A raw stdout as under PYTHONUNBUFFERED=1 whose every write takes at most 7 bytes and says so
    (a pipe taking what it holds), as os.write does."""

    def __init__(self) -> None:
        self.taken = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        piece = bytes(data[:7])
        self.taken += piece
        return len(piece)


def test_json_goes_out_whole_through_short_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = ShortWrites()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="utf-8", write_through=True))
    payload = {"status": "ok", "items": [{"name": f"é{index}"} for index in range(50)]}
    output.emit_json(payload)
    assert raw.taken.decode("ascii").endswith("\n") and json.loads(raw.taken) == payload


def test_score_csv_keeps_a_name_that_is_no_utf8(tmp_path: Path) -> None:
    if sys.getfilesystemencoding().lower() not in ("utf-8", "utf8"):
        pytest.skip("needs a UTF-8 file system encoding")
    _, gt = write_scene_files(tmp_path / "gt", "x_im", "x_gt", size=(48, 64))
    odd = os.fsdecode(b"x\xff")  # the name as Python reads it from the folder: x + an escaped byte
    gt.rename(tmp_path / "gt" / f"{odd}_gt.png")
    (tmp_path / "gt" / "x_im.jpg").rename(tmp_path / "gt" / f"{odd}_im.jpg")
    predictions = tmp_path / "pred"
    predictions.mkdir()
    (predictions / f"{odd}.png").write_bytes((tmp_path / "gt" / f"{odd}_gt.png").read_bytes())
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["score", str(predictions), str(tmp_path / "gt"), "--csv", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().splitlines()[1].startswith(b"x\xff,1.0,")
