"""Thread count from the CPUs a process may really use; OpenMP defaults that respect the user's; the
progress line's slowdown notice."""
import os
from pathlib import Path

import pytest

from cotbench import threads
from cotbench.runner import _Pace


def _cgroup(tmp_path, lines, files):
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("\n".join(lines) + "\n")
    return root, proc


def test_cgroup_v2_quota_caps_the_affinity(tmp_path):
    root, proc = _cgroup(tmp_path, ["0::/job"], {"job/cpu.max": "150000 100000\n", "cpu.max": "max 100000\n"})
    assert threads.cgroup_cpu_quota(root, proc) == 1.5
    assert threads.usable_cpus(root, proc) == min(len(os.sched_getaffinity(0)), 2)


def test_cgroup_quota_on_a_parent_applies(tmp_path):
    root, proc = _cgroup(tmp_path, ["0::/a/b"], {"a/cpu.max": "100000 100000\n", "a/b/cpu.max": "max 100000\n"})
    assert threads.cgroup_cpu_quota(root, proc) == 1.0 and threads.usable_cpus(root, proc) == 1


def test_cgroup_v1_quota_and_no_quota(tmp_path):
    root, proc = _cgroup(tmp_path, ["4:memory:/x", "1:cpu,cpuacct:/"],
                         {"cpu,cpuacct/cpu.cfs_quota_us": "50000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpu_quota(root, proc) == 0.5 and threads.usable_cpus(root, proc) == 1
    root, proc = _cgroup(tmp_path / "none", ["1:cpu:/"],
                         {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert threads.cgroup_cpu_quota(root, proc) is None
    assert threads.usable_cpus(root, proc) == len(os.sched_getaffinity(0))
    assert threads.cgroup_cpu_quota(tmp_path / "absent", tmp_path / "absent_file") is None


def test_prepare_process_sets_only_what_the_user_left_unset(monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as in a fresh `cotbench` process
    env = {"OMP_NUM_THREADS": "1"}
    assert threads.prepare_process(env) == {} and env == {"OMP_NUM_THREADS": "1"}
    assert threads.cli_threads({}, env) == 1  # the user's count, fixed
    env = {}
    assert threads.prepare_process(env) == {"OMP_NUM_THREADS": str(threads.usable_cpus())}
    assert "OMP_WAIT_POLICY" not in env  # libgomp's spin-then-sleep: PASSIVE costs up to 1.26x on a quiet machine
    assert threads.cli_threads({"OMP_NUM_THREADS": "2"}, env) == "auto"
    assert threads.cli_threads({}, {"OMP_NUM_THREADS": "many"}) == "auto"


def test_prepare_process_changes_nothing_once_torch_is_loaded():
    import torch  # noqa: F401  (its OpenMP pool exists: the environment no longer applies)

    env = {}
    assert threads.prepare_process(env) == {} and env == {}


def test_a_cotbench_process_runs_with_the_chosen_openmp_settings(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    code = ("import sys; from cotbench.cli import main; from cotbench.threads import prepare_process; "
            "import os; prepare_process(); import torch; "
            "print(os.environ.get('OMP_WAIT_POLICY', 'unset'), os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    policy, n, torch_threads = out.split()
    assert policy == "unset" and int(n) == threads.usable_cpus() == int(torch_threads)


class _Machine:
    """A /proc/stat of two CPUs, a clock and this process's CPU time, moved by hand."""

    def __init__(self, tmp_path):
        self.stat = tmp_path / "stat"
        self.now, self.own, self.busy = 0.0, 0.0, {0: 0, 1: 0}
        self.set_to = []
        self._write()

    def _write(self):
        lines = [f"cpu  {sum(self.busy.values())} 0 0 999 0 0 0 0 0 0"]
        # busy ticks split over user, system and steal; idle and iowait stay apart
        lines += [f"cpu{i} {t // 2} 0 {t - t // 2 - t // 4} 500 7 0 0 {t // 4} 3 0" for i, t in self.busy.items()]
        self.stat.write_text("\n".join(lines) + "\nintr 1 2 3\nctxt 99\n")

    def advance(self, seconds, own_cpus, other_cpus):
        """``seconds`` pass with this process using ``own_cpus`` CPUs and other programs ``other_cpus``."""
        self.now += seconds
        self.own += own_cpus * seconds
        ticks = round((own_cpus + other_cpus) * seconds * 100)
        self.busy[0] += ticks // 2
        self.busy[1] += ticks - ticks // 2
        self._write()

    def governor(self, most=2):
        return threads.ThreadGovernor(most, self.set_to.append, self.stat, cpus={0, 1},
                                      clock=lambda: self.now, own_cpu_time=lambda: self.own)


def test_governor_gives_a_cpu_to_a_busy_program_and_takes_it_back(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sysconf", lambda name: 100)  # USER_HZ, as on Linux
    machine = _Machine(tmp_path)
    governor = machine.governor()
    assert governor.active and machine.set_to == [2]
    machine.advance(0.5, 2.0, 0.0)
    assert governor.tick() == 2 and machine.set_to == [2]  # inside a window: nothing read, nothing changed
    machine.advance(0.6, 2.0, 0.0)
    assert governor.tick() == 2  # quiet: our own spinning threads never count against us
    machine.advance(1.0, 1.3, 0.7)  # one busy program gets its share of the 2 CPUs
    assert governor.tick() == 1 and machine.set_to == [2, 1]  # at once
    for _ in range(3):
        machine.advance(1.0, 1.0, 1.0)
        assert governor.tick() == 1
    machine.advance(1.0, 1.0, 0.2)  # it stopped (a little noise remains)
    assert governor.tick() == 1  # one window is not enough
    machine.advance(1.0, 1.0, 0.1)
    assert governor.tick() == 2 and machine.set_to == [2, 1, 2]
    machine.advance(1.0, 2.0, 0.6)  # a burst
    assert governor.tick() == 1
    machine.advance(1.0, 1.0, 0.0)
    machine.advance(0.0, 0.0, 0.0)
    assert governor.tick() == 1
    machine.advance(1.0, 1.0, 1.5)  # a window that disagrees resets the count of agreeing ones
    assert governor.tick() == 1
    machine.advance(1.0, 1.0, 0.0)
    assert governor.tick() == 1
    machine.advance(1.0, 1.0, 0.0)
    assert governor.tick() == 2
    report = governor.report()
    assert report["most"] == 2 and report["changes"] == 4
    assert sum(report["seconds_at"].values()) == pytest.approx(machine.now, abs=0.3)


def test_governor_never_goes_below_one_thread_or_above_the_usable_cpus(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sysconf", lambda name: 100)
    machine = _Machine(tmp_path)
    governor = machine.governor()
    machine.advance(1.0, 0.2, 1.8)  # two busy programs
    assert governor.tick() == 1
    for _ in range(4):
        machine.advance(1.0, 2.0, 0.0)
        assert governor.tick() <= 2
    assert governor.threads == 2


def test_governor_is_off_without_proc_stat_or_with_one_cpu(tmp_path):
    calls = []
    assert not threads.ThreadGovernor(2, calls.append, tmp_path / "absent").active
    assert not threads.ThreadGovernor(1, calls.append, Path("/proc/stat")).active
    assert calls == []  # an inactive governor never touches torch


def test_governor_sees_a_real_busy_process():
    """A real competing process on this machine's CPUs: the governor gives it one, then takes it back."""
    import subprocess
    import sys
    import time

    if threads.usable_cpus() < 2 or not Path("/proc/stat").is_file():
        pytest.skip("needs Linux and two usable CPUs")
    chosen = []
    governor = threads.ThreadGovernor(2, chosen.append, cpus={min(os.sched_getaffinity(0))} | {max(os.sched_getaffinity(0))})
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 15
        while governor.threads == 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            governor.tick()
        assert governor.threads == 1, "one busy process on 2 CPUs should take one of them"
    finally:
        busy.kill()
        busy.wait()
    deadline = time.monotonic() + 20
    while governor.threads == 1 and time.monotonic() < deadline:
        time.sleep(0.2)
        governor.tick()
    assert governor.threads == 2 and chosen[:2] == [2, 1]


def test_controlled_threads_restores_torch_and_fixes_a_number():
    import torch

    from cotbench.config import RunConfig

    before = torch.get_num_threads()
    with threads.controlled_threads(1) as governor:
        assert governor is None and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with threads.controlled_threads(None) as governor:
        assert governor is None and torch.get_num_threads() == before
    with threads.controlled_threads("auto") as governor:
        assert torch.get_num_threads() == threads.usable_cpus()
    assert torch.get_num_threads() == before
    assert RunConfig(threads="3").threads == 3 and RunConfig(threads="auto").threads == "auto"
    for bad in (0, "many", -2, True):
        with pytest.raises(Exception, match="threads must be 'auto' or a whole number"):
            RunConfig(threads=bad)


def test_pace_reports_a_collapse_once():
    pace = _Pace()
    t, tokens = 0.0, 0
    said = []
    for rate in [100] * 6 + [20] * 6 + [100] * 3 + [10] * 3:
        t += 10.0
        tokens += int(rate * 10)
        said.append(pace.update(tokens, t))
    notes = [s for s in said if s]
    assert len(notes) == 2  # one per slowdown, not one per window
    assert "slowed to 20 tokens/s from 100" in notes[0]


def test_the_command_governs_its_threads_and_keeps_the_users_count(tmp_path, tiny_model):
    """`cotbench run` in its own process: "auto" with a governor whose work lands in the run's metadata (beside
    the scheduler's prefill and decode times); the user's OMP_NUM_THREADS fixed instead."""
    import json
    import sqlite3
    import subprocess
    import sys

    import yaml

    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    for name, extra in (("auto", {}), ("fixed", {"OMP_NUM_THREADS": "1"})):
        out = tmp_path / name
        argv = [sys.executable, "-m", "cotbench", "run", "--model", str(tiny_model), "--tasks", "arithmetic",
                "--n", "6", "--max-new-tokens", "8", "--grade-workers", "0", "--dtype", "float32", "--out", str(out)]
        done = subprocess.run(argv, env={**env, **extra}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        config = yaml.safe_load((out / "config.yaml").read_text())
        row = sqlite3.connect(out / "samples.sqlite").execute(
            "SELECT value FROM meta WHERE name = 'engine_stats'").fetchone()
        stats = json.loads(row[0])
        assert stats["batcher"]["decode_steps"] > 0 and stats["batcher"]["prompt_tokens"] > 0
        if name == "auto":
            assert config["threads"] == "auto"
            if threads.usable_cpus() > 1:
                assert stats["threads"]["most"] == threads.usable_cpus()
        else:
            assert config["threads"] == 1 and "threads" not in stats
