"""A container's CPU quota and memory limit, read from fake /proc and /sys/fs/cgroup trees, and how
threads follow the quota."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from crm_cli import containers, runtime

V1_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 {cpu_root} /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 {memory_root} /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTS = "29 23 0:26 {root} /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def write(root: Path, relative: str, text: str) -> None:
    """Write ``text`` to ``root/relative``, making its folders."""
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_tree(root: Path, cgroup: str = "/docker/abc", cpu_root: str = "/", memory_root: str = "/") -> Path:
    """A cgroup v1 host's /proc/self files for a process in ``cgroup``."""
    write(root, "proc/self/mountinfo", V1_MOUNTS.format(cpu_root=cpu_root, memory_root=memory_root))
    write(root, "proc/self/cgroup", f"12:memory:{cgroup}\n4:cpu,cpuacct:{cgroup}\n1:name=systemd:{cgroup}\n0::/\n")
    return root


def v2_tree(root: Path, cgroup: str = "/kubepods/pod1/c1", mount_root: str = "/") -> Path:
    """A cgroup v2 host's /proc/self files for a process in ``cgroup``."""
    write(root, "proc/self/mountinfo", V2_MOUNTS.format(root=mount_root))
    write(root, "proc/self/cgroup", f"0::{cgroup}\n")
    return root


def test_mountinfo_lists_cgroup_hierarchies_with_their_controllers() -> None:
    mounts = containers.parse_mountinfo(V1_MOUNTS.format(cpu_root="/", memory_root="/docker/x"))
    assert [(m.version, m.mount_point, m.root) for m in mounts] == [
        (1, "/sys/fs/cgroup/cpu,cpuacct", "/"), (1, "/sys/fs/cgroup/memory", "/docker/x"),
        (2, "/sys/fs/cgroup/unified", "/")]
    assert {"cpu", "cpuacct"} <= mounts[0].controllers and "memory" not in mounts[0].controllers


def test_mountinfo_decodes_octal_escapes_and_skips_other_lines() -> None:
    text = "50 31 0:40 / /mnt/my\\040cgroups rw - cgroup2 none rw\nrubbish\n60 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
    (mount,) = containers.parse_mountinfo(text)
    assert mount.mount_point == "/mnt/my cgroups" and mount.version == 2


def test_proc_cgroup_maps_each_controller_and_the_unified_path() -> None:
    paths = containers.parse_proc_cgroup("4:cpu,cpuacct:/a/b\n12:memory:/m\n0::/u\nbad line\n")
    assert paths == {"cpu": "/a/b", "cpuacct": "/a/b", "memory": "/m", "": "/u"}


