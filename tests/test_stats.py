"""Each statistic and efficiency metric on a worked example, checked against a closed form, scipy, or the
published definition."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from cotbench import metrics, stats


def test_wilson_matches_the_closed_form():
    # 5 correct of 200 (the old default-valve GSM8K row): p̂ = 0.025, z = 1.95996...
    k, n, z = 5, 200, sps.norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    ci = stats.wilson(k, n)
    assert ci.low == pytest.approx(100 * (centre - half), abs=1e-9)
    assert ci.high == pytest.approx(100 * (centre + half), abs=1e-9)
    assert ci.low == pytest.approx(1.07, abs=0.01) and ci.high == pytest.approx(5.72, abs=0.01)
    # 0 of 40: the interval still has width (never "exactly 0 %")
    zero = stats.wilson(0, 40)
    assert zero.low == pytest.approx(0.0, abs=1e-12) and zero.high == pytest.approx(8.76, abs=0.01)
    assert stats.wilson(0, 0) == stats.Interval(None, None)


def test_mcnemar_exact_on_a_worked_example():
    # 1 problem right at the base only, 8 right at the point only: two-sided exact p = 2·P(X ≤ 1 | 9, ½) = 20/512
    base = [1] + [0] * 8 + [1] * 10 + [0] * 5
    point = [0] + [1] * 8 + [1] * 10 + [0] * 5
    tokens = [100] * len(base)
    result = stats.paired(base, point, tokens, [50] * len(base))
    assert (result.only_base, result.only_point) == (1, 8)
    assert result.mcnemar_p == pytest.approx(0.0390625, abs=1e-12)
    assert result.accuracy_diff_pct == pytest.approx(100 * 7 / 24)
    assert result.token_ratio == pytest.approx(2.0)
    assert result.token_ratio_ci == stats.Interval(2.0, 2.0)  # every resample halves the tokens
    low, high = result.accuracy_diff_ci.low, result.accuracy_diff_ci.high
    assert low < result.accuracy_diff_pct < high and low > 0  # 7 net wins of 24: the interval excludes 0
    # no discordant pair: nothing to test, p = 1
    assert stats.paired([1, 0, 1], [1, 0, 1], [5, 5, 5], [5, 5, 5]).mcnemar_p == 1.0


def test_bootstrap_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(3)
    values = rng.integers(20, 400, size=60)
    first, again = stats.mean_interval(values), stats.mean_interval(values)
    assert first == again  # the same samples give the same bounds
    assert first.low < values.mean() < first.high
    # the percentile bootstrap's width is close to the normal approximation's for a mean of 60 values
    normal = 2 * 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert (first.high - first.low) == pytest.approx(normal, rel=0.2)
    assert stats.mean_interval([7, 7, 7]) == stats.Interval(7.0, 7.0)
    assert stats.mean_interval([7]) == stats.Interval(None, None)


def test_acu_interval_brackets_the_paper_formula():
    correct = [1, 0, 1, 1, 0, 0, 1, 0, 1, 0] * 4
    tokens = [120, 300, 80, 95, 410, 260, 150, 220, 60, 330] * 4
    value = metrics.acu(100 * np.mean(correct), 0.1345, float(np.mean(tokens)))
    ci = stats.acu_interval(correct, tokens, 0.1345)
    assert ci.low < value < ci.high


@pytest.mark.parametrize("right", [0, 30])
def test_acu_interval_at_none_or_all_correct_comes_from_the_wilson_bounds(right):
    """A bootstrap of 0 of 30 right gives ACU [0, 0] while accuracy's interval is [0, 11.4] %."""
    correct = [1.0] * right + [0.0] * (30 - right)
    tokens = [40 + 9 * i for i in range(30)]
    accuracy, lengths = stats.wilson(right, 30), stats.mean_interval(tokens)
    ci = stats.acu_interval(correct, tokens, 0.5)
    assert ci.low == pytest.approx(100 * accuracy.low / (0.5 * lengths.high))
    assert ci.high == pytest.approx(100 * accuracy.high / (0.5 * lengths.low))
    assert ci.high > ci.low and ci.high > 0
    # relative to its own value at the interval's middle, never narrower than accuracy's
    assert ci.high / max(ci.low, 1e-12) >= accuracy.high / max(accuracy.low, 1e-12) or ci.low == 0


