"""Decode step, side by side: what each decode technique adds, one change at a time, in one process.

    python benchmarks/decode_step.py           # rows 16, 64, 128, 256; about 12 min and 10 GB on a 2-core CPU
    python benchmarks/decode_step.py --quick   # rows 16, 3 steps: a smoke run

Writes benchmarks/results/<cpu kind>/decode_step.{json,md}. The end-to-end ablation of sweep_speed.py runs each step as
its own small sweep, minutes apart, on a shared machine whose speed drifts by 10 % and more; this one times
decode steps of every variant in turn, round after round, so drift hits all of them alike.

Each variant is SmolLM2-135M-Instruct + the shipped valve in bf16, with its own copy of the model and its
own slot cache, filled by the same prefill: ``rows`` rows at lengths spread over 100-290 tokens, α cycling
over 0, 0.25, 0.5, 0.75, 1. A step is what the batcher runs: the forward pass for one token per row and the
greedy pick.

In a round each variant runs a burst of ``--burst`` steps back to back, as the batcher's decode loop runs
them. The first step of a burst finds the CPU caches full of the variant timed before it and is reported
apart ("cold"); the rest are the decode loop's steady state ("step"), the figure quoted. (On the AMX Xeon,
2026-12-03, the two were within 3 % of each other: the variants' weights are not what the caches hold
between steps.) Reported: the median step over the rounds, tokens/s, the speed-up over the variant before it,
the fraction of the machine's matmul ceiling (measured first, in the same invocation: the higher of 2048³
and the model's own shapes, as sweep_speed.py measures it), and how often each variant's greedy token
agrees with the first one's (bf16 rounding differs between them, so not always; transformers' fp32
numbers are checked bit for bit by the tests).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_record, matmul_ceiling, results_dir  # noqa: E402

HERE = Path(__file__).resolve().parent
CAPACITY = 300  # cache columns: the longest row (290) and its next token fit

# cumulative, in the order sweep_speed.py's ablation adds them
# Grouped attention and the C attention run inside the lean step (nothing is registered with transformers),
# so the lean step comes first; the first variant is transformers' own forward with plain SDPA.
VARIANTS = [
    ("transformers forward, SDPA, plain weights", dict(decode_kernel=False, pack_weights=False, lora_kernel=False, lean=False)),
    ("+ lean decode step (grouped SDPA)", dict(decode_kernel=False, pack_weights=False, lora_kernel=False, lean=True)),
    ("+ C decode kernels (attention, argmax)", dict(decode_kernel=True, pack_weights=False, lora_kernel=False, lean=True)),
    ("+ weights packed for oneDNN", dict(decode_kernel=True, pack_weights=True, lora_kernel=False, lean=True)),
    ("+ LoRA up-projection in C", dict(decode_kernel=True, pack_weights=True, lora_kernel=True, lean=True)),
]


def build(rows: int, settings: dict, fill: list, alphas: list, dtype: str):
    """A backend, its batcher and a slot cache prefilled with ``fill`` (the same for every variant)."""
    import torch

    from cotbench.backends.hf.continuous import ContinuousBatcher
    from cotbench.backends.hf import HFBackend
    from cotbench.backends.hf.sampling import Sampler
    from cotbench.backends.hf.slot_cache import SlotCache
    from cotbench.config import RunConfig
    from cotbench.records import SamplingSettings

    backend = HFBackend("smollm2", RunConfig().valve, dtype=dtype, pack_weights=settings["pack_weights"])
    backend._strengths.cpu_kernel = settings["lora_kernel"]
    batcher = ContinuousBatcher(backend.model, backend.tokenizer, backend._eos_ids, backend._strengths, rows,
                                decode_kernel=settings["decode_kernel"], lean_decode=settings["lean"])
    cache = SlotCache(rows, CAPACITY)
    with torch.inference_mode():
        for start, ids in fill:
            n = ids.shape[0]
            batcher._forward(cache, torch.arange(start, start + n), ids, torch.arange(ids.shape[1]).expand(n, -1),
                             alphas[start:start + n])
    return batcher, cache, Sampler(SamplingSettings(), batcher.device, settings["decode_kernel"]), backend.n_params()


def measure(rows: int, rounds: int, burst: int, dtype: str, ceiling_gflops: float) -> tuple[list[dict], float]:
    """The variants' results at ``rows`` rows, and the ceiling in tokens/s (matmul FLOP/s ÷ 2 × parameters)."""
    import torch

    from cotbench.backends.hf.slot_attention import slot_groups

    generator = torch.Generator().manual_seed(0)
    lengths = sorted(torch.randint(100, CAPACITY - 10, (rows,), generator=generator).tolist(), reverse=True)
    alphas = [(0.0, 0.25, 0.5, 0.75, 1.0)[i % 5] for i in range(rows)]
    fill = [(start, torch.randint(0, 40000, (min(16, rows - start), CAPACITY - 1), generator=generator))
            for start in range(0, rows, 16)]
    tokens = torch.randint(0, 40000, (rows, 1), generator=generator)
    positions = torch.tensor(lengths).view(-1, 1) - 1
    variants = [(label, settings, *build(rows, settings, fill, alphas, dtype)) for label, settings in VARIANTS
                if dtype == "bfloat16" or not settings["pack_weights"] or label != "+ weights packed for oneDNN"]
    ceiling_tok_s = ceiling_gflops * 1e9 / (2 * variants[0][-1])
    variants = [variant[:-1] for variant in variants]
    times: dict[str, list[float]] = {label: [] for label, *_ in variants}
    cold: dict[str, list[float]] = {label: [] for label, *_ in variants}
    picks: dict[str, list[int]] = {}
    with torch.inference_mode():
        for round_ in range(rounds + 1):  # round 0 warms up
            for label, settings, batcher, cache, sampler in variants:
                groups = {"slot_groups": slot_groups(lengths)}
                if settings["decode_kernel"]:  # as the batcher passes them
                    groups["slot_lengths"] = torch.tensor(lengths, dtype=torch.int32)
                for step in range(burst):  # the same token again: the cache column is rewritten, lengths stay
                    started = time.perf_counter()
                    logits = batcher._forward(cache, rows, tokens, positions, alphas, lean=settings["lean"],
                                              **(groups if settings["lean"] else {}))
                    picked = sampler.pick(logits, [None] * rows)
                    if round_:
                        (times if step else cold)[label].append(time.perf_counter() - started)
                picks[label] = picked
    results, previous = [], None
    first = picks[variants[0][0]]
    for label, *_ in variants:
        step = statistics.median(times[label])
        results.append({"variant": label, "rows": rows, "dtype": dtype, "step_ms": round(step * 1000, 1),
                        "tok_per_s": round(rows / step, 1), "fraction_of_ceiling": round(rows / step / ceiling_tok_s, 3),
                        "cold_step_ms": round(statistics.median(cold[label]) * 1000, 1),
                        "speedup_over_previous": round(previous / step, 3) if previous else None,
                        "greedy_agreement_with_first": round(sum(a == b for a, b in zip(picks[label], first)) / rows, 3)})
        previous = step
    return results, ceiling_tok_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="16,64,128,256")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--burst", type=int, default=3, help="steps back to back per variant and round; the first is the cold one")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                        help="float32: the path of CPUs without bf16 matmuls (AVX2 machines); written as decode_step_float32")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.rounds = "16", 3
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.burst < 2:
        parser.error("--burst must be at least 2: the first step of each burst is timed apart as the cold one")
    started = time.perf_counter()
    machine_before = machine_record()
    ceiling = matmul_ceiling(args.dtype)
    print(f"[decode_step] ceiling {ceiling}", flush=True)
    results = []
    for rows in (int(r) for r in args.rows.split(",")):
        rows_results, ceiling_tok_s = measure(rows, args.rounds, args.burst, args.dtype, ceiling["matmul_gflops"])
        for r in rows_results:
            print(f"[decode_step] {r}", flush=True)
        results += rows_results
    name = ("decode_step_quick" if args.quick else "decode_step") + ("" if args.dtype == "bfloat16" else f"_{args.dtype}")
    out = results_dir()  # benchmarks/results/<cpu kind>/
    wall = round(time.perf_counter() - started, 1)
    machine = machine_record()  # after: its load average closes the run
    (out / f"{name}.json").write_text(json.dumps({"machine_before": machine_before, "machine": machine,
                                                  "rounds": args.rounds, "burst": args.burst, "dtype": args.dtype,
                                                  "ceiling": {**ceiling, "tok_per_s": round(ceiling_tok_s, 1)},
                                                  "results": results, "wall_s": wall}, indent=1))
    lines = ["# Decode step, side by side", "",
             f"{machine['cpu']} ({machine['kind']}), {machine['usable_cpus']} usable CPUs, load average "
             f"{machine_before['load_average'][0]:.2f} before, {machine['load_average'][0]:.2f} after.", "",
             f"SmolLM2-135M-Instruct + the shipped valve, {args.dtype}, rows at lengths 100-290, mixed α; median of "
             f"{args.rounds} rounds, every variant in turn, {args.burst} steps back to back each round (the first "
             "of them: cold). `python benchmarks/decode_step.py`.", "",
             f"Ceiling: {ceiling['square_2048_gflops']} GFLOP/s at 2048³, {ceiling['model_shapes_gflops']} GFLOP/s at "
             f"the model's decode shapes ({ceiling['model_shapes_rows']} rows); the higher ÷ 2 × the model's "
             f"parameters = **{ceiling_tok_s:.0f} tokens/s**, measured in this invocation.", "",
             "| rows | variant | ms/step | tokens/s | of ceiling | cold step ms | × previous | greedy = first |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['rows']} | {r['variant']} | {r['step_ms']} | {r['tok_per_s']} | {r['fraction_of_ceiling']:.0%} | "
              f"{r['cold_step_ms']} | {r['speedup_over_previous'] or '-'} | {r['greedy_agreement_with_first']:.0%} |"
              for r in results]
    lines += ["", f"Wall time: {wall} s."]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
