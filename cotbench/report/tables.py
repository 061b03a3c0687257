"""Stored samples -> summary rows (one per model × valve × α × task) and per-sample records."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import pandas as pd

from cotbench.files import atomic_write
from cotbench.metrics import Outcome, summarize
from cotbench.records import Sample

SUMMARY_COLUMNS = ["model", "valve", "alpha", "method", "knob", "task", "n", "accuracy_pct", "mean_tokens", "median_tokens",
                   "p90_tokens", "mean_tokens_correct", "mean_tokens_wrong", "truncation_pct", "params_b", "acu",
                   "protocol", "n_ungraded", "n_timeout", "mean_thinking_tokens", "mean_answer_tokens",
                   "truncated_thinking_pct", "truncated_answer_pct"]


def summary_frame(samples: Sequence[Sample], params_b: "float | dict[str, float]") -> pd.DataFrame:
    """``params_b``: the model's size in billions, or one size per model name."""
    groups: dict[tuple, list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.model, s.valve, s.alpha, s.method, s.knob, s.problem.task), []).append(s)
    rows = []
    for (model, valve, alpha, method, knob, task), members in groups.items():
        # Accuracy is over real verdicts only: a timeout or a grader error is no judgement of the answer.
        graded = [s for s in members if s.grade is not None and s.grade.judged]
        n_timeout = sum(1 for s in members if s.grade is not None and not s.grade.judged)
        if not graded:
            continue
        outcomes = [Outcome(s.grade.correct, s.generation.n_generated_tokens, s.generation.finish_reason == "length",
                            s.n_thinking_tokens, s.thinking_state) for s in graded]
        size = params_b.get(model) if isinstance(params_b, dict) else params_b
        if not size:
            continue  # no parameter count for this model: no ACU row can be computed
        stats = asdict(summarize(outcomes, size))
        protocols = sorted({s.grade.protocol for s in graded})
        rows.append({"model": model, "valve": valve, "alpha": alpha, "method": method, "knob": knob, "task": task, **stats,
                     "protocol": ",".join(protocols), "n_ungraded": len(members) - len(graded) - n_timeout,
                     "n_timeout": n_timeout})
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return frame.sort_values(["task", "model", "valve", "method", "knob", "alpha"],
                             na_position="first").reset_index(drop=True)


def sample_record(s: Sample) -> dict:
    g = s.grade
    return {
        "key": s.key, "model": s.model, "valve": s.valve, "alpha": s.alpha, "method": s.method, "knob": s.knob,
        "task": s.problem.task,
        "problem_id": s.problem.problem_id, "question": s.problem.question, "metadata": dict(s.problem.metadata),
        "prompt": s.prompt, "response": s.generation.text, "extracted": g.extracted if g else None,
        "gold": s.problem.gold, "correct": g.correct if g else None, "status": g.status if g else None,
        "reason": g.reason if g else None,
        "protocol": g.protocol if g else None, "n_prompt_tokens": s.generation.n_prompt_tokens,
        "n_generated_tokens": s.generation.n_generated_tokens, "n_thinking_tokens": s.n_thinking_tokens,
        "thinking_state": s.thinking_state, "finish_reason": s.generation.finish_reason,
        "latency_s": round(s.generation.latency_s, 4),
    }


def write_samples_jsonl(samples: Sequence[Sample], path: Path) -> None:
    with atomic_write(path) as handle:  # never a half-written file under the final name
        for s in samples:
            handle.write(json.dumps(sample_record(s), ensure_ascii=False) + "\n")


def format_table(frame: pd.DataFrame) -> str:
    """Markdown table of the main columns, numbers rounded for reading."""
    cols = ["task", "model", "valve", "alpha", "n", "accuracy_pct", "mean_tokens", "p90_tokens",
            "truncation_pct", "params_b", "acu"]
    if "mean_thinking_tokens" in frame and frame["mean_thinking_tokens"].notna().any():  # a reasoning model
        cols[7:7] = ["mean_thinking_tokens", "mean_answer_tokens", "truncated_thinking_pct"]
    if "method" in frame and (frame["method"] != "valve").any():  # baselines beside the valve
        cols[3:3] = ["method", "knob"]
    view = frame[cols].copy()
    view["alpha"] = view["alpha"].map(lambda a: "-" if pd.isna(a) else f"{a:g}")
    if "knob" in view:
        view["knob"] = view["knob"].map(lambda a: "-" if pd.isna(a) else f"{a:g}")
    view["valve"] = view["valve"].replace("", "-")
    for col, digits in (("accuracy_pct", 1), ("mean_tokens", 1), ("p90_tokens", 1), ("truncation_pct", 1),
                        ("params_b", 4), ("acu", 3), ("mean_thinking_tokens", 1), ("mean_answer_tokens", 1),
                        ("truncated_thinking_pct", 1)):
        if col in view:
            view[col] = view[col].map(lambda v, d=digits: "" if pd.isna(v) else f"{v:.{d}f}")
    header = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return header + "".join("| " + " | ".join(str(v) for v in row) + " |\n" for row in view.itertuples(index=False))
