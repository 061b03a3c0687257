"""The default job (`cotbench run`), alone, a few rounds: wall seconds and the scheduler's own times.

    python benchmarks/default_job.py [--rounds 2] [--hold-to-avx2] [--ab-fast-paths] [--keep-run DIR]

--hold-to-avx2 runs fp32 with oneDNN, MKL and ATen limited to AVX2 and cotbench's kernels built for
x86-64-v3 (AVX2/FMA, no AVX-512): on an AVX-512 machine, the code paths an AVX2-only CPU takes. Its
figures are this machine's, held back, not an AVX2 machine's (clocks, caches and memory differ); the
README gives the factor measured between the two once. Run it alone: anything else busy on the CPU
changes the figures. --ab-fast-paths runs, in turn each round, the job as is and with one CPU fast path off
at a time (weights not packed for oneDNN; no C kernels; transformers' forward instead of the lean decode
step; prefill through SDPA, not deterministic): what each gains end to end on this CPU kind, the rule for
keeping one (>= 10 %); --only NAME picks one of them.
Writes benchmarks/results/<cpu kind>/default_job[_avx2_held][_ab_fast_paths].json, with each run's
summary rows (accuracy, tokens, ACU and their intervals per α). --keep-run DIR copies the last as-is run's directory
there (its samples.sqlite left out): how reports/default-arithmetic/ is made.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import csv
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import AVX2_HOLD_ENV, HELD_CLI_CODE, HOLD_KERNELS_CODE, machine_record, results_dir  # noqa: E402

# One fast path off at a time, in the `cotbench ...` child (python -c CODE <arguments>), plus its environment.
FAST_PATHS_OFF = {
    "weights not packed": ("import cotbench.backends.hf.packed_linear as p; p.packing_applies = lambda model: False; ", {}),
    "no C kernels": ("", {"COTBENCH_CPU_KERNELS": "0"}),
    "no lean decode step": ("import cotbench.backends.hf.continuous as c; c.lean_decoder = lambda model: None; ", {}),
    # issue 39: what deterministic generation costs; prefill through transformers' SDPA instead of decode's loop
    "not deterministic (SDPA prefill)": (
        "import cotbench.backends.hf.lean_decode as l; l.LeanDecoder.prefill = lambda self, *a: None; ", {}),
}
CLI_CODE = "from cotbench.cli import main; sys.exit(main(sys.argv[1:]))"


def _engine_stats(out: str) -> dict:
    row = sqlite3.connect(f"{out}/samples.sqlite").execute("SELECT value FROM meta WHERE name = 'engine_stats'").fetchone()
    batcher = json.loads(row[0]).get("batcher", {}) if row else {}
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in batcher.items()}


def _engine_paths(out: str) -> dict:
    """Which paths the run took, as the engine recorded them (packed layers, kernels, decode path)."""
    row = sqlite3.connect(f"{out}/samples.sqlite").execute("SELECT value FROM meta WHERE name = 'engine_stats'").fetchone()
    stats = json.loads(row[0]) if row else {}
    return {k: stats.get(k) for k in ("packed_layers", "cpu_kernels", "decode_path", "dtype")}


def _outputs_digest(out: str) -> str:
    """One digest of every sample's response and token count: equal digests, identical outputs."""
    samples = sorted((s["problem_id"], s["alpha"], s["response"], s["n_generated_tokens"])
                     for s in map(json.loads, Path(f"{out}/samples.jsonl").read_text().splitlines()))
    return hashlib.sha256(json.dumps(samples).encode()).hexdigest()


SUMMARY_COLUMNS = ("alpha", "n", "accuracy_pct", "accuracy_ci_low", "accuracy_ci_high", "mean_tokens",
                   "mean_tokens_ci_low", "mean_tokens_ci_high", "truncation_pct", "acu", "acu_ci_low", "acu_ci_high",
                   "accuracy_change_pct", "accuracy_change_ci_low", "accuracy_change_ci_high", "mcnemar_p", "mcnemar_p_holm",
                   "token_reduction_ratio", "token_reduction_ci_low", "token_reduction_ci_high")


