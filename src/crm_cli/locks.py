"""Per-output lock files, so that two ``crm batch`` runs on one folder never refine the same pair.

The lock for ``out/a.png`` is ``out/.a.png.lock``, created with ``O_CREAT | O_EXCL`` (atomic on
local file systems and on NFSv3+), holding ``<pid> <hostname>``. A lock whose process is gone
(same host, pid not running) is stale, e.g. after ``kill -9``; it is taken over.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import TracebackType

LOCK_PREFIX = "."
LOCK_SUFFIX = ".lock"
# A lock file without a pid is being written; older than this, its writer died before finishing.
EMPTY_LOCK_GRACE_S = 60.0


def lock_path(output: str | Path) -> Path:
    """``dir/name.png`` -> ``dir/.name.png.lock``."""
    output = Path(output)
    return output.with_name(f"{LOCK_PREFIX}{output.name}{LOCK_SUFFIX}")


def _pid_running(pid: int) -> bool:
    """True when a process with this id exists (signal 0 probes without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    except OSError:
        return True
    return True


def _is_stale(path: Path) -> bool:
    """See OutputLock.is_stale."""
    owner = _owner(path)
    if owner is None:
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return False  # gone already: the caller's next O_EXCL create decides
        return age > EMPTY_LOCK_GRACE_S
    pid, host = owner
    return host in ("", socket.gethostname()) and not _pid_running(pid)


def _owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a lock file, or None when it is unreadable or half-written."""
    try:
        fields = path.read_text(encoding="ascii", errors="replace").split()
        return int(fields[0]), fields[1] if len(fields) > 1 else ""
    except (OSError, ValueError, IndexError):
        return None


class OutputLock:
    """An exclusive claim on one output path; use :meth:`acquire` / :meth:`release` or ``with``.

    Example:
        >>> lock = OutputLock("out/a.png")
        >>> if lock.acquire():
        ...     try: write()
        ...     finally: lock.release()
    """

    def __init__(self, output: str | Path) -> None:
        self.path = lock_path(output)
        self.held = False

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        self.held = True
        return True

    def is_stale(self) -> bool:
        """True when the lock names a process of this host that no longer runs, or was left empty
        (its creator died before writing its pid) more than ``EMPTY_LOCK_GRACE_S`` ago."""
        return _is_stale(self.path)

    def acquire(self) -> bool:
        """Take the lock; False when another live process holds it. Raises OSError if the folder
        cannot be written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return True
        if not self.is_stale():
            return False
        # Taking over a dead owner's lock is itself guarded by an O_EXCL file, so that of two
        # processes racing for one stale lock only one removes it (the other would otherwise
        # delete the fresh lock the first one just made).
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _is_stale(guard):
                guard.unlink(missing_ok=True)  # its owner died mid-takeover; the next try wins
            return False
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(f"{os.getpid()} {socket.gethostname()}\n")
            if self.path.exists() and not self.is_stale():  # someone took it over in between
                return False
            self.path.unlink(missing_ok=True)
            return self._create()
        finally:
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this object holds it."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