def test_acu_interval_holds_acu_at_the_wilson_bounds():
    correct = [1.0] + [0.0] * 29  # 1 of 30: the bootstrap alone is far narrower than Wilson at the low end
    tokens = [100.0] * 30
    accuracy, ci = stats.wilson(1, 30), stats.acu_interval(correct, [100.0] * 30, 0.1)
    assert ci.low <= 100 * accuracy.low / (0.1 * 100) + 1e-9 and ci.high >= 100 * accuracy.high / (0.1 * 100) - 1e-9
    assert ci.low < metrics.acu(100 / 30, 0.1, float(np.mean(tokens))) < ci.high


def test_holm_on_a_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; made monotone: 0.06 for the last two
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5]) == [0.5] and stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_ockscore_worked_example():
    # OckBench: accuracy[%] − 10·ln(mean tokens / 10,000 + 1); 80 % at 1,000 tokens
    assert metrics.ockscore(80.0, 1000.0) == pytest.approx(80 - 10 * math.log(1.1))
    assert metrics.ockscore(80.0, 0.0) == 80.0


def test_aes_worked_examples_with_the_stated_weights():
    assert metrics.AES_WEIGHTS == (1.0, 3.0, 5.0)
    # half the tokens, accuracy 50 % -> 55 %: ΔL = 0.5, ΔA = +0.1 -> 1·0.5 + 3·0.1
    assert metrics.aes(55.0, 500.0, 50.0, 1000.0) == pytest.approx(0.8)
    # half the tokens, accuracy 50 % -> 45 %: ΔA = −0.1 -> 1·0.5 − 5·0.1
    assert metrics.aes(45.0, 500.0, 50.0, 1000.0) == pytest.approx(0.0)
    # longer and no more accurate: negative
    assert metrics.aes(50.0, 1500.0, 50.0, 1000.0) == pytest.approx(-0.5)
    assert metrics.aes(50.0, 100.0, 0.0, 1000.0) is None  # no base accuracy to compare with


def test_acu_without_parameters_is_labelled_apart():
    assert metrics.acu_no_params(50.0, 200.0) == pytest.approx(25.0)
    assert metrics.acu(50.0, 0.5, 200.0) == pytest.approx(metrics.acu_no_params(50.0, 200.0) / 0.5)


def test_accuracy_under_a_token_budget_and_its_area():
    correct, tokens = [True, True, False, True], [10, 100, 50, 300]
    assert metrics.accuracy_under_budget(correct, tokens, [64, 128, 512]) == [25.0, 50.0, 75.0]
    # the area over log2 B, normalised: budgets 64, 128, 256 at 0, 50, 100 % -> 50 %
    assert metrics.budget_auc([64, 128, 256], [0.0, 50.0, 100.0]) == pytest.approx(50.0)
    assert metrics.budget_auc([64], [10.0]) is None


def test_pareto_front():
    points = [(100, 50), (200, 60), (150, 40), (300, 60), (100, 50)]
    # (150, 40) is beaten by (100, 50); (300, 60) by (200, 60); equal points do not beat each other
    assert metrics.pareto_front(points) == [True, True, False, False, True]


