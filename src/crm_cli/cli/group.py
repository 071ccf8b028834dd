"""The ``crm`` command group: the Typer app, ``--version``, empty paths refused, usage errors in one line."""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import ContinuedText
from .output import click_module, console, discard_stdout, fail, printable, stderr_may_close, usage_hint


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
                if not param.type.exists and param.type.file_okay:
                    # crm opens these itself and names an unreadable file as it names a missing one
                    # (exit 1); click would call it a usage error (2), and refuse an output it may replace.
                    # A folder argument's readability is checked by the command (options.require_existing,
                    # require_readable_folder); a folder-only option (train --out) keeps click's check.
                    param.type.readable = False
        return name, command, rest

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the CLI; in standalone mode, exit with the command's code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from rich.markup import escape

        errors = click_module("exceptions")
        with stderr_may_close():  # a reader of stderr that goes away stops no command
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
            except OSError as exc:
                if not _written_by_echo(exc):
                    raise
                # The help or the version (`crm --help > /dev/full`; click ends a closed pipe, EPIPE, itself).
                discard_stdout()
                sys.exit(fail(f"cannot write to standard output: {exc.strerror or exc}").exit_code)
            # Without standalone mode click returns the code of a typer.Exit (None after success).
            sys.exit(code if isinstance(code, int) else 0)


def _written_by_echo(exc: OSError) -> bool:
    """Whether ``exc`` is click's ``echo`` failing to write (its last Python frame): the help or the
    version, which click and ``--version`` print on stdout while the options are parsed."""
    trace = exc.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    return trace.tb_frame.f_code.co_name == "echo"


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
