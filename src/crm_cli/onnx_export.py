"""Export a checkpoint's encoder (stem to projected latent G) to ONNX for the torch-free CPU path.

The CPU path (``onnx_runner``) runs the encoder in ONNX Runtime and the implicit decoder in NumPy,
so a ``crm refine`` on a CPU never imports torch (about 1.5-2 s of a 4K run on a 2-core machine).
The exported graph is ``CRMNet.encode``: (1, 4, H, W) network input -> (1, H/2, W/2, hidden),
with H and W dynamic (multiples of 16). BatchNorm stays in the graph as BatchNormalization nodes
(ONNX Runtime folds them when the session loads), so every stored value is the checkpoint's own:
weights that are float16 in the checkpoint are stored as float16 behind a Cast, running statistics
as float32. The weights' sidecar records the file and both hashes under ``"onnx"`` (a sidecar is
created, with the weights' sha256, when there is none).

Exporting needs torch and the ``onnx`` package; running the result needs neither::

    python -m crm_cli.onnx_export weights/crm_mobilenet_v2_blend.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from .checkpoint import (
    FORMAT,
    SAFETENSORS_KIND,
    WeightsError,
    WeightsSidecar,
    load_model,
    read_sidecar,
    sha256_file,
    sidecar_path,
    write_sidecar,
)
from .writing import write_atomic

ONNX_OPSET = 17
ONNX_SUFFIX = ".encoder.onnx"
EXPORT_SIDE = 256  # the traced input's side; the graph's H and W stay dynamic


def onnx_path_for(weights: Path) -> Path:
    """``weights/x.safetensors`` -> ``weights/x.encoder.onnx``."""
    return weights.with_name(weights.stem + ONNX_SUFFIX)


def _encode_module(model: Any) -> Any:
    """``model.encode`` as a module for the exporter (torch is imported here, not by this module)."""
    import torch

    class Encode(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # CRMNet.encode's projection, written as a 1x1 convolution and a transpose: exported as
            # an Einsum it took 30% of ONNX Runtime's encoder time, as a Conv it runs in its
            # convolution kernels (same values up to float rounding).
            weight = self.model.decoder.projection_weight
            projected = torch.nn.functional.conv2d(self.model.latent(x), weight[:, :, None, None])
            return projected.permute(0, 2, 3, 1).contiguous()

    return Encode().eval()


def _store_half(graph: Any) -> int:
    """Store every float32 initializer whose values are exactly float16 as float16 behind a Cast
    (the checkpoint's fp16 weights, at half the size); returns how many were converted."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    converted = 0
    kept, casts = [], []
    for init in graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype != np.float32 or not np.array_equal(values.astype(np.float16).astype(np.float32), values):
            kept.append(init)
            continue
        half_name = init.name + "__fp16"
        kept.append(numpy_helper.from_array(values.astype(np.float16), half_name))
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=TensorProto.FLOAT))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return converted


def export_encoder(weights: Path, out: Path | None = None, update_sidecar: bool = True) -> dict[str, Any]:
    """Write ``weights``' encoder as ONNX (default: :func:`onnx_path_for`); returns the sidecar entry
    ``{"file", "sha256", "weights_sha256", "opset", "torch"}``, also recorded in the weights'
    sidecar when ``update_sidecar`` (:func:`record_encoder`).

    Only .safetensors weights can be exported: the onnx backend reads its decoder from them. A
    WeightsError names anything else, and weights that do not match their sidecar.
    """
    import io

    import onnx
    import torch

    weights = Path(weights)
    side = WeightsSidecar(weights)  # the kind, read here, is kept for load_model
    if side.kind != SAFETENSORS_KIND:
        raise WeightsError(f"{weights}: a torch training checkpoint; the onnx backend runs .safetensors weights "
                           "(write them with crm_cli.checkpoint.save_weights first)")
    out = Path(out) if out is not None else onnx_path_for(weights)
    model, info = load_model(side)
    example = torch.zeros(1, 4, EXPORT_SIDE, EXPORT_SIDE)
    buffer = io.BytesIO()
    # PRESERVE (the model is in eval mode): the exporter's own Conv+BatchNorm folding in EVAL mode
    # gave outputs up to 1.5 off torch's on these weights; ONNX Runtime folds them correctly instead.
    with warnings.catch_warnings():  # the tracer's notes on shape checks; the graph stays dynamic (tested)
        warnings.simplefilter("ignore")
        torch.onnx.export(_encode_module(model), (example,), buffer, input_names=["x"], output_names=["g"],
                          dynamic_axes={"x": {2: "height", 3: "width"}, "g": {1: "latent_height", 2: "latent_width"}},
                          opset_version=ONNX_OPSET, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
    proto = onnx.load_from_string(buffer.getvalue())
    _store_half(proto.graph)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    # A temp file of its own (write_atomic), and the hash of the bytes written, not of the file read
    # back: two exports of the same weights at once shared one "<out>.tmp", so one could rename the
    # other's half-written file into place and record the sha256 of that (every run then refused it).
    write_atomic(out, data)
    entry = {"file": out.name, "sha256": hashlib.sha256(data).hexdigest(),
             "weights_sha256": info.sha256 or sha256_file(weights),
             "opset": ONNX_OPSET, "torch": torch.__version__.split("+")[0]}
    if update_sidecar:
        record_encoder(weights, out, entry)
    return entry


def record_encoder(weights: Path, encoder: Path, entry: dict[str, Any]) -> str:
    """Record an exported encoder's ``entry`` under ``"onnx"`` in the sidecar of ``weights``, so
    that the onnx backend takes it; returns a line saying what was written, or why nothing was.

    The backend looks for the encoder beside the weights, so one written elsewhere is not recorded.
    Weights without a sidecar get one, and a sidecar without a sha256 gets the weights' (the one
    the entry was made from): the backend runs only weights it can check.
    """
    weights, encoder = Path(weights), Path(encoder)
    side_path = sidecar_path(weights)
    # The folders, not the files, are resolved: weights that are a symlink are read beside the link.
    if encoder.parent.resolve() != weights.parent.resolve():
        return (f"not recorded in {side_path.name}: the onnx backend takes only an encoder beside the weights "
                f"(in {weights.parent}); export without -o, or with -o into that folder")
    sidecar = read_sidecar(weights)
    notes = []
    if sidecar is None:
        sidecar = {"file": weights.name, "sha256": entry["weights_sha256"], "format": FORMAT}
        notes.append(f"created {side_path.name} with the weights' sha256")
    elif not sidecar.get("sha256"):
        sidecar["sha256"] = entry["weights_sha256"]
        notes.append(f"added the weights' sha256 to {side_path.name}")
    sidecar["onnx"] = entry
    write_sidecar(weights, sidecar)
    return "; ".join([*notes, f"recorded {encoder.name} in {side_path}"])


def main(argv: list[str] | None = None) -> None:
    """``python -m crm_cli.onnx_export WEIGHTS [-o OUT]``: the entry as JSON on stdout, what was
    recorded (or an error, exit 1) on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=None, help="default: WEIGHTS' stem + .encoder.onnx")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else onnx_path_for(args.weights)
    try:
        entry = export_encoder(args.weights, out, update_sidecar=False)
        recorded = record_encoder(args.weights, out, entry)
    except ImportError as exc:
        print(f"error: exporting needs torch and the onnx package ({exc}): pip install onnx", file=sys.stderr)
        raise SystemExit(1) from None
    except (WeightsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(entry, indent=2))
    print(recorded, file=sys.stderr)


if __name__ == "__main__":
    main()
