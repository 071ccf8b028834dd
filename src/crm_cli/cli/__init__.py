"""The ``crm`` command line: a thin Typer layer over the Python API.

Heavy modules (torch, cv2) are imported inside the command bodies so ``crm --help`` is instant.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__


class CrmGroup(TyperGroup):
    """The ``crm`` command group: usage errors print one line plus a hint (no box, no usage dump)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Run the CLI; in standalone mode, exit with the command's code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        from rich.markup import escape

        from .common import click_module, console, usage_hint

        errors = click_module("exceptions")
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except errors.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `crm`: the help, as click prints it
                typer.echo(exc.format_message(), err=True)
                sys.exit(exc.exit_code)
            console.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False)
            console.print(usage_hint(exc.ctx.command_path if exc.ctx else None), style="dim", highlight=False)
            sys.exit(exc.exit_code)
        except errors.ClickException as exc:
            console.print(f"[bold red]error:[/] {escape(exc.format_message())}", highlight=False)
            sys.exit(exc.exit_code)
        except typer.Abort:
            console.print("aborted", highlight=False)
            sys.exit(1)
        # Without standalone mode click returns the code of a typer.Exit (None after success).
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"crm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Refine segmentation masks of 2K-6K images; see each command's --help."""


def _register() -> None:
    from . import batch, coco, compare, evaluate, info, refine, score, timing, train

    for module in (refine, batch, coco, score, evaluate, timing, train, info, compare):
        module.register(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
