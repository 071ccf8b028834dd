"""``auto`` against every fixed preset on every kind of coarse mask: IoU, mBA and time per image.

Each (set, preset) pair runs ``crm eval --json`` in its own process; results are kept as JSON in
``--out`` (by the set's folder, the preset and the weights' content) so an interrupted run continues
where it stopped. Prints one markdown table per set.

    python benchmarks/schedules.py carvana=../shared/data/carvana-dev real1024=DIR/isnet1024 \\
        real256=DIR/isnet256 duts=DIR thin=DIR --out runs/schedules [--presets auto,fast,balanced,quality]

A set is ``NAME=FOLDER`` in BIG layout (``*_im``, ``*_seg``, ``*_gt``). ``DIR/isnet1024`` comes from
the data's ``build.sh``; the DUTS held-out and thin-structure folders from ``make_heldout_val.py`` and
``make_thin_val.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from eval_cache import cached_eval
from named_sets import named_folders

from crm_cli.cli.resumable import weights_identity

DEFAULT_PRESETS = ("auto", "fast", "balanced", "quality")


def per_image_losses(summary: dict) -> tuple[int, float]:
    """(images that lost more than 1 IoU point against their coarse mask, the worst IoU change)."""
    deltas = [image["refined_iou"] - image["coarse_iou"] for image in summary.get("images", [])]
    return sum(1 for d in deltas if d < -0.01), min(deltas, default=0.0)


def table(name: str, results: dict[str, dict]) -> str:
    """A markdown table of one set: coarse first, then each preset."""
    first = next(iter(results.values()))
    lines = [f"**{name}** (n={first['n']})", "",
             "| preset | IoU | mBA | ΔIoU | ΔmBA | s/image | images −1 IoU pt | worst ΔIoU | coarse kept | schedules |",
             "|---|---|---|---|---|---|---|---|---|---|",
             f"| coarse | {100 * first['coarse']['iou']:.2f} | {100 * first['coarse']['mba']:.2f} | | | | | | | |"]
    for preset, summary in results.items():
        losers, worst = per_image_losses(summary)
        schedules = ", ".join(f"{k}: {v}" for k, v in summary.get("schedules", {}).items())
        lines.append(f"| {preset} | {100 * summary['refined']['iou']:.2f} | {100 * summary['refined']['mba']:.2f} | "
                     f"{100 * summary['delta']['iou']:+.2f} | {100 * summary['delta']['mba']:+.2f} | "
                     f"{summary['seconds_per_image']:.2f} | {losers} | {100 * worst:+.2f} | "
                     f"{summary.get('kept_coarse', '')} | {schedules} |")
    return "\n".join(lines)


def main() -> None:
    """Parse the sets, run what is missing, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="NAME=FOLDER (BIG layout)")
    parser.add_argument("--out", type=Path, default=Path("runs/schedules"))
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS))
    parser.add_argument("--weights", default=None)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    extra = (["--weights", args.weights] if args.weights else []) + (
        ["--threads", str(args.threads)] if args.threads else [])
    sets = list(named_folders(args.sets, "a set"))  # a bad set is one line before any work
    # Results are kept by the set's folder and the weights too (their sha256 and sidecar settings, as
    # crm batch records them; the default's included): other ones are other results.
    if args.weights and not Path(args.weights).is_file():
        raise SystemExit(f"error: --weights {args.weights}: no such file")
    weights_key = "-" + hashlib.sha256(weights_identity(args.weights).encode()).hexdigest()[:12]
    for name, folder in sets:
        results = {}
        folder_key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
        for preset in args.presets.split(","):
            result_path = args.out / f"{name}-{folder_key}" / f"{preset}{weights_key}.json"
            results[preset] = cached_eval(folder, ["--preset", preset, *extra], result_path)
            print(f"{name} {preset}: done", file=sys.stderr, flush=True)
        print(table(name, results), "\n", flush=True)


if __name__ == "__main__":
    main()
