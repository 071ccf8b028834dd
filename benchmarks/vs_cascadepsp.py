"""Speed and memory: crm (each preset) against CascadePSP's fast mode, in one run, on one machine.

CascadePSP (``pip install segmentation-refinement``) is built with random weights (its weights
cannot be downloaded here, and its time does not depend on their values) and run in fast mode
(global step only, L=900): a lower bound on its real cost. Every configuration runs in its own
subprocess so that its peak RSS is its own. MACs are counted once per configuration with
``torch.utils.flop_counter`` (conv, linear and matmul), and the achieved rate is compared with the
machine's fp32 GEMM peak measured at the start.

    python benchmarks/vs_cascadepsp.py [--sizes 2048x1536,3840x2160,6000x4000] [--device cpu]
        [--cascadepsp-sizes 2048x1536,3840x2160] [--presets fast,balanced,quality] [--repeat 1]
        [--masks blocky,precise]

``--masks``: crm is timed with the scene's blocky coarse mask (a low-resolution network's; the
coarse-to-fine stages) and/or its exact mask (a precise mask, as SAM or a high-resolution network
gives: with ``auto``, the region pass and the final stage). CascadePSP's fast mode costs the same
whatever the mask, so it is timed once per size, with the blocky one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from script_errors import one_line_errors

SIZES = "2048x1536,3840x2160,6000x4000"
PRESETS = ("fast", "balanced", "quality")


def gemm_peak_gmacs(device: str) -> float:
    """Measured fp32 GEMM rate in GMAC/s (median of several 2048^3 products)."""
    import torch

    n = 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return n**3 / sorted(times)[len(times) // 2] / 1e9


def scene(size: str, mask: str = "blocky"):  # noqa: ANN201
    """The synthetic benchmark scene and its coarse mask: ``blocky`` or ``precise`` (the exact one)."""
    from crm_cli.synthetic import coarse_mask, synthetic_scene

    width, height = (int(v) for v in size.split("x"))
    image, exact = synthetic_scene(height, width, seed=1)
    return image, exact if mask == "precise" else coarse_mask(exact, cells=56, seed=1)


def count_gmacs(fn) -> float:  # noqa: ANN001
    """MACs of one call, from torch's FLOP counter (2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2e9


def run_one(tool: str, size: str, preset: str, device: str, weights: str | None, repeat: int,
            mask: str = "blocky", backend: str = "auto") -> dict:
    """Time one configuration in this process (called in a subprocess)."""
    import torch

    from crm_cli.runtime import peak_gpu_mb, peak_rss_mb

    image, coarse = scene(size, mask)
    if tool == "cascadepsp":
        try:
            from segmentation_refinement import Refiner as CascadeRefiner
            from segmentation_refinement.models.psp.pspnet import RefinementModule
        except ImportError:
            raise SystemExit("CascadePSP is not installed: pip install segmentation-refinement") from None

        folder = tempfile.mkdtemp()
        state = {f"module.{k}": v for k, v in RefinementModule().state_dict().items()}
        torch.save(state, os.path.join(folder, "model"))
        refiner = CascadeRefiner(device=device, model_folder=folder, download_and_check_model=False)

        def call() -> None:
            refiner.refine(image, coarse, fast=True, L=900)
    else:
        from crm_cli.devices import resolve_device
        from crm_cli.engine import Refiner
        from crm_cli.presets import PRESETS as CRM_PRESETS
        from crm_cli.runtime import configure_torch

        configure_torch(device=resolve_device(device))
        refiner = Refiner.from_checkpoint(weights, device=device, backend=backend)
        tool = f"crm/{refiner.backend}"
        options = {"preset": CRM_PRESETS[preset]}

        def call() -> None:
            with torch.inference_mode():
                refiner.refine(image, coarse, **options)

        # Warm-up on a small scene: library start-up out of the timing, without a full extra pass.
        small_image, small_coarse = scene("512x384")
        refiner.refine(small_image, small_coarse, **options)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    peak_rss = peak_rss_mb()
    peak_gpu = peak_gpu_mb() if device == "cuda" else None
    gmacs = None if tool == "crm/onnx" else count_gmacs(call)  # torch's counter sees no ONNX Runtime op
    return {"tool": tool, "preset": preset, "mask": mask, "size": size, "seconds": seconds, "peak_rss_mb": peak_rss,
            "peak_gpu_mb": peak_gpu, "gmacs": gmacs, "threads": torch.get_num_threads()}


@one_line_errors
def main() -> None:
    """Run every configuration in a subprocess and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=SIZES)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default=None, help="crm checkpoint (default: shipped)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--cascadepsp-sizes", default="2048x1536,3840x2160",
                        help="sizes at which to time CascadePSP (its fast mode works at L=900 whatever the size)")
    parser.add_argument("--masks", default="blocky", help="crm's coarse masks: blocky, precise or both")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the rows to this file")
    parser.add_argument("--backends", default="auto", help="crm's backends to time, e.g. onnx,torch (auto: as the CLI)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        tool, size, preset, mask, backend = args.one.split(":")
        print(json.dumps(run_one(tool, size, preset, args.device, args.weights, args.repeat, mask, backend)))
        return

    import torch

    from crm_cli.devices import resolve_device

    resolve_device(args.device)  # an absent GPU stops here, not once per configuration

    peak = gemm_peak_gmacs(args.device)
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    rows = []
    configs = []
    for size in args.sizes.split(","):
        if size in args.cascadepsp_sizes.split(","):
            configs.append(("cascadepsp", size, "fast", "blocky", "-"))
        configs += [("crm", size, preset, mask, backend) for mask in args.masks.split(",")
                    for preset in args.presets.split(",") for backend in args.backends.split(",")]
    for tool, size, preset, mask, backend in configs:
        command = [sys.executable, __file__, "--one", f"{tool}:{size}:{preset}:{mask}:{backend}",
                   "--device", args.device, "--repeat", str(args.repeat)]
        command += ["--weights", args.weights] if args.weights else []
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{tool} {preset} {size}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"done {tool} {preset} {mask} {size}: {rows[-1]['seconds']:.2f} s", file=sys.stderr)

    baseline = {r["size"]: r["seconds"] for r in rows if r["tool"] == "cascadepsp"}
    print(f"\nmachine: {device_name}; measured fp32 GEMM peak {peak:.1f} GMAC/s; torch {torch.__version__}")
    header = f"{'tool':<11}{'preset':<10}{'mask':<9}{'size':<11}{'time s':>8}{'vs CPSP':>9}{'peak MB':>9}{'GMAC':>9}" \
             f"{'GMAC/s':>8}{'% peak':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row["seconds"] / baseline[row["size"]] if row["size"] in baseline else float("nan")
        memory = row["peak_gpu_mb"] if row["peak_gpu_mb"] is not None else row["peak_rss_mb"]
        rate = None if row["gmacs"] is None else row["gmacs"] / row["seconds"]
        cost = "       -       -      -"
        if rate is not None:
            cost = f"{row['gmacs']:>9.1f}{rate:>8.1f}{100 * rate / peak:>7.1f}%"
        print(f"{row['tool']:<11}{row['preset']:<10}{row['mask']:<9}{row['size']:<11}{row['seconds']:>8.2f}{ratio:>9.3f}"
              f"{memory:>9.0f}{cost}")
    if args.json_path:
        payload = {"machine": device_name, "gemm_gmacs": peak, "rows": rows}
        Path(args.json_path).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
