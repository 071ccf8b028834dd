"""Options and helpers shared by the commands. Nothing heavy is imported at module level."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# Logs, progress and tables go to stderr; stdout carries data only.
console = Console(stderr=True, soft_wrap=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


class PresetName(str, Enum):
    auto = "auto"
    fast = "fast"
    balanced = "balanced"
    quality = "quality"


def parse_ratios(value: str | None) -> tuple[float, ...] | None:
    """``"0.125,0.25,0.5,1"`` -> (0.125, 0.25, 0.5, 1.0), validated."""
    if value is None:
        return None
    try:
        ratios = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"ratios must be comma-separated numbers, got {value!r}") from exc
    from ..presets import check_ratios

    try:
        return check_ratios(ratios)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


DeviceOpt = Annotated[
    Device,
    typer.Option("--device", "-d", case_sensitive=False, envvar="CRM_DEVICE", rich_help_panel="Compute",
                 help="auto: CUDA, else MPS, else CPU."),
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
PrecisionOpt = Annotated[
    Precision,
    typer.Option("--precision", case_sensitive=False, rich_help_panel="Compute",
                 help="Encoder precision; fp16/bf16 are for GPUs."),
]
ThreadsOpt = Annotated[
    int,
    typer.Option("--threads", min=0, envvar="CRM_THREADS", rich_help_panel="Compute", metavar="N", show_default=False,
                 help="CPU threads [default: the physical cores]; with P crm processes per machine, "
                      "use cores / P."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log lines on stderr.")]


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


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red error line on stderr (plus a help hint for usage errors, code 2) and return
    the Exit to raise."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if code == 2:
        console.print(usage_hint(), highlight=False, style="dim")
    return typer.Exit(code)


@contextmanager
def user_errors(on_error: Callable[[str], None] | None = None) -> Iterator[None]:
    """Turn expected failures (bad files, sizes, devices, weights) into one line and exit code 1.

    Args:
        on_error: called with the message before exiting (e.g. to emit a JSON failure record).
    """
    from ..checkpoint import WeightsError
    from ..devices import DeviceError
    from ..imageio import ImageReadError

    try:
        yield
        return
    except typer.Exit:
        raise
    except BrokenPipeError:
        # The reader of stdout went away (`| head`, `| true`): nothing more can be written there,
        # and Python's final flush must not print a second error about it.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        message = "standard output was closed before the output was written"
    except (ImageReadError, FileNotFoundError, ValueError, DeviceError, OSError, WeightsError) as exc:
        message = str(exc)
    except MemoryError as exc:  # crm's own estimate, or an allocation that failed
        message = str(exc) or "out of memory"
        if "try" not in message:
            message += "; try a smaller --tile-size, the 'fast' preset, or a smaller image"
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        message = f"{exc}. Try --device cpu, a smaller --tile-size or the 'fast' preset."
    if on_error is not None:
        on_error(message)
    raise fail(message) from None


def resolve_preset(ratios: str | None, preset: PresetName, guard: bool | None = None):  # noqa: ANN201
    """The chosen ``presets.Preset``, with explicit ``--ratios`` and ``--guard/--no-guard`` applied."""
    from ..presets import PRESETS

    return PRESETS[preset.value].with_ratios(parse_ratios(ratios)).with_guard(guard)


def load_refiner(weights: Path | None, device: Device, quiet: bool = False, threads: int | None = None,
                 **kwargs: Any):  # noqa: ANN201
    """Make the process-wide torch settings, build the Refiner once per process and log the device on stderr."""
    from ..devices import resolve_device
    from ..engine import Refiner
    from ..runtime import configure_torch

    configure_torch(threads, resolve_device(device.value))
    refiner = Refiner.from_checkpoint(weights, device=device.value, **kwargs)
    if not quiet:
        console.print(f"device: {refiner.device_name}", highlight=False)
    return refiner


def percent(value: float | None) -> str:
    """0.8512 -> "85.12"; None -> "-"."""
    return "-" if value is None else f"{100 * value:.2f}"


def emit_json(payload: Any) -> None:
    """Write one JSON document on stdout."""
    sys.stdout.write(json.dumps(payload, indent=None) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Checks made before the model loads, so a bad input or output fails in milliseconds.

from ..config import MIN_REFINE_SIDE  # noqa: E402 - next to the checks that use it


def check_output_name(output: Path, output_kind: str = "soft") -> str:
    """The format ``output``'s extension names; exit 2 (usage error) for a lossy or unknown one."""
    from ..writing import OutputNameError, output_format

    try:
        fmt = output_format(output)
    except OutputNameError as exc:
        raise fail(str(exc), code=2) from None
    if fmt == "WEBP" and output_kind == "soft16":
        raise fail(f"{output}: WebP holds 8 bits per channel; write --output-kind soft16 as .png or .tif", code=2)
    return fmt


