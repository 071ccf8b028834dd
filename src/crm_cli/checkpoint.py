"""Self-describing checkpoints: weights plus the architecture spec and provenance.

Shipped weights are safetensors files (fp16); the architecture config and the provenance live in
the file's metadata (their one home), and a sidecar ``<name>.json`` records the sha256 (and
evaluation tables a training run adds). Training checkpoints are ``.pt`` files of plain tensors
and dicts, loaded with ``weights_only=True``. ``load_model`` builds the model,
``inspect_checkpoint`` reports on a file without building it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ArchConfig, Provenance
from .errors import first_line, os_reason

if TYPE_CHECKING:
    from .schedule import FinalStage

FORMAT = "crm-cli/1"
DEFAULT_WEIGHTS_NAME = "crm_mobilenet_v2_gpu40_composites_avg25.safetensors"
# The sidecar entry naming the partner weights (partner_weights): other weights that run auto's region
# pass, and every refinement the weights were not paired for (photos under a size, fixed presets).
PARTNER_KEY = "partner"
# The sidecar entry naming the lone-stage weights (lone_stage_weights): other weights that run the final
# stage of auto's refinements whose plan is that stage alone (no coarse stage, no region pass).
LONE_STAGE_KEY = "lone_stage"


class WeightsError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match its recorded hash."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What is known about a loaded model's checkpoint."""

    path: str | None  # None for a model that did not come from a file
    sha256: str  # the file's sha256; "" when it was not read (load_model(verify=False), an in-memory model)
    config: ArchConfig
    provenance: dict[str, Any] = field(default_factory=dict)
    # How ``auto`` runs the final stage with these weights: the sidecar's "final_stage" entry over
    # the defaults (schedule.FinalStage).
    final_stage: FinalStage = field(default_factory=lambda: resolve_final_stage(None, "weights"))
    # True when ``sha256`` was checked against the sidecar's; False when there was no sidecar
    # hash to check it against (the file loaded unverified) or no check was asked for.
    verified: bool = False

    @classmethod
    def of_model(cls, model: Any) -> CheckpointInfo:
        """The info of an in-memory model (no file, no hash, no provenance)."""
        return cls(path=None, sha256="", config=model.config)


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
    """Write a shipped checkpoint (safetensors + sidecar JSON); returns its sha256.

    The config and ``provenance`` go into the file's metadata only; the sidecar holds the hash,
    the dtype, the parameter count and ``extra`` (e.g. evaluation tables).
    """
    import torch
    from safetensors.torch import save

    from .writing import write_atomic

    path = Path(path)
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
    # write_atomic honours the umask (safetensors' own save_file creates the file 0600, unreadable to
    # the other users of a shared machine) and never leaves a half-written file under the name.
    data = _with_sorted_header(save(state, metadata=metadata))
    write_atomic(path, data)
    digest = hashlib.sha256(data).hexdigest()
    sidecar = {
        "file": path.name,
        "sha256": digest,
        "format": FORMAT,
        "dtype": "float16" if half else "float32",
        "parameters": sum(v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k),
        **(extra or {}),
    }
    write_sidecar(path, sidecar)
    return digest


def _with_sorted_header(data: bytes) -> bytes:
    """safetensors bytes with their JSON header's keys sorted, so the same weights give the same file
    and sha256 on every save (safetensors writes its metadata in a random order)."""
    length = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + length]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header with spaces to 8-byte alignment
    return len(header).to_bytes(8, "little") + header + data[8 + length:]


def resolve_final_stage(hints: Any, where: str | Path) -> FinalStage:
    """The ``schedule.FinalStage`` that a sidecar's ``"final_stage"`` entry (None: none) asks for;
    a WeightsError naming ``where`` (the sidecar) when the entry is invalid."""
    from .schedule import FinalStage

    try:
        return FinalStage.from_hints(hints)
    except ValueError as exc:
        raise WeightsError(f"{where}: {exc}") from None


