"""Stored samples -> summary rows (one per model × valve × α × task) and the tables that show them."""
from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import pandas as pd

from cotbench.grading.grader import NO_COMMITMENT
from cotbench.metrics import Outcome, summarize
from cotbench.report.analysis import add_comparisons, group_rows, paired_p, row_statistics
from cotbench.records import Sample

SUMMARY_COLUMNS = ["model", "model_identity", "valve", "alpha", "method", "knob", "task", "n", "n_graded", "n_ungraded", "n_timeout",
                   "n_error", "n_truncated_no_answer", "mixed_numerics", "complete", "accuracy_pct",
                   "accuracy_ci_low", "accuracy_ci_high", "samples_per_problem", "pass_at_k_pct", "maj_at_k_pct",
                   "disagreement_pct", "mean_tokens_per_problem", "mean_tokens", "mean_tokens_ci_low", "mean_tokens_ci_high",
                   "median_tokens", "p90_tokens", "mean_tokens_correct", "mean_tokens_wrong", "truncation_pct",
                   "accuracy_non_truncated_pct", "completion_pct", "accuracy_cut_pct", "params_b", "acu", "acu_ci_low", "acu_ci_high", "bootstrap_resamples",
                   "acu_no_params", "ockscore", "budget_auc", "base", "accuracy_change_pct", "accuracy_change_ci_low",
                   "accuracy_change_ci_high", "n_paired", "mcnemar_p", "mcnemar_p_holm", "wilcoxon_p", "wilcoxon_p_holm", "distinguishable",
                   "token_reduction_ratio", "token_reduction_ci_low", "token_reduction_ci_high", "aes",
                   "accuracy_change_by_completion_pct", "accuracy_change_by_answers_pct",
                   "detectable_difference_pct", "problems_needed",
                   "length_spearman_rho", "length_spearman_ci_low", "length_spearman_ci_high", "on_pareto",
                   "protocol", "mean_thinking_tokens", "mean_answer_tokens", "truncated_thinking_pct",
                   "truncated_answer_pct"]


def summary_frame(samples: Sequence[Sample], params_b: "float | dict[str, float]") -> pd.DataFrame:
    """``params_b``: the model's size in billions, or one size per model name."""
    groups = group_rows(samples)
    rows = []
    for (model, valve, alpha, method, knob, task), members in groups.items():
        # Accuracy is over real verdicts only: a timeout or a grader error is no judgement of the answer.
        graded = [s for s in members if s.grade is not None and s.grade.judged]
        n_timeout = sum(1 for s in members if s.grade is not None and s.grade.status == "timeout")
        n_error = sum(1 for s in members if s.grade is not None and s.grade.status == "error")
        counts = {"n_ungraded": len(members) - len(graded) - n_timeout - n_error, "n_timeout": n_timeout,
                  "n_error": n_error,  # the grader failed: no judgement, kept out of accuracy like a timeout
                  # cut at the length cap before committing to an answer: judged wrong, counted so readers see why
                  "n_truncated_no_answer": sum(1 for s in graded if s.grade.reason == NO_COMMITMENT),
                  # generated under more than one numerics record (batch size, threads, kernels): said in words
                  "mixed_numerics": len({s.numerics for s in members if s.numerics}) > 1,
                  # the model's content identity (keys.py) when every sample of the row records the same one
                  "model_identity": _one({s.model_identity for s in members}),
                  "complete": len(graded) == len(members)}  # an incomplete row is flagged and drawn hollow
        if not graded:  # nothing judged yet: a row that says so, never a value it does not have
            rows.append({"model": model, "valve": valve, "alpha": alpha, "method": method, "knob": knob, "task": task,
                         "n": len(members), "n_graded": 0, **counts})
            continue
        # accuracy over the judged samples, lengths over every generated one (a timed-out response counts)
        verdicts = {id(s) for s in graded}
        outcomes = [Outcome(bool(s.grade and s.grade.correct), s.generation.n_generated_tokens,
                            s.generation.finish_reason == "length", s.n_thinking_tokens, s.thinking_state,
                            judged=id(s) in verdicts) for s in members]
        size = params_b.get(model) if isinstance(params_b, dict) else params_b
        if not size:
            continue  # no parameter count for this model: no ACU row can be computed
        stats = asdict(summarize(outcomes, size))
        protocols = sorted({s.grade.protocol for s in graded})
        rows.append({"model": model, "valve": valve, "alpha": alpha, "method": method, "knob": knob, "task": task, **stats,
                     **row_statistics(members, size), "protocol": ",".join(protocols), **counts,
                     "n": len(members)})  # n: every sample of the row; accuracy is over n_graded
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame = frame.sort_values(["task", "model", "valve", "method", "knob", "alpha"],
                              na_position="first").reset_index(drop=True)
    empty = frame[frame["n_graded"] == 0]
    judged = add_comparisons(frame[frame["n_graded"] > 0].reset_index(drop=True), groups)
    return pd.concat([judged, empty], ignore_index=True) if len(empty) else judged


