"""Options and helpers shared by the commands. Nothing heavy is imported at module level."""

from __future__ import annotations

import functools
import inspect
import json
import signal
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from .. import __version__
from ..config import BACKEND_CHOICES, MODES, OUTPUT_KINDS, PRECISION_NAMES
from ..errors import MEMORY_ADVICE as MEMORY_ADVICE  # re-exported: the commands and tests import it from here
from ..errors import ContinuedText, first_line, message_of
from ..errors import out_of_memory_message as out_of_memory_message  # re-exported, as MEMORY_ADVICE
from ..errors import shortage_message as shortage_message  # re-exported for batch
from ..presets import PRESETS, split_items

# Logs, progress and tables go to stderr; stdout carries data only.
console = Console(stderr=True, soft_wrap=True)


# Characters a name may hold that would forge or hide text on a terminal: control characters (Cc),
# lone surrogates (Cs: bytes that are no UTF-8), line and paragraph separators (Zl, Zp), and the
# bidirectional controls (which reorder what follows them). Other spaces (U+202F in macOS screenshot
# names, U+3000, no-break space) and joiners are a name's own text, shown as they are.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _unsafe(character: str) -> bool:
    return unicodedata.category(character) in _UNSAFE_CATEGORIES or character in _BIDI_CONTROLS


def printable(text: str, continued: bool = False) -> str:
    """``text`` with each character that could split or disguise a message (control characters, line
    and paragraph separators, bidi controls, the stand-ins of bytes that are not UTF-8) shown as
    Python's repr shows it (a newline as ``\\n``, ESC as ``\\x1b``), so that a file name cannot
    split a message into lines that look like crm's own, nor colour or move the terminal's text.

    Args:
        continued: keep a line break followed by two spaces: a message's own indented continuation
            lines (the unreadable pairs that ``crm train`` lists under its error), which a reader of
            the log tells from a new message by the indent.
    """
    if text.isprintable():
        return text
    shown = []
    for index, character in enumerate(text):
        if not _unsafe(character) or (continued and character == "\n" and text.startswith("  ", index + 1)):
            shown.append(character)
        else:
            shown.append(repr(character)[1:-1])  # no quote or backslash gets here: both are printable
    return "".join(shown)


def _print_version(value: bool) -> None:
    """The eager ``--version`` option's callback."""
    if value:
        typer.echo(f"crm {__version__}")
        raise typer.Exit()


def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Refine segmentation masks of 2K-6K images; see each command's --help."""


def _shown_click_message(exc: Any) -> str:
    """A click error's message as crm prints it: escaped (:func:`printable`), its line breaks kept only
    where crm raised it as a list of lines (``errors.ContinuedText``, say training's unreadable pairs
    under ``--data``); any other may be a name's."""
    own_lines = isinstance(getattr(exc, "message", None), ContinuedText)
    return printable(exc.format_message(), continued=own_lines)


# A path given as "": pathlib reads it as the working folder, so -o "$OUT" with OUT unset in a script
# would write there (or read it as the input folder).
EMPTY_PATH = "an empty path (a shell variable that is not set?)"


# The path parameter types of the typer versions crm runs on: click's Path, or typer's own TyperPath.
_PATH_TYPE_NAMES = ("Path", "TyperPath")


@functools.cache
def non_empty_path_type(path_type: type) -> type:
    """``path_type`` (a click or typer path parameter type) refusing "" (:data:`EMPTY_PATH`), as a usage
    error."""

    class NonEmptyPath(path_type):  # type: ignore[misc, valid-type]
        def convert(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, str) and not value:
                self.fail(EMPTY_PATH, param, ctx)
            return super().convert(value, param, ctx)

    return NonEmptyPath


