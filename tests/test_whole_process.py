"""benchmarks/whole_process.py: whole `crm refine` processes, timed and measured from outside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

whole_process = load_benchmark("whole_process")
ROOT = Path(__file__).resolve().parents[1]


def test_run_timed_reports_the_childs_own_peak_and_its_json() -> None:
    code = "import json, numpy as np; a = np.ones(300_000_000 // 8); print(json.dumps({'seconds': 0.5}))"
    # This process holds 400 MB more while it starts the child: Linux would fold that into a directly
    # started child's peak (it did: pytest's whole RSS showed up), the launcher keeps it out.
    ballast = np.ones(400_000_000 // 8)
    timed = whole_process.run_timed([sys.executable, "-c", code])
    assert timed.summary == {"seconds": 0.5}
    assert ballast.nbytes == 400e6 and 300e6 <= timed.peak_rss < 450e6  # the ballast would have shown
    assert timed.wall_s > 0


def test_run_timed_names_a_failed_command() -> None:
    with pytest.raises(SystemExit, match=r"failed \(3\): boom"):
        whole_process.run_timed([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])


def test_timed_runs_cache_bytecode_even_where_this_shell_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("CRM_TEST_KEPT", "yes")
    env, was_off = whole_process.timed_environment()
    assert was_off and "PYTHONDONTWRITEBYTECODE" not in env and env["CRM_TEST_KEPT"] == "yes"
    code = ("import json, os, sys; "
            "print(json.dumps({'off': sys.dont_write_bytecode, 'kept': os.environ['CRM_TEST_KEPT']}))")
    assert whole_process.run_timed([sys.executable, "-c", code], env).summary == {"off": False, "kept": "yes"}
    assert whole_process.run_timed([sys.executable, "-c", code]).summary == {"off": True, "kept": "yes"}
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE")
    assert whole_process.timed_environment()[1] is False


def test_sizes_parse() -> None:
    assert whole_process.parse_sizes("3840x2160, 6000X4000,") == [(3840, 2160), (6000, 4000)]


def test_the_script_times_generated_pairs_end_to_end(tmp_path: Path) -> None:
    # The shipped weights, as a user's crm runs them: ONNX Runtime, no torch import in each timed process
    # (the tiny test weights have no exported encoder, and each process imported torch: 26 s against 12).
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "whole_process.py"), "--sizes", "160x128",
                           "--repeat", "1", "--budget", "0.001", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [row["pair"] for row in rows] == ["160x128 blocky", "160x128 precise"]
    for row in rows:
        # No process takes a millisecond: the verdict is "no" (a budget of 1000 s could never read "no").
        assert row["runs"] == 1 and row["within_budget"] is False
        assert 0 < row["refine_call_s"] < row["median_s"]
        assert row["rest_s"] == pytest.approx(row["median_s"] - row["refine_call_s"])
        assert row["peak_rss_gb"] > 0.05 and row["schedule"]
    assert "160x128 blocky" in done.stdout and "refine call" in done.stdout


@pytest.mark.parametrize(("budget", "verdict"), [(3.0, "yes"), (2.99, "no")])
def test_a_row_reads_yes_only_when_its_slowest_run_keeps_within_the_budget(budget: float, verdict: str) -> None:
    """The end-to-end run above can only show "no" (no process takes a millisecond); the "yes" side by
    hand: walls 1, 3 and 2 s, refine calls 0.5, 1 and 0.7 s."""
    runs = [whole_process.Timed(wall, peak, {"seconds": call, "schedule": "1.5"})
            for wall, peak, call in ((1.0, 300_000_000, 0.5), (3.0, 500_000_000, 1.0), (2.0, 400_000_000, 0.7))]
    row = whole_process.timing_row("4K blocky", runs, budget)
    assert row == {"pair": "4K blocky", "runs": 3, "median_s": 2.0, "min_s": 1.0, "max_s": 3.0, "refine_call_s": 0.7,
                   "rest_s": pytest.approx(1.3), "peak_rss_gb": 0.5, "schedule": "1.5",
                   "within_budget": verdict == "yes"}
    assert whole_process.table_line(row).split() == ["4K", "blocky", "2.00s", "1.00-3.00", "0.70s", "1.30s", "0.50GB",
                                                     verdict, "1.5"]