def write_sidecar(path: Path, sidecar: dict[str, Any]) -> None:
    """Write the sidecar JSON of the checkpoint ``path`` atomically (temp file, then rename)."""
    from .writing import write_atomic

    write_atomic(sidecar_path(Path(path)), (json.dumps(sidecar, indent=2) + "\n").encode())


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """The sidecar JSON of a checkpoint, or None when there is none; a WeightsError naming the
    sidecar when it is not a JSON object."""
    side = sidecar_path(Path(path))
    if not side.exists():
        return None
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{side}: the sidecar is not valid JSON ({exc})") from None
    except OSError as exc:  # a folder of that name, or a file this user may not read
        raise WeightsError(f"{side}: the sidecar cannot be read ({os_reason(exc)})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{side}: the sidecar must hold a JSON object, not {type(data).__name__}")
    return data


class WeightsSidecar:
    """A checkpoint's path with its sidecar (:func:`read_sidecar`) and its kind (:func:`checkpoint_kind`),
    each read on first use and then kept.

    The functions here that load or check a checkpoint (:func:`load_model`, :func:`read_spec`,
    :func:`checked_info`, :func:`inspect_checkpoint`, :func:`verify_sha256`, :func:`verify_encoder`,
    :func:`onnx_encoder_path`, :func:`inspect_encoder`) take one of these in place of its path. One
    model load passes the same one to every check that needs the sidecar or the kind (the backend
    choice, the hash, the final stage, the ONNX encoder's entry, the parse), so each is read once;
    a plain path gets a sidecar of its own. A failed read is not kept: the next use raises again.
    """

    def __init__(self, weights: Path | str) -> None:
        self.weights = Path(weights)

    @classmethod
    def of(cls, weights: Path | str | WeightsSidecar) -> WeightsSidecar:
        """``weights`` itself when it is a WeightsSidecar already, else a new one for that path."""
        return weights if isinstance(weights, WeightsSidecar) else cls(weights)

    @cached_property
    def data(self) -> dict[str, Any] | None:
        """The sidecar's JSON object, or None when there is none."""
        return read_sidecar(self.weights)

    @cached_property
    def kind(self) -> str:
        """The checkpoint's kind from its first bytes, :func:`checkpoint_kind`'s "safetensors" or "torch"."""
        return checkpoint_kind(self.weights)


def recorded_onnx_encoder(weights: Path | str | WeightsSidecar) -> Path | None:
    """Where the ONNX encoder that the sidecar of ``weights`` names lies (beside the weights), when
    the sidecar names one exported from these very weights (its ``weights_sha256``), whether or not
    the file is there; else None."""
    side = WeightsSidecar.of(weights)
    data = side.data or {}
    entry = data.get("onnx")
    if not isinstance(entry, dict) or not data.get("sha256") or entry.get("weights_sha256") != data["sha256"]:
        return None
    name = entry.get("file")
    if not isinstance(name, str) or not name or Path(name).name != name:  # a file beside the weights
        return None
    return side.weights.with_name(name)


def onnx_encoder_path(weights: Path | str | WeightsSidecar) -> Path | None:
    """The ONNX encoder that the sidecar of ``weights`` names (:func:`recorded_onnx_encoder`), when
    the file exists; else None."""
    path = recorded_onnx_encoder(weights)
    return path if path is not None and path.is_file() else None


@dataclass(frozen=True)
class PartnerEntry:
    """The partner weights that a sidecar names: ``path`` (beside the weights), the ``sha256`` it records
    for them, and ``below_side``: photos whose longer side is shorter than this many pixels are refined
    wholly by the partner (0: none)."""

    path: Path
    sha256: str
    below_side: int = 0


def partner_weights(weights: Path | str | WeightsSidecar) -> PartnerEntry | None:
    """The partner weights that the sidecar of ``weights`` names; None when it names none.

    The entry is ``"partner": {"file": NAME, "sha256": HEX, "below_side": N}`` (``below_side``
    optional, 0 by default), NAME a file beside ``weights``. The partner runs ``auto``'s region pass
    (the coarse stages that decide whether whole regions belong), and all of every refinement that is
    not ``auto``'s own schedule with its guard (``engine.Refiner._refines_itself``) or whose photo's
    longer side is under N px; the weights run the rest. Raises a WeightsError naming the sidecar when
    the entry is malformed or the file is missing: the weights were chosen to run with their
    partner, so running without it would be another model.
    """
    return _named_weights(WeightsSidecar.of(weights), PARTNER_KEY, "partner")


