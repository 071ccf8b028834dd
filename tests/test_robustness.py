"""Real-use robustness (issue 13): concurrent runs, bad weights, absurd sizes, output names, batch
layout, early checks, tiny images, a closed stdout pipe, and the help text. Every case runs the
real CLI (CliRunner or a subprocess) and checks the message and the exit code."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_scene_files
from PIL import Image
from typer.testing import CliRunner

from crm_cli import runtime
from crm_cli.cli import app
from crm_cli.config import MIN_REFINE_SIDE
from crm_cli.image_limits import MAX_IMAGE_PIXELS
from crm_cli.imageio import probe_image, read_mask
from crm_cli.locks import EMPTY_LOCK_GRACE_S, OutputLock, lock_path
from crm_cli.writing import ImageWriteError, write_image

runner = CliRunner()
BOX_CHARACTERS = set("╭╮╰╯│─")
ROOT = Path(__file__).resolve().parents[1]


def errors_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_one_line_error(result, code: int, *needles: str) -> str:  # noqa: ANN001
    """The command failed with ``code``, one ``error:`` line containing every needle, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr
    errors = errors_of(result.stderr)
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (1-bit grey) with no pixel data: enough for any
    size check, which must happen before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return write_scene_files(tmp_path, "img", "mask")


# ---------------------------------------------------------------------------------------------
# 1. Concurrency: OpenMP wait policy and per-output locks


def test_openmp_spin_is_bounded_unless_the_user_chose() -> None:
    env: dict[str, str] = {}
    assert runtime.configure_openmp(env) == str(runtime.GOMP_SPINCOUNT_DEFAULT)
    assert env == {"GOMP_SPINCOUNT": str(runtime.GOMP_SPINCOUNT_DEFAULT)}
    for user in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "300000"}):
        env = dict(user)
        assert runtime.configure_openmp(env) is None and env == user
    # In a real process: set by `import crm_cli` before torch loads, never over a user's value.
    code = "import os, crm_cli, torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    clean = {k: v for k, v in os.environ.items() if k not in runtime.OPENMP_USER_VARIABLES}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, check=True)
    assert out.stdout.strip() == str(runtime.GOMP_SPINCOUNT_DEFAULT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**clean, "GOMP_SPINCOUNT": "77"})
    assert out.stdout.strip() == "77"


def test_output_lock_is_exclusive_and_takes_over_dead_owners(tmp_path: Path) -> None:
    target = tmp_path / "out" / "a.png"
    first, second = OutputLock(target), OutputLock(target)
    assert first.acquire()
    assert lock_path(target) == tmp_path / "out" / ".a.png.lock"
    assert lock_path(target).read_text().split()[0] == str(os.getpid())
    assert not second.acquire()  # held by a live process (this one)
    first.release()
    assert not lock_path(target).exists()
    assert second.acquire()
    second.release()

    # A lock left by a process that no longer exists (kill -9) is stale and taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(target).write_text(f"{dead.pid} {os.uname().nodename}\n")
    taker = OutputLock(target)
    assert taker.is_stale() and taker.acquire()
    assert lock_path(target).read_text().split()[0] == str(os.getpid())
    taker.release()

    # An empty lock (its writer died before writing the pid) is live for a grace period only.
    lock_path(target).write_text("")
    assert not OutputLock(target).acquire()
    old = lock_path(target).stat().st_mtime - EMPTY_LOCK_GRACE_S - 5
    os.utime(lock_path(target), (old, old))
    assert OutputLock(target).acquire()


