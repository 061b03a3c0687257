"""Accuracy, token statistics and ACU (pure arithmetic on numbers)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence


def acu(accuracy_pct: float, params_b: float, mean_tokens: float) -> float:
    """Accuracy per Computation Unit as the CoT-Valve paper prints it.

    ``ACU = 100 × accuracy[%] / (params[billions] × mean generated tokens)``; the paper's factor 100
    only scales the number for printing.

    >>> round(acu(95.1, 32, 741.1), 2)   # QwQ-32B-Preview on GSM8K, CoT-Valve Table 1
    0.4
    """
    if params_b <= 0 or mean_tokens <= 0:
        raise ValueError(f"ACU needs params_b > 0 and mean_tokens > 0 (got {params_b}, {mean_tokens})")
    return 100.0 * accuracy_pct / (params_b * mean_tokens)


@dataclass(frozen=True)
class Outcome:
    """The three facts about one graded sample that the metrics use."""

    correct: bool
    n_generated_tokens: int
    truncated: bool  # hit max_new_tokens
    n_thinking_tokens: int | None = None  # None: no thinking block
    thinking_state: str = "none"  # none | closed | open (ended while thinking)
    # False for a sample without a verdict (not graded yet, a grader timeout or error): out of accuracy, but
    # its tokens were generated and count in every length figure (such responses are often the long ones)
    judged: bool = True


@dataclass(frozen=True)
class Summary:
    n: int
    accuracy_pct: float
    mean_tokens: float
    median_tokens: float
    p90_tokens: float
    mean_tokens_correct: float | None  # None when no sample is correct
    mean_tokens_wrong: float | None
    truncation_pct: float
    params_b: float
    acu: float | None  # None when mean_tokens is 0
    # Reasoning models (thinking.py). ACU above stays on all generated tokens, as the paper defines it.
    mean_thinking_tokens: float | None = None  # over samples with a thinking block; None when none has one
    mean_answer_tokens: float | None = None  # generated tokens after the thinking block, over all samples
    truncated_thinking_pct: float = 0.0  # hit max_new_tokens inside the thinking block
    truncated_answer_pct: float = 0.0  # hit max_new_tokens after it (or with no block)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(outcomes: Iterable[Outcome], params_b: float) -> Summary:
    items = list(outcomes)
    if not items:
        raise ValueError("cannot summarise zero samples")
    tokens = [o.n_generated_tokens for o in items]
    judged = [o for o in items if o.judged]
    if not judged:
        raise ValueError("cannot summarise a row with no verdict")
    right = [o.n_generated_tokens for o in judged if o.correct]
    wrong = [o.n_generated_tokens for o in judged if not o.correct]
    accuracy = 100.0 * len(right) / len(judged)
    mean_tokens = statistics.fmean(tokens)
    return Summary(
        n=len(judged),
        accuracy_pct=accuracy,
        mean_tokens=mean_tokens,
        median_tokens=statistics.median(tokens),
        p90_tokens=percentile(tokens, 90),
        mean_tokens_correct=statistics.fmean(right) if right else None,
        mean_tokens_wrong=statistics.fmean(wrong) if wrong else None,
        truncation_pct=100.0 * sum(o.truncated for o in items) / len(items),
        params_b=params_b,
        acu=acu(accuracy, params_b, mean_tokens) if mean_tokens > 0 else None,
        **_thinking_stats(items),
    )


def _thinking_stats(items: Sequence[Outcome]) -> dict:
    with_block = [o.n_thinking_tokens for o in items if o.n_thinking_tokens is not None]
    if not with_block:
        return {"truncated_answer_pct": 100.0 * sum(o.truncated for o in items) / len(items)}
    answer = [o.n_generated_tokens - (o.n_thinking_tokens or 0) for o in items]
    in_thinking = sum(1 for o in items if o.truncated and o.thinking_state == "open")
    return {"mean_thinking_tokens": statistics.fmean(with_block), "mean_answer_tokens": statistics.fmean(answer),
            "truncated_thinking_pct": 100.0 * in_thinking / len(items),
            "truncated_answer_pct": 100.0 * (sum(o.truncated for o in items) - in_thinking) / len(items)}


# -- the efficiency metrics the field compares (README: Metrics). Accuracies in percent, tokens per response.

def acu_no_params(accuracy_pct: float, mean_tokens: float) -> float | None:
    """100 × accuracy[%] / mean tokens: ACU without the parameter count, as some follow-up papers print it
    (labelled so wherever it appears; it compares models of one size only)."""
    return 100.0 * accuracy_pct / mean_tokens if mean_tokens > 0 else None


def completion_parts(correct: Sequence[bool], cut: Sequence[bool]) -> tuple[float, float | None, float | None]:
    """(share of responses that ended on their own, accuracy among those, accuracy among the cut ones), as
    fractions; an accuracy is None where no response is of its kind. Accuracy = c·a_ended + (1 − c)·a_cut."""
    ended = [ok for ok, c in zip(correct, cut) if not c]
    stopped = [ok for ok, c in zip(correct, cut) if c]
    share = len(ended) / len(correct) if correct else 0.0
    return (share, sum(ended) / len(ended) if ended else None, sum(stopped) / len(stopped) if stopped else None)


def completion_split(base: tuple, point: tuple) -> tuple[float, float]:
    """The accuracy change from ``base`` to ``point`` (points of %) split into what completion did and what the
    answers did; each side is ``completion_parts``. With midpoint weights the split is exact:
    Δacc = Δc·(ā_ended − ā_cut) [completion] + c̄·Δa_ended + (1 − c̄)·Δa_cut [answers]. An accuracy one side
    lacks (no response of that kind) takes the other side's, so a kind that exists once moves nothing by itself."""
    (c0, e0, t0), (c1, e1, t1) = base, point
    e0, e1 = (e0 if e0 is not None else e1 or 0.0), (e1 if e1 is not None else e0 or 0.0)
    t0, t1 = (t0 if t0 is not None else t1 or 0.0), (t1 if t1 is not None else t0 or 0.0)
    c_mid = (c0 + c1) / 2
    by_completion = (c1 - c0) * ((e0 + e1) / 2 - (t0 + t1) / 2)
    by_answers = c_mid * (e1 - e0) + (1 - c_mid) * (t1 - t0)
    return 100.0 * by_completion, 100.0 * by_answers


