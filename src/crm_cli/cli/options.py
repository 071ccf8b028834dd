"""The option types the commands share, their parsers and checks, and ``RefinerOptions``/``refiner_options``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..config import BACKEND_CHOICES, MODES, OUTPUT_KINDS, PRECISION_NAMES
from ..errors import os_reason
from ..presets import PRESETS, split_items
from .failures import TorchImportError, torch_import_failure
from .output import click_module, fail, require_stdout, say, warnings_about_no_image
from .stops import stop_behind, stops_cleanly


def choice_enum(name: str, choices: Iterable[str]) -> Any:
    """A str Enum of the library's own names, so typer lists exactly what the library accepts."""
    return Enum(name, {choice: choice for choice in choices}, type=str)


Precision = choice_enum("Precision", PRECISION_NAMES)
Backend = choice_enum("Backend", BACKEND_CHOICES)
PresetName = choice_enum("PresetName", PRESETS)
OutputKind = choice_enum("OutputKind", OUTPUT_KINDS)
Mode = choice_enum("Mode", MODES)
# photo_depth.PHOTO_BITS_CHOICES with "auto" first (photo_depth is not imported here: it loads NumPy and Pillow).
PhotoBits = choice_enum("PhotoBits", ("auto", "8", "10", "12", "14", "16"))


def list_items(value: str, option: str, what: str) -> list[str]:
    """The comma-separated items of ``value`` (presets.split_items); a usage error naming ``option``
    for an empty item."""
    try:
        return split_items(value, what)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"'{option}'") from None


def parse_labels(value: str | None, mode: str | None = None) -> list[int] | None:
    """``"3,7"`` -> [3, 7]. With ``mode`` "binary" any ids are a usage error: they pick labels of a
    label map, and --mode binary refines every mask as one object (with ``auto`` the mask decides once
    read, and a mask refined as one object ignores them with a warning)."""
    if value is None:
        return None
    if mode == "binary":
        raise typer.BadParameter("label ids pick labels of a label map, but --mode binary refines the mask as one "
                                 "object; drop one of the two", param_hint="'--labels'")
    items = list_items(value, "--labels", "label ids")
    try:
        ids = [int(item) for item in items]
    except ValueError:
        ids = []
    if len(ids) != len(items) or min(ids) < 0:
        raise typer.BadParameter(f"label ids must be comma-separated integers >= 0, got {value!r}",
                                 param_hint="'--labels'")
    return ids


def finite_option(ctx: Any, param: Any, value: float | None) -> float | None:
    """Click callback for a float option: NaN passes click's range checks (every comparison with it
    is false), and infinity those without a maximum; no option means anything by either, so both are
    refused here."""
    import math

    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a {'number' if math.isnan(value) else 'finite number'}",
                                 ctx=ctx, param=param)
    return value


def parse_device(value: Any) -> str:
    """The ``--device`` (and CRM_DEVICE) parser: auto, cpu, cuda, cuda:N or mps, in any case
    (devices.device_name); anything else is a usage error. Whether the device is present is known
    only once torch is imported, when the model loads (a DeviceError, exit 1)."""
    from ..devices import DeviceError, device_name

    try:
        return device_name(str(value))
    except DeviceError as exc:
        raise typer.BadParameter(str(exc), param_hint=_device_hint()) from None


def _device_hint() -> str:
    """How a bad device value names where it came from: ``-d`` / ``--device``, and CRM_DEVICE when
    the value was that variable's (the user may have typed no --device at all)."""
    hint = "'-d' / '--device'"
    ctx = click_module("globals").get_current_context(silent=True)
    if ctx is None:  # called outside a command (a test, the API)
        return hint
    source = ctx.get_parameter_source("device")
    if source is not None and source.name == "ENVIRONMENT":
        hint += " (env var: 'CRM_DEVICE')"
    return hint