def lone_stage_weights(weights: Path | str | WeightsSidecar) -> PartnerEntry | None:
    """The lone-stage weights that the sidecar of ``weights`` names; None when it names none.

    The entry is ``"lone_stage": {"file": NAME, "sha256": HEX}``, NAME a file beside ``weights``.
    Where ``weights`` refine a photo themselves with ``auto``'s own schedule and guard, and the plan is
    the final stage alone (no coarse stage fits or was chosen, no region pass), the lone-stage weights
    run that stage, with their own sidecar's ``final_stage`` certainty and gate
    (``engine.Refiner._lone_stage_for``). A malformed entry or a missing file is a WeightsError, as
    for the partner (:func:`partner_weights`).
    """
    return _named_weights(WeightsSidecar.of(weights), LONE_STAGE_KEY, "lone-stage")


def _named_weights(side: WeightsSidecar, key: str, role: str) -> PartnerEntry | None:
    """The entry ``key`` of the sidecar of ``side.weights`` (other weights, of the ``role`` named in
    messages), read as :func:`partner_weights` describes; only the partner's may hold ``below_side``."""
    entry = (side.data or {}).get(key)
    if entry is None:
        return None
    where = sidecar_path(side.weights)
    name = entry.get("file") if isinstance(entry, dict) else None
    digest = entry.get("sha256") if isinstance(entry, dict) else None
    below = entry.get("below_side", 0) if isinstance(entry, dict) else None
    sided = key == PARTNER_KEY
    # Only the lone-stage entry refuses other keys: a "below_side" there would look like it works.
    unknown = not sided and isinstance(entry, dict) and bool(set(entry) - {"file", "sha256"})
    if (not isinstance(name, str) or not name or Path(name).name != name or not isinstance(digest, str)
            or not digest or not isinstance(below, int) or isinstance(below, bool) or below < 0 or unknown):
        shape = ', "below_side": a whole number of pixels >= 0 (optional)' if sided else ""
        raise WeightsError(f'{where}: "{key}" must be {{"file": a file name beside the weights, '
                           f'"sha256": its hex digest{shape}}}')
    path = side.weights.with_name(name)
    if not path.is_file():
        raise WeightsError(f"{where}: the {role} weights it names are missing: {path} (copy them beside "
                           f"{side.weights.name}, with their .json and .encoder.onnx)")
    return PartnerEntry(path, digest, below)


def check_partner_digest(path: Path, digest: str, expected: str, weights: Path) -> None:
    """A WeightsError when the partner weights ``path`` (whose sha256 is ``digest``) are not the ones
    the sidecar of ``weights`` records (``expected``)."""
    if digest != expected:
        raise WeightsError(_hash_mismatch(path, digest, expected, weights))


def verify_sha256(weights: Path | str | WeightsSidecar) -> str:
    """Check a checkpoint against its sidecar's sha256 (when present); returns the file's sha256."""
    side = WeightsSidecar.of(weights)
    path = side.weights
    digest = sha256_file(path)
    data = side.data
    if data is not None and data.get("sha256") and data["sha256"] != digest:
        raise WeightsError(_hash_mismatch(path, digest, data["sha256"], path))
    return digest


def verify_encoder(path: Path, weights: Path | str | WeightsSidecar) -> tuple[bytes, str]:
    """Read an ONNX encoder once and check its bytes against the sha256 that the sidecar of ``weights``
    records for it; WeightsError if they differ. Returns those bytes and their hex sha256 (also where the
    sidecar records no sha256): a session built from them runs what was checked, whatever happens to the
    file since, and the runner keeps the digest without hashing them again."""
    side = WeightsSidecar.of(weights)
    entry = (side.data or {}).get("onnx")
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected and digest != expected:
        raise WeightsError(_hash_mismatch(path, digest, expected, side.weights))
    return data, digest