def test_spearman_length_matches_scipy_and_has_an_interval():
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    rng = np.random.default_rng(0)
    base = np.array([400, 300, 200, 120, 60])
    matrix = np.clip(base + rng.normal(0, 60, size=(40, 5)), 1, None)
    rho, ci = stats.spearman_length(alphas, matrix)
    assert rho == pytest.approx(sps.spearmanr(alphas, matrix.mean(axis=0)).statistic)
    assert rho == pytest.approx(-1.0) and ci.low <= rho <= ci.high and ci.high < 0
    flat = np.full((10, 5), 50.0)
    assert stats.spearman_length(alphas, flat)[0] == 0.0
    assert stats.spearman_length(alphas[:2], matrix[:, :2]) == (None, stats.Interval(None, None))


def test_significant_needs_an_interval_excluding_zero():
    assert stats.significant(stats.Interval(0.5, 3.0)) and stats.significant(stats.Interval(-4.0, -0.1))
    assert not stats.significant(stats.Interval(-1.0, 2.0)) and not stats.significant(stats.Interval(None, None))


def test_whole_batch_statistics_match_scipy_one_resample_at_a_time():
    # the statistics reduce an axis so scipy computes every resample in one array; scipy's own loop, one
    # resample per call (spearmanr itself for ρ), from the same seed must give the same bounds
    from scipy.stats import bootstrap as scipy_bootstrap

    def reference(statistic, *arrays):
        ci = scipy_bootstrap(arrays, statistic, paired=True, vectorized=False, n_resamples=stats.N_RESAMPLES,
                             confidence_level=stats.CONFIDENCE, method="percentile",
                             rng=np.random.default_rng(stats.SEED)).confidence_interval
        return pytest.approx((ci.low, ci.high), rel=1e-12)

    rng = np.random.default_rng(5)
    correct, tokens = rng.integers(0, 2, 50).astype(float), rng.integers(10, 400, 50).astype(float)
    point_correct, point_tokens = rng.integers(0, 2, 50).astype(float), rng.integers(5, 200, 50).astype(float)
    ci = stats.acu_interval(correct, tokens, 0.1345)
    boot = scipy_bootstrap((correct, tokens), lambda c, t: 1e4 * np.mean(c) / (0.1345 * np.mean(t)), paired=True,
                           vectorized=False, n_resamples=stats.N_RESAMPLES, confidence_level=stats.CONFIDENCE,
                           method="percentile", rng=np.random.default_rng(stats.SEED)).confidence_interval
    wilson = stats.wilson(int(correct.sum()), len(correct))
    at_bounds = [100 * a / (0.1345 * np.mean(tokens)) for a in (wilson.low, wilson.high)]
    # the bootstrap, widened only where it does not hold ACU at the Wilson bounds
    assert (ci.low, ci.high) == pytest.approx((min(boot.low, at_bounds[0]), max(boot.high, at_bounds[1])), rel=1e-12)
    ci = stats.mean_interval(tokens)
    assert (ci.low, ci.high) == reference(np.mean, tokens)
    result = stats.paired(correct, point_correct, tokens, point_tokens)
    ci = result.token_ratio_ci
    assert (ci.low, ci.high) == reference(lambda b, q: np.mean(b) / np.mean(q), tokens, point_tokens)
    ci = result.accuracy_diff_ci
    assert (ci.low, ci.high) == reference(lambda b, q: 100 * (np.mean(q) - np.mean(b)), correct, point_correct)

    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    matrix = rng.integers(0, 6, size=(30, 5)).astype(float)  # few distinct values: ties among the means too

    def rho(*columns):
        means = [np.mean(c) for c in columns]
        return 0.0 if len(set(means)) < 2 else sps.spearmanr(alphas, means).statistic

    value, ci = stats.spearman_length(alphas, matrix)
    assert value == pytest.approx(rho(*matrix.T), abs=1e-12)
    assert (ci.low, ci.high) == reference(rho, *matrix.T)


def test_problems_needed_matches_a_worked_example():
    # ψ = 0.2 discordant, δ = 0.1, two-sided 5 %, 80 % power:
    # n = (1.95996·√0.2 + 0.84162·√(0.2 − 0.01))² / 0.01 = (0.87652 + 0.36685)² / 0.01 = 154.6 → 155
    from cotbench.stats import problems_needed

    assert problems_needed(10.0, 0.2) == 155
    assert problems_needed(-10.0, 0.2) == 155  # the sign of the difference does not matter
    assert problems_needed(0.0, 0.2) is None and problems_needed(30.0, 0.2) is None  # δ > ψ cannot happen