def unwritable_reason(target: Path, folder: bool = False) -> str | None:
    """Why ``target`` (a file, or with ``folder`` a folder to write into) cannot be written, or None.

    Checks the nearest existing folder on its way: it must be a folder and writable.
    """
    import os

    if not folder and target.is_dir():
        return f"cannot write {target}: it is a folder"
    if folder and target.exists() and not target.is_dir():
        return f"cannot write into {target}: it is a file, not a folder"
    parent = target if folder else target.parent
    parent = parent if str(parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot write {target}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot write {target}: permission denied on {parent}"
    return None


def check_writable(target: Path, folder: bool = False) -> None:
    """Exit 1 with one line when ``target`` cannot be written (see unwritable_reason)."""
    reason = unwritable_reason(target, folder)
    if reason is not None:
        raise fail(reason)


def memory_problem(height: int, width: int, settings: Any, tile_size: int, label: str) -> str | None:
    """A one-line refusal when refining a ``width`` x ``height`` image would not fit in the memory
    available now (with a cheaper setting to try when one would fit), or None."""
    from ..runtime import available_memory_bytes, estimate_refine_bytes, format_bytes

    available = available_memory_bytes()
    full = bool(getattr(settings, "full_decode", False))
    needed = estimate_refine_bytes(height, width, full_decode=full, tile_size=tile_size)
    if available is None or needed <= available:
        return None
    message = (f"{label} is {width}x{height} ({width * height / 1e6:.0f} MP): refining it needs about "
               f"{format_bytes(needed)} of memory, but {format_bytes(available)} is available")
    cheaper: list[tuple[str, bool, int]] = []  # (options to try, full_decode, tile size)
    if full:
        cheaper.append(("--preset balanced", False, tile_size))
    if tile_size > 512:
        cheaper.append(("--tile-size 512", full, 512))
        if full:
            cheaper.append(("--preset balanced --tile-size 512", False, 512))
    for option, full_decode, tile in cheaper:
        if estimate_refine_bytes(height, width, full_decode=full_decode, tile_size=tile) <= available:
            return f"{message}; try {option}"
    return f"{message}; free memory, or downscale or crop the image"


def probe_pair(image: Any, mask: Any, image_name: str, mask_name: str) -> tuple[Any, bool]:
    """Headers of an image and its mask checked for readability and fitting sizes, before any
    pixel is decoded. Returns (image header, whether the mask will be upsampled).

    Raises ImageReadError or SizeMismatchError with a message naming the user's file(s).
    """
    from ..imageio import probe_image
    from ..masks import check_pair_headers

    image_header = probe_image(image, name=image_name)
    mask_header = probe_image(mask, name=mask_name)
    return image_header, check_pair_headers(image_header, mask_header, image_name, mask_name)


def too_small(header: Any) -> bool:
    """True when an image is below MIN_REFINE_SIDE and its mask is passed through unchanged."""
    return min(header.width, header.height) < MIN_REFINE_SIDE


def passthrough_note(width: int, height: int, label: str) -> str:
    """The warning for an image too small to refine."""
    return (f"{label} is {width}x{height}, under the {MIN_REFINE_SIDE}-px minimum side crm refines; "
            "the mask is written unchanged")


def precheck_pair(image: Any, mask: Any, image_name: str, mask_name: str, settings: Any,
                  tile_size: int) -> tuple[str | None, bool]:
    """Header, size and memory checks of one pair before the model loads.

    Returns (the error to report or None, whether the pair is too small and passed through).
    """
    from ..imageio import ImageReadError
    from ..masks import SizeMismatchError

    try:
        header, _ = probe_pair(image, mask, image_name, mask_name)
    except (ImageReadError, SizeMismatchError) as exc:
        return str(exc), False
    if too_small(header):
        return None, True
    return memory_problem(header.height, header.width, settings, tile_size, image_name), False


def passthrough_pair(image: Any, mask: Any, *, mode: str, output_kind: str, threshold: float | None,
                     image_name: str, mask_name: str):  # noqa: ANN201 - pipeline.PairResult
    """The output of a pair too small to refine: the coarse mask itself, rendered as asked
    (label maps keep their ids and palette). No model is needed."""
    import time

    from ..outputs import render_output
    from ..pipeline import PairResult, choose_mode, read_pair

    start = time.perf_counter()
    rgb, mask_data, notes = read_pair(image, mask, image_name, mask_name)
    chosen = choose_mode(mask_data, mode)
    if chosen == "labels":
        output, palette, probability = mask_data.values, mask_data.palette, None
    else:
        probability = mask_data.probability()
        output = render_output(output_kind, probability, image=rgb, coarse=probability, threshold=threshold)
        palette = None
    return PairResult(output=output, palette=palette, mode=chosen, seconds=time.perf_counter() - start,
                      probability=probability, notes=notes)


def schedule_fields(result: Any) -> dict[str, Any]:
    """JSON fields naming the stages a ``pipeline.PairResult`` ran (per label for label maps)."""
    from ..pipeline import schedule_label

    if not result.ratios:
        return {"schedule": None}
    fields: dict[str, Any] = {"schedule": schedule_label(result.ratios), "guard_restored": result.guard_restored}
    if result.mode == "labels":
        fields["label_ratios"] = [list(r) for r in result.ratios]
    else:
        fields["ratios"] = list(result.ratios[0])
    return fields
