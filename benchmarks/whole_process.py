"""What a user waits for: wall time and peak memory of whole `crm refine` processes.

Each run is a fresh `python -m crm_cli refine IMAGE MASK -o OUT --json` process, as a shell script
starts it: Python's start, torch's import, the model's load, reading the pair, the refine call,
writing the PNG and the interpreter's exit. The refine call's own seconds come from `--json`, so
the table also shows what the rest costs. A bare `python -c "import torch"` process is timed
alongside for scale (torch's import is most of the rest). The issue's budget (a 4K photo in at
most 5 s on the 2-core CPU) is the default ``--budget``.

    python benchmarks/whole_process.py                           # generated 3840x2160, both masks
    python benchmarks/whole_process.py --pair IMG MASK --repeat 5  # your own files (repeatable)
    python benchmarks/whole_process.py --sizes 3840x2160,6000x4000 --masks precise
    python benchmarks/whole_process.py --pair IMG MASK -- -w weights/crm_efficientnet_lite0.safetensors

Generated photos are `crm_cli.synthetic` scenes: ``blocky`` is a low-resolution network's mask
(the coarse-to-fine stages), ``precise`` the exact mask (the region pass and the final stage, the
path of a SAM or high-resolution network mask). Run it on a quiet machine; the VM this project
develops on drifts by up to 20% between hours, so compare rows of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forward_args import split_forwarded
from sizes import sizes

DEFAULT_SIZES = "3840x2160"
DEFAULT_BUDGET_S = 5.0


@dataclass
class Timed:
    """One finished process: wall seconds, peak RSS in bytes and its JSON summary (if any)."""

    wall_s: float
    peak_rss: int
    summary: dict


# Linux folds the memory high-water mark of the process that forks into the child's ru_maxrss at
# exec, so a child started by a large process (pytest, a notebook) reports at least that process's
# RSS. A tiny launcher of its own (about 10 MB) starts each timed command instead and writes the
# command's wall time, peak and exit code to a file.
LAUNCHER = """
import json, os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as handle:
    json.dump({"wall_s": wall, "maxrss_kib": usage.ru_maxrss, "code": os.waitstatus_to_exitcode(status)}, handle)