def _hash_mismatch(path: Path, digest: str, expected: Any, weights: Path) -> str:
    """The one-line reason a file (the weights, or their ONNX encoder) does not match the sha256
    that the sidecar of ``weights`` records for it."""
    return (f"{path}: sha256 {digest[:12]}... does not match {sidecar_path(weights).name} "
            f"({str(expected)[:12]}...); the file is corrupt or was replaced")


SAFETENSORS_KIND = "safetensors"
TORCH_KIND = "torch"
_PT_KEYS = ("config", "model")


def weights_not_found(path: Path) -> WeightsError:
    """The error of every command whose weights are not there; it says when the path is the value of
    CRM_WEIGHTS (which the CLI's --weights and default_weights_path take), as a user who typed no
    path would not know where it came from."""
    env = os.environ.get("CRM_WEIGHTS")
    if env and os.path.abspath(env) == os.path.abspath(path):
        return WeightsError(f"weights not found: {path} (from CRM_WEIGHTS; set it to the path of a checkpoint, "
                            "or unset it for the shipped weights)")
    return WeightsError(f"weights not found: {path} (give the path of a checkpoint, or set CRM_WEIGHTS)")


def checkpoint_kind(path: Path) -> str:
    """"safetensors" or "torch" from a checkpoint's first bytes (not its name); a one-line
    WeightsError for a missing path, a directory or any other file."""
    path = Path(path)
    if not path.exists():
        raise weights_not_found(path)
    if path.is_dir():
        raise WeightsError(f"{path}: is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    if len(head) < 9:
        raise WeightsError(f"{path}: not a crm checkpoint (the file is {len(head)} bytes long)")
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size:
        return SAFETENSORS_KIND
    # torch.save: a zip archive, or the legacy pickle format (protocol 2+ starts with 0x80).
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return TORCH_KIND
    raise WeightsError(f"{path}: not a crm checkpoint (neither a .safetensors file nor a torch.save archive)")


def _read_spec(path: Path, kind: str,
               load_tensors: bool) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """(config dict, provenance, state dict or None) of a checkpoint of ``kind`` (:func:`checkpoint_kind`),
    checking its crm format.

    Every problem is a one-line WeightsError naming the file: a wrong format tag or a missing key.
    """
    state: dict[str, Any] | None = None
    if kind == SAFETENSORS_KIND:
        from safetensors import safe_open

        try:
            # "np" when only the metadata is read: the "pt" framework imports torch (1.5-2 s).
            with safe_open(str(path), framework="pt" if load_tensors else "np") as handle:
                metadata = handle.metadata() or {}
                if load_tensors and metadata.get("format") == FORMAT:
                    state = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # safetensors raises its own SafetensorError for bad headers
            raise WeightsError(f"{path}: not a valid .safetensors file ({exc})") from None
        if "format" not in metadata:
            raise WeightsError(f"{path}: not a crm checkpoint (a .safetensors file without crm's 'format' tag)")
        if metadata["format"] != FORMAT:
            raise WeightsError(f"{path}: wrong format tag {metadata['format']!r} (this crm reads {FORMAT!r})")
        if "config" not in metadata:
            raise WeightsError(f"{path}: missing key 'config' in the checkpoint metadata")
        try:
            config = json.loads(metadata["config"])
            provenance = json.loads(metadata.get("provenance", "{}"))
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{path}: the checkpoint metadata is not valid JSON ({exc})") from None
        return config, provenance, state
    import pickle

    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message is a page about weights_only; what the user needs is this:
        raise WeightsError(f"{path}: not a crm checkpoint (a torch file holding Python objects other than "
                           "tensors and plain containers)") from None
    except Exception as exc:  # truncated zip, bad pickle
        raise WeightsError(f"{path}: not a readable torch checkpoint ({first_line(exc)})") from None
    if not isinstance(payload, dict):
        raise WeightsError(f"{path}: not a crm checkpoint (it holds a {type(payload).__name__}, "
                           "not a dict with 'config' and 'model')")
    for key in _PT_KEYS:
        if key not in payload:
            raise WeightsError(f"{path}: missing key {key!r} (a crm training checkpoint has "
                               f"{' and '.join(repr(k) for k in _PT_KEYS)})")
    if not isinstance(payload["config"], dict) or not isinstance(payload["model"], dict):
        raise WeightsError(f"{path}: 'config' and 'model' must be dicts in a crm checkpoint")
    provenance = payload.get("provenance", {})
    return payload["config"], provenance if isinstance(provenance, dict) else {}, payload["model"]


@dataclass(frozen=True)
class _Spec:
    """A checkpoint's checked contents (see :func:`_checked_spec`)."""

    path: Path
    sha256: str  # "" when not read
    verified: bool  # sha256 matched the sidecar's
    config_dict: dict[str, Any]
    config: ArchConfig
    provenance: dict[str, Any]
    state: dict[str, Any] | None  # None unless the tensors were asked for
    sidecar: dict[str, Any] | None  # None when there is none


def _checked_spec(weights: Path | str | WeightsSidecar, *, load_tensors: bool, verify: bool) -> _Spec:
    """Read a checkpoint that must exist, optionally verified against its sidecar's sha256, and parse
    its architecture config; every problem is a one-line WeightsError."""
    side = WeightsSidecar.of(weights)
    path = side.weights
    # The kind first: a directory or a non-checkpoint (the sidecar itself) fails here, not while hashing.
    kind = side.kind
    digest = verify_sha256(side) if verify else ""
    verified = verify and bool((side.data or {}).get("sha256"))
    config_dict, provenance, state = _read_spec(path, kind, load_tensors=load_tensors)
    if not isinstance(config_dict, dict):
        raise WeightsError(f"{path}: the checkpoint's architecture config is not a JSON object")
    try:
        config = ArchConfig.from_dict(config_dict)
    except (TypeError, ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: the checkpoint's architecture config is invalid ({exc})") from None
    return _Spec(path, digest, verified, config_dict, config, provenance, state, side.data)


def read_spec(path: Path | str | WeightsSidecar) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, provenance) stored inside a checkpoint, without building the model or reading tensors
    (safetensors). Raises WeightsError with a one-line reason for anything that is not a crm checkpoint."""
    spec = _checked_spec(path, load_tensors=False, verify=False)
    return spec.config_dict, spec.provenance


def load_model(path: Path | str | WeightsSidecar, verify: bool = True) -> tuple[Any, CheckpointInfo]:
    """Rebuild a CRMNet from a checkpoint (.safetensors or training .pt) in eval mode.

    The kind is read from the file's first bytes, not its name. Returns (model, CheckpointInfo).
    Raises WeightsError with one line naming the file for anything that is not a loadable crm
    checkpoint.
    """
    spec = _checked_spec(path, load_tensors=True, verify=verify)
    return _build_model(spec), _info_of(spec)


def _as_float32(tensor: Any) -> Any:
    """A floating-point tensor as float32 (others as they are), converted by NumPy: torch's own
    half-to-float conversion on the CPU asks cpuinfo for the CPU's features and raises "Failed to
    initialize cpuinfo!" where /proc is hidden (some sandboxes), which read as weights that do not fit."""
    import torch

    if not tensor.is_floating_point() or tensor.dtype == torch.float32:
        return tensor
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits shifted into a float32's top half
        return torch.from_numpy((tensor.view(torch.int16).numpy().astype("int32") << 16).view("float32"))
    return torch.from_numpy(tensor.numpy().astype("float32"))


def _build_model(spec: _Spec) -> Any:
    """The CRMNet of a checkpoint read with its tensors, loaded strictly, in eval mode; a one-line
    WeightsError when the tensors do not fit the recorded architecture."""
    from .model import build_crm

    path, config, state = spec.path, spec.config, spec.state
    assert state is not None
    try:
        state = {key: _as_float32(value) for key, value in state.items()}
        model = build_crm(config)
        # strict=False reports key mismatches as lists (named below); shape mismatches still raise.
        outcome = model.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:  # shape mismatch, unknown encoder
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if "size mismatch" in line), lines[-1] if lines else repr(exc))
        raise WeightsError(f"{path}: weights do not fit their recorded architecture ({reason})") from None
    for problem, keys in (("missing key", outcome.missing_keys), ("unexpected key", outcome.unexpected_keys)):
        if keys:
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            raise WeightsError(f"{path}: {problem} {keys[0]!r}{more} in the weights for its architecture")
    return model.eval()


