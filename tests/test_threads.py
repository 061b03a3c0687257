"""Thread count from the CPUs a process may really use; OpenMP defaults that respect the user's; the
progress line's slowdown notice."""
import os

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
    assert threads.prepare_process(env) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert env == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env = {}
    assert threads.prepare_process(env)["OMP_NUM_THREADS"] == str(threads.usable_cpus())


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
            "print(os.environ['OMP_WAIT_POLICY'], os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    policy, n, torch_threads = out.split()
    assert policy == "PASSIVE" and int(n) == threads.usable_cpus() == int(torch_threads)


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
