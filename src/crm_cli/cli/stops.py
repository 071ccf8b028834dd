"""How a command stops on Ctrl-C, SIGTERM or SIGHUP: ``stops_cleanly`` and its stop line; and what
a killed one leaves, cleared by the next write of the same output (``clear_leftover_temp_files``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from .output import say, show_library_warnings, warn


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


def clear_leftover_temp_files(outputs: Iterable[Path], quiet: bool) -> None:
    """Remove the temp files that writes of ``outputs`` left when they were killed half-way (SIGKILL,
    a crash: no cleanup could run), once untouched for the stale-lock age (``locks.STALE_LOCK_AGE_S``),
    so that they belong to no live writer; one line on stderr says so, unless ``quiet``."""
    from ..locks import STALE_LOCK_AGE_S
    from ..writing import remove_leftover_temp_files

    removed = remove_leftover_temp_files(outputs, STALE_LOCK_AGE_S)
    if removed and not quiet:
        say(f"removed {len(removed)} leftover temp file(s) of interrupted writes, e.g. {removed[0]}")


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