def _one(values: set) -> str:
    return next(iter(values)) if len(values) == 1 and "" not in values else ""


def format_table(frame: pd.DataFrame) -> str:
    """Markdown table of the main columns with their 95 % intervals; a row marked * is incomplete (samples
    not graded yet, or timed out): its figures cover only the judged samples."""
    baselines = "method" in frame and (frame["method"] != "valve").any()
    thinking = "mean_thinking_tokens" in frame and frame["mean_thinking_tokens"].notna().any()
    k_samples = "samples_per_problem" in frame and (frame["samples_per_problem"].fillna(1) > 1).any()
    header = ["task", "model", "valve", *(["method"] if baselines else []), "point", "n", "graded", "timeout",
              "error", "cut, no answer", *(["K", "pass@K %", "maj@K %"] if k_samples else []),
              "accuracy % [95% CI]" if not k_samples else "pass@1 % [95% CI]", "mean tokens [95% CI]",
              *(["thinking tokens"] if thinking else []), "truncated %", "accuracy % of untruncated", "ACU [95% CI]",
              "vs base: Δaccuracy [95% CI]", "McNemar p (Holm)" if not k_samples else "McNemar or Wilcoxon p (Holm)",
              "× shorter [95% CI]"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in frame.iterrows():
        point = point_label(r)
        cells = [r["task"], r["model"], r["valve"] or "-", *([r["method"]] if baselines else []),
                 point + ("" if r.get("complete", True) else " *"), _int(r.get("n")), _int(r.get("n_graded", r["n"])),
                 _int(r.get("n_timeout", 0)), _int(r.get("n_error", 0)), _int(r.get("n_truncated_no_answer", 0)),
                 *([_int(r.get("samples_per_problem")), _num(r.get("pass_at_k_pct"), 1), _num(r.get("maj_at_k_pct"), 1)]
                   if k_samples else []),
                 _with_ci(r, "accuracy_pct", "accuracy_ci", 1), _with_ci(r, "mean_tokens", "mean_tokens_ci", 1),
                 *([_num(r.get("mean_thinking_tokens"), 1)] if thinking else []), _num(r.get("truncation_pct"), 1),
                 _num(r.get("accuracy_non_truncated_pct"), 1),
                 _with_ci(r, "acu", "acu_ci", 3), _signed_ci(r), _p_value(paired_p(r)[2]),
                 _with_ci(r, "token_reduction_ratio", "token_reduction_ci", 2)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _power_note(r) -> str:
    """Whether "not distinguishable" means "no effect" or "too few problems"."""
    detectable, needed = r.get("detectable_difference_pct"), r.get("problems_needed")
    if detectable is None or pd.isna(detectable):
        return ""
    note = f": this run detects differences of {detectable:.1f} points or more (80 % power)"
    if needed is not None and not pd.isna(needed) and needed > r["n_paired"]:
        note += f"; the observed {_signed(r['accuracy_change_pct'])} would need about {int(needed)} problems"
    return note


def limit_advice(frame: pd.DataFrame) -> str | None:
    """One line for `cotbench run`: the --limit that would separate the points it could not, or None."""
    if "problems_needed" not in frame:
        return None
    undecided = frame[frame["problems_needed"].notna() & ~frame["distinguishable"].fillna(False).astype(bool)]
    undecided = undecided[undecided["problems_needed"] > undecided["n_paired"]]
    if not len(undecided):
        return None
    r = undecided.loc[undecided["problems_needed"].astype(float).idxmin()]
    return (f"too few problems to separate {len(undecided)} point(s) from the base: {point_label(r)} of "
            f"{r['task']} ({_signed(r['accuracy_change_pct'])} points on {int(r['n_paired'])} problems) would need "
            f"about --limit {int(r['problems_needed'])} at 80 % power")


def efficiency_table(frame: pd.DataFrame) -> str:
    """Where accuracy per token goes, per row: accuracy = completion × accuracy given completion (+ the cut
    responses' share), over the mean length; against the base, the accuracy change split into completion and
    answers (``metrics.completion_split``) beside the length ratio."""
    header = ["task", "model", "valve", "point", "ended on their own %", "accuracy given completion %",
              "accuracy of cut %", "mean tokens", "accuracy % per 1k tokens", "Δacc by completion",
              "Δacc by answers", "× shorter"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in frame.iterrows():
        split = [r.get("accuracy_change_by_completion_pct"), r.get("accuracy_change_by_answers_pct")]
        per_1k = None if not r.get("mean_tokens") else 1000.0 * r["accuracy_pct"] / r["mean_tokens"]
        lines.append("| " + " | ".join([
            r["task"], r["model"], r["valve"] or "-", point_label(r), _num(r.get("completion_pct"), 1),
            _num(r.get("accuracy_non_truncated_pct"), 1), _num(r.get("accuracy_cut_pct"), 1),
            _num(r.get("mean_tokens"), 1), _num(per_1k, 2),
            *["" if v is None or pd.isna(v) else _signed(v) for v in split],
            _num(r.get("token_reduction_ratio"), 2)]) + " |")
    return "\n".join(lines)


def point_label(r) -> str:
    """α=0.5, N=256 (a budget) or nothink: the point of a row on its sweep axis."""
    method = r.get("method", "valve") if isinstance(r.get("method", "valve"), str) else "valve"
    if method == "valve":
        return "-" if pd.isna(r["alpha"]) else f"α={r['alpha']:g}"
    return "nothink" if pd.isna(r.get("knob")) else f"N={r['knob']:g}"


def _num(v, digits: int) -> str:
    return "" if v is None or pd.isna(v) else f"{v:.{digits}f}"


def _p_value(v) -> str:
    return "" if v is None or pd.isna(v) else ("<0.001" if v < 0.001 else f"{v:.3f}")


def _int(v) -> str:
    return "" if v is None or pd.isna(v) else str(int(v))


def _with_ci(r, column: str, prefix: str, digits: int) -> str:
    value, low, high = r.get(column), r.get(f"{prefix}_low"), r.get(f"{prefix}_high")
    if value is None or pd.isna(value):
        return ""
    if low is None or pd.isna(low):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _signed(v) -> str:
    return f"{round(float(v), 1) + 0.0:+.1f}"  # + 0.0: no "-0.0" for a bound that rounds to zero


def _signed_ci(r) -> str:
    value, low, high = r.get("accuracy_change_pct"), r.get("accuracy_change_ci_low"), r.get("accuracy_change_ci_high")
    if value is None or pd.isna(value):
        return ""
    return f"{_signed(value)} [{_signed(low)}, {_signed(high)}]" if low is not None and not pd.isna(low) else _signed(value)


ERROR_SHARE_FLAG = 0.01  # more grader errors than this share of a row's samples is said in words


def findings(frame: pd.DataFrame) -> list[str]:
    """Each comparison with the base in words: which differences are distinguishable from noise; and every row
    whose grader failed on more than ``ERROR_SHARE_FLAG`` of its samples."""
    lines = []
    for _, r in frame.iterrows():
        errors = r.get("n_error")
        if errors is not None and not pd.isna(errors) and errors > ERROR_SHARE_FLAG * r["n"]:
            lines.append(f"- {r['task']}, {r['model'].split(' (')[0]}, {point_label(r)}: the grader failed on "
                         f"{int(errors)} of {int(r['n'])} samples ({100 * errors / r['n']:.1f} %, above "
                         f"{100 * ERROR_SHARE_FLAG:g} %); they are kept out of accuracy. `cotbench grade --explain` "
                         "on one of them (samples.jsonl, status `error`) shows where.")
        if bool(r.get("mixed_numerics")):
            lines.append(f"- {r['task']}, {r['model'].split(' (')[0]}, {point_label(r)}: its samples were generated "
                         "under more than one setting of batch size, threads, scheduler or kernels (each sample's "
                         "`numerics` in samples.sqlite); greedy text can differ by rounding between them.")
    for _, r in frame.iterrows():
        if r.get("accuracy_change_pct") is None or pd.isna(r.get("accuracy_change_pct")):
            continue
        where = f"{r['task']}, {r['model'].split(' (')[0]}{' + ' + r['valve'] if r['valve'] else ''}, {point_label(r)}"
        ratio = r.get("token_reduction_ratio")
        shorter = "" if ratio is None or pd.isna(ratio) else (
            f"chains {ratio:.2f}× {'shorter' if ratio >= 1 else 'longer'} than at {r['base']} "
            f"[{r['token_reduction_ci_low']:.2f}, {r['token_reduction_ci_high']:.2f}]; ")
        excludes_zero = r["accuracy_change_ci_low"] > 0 or r["accuracy_change_ci_high"] < 0
        test, p, p_holm = paired_p(r)
        if bool(r.get("distinguishable")):
            verdict = "a difference distinguishable from noise"
        elif excludes_zero or p_holm < 0.05:  # the interval and the test disagree: say so
            verdict = (f"borderline: the interval and the {test} test disagree, not counted as distinguishable"
                       + _power_note(r))
        else:
            verdict = "not distinguishable from noise" + _power_note(r)
        split = ""
        if not pd.isna(r.get("accuracy_change_by_completion_pct")):
            split = (f" ({_signed(r['accuracy_change_by_completion_pct'])} by how many responses ended on their own, "
                     f"{_signed(r['accuracy_change_by_answers_pct'])} by their answers)")
        lines.append(f"- {where}: {shorter}accuracy {_signed(r['accuracy_change_pct'])} points{split} "
                     f"[{_signed(r['accuracy_change_ci_low'])}, {_signed(r['accuracy_change_ci_high'])}], {verdict} "
                     f"({test} p = {p:.3g}, {p_holm:.3g} after Holm's correction "
                     f"over this curve's comparisons; {int(r['n_paired'])} paired problems"
                     + (f", {int(r['samples_per_problem'])} samples each" if r.get("samples_per_problem", 1) > 1 else "")
                     + ").")
    return lines
