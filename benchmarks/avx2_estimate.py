"""An estimate of the default job on the 2-core AVX2-only EPYC, from an AVX-512 machine held to AVX2.

    python benchmarks/avx2_estimate.py [--rounds 2] [--reference-commit c36a2be]

The only AVX2-only machine measured so far (a 2-core AMD EPYC, 2026-12-01, issue 17) ran the code of that day
(commit ``--reference-commit``, whose default job is 20 problems x 5 alpha x 512 tokens in fp32) in 312 s. This
script runs that same commit and today's code on this machine, both held to AVX2 (oneDNN, MKL and ATen limited
to AVX2, today's kernels built for x86-64-v3; the reference commit's fp32 path builds no kernels), in turn,
round after round, so drift hits both alike. The estimate is today's held time x (312 s / the reference's held
time): how much slower the EPYC ran that code than this machine held, applied to today's code. It assumes the
two codes slow down alike between the machines; they share the engine's shape (continuous batching, oneDNN and
MKL GEMMs) but not all of it (today's fp32 kernels), so read it as an estimate, never as the EPYC's figure. The
held fp32 matmul ceiling is recorded beside the EPYC's (74 GFLOP/s at 2048^3, 94-110 at decode shapes).

The reference commit is checked out into a temporary git worktree and imported through PYTHONPATH with this
environment's packages. Run it alone. Writes benchmarks/results/<cpu kind>/avx2_estimate.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import AVX2_HOLD_ENV, HELD_CLI_CODE, machine_record, results_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EPYC_REFERENCE_S = 312.0  # issue 17: `cotbench run` at the reference commit, alone, on the 2-core AVX2 EPYC
EPYC_GFLOPS = {"square_2048": 74.0, "model_shapes": "94-110"}  # fp32, the same issue


def _timed(command: list[str], env: dict, cwd: str) -> dict:
    load_before, started = os.getloadavg(), time.perf_counter()
    subprocess.run(command, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"wall_s": round(time.perf_counter() - started, 1), "load_before": load_before, "load_after": os.getloadavg()}


def _held_ceiling(env: dict) -> dict:
    """The fp32 matmul ceiling in a held child: the hold must be in the environment before torch loads."""
    code = ("import json, sys; sys.path.insert(0, %r); from machine import matmul_ceiling; "
            "print(json.dumps(matmul_ceiling('float32')))" % str(Path(__file__).resolve().parent))
    return json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                     text=True).stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reference-commit", default="c36a2be",
                        help="the code the AVX2 EPYC ran in 312 s (the last commit of 2026-12-01)")
    args = parser.parse_args()
    held = dict(os.environ, **AVX2_HOLD_ENV)
    held.pop("PYTHONPATH", None)
    record = {"machine": machine_record(), "env": AVX2_HOLD_ENV, "reference_commit": args.reference_commit,
              "epyc_reference_s": EPYC_REFERENCE_S, "epyc_fp32_gflops": EPYC_GFLOPS,
              "today_commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                             text=True).stdout.strip(),
              "held_fp32_ceiling": _held_ceiling(held), "runs": []}
    print(json.dumps(record["held_fp32_ceiling"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tree = f"{tmp}/reference"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", tree, args.reference_commit], cwd=REPO, check=True)
        try:
            commands = {
                "reference": ([sys.executable, "-m", "cotbench", "run", "--dtype", "float32"], dict(held, PYTHONPATH=tree)),
                "today": ([sys.executable, "-c", HELD_CLI_CODE, "run", "--dtype", "float32"], held),
            }
            for name, (command, env) in commands.items():  # warm-ups: GGUF conversion and kernel build cached
                subprocess.run([*command, "--limit", "1", "--alphas", "0", "--out", f"{tmp}/warm-{name}"], env=env,
                               cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for round_ in range(args.rounds):
                for name, (command, env) in commands.items():
                    run = {"round": round_ + 1, "code": name,
                           **_timed([*command, "--out", f"{tmp}/{name}-{round_}"], env, tmp)}
                    record["runs"].append(run)
                    print(json.dumps(run), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", tree], cwd=REPO, check=False)
    times = {name: [r["wall_s"] for r in record["runs"] if r["code"] == name] for name in ("reference", "today")}
    factor = EPYC_REFERENCE_S / statistics.median(times["reference"])
    record["factor"] = round(factor, 3)
    record["estimate_s"] = {"median": round(factor * statistics.median(times["today"]), 1),
                            "range": [round(EPYC_REFERENCE_S / max(times["reference"]) * min(times["today"]), 1),
                                      round(EPYC_REFERENCE_S / min(times["reference"]) * max(times["today"]), 1)]}
    path = results_dir() / "avx2_estimate.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"factor {factor:.2f}, estimate {record['estimate_s']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
