"""cotbench checked against lm-evaluation-harness's own GSM8K task, on the same model and problems.

    python benchmarks/lmeval_crosscheck.py RUN_DIR --model qwen.gguf --limit 300 --max-gen-toks 640
    python benchmarks/lmeval_crosscheck.py RUN_DIR --grade-only          # no generation: the grader check alone

Two checks, written to RUN_DIR/lmeval_crosscheck.{json,md}:

- **Grading**: every response cotbench stored in RUN_DIR run through lm-eval's ``gsm8k_cot_zeroshot`` filters
  (``strict-match``, ``flexible-extract``) and its ``exact_match`` metric, by lm-eval's own code (the task object
  its TaskManager builds); each verdict beside cotbench's, every disagreement listed with what each side read.
- **Generation**: lm-eval's CLI (``python -m lm_eval --model hf``) on the same GGUF and the first ``--limit``
  problems, its generation cap raised to cotbench's, once with ``--apply_chat_template`` and once without;
  accuracy of each filter with Wilson intervals beside cotbench's α = 0 row, and per-problem agreement.

The task file is lm-eval's installed ``gsm8k-cot-zeroshot.yaml`` with only its dataset pointed at
``$COTBENCH_DATA_DIR/gsm8k/{train,test}.jsonl`` (no download): prompt, stop strings, filters and metric are lm-eval's.
Each lm-eval run is kept in RUN_DIR/lmeval/ and reused when the command is run again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from machine import machine_record  # noqa: E402

from cotbench.report.samples_file import read_records  # noqa: E402
from cotbench.stats import wilson  # noqa: E402

TASK = "gsm8k_cot_zeroshot_local"
UPSTREAM = "gsm8k/gsm8k-cot-zeroshot.yaml"


def write_task(dest: Path, data_dir: Path) -> dict:
    """lm-eval's task file with its dataset read from local files; returns what was changed."""
    import lm_eval

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / UPSTREAM).read_text())
    changed = {"task": TASK, "dataset_path": "json",
               "dataset_kwargs": {"data_files": {split: str((data_dir / "gsm8k" / f"{split}.jsonl").resolve())
                                                 for split in ("train", "test")}}}
    removed = [k for k in ("tag", "dataset_name") if k in config]
    for key in removed:
        config.pop(key)
    config.update(changed)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{TASK}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return {"upstream": f"lm_eval/tasks/{UPSTREAM} (lm_eval {lm_eval.__version__})", "removed": removed,
            "set": {k: v for k, v in changed.items() if k != "dataset_kwargs"} | {"dataset_kwargs": "local files"}}


def load_task(task_dir: Path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir)).load([TASK])["tasks"][TASK]


def lmeval_verdicts(task, doc: dict, response: str) -> dict[str, dict]:
    """lm-eval's filters then its metric on one response, as its evaluator applies them."""
    out = {}
    for ensemble in task._filters:
        resps = [[response]]
        for make in ensemble.filters:
            resps = make().apply(resps, [doc])
        extracted = list(resps)[0]  # take_first yields its results lazily
        out[ensemble.name] = {"extracted": extracted,
                              "correct": bool(task.process_results(doc, [extracted])["exact_match"])}
    return out


def doc_index(problem_id: str) -> int:
    split, _, index = problem_id.rpartition("-")
    if split != "test":
        raise SystemExit(f"problem {problem_id} is not from GSM8K's test split")
    return int(index)


def check_grading(task, records: list[dict]) -> dict:
    docs = list(task.test_docs())
    rows, disagreements = Counter(), []
    for r in records:
        if r.get("task") != "gsm8k" or r.get("correct") is None:
            continue
        doc = docs[doc_index(r["problem_id"])]
        if doc["question"] != r["question"]:
            raise SystemExit(f"{r['problem_id']}: the question lm-eval reads differs from the one cotbench stored")
        theirs = lmeval_verdicts(task, doc, r["response"])
        flexible = theirs["flexible-extract"]
        rows[(bool(r["correct"]), flexible["correct"])] += 1
        if bool(r["correct"]) != flexible["correct"]:
            disagreements.append({
                "problem_id": r["problem_id"], "point": point(r), "gold": r["gold"],
                "cotbench": {"correct": bool(r["correct"]), "extracted": r["extracted"], "reason": r["reason"]},
                "lmeval_flexible": flexible, "lmeval_strict": theirs["strict-match"],
                "finish_reason": r["finish_reason"], "why": why(r, flexible),
                "response_tail": r["response"][-300:]})
    n = sum(rows.values())
    return {"n": n, "agree": rows[(True, True)] + rows[(False, False)],
            "both_correct": rows[(True, True)], "both_wrong": rows[(False, False)],
            "cotbench_only": rows[(True, False)], "lmeval_only": rows[(False, True)],
            "why_counts": dict(Counter(d["why"] for d in disagreements)), "disagreements": disagreements}