def test_v1_quota_is_the_smallest_along_the_cgroup_and_its_parents(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    base = "sys/fs/cgroup/cpu,cpuacct"
    write(root, f"{base}/cpu.cfs_quota_us", "-1\n")
    write(root, f"{base}/cpu.cfs_period_us", "100000\n")
    write(root, f"{base}/docker/cpu.cfs_quota_us", "300000\n")  # 3 CPUs for all containers
    write(root, f"{base}/docker/cpu.cfs_period_us", "100000\n")
    write(root, f"{base}/docker/abc/cpu.cfs_quota_us", "150000\n")  # --cpus 1.5
    write(root, f"{base}/docker/abc/cpu.cfs_period_us", "100000\n")
    assert containers.cpu_quota(root) == pytest.approx(1.5)
    assert containers.quota_cpus(root) == 2  # rounded up
    write(root, f"{base}/docker/cpu.cfs_quota_us", "50000\n")  # the parent's is smaller now
    assert containers.cpu_quota(root) == pytest.approx(0.5)
    assert containers.quota_cpus(root) == 1  # never 0


def test_v1_without_a_quota_reads_none(tmp_path: Path) -> None:
    root = v1_tree(tmp_path, cgroup="/")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert containers.cpu_quota(root) is None and containers.quota_cpus(root) is None


def test_v2_cpu_max_with_a_quota_and_without(tmp_path: Path) -> None:
    root = v2_tree(tmp_path)
    write(root, "sys/fs/cgroup/kubepods/cpu.max", "max 100000\n")
    write(root, "sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "250000 100000\n")  # a 2.5-CPU limit
    assert containers.cpu_quota(root) == pytest.approx(2.5)
    assert containers.quota_cpus(root) == 3
    write(root, "sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "max 100000\n")
    assert containers.cpu_quota(root) is None


def test_a_namespaced_container_reads_the_mount_itself(tmp_path: Path) -> None:
    # Inside a cgroup namespace the process is at "/" and the mount shows its own cgroup.
    root = v2_tree(tmp_path, cgroup="/")
    write(root, "sys/fs/cgroup/cpu.max", "100000 100000\n")
    assert containers.cpu_quota(root) == pytest.approx(1.0)


def test_a_path_outside_the_mounts_root_reads_the_mount_itself(tmp_path: Path) -> None:
    # v1 Docker without a namespace: /proc/self/cgroup names the host's path, the mount shows only it.
    root = v1_tree(tmp_path, cgroup="/docker/abc", cpu_root="/docker/abc")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "200000\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    assert containers.cgroup_folders("cpu", root) == [(1, root / "sys/fs/cgroup/cpu,cpuacct"),
                                                      (2, root / "sys/fs/cgroup/unified")]  # hybrid: v2 at "/"
    assert containers.cpu_quota(root) == pytest.approx(2.0)
    other = v1_tree(tmp_path / "other", cgroup="/elsewhere/x", cpu_root="/docker/abc")
    assert containers.cgroup_folders("cpu", other)[0] == (1, other / "sys/fs/cgroup/cpu,cpuacct")


def test_memory_headroom_v1_is_limit_less_usage_and_ignores_unlimited(tmp_path: Path) -> None:
    root = v1_tree(tmp_path)
    base = "sys/fs/cgroup/memory"
    write(root, f"{base}/memory.limit_in_bytes", "9223372036854771712\n")  # the kernel's "unlimited"
    write(root, f"{base}/memory.usage_in_bytes", "5000000000\n")
    write(root, f"{base}/docker/abc/memory.limit_in_bytes", str(2 << 30) + "\n")
    write(root, f"{base}/docker/abc/memory.usage_in_bytes", str(512 << 20) + "\n")
    assert containers.memory_headroom(root) == (2 << 30) - (512 << 20)
    write(root, f"{base}/docker/abc/memory.usage_in_bytes", str(3 << 30) + "\n")  # over: nothing left
    assert containers.memory_headroom(root) == 0


def test_memory_headroom_leaves_out_the_inactive_page_cache(tmp_path: Path) -> None:
    # A container that has just written a large file holds it as page cache, which the kernel
    # reclaims before it kills: v1's total_inactive_file and v2's inactive_file count as free.
    root = v1_tree(tmp_path / "v1")
    base = "sys/fs/cgroup/memory/docker/abc"
    write(root, f"{base}/memory.limit_in_bytes", str(1500 << 20))
    write(root, f"{base}/memory.usage_in_bytes", str(1220 << 20))
    write(root, f"{base}/memory.stat", f"cache 1150000000\ninactive_file 5\ntotal_inactive_file {1100 << 20}\n")
    assert containers.memory_headroom(root) == (1500 - 1220 + 1100) << 20
    root = v2_tree(tmp_path / "v2")
    base = "sys/fs/cgroup/kubepods/pod1/c1"
    write(root, f"{base}/memory.max", str(1 << 30))
    write(root, f"{base}/memory.current", str(900 << 20))
    write(root, f"{base}/memory.stat", f"anon 1000\nfile {700 << 20}\ninactive_file {600 << 20}\n")
    assert containers.memory_headroom(root) == (1024 - 900 + 600) << 20
    write(root, f"{base}/memory.stat", "inactive_file many\n")  # unreadable: counted as used
    assert containers.memory_headroom(root) == (1024 - 900) << 20


def test_memory_headroom_v2_smallest_along_parents_and_max(tmp_path: Path) -> None:
    root = v2_tree(tmp_path)
    base = "sys/fs/cgroup/kubepods"
    write(root, f"{base}/memory.max", str(4 << 30))
    write(root, f"{base}/memory.current", str(3 << 30))  # 1 GiB left for the whole pod group
    write(root, f"{base}/pod1/c1/memory.max", str(2 << 30))
    write(root, f"{base}/pod1/c1/memory.current", str(100 << 20))
    assert containers.memory_headroom(root) == 1 << 30
    write(root, f"{base}/memory.max", "max")
    assert containers.memory_headroom(root) == (2 << 30) - (100 << 20)
    write(root, f"{base}/pod1/c1/memory.max", "max")
    assert containers.memory_headroom(root) is None


def test_nothing_readable_means_no_limit(tmp_path: Path) -> None:
    assert containers.cgroup_folders("cpu", tmp_path) == []
    assert containers.cpu_quota(tmp_path) is None and containers.memory_headroom(tmp_path) is None
    root = v2_tree(tmp_path / "v2")
    write(root, "sys/fs/cgroup/kubepods/pod1/c1/cpu.max", "garbage here\n")
    assert containers.cpu_quota(root) is None


@pytest.fixture
def four_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that may run on 4 CPUs, with no OMP_NUM_THREADS."""
    monkeypatch.setattr(runtime, "scheduler_cpus", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def test_default_threads_follow_a_quota_below_the_cpus(four_cpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "quota_cpus", lambda: 2)
    assert runtime.available_cpus() == 2
    assert runtime.usable_threads(None) == 2 and runtime.usable_threads(0) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stands for torch's default
    assert runtime.usable_threads(None) is None


def test_default_threads_stay_the_libraries_own_without_a_binding_quota(four_cpus: None,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "quota_cpus", lambda: None)
    assert runtime.available_cpus() == 4 and runtime.usable_threads(None) is None
    monkeypatch.setattr(containers, "quota_cpus", lambda: 8)  # a quota above the CPUs in view binds nothing
    assert runtime.available_cpus() == 4 and runtime.usable_threads(None) is None
    assert runtime.usable_threads(3) == 3


def test_asked_threads_above_the_quota_are_bounded_with_a_warning_naming_it(
        four_cpus: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(containers, "quota_cpus", lambda: 1)
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert runtime.usable_threads(4) == 1
    assert "more than the 1 CPU this process may use (its container's CPU quota); using 1" in caplog.text
    caplog.clear()
    monkeypatch.setattr(containers, "quota_cpus", lambda: None)
    with caplog.at_level(logging.WARNING, logger="crm_cli"):
        assert runtime.usable_threads(6) == 4
    assert "more than the 4 CPUs this process may use; using 4" in caplog.text


def test_memory_estimate_takes_the_cgroups_headroom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "memory_headroom", lambda: 12345)
    assert runtime.available_memory_bytes() == 12345


def test_torch_threads_follow_the_quota_unless_asked(four_cpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(containers, "quota_cpus", lambda: 1)
        runtime.configure_torch(None)
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(containers, "quota_cpus", lambda: None)
        torch.set_num_threads(2)
        runtime.configure_torch(None)  # no quota: torch's own setting is left as it is
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_the_open_files_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = runtime.OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, runtime.OPEN_FILES_WANTED)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(64, wanted), hard))  # `ulimit -Sn 64`
        assert runtime.raise_open_files_limit() == wanted
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (wanted, hard)
        assert runtime.raise_open_files_limit() == wanted  # already there: left as it is
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