def _info_of(spec: _Spec) -> CheckpointInfo:
    """The CheckpointInfo of a checked checkpoint; a bad "final_stage" entry fails here, naming the
    sidecar, before any image is read."""
    final_stage = resolve_final_stage((spec.sidecar or {}).get("final_stage"), sidecar_path(spec.path))
    return CheckpointInfo(path=str(spec.path), sha256=spec.sha256, config=spec.config, provenance=spec.provenance,
                          final_stage=final_stage, verified=spec.verified)


def checked_info(path: Path | str | WeightsSidecar) -> CheckpointInfo:
    """What :func:`load_model` checks and returns as info (sha256 against the sidecar, format, config,
    final stage), without reading tensors or importing torch (safetensors files)."""
    return _info_of(_checked_spec(path, load_tensors=False, verify=True))


def inspect_checkpoint(path: Path | str | WeightsSidecar, build: bool = False, *,
                       follow_partner: bool = True) -> dict[str, Any]:
    """What is known about a checkpoint, without building the model unless ``build``; never raises
    for a bad file. The checkpoint is parsed once (a .pt is one ``torch.load``; hashing reads its
    bytes separately), its sidecar read once.

    Keys: ``path``, ``exists``, ``sha256``, ``sha256_ok`` (against the sidecar; None without one),
    ``sidecar``, ``config``, ``provenance``, ``final_stage`` (how ``auto`` runs the final stage with
    these weights, ``schedule.FinalStage`` as a dict), ``onnx`` (:func:`inspect_encoder`),
    ``partner`` (:func:`inspect_partner`; None without ``follow_partner``), ``lone_stage``
    (:func:`inspect_lone_stage`; likewise) and ``error``, a one-line reason when the file is not a
    usable crm checkpoint: a hash that does not match, an exported encoder the onnx backend would take
    but whose hash does not match, partner or lone-stage weights that are missing, not the ones
    recorded or not usable themselves, and with ``build`` tensors that do not
    load strictly into their recorded architecture.
    """
    side = WeightsSidecar.of(path)
    path = side.weights
    report: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "sha256": None, "sha256_ok": None,
                              "sidecar": None, "config": None, "provenance": None, "final_stage": None,
                              "onnx": None, "partner": None, "lone_stage": None, "error": None}
    if not report["exists"]:
        if path.exists():
            report["error"] = f"{path}: is a directory, not a checkpoint file"
        return report
    try:
        report["sha256"] = digest = sha256_file(path)
        data = side.data
        recorded = (data or {}).get("sha256")
        if data is not None:
            report["sidecar"] = str(sidecar_path(path))
            report["sha256_ok"] = recorded == digest if recorded else None
        # With ``build``, the tensors are read with the spec, in one pass: a .pt holds both in one
        # pickle, which reading the spec and then loading the model unpickled twice.
        spec = _checked_spec(side, load_tensors=build and report["sha256_ok"] is not False, verify=False)
        report["config"], report["provenance"] = spec.config_dict, spec.provenance
        report["final_stage"] = asdict(_info_of(spec).final_stage)
        report["onnx"] = inspect_encoder(side)
        # A partner's own partner entry is not followed: the Refiner never loads it (nor loops on it).
        report["partner"] = partner = inspect_partner(side, build=build) if follow_partner else None
        report["lone_stage"] = lone = inspect_lone_stage(side, build=build) if follow_partner else None
        if report["sha256_ok"] is False:
            report["error"] = _hash_mismatch(path, digest, recorded, path)  # what verify_sha256 raises
        elif report["onnx"] is not None and report["onnx"]["error"]:
            report["error"] = report["onnx"]["error"]
        elif partner is not None and partner["error"]:
            report["error"] = partner["error"]
        elif lone is not None and lone["error"]:
            report["error"] = lone["error"]
        elif build:
            _build_model(spec)  # the hash was compared above
    except WeightsError as exc:
        report["error"] = str(exc)
    except (OSError, ValueError) as exc:  # an unreadable file or a corrupt sidecar
        report["error"] = f"{path}: {exc}"
    return report


