"""What each speed-up buys: the default engine against itself with one speed-up switched off.

Three tables, all measured on this machine in one run:

1. Engine ablation on a synthetic scene (default 3840x2160): the default (``balanced``) and one
   row per switched-off speed-up (ROI, decoding intermediate stages only at the next stage's size,
   BatchNorm folding, channels_last) or changed setting (threads, ROI tile size). Each row runs
   in its own subprocess, median of ``--repeat`` timed runs after a warm-up.
2. The implicit decoder's split first layer: the production decoder against an unsplit one that
   feeds the full (C + 6)-wide input per support through the first Linear (same results).
3. Skipping ResNet-50's layer4: the paper's encoder trunk with and without a dilated layer4.

    python benchmarks/speedups.py [--size 3840x2160] [--repeat 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from script_errors import one_line_errors
from vs_cascadepsp import count_gmacs, scene

# name -> (engine options changed, Refiner keyword arguments changed)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default (balanced)": ({}, {}),
    "no ROI (CRM* off)": ({"roi": False}, {}),
    "intermediate stages at full size": ({"full_decode": True}, {}),
    "no BatchNorm folding": ({}, {"fold_bn": False}),
    "NCHW (channels_last off)": ({}, {"channels_last": False}),
    "1 thread": ({}, {"threads": 1}),
    "ROI tiles 384 px + 48 px margin": ({}, {"roi_tile_size": 384, "roi_tile_margin": 48}),
    "ROI 256-px tiles alone (session 11)": ({}, {"roi_tile_size": 256, "roi_window_size": 256}),
}


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def run_variant(name: str, size: str, device: str, repeat: int) -> dict:
    """Time one engine variant in this process (called in a subprocess)."""
    import torch

    from crm_cli.devices import resolve_device
    from crm_cli.engine import Refiner
    from crm_cli.presets import PRESETS
    from crm_cli.runtime import configure_torch, peak_rss_mb

    engine_changes, refiner_changes = VARIANTS[name]
    options = {"preset": PRESETS["balanced"], **engine_changes}  # keyword overrides of single switches
    changes = dict(refiner_changes)
    configure_torch(changes.pop("threads", None), resolve_device(device))
    refiner = Refiner.from_checkpoint(device=device, backend="torch", **changes)  # torch's own speed-ups
    image, coarse = scene(size)
    small_image, small_coarse = scene("512x384")
    refiner.refine(small_image, small_coarse, **options)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        refiner.refine(image, coarse, **options)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    gmacs = count_gmacs(lambda: refiner.refine(image, coarse, **options))
    return {"name": name, "seconds": median(times), "gmacs": gmacs,
            "peak_rss_mb": peak_rss_mb()}


def unsplit_decode(decoder, latent, target_hw: tuple[int, int], stage_hw: tuple[int, int], pad: int):  # noqa: ANN001, ANN201
    """The decoder without the split: per support, gather all C latent channels, append the six
    position inputs and run the whole first Linear, in row bands (float32)."""
    import torch

    from crm_cli.model import axis_geometry

    _, channels, h, w = latent.shape
    rows = axis_geometry(target_hw[0], stage_hw[0], h, pad, latent.device)
    cols = axis_geometry(target_hw[1], stage_hw[1], w, pad, latent.device)
    cell_y, cell_x = stage_hw[0] / target_hw[0], stage_hw[1] / target_hw[1]
    features = latent[0].permute(1, 2, 0)  # (h, w, C)
    out = torch.empty(target_hw)
    band = 16
    for r0 in range(0, target_hw[0], band):
        r1 = min(target_hw[0], r0 + band)
        n_rows = r1 - r0
        total = 0
        for a in range(2):
            for b in range(2):
                iy, ix = rows[0][a, r0:r1], cols[0][b]
                gathered = features[iy][:, ix]  # (n_rows, W, C)
                position = torch.stack(torch.broadcast_tensors(
                    rows[1][a, r0:r1, None], cols[1][b][None, :],
                    rows[3][r0:r1, None], cols[3][None, :],
                    torch.tensor(cell_y), torch.tensor(cell_x)), dim=-1)  # (n_rows, W, 6)
                x = torch.cat([gathered, position.expand(n_rows, -1, 6)], dim=-1)
                for layer in decoder.layers[:-1]:
                    x = torch.relu(layer(x))
                logits = decoder.layers[-1](x).squeeze(-1)
                total = total + logits * (rows[2][a, r0:r1, None] * cols[2][b][None, :])
        out[r0:r1] = total
    return out


def decoder_table(repeat: int) -> list[tuple[str, float, float]]:
    """Time the split and the unsplit decoder on a 1024^2 target from a 512^2 stage."""
    import torch

    from crm_cli.checkpoint import default_weights_path, load_model

    model, _ = load_model(default_weights_path())
    decoder = model.decoder
    torch.manual_seed(0)
    latent = torch.randn(1, decoder.latent_dim, (512 + 64) // 2, (512 + 64) // 2)
    rows = []
    with torch.inference_mode():
        fast = None

        def split() -> torch.Tensor:
            return decoder.decode(decoder.project(latent), (1024, 1024), (512, 512), 32)[0]

        def unsplit() -> torch.Tensor:
            return unsplit_decode(decoder, latent, (1024, 1024), (512, 512), 32)

        for label, fn in (("split first layer (production)", split), ("unsplit first layer", unsplit)):
            fn()
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                result = fn()
                times.append(time.perf_counter() - start)
            fast = result if fast is None else fast
            difference = float((result - fast).abs().max())
            rows.append((label, median(times), difference))
    return rows


def layer4_table(repeat: int) -> list[tuple[str, float, float]]:
    """Time the ResNet-50 trunk (layer3 dilated, stride 8) with and without a dilated layer4."""
    import torch
    from torchvision.models import resnet50

    net = resnet50(replace_stride_with_dilation=[False, True, True]).eval()
    x = torch.randn(1, 3, 512, 512)

    def trunk(with_layer4: bool) -> torch.Tensor:
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        y = net.layer3(net.layer2(net.layer1(y)))
        return net.layer4(y) if with_layer4 else y

    rows = []
    with torch.inference_mode():
        for label, flag in (("ResNet-50 to layer3 (ours)", False), ("ResNet-50 with dilated layer4", True)):
            trunk(flag)
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                trunk(flag)
                times.append(time.perf_counter() - start)
            rows.append((label, median(times), count_gmacs(lambda flag=flag: trunk(flag))))
    return rows


@one_line_errors
def main() -> None:
    """Run the three tables and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="3840x2160")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_variant(args.one, args.size, args.device, args.repeat)))
        return

    import torch

    from crm_cli.devices import resolve_device

    resolve_device(args.device)  # an absent GPU stops here, not once per variant

    rows = []
    for name in args.variants.split(","):
        command = [sys.executable, __file__, "--one", name, "--size", args.size, "--device", args.device,
                   "--repeat", str(args.repeat)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"done {name}: {rows[-1]['seconds']:.2f} s", file=sys.stderr)

    machine = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"\nmachine: {machine}; torch {torch.__version__}; scene {args.size}; median of {args.repeat}")
    base = rows[0]["seconds"] if rows else float("nan")
    print(f"{'engine variant':<36}{'time s':>8}{'vs default':>12}{'GMAC':>8}{'peak MB':>9}")
    for row in rows:
        print(f"{row['name']:<36}{row['seconds']:>8.2f}{row['seconds'] / base:>11.2f}x{row['gmacs']:>8.1f}"
              f"{row['peak_rss_mb']:>9.0f}")
    print(f"\n{'decoder, 1024x1024 target from a 512x512 stage':<48}{'time s':>8}{'max |dlogit|':>14}")
    for label, seconds, difference in decoder_table(args.repeat):
        print(f"{label:<48}{seconds:>8.3f}{difference:>14.1e}")
    print(f"\n{'encoder trunk, 512x512 input':<48}{'time s':>8}{'GMAC':>8}")
    for label, seconds, gmacs in layer4_table(args.repeat):
        print(f"{label:<48}{seconds:>8.3f}{gmacs:>8.1f}")


if __name__ == "__main__":
    main()
