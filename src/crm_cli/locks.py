"""Per-output lock files, so that two ``crm batch`` runs on one folder never refine the same pair.

The lock for ``out/a.png`` is ``out/.a.png.lock``, created with ``O_CREAT | O_EXCL`` (atomic on
local file systems and on NFSv3+), holding ``<pid> <hostname> <token>``; where that name would be
longer than the folder allows (an output name of 250 bytes), the output's name in it is shortened,
with a digest of the whole, so it stays the lock of that output alone (:func:`lock_path`). A lock
is stale, and taken over, when:

- its process is gone (same host, pid not running), e.g. after ``kill -9``;
- it names this process's pid on this host but this process does not hold it (a container where
  crm runs as pid 1 again, under the same hostname);
- it has not been touched for ``STALE_LOCK_AGE_S``, whatever its host: a node that crashed, or a
  container whose hostname changed. A live holder refreshes its lock's mtime every
  ``LOCK_REFRESH_S``, so however long one refinement takes, its lock never looks stale.

The token tells a holder's own lock from one that another run took over meanwhile, so a holder
never refreshes or removes a lock that is no longer its own. :func:`folder_time_ns` reads the
clock that stamps the outputs, so that ``--overwrite`` can tell an output a concurrent run made
from one that was there before.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .containers import read_words

LOCK_PREFIX = "."
LOCK_SUFFIX = ".lock"
# Beside a stale lock, the file that guards its takeover: the lock's name and this.
TAKEOVER_SUFFIX = ".takeover"
# A lock file without a pid is being written; older than this, its writer died before finishing.
EMPTY_LOCK_GRACE_S = 60.0
# A lock untouched for this long is stale whatever its host. Holders refresh every LOCK_REFRESH_S,
# so only a dead holder (or a pre-refresh crm) lets a lock get this old; 30 minutes leaves ample
# room for clock skew between NFS clients and for a holder paused for a while (SIGSTOP, a busy
# node), while a crashed node's pairs are picked up again by the next run the same day.
STALE_LOCK_AGE_S = 30 * 60.0
LOCK_REFRESH_S = 60.0

# Locks this process holds (absolute lock path -> token), refreshed by one background thread.
_held: dict[str, str] = {}
_held_changed = threading.Condition()
_refresher: threading.Thread | None = None


def lock_path(output: str | Path) -> Path:
    """``dir/name.png`` -> ``dir/.name.png.lock``; where that would be longer than the folder allows,
    ``name.png`` is shortened in it (writing.fitted_name: its beginning and a digest of the whole)."""
    from .writing import name_leaving_room  # here: locks itself needs only the standard library

    output = Path(output)
    shown = name_leaving_room(output, len(LOCK_PREFIX) + len(LOCK_SUFFIX))
    return output.with_name(f"{LOCK_PREFIX}{shown}{LOCK_SUFFIX}")


def takeover_path(lock: Path) -> Path:
    """The file that guards the takeover of the stale ``lock``: ``.name.png.lock.takeover``, the lock's
    name shortened as lock_path shortens an output's where the whole would not fit."""
    from .writing import name_leaving_room

    return lock.with_name(f"{name_leaving_room(lock, len(TAKEOVER_SUFFIX))}{TAKEOVER_SUFFIX}")