def inspect_encoder(weights: Path | str | WeightsSidecar) -> dict[str, Any] | None:
    """The ONNX encoder that the sidecar of ``weights`` names (``onnx_export``), or None when it names none.

    Keys: ``path``, ``exists``, ``sha256_ok`` (None when the file is missing), ``used`` (whether
    the onnx backend takes it: :func:`onnx_encoder_path`) and ``error``, a one-line
    reason when it is used but its hash does not match (every onnx run would refuse it).
    """
    side = WeightsSidecar.of(weights)
    weights = side.weights
    entry = (side.data or {}).get("onnx")
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
        return None
    path = weights.with_name(Path(entry["file"]).name)
    used = onnx_encoder_path(side) is not None
    report: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "sha256_ok": None, "used": used,
                              "error": None}
    expected = entry.get("sha256")
    if report["exists"] and expected:
        digest = sha256_file(path)
        report["sha256_ok"] = digest == expected
        if used and digest != expected:
            report["error"] = (_hash_mismatch(path, digest, expected, weights)
                               + " (export it again, or use the torch backend)")
    return report


def inspect_partner(weights: Path | str | WeightsSidecar, build: bool = False) -> dict[str, Any] | None:
    """The partner weights that the sidecar of ``weights`` names (:func:`partner_weights`), or None
    when it names none.

    Keys: ``path`` (None when the entry is malformed), ``below_side``, ``sha256_ok`` (None when the
    file cannot be read) and ``error``, the one-line reason every load of ``weights`` would fail with:
    the entry's, or the partner's own (:func:`inspect_checkpoint` of it, with ``build``: its sidecar's
    hash, its exported encoder's, its tensors).
    """
    return _inspect_named(WeightsSidecar.of(weights), PARTNER_KEY, build)


