"""α where it matters: refine a coarse α grid where neighbouring points differ most (``--alphas auto[:N[:MAX]]``),
or find the α whose mean length hits a target (``--target-tokens T``). Pure decisions over per-α figures; the
runner evaluates the points (in its one loaded engine) and stores each as an ordinary row."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from cotbench import stats
from cotbench.records import Sample

DEFAULT_POINTS = 9  # auto: the coarse grid's 5 points and 4 more
MIN_GAP = 1 / 64  # gaps narrower than this are never split (α steps below it move lengths by rounding)
TARGET_TOLERANCE = 0.05  # --target-tokens: a mean length within ±5 % of T is a hit
TARGET_STEPS = 6  # bisection steps at most


@dataclass(frozen=True)
class PointStats:
    """What the search reads of one α: accuracy (judged samples) and mean length (every sample), with 95 %
    intervals (Wilson; bootstrap over samples)."""

    alpha: float
    accuracy_pct: float
    accuracy_ci: stats.Interval
    mean_tokens: float
    mean_tokens_ci: stats.Interval


def point_stats(alpha: float, samples: Sequence[Sample]) -> PointStats:
    judged = [s for s in samples if s.grade is not None and s.grade.judged]
    right = sum(1 for s in judged if s.grade.correct)
    tokens = [s.generation.n_generated_tokens for s in samples]
    accuracy = 100.0 * right / len(judged) if judged else 0.0
    return PointStats(alpha, accuracy, stats.wilson(right, len(judged)), sum(tokens) / len(tokens),
                      stats.mean_interval(tokens))


def parse_auto(text: str) -> tuple[int, float]:
    """"auto", "auto:N" or "auto:N:MAX" -> (N points in all, the grid's top α). Raises ValueError."""
    parts = text.strip().split(":")
    if parts[0] != "auto" or len(parts) > 3:
        raise ValueError(f"--alphas {text!r}: use auto, auto:N or auto:N:MAX (e.g. auto:9:1.5 to go beyond 1)")
    try:
        n = int(parts[1]) if len(parts) > 1 and parts[1] else DEFAULT_POINTS
        top = float(parts[2]) if len(parts) > 2 else 1.0
    except ValueError:
        raise ValueError(f"--alphas {text!r}: N must be a whole number and MAX a number (auto:9:1.5)") from None
    if n < 6:
        raise ValueError(f"--alphas {text!r}: N must be at least 6 (the coarse grid's 5 points and one more)")
    if not top > 0:
        raise ValueError(f"--alphas {text!r}: MAX must be > 0")
    return n, top


def coarse_grid(top: float) -> tuple[float, ...]:
    """Five evenly spaced points from 0 to ``top``: the default grid (0, 0.25, 0.5, 0.75, 1) when top = 1."""
    return tuple(round(top * i / 4, 12) for i in range(5))


def _overlap(a: stats.Interval, b: stats.Interval) -> bool:
    if a.low is None or b.low is None:
        return True
    return a.low <= b.high and b.low <= a.high


def next_points(points: Sequence[PointStats], first_round: bool) -> list[float]:
    """The α values to add next: the midpoint of the gap whose neighbours differ most in accuracy and of the
    one whose neighbours differ most in mean length (one point when both are the same gap). In the first round
    every gap is open; after it a gap is closed once its neighbours' accuracy intervals and mean-length intervals
    both overlap (nothing there the run can tell apart). Gaps narrower than ``MIN_GAP`` stay closed."""
    ordered = sorted(points, key=lambda p: p.alpha)
    gaps = [(a, b) for a, b in zip(ordered, ordered[1:]) if b.alpha - a.alpha > MIN_GAP
            and (first_round or not (_overlap(a.accuracy_ci, b.accuracy_ci) and _overlap(a.mean_tokens_ci, b.mean_tokens_ci)))]
    if not gaps:
        return []
    by_accuracy = max(gaps, key=lambda g: abs(g[1].accuracy_pct - g[0].accuracy_pct))
    by_length = max(gaps, key=lambda g: abs(g[1].mean_tokens - g[0].mean_tokens))
    differs = abs(by_accuracy[1].accuracy_pct - by_accuracy[0].accuracy_pct) > 0
    chosen = [by_length] + ([by_accuracy] if differs and by_accuracy is not by_length else [])
    return [round((a.alpha + b.alpha) / 2, 12) for a, b in chosen]


def refine(evaluate: Callable[[Sequence[float]], dict[float, PointStats]], n_points: int, top: float = 1.0,
           say: Callable[[str], None] = lambda _: None) -> dict:
    """Evaluate the coarse grid, then add points round by round (``next_points``) until ``n_points`` in all or
    no gap is open. ``evaluate``: α values -> their figures (generating what the store lacks). Returns what
    happened, for the run's record."""
    known = dict(evaluate(coarse_grid(top)))
    rounds = []
    while len(known) < n_points:
        new = [a for a in next_points(list(known.values()), first_round=not rounds) if a not in known]
        new = new[:n_points - len(known)]
        if not new:
            say(f"α search: no gap left whose neighbours the run can tell apart, stopping at {len(known)} points")
            break
        say(f"α search, round {len(rounds) + 1}: adding α = {', '.join(f'{a:g}' for a in new)}")
        known.update(evaluate(new))
        rounds.append(new)
    return {"mode": "auto", "points": n_points, "top": top, "coarse": list(coarse_grid(top)), "rounds": rounds,
            "alphas": sorted(known)}


def find_target(evaluate: Callable[[Sequence[float]], dict[float, PointStats]], target: float,
                low: float = 0.0, high: float = 1.0, say: Callable[[str], None] = lambda _: None) -> dict:
    """Bisection on α for a mean length within ±5 % of ``target`` tokens, at most ``TARGET_STEPS`` midpoints
    after the two ends. The ends must bracket the target, and each midpoint's length must lie between its
    bracket's (length monotone in α there); otherwise the search stops and says why. Returns the record."""
    ends = evaluate([low, high])
    a, b = ends[low], ends[high]
    tried = [a, b]
    record = {"mode": "target", "target_tokens": target, "tolerance": TARGET_TOLERANCE, "steps": []}

    def done(point: PointStats | None, why: str) -> dict:
        best = min(tried, key=lambda p: abs(p.mean_tokens - target))
        say(f"target {target:g} tokens: {why}")
        return {**record, "alpha": point.alpha if point else None, "closest_alpha": best.alpha,
                "closest_mean_tokens": best.mean_tokens, "outcome": why}

    for end in (a, b):
        if abs(end.mean_tokens - target) <= TARGET_TOLERANCE * target:
            return done(end, f"α = {end.alpha:g} gives {end.mean_tokens:.1f} mean tokens")
    if not min(a.mean_tokens, b.mean_tokens) <= target <= max(a.mean_tokens, b.mean_tokens):
        return done(None, f"out of reach: α = {low:g} gives {a.mean_tokens:.1f} and α = {high:g} gives "
                          f"{b.mean_tokens:.1f} mean tokens (widen the range with --alphas auto:N:MAX's MAX)")
    for _ in range(TARGET_STEPS):
        mid_alpha = round((a.alpha + b.alpha) / 2, 12)
        mid = evaluate([mid_alpha])[mid_alpha]
        tried.append(mid)
        record["steps"].append({"alpha": mid_alpha, "mean_tokens": mid.mean_tokens})
        if abs(mid.mean_tokens - target) <= TARGET_TOLERANCE * target:
            return done(mid, f"α = {mid_alpha:g} gives {mid.mean_tokens:.1f} mean tokens")
        if not min(a.mean_tokens, b.mean_tokens) <= mid.mean_tokens <= max(a.mean_tokens, b.mean_tokens):
            return done(None, f"length is not monotone in α between {a.alpha:g} and {b.alpha:g} (α = {mid_alpha:g} "
                              f"gives {mid.mean_tokens:.1f} mean tokens, outside [{min(a.mean_tokens, b.mean_tokens):.1f}, "
                              f"{max(a.mean_tokens, b.mean_tokens):.1f}]): bisection cannot go on")
        # keep the half whose ends still bracket the target
        a, b = (a, mid) if min(a.mean_tokens, mid.mean_tokens) <= target <= max(a.mean_tokens, mid.mean_tokens) else (mid, b)
    return done(None, f"no α within ±{100 * TARGET_TOLERANCE:g} % after {TARGET_STEPS} steps")


def describe(record: dict) -> list[str]:
    """The search's course in words, for report.md."""
    if record.get("mode") == "auto":
        lines = [f"- coarse grid α = {', '.join(f'{a:g}' for a in record['coarse'])}, then up to {record['points']} "
                 "points in all, each round adding the midpoint of the gap whose neighbours differ most in mean "
                 "length and of the one that differs most in accuracy (after the first round only gaps whose "
                 "neighbours' accuracy or mean-length intervals do not overlap)"]
        lines += [f"- round {i}: α = {', '.join(f'{a:g}' for a in new)}" for i, new in enumerate(record["rounds"], 1)]
        return lines
    lines = [f"- target {record['target_tokens']:g} mean tokens (±{100 * record['tolerance']:g} %), bisection: "
             + "; ".join(f"α = {s['alpha']:g} → {s['mean_tokens']:.1f}" for s in record["steps"]),
             f"- outcome: {record['outcome']}" + ("" if record.get("alpha") is not None else
                                                  f"; closest α = {record['closest_alpha']:g} "
                                                  f"({record['closest_mean_tokens']:.1f} tokens)")]
    return lines
