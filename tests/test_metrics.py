import pytest

from cotbench.metrics import Outcome, acu, percentile, summarize


@pytest.mark.parametrize("accuracy,params_b,tokens,printed,digits", [
    (95.1, 32, 741.1, 0.40, 2),     # QwQ-32B-Preview, GSM8K (CoT-Valve Table 1)
    (94.92, 32, 225, 1.32, 2),      # QwQ-32B-Preview + CoT-Valve+P, GSM8K (paper abstract)
    (45.9, 1, 199.8, 22.973, 3),    # Llama-3.2-1B, GSM8K (as quoted in issue #2)
])
def test_acu_reproduces_paper_rows(accuracy, params_b, tokens, printed, digits):
    assert round(acu(accuracy, params_b, tokens), digits) == printed


def test_acu_rejects_zero_denominator():
    with pytest.raises(ValueError):
        acu(50, 0, 100)


def test_summarize():
    outcomes = [Outcome(True, 10, False), Outcome(False, 30, True), Outcome(True, 20, False), Outcome(False, 40, True)]
    s = summarize(outcomes, params_b=0.5)
    assert s.n == 4 and s.accuracy_pct == 50.0
    assert s.mean_tokens == 25.0 and s.median_tokens == 25.0
    assert s.p90_tokens == pytest.approx(37.0)
    assert s.mean_tokens_correct == 15.0 and s.mean_tokens_wrong == 35.0
    assert s.truncation_pct == 50.0
    assert s.acu == pytest.approx(100 * 50 / (0.5 * 25))


def test_percentile_matches_linear_interpolation():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([1, 2, 3, 4], 90) == pytest.approx(3.7)