def inspect_lone_stage(weights: Path | str | WeightsSidecar, build: bool = False) -> dict[str, Any] | None:
    """The lone-stage weights that the sidecar of ``weights`` names (:func:`lone_stage_weights`), or
    None when it names none; the keys of :func:`inspect_partner`, with ``final_stage`` (theirs, as a
    dict) in place of ``below_side``."""
    return _inspect_named(WeightsSidecar.of(weights), LONE_STAGE_KEY, build)


def _inspect_named(side: WeightsSidecar, key: str, build: bool) -> dict[str, Any] | None:
    """:func:`inspect_partner` or :func:`inspect_lone_stage`, by the sidecar entry ``key``."""
    if (side.data or {}).get(key) is None:
        return None
    sided = key == PARTNER_KEY
    report: dict[str, Any] = {"path": None, ("below_side" if sided else "final_stage"): None, "sha256_ok": None,
                              "error": None}
    try:
        entry = partner_weights(side) if sided else lone_stage_weights(side)
        assert entry is not None  # the entry is there
        report["path"] = str(entry.path)
        if sided:
            report["below_side"] = entry.below_side
        # Their own report hashes the file once; that digest is the one the entry names. Their own
        # partner and lone-stage entries are not followed: the Refiner never loads them (nor loops).
        own = inspect_checkpoint(entry.path, build=build, follow_partner=False)
        if not sided:
            report["final_stage"] = own["final_stage"]
        digest = own["sha256"]
        if digest is None:  # the file could not be read
            report["error"] = own["error"]
            return report
        report["sha256_ok"] = digest == entry.sha256
        check_partner_digest(entry.path, digest, entry.sha256, side.weights)
        report["error"] = own["error"]
    except WeightsError as exc:
        report["error"] = str(exc)
    return report
