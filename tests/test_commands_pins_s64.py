"""Pins for mutants of crm compare / info / time, Ray, containers, runtime, photo memo, stops and group
(session 64 mutation review). Each test names the mutant it pins."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from crm_cli import containers
from crm_cli.cli import app
from crm_cli.compare import _resize_mask, compare_strip, default_crop_size, difference_windows
from crm_cli.writing import write_png

runner = CliRunner()


@pytest.fixture
def square_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A 64x64 grey photo and a mask holding a 20x20 square."""
    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    write_png(photo, np.full((64, 64, 3), 90, np.uint8))
    square = np.zeros((64, 64), np.uint8)
    square[20:40, 20:40] = 255
    write_png(mask, square)
    return photo, mask

BACKGROUND = [24, 24, 24]


def _tall() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 3000x20 (height x width) black photo whose refined mask adds a 10x10 block."""
    coarse = np.zeros((3000, 20), np.uint8)
    refined = coarse.copy()
    refined[1000:1010, 5:15] = 255
    return np.zeros((3000, 20, 3), np.uint8), coarse, refined


def test_default_crop_size_is_an_eighth_of_the_short_side_within_16_and_256() -> None:
    """Pins C02 (floor 16 -> 8) and C03 (cap 256 -> 512)."""
    assert default_crop_size(96, 128) == 16  # 96 // 8 = 12, raised to 16
    assert default_crop_size(4000, 6000) == 256  # 4000 // 8 = 500, capped at 256
    assert default_crop_size(10, 300) == 10  # never larger than the image
    assert default_crop_size(800, 1000) == 100


def test_a_difference_in_the_last_row_and_column_is_found() -> None:
    """Pins C04: the last window position (length - size) is added when the stride skips it."""
    coarse = np.zeros((41, 41), bool)
    refined = coarse.copy()
    refined[40, 40] = True  # only the window starting at 25 (41 - 16) holds it; stride 2 stops at 24
    assert difference_windows(coarse, refined, 1, 16) == [(25, 25, 41, 41)]


def test_a_window_centred_against_the_edge_of_another_is_kept_centred() -> None:
    """Pins C05: windows that only touch (y1 == y0) do not overlap, so the centred one is taken."""
    coarse = np.zeros((24, 8), bool)
    refined = coarse.copy()
    refined[0:8, :] = True  # 64 pixels: window (0, 0, 8, 8) first
    refined[11, 0:5] = True  # then the window at row 11 holds rows 11 and 18 (6 pixels) ...
    refined[18, 0] = True  # ... and centred on them (row 12) it starts at row 8, touching the first
    assert difference_windows(coarse, refined, 2, 8) == [(0, 0, 8, 8), (8, 0, 16, 8)]


def test_a_window_right_below_a_chosen_one_can_still_be_chosen() -> None:
    """Pins C11: only windows that overlap a chosen one are blocked, not those that touch it."""
    coarse = np.zeros((16, 8), bool)
    refined = coarse.copy()
    refined[0:8, :] = True
    refined[8:16, 0:4] = True
    assert difference_windows(coarse, refined, 3, 8) == [(0, 0, 8, 8), (8, 0, 16, 8)]


def test_a_tall_strip_centres_its_narrow_panels_over_crop_cells_256_wide() -> None:
    """Pins C14 (rows left-aligned instead of centred) and C21 (MIN_CELL 256 -> 128)."""
    photo, coarse, refined = _tall()
    strip = compare_strip(photo, coarse, refined, crops=1)
    # Panels 3 px wide (20 * 512 / 3000), cells 256 px: 2 * 256 + 4 wide, 512 + 4 + 256 tall.
    assert strip.shape == (772, 516, 3)
    # The two 3-px panels (10 px with the gap) sit in the middle: x = (516 - 10) // 2 = 253.
    assert (strip[:512, :253] == BACKGROUND).all()
    np.testing.assert_array_equal(strip[300, 253:256], 0)  # the black photo, dimmed


def test_a_tall_strip_without_crops_is_as_wide_as_its_panels() -> None:
    """Pins C22: the crop cells' width counts only when there are crops."""
    photo, coarse, refined = _tall()
    assert compare_strip(photo, coarse, refined, crops=0).shape == (512, 10, 3)


def test_a_line_scan_panel_height_is_rounded_not_truncated() -> None:
    """Pins C18: 16 * 2048 / 2100 = 15.6 rounds to 16 (int() would give 15)."""
    wide = np.zeros((16, 2100, 3), np.uint8)
    empty = np.zeros((16, 2100), np.uint8)
    assert compare_strip(wide, empty, empty, crops=0).shape == (16, 2 * 2048 + 4, 3)