def answer_groups(answers: Sequence[str | None], same: Callable[[str, str], bool]) -> list[list[int]]:
    """The indices of ``answers`` grouped by ``same`` (the grader's equivalence, so "0.5" and "1/2" are one
    group), each group in order and the groups in order of their first member; answers that are None (no answer
    found) are in no group."""
    groups: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        home = next((g for g in groups if same(answers[g[0]], answer)), None)
        if home is None:
            groups.append([i])
        else:
            home.append(i)
    return groups


def majority(answers: Sequence[str | None], same: Callable[[str, str], bool] | None = None,
             groups: list[list[int]] | None = None) -> int | None:
    """The index of maj@K's answer: the largest of ``answer_groups`` (given, or made with ``same``) wins, a tie
    goes to the group whose first sample came first; the index is that group's first sample. None when no
    sample has an answer."""
    groups = answer_groups(answers, same) if groups is None else groups
    if not groups:
        return None
    return max(groups, key=lambda g: (len(g), -g[0]))[0]


def ockscore(accuracy_pct: float, mean_tokens: float) -> float:
    """OckBench's OckScore: accuracy[%] − 10 · ln(mean tokens / 10,000 + 1). OckBench's own code counts prompt
    tokens as well; cotbench counts generated tokens only, so compare OckScores within cotbench."""
    import math

    return accuracy_pct - 10.0 * math.log(mean_tokens / 10_000.0 + 1.0)


AES_WEIGHTS = (1.0, 3.0, 5.0)  # length weight; accuracy reward when it rises; accuracy penalty when it falls


def aes(accuracy_pct: float, mean_tokens: float, base_accuracy_pct: float, base_mean_tokens: float,
        weights: tuple[float, float, float] = AES_WEIGHTS) -> float | None:
    """Accuracy-efficiency score against the base: η·ΔL + ζ·ΔA with ΔL = (L_base − L)/L_base and
    ΔA = (A − A_base)/A_base; ζ = 3 when accuracy rises or holds, −5 × |ΔA| when it falls (weights stated).
    None where the base has no accuracy or no tokens to compare with."""
    eta, reward, penalty = weights
    if base_mean_tokens <= 0 or base_accuracy_pct <= 0:
        return None
    d_length = (base_mean_tokens - mean_tokens) / base_mean_tokens
    d_acc = (accuracy_pct - base_accuracy_pct) / base_accuracy_pct
    return eta * d_length + (reward * d_acc if d_acc >= 0 else -penalty * abs(d_acc))


def accuracy_under_budget(correct: Sequence[bool], tokens: Sequence[int], budgets: Sequence[int]) -> list[float]:
    """Accuracy [%] if every response were cut at B tokens: a response counts only when correct and no longer
    than B (its answer comes at its end). One value per budget."""
    n = len(correct)
    return [100.0 * sum(1 for c, t in zip(correct, tokens) if c and t <= b) / n if n else 0.0 for b in budgets]


def budget_auc(budgets: Sequence[int], accuracies: Sequence[float]) -> float | None:
    """Area under accuracy-vs-budget over log2(B), normalised by the log-budget range: the grid doubles, so
    each doubling weighs the same, and the area reads as a mean accuracy in %."""
    import numpy as np

    if len(budgets) < 2 or budgets[-1] <= budgets[0]:
        return None
    x = np.log2(np.asarray(budgets, dtype=float))
    return float(np.trapezoid(accuracies, x) / (x[-1] - x[0]))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (mean tokens, accuracy) points: True for those no other point beats on both (fewer or equal tokens
    and higher or equal accuracy, one of them strictly)."""
    flags = []
    for i, (t, a) in enumerate(points):
        dominated = any((t2 <= t and a2 >= a) and (t2 < t or a2 > a) for j, (t2, a2) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags
