"""Accuracy, token statistics and ACU (pure arithmetic on numbers)."""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence


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
    right = [o.n_generated_tokens for o in items if o.correct]
    wrong = [o.n_generated_tokens for o in items if not o.correct]
    accuracy = 100.0 * len(right) / len(items)
    mean_tokens = statistics.fmean(tokens)
    return Summary(
        n=len(items),
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
