"""α where it matters: --alphas auto (refinement where neighbours differ most) and --target-tokens (bisection)."""
import pandas as pd
import pytest

from cotbench import alpha_search
from cotbench.alpha_search import PointStats, find_target, next_points, parse_auto, refine
from cotbench.config import RunConfig
from cotbench.errors import ConfigError
from cotbench.stats import Interval


def _point(alpha, accuracy, tokens, spread=2.0):
    return PointStats(alpha, accuracy, Interval(accuracy - spread, accuracy + spread), tokens,
                      Interval(tokens - spread, tokens + spread))


def _evaluator(length, accuracy=lambda a: 50.0, spread=2.0):
    calls = []

    def evaluate(alphas):
        calls.append(list(alphas))
        return {a: _point(a, accuracy(a), length(a), spread) for a in alphas}

    return evaluate, calls


def test_auto_parses_its_forms_and_refuses_others():
    assert parse_auto("auto") == (9, 1.0) and parse_auto("auto:7") == (7, 1.0) and parse_auto("auto:12:1.5") == (12, 1.5)
    assert alpha_search.coarse_grid(1.0) == (0.0, 0.25, 0.5, 0.75, 1.0)
    for bad in ("auto:3", "auto:x", "auto:9:0", "auto:9:1:2"):
        with pytest.raises(ValueError):
            parse_auto(bad)
    with pytest.raises(ConfigError, match="N must be at least 6"):
        RunConfig(model="m", valve="v", alphas="auto:4")
    with pytest.raises(ConfigError, match="give one"):
        RunConfig(model="m", valve="v", alphas="auto", target_tokens=100)
    with pytest.raises(ConfigError, match="needs --valve"):
        RunConfig(model="m", valve="none", target_tokens=100)
    assert RunConfig(model="m", valve="v", alphas="auto:7").alpha_search == "auto:7"


def test_the_first_round_splits_the_gaps_where_length_and_accuracy_change_most():
    points = [_point(0.0, 50, 300), _point(0.25, 50, 290), _point(0.5, 20, 280), _point(0.75, 20, 120),
              _point(1.0, 18, 110)]
    assert next_points(points, first_round=True) == [0.625, 0.375]  # length drops most in (0.5, 0.75)
    # after the first round, a gap whose neighbours overlap in both intervals is closed
    flat = [_point(0.0, 50, 300), _point(0.5, 50, 300.5), _point(1.0, 50, 301.5)]
    assert next_points(flat, first_round=True) == [0.75] and next_points(flat, first_round=False) == []


def test_refine_adds_points_until_n_and_stops_where_nothing_differs():
    evaluate, calls = _evaluator(lambda a: 300 if a < 0.6 else 100)  # a step between 0.5 and 0.75
    record = refine(evaluate, 9)
    assert len(record["alphas"]) == 9 and calls[0] == [0.0, 0.25, 0.5, 0.75, 1.0]
    added = [a for new in record["rounds"] for a in new]
    assert all(0.5 < a < 0.75 for a in added)  # every point goes where the length changes
    evaluate, calls = _evaluator(lambda a: 200.0)
    record = refine(evaluate, 9)
    assert len(record["rounds"]) == 1 and len(record["alphas"]) == 6  # the first round always runs, then stops


def test_target_tokens_bisects_checks_monotonicity_and_says_when_out_of_reach():
    evaluate, calls = _evaluator(lambda a: 400 - 300 * a)  # 400 at α = 0, 100 at α = 1
    record = find_target(evaluate, 220)
    assert record["alpha"] is not None and abs(400 - 300 * record["alpha"] - 220) <= 0.05 * 220
    assert calls[0] == [0.0, 1.0] and len(record["steps"]) <= alpha_search.TARGET_STEPS
    evaluate, _ = _evaluator(lambda a: 400 - 300 * a)
    assert find_target(evaluate, 50)["alpha"] is None and "out of reach" in find_target(evaluate, 50)["outcome"]
    evaluate, _ = _evaluator(lambda a: 500 if a == 0.5 else 400 - 300 * a)  # a bump where bisection looks first
    bumped = find_target(evaluate, 220)
    assert bumped["alpha"] is None and "not monotone" in bumped["outcome"]
    evaluate, calls = _evaluator(lambda a: 400 if a < 0.3001 else 100)  # a cliff: no α gives 250 tokens
    cliff = find_target(evaluate, 250)
    assert cliff["alpha"] is None and "after 6 steps" in cliff["outcome"] and len(calls) == 1 + 6
    assert cliff["closest_mean_tokens"] in (400, 100)


@pytest.mark.slow
def test_auto_alpha_on_the_embedded_model_adds_a_point_inside_the_gap_where_length_changes_most(tmp_path):
    from cotbench.runner import run_sweep

    out = tmp_path / "auto"
    result = run_sweep(RunConfig(alphas="auto:6", limit=8, out=str(out)), progress=False)
    summary = pd.read_csv(out / "summary.csv").sort_values("alpha")
    coarse = summary[summary["alpha"].isin([0.0, 0.25, 0.5, 0.75, 1.0])]
    assert len(coarse) == 5 and len(summary) in (6, 7)
    lengths = coarse["mean_tokens"].tolist()
    steepest = max(range(4), key=lambda i: abs(lengths[i + 1] - lengths[i]))
    low, high = coarse["alpha"].iloc[steepest], coarse["alpha"].iloc[steepest + 1]
    added = summary[~summary["alpha"].isin(coarse["alpha"])]["alpha"].tolist()
    assert any(low < a < high for a in added), (lengths, added)
    assert result.n_generated == 8 * len(summary)  # each α once, in the one loaded engine
    assert "How the α points were chosen" in (out / "report.md").read_text()
    # --target-tokens where the length falls most: halfway between the steepest coarse gap's ends, searched there
    target = int(round((lengths[steepest] + lengths[steepest + 1]) / 2))
    assert abs(lengths[steepest] - lengths[steepest + 1]) > 0.2 * target  # neither end is already a hit
    run_sweep(RunConfig(alphas=(low, high), target_tokens=target, limit=8, out=str(out)), progress=False)
    from cotbench.store import Store

    store = Store(out, create=False)
    record = store.get_meta("alpha_search")
    store.close()
    assert record["mode"] == "target" and 1 <= len(record["steps"]) <= 6
    rows = pd.read_csv(out / "summary.csv").set_index("alpha")["mean_tokens"]
    for step in record["steps"]:  # every midpoint tried is an ordinary row, its length the one the search read
        assert low < step["alpha"] < high and rows[step["alpha"]] == pytest.approx(step["mean_tokens"])
    if record["alpha"] is not None:
        assert abs(rows[record["alpha"]] - target) <= 0.05 * target
    else:  # a miss says why: a midpoint out of its bracket, or six steps spent
        assert "not monotone" in record["outcome"] or "after 6 steps" in record["outcome"]
