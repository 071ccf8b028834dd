"""``crm info``: versions, devices and the weights in use (with their hash check)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .failures import torch_import_problem
from .options import Backend, BackendOpt, DeviceOpt, JsonOpt, ThreadsOpt, WeightsOpt
from .output import console, emit_json, fail, printable, show_library_warnings

if TYPE_CHECKING:
    from ..checkpoint import WeightsSidecar

HELP = """Show versions, devices and the weights in use.

Prints the crm, Python, torch, CUDA and ONNX Runtime versions, the devices available, the device
and backend the other commands take (--device, --backend and --threads, or CRM_DEVICE, CRM_BACKEND
and CRM_THREADS, as they read them; 'auto' by default), and the weights: path, sha256 (checked
against the sidecar JSON), architecture, provenance, how 'auto' runs the final stage with them (the
sidecar's final_stage over the defaults), and the ONNX encoder exported from them (its sha256
checked too).
Exits 1 when the weights are not a usable crm checkpoint: a file given with --weights or CRM_WEIGHTS
that is not there, a hash that does not match, tensors that do not load into their recorded
architecture, or an exported encoder that does not match (--json still prints the report, with
"status": "failed" and the reason in its weights' "error"). Exits 1 too when torch does not import:
the report then shows what is known without it (no tensors are loaded), with the import error
(--json: in "torch_error"), and when the device asked for is missing or the backend cannot run the
weights there (--json: in "settings_error").

Example: crm info --json"""


def _cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux, where platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_only() -> list[dict[str, Any]]:
    """The devices list when torch does not import: the CPU, which the onnx backend runs on."""
    return [{"id": "cpu", "name": _cpu_name(), **_cpu_quota()}]


def _cpu_quota() -> dict[str, Any]:
    """The CPU entry's ``cpu_quota`` (CPUs a container's cgroup allows on average), when one is set."""
    from ..containers import cpu_quota

    quota = cpu_quota()
    return {} if quota is None else {"cpu_quota": round(quota, 3)}


def _devices(threads: int = 0) -> list[dict[str, Any]]:
    """Each available device with a readable name (GPU model and memory for CUDA); the CPU's threads
    are those ``threads`` (--threads, CRM_THREADS; 0: crm's default) gives."""
    import torch

    from ..devices import available_devices

    found = []
    for device in available_devices():
        entry: dict[str, Any] = {"id": device}
        if device.startswith("cuda"):
            index = int(device.partition(":")[2] or 0)
            props = torch.cuda.get_device_properties(index)
            entry["name"] = props.name
            entry["memory_gib"] = round(props.total_memory / 2**30, 1)
        elif device == "mps":
            entry["name"] = "Apple Metal (MPS)"
        else:
            from ..runtime import usable_threads

            entry["name"] = _cpu_name()
            entry["threads"] = usable_threads(threads or None) or torch.get_num_threads()  # what crm would use
            entry.update(_cpu_quota())
        found.append(entry)
    return found


def _default_device(name: str = "auto") -> str:
    """The device ``name`` (--device, CRM_DEVICE) gives; DeviceError when it is missing."""
    import torch

    from ..devices import resolve_device

    device = resolve_device(name)
    if device.type == "cuda":
        return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"
    return str(device)


def gather_info(weights: Path | None, device: str = "auto", backend: str = "auto", threads: int = 0) -> dict[str, Any]:
    """The whole ``crm info`` report as plain JSON-able data; ``weights``: the ``--weights`` value (None:
    the user named none, and ``checkpoint.default_weights_path()`` is reported: CRM_WEIGHTS when set,
    else the shipped weights). ``device``, ``backend`` and ``threads``: the values every other command
    would take (their options, or CRM_DEVICE, CRM_BACKEND and CRM_THREADS); a device that is missing or
    a backend that cannot run the weights there is the report's ``"settings_error"`` and fails it.

    When torch does not import, ``torch_error`` says why, torch's versions are None, the CPU is the
    one device, the weights are checked without loading their tensors, and the default backend is
    "onnx" when the weights run on it, else None; ``status`` is "failed"."""
    from .. import __version__
    from ..checkpoint import WeightsError, WeightsSidecar, default_weights_path, inspect_checkpoint, weights_not_found

    path = Path(weights) if weights is not None else default_weights_path()
    sidecar = WeightsSidecar(path)  # read once for the backend choice and the report
    # Before torch loads, as in `crm refine`: with torch loaded, "auto" asks torch about GPUs
    # instead of looking for driver files (devices.accelerator_possible), which can differ.
    settings_error = None
    try:
        backend = _default_backend(sidecar, device, backend)
    except (WeightsError, ValueError, OSError) as exc:  # --backend onnx cannot run them (there)
        settings_error, backend = str(exc), None
    torch_error = torch_import_problem()
    if torch_error is None:
        import torch

        versions = {"torch": torch.__version__, "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
        report = inspect_checkpoint(sidecar, build=True)
    else:
        versions = {"torch": None, "cuda": None, "cudnn": None}
        try:
            report = inspect_checkpoint(sidecar)  # the header and hashes: no tensors, which torch loads
        except Exception:  # noqa: BLE001 - a torch training checkpoint (.pt), which only torch reads (a broken
            # torch fails in its own ways: an OSError of a native library, an AttributeError of NumPy's)
            report = _unread_report(path, f"{path}: a torch checkpoint, which only torch reads")
    _check_encoder_loads(report)
    # Weights the user named (--weights, or CRM_WEIGHTS, which typer resolves into it) that are not
    # there are unusable, as every refining command says; the shipped ones missing from a source
    # checkout are only reported.
    if not report["exists"] and not report["error"] and weights is not None:
        report["error"] = str(weights_not_found(path))
    usable = report["exists"] and not report["error"] and (torch_error is None or backend == "onnx")
    chosen_device = None
    if torch_error is None:
        from ..devices import DeviceError

        try:
            chosen_device = _default_device(device)
        except DeviceError as exc:
            settings_error = settings_error or str(exc)
    elif usable:
        chosen_device = "cpu"  # without torch, only the onnx backend runs, on the CPU
    return {
        "version": __version__,
        "python": platform.python_version(),
        **versions,
        "torch_error": torch_error,
        "onnxruntime": _onnxruntime_version(),
        "devices": _devices(threads) if torch_error is None else _cpu_only(),
        "default_device": chosen_device,
        # None: no backend runs these weights (missing, not a usable checkpoint, or torch's without torch).
        "default_backend": backend if usable else None,
        "settings_error": settings_error,
        "weights": report,
        "status": "failed" if report["error"] or torch_error or settings_error else "ok",
    }


def _unread_report(path: Path, error: str) -> dict[str, Any]:
    """A weights report (``checkpoint.inspect_checkpoint``'s keys) of a file that could not be read."""
    return {"path": str(path), "exists": path.is_file(), "sha256": None, "sha256_ok": None, "sidecar": None,
            "config": None, "provenance": None, "final_stage": None, "onnx": None, "partner": None,
            "lone_stage": None, "error": error}


def _check_encoder_loads(report: dict[str, Any]) -> None:
    """Load the exported encoder that the onnx backend would take into ONNX Runtime, as every onnx
    run does: one it cannot load (cut short with no sha256 recorded, or from a newer exporter) made
    `crm refine` fail while `crm info` said it was fine. The reason goes in the report's ``error``
    and the encoder's."""
    encoder = report.get("onnx")
    if report["error"] or not encoder or not encoder["used"] or not encoder["exists"]:
        return
    from ..checkpoint import WeightsError
    from ..onnx_runner import open_encoder_session

    try:
        open_encoder_session(encoder["path"], 1)  # one thread: the file is only loaded
    except ImportError:  # no ONNX Runtime: nothing to check the encoder with
        return
    except WeightsError as exc:
        encoder["error"] = report["error"] = str(exc)


def _onnxruntime_version() -> str | None:
    """ONNX Runtime's version, or None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def _default_backend(sidecar: WeightsSidecar, device: str = "auto", backend: str = "auto") -> str:
    """The backend every command takes with the weights of ``sidecar`` under ``--backend`` ``backend``
    and ``--device`` ``device`` (engine.choose_backend). ``--backend onnx`` that cannot run raises its
    ValueError (WeightsError); under auto a problem of the weights is the report's, and torch is named."""
    from ..checkpoint import WeightsError
    from ..engine import choose_backend

    try:
        return "onnx" if choose_backend(sidecar, device=device, backend=backend) is not None else "torch"
    except (WeightsError, OSError, ValueError, ImportError):  # ImportError: torch, to ask about GPUs
        if backend == "onnx":  # asked for: what stops it is the report's settings error
            raise
        return "torch"


def _print_table(data: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..errors import count_noun

    def compact(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, dict):
            items = (f"{key}={compact(item)}" for key, item in value.items() if item not in ("", None))
            return ", ".join(items)
        if isinstance(value, list):
            return ",".join(str(item) for item in value)
        return str(value)

    # Each verdict (matches, does NOT match, missing) starts its cell on a line of its own, before the
    # hash or path it is about, so that a long path in a narrow terminal cannot wrap the verdict apart.
    table = Table(title="crm info", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("version", "python", "torch", "cuda", "cudnn", "onnxruntime"):
        if key == "torch" and data["torch_error"]:
            table.add_row(key, f"[red]does not import[/] ({escape(printable(data['torch_error']))})")
        else:
            table.add_row(key, compact(data[key]))
    devices = []
    for device in data["devices"]:
        extra = [f"{device['memory_gib']} GiB"] if "memory_gib" in device else []
        extra += [count_noun(device["threads"], "thread")] if "threads" in device else []
        extra += [f"CPU quota {device['cpu_quota']:g}"] if "cpu_quota" in device else []
        devices.append(escape(f"{device['id']}: {', '.join([device['name'], *extra])}"))
    table.add_row("devices", "\n".join(devices))
    table.add_row("default device", compact(data["default_device"]))
    table.add_row("default backend", compact(data["default_backend"]))
    if data["settings_error"]:
        table.add_row("", f"[red]{escape(printable(data['settings_error']))}[/]")
    weights = data["weights"]
    table.add_row("weights", escape(printable(weights["path"])))
    if not weights["exists"]:
        table.add_row("", "[red]missing[/] (pass --weights PATH or set CRM_WEIGHTS)")
    else:
        ok = {True: "[green]matches sidecar[/]", False: "[red]does NOT match sidecar[/]",
              None: "no sidecar hash: not verified"}
        table.add_row("sha256", f"{ok[weights['sha256_ok']]}\n{weights['sha256']}")
        table.add_row("architecture", escape(compact(weights["config"])))
        table.add_row("provenance", escape(compact(weights["provenance"])))
        table.add_row("final stage", escape(compact(weights["final_stage"])))
        table.add_row("onnx encoder", _encoder_text(weights["onnx"]))
        table.add_row("partner", _partner_text(weights.get("partner")))
        if weights.get("lone_stage") is not None:
            lone = weights["lone_stage"]
            table.add_row("lone stage", _lone_stage_text(lone, compact(lone["final_stage"])))
    console.print(table)


def _partner_text(partner: dict[str, Any] | None) -> str:
    """The table's line for the partner weights (``checkpoint.inspect_partner``), as Rich markup."""
    from rich.markup import escape

    if partner is None:
        return "none: these weights run every stage"
    if partner["error"]:
        return f"[red]{escape(partner['error'])}[/]"
    below = f", photos under {partner['below_side']} px" if partner["below_side"] else ""
    return (f"[green]sha256 matches sidecar[/]; runs auto's region pass{below}, fixed presets and ratios, "
            f"and --no-guard\n{escape(partner['path'])}")


def _lone_stage_text(lone: dict[str, Any], final_stage: str) -> str:
    """The table's line for the lone-stage weights (``checkpoint.inspect_lone_stage``), their
    ``final_stage`` written out, as Rich markup."""
    from rich.markup import escape

    if lone["error"]:
        return f"[red]{escape(lone['error'])}[/]"
    return (f"[green]sha256 matches sidecar[/]; runs auto's final stage where it runs alone "
            f"(final stage {escape(final_stage)})\n{escape(lone['path'])}")


def _encoder_text(encoder: dict[str, Any] | None) -> str:
    """The table's line for the exported ONNX encoder (``checkpoint.inspect_encoder``), as Rich markup."""
    from rich.markup import escape

    if encoder is None:
        return "none recorded in the sidecar"
    if not encoder["exists"]:
        status = "[red]missing[/]"
    elif encoder["sha256_ok"] is False:
        status = "[red]sha256 does NOT match sidecar[/]"
    else:
        status = "[green]sha256 matches sidecar[/]" if encoder["sha256_ok"] else "no sha256 recorded"
        if encoder.get("error"):
            status += ", [red]ONNX Runtime cannot load it[/]"
    if encoder["exists"] and not encoder["used"]:
        status += ", not used: the sidecar does not tie it to these weights' sha256"
    return f"{status}\n{escape(encoder['path'])}"


def info(weights: WeightsOpt = None, device: DeviceOpt = "auto", backend: BackendOpt = Backend.auto,
         threads: ThreadsOpt = 0, as_json: JsonOpt = False) -> None:
    """Show versions, devices and weights; exit 1 when the weights file is not a usable checkpoint,
    torch does not import, or the device or backend asked for cannot run."""
    show_library_warnings()  # "warning:" lines, as the other commands show them (a thread count capped)
    data = gather_info(weights, device, backend.value, threads)
    problems = [f"torch does not import ({data['torch_error']})"] if data["torch_error"] else []
    problems += [data["settings_error"]] if data["settings_error"] else []
    problems += [data["weights"]["error"]] if data["weights"]["error"] else []
    problems = list(dict.fromkeys(problems))  # --backend onnx with missing weights says the same twice
    if as_json:
        try:
            emit_json(data)
        except typer.Exit:  # stdout could not take the record (its line is printed): the causes follow
            if not problems:
                raise
    else:
        _print_table(data)
    for problem in problems[:-1]:
        fail(problem)  # printed; the last one's Exit is raised
    if problems:
        raise fail(problems[-1])


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("info", help=HELP, short_help="Versions, devices and the weights in use.")(info)
