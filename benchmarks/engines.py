"""The default sweep through every engine, side by side: hf, vllm (offline) and openai (against vllm serve).

    python benchmarks/engines.py [--problems 64] [--rounds 1] [--dtype float32]
        # needs $COTBENCH_VLLM_PYTHON (a Python with vLLM); writes benchmarks/results/<cpu kind>/engines.{json,md}

SmolLM2-135M-Instruct + the shipped valve, α ∈ {0, 0.25, 0.5, 0.75, 1}, the first ``--problems`` GSM8K test
problems, greedy, 256 new tokens. Engines run in turn, round after round (so drift hits all alike), each
sweep in a fresh run directory and a fresh process:
- end to end: from launching the command (and, for openai, the server) to the report written;
- generation: the engine's own generate phase (engine start excluded: for vllm the worker's load time,
  for openai the server's start, for hf the model load);
- peak memory: the largest RSS of the whole process tree (engine workers and server included), sampled every
  0.2 s;
- agreement: per (problem, α), whether the greedy texts, token counts and verdicts are the same as hf's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_record, results_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
ALPHAS = "0,0.25,0.5,0.75,1"


def tree_rss_mb(root: int) -> float:
    """RSS of a process and all its descendants, in MB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(proc.name))
            rss[int(proc.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total / 1e6


class PeakRSS:
    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            time.sleep(0.2)

    def stop(self) -> float:
        self._stop.set()
        return self.peak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_sweep(engine: str, out: Path, problems: int, dtype: str, base_url: str | None) -> None:
    """Runs in a child process: the sweep through run_sweep, with the engine's phases timed."""
    from cotbench.backends import BACKENDS
    from cotbench.config import RunConfig
    from cotbench.runner import run_sweep

    config = RunConfig(tasks=("gsm8k",), limit=problems, max_new_tokens=256, dtype=dtype, backend=engine,
                       alphas=tuple(float(a) for a in ALPHAS.split(",")), base_url=base_url, out=str(out),
                       vllm_python=os.environ.get("COTBENCH_VLLM_PYTHON"))
    started = time.perf_counter()
    backend = BACKENDS.get(engine).from_config(config)
    load_s = time.perf_counter() - started
    real_generate, phases = backend.generate, {}

    def timed(requests):
        begin = time.perf_counter()
        tokens = 0
        for batch in real_generate(requests):
            tokens += sum(g.n_generated_tokens for g in batch)
            yield batch
        phases.update(generate_s=time.perf_counter() - begin, tokens=tokens)

    backend.generate = timed
    run_sweep(config, backend=backend, progress=False)
    backend.close()
    engine_start = getattr(backend, "stats", {}).get("load_s", 0.0) if engine == "vllm" else 0.0
    (out / "timing.json").write_text(json.dumps({"load_s": load_s, "engine_start_s": engine_start, **phases}))


def run_engine(engine: str, work: Path, problems: int, dtype: str, vllm_python: str, round_: int) -> dict:
    out = work / f"{engine}-{round_}"
    server, base_url = None, None
    started = time.perf_counter()
    if engine == "openai":
        from cotbench.backends.loading import resolve_model, standard_checkpoint
        from cotbench.valve.export import export_alpha_copies
        from cotbench.valve.default import default_valve

        adapters = work / "adapters"
        if not adapters.exists():
            export_alpha_copies(default_valve(), [float(a) for a in ALPHAS.split(",")], adapters)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}/v1"
        env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=",".join(map(str, sorted(os.sched_getaffinity(0)))))
        server = subprocess.Popen(
            [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
             "--model", standard_checkpoint(resolve_model("smollm2")), "--served-model-name", "smollm2",
             "--dtype", dtype, "--enable-lora", "--max-lora-rank", "8", "--max-loras", "5",
             "--kv-cache-memory-bytes", str(1 << 30), "--lora-modules",
             *[f"{p.name}={p}" for p in sorted(adapters.iterdir())]],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        server_watch = PeakRSS(server.pid)
        while True:
            try:
                urllib.request.urlopen(f"{base_url}/models", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("vllm serve exited while starting")
                time.sleep(0.5)
    server_start = time.perf_counter() - started
    child = subprocess.Popen([sys.executable, __file__, "--one", engine, "--out", str(out), "--problems",
                              str(problems), "--dtype", dtype] + (["--base-url", base_url] if base_url else []),
                             env=dict(os.environ, HF_HUB_OFFLINE="1"))
    watch = PeakRSS(child.pid)
    if child.wait():
        raise RuntimeError(f"the {engine} sweep failed (exit {child.returncode})")
    wall = time.perf_counter() - started
    peak = watch.stop()
    if server is not None:
        peak += server_watch.stop()
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    timing = json.loads((out / "timing.json").read_text())
    generate_s = timing["generate_s"] - timing["engine_start_s"]
    return {"engine": engine, "round": round_, "wall_s": round(wall, 1), "server_start_s": round(server_start, 1),
            "load_s": round(timing["load_s"] + timing["engine_start_s"], 1), "generate_s": round(generate_s, 1),
            "tokens": timing["tokens"], "tok_s_end_to_end": round(timing["tokens"] / wall, 1),
            "tok_s_generation": round(timing["tokens"] / generate_s, 1), "peak_rss_mb": round(peak),
            "samples": str(out / "samples.jsonl")}


def agreement(reference: str, other: str) -> dict:
    def load(path):
        return {(r["problem_id"], r["alpha"]): r for r in map(json.loads, Path(path).read_text().splitlines())}

    a, b = load(reference), load(other)
    keys = sorted(set(a) & set(b))
    return {"rows": len(keys), "same_text": sum(a[k]["response"] == b[k]["response"] for k in keys),
            "same_tokens": sum(a[k]["n_generated_tokens"] == b[k]["n_generated_tokens"] for k in keys),
            "same_verdict": sum(a[k]["correct"] == b[k]["correct"] for k in keys)}


def cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        kind = "AVX-512 BF16" if "avx512_bf16" in info else "AVX-512" if "avx512f" in info else "AVX2"
        return f"{name}, {kind}, {os.cpu_count()} cores"
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dtype", default="float32")  # fp32: where engines should agree token for token
    parser.add_argument("--one")
    parser.add_argument("--out")
    parser.add_argument("--base-url")
    args = parser.parse_args()
    if args.one:
        return one_sweep(args.one, Path(args.out), args.problems, args.dtype, args.base_url)
    vllm_python = os.environ.get("COTBENCH_VLLM_PYTHON")
    if not vllm_python:
        sys.exit("set COTBENCH_VLLM_PYTHON to a Python with vLLM (see README: Engines)")
    os.environ.setdefault("COTBENCH_DATA_DIR", str(HERE.parent.parent / "shared" / "data"))
    work = Path(tempfile.mkdtemp(prefix="cotbench-engines-"))
    load_before = os.getloadavg()
    runs = []
    for round_ in range(args.rounds):
        for engine in ("hf", "vllm", "openai"):
            runs.append(run_engine(engine, work, args.problems, args.dtype, vllm_python, round_))
            print(runs[-1], flush=True)
    reference = next(r["samples"] for r in runs if r["engine"] == "hf")
    agree = {r["engine"]: agreement(reference, r["samples"]) for r in runs if r["engine"] != "hf" and r["round"] == 0}
    for r in runs:
        r.pop("samples")  # a path on this machine: not part of the result
    result = {"cpu": cpu(), "date": time.strftime("%Y-%m-%d"), "problems": args.problems, "alphas": ALPHAS,
              "max_new_tokens": 256, "dtype": args.dtype, "rounds": args.rounds, "load_before": load_before,
              "load_after": os.getloadavg(), "runs": runs, "agreement_with_hf": agree}
    result["machine"] = machine_record()
    (results_dir() / "engines.json").write_text(json.dumps(result, indent=2))
    lines = ["# Engines side by side", "",
             f"{args.problems} GSM8K problems × α {ALPHAS}, greedy, 256 new tokens, {args.dtype}; SmolLM2-135M-Instruct "
             f"+ the shipped valve. {result['cpu']}; {result['date']}; load average before/after "
             f"{load_before[0]:.2f}/{result['load_after'][0]:.2f}.", "",
             "| engine | round | wall s | start/load s | generate s | tokens | tok/s end to end | tok/s generation "
             "| peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['engine']} | {r['round']} | {r['wall_s']} | {r['server_start_s'] + r['load_s']:.1f} | "
              f"{r['generate_s']} | {r['tokens']} | {r['tok_s_end_to_end']} | {r['tok_s_generation']} | "
              f"{r['peak_rss_mb']} |" for r in runs]
    lines += ["", "| against hf | rows | same text | same token count | same verdict |", "|---|---|---|---|---|"]
    lines += [f"| {e} | {a['rows']} | {a['same_text']} | {a['same_tokens']} | {a['same_verdict']} |"
              for e, a in agree.items()]
    (results_dir() / "engines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
