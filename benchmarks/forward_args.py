"""The ``--`` split of a benchmark's command line: its own options, then options passed on to crm.

Shared by ``choose_checkpoint.py`` and ``whole_process.py`` (run as scripts, this folder is on
``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence


def split_forwarded(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the arguments before the first ``--``, those after it); the second is empty without one."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    split = argv.index("--")
    return argv[:split], argv[split + 1:]