class CrmGroup(TyperGroup):
    """The ``crm`` command group: usage errors print one line plus a hint (no box, no usage dump)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """The command ``args`` name, its path parameters made to refuse an empty value (and, where
        crm checks the file itself, to leave its readability to crm)."""
        name, command, rest = super().resolve_command(ctx, args)
        for param in [] if command is None else command.params:
            if type(param.type).__name__ in _PATH_TYPE_NAMES:
                # A subclass that adds no state: the instance keeps its settings (exists, dir_okay...).
                param.type.__class__ = non_empty_path_type(type(param.type))
                if not param.type.exists:
                    # crm opens these itself and names an unreadable file as it names a missing one
                    # (exit 1); click would call it a usage error (2), and refuse an output it may replace.
                    param.type.readable = False
        return name, command, rest

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the CLI; in standalone mode, exit with the command's code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from rich.markup import escape

        errors = click_module("exceptions")
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except errors.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `crm`: the help, as click prints it
                typer.echo(exc.format_message(), err=True)
                sys.exit(exc.exit_code)
            console.print(f"[bold red]error:[/] {escape(_shown_click_message(exc))}",
                          highlight=False)
            console.print(usage_hint(exc.ctx.command_path if exc.ctx else None), style="dim", highlight=False)
            sys.exit(exc.exit_code)
        except errors.ClickException as exc:
            console.print(f"[bold red]error:[/] {escape(_shown_click_message(exc))}",
                          highlight=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            console.print("aborted", highlight=False)
            sys.exit(1)
        # Without standalone mode click returns the code of a typer.Exit (None after success).
        sys.exit(code if isinstance(code, int) else 0)


def new_app() -> typer.Typer:
    """The ``crm`` Typer app, without its commands (``cli.registered_app`` adds them)."""
    application = typer.Typer(
        name="crm",
        cls=CrmGroup,
        help="Refine segmentation masks of ultra-high-resolution images with CRM (Continuous Refinement Model).",
        no_args_is_help=True,
        # Plain click help: one line per option, choices never wrapped mid-word, no type column.
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    application.callback()(root)
    return application


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
                 help="Trust region: far changes need strong evidence [default: on for auto]."),
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


def require_stdout(what: str) -> None:
    """Exit 1 with one line, before any work, when ``what`` (an option that writes to stdout: "--json",
    "-o -") would write to a standard output the process started without (``crm ... >&-``): a
    destination the environment does not provide, as an output folder that cannot be written, not a
    wrong command line."""
    if sys.stdout is None:
        raise fail(f"{what} writes to standard output, but standard output is closed")


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
        no :func:`collect_warnings` block around the call keeps them.
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


class TorchImportError(RuntimeError):
    """torch, which the model needs here (a GPU, weights without an exported encoder, ``--backend
    torch``), does not import: a broken or missing install, reported in one line (:func:`user_errors`)."""


_first_torch_failure: list[str] = []  # why torch's first import in this process failed (a second fails otherwise)


def torch_import_problem() -> str | None:
    """Why torch does not import in this process, in one line ("ImportError: libtorch_cpu.so: cannot
    open shared object file"), or None when it imports (it is imported here if it was not). The
    first failure's reason is kept: a second attempt fails for another (half of torch is loaded)."""
    if _first_torch_failure:
        return _first_torch_failure[0]
    try:
        import torch  # noqa: F401 - the import is the test
    except Exception as exc:  # noqa: BLE001 - ImportError, the OSError of a native library, anything of its own
        _first_torch_failure.append(f"{type(exc).__name__}: {first_line(exc)}")
        return _first_torch_failure[0]
    return None


def torch_import_failure(exc: BaseException) -> str | None:
    """``exc`` in one line when it is torch failing to import (torch not installed, a native library
    missing, a NumPy it was not built for: raised by torch's own code while ``torch`` is not in
    ``sys.modules``, which a failed import leaves it out of), or None for any other error, a torch
    error at run time included."""
    if "torch" in sys.modules:  # it imported: whatever failed (a name an older torch lacks) is no import of torch
        return None
    missing = isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == "torch"
    if not missing and not _raised_in_torch(exc):
        return None
    if not _first_torch_failure:
        _first_torch_failure.append(f"{type(exc).__name__}: {first_line(exc)}")
    return _first_torch_failure[0]


def _raised_in_torch(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while torch's own code ran (importing it, say)."""
    trace = exc.__traceback__
    while trace is not None:
        module = trace.tb_frame.f_globals.get("__name__", "")
        if module == "torch" or module.startswith("torch."):
            return True
        trace = trace.tb_next
    return False


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


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived (``kill``, ``timeout``, a job scheduler, a closed terminal).

    A BaseException, as KeyboardInterrupt is, so no ``except Exception`` (nor batch's per-pair
    error handling) takes it for a failure of the file in hand: it unwinds the command, and the
    ``finally`` blocks on its way remove what they made (a write's temp file, an output's lock).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# The signals stops_cleanly turns into Terminated, where the process has their default action.
_STOP_SIGNALS = ("SIGTERM", "SIGHUP")


def _ignore_further_stops() -> None:
    """Ignore the stop signals (Ctrl-C included) that :func:`stops_cleanly` handles, until it puts the
    previous handlers back: a second one must not cut the cleanup short (an output's lock left behind,
    a traceback from a ``finally``). SIGKILL still stops the process."""
    for signum in (signal.SIGINT, *(getattr(signal, name) for name in _STOP_SIGNALS if hasattr(signal, name))):
        if signal.getsignal(signum) in (_raise_terminated, _raise_interrupt):
            signal.signal(signum, signal.SIG_IGN)


def _raise_terminated(signum: int, frame: Any) -> None:
    """Signal handler: raise Terminated in the main thread; further stop signals are ignored until
    the command has cleaned up (a closed terminal sends SIGHUP twice)."""
    _ignore_further_stops()
    raise Terminated(signum)


def _raise_interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C's handler: Python's own KeyboardInterrupt, after which further stop signals are
    ignored until the command has cleaned up."""
    _ignore_further_stops()
    raise KeyboardInterrupt


def _stop_cause(error: BaseException) -> BaseException | None:
    """The Ctrl-C or Terminated that ``error`` is, or that it was raised while handling (Rich's
    progress, closing on a terminal that hung up, raises OSError on its way out)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (KeyboardInterrupt, Terminated)):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


def stop_words(signum: int) -> str:
    """How a stop line names what stopped the command: "interrupted" (Ctrl-C) or "stopped by SIGTERM"."""
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


def say_if_possible(text: str) -> None:
    """:func:`say` a stop's line, unless stderr is gone with a terminal that hung up (SIGHUP): the
    exit code still tells what stopped the command."""
    try:
        say(text)
    except OSError:
        pass


def warn_if_possible(text: str) -> None:
    """:func:`warn` ``text``, unless stderr is gone with a terminal that hung up, as :func:`say_if_possible`."""
    try:
        warn(text)
    except OSError:
        pass


def stop_behind(error: BaseException) -> bool:
    """Whether ``error`` was raised while a Ctrl-C or stop signal unwound the command: it is then
    no failure of its own, and :func:`stops_cleanly` must see it."""
    return _stop_cause(error) is not None


@contextmanager
def stops_cleanly(resumable: bool = False) -> Iterator[None]:
    """Inside, SIGTERM and SIGHUP unwind the command as Ctrl-C (SIGINT) does, instead of killing
    the process where it stands: a temp file being written and the lock of the output being made
    are removed on the way out, as they are after Ctrl-C. Either way the command says so in one
    line on stderr (when stderr can still take it) and exits with 128 + the signal's number (130
    for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP). From the first of them to the block's end, further
    ones (Ctrl-C included) are ignored, so that the cleanup runs to its end.

    Signals the process ignores (``nohup`` ignores SIGHUP) or handles itself stay as they are, and
    outside the main thread (where no handler can be set) nothing changes.
    """
    hint = "; finished outputs are kept: run the same command again to go on" if resumable else ""
    show_library_warnings()  # what reading files logs (a mask of several frames) as `warning:` lines
    installed: dict[int, Any] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for name in _STOP_SIGNALS:
                signum = getattr(signal, name, None)
                if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
                    installed[signum] = signal.SIG_DFL
                    signal.signal(signum, _raise_terminated)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                installed[signal.SIGINT] = signal.default_int_handler
                signal.signal(signal.SIGINT, _raise_interrupt)
        yield
    except BaseException as error:
        cause = _stop_cause(error)
        if cause is None:
            raise
        signum = cause.signum if isinstance(cause, Terminated) else int(signal.SIGINT)
        say_if_possible(f"{stop_words(signum)}{hint}")
        raise typer.Exit(128 + signum) from None
    finally:
        for signum, previous in installed.items():
            signal.signal(signum, previous)


def click_module(name: str) -> Any:
    """A submodule ("exceptions", "globals") of the click that typer runs on: recent typer versions
    vendor their own copy (``typer._click``), older ones use the ``click`` package."""
    import importlib

    package = typer.BadParameter.__module__.rpartition(".")[0]
    return importlib.import_module(f"{package}.{name}")


def usage_hint(command_path: str | None = None) -> str:
    """The hint printed under a usage error: where to find the command's options."""
    if command_path is None:
        ctx = click_module("globals").get_current_context(silent=True)
        command_path = ctx.command_path if ctx is not None else "crm"
    return f"Try '{command_path} --help' for the options."


def say(line: str, out: Console | None = None) -> None:
    """Print a line on stderr as given (file names may hold brackets that Rich would read as markup),
    its control characters escaped (:func:`printable`)."""
    (out or console).print(printable(line), markup=False, highlight=False)


# The lists that :func:`collect_warnings` blocks are filling, innermost last; and whether one of
# them holds its warnings back instead of printing them.
_warning_lists: ContextVar[tuple[list[str], ...]] = ContextVar("crm_warning_lists", default=())
_warnings_held: ContextVar[bool] = ContextVar("crm_warnings_held", default=False)


def warn(note: str, out: Console | None = None) -> None:
    """Print a yellow ``warning:`` line on stderr; ``note`` is printed literally (in the CLI's
    words: ``photo_depth.cli_note``), its control characters escaped (:func:`printable`), and kept as it
    is by each :func:`collect_warnings` block around the call (and not printed inside one that holds
    them)."""
    from rich.markup import escape

    from ..photo_depth import cli_note

    # A reader's note names photo_bits=; the command's option is --photo-bits, and crm train has none.
    note = cli_note(note, _running_command_has("photo_bits"))
    for shown in _warning_lists.get():
        shown.append(note)
    if not _warnings_held.get():
        (out or console).print(f"[yellow]warning:[/] {escape(printable(note))}", highlight=False)


def _running_command_has(parameter: str) -> bool:
    """Whether the command running in this thread takes ``parameter`` (True outside any command)."""
    ctx = click_module("globals").get_current_context(silent=True)
    return ctx is None or any(param.name == parameter for param in ctx.command.params)


@contextmanager
def collect_warnings(hold: bool = False) -> Iterator[list[str]]:
    """Inside, the text of every warning shown is also added to the list yielded, in order: each
    :func:`warn` line and each warning the library logs (which :func:`show_library_warnings`, set up
    here if the process has not, routes through :func:`warn`). This is the one rule of a ``--json``
    record's ``"warnings"``: crm refine's record and each crm batch item (refine_pair_job) list what
    was shown while their image was read, refined and written; not the warnings of loading the
    weights, which are about no image (see RefinerOptions.load).

    Args:
        hold: keep the warnings without printing them, for the caller to show: a batch pair's, which
            its command shows, whether the pair ran in this process or on a Ray actor.
    """
    show_library_warnings()
    shown: list[str] = []
    token = _warning_lists.set((*_warning_lists.get(), shown))
    held = _warnings_held.set(True) if hold else None
    try:
        yield shown
    finally:
        if held is not None:
            _warnings_held.reset(held)
        _warning_lists.reset(token)


@contextmanager
def warnings_about_no_image() -> Iterator[None]:
    """Inside, warnings are shown at once and kept by no :func:`collect_warnings` block around it: those
    of loading the weights (unverified weights, fp16 on a CPU), which are about no image."""
    show_library_warnings()
    token, held = _warning_lists.set(()), _warnings_held.set(False)
    try:
        yield
    finally:
        _warnings_held.reset(held)
        _warning_lists.reset(token)


def report_failure(what: str, error: str, out: Console | None = None, prefix: str = "failed:") -> None:
    """Print a red ``failed:`` line on stderr; ``what`` and ``error`` are printed literally, their
    control characters escaped (:func:`printable`), except the error's own indented continuation
    lines (a library's many-line message, ``errors.continued_lines``), which are indented by the
    prefix's own indent too, so that under a listed ``  failed`` line they stay apart from the list."""
    from rich.markup import escape

    indent = prefix[:len(prefix) - len(prefix.lstrip())]
    # Only a library's own lines stay lines: crm's errors name files, and a name may hold "\n  ".
    own_lines = isinstance(error, ContinuedText)
    shown = printable(what) + printable(error, continued=own_lines).replace("\n", "\n" + indent)
    (out or console).print(f"[red]{prefix}[/] {escape(shown)}", highlight=False)


_library_warnings_shown = False


def show_library_warnings() -> None:
    """Print the library's logged warnings (unverified weights, fp16 on a CPU) as ``warning:`` lines
    instead of Python's default stderr format (set up once per process)."""
    global _library_warnings_shown
    if _library_warnings_shown:
        return
    import logging  # here, not at module level: 5 ms of every command's start, --help included

    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warn(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("crm_cli")
    logger.addHandler(handler)
    logger.propagate = False
    _library_warnings_shown = True


# The record that a usage error prints inside :func:`usage_errors_recorded`, if any.
_usage_record: ContextVar[FailureRecord | None] = ContextVar("crm_usage_record", default=None)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red error line on stderr (plus a help hint for usage errors, code 2) and return
    the Exit to raise. Inside :func:`usage_errors_recorded`, a usage error prints its record first.
    The line shows control characters escaped, except the message's own indented continuation
    lines (:func:`printable`); a ``--json`` record keeps the message as it is."""
    from rich.markup import escape

    if code == 2 and (record := _usage_record.get()) is not None:
        record.emit(message)
    # Only crm's own lists keep their lines (errors.ContinuedText): any other line break may be a name's.
    shown = printable(message, continued=isinstance(message, ContinuedText))
    console.print(f"[bold red]error:[/] {escape(shown)}", highlight=False)
    if code == 2:
        console.print(usage_hint(), highlight=False, style="dim")
    return typer.Exit(code)


# How Python's tempfile says that no temporary folder can be written.
NO_TEMP_FOLDER = "[Errno 2] No usable temporary directory found"


@contextmanager
def user_errors(on_error: Callable[[str], None] | None = None) -> Iterator[None]:
    """Turn expected failures (bad files, sizes, devices, weights) into one line and exit code 1
    (or the exception's own ``exit_code``: 2 for the usage errors ``pairing.NoPairsError`` and
    ``cli.coco.UnknownCategoriesError``).

    Args:
        on_error: called with the message before exiting (e.g. to emit a JSON failure record).
    """
    from ..checkpoint import WeightsError
    from ..devices import DeviceError
    from ..image_sources import ImageReadError

    code = 1
    try:
        yield
        return
    except typer.Exit:
        raise
    except BrokenPipeError as exc:
        if stop_behind(exc):
            raise
        # The reader of stdout went away (`| head`, `| true`): nothing more can be written there.
        _discard_stdout()
        message = "standard output was closed before the output was written"
    except (ImageReadError, FileNotFoundError, ValueError, DeviceError, OSError, WeightsError,
            TorchImportError) as exc:
        if stop_behind(exc):  # a terminal that hung up fails a write while the stop unwinds
            raise
        message = message_of(exc)
        if isinstance(exc, FileNotFoundError) and message.startswith(NO_TEMP_FOLDER):
            # tempfile's, from a library (torch's optimiser imports torch._dynamo, which makes its
            # cache there): on a read-only root the folder to name is the user's to choose.
            message += "; set TMPDIR to a folder crm may write"
        code = getattr(exc, "exit_code", 1)  # 2 for a usage error (NoPairsError, UnknownCategoriesError)
    except Exception as exc:  # noqa: BLE001 - only running out of memory or threads is taken, the rest raised again
        if (shortage := shortage_message(exc)) is None:
            raise
        message = shortage
    if on_error is not None:
        on_error(message)
    raise fail(message, code) from None


@dataclass
class FailureRecord:
    """What a command prints when it stops as a whole: with ``--json``, its failure record on stdout,
    then the ``error:`` line (see :func:`fail`).

    ``fields`` builds the command's record around ``failure`` (``{"status": "failed", "error": ...}``),
    placing it among the command's own fields; it is called when the command stops, so the record
    holds what was known then.
    """

    json_out: bool
    fields: Callable[[dict[str, str]], dict[str, Any]]
    # Whether the record was printed: once at most, by whichever of fail() and user_errors() reaches it first.
    printed: bool = field(default=False, init=False, compare=False, repr=False)

    def emit(self, message: str) -> None:
        """With ``--json``, print the record of ``message`` on stdout (the ``on_error`` of user_errors),
        unless this record was printed already."""
        if self.json_out and not self.printed:
            self.printed = True
            try:
                _write_json(self.fields({"status": "failed", "error": message}))
            except OSError:
                # stdout cannot take the record (a full disk, a closed pipe): the error line that
                # follows still gives the cause, with the command's own exit code.
                _discard_stdout()

    def fail(self, message: str, code: int = 1) -> typer.Exit:
        """Print the record and the error line; return the Exit to raise."""
        self.emit(message)
        return fail(message, code)


@contextmanager
def usage_errors_recorded(record: FailureRecord) -> Iterator[None]:
    """Inside, a usage error of crm's own checks prints ``record`` (with ``--json``) as a runtime
    failure does, then exits 2 as before: a :func:`fail` with code 2, or a ``typer.BadParameter``
    (whose record holds the message the error line shows). Click's parsing of the arguments comes
    before the command runs, so its errors print no record."""
    usage_error = click_module("exceptions").UsageError
    token = _usage_record.set(record)
    try:
        yield
    except usage_error as exc:
        record.emit(exc.format_message())
        raise
    finally:
        _usage_record.reset(token)


def refuse_standard_output(given: Path | str | None, writes: str, param_hint: str, kind: str = "folder") -> None:
    """A usage error when an output option that names a folder (or a ``kind`` of file) is ``-``: it is
    standard output everywhere else in crm, so no folder "-" is made in silence. ``writes`` says what
    the command writes there ("crm eval writes one mask per pair into a folder, not to standard
    output"). The value as given: Path("./-") reads "-", and ./- names a folder."""
    if given is not None and str(given) == "-":
        raise typer.BadParameter(f"{writes}; give a {kind} name", param_hint=param_hint)


def require_existing(path: Path, param_hint: str, folder: bool = True) -> None:
    """Click's ``exists`` check of an input (a usage error naming ``path``), made inside the command,
    where :func:`usage_errors_recorded` prints its ``--json`` record: click's own checks run before
    the command, and a script piping ``--json`` to a parser got nothing on stdout."""
    kind, other = ("folder", "file") if folder else ("file", "folder")
    if not path.exists():
        raise typer.BadParameter(f"{kind} {path} does not exist", param_hint=param_hint)
    if path.is_dir() != folder:
        raise typer.BadParameter(f"{path} is a {other}, not a {kind}", param_hint=param_hint)


def percent(value: float | None) -> str:
    """0.8512 -> "85.12"; None -> "-"."""
    return "-" if value is None else f"{100 * value:.2f}"


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (which JSON cannot hold) replaced by None."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _decoded_name(text: str) -> str:
    """``text`` as the name it stands for: where a file name's bytes were decoded with an encoding
    that could not read them (LC_ALL=C makes Python's file system encoding ASCII, so ``café.png`` is
    ``'caf\\udcc3\\udca9.png'``), the text those bytes spell in UTF-8, when they are valid UTF-8;
    otherwise ``text`` as it is (bytes that are no UTF-8 stay surrogate escapes)."""
    import os

    try:
        text.encode("utf-8")
        return text  # no surrogate: nothing to decode (the common case)
    except UnicodeEncodeError:
        pass
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # real non-ASCII text beside the escapes under an ASCII file system encoding
        raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return text


def _decoded_names(value: Any) -> Any:
    """``value`` with :func:`_decoded_name` applied to every str in it (dict keys too), nested."""
    if isinstance(value, str):
        return _decoded_name(value)
    if isinstance(value, dict):
        return {_decoded_names(key): _decoded_names(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_decoded_names(item) for item in value]
    return value


def finish_run(record: Mapping[str, Any], *, failed: bool, json_out: bool) -> None:
    """End a command over many inputs: with ``json_out`` its ``record`` on stdout after ``"status"``
    (as in every command's record: "ok", or "partial" when some input ``failed``; a run that stops as a
    whole prints FailureRecord's "failed" record instead), then exit 1 when some input failed."""
    if json_out:
        emit_json({"status": "partial" if failed else "ok", **record})
    if failed:
        raise typer.Exit(1)


def emit_json(payload: Any) -> None:
    """Write one JSON document on stdout: strict JSON, so a non-finite number is written as null
    (Python would write NaN, which jq and most parsers refuse)."""
    try:
        _write_json(payload)
    except BrokenPipeError:
        raise  # a reader that went away: user_errors and click each say so in their way
    except OSError as exc:  # `> /dev/full`, a full disk, a file system that failed
        _discard_stdout()
        raise fail(f"cannot write the JSON to standard output: {exc.strerror or exc}") from None


def _write_json(payload: Any) -> None:
    """:func:`emit_json`'s write, raising the OSError of a stdout that cannot take it (EBADF for a
    closed one). One line per document: json escapes the control characters of names (ASCII only).
    A name that reached Python as surrogate escapes of valid UTF-8 bytes (under LC_ALL=C) is written
    as the text it spells (:func:`_decoded_name`): JSON readers refuse or mangle lone surrogates."""
    import errno

    try:
        text = json.dumps(payload, indent=None, allow_nan=False)
    except ValueError:
        payload = _finite(payload)
        text = json.dumps(payload, indent=None, allow_nan=False)
    # The escapes of surrogateescape's stand-ins (U+DC80-U+DCFF) all start so: only a record that may
    # hold one is walked (a valid pair's low half, U+DC00-U+DFFF, can start so too: walked for nothing).
    if "\\udc" in text:
        text = json.dumps(_decoded_names(payload), indent=None, allow_nan=False)
    if sys.stdout is None:  # the process started with descriptor 1 closed (`>&-`)
        raise OSError(errno.EBADF, "it is closed")
    binary = getattr(sys.stdout, "buffer", None)
    if binary is None:  # an embedding application's text stream
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    sys.stdout.flush()
    # The bytes layer, in a loop: unbuffered (PYTHONUNBUFFERED=1, common in containers) it is the raw
    # file, whose write into a pipe whose reader left part-way takes what the pipe held and reports
    # it, with no error; the text layer dropped the rest, and crm exited 0 on a cut record. The next
    # write of the rest fails with EPIPE, as it should.
    rest = memoryview((text + "\n").encode("ascii"))  # json.dumps escapes every non-ASCII character
    while rest:
        written = binary.write(rest)
        if not written:  # a non-blocking stdout that takes nothing now
            raise OSError(errno.EAGAIN, "the write took no bytes")
        rest = rest[written:]
    binary.flush()


def _discard_stdout() -> None:
    """Point stdout at /dev/null after a write to it failed: the unwritten bytes may stay buffered,
    and Python's final flush could fail on them again and print a second error. A stdout that is no
    file (an embedding application's stream) is left alone."""
    import os

    if sys.stdout is None:  # closed from the start: nothing is buffered
        return
    try:
        fileno = sys.stdout.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)
