import pytest

from cotbench.metrics import Outcome, acu, completion_parts, completion_split, percentile, summarize


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


def _parts_from(n, ended, right_ended, right_cut):
    correct = [True] * right_ended + [False] * (ended - right_ended) + [True] * right_cut + \
        [False] * (n - ended - right_cut)
    cut = [False] * ended + [True] * (n - ended)
    return completion_parts(correct, cut), 100.0 * sum(correct) / n


def test_the_accuracy_change_splits_exactly_into_completion_and_answers():
    import random

    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(1, 60)
        sides = []
        for _ in range(2):
            ended = rng.randint(0, n)
            sides.append(_parts_from(n, ended, rng.randint(0, ended), rng.randint(0, n - ended)))
        (base, acc0), (point, acc1) = sides
        by_completion, by_answers = completion_split(base, point)
        assert by_completion + by_answers == pytest.approx(acc1 - acc0, abs=1e-9)


def test_a_point_that_only_truncates_more_loses_by_completion_alone():
    base, acc0 = _parts_from(100, ended=100, right_ended=60, right_cut=0)
    point, acc1 = _parts_from(100, ended=50, right_ended=30, right_cut=0)  # same 60 % of those that ended
    by_completion, by_answers = completion_split(base, point)
    assert by_completion == pytest.approx(acc1 - acc0) == pytest.approx(-30.0)
    assert by_answers == pytest.approx(0.0)


def test_a_point_whose_answers_go_wrong_loses_by_answers_alone():
    base, acc0 = _parts_from(40, ended=30, right_ended=24, right_cut=2)
    point, acc1 = _parts_from(40, ended=30, right_ended=12, right_cut=2)
    by_completion, by_answers = completion_split(base, point)
    assert by_completion == pytest.approx(0.0) and by_answers == pytest.approx(acc1 - acc0) == pytest.approx(-30.0)


def test_majority_groups_answers_by_the_graders_equivalence_and_breaks_ties_by_the_first():
    from cotbench.grading import grade
    from cotbench.metrics import majority

    def same(a, b):
        return grade(a, b).correct

    assert majority(["1/2", "0.5", "3", "3"], same) == 0  # two votes each: the group that came first
    assert majority(["3", None, "4", "\\frac{8}{2}"], same) == 2  # 4 and 8/2 are one answer
    assert majority([None, None], same) is None