def point(r: dict) -> str:
    return f"α={r['alpha']:g}" if r.get("method", "valve") == "valve" else f"{r['method']} {r['knob']:g}"


def why(r: dict, flexible: dict) -> str:
    """What parts the two readings, from what each extracted (the note explains each kind in words)."""
    cut = r["finish_reason"] == "length"
    if flexible["correct"]:
        if cut and r["extracted"] is None:
            return "cut at the cap before any final answer: lm-eval credits the last number written"
        return "cotbench read the final answer (box or marker) as wrong; gold appears as the last number"
    if r["extracted"] is not None and flexible["extracted"] == "[invalid]":
        return "no number lm-eval's pattern matches (answer in words or a lone digit after text)"
    if _same_number(flexible["extracted"], r["gold"]):
        return "the same number written otherwise (57.00 for 57): lm-eval's exact_match compares text"
    return "another number follows the final answer; lm-eval takes the last number"


def _same_number(text, gold: str) -> bool:
    from fractions import Fraction

    try:
        return Fraction(str(text).replace(",", "").strip().rstrip(".")) == Fraction(gold.replace(",", "").strip())
    except (ValueError, ZeroDivisionError):
        return False


def run_lmeval(args, task_dir: Path, chat: bool) -> dict:
    out = args.run_dir / "lmeval" / ("chat" if chat else "plain")
    done = out / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    model = Path(args.model).resolve()
    command = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
               f"pretrained={model.parent},gguf_file={model.name},dtype=float32", "--tasks", TASK,
               "--include_path", str(task_dir), "--limit", str(args.limit), "--batch_size", str(args.batch_size),
               "--gen_kwargs", f"max_gen_toks={args.max_gen_toks}", "--log_samples", "--output_path", str(out),
               "--seed", "0", "--use_cache", str(out / f"cache-batch{args.batch_size}"), *(["--apply_chat_template"] if chat else [])]
    # lm-eval's request cache (sqlite, committed per response) lets a killed run resume; its wall time is then
    # that of the last part only, and the result says so. One cache per batch size: lm-eval's greedy text can
    # move with it, and its cache keys do not hold it, so a resume at another batch size starts afresh
    resumed = any(out.glob(f"cache-batch{args.batch_size}_rank*.db"))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = round(time.perf_counter() - started, 1)
    samples = next(out.rglob(f"samples_{TASK}_*.jsonl"))
    verdicts: dict[int, dict] = {}
    for line in samples.read_text().splitlines():
        s = json.loads(line)
        verdicts.setdefault(s["doc_id"], {"response": s["resps"][0][0]})[s["filter"]] = bool(s["exact_match"])
    result = {"command": " ".join(["python", "-m", "lm_eval", *command[3:]]).replace(str(model.parent), "MODEL_DIR")
              .replace(str(task_dir), "TASK_DIR").replace(str(out), "OUT"), "wall_s": wall, "resumed": resumed,
              "verdicts": {str(k): v for k, v in sorted(verdicts.items())}}
    done.write_text(json.dumps(result))
    return result


