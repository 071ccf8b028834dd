"""Train within a fixed wall-clock budget in one call, sizing the run to the machine it lands on.

Made for a borrowed GPU machine that runs one command of limited length: a short probe run
measures the seconds per step (data included), the real run then gets as many ``--steps`` as fit
in what is left of ``--minutes`` (so its learning-rate decays at 50% and 83% happen inside the
budget), with ``--max-minutes`` as the safety net that still leaves a checkpoint, a validation
and ``model.safetensors``. Everything after ``--`` goes to ``crm train`` unchanged.

    PYTHONPATH=src python3 benchmarks/device_train.py --minutes 8 --out OUT/run -- \\
        --data runs/pack/train --val runs/pack/val --device cuda --workers 12 \\
        --init weights/crm_mobilenet_v2.safetensors --lr 1e-4 --query-window 112

It needs only what ``crm train`` imports (torch, timm, typer, rich, OpenCV, Pillow, safetensors),
so a machine with those can run it from a checkout without installing the project.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def crm_train(arguments: list[str]) -> None:
    """Run ``crm train`` with ``arguments`` in a child process; SystemExit if it fails (its own error
    line, on stderr before ours, says why)."""
    code = subprocess.run([sys.executable, "-m", "crm_cli", "train", *arguments], check=False).returncode
    if code != 0:
        raise SystemExit(f"error: crm train failed (exit code {code})")


def seconds_per_step(log: Path, skip: int) -> float:
    """The median ``seconds`` of a run's log rows after the first ``skip`` (warm-up) steps."""
    with open(log, newline="") as handle:
        seconds = [float(row["seconds"]) for row in csv.DictReader(handle) if int(row["step"]) > skip]
    if not seconds:
        raise ValueError(f"{log}: no step after the first {skip} to time")
    return statistics.median(seconds)


def planned_steps(budget_s: float, step_s: float, share: float, minimum: int = 1) -> int:
    """How many steps of ``step_s`` seconds fit in ``share`` of ``budget_s`` (at least ``minimum``)."""
    return max(minimum, int(budget_s * share / step_s))


def validation_spacing(steps: int, validations: int) -> list[str]:
    """``crm train`` arguments that validate ``validations`` times evenly over ``steps`` (none for 0)."""
    return ["--val-every", str(max(1, steps // validations))] if validations > 0 else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock budget for probe and run")
    parser.add_argument("--out", type=Path, required=True, help="run folder of the real run")
    parser.add_argument("--probe-steps", type=int, default=60, help="steps of the timing probe")
    parser.add_argument("--share", type=float, default=0.8,
                        help="share of the time left that the planned steps may fill (validation, export and "
                             "start-up take the rest)")
    parser.add_argument("--validations", type=int, default=0,
                        help="validate (and with --keep-exports keep the weights) this many times, evenly over the "
                             "planned steps (0: crm train's --val-every as given)")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of crm train")
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]
    own = ("--steps", "--out", "--max-minutes", "--resume") + (("--val-every",) if args.validations > 0 else ())
    if any(a in own for a in train_args):
        parser.error(f"{', '.join(own)} are this script's to set")
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "probe"
        crm_train([*train_args, "--out", str(probe), "--steps", str(args.probe_steps),
                   "--val-every", str(10 * args.probe_steps), "--val-images", "1"])
        step_s = seconds_per_step(probe / "log.csv", skip=args.probe_steps // 3)
    left_s = 60.0 * args.minutes - (time.monotonic() - start)
    if left_s <= 0:  # crm train would refuse a negative --max-minutes in its own words
        raise SystemExit(f"error: the timing probe took all of --minutes {args.minutes:g} ({60 * args.minutes:.0f} s); "
                         "give more minutes or fewer --probe-steps")
    steps = planned_steps(left_s, step_s, args.share)
    print(f"probe: {step_s * 1000:.1f} ms per step; planning {steps} steps in {left_s:.0f} s", file=sys.stderr)
    crm_train([*train_args, *validation_spacing(steps, args.validations), "--out", str(args.out),
               "--steps", str(steps), "--max-minutes", f"{left_s / 60:.3f}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
