"""Uncertainty and comparisons for every figure a run reports (numpy and scipy; pure functions).

- accuracy: a 95 % Wilson score interval (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``);
- mean tokens, ACU and other ratios: a bootstrap over problems (``scipy.stats.bootstrap``, percentile
  intervals, seeded, ``N_RESAMPLES`` resamples, recorded with the result); each statistic reduces an
  ``axis``, so scipy computes all resamples in whole arrays instead of one Python call each;
- paired comparisons of a point with the base on the same problems: the accuracy difference (paired
  bootstrap), McNemar's exact test (a binomial test on the discordant pairs), the token-reduction ratio
  (paired bootstrap);
- Holm's correction of the p-values of one curve's comparisons with its base (family-wise error rate);
- the smallest difference a paired comparison could detect at 80 % power, and the problems a difference needs;
- Spearman's ρ between α and mean length (bootstrap over problems for its interval).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000  # resamples per bootstrap interval: the percentile bounds move by < 1 % of their width beyond
SEED = 0  # every interval is reproducible: the same samples give the same bounds


@dataclass(frozen=True)
class Interval:
    low: float | None
    high: float | None


def wilson(correct: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval for a proportion, in percent."""
    from scipy.stats import binomtest

    if n == 0:
        return Interval(None, None)
    ci = binomtest(correct, n).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(100.0 * ci.low, 100.0 * ci.high)