def _summary(out: str) -> list[dict]:
    """The run's summary rows, the columns the README quotes, as numbers (None where empty)."""
    with open(f"{out}/summary.csv", newline="", encoding="utf-8") as handle:
        return [{c: float(row[c]) if row.get(c) not in (None, "") else None for c in SUMMARY_COLUMNS}
                for row in csv.DictReader(handle)]


def ab_summary(runs: list[dict]) -> dict:
    """Each variant's summed wall seconds over all rounds against the job as is; whether every run gave the
    same outputs."""
    wall: dict[str, float] = {}
    for run in runs:
        wall[run["variant"]] = wall.get(run["variant"], 0.0) + run["wall_s"]
    return {"slower_than_as_shipped": {name: round(total / wall["as is"], 3) for name, total in wall.items()},
            "identical_outputs": len({run["outputs_sha256"] for run in runs}) == 1,
            "note": "ratios of summed wall seconds over all rounds"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hold-to-avx2", action="store_true")
    parser.add_argument("--ab-fast-paths", action="store_true")
    parser.add_argument("--only", action="append", choices=list(FAST_PATHS_OFF),
                        help="with --ab-fast-paths: only this variant beside 'as is' (repeatable)")
    parser.add_argument("--keep-run", type=Path, help="copy the last run's directory here (samples.sqlite left out)")
    args = parser.parse_args()
    if args.only and not args.ab_fast_paths:
        parser.error("--only picks among the --ab-fast-paths variants: add --ab-fast-paths")
    env = dict(os.environ, **(AVX2_HOLD_ENV if args.hold_to_avx2 else {}))
    cli = [sys.executable, "-c", HELD_CLI_CODE] if args.hold_to_avx2 else [sys.executable, "-m", "cotbench"]
    variants = [("as is", cli, {})]
    if args.ab_fast_paths:
        held = HOLD_KERNELS_CODE if args.hold_to_avx2 else "import sys; "
        variants += [(name, [sys.executable, "-c", held + code + CLI_CODE], extra_env)
                     for name, (code, extra_env) in FAST_PATHS_OFF.items() if not args.only or name in args.only]
    extra = ["--dtype", "float32"] if args.hold_to_avx2 else []
    record = {"machine": machine_record(), "rounds": args.rounds, "held_to_avx2": args.hold_to_avx2, "env": AVX2_HOLD_ENV if args.hold_to_avx2 else {},
              "command": "cotbench run" + (" --dtype float32" if extra else ""), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        # a warm-up so the GGUF conversion and the kernel build are cached and no timed run pays for them
        subprocess.run([*cli, "run", *extra, "--limit", "1", "--alphas", "0", "--out", f"{tmp}/warm"], env=env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for round_ in range(args.rounds):
            for name, command, extra_env in variants:
                out = f"{tmp}/{round_}-{len(record['runs'])}"
                load_before, started = os.getloadavg(), time.perf_counter()
                done = subprocess.run([*command, "run", *extra, "--out", out], env={**env, **extra_env},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                if done.returncode:
                    raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
                run = {"round": round_ + 1, "variant": name, "wall_s": round(time.perf_counter() - started, 1),
                       "load_before": load_before, "load_after": os.getloadavg(), "batcher": _engine_stats(out), "engine": _engine_paths(out),
                       "outputs_sha256": _outputs_digest(out), "summary": _summary(out)}
                record["runs"].append(run)
                if name == "as is":
                    kept = out
                print(json.dumps({k: v for k, v in run.items() if k != "summary"}), flush=True)
        if args.keep_run:
            shutil.rmtree(args.keep_run, ignore_errors=True)
            shutil.copytree(kept, args.keep_run, ignore=shutil.ignore_patterns("samples.sqlite*", ".cotbench.lock"))
            (args.keep_run / "config.yaml").write_text(  # the run's own out was a temporary directory
                (args.keep_run / "config.yaml").read_text().replace(f"out: {kept}", "out: runs/smollm2-default"))
    if args.ab_fast_paths:
        record["summary"] = ab_summary(record["runs"])
    name = "default_job" + ("_avx2_held" if args.hold_to_avx2 else "") + ("_ab_fast_paths" if args.ab_fast_paths else "") \
        + ("_" + "_".join(n.split(" (")[0].replace(" ", "_") for n in args.only) if args.only else "")
    path = results_dir() / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
