"""Weight averaging of two checkpoints of one architecture (a fine-tune and its starting point).

A fine-tune that gains on some dev sets and loses on others can be blended with the weights it
started from: ``(1 - alpha) * base + alpha * tuned``, parameter by parameter (BatchNorm running
statistics included; integer buffers such as ``num_batches_tracked`` are the base's).

    python -m crm_cli.training.averaging BASE TUNED --alpha 0.5 -o OUT.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..checkpoint import load_model, save_weights
from ..config import Provenance


def average_state(base: dict[str, Any], tuned: dict[str, Any], alpha: float) -> dict[str, Any]:
    """``(1 - alpha) * base + alpha * tuned`` for every floating-point tensor; other tensors from ``base``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if base.keys() != tuned.keys():
        differing = sorted(set(base) ^ set(tuned))
        raise ValueError(f"the checkpoints hold different tensors (first: {differing[0]!r})")
    blended = {}
    for key, value in base.items():
        other = tuned[key]
        if value.shape != other.shape:
            raise ValueError(f"{key}: shapes differ ({tuple(value.shape)} and {tuple(other.shape)})")
        if value.is_floating_point():
            blended[key] = ((1.0 - alpha) * value.double() + alpha * other.double()).to(value.dtype)
        else:
            blended[key] = value.clone()
    return blended


def average_checkpoints(base_path: Path, tuned_path: Path, alpha: float, out: Path) -> str:
    """Write the blend of two checkpoints (same architecture) as shipped-format weights; returns its sha256."""
    base, base_info = load_model(base_path)
    tuned, tuned_info = load_model(tuned_path)
    if base_info.config != tuned_info.config:
        raise ValueError(f"{base_path} and {tuned_path} have different architectures")
    base.load_state_dict(average_state(base.state_dict(), tuned.state_dict(), alpha))
    parents = (base_info.provenance, tuned_info.provenance)
    # One data set under two spellings (a run's ../shared/data/duts-tr, another's absolute path) is
    # named once, as the base spelled it.
    data: dict[str, str] = {}
    for parent in parents:
        if parent.get("data"):
            data.setdefault(Path(parent["data"]).name, parent["data"])
    provenance = Provenance(
        command=f"python -m crm_cli.training.averaging {base_path} {tuned_path} --alpha {alpha}",
        data=" + ".join(data.values()),
        init=f"{Path(base_path).name} sha256={base_info.sha256} x{1 - alpha:g} + "
             f"{Path(tuned_path).name} sha256={tuned_info.sha256} x{alpha:g}",
        notes="weight average of two checkpoints; " + "; ".join(
            _parent_note(role, parent) for role, parent in zip(("base", "tuned"), parents, strict=True)),
    )
    return save_weights(base, out, provenance)


def _parent_note(role: str, provenance: dict[str, Any]) -> str:
    """One parent's training for the blend's notes, so the shipped file says how both were made."""
    if not provenance.get("command"):
        return f"{role}: no provenance recorded"
    return f"{role}: {provenance.get('steps', 0)} steps of `{provenance['command']}`"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: blend two checkpoints."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("tuned", type=Path)
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of TUNED (0: BASE, 1: TUNED)")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(average_checkpoints(args.base, args.tuned, args.alpha, args.out))


if __name__ == "__main__":
    main()
