"""Whole `crm refine` processes under a container's CPU quota, with this checkout and another.

A container limited with ``docker run --cpus Q`` (or a Kubernetes CPU limit) sees every core of its
host, and a thread per core then runs only for the quota's share of each period. This script makes
a cgroup with a quota of Q CPUs (cgroup v1's ``cpu`` hierarchy or v2; it needs root), runs each
``crm refine`` in it, and prints wall time per quota and per checkout: this one (whose default
threads follow the quota, ``crm_cli.containers``) and, with ``--baseline-src``, the ``src`` folder
of another checkout (an older crm whose default was a thread per physical core):

    git worktree add /tmp/crm-old 7f9a7ac
    sudo python benchmarks/cpu_quota.py --quotas 1,1.5 --baseline-src /tmp/crm-old/src

The cgroup is removed at the end. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from whole_process import make_pairs, parse_sizes, run_timed

PERIOD_US = 100_000
V1_CPU_ROOT = Path("/sys/fs/cgroup/cpu")
V2_ROOT = Path("/sys/fs/cgroup")


def _v2_cpu_enabled() -> bool:
    """Whether a cgroup v2 root here hands the cpu controller to the cgroups made under it."""
    try:
        return "cpu" in (V2_ROOT / "cgroup.subtree_control").read_text(errors="replace").split()
    except OSError:
        return False


@contextmanager
def quota_cgroup(cpus: float) -> Iterator[Path]:
    """A fresh cgroup allowing ``cpus`` CPUs on average; yields the ``tasks``/``cgroup.procs`` file
    a process joins it by. SystemExit in one line where no cgroup can be made here."""
    name = f"crm-bench-{os.getpid()}-{cpus:g}"
    if (V1_CPU_ROOT / "cpu.cfs_quota_us").exists():
        folder, join = V1_CPU_ROOT / name, "tasks"
        settings = {"cpu.cfs_period_us": str(PERIOD_US), "cpu.cfs_quota_us": str(round(cpus * PERIOD_US))}
    elif _v2_cpu_enabled():
        folder, join = V2_ROOT / name, "cgroup.procs"
        settings = {"cpu.max": f"{round(cpus * PERIOD_US)} {PERIOD_US}"}
    else:
        raise SystemExit("error: no cgroup cpu controller to limit (cgroup v1 'cpu' or v2 with 'cpu' enabled)")
    try:
        folder.mkdir()
        for setting, value in settings.items():
            (folder / setting).write_text(value)
    except OSError as exc:
        raise SystemExit(f"error: cannot make a cgroup at {folder} ({exc.strerror}); run as root") from None
    try:
        yield folder / join
    finally:
        folder.rmdir()  # its processes have all ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quotas", default="1,1.5", help="CPU quotas to run under (default 1,1.5)")
    parser.add_argument("--sizes", default="2048x1536,3840x2160", help="generated photo sizes")
    parser.add_argument("--masks", default="blocky", help="generated masks: blocky, precise or both")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row after one warm-up run")
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src folder to time alongside")
    args = parser.parse_args()
    quotas = [float(item) for item in args.quotas.split(",") if item.strip()]
    checkouts = [("this checkout", None)]
    if args.baseline_src is not None:
        if not (args.baseline_src / "crm_cli" / "__init__.py").exists():
            raise SystemExit(f"error: {args.baseline_src} holds no crm_cli package")
        checkouts.append((f"baseline {args.baseline_src}", args.baseline_src.resolve()))

    kinds = [kind.strip() for kind in args.masks.split(",") if kind.strip()]
    print(f"whole `crm refine` processes in a cgroup of the given CPU quota on {os.cpu_count()} CPUs, "
          f"median of {args.repeat} after a warm-up")
    print(f"{'pair':<20} {'quota':>6} {'checkout':<40} {'median':>7} {'min-max':>11} {'refine call':>11}")
    with tempfile.TemporaryDirectory(prefix="crm_quota_") as temp:
        folder = Path(temp)
        pairs = []
        for width, height in parse_sizes(args.sizes):
            made = make_pairs(folder, width, height, kinds)
            pairs += [(image, mask, f"{width}x{height} {kind}")
                      for (image, mask), kind in zip(made, kinds, strict=True)]
        for quota in quotas:
            with quota_cgroup(quota) as join:
                for image, mask, label in pairs:
                    for checkout, src in checkouts:
                        # The shell joins the cgroup, then becomes crm: every thread crm starts is in it.
                        prefix = f"PYTHONPATH={src} " if src else ""
                        command = ["sh", "-c", f'echo $$ > "{join}" && {prefix}exec "$0" "$@"', sys.executable,
                                   "-m", "crm_cli", "refine", str(image), str(mask), "-o", str(folder / "out.png"),
                                   "--json", "-q"]
                        run_timed(command)
                        runs = [run_timed(command) for _ in range(args.repeat)]
                        walls = [run.wall_s for run in runs]
                        call = statistics.median(float(run.summary.get("seconds", 0.0)) for run in runs)
                        print(f"{label:<20} {quota:>6g} {checkout[:40]:<40} {statistics.median(walls):>6.2f}s "
                              f"{min(walls):.2f}-{max(walls):.2f} {call:>10.2f}s", flush=True)


if __name__ == "__main__":
    main()
