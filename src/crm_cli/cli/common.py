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
                 help="Where to run: auto picks CUDA, then MPS, then CPU. A missing explicit device is an error."),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", envvar="CRM_WEIGHTS", dir_okay=False, rich_help_panel="Compute",
                 help="Checkpoint (.safetensors or training .pt). Default: the shipped weights."),
]
RatiosOpt = Annotated[
    str | None,
    typer.Option("--ratios", rich_help_panel="Quality",
                 help="Comma-separated increasing stage ratios, e.g. 0.125,0.25,0.5,1. Overrides --preset."),
]
PresetOpt = Annotated[
    PresetName,
    typer.Option("--preset", case_sensitive=False, rich_help_panel="Quality",
                 help="fast: 3 stages; balanced (default): 4 stages, later ones only near the boundary; "
                      "quality: 4 stages decoded in full, like the reference code."),
]
PrecisionOpt = Annotated[
    Precision,
    typer.Option("--precision", case_sensitive=False, rich_help_panel="Compute",
                 help="Encoder precision; fp16/bf16 are for GPUs (non-finite tiles are redone in fp32)."),
]
ThreadsOpt = Annotated[
    int,
    typer.Option("--threads", min=0, envvar="CRM_THREADS", rich_help_panel="Compute",
                 help="CPU threads (0 = torch's default: the physical cores)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log lines on stderr.")]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red error line on stderr and return the Exit to raise."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
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
    except (ImageReadError, FileNotFoundError, ValueError, DeviceError, OSError, WeightsError) as exc:
        message = str(exc)
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower():
            raise
        message = f"{exc}. Try --device cpu, a smaller --tile-size or the 'fast' preset."
    if on_error is not None:
        on_error(message)
    raise fail(message) from None


def resolve_preset(ratios: str | None, preset: PresetName):  # noqa: ANN201 - presets.Preset
    """The chosen preset, with explicit ``--ratios`` replacing its ratios."""
    from ..presets import PRESETS

    return PRESETS[preset.value].with_ratios(parse_ratios(ratios))


def load_refiner(weights: Path | None, device: Device, quiet: bool = False, **kwargs: Any):  # noqa: ANN201
    """Build the Refiner once per process and log the device on stderr."""
    from ..engine import Refiner

    refiner = Refiner(weights, device=device.value, **kwargs)
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