DeviceOpt = Annotated[
    str,
    typer.Option("--device", "-d", parser=parse_device, envvar="CRM_DEVICE", rich_help_panel="Compute",
                 metavar="<auto|cpu|cuda|cuda:N|mps>", help="auto: CUDA, else MPS, else CPU; cuda:N: GPU number N."),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", envvar="CRM_WEIGHTS", dir_okay=False, rich_help_panel="Compute",
                 metavar="FILE", help="Checkpoint file [default: the shipped weights]."),
]
RatiosOpt = Annotated[
    str | None,
    typer.Option("--ratios", rich_help_panel="Quality", metavar="LIST",
                 help="Stage ratios, e.g. 0.125,0.25,0.5,1 (overrides --preset)."),
]
PresetOpt = Annotated[
    PresetName,
    typer.Option("--preset", case_sensitive=False, rich_help_panel="Quality",
                 help="auto: stages chosen per image from the mask; fast, balanced, quality: fixed (README)."),
]
GuardOpt = Annotated[
    bool | None,
    typer.Option("--guard/--no-guard", rich_help_panel="Quality", show_default=False,
                 help="Trust region: far changes need strong evidence [default: on for auto]. "
                      "--no-guard: the model's own answer, with no rule keeping the mask's lines or "
                      "the mask of a flat or noise photo (kept under every preset)."),
]
SnapOpt = Annotated[
    bool | None,
    typer.Option("--snap/--no-snap", rich_help_panel="Quality", show_default=False,
                 help="Pull the refined boundary onto the photo's edges, photos of 1000 px and up "
                      "[default: on]."),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option("--precision", case_sensitive=False, rich_help_panel="Compute",
                 help="Encoder precision; fp16/bf16 are for GPUs."),
]
BackendOpt = Annotated[
    Backend,
    typer.Option("--backend", case_sensitive=False, envvar="CRM_BACKEND", rich_help_panel="Compute",
                 help="auto: on a CPU, ONNX Runtime when the weights ship an ONNX encoder (faster, and "
                      "torch is never imported); torch otherwise."),
]
ThreadsOpt = Annotated[
    int,
    typer.Option("--threads", min=0, envvar="CRM_THREADS", rich_help_panel="Compute", metavar="N", show_default=False,
                 help="CPU threads [default: 0, the physical cores, or a container's CPU quota rounded up]; "
                      "with P crm processes per machine, use cores / P."),
]
TileOpt = Annotated[
    int,
    typer.Option("--tile-size", min=128, rich_help_panel="Compute", metavar="N",
                 help="Encoder tile side in pixels, rounded up to a multiple of 16; lower it to save memory."),
]
OutputKindOpt = Annotated[
    OutputKind,
    typer.Option("--output-kind", "-k", case_sensitive=False, rich_help_panel="Output",
                 help="soft: probability x 255; soft16: x 65535; binary: 0/255; cutout: RGBA image; "
                      "overlay: contours over the image."),
]


def threshold_value(ctx: Any, param: Any, value: float | None) -> float | None:
    """Click callback of ``-t``: a finite T (:func:`finite_option`) below 1. No probability is above 1,
    so ``-t 1`` made every mask empty without a word."""
    value = finite_option(ctx, param, value)
    if value is not None and value >= 1.0:
        raise typer.BadParameter("no probability is above 1, so every mask would be empty; give T below 1",
                                 ctx=ctx, param=param)
    return value


def threshold_option(help_text: str, panel: str | None = None) -> Any:
    """The ``--threshold/-t T`` option (0 <= T < 1, default None), with each command's own help."""
    return typer.Option("--threshold", "-t", min=0.0, max=1.0, callback=threshold_value, rich_help_panel=panel,
                        metavar="T", help=help_text)


ThresholdOpt = Annotated[
    float | None, threshold_option("Binarise at probability > T (also soft16, the cutout alpha and the overlay's "
                                     "contour).", "Output"),
]


PhotoBitsOpt = Annotated[
    PhotoBits,
    typer.Option("--photo-bits", case_sensitive=False, rich_help_panel="Input",
                 help="The scale of 16-bit photos. auto: each file's own, by its largest value (8, 10, 12, 14 "
                      "or 16 bits); N: every file read as N-bit, values above 2^N-1 clipped, so that the "
                      "frames of a sequence match. 8-bit files ignore it."),
]


def photo_bits_value(choice: Any) -> int | None:
    """A ``--photo-bits`` choice as ``imageio.read_photo``'s ``photo_bits``: None for auto, else the bits."""
    return None if choice.value == "auto" else int(choice.value)


ModeOpt = Annotated[
    Mode,
    typer.Option("--mode", case_sensitive=False, rich_help_panel="Quality",
                 help="binary: one object; labels: a label map, one refinement per id; auto detects."),
]
LabelsOpt = Annotated[
    str | None,
    typer.Option("--labels", rich_help_panel="Quality", metavar="IDS",
                 help="Label maps: refine only these ids, e.g. 3,7."),
]


def json_option(ctx: Any, param: Any, value: bool) -> bool:
    """Click callback of ``--json``: :func:`require_stdout` when given (the record comes at the end)."""
    if value:
        require_stdout("--json")
    return value


JsonOpt = Annotated[bool, typer.Option("--json", callback=json_option, help="Print a JSON summary on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log lines on stderr.")]


