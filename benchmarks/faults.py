"""kill -9 at random points of a sweep, many times in a row, then resume: nothing lost, nothing doubled.

    python benchmarks/faults.py [--kills 20] [--seed 0]   # writes benchmarks/results/faults.{json,md}

A tiny random Llama with a real LoRA valve (built here, as the tests build it) runs an α sweep of the
embedded arithmetic task through `cotbench run`. The same sweep runs once without interruption (the
reference), and once killed with SIGKILL at a random moment ``--kills`` times, each time restarted with the
same command, then run to the end. Checked after every kill: every row stored before the kill is still
there, no key appears twice, the store passes SQLite's integrity check. At the end the faulted store must
equal the reference row for row (responses, token counts, finish reasons, verdicts).
"""
from __future__ import annotations

import argparse
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from conftest import make_tiny_model, make_valve  # noqa: E402


def command(model: Path, valve: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cotbench", "run", "--model", str(model), "--valve", str(valve), "--alphas",
            "0,0.5,1", "--tasks", "arithmetic", "--n", "100", "--max-new-tokens", "48", "--batch-size", "4",
            "--dtype", "float32", "--out", str(out)]


def rows(out: Path) -> dict[str, tuple]:
    path = out / "samples.sqlite"
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        return {r[0]: r[1:] for r in db.execute(
            "SELECT key, response, n_generated_tokens, finish_reason, correct, status FROM samples")}
    # (response, tokens, finish reason, correct, status); correct is None until graded


def progress(out: Path) -> int:
    current = rows(out)
    return len(current) + sum(1 for r in current.values() if r[3] is not None)


def check(out: Path) -> tuple[int, int, str]:
    with sqlite3.connect(f"file:{out / 'samples.sqlite'}?mode=ro", uri=True, timeout=30) as db:
        n, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM samples").fetchone()
        return n, distinct, db.execute("PRAGMA integrity_check").fetchone()[0]


def cpu() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="cotbench-faults-"))
    model = make_tiny_model(work / "model")
    valve = make_valve(model, work / "valve")

    started = time.perf_counter()
    subprocess.run(command(model, valve, work / "reference"), check=True, capture_output=True)
    reference = rows(work / "reference")
    reference_s = time.perf_counter() - started

    out = work / "faulted"
    # Kill points spread over the whole sweep: progress = rows stored + rows graded (0 .. 2n); two kills land
    # while the model is still loading.
    total = 2 * len(reference)
    targets = [None, None] + sorted(rng.sample(range(1, total), args.kills - 2))
    kills = []
    for i, target in enumerate(targets):
        run = subprocess.Popen(command(model, valve, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if target is None:
            time.sleep(rng.uniform(0.3, 2.0))
        else:
            while run.poll() is None and progress(out) < target:
                time.sleep(0.01)
        before = rows(out)
        run.kill()
        run.wait()
        after = rows(out)
        n, distinct, integrity = check(out) if after else (0, 0, "ok")
        kills.append({"kill": i + 1, "target_progress": target, "rows_seen_before": len(before),
                      "rows_after": len(after), "graded_after": sum(1 for r in after.values() if r[3] is not None),
                      "lost_rows_seen_before": len(set(before) - set(after)), "duplicate_keys": n - distinct,
                      "integrity": integrity, "finished_before_kill": run.returncode == 0})
        print(kills[-1], flush=True)
    subprocess.run(command(model, valve, out), check=True, capture_output=True)
    final = rows(out)
    n, distinct, integrity = check(out)
    result = {
        "kills": args.kills, "seed": args.seed, "samples": len(reference), "reference_run_s": round(reference_s, 1),
        "final_equals_reference": final == reference, "final_rows": n, "final_duplicate_keys": n - distinct,
        "final_integrity": integrity, "rows_lost_after_any_kill": sum(k["lost_rows_seen_before"] for k in kills),
        "duplicate_keys_after_any_kill": sum(k["duplicate_keys"] for k in kills), "per_kill": kills,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "faults.json").write_text(json.dumps(result, indent=2))
    lines = ["# kill -9, then resume", "",
             f"{args.kills} SIGKILLs at random moments of a {len(reference)}-sample sweep (tiny random Llama + valve, "
             f"3 α, continuous scheduler, one grading worker; an uninterrupted run takes {reference_s:.1f} s).", "",
             f"- final store equals the uninterrupted run's, row for row: **{result['final_equals_reference']}**",
             f"- rows stored before a kill and missing after it: **{result['rows_lost_after_any_kill']}**",
             f"- duplicate keys, after any kill and at the end: **{result['duplicate_keys_after_any_kill']}**, "
             f"**{result['final_duplicate_keys']}**",
             f"- SQLite integrity check after every kill: "
             f"**{'ok' if all(k['integrity'] == 'ok' for k in kills) else 'FAILED'}**", "",
             "| kill | rows seen before | rows after | graded after |", "|---|---|---|---|"]
    lines += [f"| {k['kill']} | {k['rows_seen_before']} | {k['rows_after']} | {k['graded_after']} |" for k in kills]
    lines += ["", f"CPU: {cpu()}; {time.strftime('%Y-%m-%d')}."]
    (HERE / "results" / "faults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not (result["final_equals_reference"] and not result["rows_lost_after_any_kill"]
            and not result["duplicate_keys_after_any_kill"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