def bootstrap(statistic, *arrays, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
              seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of ``statistic(*arrays, axis=-1)``, the arrays resampled together (one row
    per problem: paired). ``statistic`` reduces ``axis`` of each array, so it takes a whole batch of
    resamples at once (scipy's ``vectorized=True``); the resamples drawn are the same either way. A
    statistic that is constant across resamples gives a zero-width interval."""
    from scipy.stats import bootstrap as scipy_bootstrap

    data = tuple(np.asarray(a, dtype=float) for a in arrays)
    if len(data[0]) < 2:
        return Interval(None, None)
    value = float(statistic(*data, axis=-1))
    if not np.isfinite(value):
        return Interval(None, None)
    try:
        result = scipy_bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=n_resamples,
                                 confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    except ValueError:
        return Interval(None, None)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return Interval(value, value)  # degenerate (every resample the same): the value itself
    return Interval(low, high)


def cluster_bootstrap(statistic, *clustered, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      seed: int = SEED) -> Interval:
    """``bootstrap`` for K samples per problem: problems resampled (the same draws ``bootstrap`` makes for as many
    problems, same seed), then within each drawn problem its samples resampled (a generator of their own), each
    problem reduced to its mean before ``statistic`` reduces over problems. The K samples of a problem are never
    taken as independent; with one sample per problem, or K identical ones, it is ``bootstrap`` exactly.

    Each of ``clustered``: one sequence of sample values per problem, the problems in the same order in each."""
    from scipy.stats import bootstrap as scipy_bootstrap

    n = len(clustered[0])
    if n < 2:
        return Interval(None, None)
    width = max(len(c) for arm in clustered for c in arm)
    grids, counts = [], []
    for arm in clustered:
        grid = np.full((n, width), np.nan)
        for i, values in enumerate(arm):
            grid[i, :len(values)] = values
        grids.append(grid)
        counts.append(np.array([len(c) for c in arm]))
    if any((c == 0).any() for c in counts):
        raise ValueError("every problem needs at least one sample in every arm")
    within = np.random.default_rng([seed, 1])  # apart from the problems' draws, so those match ``bootstrap``'s

    def means(rows):  # rows: problem indices, any leading shape -> the resampled per-problem means of each arm
        rows = np.asarray(rows).astype(int)
        out = []
        for grid, count in zip(grids, counts):
            k = count[rows][..., None]
            pick = np.minimum((within.random(rows.shape + (width,)) * k).astype(int), k - 1)
            values = grid[rows[..., None], pick]
            mask = np.arange(width) < k
            out.append(np.where(mask, values, 0.0).sum(axis=-1) / k[..., 0])
        return out

    value = float(statistic(*[np.nanmean(g, axis=-1) for g in grids], axis=-1))
    if not np.isfinite(value):
        return Interval(None, None)
    try:
        result = scipy_bootstrap((np.arange(n, dtype=float),), lambda rows, axis=-1: statistic(*means(rows), axis=-1),
                                 vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                                 method="percentile", rng=np.random.default_rng(seed))
    except ValueError:
        return Interval(None, None)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return Interval(value, value)
    return Interval(low, high)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from ``n`` samples of which ``c`` are correct (Chen et al., 2021):
    1 − C(n − c, k) / C(n, k), as a product so that large n neither overflows nor loses precision."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def wilcoxon_p(base_means, point_means) -> float:
    """Two-sided Wilcoxon signed-rank p on the per-problem mean accuracies of a point against the base (K > 1,
    where McNemar's test on single verdicts no longer applies); zero differences split between the ranks
    (``zero_method="zsplit"``). 1.0 when every problem's mean is unchanged."""
    from scipy.stats import wilcoxon

    diff = np.asarray(point_means, dtype=float) - np.asarray(base_means, dtype=float)
    if not np.any(diff):
        return 1.0
    return float(wilcoxon(diff, zero_method="zsplit").pvalue)


def _ratio(numerator, denominator):
    """numerator / denominator where the denominator is > 0, nan elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def mean_interval(values) -> Interval:
    return bootstrap(np.mean, values)


def acu_interval(correct, tokens, params_b: float) -> Interval:
    """ACU = 100 × accuracy[%] / (params_b × mean tokens), an interval never narrower than the accuracy's.

    At 0 or n of n correct every resample has the same accuracy, so a bootstrap would give ACU [0, 0] (or a
    range that only reflects lengths) while Wilson's accuracy interval is wide; there the interval is
    [100·a_lo / (P·t_hi), 100·a_hi / (P·t_lo)] from the Wilson bounds a and the mean-length interval t.
    Otherwise the bootstrap over problems, widened where needed to hold ACU at the Wilson bounds and the
    mean length."""
    c, t = np.asarray(correct, dtype=float), np.asarray(tokens, dtype=float)
    verdicts = c[~np.isnan(c)]  # NaN: a sample without a verdict, whose tokens still count
    accuracy = wilson(int(verdicts.sum()), len(verdicts))
    mean_tokens = float(np.mean(t)) if len(t) else 0.0
    if accuracy.low is None or mean_tokens <= 0:
        return Interval(None, None)

    def at(accuracy_pct: float, length: float) -> float:
        return 100.0 * accuracy_pct / (params_b * length)

    if verdicts.sum() in (0, len(verdicts)):
        lengths = mean_interval(t)
        shortest = lengths.low if lengths.low is not None and lengths.low > 0 else mean_tokens
        longest = lengths.high if lengths.high is not None else mean_tokens
        return Interval(at(accuracy.low, longest), at(accuracy.high, shortest))

    def acu(c, t, axis=-1):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample of unjudged samples only: NaN, dropped
            return _ratio(100.0 * 100.0 * np.nanmean(c, axis=axis), params_b * np.mean(t, axis=axis))

    resampled = bootstrap(acu, c, t)
    low, high = at(accuracy.low, mean_tokens), at(accuracy.high, mean_tokens)
    if resampled.low is None:
        return Interval(low, high)
    return Interval(min(resampled.low, low), max(resampled.high, high))


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest of m is multiplied by
    m − i + 1, made monotone, capped at 1. Controls the chance of any false "distinguishable" over the family."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty(len(p))
    out[order] = adjusted
    return out.tolist()


@dataclass(frozen=True)
class Paired:
    """A point against the base on the problems both answered."""

    n_pairs: int
    accuracy_diff_pct: float  # point − base
    accuracy_diff_ci: Interval
    mcnemar_p: float | None  # exact (binomial on the discordant pairs); 1.0 when none differ; None for K > 1
    token_ratio: float  # base mean tokens / point mean tokens: > 1 means shorter chains
    token_ratio_ci: Interval
    only_base: int  # right at the base only (K > 1: problems whose mean accuracy is higher at the base)
    only_point: int  # right at the point only
    wilcoxon_p: float | None = None  # K > 1: Wilcoxon signed-rank on the per-problem mean accuracies


def paired(base_correct, point_correct, base_tokens, point_tokens) -> Paired:
    from scipy.stats import binomtest

    bc, pc = np.asarray(base_correct, dtype=float), np.asarray(point_correct, dtype=float)
    bt, pt = np.asarray(base_tokens, dtype=float), np.asarray(point_tokens, dtype=float)
    only_base, only_point = int(np.sum((bc == 1) & (pc == 0))), int(np.sum((bc == 0) & (pc == 1)))
    discordant = only_base + only_point
    p = float(binomtest(only_point, discordant, 0.5).pvalue) if discordant else 1.0

    def diff(b, q, axis=-1):
        return 100.0 * (np.mean(q, axis=axis) - np.mean(b, axis=axis))

    def ratio(b, q, axis=-1):
        return _ratio(np.mean(b, axis=axis), np.mean(q, axis=axis))

    return Paired(len(bc), float(diff(bc, pc)), bootstrap(diff, bc, pc), p, float(ratio(bt, pt)),
                  bootstrap(ratio, bt, pt), only_base, only_point)


def paired_clustered(base_correct, point_correct, base_tokens, point_tokens) -> Paired:
    """``paired`` for K samples per problem, each argument one sequence of sample values per problem (the same
    problems in the same order): differences and ratios of means with clustered paired intervals
    (``cluster_bootstrap``, both arms resampled on the same problems), and Wilcoxon's signed-rank test on the
    per-problem mean accuracies in place of McNemar's (which needs one verdict per problem)."""
    def diff(b, q, axis=-1):
        return 100.0 * (np.mean(q, axis=axis) - np.mean(b, axis=axis))

    def ratio(b, q, axis=-1):
        return _ratio(np.mean(b, axis=axis), np.mean(q, axis=axis))

    bm, pm = np.array([np.mean(c) for c in base_correct]), np.array([np.mean(c) for c in point_correct])
    bt, pt = np.array([np.mean(t) for t in base_tokens]), np.array([np.mean(t) for t in point_tokens])
    return Paired(len(bm), float(diff(bm, pm)), cluster_bootstrap(diff, base_correct, point_correct), None,
                  float(ratio(bt, pt)), cluster_bootstrap(ratio, base_tokens, point_tokens),
                  int(np.sum(bm > pm)), int(np.sum(pm > bm)), wilcoxon_p(bm, pm))


POWER = 0.8  # the power "smallest detectable difference" is stated at


def _power_gap(delta: float, n: int, share: float, alpha: float, power: float) -> float:
    from scipy.stats import norm

    return (np.sqrt(n) * delta - norm.ppf(1 - alpha / 2) * np.sqrt(share)
            - norm.ppf(power) * np.sqrt(max(share - delta * delta, 0.0)))


def detectable_difference(n: int, discordant: int, alpha: float = 0.05, power: float = POWER) -> float | None:
    """The smallest accuracy difference (points of %) a paired comparison of ``n`` problems detects with ``power``
    at two-sided level ``alpha``, given its share of discordant problems (right at one point only): Connor's
    (1987) normal approximation to McNemar's test, n·δ² = (z₁₋α/₂·√ψ + z_power·√(ψ − δ²))². None without
    discordant problems (no spread to judge from); ψ·100 when even that difference is out of reach."""
    from scipy.optimize import brentq

    if n <= 0 or discordant <= 0:
        return None
    share = discordant / n
    if _power_gap(share, n, share, alpha, power) < 0:
        return 100.0 * share
    return 100.0 * brentq(_power_gap, 1e-12, share, args=(n, share, alpha, power))


def problems_needed(difference_pct: float, discordant_share: float, alpha: float = 0.05,
                    power: float = POWER) -> int | None:
    """Problems a paired comparison needs to detect ``difference_pct`` at the given discordance (same formula)."""
    from scipy.stats import norm

    delta, share = abs(difference_pct) / 100.0, discordant_share
    if delta <= 0 or share <= 0 or delta > share:
        return None
    root = norm.ppf(1 - alpha / 2) * np.sqrt(share) + norm.ppf(power) * np.sqrt(share - delta * delta)
    return int(np.ceil(root * root / (delta * delta)))


def spearman_length(alphas, tokens_by_alpha) -> tuple[float | None, Interval]:
    """Spearman's ρ between α and mean tokens over the α grid, and its interval from resampling problems.

    ``tokens_by_alpha``: (problems × α) generated tokens, the same problems in every column."""
    import warnings

    from scipy.stats import ConstantInputWarning, pearsonr, rankdata

    alphas = np.asarray(alphas, dtype=float)
    matrix = np.asarray(tokens_by_alpha, dtype=float)
    if len(alphas) < 3 or matrix.shape[0] < 2:
        return None, Interval(None, None)
    alpha_ranks = rankdata(alphas)

    def rho(*columns, axis=-1):
        # Spearman's ρ: Pearson's r of the ranks (ties averaged, as spearmanr ranks them), for every resample
        # at once; equal means everywhere (scipy: nan and a warning) count as no trend, 0
        means = np.stack([np.mean(c, axis=axis) for c in columns], axis=-1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantInputWarning)
            r = pearsonr(np.broadcast_to(alpha_ranks, means.shape), rankdata(means, axis=-1), axis=-1).statistic
        return np.nan_to_num(r, nan=0.0)

    value = float(rho(*matrix.T))
    return value, bootstrap(rho, *matrix.T)


def significant(interval: Interval) -> bool:
    """True when the interval excludes zero."""
    return interval.low is not None and (interval.low > 0 or interval.high < 0)
