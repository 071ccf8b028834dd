"""Self-describing checkpoints: weights plus the architecture spec and provenance.

Shipped weights are safetensors files (fp16) with the spec in the file's metadata and a sidecar
``<name>.json`` that records the sha256. Training checkpoints are ``.pt`` files of plain tensors
and dicts, loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import ArchConfig, Provenance

FORMAT = "crm-cli/1"
DEFAULT_WEIGHTS_NAME = "crm_mobilenet_v2.safetensors"


class WeightsError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match its recorded hash."""


def default_weights_path() -> Path:
    """The shipped checkpoint, overridable with ``CRM_WEIGHTS``."""
    env = os.environ.get("CRM_WEIGHTS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    candidates = [
        here.parent / "weights" / DEFAULT_WEIGHTS_NAME,  # installed wheel (package data)
        here.parents[2] / "weights" / DEFAULT_WEIGHTS_NAME,  # source checkout / editable install
    ]
    for path in candidates:
        if path.exists():
            return path
    return candidates[-1]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(path: Path) -> Path:
    """``weights/x.safetensors`` -> ``weights/x.json``."""
    return path.with_suffix(".json")


def save_weights(model: Any, path: Path, provenance: Provenance | None = None, half: bool = True,
                 extra: dict[str, Any] | None = None) -> str:
    """Write a shipped checkpoint (safetensors + sidecar JSON); returns its sha256."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point() and "running_" not in key:
            value = value.to(torch.float16)
        state[key] = value.contiguous()
    provenance = provenance or Provenance()
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.config.to_dict()),
        "provenance": json.dumps(asdict(provenance)),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    digest = sha256_file(path)
    sidecar = {
        "file": path.name,
        "sha256": digest,
        "format": FORMAT,
        "dtype": "float16" if half else "float32",
        "config": model.config.to_dict(),
        "provenance": asdict(provenance),
        "parameters": sum(v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k),
        **(extra or {}),
    }
    tmp_json = sidecar_path(path).with_name(sidecar_path(path).name + ".tmp")
    tmp_json.write_text(json.dumps(sidecar, indent=2) + "\n")
    os.replace(tmp_json, sidecar_path(path))
    return digest


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar JSON of a checkpoint, or None when there is none."""
    side = sidecar_path(Path(path))
    if not side.exists():
        return None
    return json.loads(side.read_text())


def verify_sha256(path: Path) -> str:
    """Check a checkpoint against its sidecar's sha256 (when present); returns the file's sha256."""
    digest = sha256_file(path)
    side = read_sidecar(path)
    if side is not None and side.get("sha256") and side["sha256"] != digest:
        raise WeightsError(
            f"{path}: sha256 {digest[:12]}... does not match {sidecar_path(path).name} "
            f"({side['sha256'][:12]}...); the file is corrupt or was replaced"
        )
    return digest


def load_model(path: Path | str, verify: bool = True) -> tuple[Any, dict[str, Any]]:
    """Rebuild a CRMNet from a checkpoint (.safetensors or training .pt) in eval mode.

    Returns:
        (model, info) where info holds ``path``, ``sha256``, ``config`` and ``provenance``.
    """
    import torch

    from .model import build_crm

    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights not found: {path} (pass --weights PATH or set CRM_WEIGHTS)")
    digest = verify_sha256(path) if verify else ""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}
            if metadata.get("format") != FORMAT:
                raise WeightsError(f"{path}: not a crm-cli checkpoint (format {metadata.get('format')!r})")
            config = ArchConfig.from_dict(json.loads(metadata["config"]))
            provenance = json.loads(metadata.get("provenance", "{}"))
        else:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            config = ArchConfig.from_dict(payload["config"])
            state = payload["model"]
            provenance = payload.get("provenance", {})
    except WeightsError:
        raise
    except Exception as exc:  # corrupt archive, bad header, wrong keys
        raise WeightsError(f"cannot read weights {path}: {exc}") from exc
    state = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    try:
        model = build_crm(config)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:  # key or shape mismatch, unknown encoder
        raise WeightsError(f"{path}: weights do not fit their recorded architecture: {exc}") from exc
    model.eval()
    info = {"path": str(path), "sha256": digest, "config": config.to_dict(), "provenance": provenance}
    return model, info