def test_the_detectable_difference_is_the_one_mcnemars_test_finds_four_times_in_five():
    import numpy as np
    from scipy.stats import binom

    from cotbench.stats import detectable_difference, problems_needed

    n, discordant = 300, 60
    delta = detectable_difference(n, discordant) / 100
    assert problems_needed(100 * delta, discordant / n) in (n, n + 1)  # the two formulas invert each other
    assert detectable_difference(4 * n, 4 * discordant) < 100 * delta  # more problems, finer differences
    assert detectable_difference(n, 0) is None
    # simulate: each problem discordant with ψ = 0.2; among those, right at the point only with (ψ + δ)/(2ψ)
    rng = np.random.default_rng(0)
    psi = discordant / n
    m = rng.binomial(n, psi, size=4000)
    b = rng.binomial(m, (psi + delta) / (2 * psi))
    p = np.minimum(1.0, 2 * np.minimum(binom.cdf(b, m, 0.5), binom.sf(b - 1, m, 0.5)))
    assert abs(np.mean(p < 0.05) - 0.8) < 0.06, np.mean(p < 0.05)


def test_pass_at_k_against_worked_examples():
    from cotbench.stats import pass_at_k

    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)  # k = 1: the share correct
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 − C(3,2)/C(5,2)
    assert pass_at_k(10, 3, 4) == pytest.approx(1 - math.comb(7, 4) / math.comb(10, 4))
    assert pass_at_k(5, 0, 3) == 0.0 and pass_at_k(5, 5, 1) == 1.0 and pass_at_k(5, 3, 3) == 1.0
    assert [pass_at_k(1, c, 1) for c in (0, 1)] == [0.0, 1.0]  # K = 1: today's accuracy, problem by problem
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)  # large n: no overflow
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_clustered_intervals_never_count_a_problems_samples_as_independent():
    from cotbench.stats import bootstrap, cluster_bootstrap

    rng = np.random.default_rng(3)
    right = rng.random(30) < 0.4
    one = cluster_bootstrap(np.mean, [[float(v)] for v in right])
    assert one == bootstrap(np.mean, right.astype(float))  # K = 1 is today's interval exactly
    same_k = cluster_bootstrap(np.mean, [[float(v)] * 8 for v in right])
    assert same_k == one  # K identical samples: the same interval, same seed
    naive = bootstrap(np.mean, np.repeat(right.astype(float), 8))  # 240 "independent" samples
    assert naive.high - naive.low < 0.6 * (one.high - one.low)
    mixed = cluster_bootstrap(np.mean, [list(rng.random(k) < 0.4) for k in rng.integers(1, 6, 30)])
    assert mixed.low < mixed.high
    tokens = [[100.0 + i] * 4 for i in range(30)]  # two arms resampled together: a ratio of means
    acu = cluster_bootstrap(lambda c, t, axis=-1: np.mean(c, axis=axis) / np.mean(t, axis=axis),
                            [[float(v)] * 4 for v in right], tokens)
    assert acu.low <= np.mean(right) / np.mean([t[0] for t in tokens]) <= acu.high


def test_wilcoxon_on_per_problem_means():
    from cotbench.stats import wilcoxon_p

    base = [0.25, 0.5, 0.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.5, 0.75]
    point = [0.5, 0.75, 0.25, 1.0, 1.0, 0.75, 0.5, 0.25, 0.5, 1.0]
    expected = sps.wilcoxon(np.subtract(point, base), zero_method="zsplit").pvalue
    assert wilcoxon_p(base, point) == pytest.approx(expected)
    assert wilcoxon_p(base, base) == 1.0
