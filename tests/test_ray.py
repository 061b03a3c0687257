"""One sweep over engines on a real local Ray cluster (``ray.init(num_cpus=2)``): the same samples as one
process, nothing lost or doubled when a worker or the driver is killed, poison requests skipped, clear errors."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="install cotbench[ray]")

from cotbench.backends.ray_workers import RayBackend, engine_from_config  # noqa: E402
from cotbench.config import RunConfig  # noqa: E402
from cotbench.runner import run_sweep  # noqa: E402

N = 12  # problems × 2 α = 24 requests


@pytest.fixture(scope="module")
def cluster():
    """A local cluster of two CPUs, as `ray start --head --num-cpus 2` would give; workers inherit this env."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _config(tiny_model, tiny_valve, out, **overrides):
    settings = dict(model=str(tiny_model), valve=str(tiny_valve), tasks=("arithmetic",), n_generated=N,
                    alphas=(0.0, 1.0), max_new_tokens=8, dtype="float32", batch_size=2, grade_workers=0, out=str(out))
    settings.update(overrides)
    return RunConfig(**settings)


def _samples(out) -> dict:
    records = [json.loads(line) for line in (Path(out) / "samples.jsonl").read_text().splitlines()]
    return {r["key"]: (r["response"], r["n_generated_tokens"], r["correct"]) for r in records}


def _stored(out) -> tuple[int, int]:
    with sqlite3.connect(Path(out) / "samples.sqlite") as db:
        return db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM samples").fetchone()


@pytest.fixture(scope="module")
def single(tiny_model, tiny_valve, tmp_path_factory):
    """The reference: the same sweep in this process, no Ray."""
    out = tmp_path_factory.mktemp("single") / "run"
    run_sweep(_config(tiny_model, tiny_valve, out), progress=False)
    return _samples(out)