def test_batch_leaves_a_pair_in_progress_to_its_lock_holder(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "big", tmp_path / "out"
    for k in range(3):
        write_scene_files(data, f"p{k}_im", f"p{k}_seg", seed=k)
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"]
    held = OutputLock(out / "p1_mask.png")
    assert held.acquire()  # as another crm batch working on p1 would
    try:
        first = runner.invoke(app, args)
    finally:
        held.release()
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert (summary["done"], summary["in_progress"], summary["skipped"], summary["failed"]) == (2, 1, 0, 0)
    assert not (out / "p1_mask.png").exists() and (out / "p0_mask.png").exists()
    assert "1 left to another crm run" in first.stderr
    assert not list(out.glob(".*.lock"))  # our own locks are gone
    second = json.loads(runner.invoke(app, args).stdout)
    assert (second["done"], second["skipped"], second["in_progress"]) == (1, 2, 0)


def test_two_batch_processes_refine_each_pair_once(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "big", tmp_path / "out"
    pairs = 6
    for k in range(pairs):
        write_scene_files(data, f"q{k}_im", f"q{k}_seg", seed=k)
    command = [sys.executable, "-m", "crm_cli", "batch", str(data), "-o", str(out), "-w", str(tiny_weights),
               "-d", "cpu", "--threads", "1", "--json", "-q"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    summaries = [json.loads(stdout) for stdout, _ in outputs]
    # Whatever the interleaving, every pair was refined by exactly one of the two runs.
    assert sum(s["done"] for s in summaries) == pairs
    assert all(s["failed"] == 0 for s in summaries)
    for summary in summaries:
        assert summary["done"] + summary["skipped"] + summary["in_progress"] == pairs
    assert len(list(out.glob("*_mask.png"))) == pairs and not list(out.glob(".*"))


# ---------------------------------------------------------------------------------------------
# 2. Weights that are not crm checkpoints


def bad_weights(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Files given to --weights, each with the words its error must contain."""
    import torch
    from safetensors.torch import save_file

    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    wrong_keys = tmp_path / "wrong_keys.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, wrong_keys)
    pickled = tmp_path / "objects.pt"
    torch.save({"config": {}, "model": {}, "fn": Path("x")}, pickled)
    other_tag = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other_tag), metadata={"format": "other-tool/3"})
    untagged = tmp_path / "untagged.safetensors"
    save_file({"w": torch.zeros(2)}, str(untagged))
    return {
        "text": (text, "not a crm checkpoint"),
        "wrong keys": (wrong_keys, "missing key 'config'"),
        "pickled objects": (pickled, "not a crm checkpoint"),
        "wrong tag": (other_tag, "wrong format tag 'other-tool/3'"),
        "untagged": (untagged, "not a crm checkpoint"),
    }


def test_bad_weights_are_one_line_errors_everywhere(pair: tuple[Path, Path], tmp_path: Path) -> None:
    for case, (path, reason) in bad_weights(tmp_path).items():
        refined = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "o.png"),
                                      "-w", str(path), "-d", "cpu"])
        line = assert_one_line_error(refined, 1, str(path), reason)
        assert "weights_only" not in refined.stderr, case
        assert not (tmp_path / "o.png").exists()
        info = runner.invoke(app, ["info", "-w", str(path)])
        assert_one_line_error(info, 1, str(path), reason)
        info_json = runner.invoke(app, ["info", "-w", str(path), "--json"])
        assert info_json.exit_code == 1
        assert json.loads(info_json.stdout)["weights"]["error"] == line.removeprefix("error: ")


def test_refiner_spec_checks_the_file_and_builds_the_same_refiner(tiny_weights: Path, tmp_path: Path) -> None:
    import torch

    from crm_cli.checkpoint import WeightsError
    from crm_cli.refiner_spec import RefinerSpec

    for path, reason in bad_weights(tmp_path).values():
        with pytest.raises(WeightsError, match=reason):
            RefinerSpec(str(path), "cpu").check()
    with pytest.raises(WeightsError, match="weights not found"):
        RefinerSpec(str(tmp_path / "missing.safetensors"), "cpu").check()
    spec = RefinerSpec(str(tiny_weights), "cpu", tile_size=256, threads=1)
    spec.check()
    threads = torch.get_num_threads()
    try:
        refiner = spec.build()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert refiner.device_type == "cpu" and refiner.runner.tile_size == 256
    assert refiner.weights_info.path == str(tiny_weights)


# ---------------------------------------------------------------------------------------------
# 3 and 6. Absurd sizes, memory, Pillow's decompression-bomb warning


def test_collector_is_paused_then_restored_and_what_was_loaded_is_frozen() -> None:
    import gc

    frozen_before = gc.get_freeze_count()
    try:
        assert gc.isenabled()
        with runtime.collector_paused():
            assert not gc.isenabled()
            kept = [[] for _ in range(1000)]  # tracked containers, alive when the block ends
        assert gc.isenabled() and gc.get_freeze_count() >= frozen_before + len(kept)
        gc.unfreeze()
        gc.disable()  # a caller that had the collector off keeps it off, even after an error
        with pytest.raises(RuntimeError), runtime.collector_paused():
            raise RuntimeError("import failed")
        assert not gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.enable()


def test_first_build_in_a_process_imports_torch_with_the_collector_paused(tiny_weights: Path) -> None:
    # In this test process torch is already loaded; a fresh one shows what the CLI's first build does.
    code = ("import gc, sys; from crm_cli.refiner_spec import RefinerSpec; assert 'torch' not in sys.modules; "
            "before = gc.get_freeze_count(); RefinerSpec(sys.argv[1], 'cpu', threads=1).build(); "
            "print(before, gc.get_freeze_count(), gc.isenabled())")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_weights)], capture_output=True, text=True, check=True)
    before, after, enabled = out.stdout.split()
    # torch alone brings hundreds of thousands of tracked objects; all of them are frozen.
    assert int(before) == 0 and int(after) > 100_000 and enabled == "True"


def test_a_build_stops_numpy_advising_huge_pages_unless_the_user_chose(tiny_weights: Path) -> None:
    assert runtime.configure_numpy_pages({"NUMPY_MADVISE_HUGEPAGE": "1"}) is False
    # A fresh process each time: the switch is process-wide. _set_madvise_hugepage returns the
    # setting it replaces, so setting it again reads what the build left.
    assert runtime.numpy_page_advice_switch() is not None  # or the test below proves nothing
    with pytest.MonkeyPatch.context() as patch:  # a NumPy without the switch: nothing to change
        patch.setattr(runtime, "numpy_page_advice_switch", lambda: None)
        assert runtime.configure_numpy_pages({}) is False
    code = ("import sys; from crm_cli.refiner_spec import RefinerSpec; "
            "from crm_cli.runtime import numpy_page_advice_switch as switch; "
            "switch()(True); RefinerSpec(sys.argv[1], 'cpu', threads=1).build(); print(switch()(True))")
    clean = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    for env, advised in ((clean, "False"), ({**clean, "NUMPY_MADVISE_HUGEPAGE": "1"}, "True")):
        out = subprocess.run([sys.executable, "-c", code, str(tiny_weights)], capture_output=True, text=True,
                             env=env, check=True)
        assert out.stdout.strip() == advised


def test_an_api_refine_runs_without_huge_page_advice_and_puts_it_back(tiny_weights: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python-API user's process keeps its own setting; inside a refinement NumPy does not advise
    huge pages, whose compaction stalls made the first 4K refinements 1.5-2.5x slower."""
    from crm_cli.engine import Refiner

    switch = runtime.numpy_page_advice_switch()
    assert switch is not None
    refiner = Refiner.from_checkpoint(tiny_weights, device="cpu")
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    seen = []
    inner = Refiner._refine_detailed

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        advised = switch(False)  # the setting inside the refinement, put back at once
        switch(advised)
        seen.append(advised)
        return inner(self, *args, **kwargs)

    monkeypatch.setattr(Refiner, "_refine_detailed", spy)
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    original = switch(True)
    try:
        refiner.refine(image, mask)
        assert seen == [False] and switch(True) is True  # off inside, back on after
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")  # the user chose: left as it is
        refiner.refine(image, mask)
        assert seen == [False, True] and switch(True) is True
    finally:
        switch(original)


def test_the_page_advice_stays_off_while_any_thread_refines_and_comes_back_after_the_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two refinements overlapping in two threads: A starts, B starts, A ends while B runs. Each
    putting back what it found left B running with the advice on, and the process with it off."""
    import threading

    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    switch = runtime.numpy_page_advice_switch()
    assert switch is not None

    def advised() -> bool:
        value = switch(False)
        switch(value)
        return value

    a_inside, b_inside, a_left, b_may_leave = (threading.Event() for _ in range(4))
    seen: dict[str, bool] = {}

    def a() -> None:
        with runtime.numpy_pages_unadvised():
            a_inside.set()
            b_inside.wait(10)
        a_left.set()

    def b() -> None:
        with runtime.numpy_pages_unadvised():
            b_inside.set()
            a_left.wait(10)
            seen["b after a left"] = advised()
            b_may_leave.wait(10)

    original = switch(True)
    try:
        first = threading.Thread(target=a)
        first.start()
        a_inside.wait(10)  # A is inside before B starts
        second = threading.Thread(target=b)
        second.start()
        a_left.wait(10)
        b_may_leave.set()
        first.join(10)
        second.join(10)
        assert seen == {"b after a left": False}
        assert advised() is True
    finally:
        switch(original)


def test_time_refuses_absurd_sizes_as_usage_errors() -> None:
    for size, megapixels in (("100000x100000", "10000 MP"), ("20000x15000", "300 MP")):
        result = runner.invoke(app, ["time", "--size", size])
        assert_one_line_error(result, 2, size, megapixels, f"limit of {MAX_IMAGE_PIXELS // 1_000_000} MP")
        assert "Try 'crm time --help'" in result.stderr


def test_memory_estimate_refuses_before_allocating(pair: tuple[Path, Path], tiny_weights: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    balanced = runtime.estimate_refine_bytes(96, 128)
    quality = runtime.estimate_refine_bytes(96, 128, full_decode=True)
    assert balanced < quality
    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: (balanced + quality) // 2)
    base = ["-w", str(tiny_weights), "-d", "cpu"]
    result = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "o.png"), *base,
                                 "--preset", "quality"])
    assert_one_line_error(result, 1, str(pair[0]), "128x96", "of memory", "try --preset balanced")
    assert "device:" not in result.stderr and not (tmp_path / "o.png").exists()
    timed = runner.invoke(app, ["time", "--size", "128x96", "--preset", "quality", *base])
    assert_one_line_error(timed, 2, "the --size scene is 128x96", "try --preset balanced")

    monkeypatch.setattr(runtime, "available_memory_bytes", lambda: balanced // 2)
    result = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "o.png"), *base])
    error = assert_one_line_error(result, 1, "of memory", "downscale or crop")
    assert "'fast' preset" not in error  # the estimate's own advice, not a second generic one
    data = tmp_path / "big"
    write_scene_files(data, "a_im", "a_seg")
    batch = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "bo"), *base, "--json"])
    assert batch.exit_code == 1 and "device:" not in batch.stderr
    item = json.loads(batch.stdout)["items"][0]
    assert item["status"] == "failed" and "of memory" in item["error"]


def test_image_size_limit_replaces_pillows_bomb_warning(pair: tuple[Path, Path], tmp_path: Path) -> None:
    import warnings

    # 100 MP: above Pillow's warning threshold (89 MP), below crm's limit: no warning at all.
    large = tmp_path / "large.png"
    png_header_only(large, 10000, 10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert probe_image(large).shape == (10000, 10000)
    # 160 MP (over crm's limit) and 200 MP (over Pillow's hard limit): one crm line each.
    for width, height, needle in ((16000, 10000, "16000x10000 (160 MP)"), (20000, 10000, "200 MP")):
        huge = tmp_path / f"huge_{width}.png"
        png_header_only(huge, width, height)
        result = runner.invoke(app, ["refine", str(huge), str(pair[1]), "-o", str(tmp_path / "o.png")])
        line = assert_one_line_error(result, 1, str(huge), needle, "larger than crm's limit")
        assert "ecompression" not in result.stderr and "DOS" not in line
        assert "device:" not in result.stderr


# ---------------------------------------------------------------------------------------------
# 4. Output names pick the format


def test_output_extension_picks_a_lossless_format(pair: tuple[Path, Path], tiny_weights: Path,
                                                  tmp_path: Path) -> None:
    base = [str(pair[0]), str(pair[1]), "-w", str(tiny_weights), "-d", "cpu", "-q"]
    for name in ("o.png", "o.tif", "o.tiff", "o.webp"):
        result = runner.invoke(app, ["refine", *base, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    png = read_mask(tmp_path / "o.png").values
    magic = {"o.tif": (b"II*\x00", b"MM\x00*"), "o.tiff": (b"II*\x00", b"MM\x00*"), "o.webp": (b"RIFF",)}
    for name, starts in magic.items():
        data = (tmp_path / name).read_bytes()
        assert data[:4] in starts, name
        np.testing.assert_array_equal(read_mask(tmp_path / name).values, png)  # lossless
    assert (tmp_path / "o.webp").read_bytes()[8:12] == b"WEBP"
    sixteen = runner.invoke(app, ["refine", *base, "-o", str(tmp_path / "s.tif"), "-k", "soft16"])
    assert sixteen.exit_code == 0 and read_mask(tmp_path / "s.tif").values.dtype == np.uint16


@pytest.mark.parametrize("name, words", [
    ("out.jpg", ("JPEG is lossy", ".png, .tif, .tiff, .webp")),
    ("out.JPEG", ("JPEG is lossy",)),
    ("out.bmpx", ("unknown extension '.bmpx'", ".png, .tif, .tiff, .webp")),
    ("out", ("no extension",)),
])
def test_lossy_or_unknown_output_names_are_usage_errors(pair: tuple[Path, Path], tmp_path: Path,
                                                        name: str, words: tuple[str, ...]) -> None:
    target = tmp_path / name
    result = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(target)])
    assert_one_line_error(result, 2, str(target), *words)
    assert "device:" not in result.stderr and not target.exists()


def test_soft16_to_webp_and_palette_to_webp_are_refused(pair: tuple[Path, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["refine", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "o.webp"),
                                 "-k", "soft16"])
    assert_one_line_error(result, 2, "WebP holds 8 bits", ".png or .tif")
    with pytest.raises(ValueError, match=r"o\.webp: WebP cannot store a palette"):
        write_image(tmp_path / "o.webp", np.zeros((4, 4), np.uint8), [0, 0, 0, 255, 0, 0])
    assert not (tmp_path / "o.webp").exists()


# ---------------------------------------------------------------------------------------------
# 5. A batch whose output folder lies inside its input tree


@pytest.mark.parametrize("layout", ["folders", "big"])
def test_batch_output_inside_the_input_tree_reruns_cleanly(tiny_weights: Path, tmp_path: Path,
                                                           layout: str) -> None:
    data = tmp_path / "set"
    if layout == "folders":
        for k in range(2):
            image, mask = write_scene_files(tmp_path / "raw", f"x{k}", f"x{k}m", seed=k)
            (data / "images").mkdir(parents=True, exist_ok=True)
            (data / "masks").mkdir(parents=True, exist_ok=True)
            image.rename(data / "images" / f"x{k}.jpg")
            mask.rename(data / "masks" / f"x{k}.png")
        out = data / "images" / "out"
    else:
        for k in range(2):
            write_scene_files(data, f"x{k}_im", f"x{k}_seg", seed=k)
        out = data / "refined"
    args = ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert (json.loads(first.stdout)["done"], json.loads(first.stdout)["failed"]) == (2, 0)
    for _ in range(2):
        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        summary = json.loads(again.stdout)
        assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 2, 0)


# ---------------------------------------------------------------------------------------------
# 7. Early checks: before the model loads, naming the user's paths


def test_bad_inputs_and_outputs_fail_before_the_model_loads(pair: tuple[Path, Path], tmp_path: Path) -> None:
    image, mask = pair
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    other = tmp_path / "other.png"
    cv2.imwrite(str(other), np.zeros((50, 50), np.uint8))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    missing_weights = tmp_path / "no_such.safetensors"  # would fail only when the model loads
    cases = [
        ([str(image), str(tmp_path / "missing.png"), "-o", str(tmp_path / "o.png")], "missing.png: no such file"),
        ([str(corrupt), str(mask), "-o", str(tmp_path / "o.png")], "corrupt.png"),
        ([str(image), str(other), "-o", str(tmp_path / "o.png")], "other.png is 50x50"),
        ([str(image), str(mask), "-o", str(blocker / "o.png")],
         f"cannot write {blocker / 'o.png'}: {blocker} is a file"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, ["refine", *args, "-w", str(missing_weights), "-d", "cpu"])
        line = assert_one_line_error(result, 1, needle)
        assert "weights not found" not in result.stderr and "device:" not in result.stderr
        assert ".tmp" not in line
    folder = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path), "-w", str(missing_weights)])
    assert_one_line_error(folder, 2, "is a directory")
    timed = runner.invoke(app, ["time", str(image), str(tmp_path / "missing.png"), "-w", str(missing_weights)])
    assert_one_line_error(timed, 1, "missing.png: no such file")
    data = tmp_path / "big"
    write_scene_files(data, "a_im", "a_seg")
    batch = runner.invoke(app, ["batch", str(data), "-o", str(blocker / "out"), "-w", str(missing_weights)])
    assert_one_line_error(batch, 1, str(blocker))


def test_a_failed_write_names_the_output_not_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    def full_disk(src: str | Path, dst: str | Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src))

    monkeypatch.setattr(os, "replace", full_disk)
    target = tmp_path / "o.png"
    with pytest.raises(ImageWriteError) as caught:
        write_image(target, np.zeros((4, 4), np.uint8))
    assert str(caught.value) == f"cannot write {target}: no space left on device"
    assert not list(tmp_path.iterdir())  # the temp file is gone too


# ---------------------------------------------------------------------------------------------
# 8. Tiny images


def test_tiny_image_passes_the_mask_through_with_a_warning(tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path, "tiny", "tiny_mask", size=(48, 64))
    out = tmp_path / "out.png"
    # No -w: a tiny image must not need (or load) the model at all.
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.stderr and "device:" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {image} is 64x48, under the {MIN_REFINE_SIDE}-px minimum side crm refines; "
                        "the mask is written unchanged"]
    record = json.loads(result.stdout)
    assert record["status"] == "ok" and record["passthrough"] is True and record["device"] is None
    np.testing.assert_array_equal(read_mask(out).values, read_mask(mask).values)


def test_images_at_the_minimum_side_are_refined(tiny_weights: Path, tmp_path: Path) -> None:
    image, mask = write_scene_files(tmp_path, "small", "small_mask", size=(MIN_REFINE_SIDE, 128))
    result = runner.invoke(app, ["refine", str(image), str(mask), "-o", str(tmp_path / "o.png"),
                                 "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["passthrough"] is False and "device: cpu" in result.stderr


def test_batch_passes_tiny_pairs_through(tiny_weights: Path, tmp_path: Path) -> None:
    data, out = tmp_path / "big", tmp_path / "out"
    write_scene_files(data, "t_im", "t_seg", size=(40, 60))
    write_scene_files(data, "n_im", "n_seg", size=(96, 128))
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), "-w", str(tiny_weights), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert items["t"]["passthrough"] is True and items["n"]["passthrough"] is False
    np.testing.assert_array_equal(read_mask(out / "t_mask.png").values, read_mask(data / "t_seg.png").values)
    assert "60x40, under the" in result.stderr


# ---------------------------------------------------------------------------------------------
# 9. A closed stdout pipe; help and usage errors


@pytest.mark.parametrize("extra", [["-o", "-"], ["-o", "OUT", "--json"]])
def test_closed_stdout_pipe_exits_nonzero_without_traceback(tmp_path: Path, extra: list[str]) -> None:
    image, mask = write_scene_files(tmp_path, "tiny", "tiny_mask", size=(48, 64))
    extra = [str(tmp_path / "o.png") if arg == "OUT" else arg for arg in extra]
    process = subprocess.Popen([sys.executable, "-m", "crm_cli", "refine", str(image), str(mask), *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `| true` does: nobody will read what crm writes
    stderr = process.stderr.read().decode()
    process.wait(timeout=120)
    assert process.returncode == 1
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    # With --json the record comes after the work: the same one error line (session 61; click said nothing).
    assert errors_of(stderr) == ["error: standard output was closed before the output was written"]


def test_help_fits_80_columns_without_type_noise() -> None:
    for command in ([], ["refine"], ["batch"], ["time"], ["info"]):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
        assert result.exit_code == 0
        text = result.stdout
        assert "<bool>" not in text and not BOX_CHARACTERS & set(text), command
        assert max(len(line) for line in text.splitlines()) <= 80, command
        assert "[/" not in text and "[bold" not in text
    refine_help = runner.invoke(app, ["refine", "--help"], env={"COLUMNS": "80"}).stdout
    # Choice lists stay whole, on the option's own line.
    assert "-k, --output-kind <soft|soft16|binary|cutout|overlay>" in refine_help
    assert "IMAGE" in refine_help.splitlines()[0] and "MASK" in refine_help.splitlines()[0]


@pytest.mark.parametrize("args, message", [
    (["refine", "a.jpg", "b.png", "--bogus"], "error: No such option: --bogus"),
    (["refine"], "error: Missing argument 'IMAGE'."),
    (["bogus"], "error: No such command 'bogus'."),
    (["refine", "a.jpg", "b.png", "--preset", "nope"], "error: Invalid value for '--preset'"),
])
def test_usage_errors_are_one_line_and_a_hint(args: list[str], message: str) -> None:
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(message)
    assert lines[1] == f"Try '{'crm refine' if args[0] == 'refine' else 'crm'} --help' for the options."
    assert not BOX_CHARACTERS & set(result.stderr) and "Traceback" not in result.stderr


def test_readme_points_only_at_files_users_have() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme
    assert "download.pytorch.org/whl/cpu" in readme
    ignored = subprocess.run(["git", "check-ignore", "-q", "scene_refined.png"], cwd=ROOT)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.returncode == 0  # the README's first command writes it at the repository root
    with Image.open(ROOT / "examples" / "scene_seg.png") as mask:
        assert min(mask.size) >= MIN_REFINE_SIDE  # the README example is refined, not passed through
