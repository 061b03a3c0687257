"""Does the lean decode step pay on Qwen3? A random-weight model with Qwen3-0.6B's shapes (speed does not
depend on the weights' values), the same requests with the lean step on and off, alternated in one process.

    python benchmarks/qwen3_lean.py            # 4, 16 and 64 rows x 64 tokens, 2 rounds each way: ~15 min, ~6 GB
    python benchmarks/qwen3_lean.py --quick    # 4 rows x 8 tokens, 1 round: a smoke run

Writes benchmarks/results/<cpu kind>/qwen3_lean.json. Output length is fixed (end-of-sequence switched off), so
both variants generate the same number of tokens; the dtype is what ``--dtype auto`` picks on this CPU. The
path stays only if it gains at least 10 % end to end here (the project's rule for fast paths).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_record, results_dir  # noqa: E402

QWEN3_0_6B = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                  rms_norm_eps=1e-6, rope_theta=1_000_000, tie_word_embeddings=True)


def build():
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from cotbench.backends.loading import resolve_model, standard_checkpoint

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**QWEN3_0_6B)).eval()
    # any tokenizer whose ids fall inside Qwen3's vocabulary: the embedded SmolLM2's (49,152 ids), no download
    tokenizer = AutoTokenizer.from_pretrained(standard_checkpoint(resolve_model("smollm2")))
    return model, tokenizer


def timed_run(backend, requests) -> tuple[float, int]:
    started = time.perf_counter()
    n = sum(g.n_generated_tokens for batch in backend.generate(requests) for g in batch)
    return time.perf_counter() - started, n


def compare(backend, rows: int, tokens: int, rounds: int) -> dict:
    """Median seconds for ``rows`` requests of ``tokens`` new tokens, the lean step on and off, alternated."""
    import torch

    from cotbench.records import GenerationRequest, SamplingSettings

    questions = [f"Question {i}: a farmer has {i + 3} cows and buys {2 * i + 1} more. How many cows now? Answer:"
                 for i in range(rows)]
    requests = [GenerationRequest(f"q{i}", q, None, SamplingSettings(max_new_tokens=tokens), add_special_tokens=True)
                for i, q in enumerate(questions)]
    backend.batch_size = rows
    timings, counts = {"lean": [], "transformers": []}, {}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, lean in (("lean", True), ("transformers", False)):
                backend.lean_decode = lean
                seconds, counts[name] = timed_run(backend, requests)
                timings[name].append(round(seconds, 3))
    assert counts["lean"] == counts["transformers"] == rows * tokens, counts
    median = {k: statistics.median(v) for k, v in timings.items()}
    return {"rows": rows, "new_tokens_per_row": tokens, "seconds": timings,
            "lean_s": round(median["lean"], 2), "transformers_s": round(median["transformers"], 2),
            "lean_gain": round(median["transformers"] / median["lean"], 3),
            "tokens_per_s_lean": round(rows * tokens / median["lean"], 1),
            "tokens_per_s_transformers": round(rows * tokens / median["transformers"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    shapes, tokens, rounds = ([4], 8, 1) if args.quick else ([4, 16, 64], 64, 2)

    import torch

    from cotbench.backends import HFBackend
    from cotbench.backends.hf.engine import pick_dtype
    from cotbench.records import GenerationRequest, SamplingSettings

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    model, tokenizer = build()
    dtype = pick_dtype("auto", "cpu")
    backend = HFBackend.from_loaded(model.to(dtype), tokenizer, "random Qwen3-0.6B shapes", batch_size=max(shapes))
    backend._eos_ids = set()  # a fixed output length: every row generates all its tokens
    with torch.inference_mode():  # first-call costs (kernel build, allocator) outside the timing
        timed_run(backend, [GenerationRequest("w", "Question: 1 + 1? Answer:", None, SamplingSettings(max_new_tokens=4),
                                              add_special_tokens=True)])
    runs = [compare(backend, rows, tokens, rounds) for rows in shapes]
    result = {
        "machine": machine_record(),
        "load_average_before": load_before,
        "load_average_after": Path("/proc/loadavg").read_text().split()[:3],
        "model": "random weights, Qwen3-0.6B shapes " + json.dumps(QWEN3_0_6B),
        "dtype": str(dtype).replace("torch.", ""),
        "rounds": rounds,
        "runs": runs,
        "summary": {f"lean_gain_{r['rows']}_rows": r["lean_gain"] for r in runs},
        "decode_path": backend.stats()["decode_path"],
        "threads": os.environ.get("OMP_NUM_THREADS", "auto"),
    }
    out = results_dir() / ("qwen3_lean_quick.json" if args.quick else "qwen3_lean.json")
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2), "->", out)


if __name__ == "__main__":
    main()
