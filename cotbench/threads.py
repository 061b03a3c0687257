"""How many CPU threads this process may really use, and an OpenMP setup that survives a busy machine.

``os.cpu_count()`` counts the machine's CPUs, not ours: a container's CPU quota (cgroup ``cpu.max``, or
``cpu.cfs_quota_us`` in cgroup v1) or a ``taskset`` affinity mask gives fewer. Torch's OpenMP pool sized
past them, with threads that spin while they wait for each other, collapses when another process takes a
core: a decode step's matrix products measured 18.7× slower with one competing busy process on 2 cores,
3.4× with ``OMP_WAIT_POLICY=PASSIVE`` (issue 17). So the CLI, which owns its process, sets before torch
starts its pool: ``OMP_WAIT_POLICY=PASSIVE`` and ``OMP_NUM_THREADS`` = the usable CPUs, each only where the
user has not set it (an explicit value always wins). Library use (``import cotbench``) changes nothing.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

WAIT_POLICY = "PASSIVE"  # idle OpenMP threads sleep instead of spinning against a descheduled partner


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_self: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup's CPU quota (rounded up)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_self)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def cgroup_cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup"),
                     proc_self: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is none or no cgroup."""
    for path in _cgroup_dirs(cgroup_root, proc_self):
        v2 = path / "cpu.max"  # "max 100000" or "150000 100000"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota != "max" and period:
                return int(quota) / int(period)
            continue
        v1_quota, v1_period = path / "cpu.cfs_quota_us", path / "cpu.cfs_period_us"
        if v1_quota.is_file() and v1_period.is_file():
            quota_us = int(v1_quota.read_text().strip())
            if quota_us > 0:
                return quota_us / int(v1_period.read_text().strip())
    return None


def _cgroup_dirs(root: Path, proc_self: Path) -> list[Path]:
    """This process's cgroup directories with the CPU controller, each followed by its parents (a quota set
    on a parent applies too). cgroup v2 lines read ``0::/path``; v1 lines ``N:cpu,cpuacct:/path``."""
    try:
        lines = proc_self.read_text().splitlines()
    except OSError:
        return []
    dirs: list[Path] = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            bases = [root]
        elif "cpu" in controllers.split(","):
            bases = [root / controllers, root / "cpu", root / "cpu,cpuacct"]
        else:
            continue
        base = next((b for b in bases if b.is_dir()), None)
        if base is None:
            continue
        here = base / rel.strip("/")
        while True:
            if here.is_dir():
                dirs.append(here)
            if here == base:
                break
            here = here.parent
    return dirs


def prepare_process(environ=os.environ) -> dict[str, str]:
    """Set the OpenMP defaults of a cotbench command before torch is imported; returns what it set.

    Only keys the user left unset are written; torch already imported (another entry point) means its
    pool exists and the environment would no longer apply, so nothing is changed then."""
    if "torch" in sys.modules:
        return {}
    chosen = {"OMP_WAIT_POLICY": WAIT_POLICY, "OMP_NUM_THREADS": str(usable_cpus())}
    set_now = {k: v for k, v in chosen.items() if k not in environ}
    environ.update(set_now)
    return set_now


def describe() -> str:
    """One line for run records and benchmarks: the threads torch uses and the OpenMP settings in force."""
    import torch

    return (f"torch threads {torch.get_num_threads()}, usable CPUs {usable_cpus()}, "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