"""


# Set in some shells and containers (this project's development machine has it): no module's bytecode is
# cached, so every run compiled crm's 36 modules from source again, 0.19 s of a 4K run's 1.4 s of "rest"
# (session 50). An installed crm has its bytecode; the timed runs keep theirs.
NO_BYTECODE_VARIABLE = "PYTHONDONTWRITEBYTECODE"


def timed_environment() -> tuple[dict[str, str], bool]:
    """The environment of the timed processes: this one's without ``PYTHONDONTWRITEBYTECODE``, and
    whether it was set here."""
    env = dict(os.environ)
    return env, env.pop(NO_BYTECODE_VARIABLE, None) is not None


def run_timed(command: list[str], env: dict[str, str] | None = None) -> Timed:
    """Run ``command`` to its end (in ``env``, default this process's); its wall time and its own peak
    RSS (``wait4`` in a small launcher)."""
    with tempfile.TemporaryDirectory(prefix="crm_timed_") as temp:
        report = Path(temp) / "report.json"
        done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(report), *command], capture_output=True,
                              check=False, env=env)
        if not report.exists():
            raise SystemExit(f"the launcher failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")
        measured = json.loads(report.read_text())
    if measured["code"] != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise SystemExit(f"{' '.join(command)} failed ({measured['code']}): {message}")
    summary = json.loads(done.stdout) if done.stdout.strip() else {}
    return Timed(measured["wall_s"], measured["maxrss_kib"] * 1024, summary)  # ru_maxrss is in KiB on Linux


def timing_row(label: str, runs: list[Timed], budget_s: float) -> dict[str, Any]:
    """One pair's row from its timed runs: medians, the spread, the peak, and whether the slowest run
    kept within ``budget_s``."""
    walls = [run.wall_s for run in runs]
    calls = [float(run.summary.get("seconds", 0.0)) for run in runs]
    return {
        "pair": label, "runs": len(runs), "median_s": statistics.median(walls), "min_s": min(walls),
        "max_s": max(walls), "refine_call_s": statistics.median(calls),
        "rest_s": statistics.median(wall - call for wall, call in zip(walls, calls, strict=True)),
        "peak_rss_gb": max(run.peak_rss for run in runs) / 1e9,
        "schedule": runs[-1].summary.get("schedule", ""),
        "within_budget": max(walls) <= budget_s,
    }


def table_line(row: dict[str, Any]) -> str:
    """A row of the printed table, its budget verdict "yes" or "no"."""
    spread = f"{row['min_s']:.2f}-{row['max_s']:.2f}"
    verdict = "yes" if row["within_budget"] else "no"
    return (f"{row['pair']:<26} {row['median_s']:>6.2f}s {spread:>11} {row['refine_call_s']:>10.2f}s "
            f"{row['rest_s']:>7.2f}s {row['peak_rss_gb']:>6.2f}GB  {verdict:>8}  {row['schedule']}")


def make_pairs(folder: Path, width: int, height: int, mask_kinds: list[str]) -> list[tuple[Path, Path]]:
    """A generated photo (JPEG) and one mask (PNG) per kind: ``blocky`` or ``precise``."""
    import cv2

    from crm_cli.synthetic import coarse_mask, synthetic_scene

    rgb, exact = synthetic_scene(height, width)
    image = folder / f"scene_{width}x{height}.jpg"
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    pairs = []
    for kind in mask_kinds:
        mask = folder / f"scene_{width}x{height}_{kind}.png"
        cv2.imwrite(str(mask), coarse_mask(exact) if kind == "blocky" else exact)
        pairs.append((image, mask))
    return pairs


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"3840x2160,6000x4000"`` -> [(3840, 2160), (6000, 4000)] (``sizes.sizes``: a malformed one is a
    usage error)."""
    return sizes(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", nargs=2, action="append", default=[], metavar=("IMAGE", "MASK"),
                        help="time these files (repeatable); without it, generated photos are timed")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, type=parse_sizes,
                        help=f"generated photo sizes (default {DEFAULT_SIZES})")
    parser.add_argument("--masks", default="blocky,precise", help="generated masks: blocky, precise or both")
    parser.add_argument("--repeat", type=int, default=3, help="runs per pair after one warm-up run")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds a run may take")
    parser.add_argument("--json", dest="json_path", help="also write the rows to this file")
    own, extra = split_forwarded(sys.argv[1:])  # after --: extra `crm refine` options, e.g. -w WEIGHTS
    args = parser.parse_args(own)

    with tempfile.TemporaryDirectory(prefix="crm_whole_") as temp:
        folder = Path(temp)
        pairs = [(Path(image), Path(mask), Path(mask).name) for image, mask in args.pair]
        if not pairs:
            kinds = [k.strip() for k in args.masks.split(",") if k.strip()]
            for width, height in args.sizes:
                made = make_pairs(folder, width, height, kinds)
                pairs += [(image, mask, f"{width}x{height} {kind}")
                          for (image, mask), kind in zip(made, kinds, strict=True)]
        env, bytecode_was_off = timed_environment()
        if bytecode_was_off:
            print(f"note: {NO_BYTECODE_VARIABLE} is set here; the timed runs go without it, so that the warm-up "
                  "caches crm's bytecode as an installed crm has it", file=sys.stderr)
        torch_runs = [run_timed([sys.executable, "-c", "import torch"], env) for _ in range(args.repeat)]
        rows = []
        for image, mask, label in pairs:
            command = [sys.executable, "-m", "crm_cli", "refine", str(image), str(mask), "-o",
                       str(folder / "out.png"), "--json", *extra]
            run_timed(command, env)  # warm-up: page cache and bytecode, as a second run in a script sees them
            rows.append(timing_row(label, [run_timed(command, env) for _ in range(args.repeat)], args.budget))
    torch_s = statistics.median(r.wall_s for r in torch_runs)
    print(f"whole `crm refine` processes, {os.cpu_count()} CPUs, median of {args.repeat} after a warm-up; "
          f"a bare `python -c 'import torch'`: {torch_s:.2f} s")
    header = (f"{'pair':<26} {'median':>7} {'min-max':>11} {'refine call':>11} {'the rest':>8} {'peak RSS':>8}"
              f"  {'<= ' + format(args.budget, 'g') + ' s':>8}  schedule")
    print(header)
    for row in rows:
        print(table_line(row))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"cpus": os.cpu_count(), "torch_import_s": torch_s,
                                                    "budget_s": args.budget, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
