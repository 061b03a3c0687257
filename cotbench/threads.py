"""How many CPU threads this process may really use, and a thread count that follows a busy machine.

``os.cpu_count()`` counts the machine's CPUs, not ours: a container's CPU quota (cgroup ``cpu.max``, or
``cpu.cfs_quota_us`` in cgroup v1) or a ``taskset`` affinity mask gives fewer. Torch's OpenMP pool sized
past the cores it really gets collapses: its threads spin waiting for a partner the OS has descheduled. A
decode step's matrix products measured 18.7x slower beside one busy process on 2 cores (issue 17).

Two answers were measured (benchmarks/contention.py, and a 10-problem default job on an AMX Xeon):
``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep) survives contention but has the kernel wake its threads at
each of a decode step's many parallel regions: 1.26x slower on a quiet AMX Xeon (7 % on an AMD EPYC). One
thread fewer than the busy CPUs is as fast as PASSIVE under contention and costs nothing when quiet. So the
CLI keeps libgomp's own spin-then-sleep policy and a :class:`ThreadGovernor` lowers torch's thread count
while other programs keep CPUs busy, and raises it back when they stop. The CLI sets ``OMP_NUM_THREADS`` to
the usable CPUs before torch starts its pool, only where the user has not set it (an explicit value always
wins and is kept fixed). Library use (``import cotbench``) changes nothing: ``RunConfig.threads`` is None.
"""
from __future__ import annotations

import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup"), proc_self: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup's CPU quota (rounded up)."""
    n = len(_affinity())
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
    """Size torch's OpenMP pool to the usable CPUs before torch is imported; returns what it set.

    Nothing the user set is changed; torch already imported (another entry point) means its pool exists and
    the environment would no longer apply, so nothing is changed then."""
    if "torch" in sys.modules or "OMP_NUM_THREADS" in environ:
        return {}
    environ["OMP_NUM_THREADS"] = str(usable_cpus())
    return {"OMP_NUM_THREADS": environ["OMP_NUM_THREADS"]}


def cli_threads(prepared: dict[str, str], environ=os.environ) -> str | int:
    """The CLI's ``threads`` setting when neither a flag nor a config file gives one: the user's own
    ``OMP_NUM_THREADS``, kept fixed, else "auto"."""
    if "OMP_NUM_THREADS" in prepared or not environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return "auto"
    return max(1, int(environ["OMP_NUM_THREADS"]))


@contextmanager
def controlled_threads(setting: str | int | None):
    """A run's ``threads`` setting applied to torch while an engine generates, and torch's own count restored
    afterwards. None leaves torch alone (library use) and a number fixes the count; "auto" yields a
    :class:`ThreadGovernor` for the engine to tick between forward passes (None where it cannot work)."""
    if setting is None:
        yield None
        return
    import torch

    before = torch.get_num_threads()
    governor = None
    try:
        usable = usable_cpus() if setting == "auto" else None
        if setting != "auto":
            torch.set_num_threads(int(setting))
        elif usable < len(_affinity()):
            torch.set_num_threads(usable)  # a cgroup quota: /proc/stat would count the host's load against us
        else:
            governor = ThreadGovernor(usable, set_threads=torch.set_num_threads)
            if not governor.active:
                torch.set_num_threads(governor.most)
                governor = None
        yield governor
    finally:
        torch.set_num_threads(before)


class ThreadGovernor:
    """Torch's thread count = the usable CPUs minus those other programs keep busy, re-read every second.

    Other programs' load is this process's CPUs' busy time (``/proc/stat``: user, nice, system, irq, softirq
    and steal, the time a hypervisor gave our vCPU to someone else) minus this process's own CPU time, over
    the last window; a CPU counts as taken from half a CPU's worth of busy time up. Our own spinning threads
    are in our own CPU time, so they never count against us. The count drops at once (spinning against a
    descheduled partner is what is slow) and rises only after two windows agree (a short burst of another
    program does not make it flap). Where ``/proc/stat`` is missing (macOS, Windows) the governor is off."""

    WINDOW_S = 1.0
    RAISE_AFTER = 2  # windows in a row that allow more threads before the count rises

    def __init__(self, most: int, set_threads, stat_path: Path = Path("/proc/stat"), cpus: set[int] | None = None,
                 clock=time.monotonic, own_cpu_time=time.process_time):
        self.most, self._set, self._stat_path = max(1, most), set_threads, stat_path
        self._cpus = cpus if cpus is not None else _affinity()
        self._clock, self._own = clock, own_cpu_time
        self._tick_s = 1.0 / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
        self.threads, self._higher = self.most, 0
        self.seconds: dict[int, float] = {}  # time spent at each thread count
        self.changes = 0
        busy = self._busy_s()
        self.active = self.most > 1 and busy is not None
        self._mark = (self._clock(), busy, self._own())
        if self.active:
            self._set(self.threads)

    def tick(self) -> int:
        """Call between forward passes; cheap except once per window. Returns the thread count in force."""
        if not self.active:
            return self.threads
        now = self._clock()
        t0, busy0, own0 = self._mark
        if now - t0 < self.WINDOW_S:
            return self.threads
        busy, own = self._busy_s(), self._own()
        self._mark = (now, busy, own)
        self.seconds[self.threads] = self.seconds.get(self.threads, 0.0) + (now - t0)
        if busy is None:  # /proc/stat vanished (a chroot, a sandbox): keep what we have
            return self.threads
        others = max(0.0, (busy - busy0) - (own - own0)) / (now - t0)  # CPUs' worth of other programs' work
        want = min(self.most, max(1, self.most - math.floor(others + 0.5)))
        if want < self.threads:
            self._change(want)
        elif want > self.threads:
            self._higher += 1
            if self._higher >= self.RAISE_AFTER:
                self._change(want)
        else:
            self._higher = 0
        return self.threads

    def report(self) -> dict:
        """For the run's metadata: the range, the changes and the seconds spent at each count."""
        return {"most": self.most, "changes": self.changes,
                "seconds_at": {str(k): round(v, 1) for k, v in sorted(self.seconds.items())}}

    def _change(self, threads: int) -> None:
        self.threads, self._higher = threads, 0
        self.changes += 1
        self._set(threads)

    def _busy_s(self) -> float | None:
        """Busy seconds of our CPUs since boot, or None where /proc/stat cannot be read."""
        try:
            lines = self._stat_path.read_text().splitlines()
        except OSError:
            return None
        ticks = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in self._cpus:
                continue
            fields = [int(v) for v in rest.split()]
            # user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
            ticks += sum(fields[:3]) + sum(fields[5:8])
        return ticks * self._tick_s


def _affinity() -> set[int]:
    """The CPUs this process may run on (all of them where there is no affinity mask: macOS, Windows)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))

