"""What a Linux container lets this process use: its cgroup's CPU quota and memory limit.

A container started with ``docker run --cpus 2`` or a Kubernetes CPU limit still shows every core of
its host to ``os.sched_getaffinity`` and ``os.cpu_count``, and torch and ONNX Runtime start one thread
per physical core of the host. The kernel then lets the threads run only for the quota's share of
each period and stops them all for the rest, mid-way through a parallel region. Measured on a 2-core
machine under a quota of one CPU (a 2048x1536 photo, onnx backend, median of 3): one thread 1.32 s,
two threads 1.66 s, sixteen 1.90 s; under a quota of 1.5 CPUs, two threads (1.16 s) still beat one
(1.47 s), so a quota counts as the CPUs it rounds up to. ``runtime.available_cpus`` bounds threads
by it.

Both cgroup versions are read: v2's ``cpu.max`` / ``memory.max`` and v1's ``cpu.cfs_quota_us`` /
``memory.limit_in_bytes``, in this process's own cgroup and in each cgroup above it up to its
hierarchy's mount (a parent's limit binds the children too), found from ``/proc/self/cgroup`` and
``/proc/self/mountinfo``. Every function takes the root it reads under, so tests build a fake tree;
anything missing or unreadable reads as "no limit".
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Where POSIX shared memory lives on Linux: torch's DataLoader workers hand each batch over in it.
SHARED_MEMORY = Path("/dev/shm")
# A v1 memory limit of at least this many bytes is the kernel's "unlimited" (2^63 rounded down to a page).
UNLIMITED_MEMORY_BYTES = 1 << 60


@dataclass(frozen=True)
class CgroupMount:
    """One mounted cgroup hierarchy: its version (1 or 2), the controllers of a v1 hierarchy, the
    cgroup path it shows at ``mount_point`` (``/`` unless the container sees a sub-tree), and where."""

    version: int
    controllers: frozenset[str]
    root: str
    mount_point: str


def read_words(path: Path) -> list[str] | None:
    """The whitespace-separated words of a small text file (a lock's pid, host and token; a cgroup
    setting), or None when it cannot be read."""
    try:
        return path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None


def parse_mountinfo(text: str) -> list[CgroupMount]:
    """The cgroup hierarchies listed in ``/proc/self/mountinfo`` text (other mounts are skipped)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        separator = fields.index("-")
        if separator < 5 or len(fields) < separator + 4:
            continue
        filesystem, super_options = fields[separator + 1], fields[separator + 3]
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        if filesystem == "cgroup2":
            mounts.append(CgroupMount(2, frozenset(), root, mount_point))
        elif filesystem == "cgroup":
            mounts.append(CgroupMount(1, frozenset(super_options.split(",")), root, mount_point))
    return mounts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """This process's cgroup path per v1 controller, and its v2 path under the key ``""``, from
    ``/proc/self/cgroup`` text (``hierarchy-id:controller,list:path`` lines)."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _unescape(field: str) -> str:
    """A mountinfo path field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def cgroup_folders(controller: str, root: Path = Path("/")) -> list[tuple[int, Path]]:
    """The folders (with their cgroup version) of this process's cgroup for ``controller``
    (``cpu``, ``memory``) and of each cgroup above it up to its hierarchy's mount, innermost first,
    read under ``root`` (``/`` on a live system). A v2 hierarchy counts for every controller: its
    files show whether the controller is on. Empty where nothing can be read."""
    try:
        mounts = parse_mountinfo((root / "proc/self/mountinfo").read_text(encoding="utf-8", errors="replace"))
        paths = parse_proc_cgroup((root / "proc/self/cgroup").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []
    folders: list[tuple[int, Path]] = []
    for mount in mounts:
        if mount.version == 1 and controller not in mount.controllers:
            continue
        path = paths.get(controller if mount.version == 1 else "")
        if path is None:
            continue
        base = root / mount.mount_point.lstrip("/")
        # A container that sees only its own sub-tree (a cgroup namespace, or v1 Docker's bind mount)
        # shows its cgroup as the mount's root; a path outside that root reads as the mount itself.
        inside = path[len(mount.root):] if _under(path, mount.root) else ""
        parts = [part for part in inside.split("/") if part]
        for depth in range(len(parts), -1, -1):
            folders.append((mount.version, base.joinpath(*parts[:depth])))
    return folders


def _under(path: str, root: str) -> bool:
    """True when cgroup ``path`` is ``root`` or inside it."""
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def cpu_quota(root: Path = Path("/")) -> float | None:
    """The CPUs this process's cgroups allow it on average (quota / period; 1.5 for ``--cpus 1.5``),
    the smallest along its cgroup and those above it, or None without a quota."""
    smallest: float | None = None
    for version, folder in cgroup_folders("cpu", root):
        if version == 2:
            words = read_words(folder / "cpu.max")
            quota_word, period_word = (words + [""])[:2] if words else ("max", "")
        else:
            quota_words = read_words(folder / "cpu.cfs_quota_us")
            period_words = read_words(folder / "cpu.cfs_period_us")
            quota_word = quota_words[0] if quota_words else "-1"
            period_word = period_words[0] if period_words else ""
        try:
            quota, period = int(quota_word), int(period_word)
        except ValueError:
            continue  # "max" (v2) or a file that is not there
        if quota > 0 and period > 0:
            share = quota / period
            smallest = share if smallest is None else min(smallest, share)
    return smallest


def quota_cpus(root: Path = Path("/")) -> int | None:
    """:func:`cpu_quota` as whole CPUs (rounded up, at least 1), or None without a quota."""
    quota = cpu_quota(root)
    return None if quota is None else max(1, math.ceil(quota - 1e-9))


def _inactive_file_bytes(folder: Path, version: int) -> int:
    """The inactive page cache of a cgroup (``memory.stat``: v2 ``inactive_file``, v1 its hierarchy's
    ``total_inactive_file``), 0 when it cannot be read."""
    name = "inactive_file" if version == 2 else "total_inactive_file"
    try:
        text = (folder / "memory.stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            try:
                return max(0, int(value))
            except ValueError:
                return 0
    return 0


def _limits_and_usage(controller: str, names: dict[int, tuple[str, str]],
                      root: Path) -> Iterator[tuple[int, Path, int, int]]:
    """(version, folder, limit, usage) of each of this process's cgroups for ``controller`` (its own and
    those above it) that sets a limit, read from the files ``names[version]`` names (limit, usage);
    a folder whose limit is "max" or whose files are not there is skipped."""
    for version, folder in cgroup_folders(controller, root):
        limit_name, usage_name = names[version]
        limit_words, usage_words = read_words(folder / limit_name), read_words(folder / usage_name)
        try:
            limit, usage = int(limit_words[0]), int(usage_words[0])  # type: ignore[index]
        except (TypeError, IndexError, ValueError):
            continue
        yield version, folder, limit, usage


def memory_headroom(root: Path = Path("/")) -> int | None:
    """Bytes this process's cgroups let it allocate now (limit less usage, the usage without its
    inactive page cache; the smallest along its cgroup and those above it), or None without a memory
    limit."""
    names = {1: ("memory.limit_in_bytes", "memory.usage_in_bytes"), 2: ("memory.max", "memory.current")}
    # Usage counts the page cache, which the kernel reclaims before it kills: a container that had just
    # written a 1.1 GB file read 281 MB free of 1.5 GB. Its inactive part is left out, as `docker stats`
    # and Kubernetes' working set do.
    return min((max(0, limit - usage + _inactive_file_bytes(folder, version))
                for version, folder, limit, usage in _limits_and_usage("memory", names, root)
                if limit < UNLIMITED_MEMORY_BYTES), default=None)


def pids_left(root: Path = Path("/")) -> int | None:
    """Processes and threads this process's cgroups let it start now (``pids.max`` less
    ``pids.current``, the smallest along its cgroup and those above it), or None without a limit."""
    names = dict.fromkeys((1, 2), ("pids.max", "pids.current"))
    return min((max(0, limit - current) for _, _, limit, current in _limits_and_usage("pids", names, root)),
               default=None)


def shared_memory_free(folder: Path = SHARED_MEMORY) -> int | None:
    """Bytes that can be written to POSIX shared memory (``/dev/shm``; Docker gives a container 64 MB
    unless ``--shm-size`` says otherwise): 0 on Linux when it is missing or read-only (torch's
    workers then fail to hand a batch over), None on other systems, which keep it elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        stats = os.statvfs(folder)
    except OSError:  # no /dev/shm
        return 0
    if stats.f_flag & os.ST_RDONLY or not os.access(folder, os.W_OK):
        return 0
    return stats.f_bavail * stats.f_frsize