def test_the_top_panels_dim_the_photo() -> None:
    """Pins C19: the full views show the photo at OVERLAY_DIM (0.6) brightness: 200 -> 120."""
    photo = np.full((64, 64, 3), 200, np.uint8)
    empty = np.zeros((64, 64), np.uint8)
    strip = compare_strip(photo, empty, empty, crops=0)
    assert strip.shape == (512, 1028, 3)
    np.testing.assert_array_equal(strip[256, 256], [120, 120, 120])
    np.testing.assert_array_equal(strip[400, 516 + 256], [120, 120, 120])


def test_a_three_channel_mask_is_refused_naming_it() -> None:
    """Pins C15: a mask must be 2-D even when its first two sides match the photo."""
    photo = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"coarse mask shape \(64, 64, 3\) does not match image size 64x64"):
        compare_strip(photo, np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))


def test_a_crop_size_larger_than_the_photo_is_told_as_the_photo_size(caplog: pytest.LogCaptureFixture) -> None:
    """Pins C16: --crop-size beyond the photo is bounded by it, and the warning names the bound size."""
    photo = np.zeros((64, 64, 3), np.uint8)
    empty = np.zeros((64, 64), np.uint8)
    with caplog.at_level(logging.WARNING, logger="crm_cli.compare"):
        compare_strip(photo, empty, empty, crops=1, crop_size=500)
    assert [record.getMessage() for record in caplog.records] == [
        "0 of the 1 crops asked for: no 64x64 window holds a pixel of the refined boundary"]


def test_a_shrunk_mask_keeps_only_cells_mostly_on() -> None:
    """Pins C27: a panel-sized mask is on where the area average is over half (> 127), not anywhere."""
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = True  # 1 of the 16 pixels of the top-left cell
    mask[4:8, 4:8] = True  # the whole bottom-right cell
    np.testing.assert_array_equal(_resize_mask(mask, (2, 2)), [[False, False], [False, True]])


