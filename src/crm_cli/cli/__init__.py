"""The ``crm`` command line: a thin Typer layer over the Python API.

Heavy modules (torch, cv2) are imported inside the command bodies so ``crm --help`` is instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__

app = typer.Typer(
    name="crm",
    help="Refine segmentation masks of ultra-high-resolution images with CRM (Continuous Refinement Model).",
    no_args_is_help=True,
    rich_markup_mode="rich",
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
