"""What the Ray path costs against the local one, side by side in one invocation.

    python benchmarks/ray_overhead.py             # SmolLM2 + the shipped valve, 16 GSM8K problems × 5 α; ~10 min
    python benchmarks/ray_overhead.py --quick     # 4 problems, 16 tokens

Writes benchmarks/results/<cpu kind>/ray_overhead.{json,md}. Three runs of the same sweep, each in its own
process, one after another: the local engine (no Ray); ``--ray local`` with one worker holding every core;
``--ray local`` with two workers of one core each; each with the OpenMP setup Ray workers get
(``OMP_WAIT_POLICY=PASSIVE``, threads fixed at their cores), the local run too, so only Ray differs. Timed
apart: starting (Ray's cluster and the workers' model loads, or the local load) and generating (the first
request handed over to the last generation back, grading alongside, as the runner does it). The per-request overhead of the Ray path is its generation time
minus the local one's, over the number of requests, with the same engine and cores: what chunks, streaming
and the driver's bookkeeping add. On a 2-core machine two workers cannot beat one (each has half the cores
and its own copy of the model); the figure shows what splitting costs there.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_record, results_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def one_run(mode: str, problems: int, tokens: int, data_dir: str, out: Path) -> dict:
    """In a child process: one sweep, its phases timed; OpenMP set up as Ray workers have it."""
    from cotbench.threads import prepare_process

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # ray_workers._worker_env's; before torch loads
    prepare_process()
    from cotbench.backends import make_backend
    from cotbench.config import RunConfig
    from cotbench.runner import run_sweep

    ray = {"local": {}, "ray-1": dict(ray="local", workers=1, worker_cpus=2),
           "ray-2": dict(ray="local", workers=2, worker_cpus=1)}[mode]
    config = RunConfig(tasks=("gsm8k",), limit=problems, alphas=ALPHAS, max_new_tokens=tokens, data_dir=data_dir,
                       out=str(out), **ray)
    started = time.perf_counter()
    if ray:
        from cotbench.backends.ray_workers import connect

        connect("local")
    cluster_s = time.perf_counter() - started
    backend = make_backend(config)
    ready = time.perf_counter()
    real, phases = backend.generate, {}

    def timed(requests):
        begin = time.perf_counter()
        tokens_out = 0
        for batch in real(requests):
            tokens_out += sum(g.n_generated_tokens for g in batch)
            yield batch
        phases.update(generate_s=time.perf_counter() - begin, tokens=tokens_out, requests=len(requests))

    backend.generate = timed
    run_sweep(config, backend=backend, progress=False)
    stats = backend.stats() if hasattr(backend, "stats") else None
    backend.close()
    return {"mode": mode, "start_s": round(ready - started, 2), "cluster_start_s": round(cluster_s, 2),
            "generate_s": round(phases["generate_s"], 2), "requests": phases["requests"], "tokens": phases["tokens"],
            "wall_s": round(time.perf_counter() - started, 2), "engine_stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--data-dir", default=os.environ.get("COTBENCH_DATA_DIR", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.problems, args.max_new_tokens = 4, 16
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            result = one_run(args.child, args.problems, args.max_new_tokens, args.data_dir, Path(tmp) / "run")
        Path(args.child_out).write_text(json.dumps(result))
        return
    before = machine_record()
    runs = []
    for mode in ("local", "ray-1", "ray-2"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            command = [sys.executable, __file__, "--child", mode, "--child-out", str(out), "--problems",
                       str(args.problems), "--max-new-tokens", str(args.max_new_tokens), "--data-dir", args.data_dir]
            print(f"[ray_overhead] {mode}", file=sys.stderr, flush=True)
            subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            runs.append(json.loads(out.read_text()))
            print(f"[ray_overhead]   {runs[-1]}", file=sys.stderr, flush=True)
    local, one, two = runs
    overhead_ms = 1000 * (one["generate_s"] - local["generate_s"]) / local["requests"]
    result = {"machine_before": before, "machine": machine_record(), "problems": args.problems,
              "max_new_tokens": args.max_new_tokens, "runs": runs,
              "overhead_per_request_ms": round(overhead_ms, 2),
              "generate_ratio_ray1_vs_local": round(one["generate_s"] / local["generate_s"], 3),
              "generate_ratio_ray2_vs_local": round(two["generate_s"] / local["generate_s"], 3)}
    name = "ray_overhead_quick" if args.quick else "ray_overhead"
    out = results_dir()
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    m = result["machine"]
    lines = ["# Ray path against the local one", "",
             f"{m['cpu']} ({m['kind']}), {m['usable_cpus']} usable CPUs; load average before "
             f"{before['load_average'][0]:.2f}, after {m['load_average'][0]:.2f}. SmolLM2-135M-Instruct + the shipped "
             f"valve, {args.problems} GSM8K problems × {len(ALPHAS)} α = {local['requests']} requests, ≤ "
             f"{args.max_new_tokens} new tokens, greedy. `python benchmarks/ray_overhead.py`.", "",
             "| run | start s (cluster + model loads) | generate s | tokens | wall s |", "|---|---|---|---|---|"]
    labels = {"local": "local engine, no Ray", "ray-1": "--ray local, 1 worker × 2 cores",
              "ray-2": "--ray local, 2 workers × 1 core"}
    lines += [f"| {labels[r['mode']]} | {r['start_s']} | {r['generate_s']} | {r['tokens']} | {r['wall_s']} |" for r in runs]
    lines += ["", f"- Overhead of the Ray path per request (1 worker vs local, same cores): **{overhead_ms:.1f} ms** "
              f"(generation {result['generate_ratio_ray1_vs_local']}× the local time)",
              f"- Two workers of one core against one of two: generation {result['generate_ratio_ray2_vs_local']}× the "
              "local time (on two cores data parallelism has nothing to gain)"]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
