"""`crm batch --ray local` against the plain `crm batch` on this machine: throughput and overhead.

Writes ``--pairs`` synthetic BIG-layout pairs (``--size``) to a temporary folder, then runs, each
in a fresh process as a user would, ``crm batch DIR -o OUT`` and ``crm batch DIR -o OUT --ray
local`` ``--repeat`` times (new output folders every time, so nothing is skipped). Reports the
median wall time of each command, pairs per second, the Ray overhead (wall-time difference, which
includes starting Ray and its actors) and whether both wrote byte-identical masks.

    python benchmarks/ray_throughput.py [--pairs 24] [--size 2048x1536] [--repeat 2] [--threads N]
                                        [--device cpu] [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
from sizes import size


def write_pairs(folder: Path, count: int, width: int, height: int) -> None:
    """``count`` pairs ``k_im.jpg`` + ``k_seg.png`` of the procedural scene, one seed each."""
    from crm_cli.synthetic import coarse_mask, synthetic_scene

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image, mask = synthetic_scene(height, width, seed=k)
        cv2.imwrite(str(folder / f"s{k:03d}_im.jpg"), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(folder / f"s{k:03d}_seg.png"), coarse_mask(mask, seed=k))


def run_batch(data: Path, output: Path, extra: list[str]) -> tuple[float, dict]:
    """Wall time and JSON summary of one ``crm batch`` in a fresh process."""
    command = [sys.executable, "-m", "crm_cli", "batch", str(data), "-o", str(output), "--json", "-q", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout)


def same_outputs(a: Path, b: Path) -> bool:
    """True when both folders hold the same PNG files with the same bytes."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*.png"))
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def median(values: list[float]) -> float:
    """Median of a non-empty list (of an even count, the mean of the middle two)."""
    return statistics.median(values)


def main() -> int:
    """Run both commands and print the comparison (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--size", default="2048x1536", type=size, help="WIDTHxHEIGHT of each synthetic pair")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: crm's default)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    args = parser.parse_args()
    width, height = args.size

    work = args.keep or Path(tempfile.mkdtemp(prefix="crm_ray_bench_"))
    try:
        data = work / "data"
        write_pairs(data, args.pairs, width, height)
        common = ["--device", args.device, *(["--threads", str(args.threads)] if args.threads else [])]
        timings: dict[str, list[float]] = {"plain": [], "ray": []}
        for run in range(args.repeat):
            for name, extra in (("plain", common), ("ray", [*common, "--ray", "local"])):
                seconds, summary = run_batch(data, work / f"{name}{run}", extra)
                if summary["done"] != args.pairs:
                    raise SystemExit(f"{name}: {summary['done']} of {args.pairs} pairs refined")
                timings[name].append(seconds)
        identical = same_outputs(work / "plain0", work / "ray0")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    plain, ray = median(timings["plain"]), median(timings["ray"])
    report = {"pairs": args.pairs, "size": f"{width}x{height}", "device": args.device, "threads": args.threads,
              "plain_seconds": plain, "ray_seconds": ray, "plain_pairs_per_s": args.pairs / plain,
              "ray_pairs_per_s": args.pairs / ray, "overhead_seconds": ray - plain, "ratio": ray / plain,
              "identical_outputs": identical, "runs": timings}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.pairs} pairs of {width}x{height}, device {args.device}, median of {args.repeat} (wall time, "
          f"fresh process each)")
    print(f"crm batch            : {plain:7.2f} s  ({report['plain_pairs_per_s']:.2f} pairs/s)")
    print(f"crm batch --ray local: {ray:7.2f} s  ({report['ray_pairs_per_s']:.2f} pairs/s)")
    print(f"overhead             : {ray - plain:+7.2f} s  ({ray / plain:.2f}x); outputs byte-identical: {identical}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