def test_compare_crop_size_below_8_is_a_usage_error(square_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """Pins K02: --crop-size has min=8."""
    photo, mask = square_pair
    out = tmp_path / "cmp.png"
    result = runner.invoke(app, ["compare", str(photo), str(mask), str(mask), "-o", str(out), "--crop-size", "4"])
    assert result.exit_code == 2
    assert "--crop-size" in result.stderr and not out.exists()


def test_compare_without_crops_says_nothing_of_what_crops_would_show(square_pair: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    """Pins K06: masks that agree are worth a warning only when crops are drawn."""
    photo, mask = square_pair
    out = tmp_path / "cmp.png"
    result = runner.invoke(app, ["compare", str(photo), str(mask), str(mask), "-o", str(out), "--crops", "0"])
    assert result.exit_code == 0, result.output
    assert "agree at every pixel" not in result.stderr
    assert "warning" not in result.stderr
    result = runner.invoke(app, ["compare", str(photo), str(mask), str(mask), "-o", str(out), "--crops", "1"])
    assert result.exit_code == 0 and "agree at every pixel" in " ".join(result.stderr.split())


def test_info_reports_the_cpu_quota_to_three_decimals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins I01: round(quota, 3)."""
    from crm_cli import containers
    from crm_cli.cli import info

    monkeypatch.setattr(containers, "cpu_quota", lambda root=None: 1.23456)
    assert info._cpu_quota() == {"cpu_quota": 1.235}
    monkeypatch.setattr(containers, "cpu_quota", lambda root=None: None)
    assert info._cpu_quota() == {}


def test_info_only_reports_missing_shipped_weights_it_was_not_told_to_use(monkeypatch: pytest.MonkeyPatch,
                                                                           tmp_path: Path) -> None:
    """Pins I03: the default weights missing (a source checkout) are reported, not an error (exit 0)."""
    from crm_cli import checkpoint
    from crm_cli.cli import info

    monkeypatch.setattr(checkpoint, "default_weights_path", lambda: tmp_path / "crm.safetensors")
    data = info.gather_info(None)
    assert (data["weights"]["exists"], data["weights"]["error"], data["status"]) == (False, None, "ok")
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert "missing (pass --weights PATH or set CRM_WEIGHTS)" in result.stderr


def test_info_names_the_same_problem_once(tmp_path: Path) -> None:
    """Pins I07: --backend onnx with missing weights fails for one reason, printed once."""
    missing = tmp_path / "x.safetensors"
    result = runner.invoke(app, ["info", "--weights", str(missing), "--backend", "onnx"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "weights not found" in errors[0]


def test_info_encoder_without_a_recorded_hash_is_not_called_a_mismatch() -> None:
    """Pins I09: sha256_ok None (nothing recorded) reads "no sha256 recorded"; only False is a mismatch."""
    from crm_cli.cli.info import _encoder_text

    encoder = {"exists": True, "sha256_ok": None, "used": True, "path": "e.onnx"}
    assert _encoder_text(encoder) == "no sha256 recorded\ne.onnx"
    assert _encoder_text({**encoder, "sha256_ok": False}) == "[red]sha256 does NOT match sidecar[/]\ne.onnx"


def test_info_does_not_load_an_encoder_the_weights_do_not_use(tmp_path: Path) -> None:
    """Pins I10: an exported encoder not tied to the weights is not loaded, so cannot fail them."""
    from crm_cli.cli.info import _check_encoder_loads

    garbage = tmp_path / "e.onnx"
    garbage.write_bytes(b"not an onnx model")
    report = {"error": None, "onnx": {"used": False, "exists": True, "path": str(garbage)}}
    _check_encoder_loads(report)
    assert report["error"] is None and "error" not in report["onnx"]
    report = {"error": None, "onnx": {"used": True, "exists": True, "path": str(garbage)}}
    _check_encoder_loads(report)
    assert "cannot load the exported encoder" in report["error"]


def test_info_cpu_name_is_the_model_name_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins I12: "model name", not the "model" number line above it in x86 /proc/cpuinfo."""
    from crm_cli.cli import info

    text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) CPU\n"

    class FakePath:
        def __init__(self, name: str) -> None:
            assert name == "/proc/cpuinfo"

        def read_text(self) -> str:
            return text

    monkeypatch.setattr(info, "Path", FakePath)
    assert info._cpu_name() == "Intel(R) Xeon(R) CPU"


def test_info_without_torch_names_the_cpu_for_weights_onnx_runs(monkeypatch: pytest.MonkeyPatch,
                                                               tiny_weights: Path) -> None:
    """Pins I13: without torch, weights the onnx backend runs get the CPU as their device."""
    from crm_cli.cli import info

    monkeypatch.setattr(info, "torch_import_problem", lambda: "ImportError: no torch here")
    monkeypatch.setattr(info, "_default_backend", lambda *args: "onnx")
    data = info.gather_info(tiny_weights)
    assert (data["default_device"], data["default_backend"], data["status"]) == ("cpu", "onnx", "failed")
    assert [device["id"] for device in data["devices"]] == ["cpu"]


def test_info_table_shows_the_cpu_quota(monkeypatch: pytest.MonkeyPatch, tiny_weights: Path) -> None:
    """Pins I14 (the table's "CPU quota" entry) with I01."""
    from crm_cli import containers

    monkeypatch.setattr(containers, "cpu_quota", lambda root=None: 1.5)
    result = runner.invoke(app, ["info", "--weights", str(tiny_weights)])
    assert result.exit_code == 0, result.output
    assert "CPU quota 1.5" in result.stderr


def test_time_with_an_image_and_no_mask_is_a_usage_error(square_pair: tuple[Path, Path]) -> None:
    """Pins T05: IMAGE without MASK is refused before any work."""
    photo, _ = square_pair
    result = runner.invoke(app, ["time", str(photo)])
    assert result.exit_code == 2
    assert "give IMAGE and MASK, or --size WxH" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_time_warns_that_a_mask_at_exactly_one_half_has_nothing_to_refine(tiny_weights: Path,
                                                                           tmp_path: Path) -> None:
    """Pins T06: foreground is > 0.5, as the engine's pass-through test; a 0.5 plateau is background."""
    from PIL import Image

    photo = tmp_path / "photo.png"
    write_png(photo, np.full((64, 64, 3), 90, np.uint8))
    half = np.zeros((64, 64), np.float32)
    half[16:48, 16:48] = 0.5
    mask = tmp_path / "half.tif"
    Image.fromarray(half).save(mask)  # mode F: 32-bit float
    result = runner.invoke(app, ["time", str(photo), str(mask), "-n", "1", "-w", str(tiny_weights),
                                 "--device", "cpu", "--json", "-q"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert text.startswith(f"warning: {mask}") and "these times measure no refinement" in text


def test_time_quiet_still_shows_its_table_and_json_says_ok(tiny_weights: Path) -> None:
    """Pins T09 (-q without --json keeps the results table) and T08 (the --json record's "status": "ok")."""
    import json

    args = ["time", "--size", "128x96", "-n", "1", "-w", str(tiny_weights), "--device", "cpu", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "crm time 128x96 on cpu" in result.stderr and "total" in result.stderr and "peak RSS" in result.stderr
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["status"], report["width"], report["height"], report["warnings"]) == ("ok", 128, 96, [])
    assert "crm time" not in result.stderr  # --json -q: the record alone


def test_ray_results_keep_a_continued_text_nested_in_a_list() -> None:
    """Pins R06 (lists and tuples are tagged too) and R07 (only a one-key record is a tagged text)."""
    import json

    from crm_cli.errors import ContinuedText
    from crm_cli.raybatch import _CONTINUED_KEY, _continued_text, _tagged

    result = {"warnings": [ContinuedText("line one\nline two")], "pair": ("a", ContinuedText("x\ny"))}
    back = json.loads(json.dumps(_tagged(result)), object_hook=_continued_text)
    assert back == {"warnings": ["line one\nline two"], "pair": ["a", "x\ny"]}
    assert isinstance(back["warnings"][0], ContinuedText) and isinstance(back["pair"][1], ContinuedText)
    other = {_CONTINUED_KEY: "text", "status": "ok"}
    assert _continued_text(other) is other


def test_a_ray_address_ray_cannot_read_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tiny_weights: Path,
                                                        tmp_path: Path) -> None:
    """Pins R09: RayAddressError exits 2 (the --ray value is the user's), through crm batch."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from crm_cli.raybatch import RayAddressError, connect

    def bad_address(**kwargs: object) -> None:
        raise ValueError("address must be host:port")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", bad_address)
    with pytest.raises(RayAddressError) as caught:
        connect("nowhere:1:2")
    assert caught.value.exit_code == 2
    folder = tmp_path / "in"
    folder.mkdir()
    write_png(folder / "p0_im.png", np.full((96, 128, 3), 90, np.uint8))
    square = np.zeros((96, 128), np.uint8)
    square[30:60, 40:90] = 255
    write_png(folder / "p0_seg.png", square)
    result = runner.invoke(app, ["batch", str(folder), "-o", str(tmp_path / "out"), "--ray", "nowhere:1:2",
                                 "-w", str(tiny_weights), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "cannot connect to Ray at 'nowhere:1:2': address must be host:port" in " ".join(result.stderr.split())


def test_ray_actors_are_built_with_the_plans_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins R11: each actor's RefinerSpec carries the plan's CPU threads (min(4, cluster CPUs)), not None."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from crm_cli import raybatch
    from crm_cli.refiner_spec import RefinerSpec

    seen: dict[str, object] = {}

    class Rows:
        def map_batches(self, fn: object, **kwargs: object) -> str:
            seen.update(kwargs, fn=fn)
            return "dataset"

    def from_items(rows: list, override_num_blocks: int) -> Rows:
        seen["rows"], seen["blocks"] = rows, override_num_blocks
        return Rows()

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0})
    monkeypatch.setattr(ray.data, "from_items", from_items)
    jobs = [{"n": 1}, {"n": 2}, {"n": 3}]
    assert raybatch._dataset(jobs, lambda refiner, job: job, RefinerSpec(device="cpu"), None) == "dataset"
    spec, _ = seen["fn_constructor_args"]
    assert spec.threads == 4 and spec.device == "cpu"
    assert (seen["num_cpus"], seen["num_gpus"], seen["batch_size"], seen["blocks"]) == (4, 0, 1, 3)
    assert seen["rows"] == [{"index": k, "job": f'{{"n": {k + 1}}}'} for k in range(3)]


def _cgroup_tree(root: Path, mountinfo: str, proc_cgroup: str, files: dict[str, str]) -> Path:
    """A fake /proc/self and cgroup tree under ``root``."""
    for relative, text in {"proc/self/mountinfo": mountinfo, "proc/self/cgroup": proc_cgroup, **files}.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_a_cgroup_whose_name_only_starts_like_the_mount_root_is_outside_it(tmp_path: Path) -> None:
    """Pins N06: /docker2/x is not under the mount root /docker (a prefix of the name, not a folder)."""
    mountinfo = "32 31 0:29 /docker /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu,cpuacct\n"
    root = _cgroup_tree(tmp_path, mountinfo, "4:cpu,cpuacct:/docker2/x\n", {})
    assert containers.cgroup_folders("cpu", root) == [(1, root / "sys/fs/cgroup/cpu")]
    assert containers._under("/docker/x", "/docker") and not containers._under("/docker2/x", "/docker")


def test_a_cpu_period_of_zero_is_no_quota(tmp_path: Path) -> None:
    """Pins N08: a period of 0 is skipped (no division by it)."""
    mountinfo = "29 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    root = _cgroup_tree(tmp_path, mountinfo, "0::/c1\n", {"sys/fs/cgroup/c1/cpu.max": "100000 0\n"})
    assert containers.cpu_quota(root) is None
    (root / "sys/fs/cgroup/cpu.max").write_text("50000 100000\n")  # the parent's quota still counts
    assert containers.cpu_quota(root) == pytest.approx(0.5)


def test_memory_headroom_with_only_the_kernels_unlimited_is_no_limit(tmp_path: Path) -> None:
    """Pins N11: a v1 limit of 2^63 rounded to a page is "unlimited", not 9 EB of headroom."""
    mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    files = {"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
             "sys/fs/cgroup/memory/memory.usage_in_bytes": "5000000000\n"}
    root = _cgroup_tree(tmp_path, mountinfo, "12:memory:/\n", files)
    assert containers.memory_headroom(root) is None


def test_a_quota_of_exactly_the_cpus_in_view_leaves_the_libraries_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins U05: only a quota below the CPUs this process may run on sets the default thread count."""
    from crm_cli import runtime

    monkeypatch.setattr(runtime, "scheduler_cpus", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(containers, "quota_cpus", lambda: 4)
    assert runtime.quota_limited_threads() is None and runtime.usable_threads(None) is None
    monkeypatch.setattr(containers, "quota_cpus", lambda: 3)
    assert runtime.quota_limited_threads() == 3


def test_memory_estimate_by_hand() -> None:
    """Pins U08 (two tile margins), U09 (the window is at most the image's long side), U18 (margin 1.15)."""
    from crm_cli.runtime import estimate_refine_bytes

    # 1.15 * (400e6 + 37 * 1e6) = 502.55e6
    assert abs(estimate_refine_bytes(1000, 1000) - 502_550_000) <= 1
    # quality: window min(1024, 1000) + 2 * 64 = 1128; 1.15 * (400e6 + 70e6 + 380 * 1128**2) = 1,096,531,808
    assert abs(estimate_refine_bytes(1000, 1000, full_decode=True) - 1_096_531_808) <= 1
    # window 512 + 2 * 32 = 576: 1.15 * (400e6 + 70 * 12e6 + 380 * 576**2) = 1,570,986,112
    assert abs(estimate_refine_bytes(3000, 4000, True, tile_size=512, tile_margin=32) - 1_570_986_112) <= 1


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs Linux /proc/meminfo")
def test_available_memory_is_the_smaller_of_meminfo_and_the_cgroups_headroom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins U10: a cgroup headroom larger than the machine's MemAvailable does not replace it."""
    from crm_cli import runtime

    monkeypatch.setattr(containers, "memory_headroom", lambda root=None: 10**15)  # 1 PB: more than any machine here
    available = runtime.available_memory_bytes()
    assert available is not None and 0 < available < 10**15
    monkeypatch.setattr(containers, "memory_headroom", lambda root=None: 12345)
    assert runtime.available_memory_bytes() == 12345


def test_format_bytes_switches_unit_at_exactly_one() -> None:
    """Pins U11: 1e9 bytes is "1.0 GB" and 1e6 "1.0 MB" (>=, not >)."""
    from crm_cli.runtime import format_bytes

    assert format_bytes(1e9) == "1.0 GB"
    assert format_bytes(1e6) == "1.0 MB"
    assert format_bytes(1.6e9) == "1.6 GB"


def test_the_open_files_limit_is_raised_to_at_most_65536(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins U14: a finite hard limit above OPEN_FILES_WANTED raises the soft limit to 65,536 only."""
    import resource

    from crm_cli.runtime import raise_open_files_limit

    calls: list[tuple[int, tuple[int, int]]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1_048_576))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append((which, limits)))
    assert raise_open_files_limit() == 65_536
    assert calls == [(resource.RLIMIT_NOFILE, (65_536, 1_048_576))]
    calls.clear()
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    assert raise_open_files_limit() == 4096 and calls == [(resource.RLIMIT_NOFILE, (4096, 4096))]


def test_leftover_temp_files_are_removed_quietly_under_quiet(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Pins S07: -q keeps the "removed N leftover temp file(s)" line off stderr."""
    from crm_cli import writing
    from crm_cli.cli.stops import clear_leftover_temp_files

    monkeypatch.setattr(writing, "remove_leftover_temp_files", lambda outputs, age: [Path("out/a.png.x.tmp")])
    clear_leftover_temp_files([Path("out/a.png")], quiet=True)
    assert capsys.readouterr().err == ""
    clear_leftover_temp_files([Path("out/a.png")], quiet=False)
    assert "removed 1 leftover temp file(s) of interrupted writes, e.g. out/a.png.x.tmp" in capsys.readouterr().err
