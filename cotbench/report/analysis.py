"""Intervals, paired comparisons with the base, and the field's efficiency metrics, added to summary rows.

Per row (one model × valve × method × point × task):
- ``accuracy_ci_low/high`` (Wilson), ``mean_tokens_ci_*`` and ``acu_ci_*`` (bootstrap over problems;
  ``bootstrap_resamples``), ``accuracy_non_truncated_pct`` (truncation treated as censoring: accuracy among the
  responses that ended on their own: accuracy given completion), ``completion_pct`` (the share that ended on
  their own), ``accuracy_cut_pct`` (accuracy among the cut ones), ``acu_no_params`` (labelled so), ``ockscore``;
- against the base (α = 0 of the same model and valve, else the model's no-valve row), on the problems both
  answered (``n_paired``): ``accuracy_change_pct`` with ``accuracy_change_ci_*`` (paired bootstrap),
  ``mcnemar_p`` (exact) and ``mcnemar_p_holm`` (Holm's correction over the comparisons of one curve: model ×
  valve × method × task), ``token_reduction_ratio`` (base mean tokens ÷ this row's) with
  ``token_reduction_ci_*``, ``aes``; ``accuracy_change_by_completion_pct`` and ``accuracy_change_by_answers_pct``
  (the accuracy change split exactly into what a changed completion rate did and what changed answers did,
  ``metrics.completion_split``): with the length ratio, whether a point loses by truncation, by wrong answers
  or gains only by brevity; ``detectable_difference_pct`` (the smallest accuracy difference this comparison
  could detect at 80 % power, from its n and its share of discordant problems) and ``problems_needed`` (about
  how many problems would detect the observed difference); ``distinguishable``: the accuracy change's interval excludes 0 and the
  Holm-adjusted p < 0.05 (both agree);
- per model × valve × task: ``length_spearman_rho`` (α vs mean tokens) with its interval; per task:
  ``on_pareto`` (no other point has both fewer tokens and higher accuracy); ``budget_auc`` (the area under
  accuracy-vs-budget, ``accuracy_under_budget``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from cotbench import metrics, stats
from cotbench.records import Sample

KEY_COLUMNS = ("model", "valve", "alpha", "method", "knob", "task")
BUDGETS = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)  # B for accuracy under a token budget


def row_key(s: Sample) -> tuple:
    return (s.model, s.valve, s.alpha, s.method, s.knob, s.problem.task)


def group_rows(samples: Sequence[Sample]) -> dict[tuple, list[Sample]]:
    """Samples by summary row (``row_key``), in first-seen order."""
    groups: dict[tuple, list[Sample]] = {}
    for s in samples:
        groups.setdefault(row_key(s), []).append(s)
    return groups


def judged(members: Sequence[Sample]) -> list[Sample]:
    return [s for s in members if s.grade is not None and s.grade.judged]


def row_statistics(members: Sequence[Sample], params_b: float) -> dict:
    """Intervals of one row: accuracy over the judged samples, lengths over every generated one (a sample
    without a verdict enters ACU's bootstrap with its tokens only). With K samples per problem the intervals
    are clustered (``stats.cluster_bootstrap``) and the k-sample columns are added (``k_sample_columns``)."""
    graded = judged(members)
    verdicts = [1.0 if s.grade.correct else 0.0 for s in graded]
    tokens = [s.generation.n_generated_tokens for s in members]
    ended = [s for s in graded if s.generation.finish_reason != "length"]
    acc = 100.0 * sum(verdicts) / len(verdicts)
    mean_tokens = float(np.mean(tokens))
    k = samples_per_problem(members)
    if k == 1:
        have = {id(s) for s in graded}
        correct = [(1.0 if s.grade.correct else 0.0) if id(s) in have else float("nan") for s in members]
        accuracy_ci, tokens_ci = stats.wilson(int(sum(verdicts)), len(verdicts)), stats.mean_interval(tokens)
        acu_ci = stats.acu_interval(correct, tokens, params_b)
    else:
        accuracy_ci, tokens_ci, acu_ci = _clustered_intervals(members, params_b)
    return {
        "n_graded": len(graded),
        "accuracy_ci_low": accuracy_ci.low, "accuracy_ci_high": accuracy_ci.high,
        "mean_tokens_ci_low": tokens_ci.low, "mean_tokens_ci_high": tokens_ci.high,
        "acu_ci_low": acu_ci.low, "acu_ci_high": acu_ci.high, "bootstrap_resamples": stats.N_RESAMPLES,
        "accuracy_non_truncated_pct": 100.0 * sum(1 for s in ended if s.grade.correct) / len(ended) if ended else None,
        "completion_pct": 100.0 * len(ended) / len(graded),
        "accuracy_cut_pct": _pct(metrics.completion_parts(*_verdicts_and_cuts(graded))[2]),
        "acu_no_params": metrics.acu_no_params(acc, mean_tokens),
        "ockscore": metrics.ockscore(acc, mean_tokens),
        **k_sample_columns(members, k),
    }


def samples_per_problem(members: Sequence[Sample]) -> int:
    """K: the most samples any problem of the row has (1 for a run without --samples)."""
    return max((len(t) for t in lengths_by_problem(members).values()), default=1)


def lengths_by_problem(members: Sequence[Sample]) -> dict[str, list[int]]:
    """Every generated sample's length, by problem (judged or not: lengths count them all)."""
    lengths: dict[str, list[int]] = {}
    for s in members:
        lengths.setdefault(s.problem.problem_id, []).append(s.generation.n_generated_tokens)
    return lengths


def _pass_at(graded: dict[str, list[Sample]], k: int) -> tuple[int, float | None]:
    """(problems with at least k verdicts, their mean unbiased pass@k in %, None without any)."""
    full = [g for g in graded.values() if len(g) >= k]
    if not full:
        return 0, None
    return len(full), 100.0 * float(np.mean([stats.pass_at_k(len(g), sum(s.grade.correct for s in g), k) for g in full]))


def _clustered_intervals(members: Sequence[Sample], params_b: float) -> tuple:
    """Accuracy, mean-length and ACU intervals of a row with K samples per problem: problems resampled, then
    samples within each drawn problem (never the K samples taken as independent). Accuracy and ACU over the
    problems with a verdict; lengths over every generated sample."""
    graded, lengths = by_problem(members), lengths_by_problem(members)
    ids = sorted(graded)
    correct = [[1.0 if s.grade.correct else 0.0 for s in graded[i]] for i in ids]

    def pct(c, axis=-1):
        return 100.0 * np.mean(c, axis=axis)

    def acu(c, t, axis=-1):
        return stats._ratio(100.0 * 100.0 * np.mean(c, axis=axis), params_b * np.mean(t, axis=axis))

    return (stats.cluster_bootstrap(pct, correct), stats.cluster_bootstrap(np.mean, list(lengths.values())),
            stats.cluster_bootstrap(acu, correct, [lengths[i] for i in ids]) if ids else stats.Interval(None, None))


def k_sample_columns(members: Sequence[Sample], k: int) -> dict:
    """The columns of a row with K > 1 samples per problem (None at K = 1, where each equals accuracy or 0):
    ``pass_at_k_pct`` (the unbiased pass@K, over problems with K verdicts), ``maj_at_k_pct`` (the answer most
    samples give, grouped by the grader's equivalence, earliest sample breaking ties), ``disagreement_pct``
    (problems whose samples do not all give one answer) and ``mean_tokens_per_problem`` (all K together)."""
    out = {"samples_per_problem": k, "pass_at_k_pct": None, "maj_at_k_pct": None, "disagreement_pct": None,
           "mean_tokens_per_problem": None}
    if k == 1:
        return out
    from cotbench.grading import same_answer

    graded = by_problem(members)
    out["pass_at_k_pct"] = _pass_at(graded, k)[1]
    votes, split = [], 0
    for g in graded.values():
        answers = [s.grade.extracted for s in g]
        protocol = g[0].grade.protocol
        groups = metrics.answer_groups(answers, lambda a, b: same_answer(a, b, protocol))
        split += (len(groups) + (None in answers)) > 1  # a sample without an answer differs from one with
        winner = metrics.majority(answers, groups=groups)
        votes.append(winner is not None and bool(g[winner].grade.correct))
    if votes:
        out["maj_at_k_pct"], out["disagreement_pct"] = 100.0 * float(np.mean(votes)), 100.0 * split / len(votes)
    out["mean_tokens_per_problem"] = float(np.mean([sum(t) for t in lengths_by_problem(members).values()]))
    return out


def pass_at_k_table(groups: dict[tuple, list[Sample]]) -> pd.DataFrame:
    """pass@k for every k ≤ K of each row with K > 1 samples per problem, each over the problems with at least k
    verdicts: (model, valve, alpha, method, knob, task, k, n_problems, pass_at_k_pct)."""
    rows = []
    for key, members in groups.items():
        graded, k_max = by_problem(members), samples_per_problem(members)
        for k in range(1, k_max + 1) if k_max > 1 else ():
            n_problems, value = _pass_at(graded, k)
            if n_problems:
                rows.append(dict(zip(KEY_COLUMNS, key), k=k, n_problems=n_problems, pass_at_k_pct=value))
    return pd.DataFrame(rows, columns=[*KEY_COLUMNS, "k", "n_problems", "pass_at_k_pct"])


def _verdicts_and_cuts(members: Sequence[Sample]) -> tuple[list[bool], list[bool]]:
    return [bool(s.grade.correct) for s in members], [s.generation.finish_reason == "length" for s in members]


def _pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def budgets_for(tokens: Sequence[int]) -> tuple[int, ...]:
    """The budget grid up to the first B that holds every response."""
    top = max(tokens) if tokens else 0
    grid = [b for b in BUDGETS if b < top] + [next((b for b in BUDGETS if b >= top), top)]
    return tuple(grid)


def add_comparisons(frame: pd.DataFrame, groups: dict[tuple, list[Sample]]) -> pd.DataFrame:
    """Paired columns against each row's base, Spearman's ρ per curve, and the Pareto flag per task."""
    if not len(frame):
        return frame
    frame = frame.copy()
    columns = ["accuracy_change_pct", "accuracy_change_ci_low", "accuracy_change_ci_high", "mcnemar_p", "wilcoxon_p",
               "wilcoxon_p_holm",
               "token_reduction_ratio", "token_reduction_ci_low", "token_reduction_ci_high", "aes", "n_paired",
               "base", "mcnemar_p_holm", "distinguishable", "length_spearman_rho", "length_spearman_ci_low",
               "length_spearman_ci_high", "on_pareto", "accuracy_change_by_completion_pct",
               "accuracy_change_by_answers_pct", "detectable_difference_pct", "problems_needed"]
    for c in columns:
        frame[c] = None
    for i, row in frame.iterrows():
        base = _base_key(frame, row)
        if base is not None and base != _key(row):
            for name, value in against_base(groups[_key(row)], groups[base]).items():
                frame.at[i, name] = value
            if frame.at[i, "n_paired"] is not None:
                frame.at[i, "base"] = _label(base)
    mark_distinguishable(frame, ["model", "valve", "method", "task"])
    for (model, valve, task), curve in frame[frame["method"] == "valve"].groupby(["model", "valve", "task"]):
        alphas = [a for a in curve["alpha"] if not pd.isna(a)]
        if len(alphas) < 3:
            continue
        per_alpha = [by_problem(groups[_key(r)]) for _, r in curve.iterrows() if not pd.isna(r["alpha"])]
        common = sorted(set.intersection(*(set(m) for m in per_alpha)))
        matrix = [[np.mean([s.generation.n_generated_tokens for s in m[k]]) for m in per_alpha] for k in common]
        rho, ci = stats.spearman_length(alphas, matrix)
        frame.loc[curve.index, ["length_spearman_rho", "length_spearman_ci_low", "length_spearman_ci_high"]] = \
            [rho, ci.low, ci.high]
    for task, rows in frame.groupby("task"):
        flags = metrics.pareto_front(list(zip(rows["mean_tokens"], rows["accuracy_pct"])))
        frame.loc[rows.index, "on_pareto"] = flags
    under_budget = accuracy_under_budgets(groups)  # one budget grid per task, so the areas of its rows compare
    frame["budget_auc"] = [metrics.budget_auc(*under_budget[_key(r)]) if _key(r) in under_budget else None
                           for _, r in frame.iterrows()]
    return frame


def mark_distinguishable(frame: pd.DataFrame, family: list[str]) -> None:
    """Holm over each family's p values (McNemar's, or Wilcoxon's for rows with K samples), then
    ``distinguishable`` where the accuracy change's interval excludes 0 and the adjusted p < 0.05 (both
    agree), in place."""
    for test in PAIRED_TESTS:
        if test not in frame:
            frame[test] = None
            frame[f"{test}_holm"] = None
    p_any = frame["mcnemar_p"].where(frame["mcnemar_p"].notna(), frame["wilcoxon_p"])
    compared = frame[p_any.notna()]
    for _, members in compared.groupby(family, dropna=False):
        adjusted = stats.holm(p_any[members.index].astype(float))
        for i, value in zip(members.index, adjusted):
            frame.at[i, "mcnemar_p_holm" if pd.notna(frame.at[i, "mcnemar_p"]) else "wilcoxon_p_holm"] = value
    for i in compared.index:
        interval = stats.Interval(frame.at[i, "accuracy_change_ci_low"], frame.at[i, "accuracy_change_ci_high"])
        frame.at[i, "distinguishable"] = stats.significant(interval) and paired_p(frame.loc[i])[2] < 0.05


PAIRED_TESTS = ("mcnemar_p", "wilcoxon_p")


def paired_p(r) -> tuple[str, float | None, float | None]:
    """(the test's name, its p, its Holm-adjusted p) of a compared row: McNemar's exact test with one sample per
    problem, Wilcoxon's signed-rank test with K; (name, None, None) for a row not compared."""
    if r.get("wilcoxon_p") is not None and not pd.isna(r.get("wilcoxon_p")):
        return "Wilcoxon signed-rank", float(r["wilcoxon_p"]), _float(r.get("wilcoxon_p_holm"))
    return "McNemar exact", _float(r.get("mcnemar_p")), _float(r.get("mcnemar_p_holm"))


def _float(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def against_base(members: Sequence[Sample], base: Sequence[Sample]) -> dict:
    """The paired columns of one row against its base, on the problems both answered (none below two); also
    what `cotbench compare` reports for two rows of different runs. One sample per problem: McNemar's exact test
    and paired bootstrap intervals; K samples: Wilcoxon's test on per-problem mean accuracies and clustered
    intervals (``stats.paired_clustered``), where no detectable difference is stated (Connor's formula is McNemar's)."""
    mine, theirs = by_problem(members), by_problem(base)
    common = sorted(set(mine) & set(theirs))
    if len(common) < 2:
        return {}
    ours, others = [mine[k] for k in common], [theirs[k] for k in common]
    flat_ours, flat_others = [s for g in ours for s in g], [s for g in others for s in g]
    single = len(flat_ours) == len(flat_others) == len(common)

    def verdicts(groups):
        return [[1.0 if s.grade.correct else 0.0 for s in g] for g in groups]

    def lengths(groups):
        return [[s.generation.n_generated_tokens for s in g] for g in groups]

    if single:
        p = stats.paired(*[[v[0] for v in x] for x in (verdicts(others), verdicts(ours), lengths(others), lengths(ours))])
    else:
        p = stats.paired_clustered(verdicts(others), verdicts(ours), lengths(others), lengths(ours))
    by_completion, by_answers = metrics.completion_split(metrics.completion_parts(*_verdicts_and_cuts(flat_others)),
                                                         metrics.completion_parts(*_verdicts_and_cuts(flat_ours)))
    discordant = p.only_base + p.only_point
    accuracy = [100.0 * np.mean([np.mean(v) for v in verdicts(g)]) for g in (ours, others)]
    mean_length = [float(np.mean([np.mean(t) for t in lengths(g)])) for g in (ours, others)]
    return {"accuracy_change_pct": p.accuracy_diff_pct, "accuracy_change_ci_low": p.accuracy_diff_ci.low,
            "accuracy_change_ci_high": p.accuracy_diff_ci.high, "mcnemar_p": p.mcnemar_p, "wilcoxon_p": p.wilcoxon_p,
            "token_reduction_ratio": p.token_ratio, "token_reduction_ci_low": p.token_ratio_ci.low,
            "token_reduction_ci_high": p.token_ratio_ci.high, "n_paired": p.n_pairs,
            "aes": metrics.aes(accuracy[0], mean_length[0], accuracy[1], mean_length[1]),
            "accuracy_change_by_completion_pct": by_completion, "accuracy_change_by_answers_pct": by_answers,
            "detectable_difference_pct": stats.detectable_difference(p.n_pairs, discordant) if single else None,
            "problems_needed": stats.problems_needed(p.accuracy_diff_pct, discordant / p.n_pairs) if single else None}


def accuracy_under_budgets(groups: dict[tuple, list[Sample]]) -> dict[tuple, tuple[list[int], list[float]]]:
    """Per row key: (budgets, accuracy [%] if every response were cut at B), on one grid per task (up to the
    first B that holds every response of that task)."""
    tokens_by_task: dict[str, list[int]] = {}
    for key, members in groups.items():
        tokens_by_task.setdefault(key[-1], []).extend(s.generation.n_generated_tokens for s in judged(members))
    grids = {task: list(budgets_for(tokens)) for task, tokens in tokens_by_task.items()}
    out = {}
    for key, members in groups.items():
        graded = judged(members)
        if graded:
            grid = grids[key[-1]]
            out[key] = (grid, metrics.accuracy_under_budget([s.grade.correct for s in graded],
                                                            [s.generation.n_generated_tokens for s in graded], grid))
    return out


def budget_curves(groups: dict[tuple, list[Sample]]) -> pd.DataFrame:
    """``accuracy_under_budgets`` as a long table: (model, valve, alpha, method, knob, task, budget, accuracy_pct)."""
    rows = [dict(zip(KEY_COLUMNS, key), budget=b, accuracy_pct=acc)
            for key, (grid, accs) in accuracy_under_budgets(groups).items() for b, acc in zip(grid, accs)]
    return pd.DataFrame(rows, columns=[*KEY_COLUMNS, "budget", "accuracy_pct"])


def _key(row) -> tuple:
    return (row["model"], row["valve"], None if pd.isna(row["alpha"]) else row["alpha"], row["method"],
            None if pd.isna(row["knob"]) else row["knob"], row["task"])


def _base_key(frame: pd.DataFrame, row) -> tuple | None:
    """α = 0 of the same model and valve on the same task; else the model's row without a valve."""
    same = frame[(frame["model"] == row["model"]) & (frame["task"] == row["task"])]
    zero = same[(same["valve"] == row["valve"]) & (same["method"] == "valve") & (same["alpha"] == 0.0)]
    if len(zero):
        return _key(zero.iloc[0])
    plain = same[(same["valve"] == "") & (same["method"] == "valve") & same["alpha"].isna()]
    return _key(plain.iloc[0]) if len(plain) else None


def _label(key: tuple) -> str:
    model, valve, alpha, method, knob, task = key
    return "α=0" if alpha == 0.0 else "no valve"


def by_problem(members: Sequence[Sample]) -> dict[str, list[Sample]]:
    """The judged samples of each problem, in sample order (one each, or K with --samples K)."""
    out: dict[str, list[Sample]] = {}
    for s in sorted(judged(members), key=lambda s: s.sample_index):
        out.setdefault(s.problem.problem_id, []).append(s)
    return out