def test_two_workers_give_the_samples_of_one_process(cluster, single, tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "ray"
    config = _config(tiny_model, tiny_valve, out, ray="auto", workers=2, worker_cpus=1)
    result = run_sweep(config, progress=False)
    assert _samples(out) == single  # same keys, texts, token counts and verdicts: greedy fp32 on the same engine
    assert _stored(out) == (2 * N, 2 * N) and result.n_generated == 2 * N
    from cotbench.store import Store

    store = Store(out, create=False)
    try:
        stats = store.get_meta("engine_stats")["ray"]
        identity = store.get_meta("identity")
    finally:
        store.close()
    assert stats["workers"] == 2 and sum(w["requests"] for w in stats["per_worker"]) == 2 * N
    assert all(w["requests"] > 0 and w["tok_per_s"] > 0 for w in stats["per_worker"])  # both did work
    assert "ray" not in identity and "workers" not in identity  # information, not identity
    # the same directory continues without Ray: same keys, nothing to generate
    again = run_sweep(_config(tiny_model, tiny_valve, out), progress=False)
    assert again.n_generated == 0


def test_two_workers_in_bf16_give_the_samples_of_one_process(cluster, tiny_model, tiny_valve, tmp_path):
    """Each worker decodes its own share of the rows, in batches that differ from one process's: in bf16 too,
    the same tokens (issue 39: generation that does not depend on batch mates)."""
    run_sweep(_config(tiny_model, tiny_valve, tmp_path / "one", dtype="bfloat16", batch_size=8), progress=False)
    run_sweep(_config(tiny_model, tiny_valve, tmp_path / "two", dtype="bfloat16", ray="auto", workers=2,
                      worker_cpus=1), progress=False)
    assert _samples(tmp_path / "two") == _samples(tmp_path / "one") and len(_samples(tmp_path / "one")) == 2 * N
    # the workers' engines say they were deterministic, and the samples record it
    records = [json.loads(line) for line in (tmp_path / "two" / "samples.jsonl").read_text().splitlines()]
    assert all(json.loads(r["numerics"])["deterministic"] is True for r in records)


def test_k_sampled_samples_on_two_workers_are_those_of_one_process(cluster, tiny_model, tiny_valve, tmp_path):
    """--samples 2 at temperature 1: each request draws from its own generator (seeded from its key), so where it
    ran and beside which requests change nothing."""
    sampled = dict(samples=2, temperature=1.0, seed=3, n_generated=4)
    run_sweep(_config(tiny_model, tiny_valve, tmp_path / "one", **sampled), progress=False)
    run_sweep(_config(tiny_model, tiny_valve, tmp_path / "ray", ray="auto", workers=2, worker_cpus=1, **sampled),
              progress=False)
    here, there = _samples(tmp_path / "one"), _samples(tmp_path / "ray")
    assert len(here) == 4 * 2 * 2 and here == there


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(cluster, single, tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "killed-worker"
    config = _config(tiny_model, tiny_valve, out, ray="auto", workers=2, worker_cpus=1, max_new_tokens=8)
    backend = RayBackend.from_config(config)
    real, killed = backend.generate, []

    def generate(requests):
        for batch in real(requests):
            if not killed:  # mid-sweep: the first batch is in, both workers hold chunks
                victim = next(s for s in backend._slots if s.stream is not None)
                os.kill(victim.info["pid"], signal.SIGKILL)
                killed.append(victim.index)
            yield batch

    backend.generate = generate
    try:
        run_sweep(config, backend=backend, progress=False)
        stats = backend.stats()["ray"]
    finally:
        backend.close()
    assert killed and stats["per_worker"][killed[0]]["restarts"] == 1
    assert _stored(out) == (2 * N, 2 * N)  # every request once
    assert _samples(out) == single
    assert not stats["skipped"]


def _poison_engine(config):  # sent to the workers by value (see the test): they cannot import this module
    """A real engine that takes its own process down on one question, as a segfault or OOM kill would."""
    backend = engine_from_config(config)
    generate = backend.generate

    def guarded(requests):
        if any("POISON" in r.prompt for r in requests):
            os._exit(1)
        yield from generate(requests)

    backend.generate = guarded
    return backend


def test_a_request_that_kills_workers_is_skipped_not_retried_for_ever(cluster, tiny_model, tiny_valve, tmp_path):
    data = tmp_path / "questions.jsonl"
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(7)]
    rows.insert(3, {"question": "POISON: what is 2 + 2?", "answer": "4"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "poison"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config = _config(tiny_model, tiny_valve, out, tasks=("jsonl",), data_file=str(data), alphas=(0.5,),
                     ray="auto", workers=2, worker_cpus=1)
    backend = RayBackend(config, "auto", 2, 0, 1, engine=_poison_engine)
    try:
        result = run_sweep(config, backend=backend, progress=False)
        skipped = backend.stats()["ray"]["skipped"]
    finally:
        backend.close()
    assert len(skipped) == 1 and "killed 2 workers" in next(iter(skipped.values()))
    stored = _samples(out)
    assert len(stored) == 7 == _stored(out)[1] and next(iter(skipped)) not in stored  # the rest all once
    assert result.n_generated == 8  # planned; one left unstored for a rerun to try again


def _run_argv(tiny_model, tiny_valve, out, *extra):
    return [sys.executable, "-m", "cotbench", "run", "--model", str(tiny_model), "--valve", str(tiny_valve),
            "--tasks", "arithmetic", "--n", "40", "--alphas", "0,1", "--max-new-tokens", "24", "--batch-size", "2",
            "--dtype", "float32", "--grade-workers", "0", "--out", str(out), *extra]


def test_kill_minus_9_of_the_driver_then_rerun_resumes(tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "driver"
    argv = _run_argv(tiny_model, tiny_valve, out, "--ray", "local", "--workers", "2", "--worker-cpus", "1")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    stored, deadline = 0, time.monotonic() + 300
    while stored < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if (out / "samples.sqlite").exists():
            try:
                stored = _stored(out)[0]
            except sqlite3.OperationalError:
                pass
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = _stored(out)[0]
    assert kept >= stored >= 4
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{kept} already stored, {80 - kept} to generate" in done.stderr
    assert _stored(out) == (80, 80)


def test_ray_not_installed_is_one_clear_message_and_no_directory(tiny_model, tiny_valve, tmp_path):
    blocker = tmp_path / "no_ray"
    blocker.mkdir()
    (blocker / "ray.py").write_text("raise ImportError('No module named ray')\n")  # as on a machine without Ray
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "none"
    done = subprocess.run(_run_argv(tiny_model, tiny_valve, out, "--ray", "auto"), capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 2 and "pip install 'cotbench[ray]'" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


def test_an_unreachable_cluster_is_one_clear_message_and_no_directory(tiny_model, tiny_valve, tmp_path):
    out = tmp_path / "none"
    started = time.monotonic()
    done = subprocess.run(_run_argv(tiny_model, tiny_valve, out, "--ray", "127.0.0.1:9"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "no Ray cluster found at 127.0.0.1:9" in done.stderr and "ray start --head" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
    assert time.monotonic() - started < 120


def test_workers_that_do_not_fit_the_cluster_are_refused(cluster, tiny_model, tiny_valve, tmp_path):
    from cotbench.errors import ConfigError

    with pytest.raises(ConfigError, match="do not fit the cluster"):
        RayBackend(_config(tiny_model, tiny_valve, tmp_path / "x", ray="auto"), "auto", 3, 0, 1)
    with pytest.raises(ConfigError, match="GPUs the cluster does not have"):
        RayBackend(_config(tiny_model, tiny_valve, tmp_path / "x", ray="auto"), "auto", 1, 1, 1)


def test_worker_flags_without_ray_are_refused(tiny_model, tiny_valve, tmp_path):
    from cotbench.errors import ConfigError

    with pytest.raises(ConfigError, match="are for --ray"):
        _config(tiny_model, tiny_valve, tmp_path / "x", workers=2)
    with pytest.raises(ConfigError, match="runs --backend hf or vllm"):
        _config(tiny_model, tiny_valve, tmp_path / "x", ray="auto", backend="openai", base_url="http://127.0.0.1:1/v1")