def summarize_generation(run: dict, base: dict[int, bool]) -> dict:
    verdicts = {int(k): v for k, v in run["verdicts"].items()}
    out = {"wall_s": run["wall_s"], "resumed": run.get("resumed", False), "command": run["command"],
           "n": len(verdicts)}
    for name in ("strict-match", "flexible-extract"):
        correct = sum(v[name] for v in verdicts.values())
        interval = wilson(correct, len(verdicts))
        shared = [i for i in verdicts if i in base]
        out[name] = {"correct": correct, "accuracy_pct": round(100 * correct / len(verdicts), 1),
                     "ci_pct": [round(100 * interval.low, 1), round(100 * interval.high, 1)],
                     "same_verdict_as_cotbench_alpha0": sum(verdicts[i][name] == base[i] for i in shared),
                     "n_shared": len(shared)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", help="the GGUF cotbench ran (for the generation check)")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--max-gen-toks", type=int, help="cotbench's --max-new-tokens (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--grade-only", action="store_true")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("COTBENCH_DATA_DIR", HERE.parent.parent / "shared" / "data")))
    args = parser.parse_args()
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    args.max_gen_toks = args.max_gen_toks or config["max_new_tokens"]
    task_dir = args.run_dir / "lmeval" / "task"
    result = {"task_file": write_task(task_dir, args.data_dir), "machine": machine_record()}
    records = read_records(args.run_dir)
    result["grading"] = check_grading(load_task(task_dir), records)
    if not args.grade_only:
        if not args.model:
            parser.error("--model is needed to generate with lm-eval (or pass --grade-only)")
        base = {doc_index(r["problem_id"]): bool(r["correct"]) for r in records
                if r.get("method", "valve") == "valve" and r["alpha"] == 0 and r.get("correct") is not None}
        result["generation"] = {"max_gen_toks": args.max_gen_toks, "limit": args.limit,
                                "batch_size": args.batch_size}
        for chat in (True, False):
            result["generation"]["chat_template" if chat else "no_chat_template"] = summarize_generation(
                run_lmeval(args, task_dir, chat), base)
    (args.run_dir / "lmeval_crosscheck.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    (args.run_dir / "lmeval_crosscheck.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    g = result["grading"]
    lines = ["# cotbench against lm-eval's gsm8k_cot_zeroshot", "",
             f"Task file: {result['task_file']['upstream']}, dataset pointed at local files "
             f"(removed: {', '.join(result['task_file']['removed']) or 'nothing'}); prompt, stop strings, filters and "
             "metric unchanged. Machine and commit: `lmeval_crosscheck.json`.", "",
             "## Grading cotbench's stored responses", "",
             f"{g['n']} responses: the same verdict {g['agree']} times ({100 * g['agree'] / max(g['n'], 1):.1f} %); "
             f"cotbench alone correct {g['cotbench_only']}, lm-eval's flexible-extract alone correct {g['lmeval_only']}.",
             "", "| why they part | responses |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(g["why_counts"].items(), key=lambda kv: -kv[1])]
    lines += ["", "| problem | point | gold | cotbench read | lm-eval read | cut | why |", "|---|---|---|---|---|---|---|"]
    for d in g["disagreements"]:
        mark = lambda ok: "✓" if ok else "✗"  # noqa: E731
        lines.append(f"| {d['problem_id']} | {d['point']} | {d['gold']} | {d['cotbench']['extracted']} "
                     f"{mark(d['cotbench']['correct'])} | {d['lmeval_flexible']['extracted']} "
                     f"{mark(d['lmeval_flexible']['correct'])} | {'yes' if d['finish_reason'] == 'length' else ''} | "
                     f"{d['why']} |")
    gen = result.get("generation")
    if gen:
        lines += ["", f"## lm-eval generating (`--model hf`, fp32, greedy, max_gen_toks={gen['max_gen_toks']}, "
                  f"first {gen['limit']} problems, batch {gen['batch_size']})", "",
                  "| lm-eval run | filter | accuracy % [95% CI] | same verdict as cotbench α = 0 | wall s |",
                  "|---|---|---|---|---|"]
        for label in ("chat_template", "no_chat_template"):
            run = gen[label]
            for name in ("flexible-extract", "strict-match"):
                f = run[name]
                lines.append(f"| {label.replace('_', ' ')} | {name} | {f['accuracy_pct']} [{f['ci_pct'][0]}, "
                             f"{f['ci_pct'][1]}] | {f['same_verdict_as_cotbench_alpha0']} of {f['n_shared']} | "
                             f"{run['wall_s']}{' (resumed: last part only)' if run['resumed'] else ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
