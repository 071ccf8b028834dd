"""What the commands print: stderr's console and lines (say, warn, error:), kept warnings, stdout's JSON records."""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TextIO

import typer
from rich.console import Console

from ..errors import ContinuedText

# Logs, progress and tables go to stderr; stdout carries data only.
# No emoji codes: a name holding ":smile:" or ":x:" is printed as given, not as a picture.
console = Console(stderr=True, soft_wrap=True, emoji=False)


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
    them). Inside such a block a note it already holds is not shown again."""
    from rich.markup import escape

    from ..photo_depth import cli_note

    # A reader's note names photo_bits=; the command's option is --photo-bits, and crm train has none.
    note = cli_note(note, _running_command_has("photo_bits"))
    collected = _warning_lists.get()
    if collected and note in collected[-1]:
        return  # said already for this image (a label map's labels are refined one by one)
    for shown in collected:
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
    weights, which are about no image (see options.RefinerOptions.load).

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
        """With ``--json``, print the record of ``message`` on stdout (the ``on_error`` of failures.user_errors),
        unless this record was printed already."""
        if self.json_out and not self.printed:
            self.printed = True
            try:
                _write_json(self.fields({"status": "failed", "error": message}))
            except OSError:
                # stdout cannot take the record (a full disk, a closed pipe): the error line that
                # follows still gives the cause, with the command's own exit code.
                discard_stdout()

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


def require_stdout(what: str) -> None:
    """Exit 1 with one line, before any work, when ``what`` (an option that writes to stdout: "--json",
    "-o -") would write to a standard output the process started without (``crm ... >&-``): a
    destination the environment does not provide, as an output folder that cannot be written, not a
    wrong command line."""
    if sys.stdout is None:
        raise fail(f"{what} writes to standard output, but standard output is closed")


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


# The error line of a stdout whose reader went away before crm had written all of its output.
CLOSED_STDOUT = "standard output was closed before the output was written"


def emit_json(payload: Any) -> None:
    """Write one JSON document on stdout: strict JSON, so a non-finite number is written as null
    (Python would write NaN, which jq and most parsers refuse). A stdout that cannot take it is one
    ``error:`` line and exit 1."""
    try:
        _write_json(payload)
    except BrokenPipeError as exc:
        from .stops import stop_behind  # stops imports this module

        if stop_behind(exc):  # a stop unwinding: stops_cleanly reports it
            raise
        # The reader went away (`| head`, `| true`), as user_errors says of one during the work.
        discard_stdout()
        raise fail(CLOSED_STDOUT) from None
    except OSError as exc:  # `> /dev/full`, a full disk, a file system that failed
        discard_stdout()
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


def discard_stdout() -> None:
    """Point stdout at /dev/null after a write to it failed: the unwritten bytes may stay buffered,
    and Python's final flush could fail on them again and print a second error. A stdout that is no
    file (an embedding application's stream) is left alone."""
    _point_at_null(sys.stdout)


def _point_at_null(stream: TextIO | None) -> bool:
    """Point the descriptor under ``stream`` at /dev/null; False when it has none (None for a
    descriptor closed from the start, or an embedding application's stream)."""
    import os

    if stream is None:
        return False
    try:
        fileno = stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)
    return True


class DroppingStderr:
    """``sys.stderr`` while a command runs (:func:`stderr_may_close`): the stream it wraps, until a
    write to it fails because its reader went away (EPIPE: ``crm batch ... 2>&1 >out.json | grep -m1
    error``). From then on stderr is /dev/null and every message, a Rich console's or a logged one,
    is dropped: the run goes on, and stdout still gets its output and its ``--json`` record."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.dropping = False  # stderr's reader went away and no descriptor could be pointed elsewhere

    def write(self, text: str) -> int:
        """Write ``text``, or drop it once stderr's reader is gone."""
        if not self.dropping:
            try:
                return self.stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return len(text)

    def flush(self) -> None:
        """Flush the stream, or nothing once stderr's reader is gone."""
        if not self.dropping:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self._reader_gone()

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each of ``lines``, as :meth:`write` does."""
        for line in lines:
            self.write(line)

    def _reader_gone(self) -> None:
        """Point stderr at /dev/null, where the bytes still buffered go too (Python's final flush would
        fail on them, with exit code 120)."""
        if not _point_at_null(self.stream):
            self.dropping = True
            return
        try:
            self.stream.flush()
        except OSError:
            self.dropping = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)  # isatty, fileno, encoding...: the stream's own


@contextmanager
def stderr_may_close() -> Iterator[None]:
    """Inside, ``sys.stderr`` is a :class:`DroppingStderr`: a reader of stderr that goes away stops
    no command (a stdout whose reader goes away still does: its output is lost)."""
    stream = sys.stderr
    if stream is None or isinstance(stream, DroppingStderr):  # closed from the start (`2>&-`), or already
        yield
        return
    sys.stderr = DroppingStderr(stream)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stderr = stream
