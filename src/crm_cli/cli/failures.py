"""Expected failures as one line and an exit code (``user_errors``), and torch failing to import."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

from ..errors import MEMORY_ADVICE as MEMORY_ADVICE  # re-exported: the commands and tests import it from here
from ..errors import first_line, message_of
from ..errors import out_of_memory_message as out_of_memory_message  # re-exported, as MEMORY_ADVICE
from ..errors import shortage_message as shortage_message  # re-exported for batch
from .output import CLOSED_STDOUT, discard_stdout, fail
from .stops import stop_behind

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
        # (stderr's never gets here: output.DroppingStderr drops what comes after it.)
        discard_stdout()
        message = CLOSED_STDOUT
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