@dataclass(frozen=True)
class RefinerOptions:
    """The options every refining command shares, as the user gave them (see :func:`refiner_options`)."""

    ratios: str | None = None
    preset: Any = None  # a PresetName; None: presets.DEFAULT_PRESET, looked up when the command runs
    guard: bool | None = None
    snap: bool | None = None
    device: str = "auto"
    weights: Path | None = None
    tile_size: int = 1024
    precision: Any = Precision.fp32
    threads: int = 0
    backend: Any = Backend.auto

    @property
    def preset_name(self) -> str:
        """The chosen preset's name."""
        from ..presets import DEFAULT_PRESET

        return DEFAULT_PRESET if self.preset is None else self.preset.value

    def settings(self):  # noqa: ANN201 - presets.Preset
        """The chosen ``presets.Preset``, with explicit ``--ratios``, ``--guard/--no-guard`` and
        ``--snap/--no-snap`` applied.

        ``--ratios`` is parsed and checked by the Preset (presets.check_ratios, as in the Python API);
        a broken rule is a usage error naming the option.
        """
        try:
            return PRESETS[self.preset_name].with_ratios(self.ratios).overridden(guard=self.guard, snap=self.snap)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--ratios'") from None

    def load(self, quiet: bool = False):  # noqa: ANN201 - engine.Refiner
        """Make the process-wide settings, build the Refiner once per process, log the device on stderr.

        The warnings of loading (unverified weights, fp16 on a CPU) are shown but are about no image:
        no :func:`output.collect_warnings` block around the call keeps them.
        """
        self.check_backend()
        try:
            with warnings_about_no_image():
                refiner = self._spec(self.weights).build()
        except Exception as exc:  # noqa: BLE001 - only torch's failed import is taken; the rest is raised
            if stop_behind(exc) or (problem := torch_import_failure(exc)) is None:
                raise
            raise TorchImportError(f"cannot load the model: torch does not import ({problem})") from None
        if not quiet:
            say(f"device: {refiner.device_name}{self._quota_note()}")
        return refiner

    def _quota_note(self) -> str:
        """Why the default threads are fewer than the CPUs in view: a container's CPU quota (or "")."""
        from ..containers import cpu_quota
        from ..runtime import quota_limited_threads

        if self.threads or quota_limited_threads() is None:
            return ""
        quota = cpu_quota()
        return f", threads bounded by the container's CPU quota ({quota:g} CPU{'' if quota == 1 else 's'})"

    def check_backend(self) -> None:
        """Exit 2 (usage error) for options ``--backend onnx`` cannot honour: a GPU device or a
        reduced precision."""
        if self.backend.value != "onnx":
            return
        if self.precision.value != "fp32":
            raise fail(f"--backend onnx runs in fp32, not --precision {self.precision.value} "
                       "(use --backend torch)", code=2)
        if self.device not in ("auto", "cpu"):
            raise fail(f"--backend onnx runs on the CPU, not --device {self.device} (use --backend torch)",
                       code=2)

    def check_loadable(self, gpu: bool = True) -> None:
        """What loading would refuse, found without loading (``crm batch --dry-run``): weights (and their
        partner) that are missing or no checkpoint, and with ``gpu`` an explicit GPU that is not present
        here (torch is imported for that one). Raises WeightsError or DeviceError."""
        self.check_backend()
        self._spec(self.weights).check()
        if gpu and self.device not in ("auto", "cpu"):
            from ..devices import resolve_device

            resolve_device(self.device)

    def ray_spec(self):  # noqa: ANN201 - refiner_spec.RefinerSpec
        """How each Ray actor builds the same Refiner (weights by absolute path: actors run elsewhere)."""
        self.check_backend()
        if ":" in self.device:  # raybatch.plan_actors gives each actor a GPU of its own
            raise fail(f"--ray gives each actor a GPU of its own; use --device cuda or auto, not --device "
                       f"{self.device}", code=2)
        return self._spec(self.weights.absolute() if self.weights else None)

    def _spec(self, weights: Path | None):  # noqa: ANN202 - refiner_spec.RefinerSpec
        """The one recipe for this Refiner, in this process or in a Ray actor."""
        from ..refiner_spec import RefinerSpec

        return RefinerSpec(str(weights) if weights else None, self.device, self.tile_size,
                           self.precision.value, self.threads or None, self.backend.value)


