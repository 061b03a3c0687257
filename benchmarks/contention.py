"""The default job (`cotbench run`) quiet and beside one competing busy process, three ways: the CLI as it
ships (threads "auto": the thread governor of cotbench/threads.py, libgomp's own wait policy); the CLI's
previous setup (OMP_WAIT_POLICY=PASSIVE, threads fixed at the usable CPUs); and torch's own defaults (the
same sweep through the Python API, which leaves the process as it finds it). Issue 17's target: contended
≤ 2.5× quiet.

    python benchmarks/contention.py [--limit N] [--timeout 900] [--hold-to-avx2]

--hold-to-avx2: fp32 with oneDNN, MKL, ATen and cotbench's kernels held to AVX2 (benchmarks/machine.py), the
code paths an AVX2-only CPU takes, on this machine; the governor and torch's defaults only. Writes
contention_avx2_held.json.

Run it alone: it starts the competing process itself. Writes benchmarks/results/<cpu kind>/contention.json.
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
from machine import AVX2_HOLD_ENV, HELD_CLI_CODE, HOLD_KERNELS_CODE, machine_record, results_dir  # noqa: E402
from cotbench.threads import usable_cpus  # noqa: E402

_API = ("import sys; from cotbench.config import RunConfig; from cotbench.runner import run_sweep; "
        "run_sweep(RunConfig(out=sys.argv[1], limit={limit}, dtype={dtype!r}), progress=False)")


def _busy() -> subprocess.Popen:
    """One process that keeps one core busy (as a pip install or a second job does)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _timed(command: list[str], env: dict, timeout: float) -> float | None:
    started = time.perf_counter()
    try:
        subprocess.run(command, env=env, check=True, timeout=timeout, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - started


def _threads_record(out: str) -> dict | None:
    """What the governor did in a run (engine_stats in its store), where it ran."""
    import sqlite3

    try:
        row = sqlite3.connect(f"{out}/samples.sqlite").execute(
            "SELECT value FROM meta WHERE name = 'engine_stats'").fetchone()
    except sqlite3.Error:
        return None
    return json.loads(row[0]).get("threads") if row else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="problems (default: the default job's own)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a run counts as > timeout")
    parser.add_argument("--hold-to-avx2", action="store_true")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "KMP_"))}
    held = args.hold_to_avx2
    if held:
        env.update(AVX2_HOLD_ENV)
    record = {"machine": machine_record(), "limit": args.limit, "timeout_s": args.timeout, "held_to_avx2": held,
              "env": AVX2_HOLD_ENV if held else {}, "runs": []}
    cotbench = [sys.executable, "-c", HELD_CLI_CODE] if held else [sys.executable, "-m", "cotbench"]
    api = HOLD_KERNELS_CODE + _API if held else _API
    dtype = "float32" if held else "auto"
    with tempfile.TemporaryDirectory() as tmp:
        # one warm-up so the GGUF conversion cache exists and no run pays for it
        subprocess.run([*cotbench, "run", "--dtype", dtype, "--limit", "1", "--alphas", "0", "--out",
                        f"{tmp}/warm"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        limit = ["--limit", str(args.limit)] if args.limit else []
        cli = [*cotbench, "run", "--dtype", dtype, *limit]
        variants = {  # name: (command for a run directory, extra environment)
            "cotbench run (threads auto: the governor)": (lambda out: [*cli, "--out", out], {}),
            "cotbench run, previous setup (PASSIVE, threads fixed)": (
                lambda out: [*cli, "--threads", str(usable_cpus()), "--out", out], {"OMP_WAIT_POLICY": "PASSIVE"}),
            "torch defaults (Python API)": (lambda out: [sys.executable, "-c", api.format(limit=args.limit, dtype=dtype),
                                                         out], {}),
        }
        if held:  # the setup the CLI no longer uses is left out here
            del variants["cotbench run, previous setup (PASSIVE, threads fixed)"]
        for contended in (False, True):
            for name, (command, extra) in variants.items():
                out = f"{tmp}/{len(record['runs'])}"
                busy = _busy() if contended else None
                load_before = os.getloadavg()
                try:
                    wall = _timed(command(out), {**env, **extra}, args.timeout)
                finally:
                    if busy:
                        busy.kill()
                        busy.wait()
                run = {"variant": name, "contended": contended, "wall_s": None if wall is None else round(wall, 1),
                       "load_before": load_before, "load_after": os.getloadavg(), "threads": _threads_record(out)}
                record["runs"].append(run)
                print(json.dumps(run), flush=True)
    quiet = {r["variant"]: r["wall_s"] for r in record["runs"] if not r["contended"]}
    for r in record["runs"]:
        if r["contended"] and r["wall_s"] and quiet.get(r["variant"]):
            r["slowdown_vs_quiet"] = round(r["wall_s"] / quiet[r["variant"]], 2)
    path = results_dir() / ("contention_avx2_held.json" if held else "contention.json")
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
