"""A benchmark's expected failures as one ``error:`` line (exit code 1), not a traceback.

What a script lacks on this machine (a GPU, a weights file, a data folder, a file in it) is the
user's to fix, so it is said in crm's own words. Shared by the scripts that choose a device, load
weights or read sets in their own process (run as scripts, this folder is on ``sys.path``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

Params = ParamSpec("Params")
Result = TypeVar("Result")


def one_line_errors(main: Callable[Params, Result]) -> Callable[Params, Result]:
    """``main`` with crm's expected failures raised as ``SystemExit("error: ...")``: a device that is
    not present (``devices.DeviceError``), weights that cannot be loaded (``checkpoint.WeightsError``),
    an unreadable image (``imageio.ImageReadError``), a missing file or a folder without pairs
    (``FileNotFoundError``, which ``pairing.NoPairsError`` is)."""

    @functools.wraps(main)
    def run(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        from crm_cli.checkpoint import WeightsError
        from crm_cli.devices import DeviceError
        from crm_cli.imageio import ImageReadError

        try:
            return main(*args, **kwargs)
        except (DeviceError, WeightsError, ImageReadError, FileNotFoundError) as error:
            raise SystemExit(f"error: {error}") from None

    return run