# The shared options, in the order --help lists them: (parameter, annotated type, default).
SHARED_OPTIONS: tuple[tuple[str, Any, Any], ...] = (
    ("ratios", RatiosOpt, None), ("preset", PresetOpt, PresetName.auto), ("guard", GuardOpt, None),
    ("snap", SnapOpt, None), ("device", DeviceOpt, "auto"), ("weights", WeightsOpt, None), ("tile_size", TileOpt, 1024),
    ("precision", PrecisionOpt, Precision.fp32), ("threads", ThreadsOpt, 0), ("backend", BackendOpt, Backend.auto),
)


def refiner_options(*, guard: bool = True,
                    resumable: bool | Callable[[dict[str, Any]], bool] = False) -> Callable[[Callable], Callable]:
    """Decorate a command whose ``options: RefinerOptions`` parameter stands for the shared options.

    typer sees the shared options in that parameter's place; the command receives them as one
    RefinerOptions. ``guard=False`` leaves out --guard/--no-guard. The command runs under
    :func:`stops_cleanly`; ``resumable`` (or ``resumable(values)``, given the command's own option
    values) says whether a rerun goes on where it stopped (its stop line then says so).
    """
    shared = [(name, kind, default) for name, kind, default in SHARED_OPTIONS if guard or name != "guard"]

    def decorate(command: Callable) -> Callable:
        signature = inspect.signature(command, eval_str=True)
        parameters: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            if parameter.name != "options":
                parameters.append(parameter)
                continue
            parameters += [inspect.Parameter(name, parameter.kind, annotation=kind, default=default)
                           for name, kind, default in shared]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            chosen = {name: values.pop(name) for name, _, _ in shared}
            with stops_cleanly(resumable(values) if callable(resumable) else resumable):
                return command(options=RefinerOptions(**chosen), **values)

        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def refuse_standard_output(given: Path | str | None, writes: str, param_hint: str, kind: str = "folder") -> None:
    """A usage error when an output option that names a folder (or a ``kind`` of file) is ``-``: it is
    standard output everywhere else in crm, so no folder "-" is made in silence. ``writes`` says what
    the command writes there ("crm eval writes one mask per pair into a folder, not to standard
    output"). The value as given: Path("./-") reads "-", and ./- names a folder."""
    if given is not None and str(given) == "-":
        raise typer.BadParameter(f"{writes}; give a {kind} name", param_hint=param_hint)


def refuse_file_as_folder(path: Path, param_hint: str, shown: str | None = None) -> None:
    """A usage error when an output folder option names an existing file (``shown``: the name as typed).
    A folder on the way that cannot be searched is left to the write check, which names it
    (``checks.unwritable_reason``)."""
    try:
        is_file = path.exists() and not path.is_dir()
    except OSError:
        return
    if is_file:
        raise typer.BadParameter(f"{path if shown is None else shown} is a file, not a folder", param_hint=param_hint)


def require_existing(path: Path, param_hint: str, folder: bool = True) -> None:
    """Click's ``exists`` check of an input (a usage error naming ``path``), made inside the command,
    where :func:`output.usage_errors_recorded` prints its ``--json`` record: click's own checks run before
    the command, and a script piping ``--json`` to a parser got nothing on stdout."""
    kind, other = ("folder", "file") if folder else ("file", "folder")
    try:
        exists, is_folder = path.exists(), path.is_dir()
    except OSError as exc:  # a folder on the way that cannot be searched (Python 3.11 and later raise)
        raise typer.BadParameter(f"{kind} {path} cannot be looked at: {os_reason(exc)}",
                                 param_hint=param_hint) from None
    if not exists:
        raise typer.BadParameter(f"{kind} {path} does not exist", param_hint=param_hint)
    if is_folder != folder:
        raise typer.BadParameter(f"{path} is a {other}, not a {kind}", param_hint=param_hint)
    if folder:
        _refuse_unreadable_folder(path, param_hint)


def require_readable_folder(path: Path, param_hint: str) -> None:
    """Click's ``readable`` check of an input folder (a usage error), which path parameters leave to crm
    (``group.CrmGroup``): a folder that cannot be listed and entered. A file is crm's readers' to report,
    by name, as a missing one is (exit 1). Nothing is said of what is not a folder."""
    try:
        is_folder = path.is_dir()
    except OSError as exc:  # a folder on the way that cannot be searched
        raise typer.BadParameter(f"{path} cannot be looked at: {os_reason(exc)}", param_hint=param_hint) from None
    if is_folder:
        _refuse_unreadable_folder(path, param_hint)


def _refuse_unreadable_folder(folder: Path, param_hint: str) -> None:
    """The usage error of a ``folder`` that cannot be listed and entered."""
    import os

    if not os.access(folder, os.R_OK | os.X_OK):
        raise typer.BadParameter(f"folder {folder} cannot be read (permission denied)", param_hint=param_hint)
