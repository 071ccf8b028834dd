"""The ``crm`` command line: a thin Typer layer over the Python API.

Heavy modules (torch, cv2) are imported inside the command bodies so ``crm --help`` is instant.
Importing this package loads nothing more: typer and the commands' modules (0.2 s of every run's
start) load when :func:`main` first runs or ``app`` is first asked for, so that a Ctrl-C while they
load exits 130 without a traceback, as a Ctrl-C does once a command runs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

# 128 + SIGINT: the exit code of a Ctrl-C, as typer gives it and stops.stops_cleanly does.
INTERRUPTED_EXIT = 130

_app: typer.Typer | None = None


def registered_app() -> typer.Typer:
    """The ``crm`` Typer app with every command registered (built once, on first use)."""
    global _app
    if _app is None:
        from . import batch, coco, compare, evaluate, group, info, refine, score, timing, train

        application = group.new_app()
        for module in (refine, batch, coco, score, evaluate, timing, train, info, compare):
            module.register(application)
        _app = application
    return _app


def __getattr__(name: str) -> Any:
    """``app``: :func:`registered_app` (``from crm_cli.cli import app`` keeps working)."""
    if name == "app":
        return registered_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def hold_standard_descriptors() -> None:
    """Open the null device on each of descriptors 0-2 the process started without (``crm ... >&-``).

    Otherwise the next file opened gets that number, and whatever a library writes to "stdout" or
    "stderr" at the C level lands in it (an output image being written, say). ``sys.stdout`` and
    the others stay None, so the commands still see the stream as closed and say so when they need it.
    """
    import os

    for descriptor in (0, 1, 2):
        try:
            os.fstat(descriptor)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != descriptor:  # the lowest free number, so this one: the lower ones are open by now
                os.dup2(opened, descriptor)
                os.close(opened)


# The exit codes of a command stopped by SIGHUP, Ctrl-C (SIGINT) or SIGTERM: 128 + the signal's number.
STOPPED_EXITS = (129, INTERRUPTED_EXIT, 143)


def end_at_once_on_another_stop(code: int) -> None:
    """For the rest of a process whose command was stopped by Ctrl-C, SIGTERM or SIGHUP (its cleanup is
    done): another one ends it at once with the same exit ``code``. Otherwise a second Ctrl-C met the
    interpreter's shutdown, which joins the threads still running (a traceback; a hang that only it
    could end), and a second SIGTERM turned the exit code into the signal's own."""
    import os
    import signal

    for stream in (sys.stdout, sys.stderr):  # what was printed before stays, whatever comes
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass

    def end_now(signum: int, frame: object) -> None:
        os._exit(code)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), end_now)


def main() -> None:
    """Console-script entry point."""
    hold_standard_descriptors()
    try:
        application = registered_app()
        application()
    except KeyboardInterrupt:  # while typer and the commands load; a command's own Ctrl-C is typer's Exit(130)
        end_at_once_on_another_stop(INTERRUPTED_EXIT)
        sys.exit(INTERRUPTED_EXIT)
    except SystemExit as end:
        if end.code in STOPPED_EXITS:
            end_at_once_on_another_stop(end.code)
        raise