def _pid_running(pid: int) -> bool:
    """True when a process with this id exists (signal 0 probes without sending anything; on Windows,
    where 0 is CTRL_C_EVENT and no probe, :func:`_windows_pid_running`)."""
    if pid <= 0:
        return False
    if os.name == "nt":
        return _windows_pid_running(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists but belongs to another user
    except OSError:
        return True
    return True


# OpenProcess's right to read a process's exit code, the code of one still running, and the errors
# for a process that exists but is another user's and for an id that names none.
_QUERY_LIMITED_INFORMATION = 0x1000
_STILL_ACTIVE = 259
_ERROR_ACCESS_DENIED = 5


def _windows_pid_running(pid: int, kernel32: Any = None, last_error: Callable[[], int] | None = None) -> bool:
    """Whether process ``pid`` exists on Windows, asked through a handle to it: ``os.kill(pid, 0)`` there
    sends CTRL_C_EVENT to a console process group, and fails alike for a dead process and a live one.
    An answer that cannot be had counts as running (the lock then waits out its age). ``kernel32`` and
    ``last_error``: Windows' own, unless given (tests)."""
    import ctypes

    if kernel32 is None:
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        last_error = ctypes.get_last_error  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        return last_error is not None and last_error() == _ERROR_ACCESS_DENIED
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _key(path: Path) -> str:
    """The key of a lock in ``_held``: its absolute path."""
    return os.path.abspath(path)


def _age(path: Path) -> float | None:
    """Seconds since ``path`` was last modified, or None when it is gone."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return None


def _held_by(path: Path, token: str) -> bool:
    """Whether the lock file at ``path`` still carries ``token`` (no other run has taken it over)."""
    fields = read_words(path)
    return fields is not None and fields[2:3] == [token]


def _lock_line(token: str) -> str:
    """A lock file's content: this process's pid and host, and the holder's token."""
    return f"{os.getpid()} {socket.gethostname()} {token}\n"


def _owner(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a lock file, or None when it is unreadable or half-written."""
    fields = read_words(path)
    if not fields:
        return None
    try:
        return int(fields[0]), fields[1] if len(fields) > 1 else ""
    except ValueError:
        return None


def _is_stale(path: Path) -> bool:
    """See OutputLock.is_stale."""
    age = _age(path)
    if age is None:
        return False  # gone already: the caller's next O_EXCL create decides
    owner = _owner(path)
    if owner is None:
        return age > EMPTY_LOCK_GRACE_S
    if age > STALE_LOCK_AGE_S:
        return True
    pid, host = owner
    if host not in ("", socket.gethostname()):
        return False  # maybe alive on its host; only its age can tell
    if pid == os.getpid():
        with _held_changed:
            return _key(path) not in _held
    return not _pid_running(pid)


def _refresh_held_locks() -> None:
    """Body of the refresher thread: touch every held lock each LOCK_REFRESH_S; exits when none is held."""
    global _refresher
    while True:
        with _held_changed:
            _held_changed.wait(LOCK_REFRESH_S)  # woken early when a lock is taken or the last one released
            if not _held:
                _refresher = None
                return
            held = list(_held.items())
        for key, token in held:
            path = Path(key)
            if _held_by(path, token):
                try:
                    os.utime(path)
                except OSError:
                    pass  # released meanwhile, or the folder went away: nothing to keep alive


def _hold(path: Path, token: str) -> None:
    """Record a lock as held by this process, and make sure the refresher runs."""
    global _refresher
    with _held_changed:
        _held[_key(path)] = token
        if _refresher is None or not _refresher.is_alive():
            refresher = threading.Thread(target=_refresh_held_locks, name="crm-lock-refresh", daemon=True)
            try:
                refresher.start()
            except RuntimeError:  # no thread to be had (a container's pids limit): the lock holds
                return  # without refreshes until it is STALE_LOCK_AGE_S old, longer than most pairs take
            _refresher = refresher
        else:
            # The refresher touches every held lock now and then waits LOCK_REFRESH_S again (so a
            # changed interval applies at once).
            _held_changed.notify_all()


def _unhold(path: Path) -> None:
    """Forget a lock this process held; the refresher ends once none is left."""
    with _held_changed:
        _held.pop(_key(path), None)
        if not _held:
            _held_changed.notify_all()


def abandoned(output: str | Path) -> bool:
    """Whether nobody is making ``output`` any more: its lock is gone (released by a run that did not
    finish it) or may be taken over (see OutputLock.is_stale: its holder has died, say)."""
    path = lock_path(output)
    return not (path.exists() or path.is_symlink()) or _is_stale(path)


def describe_holder(output: str | Path) -> str:
    """Who holds the lock of ``output`` and since when, for messages: "pid 12 on node3, 4 min old"."""
    path = lock_path(output)
    owner, age = _owner(path), _age(path)
    who = "being created" if owner is None else f"pid {owner[0]} on {owner[1] or 'an unnamed host'}"
    if age is None:
        return f"{who}, just released"
    minutes = max(0, int(age // 60))
    return f"{who}, {minutes} min old"


def folder_time_ns(folder: str | Path) -> int:
    """Now, by the clock that stamps files in ``folder`` (:func:`probe_folder_time_ns`); this
    machine's clock when the folder cannot be written.

    Comparing outputs' mtimes with it needs no agreement between the clocks of the nodes that share
    the folder (a network file system stamps files by the server's), and a file system's coarse
    timestamps (1 or 2 s on some) round both alike, so an output written later is never older
    (though it may be stamped the same).
    """
    probed = probe_folder_time_ns(folder)
    return time.time_ns() if probed is None else probed


def probe_folder_time_ns(folder: str | Path) -> int | None:
    """The mtime of an empty file made in ``folder`` and removed again, or None when none can be made."""
    # A write_atomic temp name, ``.crm-clock.<hex>.tmp`` (the name it always had): hidden, so a probe
    # left behind (its removal failed) is never paired as an input, and as no output is called
    # "crm-clock", writing.leftover_temp_files never lists it.
    from .writing import discard, temp_path  # here: locks itself needs only the standard library

    probe = temp_path(Path(folder) / "crm-clock")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return None
    try:
        return os.fstat(fd).st_mtime_ns
    except OSError:
        return None
    finally:
        os.close(fd)
        discard(probe)


class FolderClocks:
    """Now by the clock of each folder (:func:`probe_folder_time_ns`), probed once per folder and
    again only when a file is stamped later than the last reading.

    A file system's clock does not go back during a run, so a reading stays a lower bound of its
    "now": a file stamped no later than it was stamped in the past, with no file made and removed
    to say so. Only a later stamp (a file written since, or one stamped in the future) needs a new
    probe, and a folder whose clock cannot be read is probed again for each such stamp. One instance
    serves one run (with Ray, each actor holds a copy of the driver's).
    """

    def __init__(self) -> None:
        self._readings: dict[Path, int] = {}
        self._read_at: dict[Path, int] = {}  # time.monotonic_ns() of each reading

    def after_now(self, folder: str | Path, stamped_ns: int) -> bool:
        """True when ``stamped_ns`` is after now by ``folder``'s clock (a file stamped in the future);
        False when it is not, or when that clock cannot be read. A stamp later than the last reading by
        more than the time since it (and a 2 s margin) is in the future without another probe, so a
        folder of future-stamped photos costs one probe, not one per photo."""
        key = Path(folder).absolute()
        reading = self._readings.get(key)
        if reading is not None:
            if stamped_ns <= reading:
                return False
            if stamped_ns > reading + time.monotonic_ns() - self._read_at[key] + 2 * 10**9:
                return True
        probed = self._probe(key)
        return probed is not None and stamped_ns > probed

    def _probe(self, key: Path) -> int | None:
        """Now by the clock of the folder ``key`` (absolute), kept as its latest reading; None when it
        cannot be read."""
        probed = probe_folder_time_ns(key)
        if probed is not None:
            self._readings[key], self._read_at[key] = probed, time.monotonic_ns()
        return probed

    def not_in_future(self, folder: str | Path, stamped_ns: int) -> bool:
        """True when ``stamped_ns`` is not after now by ``folder``'s clock; False when it is, or
        when that clock cannot be read (no file can be made in ``folder``)."""
        key = Path(folder).absolute()  # the driver and the jobs name one folder differently
        reading = self._readings.get(key)
        if reading is not None and stamped_ns <= reading:
            return True
        probed = self._probe(key)
        return probed is not None and stamped_ns <= probed


class OutputLock:
    """An exclusive claim on one output path; use :meth:`acquire` / :meth:`release` or ``with``.

    Example:
        >>> lock = OutputLock("out/a.png")
        >>> if lock.acquire():
        ...     try: write()
        ...     finally: lock.release()
    """

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.path = lock_path(output)
        self.held = False
        self._token = uuid.uuid4().hex[:16]

    def _create(self) -> bool:
        """Create the lock file if none exists (O_EXCL); False when one does."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                # Registered before its content is written, so this process never sees its own lock as
                # stale; inside the try, since registering starts the refresher thread, which a
                # container's pids limit can refuse (the empty file was left, and the pair was then
                # reported in progress by other runs).
                _hold(self.path, self._token)
                handle.write(_lock_line(self._token))
        except BaseException:
            _unhold(self.path)
            self.path.unlink(missing_ok=True)
            raise
        self.held = True
        return True

    def is_stale(self) -> bool:
        """True when the lock may be taken over: its process no longer runs (this host), it names
        this process but this process does not hold it, it is older than ``STALE_LOCK_AGE_S``
        (any host), or it was left empty more than ``EMPTY_LOCK_GRACE_S`` ago."""
        return _is_stale(self.path)

    def acquire(self) -> bool:
        """Take the lock; False when another live process holds it. Raises ImageWriteError (an
        OSError, with the failure's errno) naming the output if the folder cannot be written (a full
        disk, no permission)."""
        from .writing import write_failure

        try:
            return self._acquire()
        except OSError as exc:
            raise write_failure(self.output, exc) from None

    def _acquire(self) -> bool:
        """:meth:`acquire`, with the file system's own errors."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._create():
            return True
        if not self.is_stale():
            return False
        # Taking over a dead owner's lock is itself guarded by an O_EXCL file, so that of two
        # processes racing for one stale lock only one removes it (the other would otherwise
        # delete the fresh lock the first one just made).
        guard = takeover_path(self.path)
        try:
            fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _is_stale(guard):
                guard.unlink(missing_ok=True)  # its owner died mid-takeover; the next try wins
            return False
        _hold(guard, self._token)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(_lock_line(self._token))
            if self.path.exists() and not self.is_stale():  # someone took it over in between
                return False
            self.path.unlink(missing_ok=True)
            return self._create()
        finally:
            _unhold(guard)
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this object holds it (and no other run has taken it over)."""
        if not self.held:
            return
        self.held = False
        _unhold(self.path)
        if _held_by(self.path, self._token):
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
