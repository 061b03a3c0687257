"""Rebuild a committed report from its samples.jsonl: regrade every stored response with the current grader
and write the run outputs of today (intervals, comparisons, report.html) without generating again.

    python reports/rebuild.py reports/default-valve-gsm8k200 [--drop-alpha 1.25]

The responses, token counts and finish reasons are the stored ones; the model and valve labels stay as they
were recorded. Only ``samples.sqlite`` (the working store) is left out of the directory.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from cotbench.grading import grader_id
from cotbench.grading.pool import GradingPool
from cotbench.records import Generation, Problem, Sample
from cotbench.report import write_run_outputs
from cotbench.store import Store


def _sample(row: dict) -> Sample:
    problem = Problem(row["task"], row["problem_id"], row["question"], row["gold"], row.get("metadata") or {})
    generation = Generation(row["key"], row["response"], row["n_prompt_tokens"], row["n_generated_tokens"],
                            row["finish_reason"], row.get("latency_s") or 0.0)
    return Sample(row["key"], row["model"], row["valve"], row["alpha"], problem, row["prompt"], generation,
                  n_thinking_tokens=row.get("n_thinking_tokens"), thinking_state=row.get("thinking_state") or "none",
                  method=row.get("method") or "valve", knob=row.get("knob", row["alpha"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--drop-alpha", type=float, action="append", default=[],
                        help="leave out the samples of this α (e.g. a point that was never completed)")
    parser.add_argument("--params-b", type=float, default=0.134515008, help="the model's size in billions")
    args = parser.parse_args()
    config = yaml.safe_load((args.report / "config.yaml").read_text())
    rows = [json.loads(line) for line in (args.report / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r["alpha"] not in args.drop_alpha]
    samples = [_sample(r) for r in rows]
    protocol = config.get("protocol", "math")
    pool = GradingPool(protocol, float(config.get("grade_timeout_s", 5.0)), 1)
    for s in samples:
        pool.submit(s.key, s.generation.text, s.problem.gold, s.generation.finish_reason == "length")
    grades = pool.finish()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        if args.drop_alpha:
            config["alphas"] = [a for a in config["alphas"] if a not in args.drop_alpha]
        store.set_meta("run", {"config": config, "model_id": samples[0].model, "valve_id": samples[0].valve,
                               "params_b": args.params_b, "n_params": round(args.params_b * 1e9),
                               "backend": {"engine": config.get("backend", "hf"),
                                           "note": "responses as stored; regraded by reports/rebuild.py"}})
        store.put_generations(samples)
        store.put_grades(grades, f"{grader_id(protocol)}|thinking=none")
        write_run_outputs(store)
        store.close()
        for path in Path(tmp).iterdir():
            if path.is_file() and path.name != "samples.sqlite" and not path.name.startswith("."):
                shutil.copyfile(path, args.report / path.name)
    (args.report / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"rebuilt {args.report}: {len(samples)} samples regraded with {grader_id(protocol)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
