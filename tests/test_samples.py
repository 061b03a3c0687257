"""K samples per problem (--samples K): keys, resume to a larger K, clustered intervals, pass@k and maj@K."""
import math

import pandas as pd
import pytest

from cotbench.config import RunConfig, build_config
from cotbench.errors import ConfigError
from cotbench.records import Generation, Grade, Problem, Sample
from cotbench.runner import run_sweep
from cotbench.store import Store


def test_sample_zero_keeps_the_key_of_a_one_sample_run():
    from cotbench.keys import sample_key
    from cotbench.records import SamplingSettings

    problem = Problem("gsm8k", "test-1", "q", "3")
    args = ("sha256:m", "v", 0.5, problem, "prompt", SamplingSettings(temperature=0.6), {"backend": "hf"})
    one = sample_key(*args)
    assert sample_key(*args, index=0) == one
    assert len({one, sample_key(*args, index=1), sample_key(*args, index=2)}) == 3
    method = {"method": "prompt-budget", "budget": 100}
    assert sample_key(*args, method, index=0) == sample_key(*args, method)
    assert sample_key(*args, method, index=1) != sample_key(*args, index=1)


def test_k_samples_are_refused_at_temperature_zero_and_the_r1_preset_fills_what_flags_leave():
    with pytest.raises(ConfigError, match="needs --temperature > 0"):
        RunConfig(model="m", valve=None, samples=4)
    with pytest.raises(ConfigError, match="samples must be a whole number >= 1"):
        RunConfig(model="m", valve=None, samples=0)
    r1 = build_config(model="m", valve=None, samples=4, sampling_preset="r1")
    assert (r1.temperature, r1.top_p, r1.samples) == (0.6, 0.95, 4)
    assert build_config(model="m", valve=None, sampling_preset="r1", temperature=0.8).temperature == 0.8
    with pytest.raises(ConfigError, match="sampling_preset must be one of r1"):
        build_config(model="m", valve=None, sampling_preset="r2")


def test_the_leaderboard_identity_holds_k_and_is_unchanged_for_one_sample():
    from cotbench.keys import result_digest

    settings = RunConfig(model="m", valve=None, temperature=0.6).to_dict()
    assert result_digest({**settings, "samples": 1}) == result_digest({k: v for k, v in settings.items()
                                                                       if k != "samples"})
    assert result_digest({**settings, "samples": 4}) != result_digest(settings)
    from cotbench.report.leaderboard import sampling_label

    assert sampling_label({**settings, "samples": 4, "top_p": 0.95}) == "K=4 T=0.6 top-p=0.95 seed=0"
    assert sampling_label(RunConfig(model="m", valve=None).to_dict()) == "greedy"


def _config(tiny_model, tiny_valve, out, **extra):
    settings = dict(model=str(tiny_model), valve=str(tiny_valve), alphas=(0.0, 1.0), tasks=("gsm8k",), limit=3,
                    max_new_tokens=8, batch_size=4, grade_workers=0, dtype="float32", temperature=1.0, seed=7,
                    out=str(out))
    settings.update(extra)
    return RunConfig(**settings)


def test_k_samples_end_to_end_and_a_larger_k_generates_only_the_new_samples(tiny_model, tiny_valve, tmp_path):
    single = run_sweep(_config(tiny_model, tiny_valve, tmp_path / "k1"), progress=False)
    assert single.n_generated == 3 * 2
    first = run_sweep(_config(tiny_model, tiny_valve, tmp_path / "k", samples=2), progress=False)
    assert first.n_generated == 3 * 2 * 2
    grown = run_sweep(_config(tiny_model, tiny_valve, tmp_path / "k", samples=3), progress=False)
    assert grown.n_generated == 3 * 2  # sample 2 of each problem and point only

    store = Store(tmp_path / "k", create=False)
    samples = store.samples()
    store.close()
    assert len(samples) == 18 and sorted({s.sample_index for s in samples}) == [0, 1, 2]
    by_point: dict = {}
    for s in samples:
        by_point.setdefault((s.alpha, s.problem.problem_id), {})[s.sample_index] = s
    assert all(len(v) == 3 for v in by_point.values())
    # each sample draws from its own generator: the K responses differ, and sample 0 is the K = 1 run's sample
    assert any(len({s.generation.text for s in v.values()}) > 1 for v in by_point.values())
    store = Store(tmp_path / "k1", create=False)
    alone = {(s.alpha, s.problem.problem_id): s for s in store.samples()}
    store.close()
    for where, v in by_point.items():
        assert v[0].key == alone[where].key and v[0].generation.text == alone[where].generation.text

    summary = pd.read_csv(tmp_path / "k" / "summary.csv")
    assert set(summary["samples_per_problem"]) == {3} and set(summary["n"]) == {9}
    assert summary["mean_tokens_per_problem"].tolist() == pytest.approx((3 * summary["mean_tokens"]).tolist())
    assert summary["wilcoxon_p"].notna().sum() == 1 and summary["mcnemar_p"].isna().all()
    passes = pd.read_csv(tmp_path / "k" / "pass_at_k.csv")
    assert sorted(set(passes["k"])) == [1, 2, 3]
    at_one = passes[passes["k"] == 1].sort_values("alpha")["pass_at_k_pct"].tolist()
    assert at_one == pytest.approx(summary.sort_values("alpha")["accuracy_pct"].tolist())  # pass@1 = accuracy
    report = (tmp_path / "k" / "report.md").read_text()
    assert "pass@K %" in report and "clustered bootstrap" in report
    assert not (tmp_path / "k1" / "pass_at_k.csv").exists()
    assert pd.read_csv(tmp_path / "k1" / "summary.csv")["pass_at_k_pct"].isna().all()


def _sample(problem_id: str, index: int, correct: bool, tokens: int, answer: str | None = None, alpha=0.0) -> Sample:
    problem = Problem("gsm8k", problem_id, f"question {problem_id}", "3")
    answer = answer if answer is not None else ("3" if correct else "4")
    grade = Grade(correct, answer, "3", "math", "test")
    generation = Generation(f"{problem_id}-{alpha}-{index}", f"\\boxed{{{answer}}}", 5, tokens, "stop", 0.1)
    return Sample(f"{problem_id}-{alpha}-{index}", "m", "v", alpha, problem, "p", generation, grade,
                  sample_index=index)


def _one_per_problem(n: int = 12, alpha=0.0) -> list[Sample]:
    return [_sample(f"p{i}", 0, i % 3 == 0, 20 + 7 * i, alpha=alpha) for i in range(n)]


def _copies(samples: list[Sample], k: int) -> list[Sample]:
    from dataclasses import replace

    return [replace(s, key=f"{s.key}/{i}", sample_index=i) for s in samples for i in range(k)]


def test_k_identical_samples_give_the_clustered_interval_of_their_one_sample_run():
    from cotbench.report.analysis import _clustered_intervals, row_statistics

    once, four = _one_per_problem(), _copies(_one_per_problem(), 4)
    assert _clustered_intervals(four, 0.135) == _clustered_intervals(once, 0.135)
    a, b = row_statistics(once, 0.135), row_statistics(four, 0.135)
    # lengths: the K = 1 row's bootstrap over problems is the clustered one of its K identical copies
    assert (a["mean_tokens_ci_low"], a["mean_tokens_ci_high"]) == (b["mean_tokens_ci_low"], b["mean_tokens_ci_high"])
    assert b["samples_per_problem"] == 4 and b["disagreement_pct"] == 0.0
    assert b["pass_at_k_pct"] == b["maj_at_k_pct"] == pytest.approx(100 * 4 / 12)
    assert a["samples_per_problem"] == 1 and a["pass_at_k_pct"] is None


def test_pass_at_k_and_maj_at_k_on_a_worked_example():
    from cotbench.report.analysis import k_sample_columns, pass_at_k_table

    members = ([_sample("a", i, c, 10) for i, c in enumerate([True, False, True, False])]  # 2 of 4
               + [_sample("b", i, False, 10, answer) for i, answer in enumerate(["1/2", "0.5", "4", None])]
               + [_sample("c", i, True, 10) for i in range(4)])  # 4 of 4
    columns = k_sample_columns(members, 4)
    assert columns["pass_at_k_pct"] == pytest.approx(100 * 2 / 3)  # a and c solved by some sample
    # maj@4: a ties 3 against 4 (two votes each): the earliest group, 3, right; b: 1/2 and 0.5 are one answer
    # (two votes), wrong; c right
    assert columns["maj_at_k_pct"] == pytest.approx(100 * 2 / 3)
    assert columns["disagreement_pct"] == pytest.approx(100 * 2 / 3)  # a and b
    table = pass_at_k_table({("m", "v", 0.0, "valve", 0.0, "gsm8k"): members})
    at = dict(zip(table["k"], table["pass_at_k_pct"]))
    assert at[1] == pytest.approx(100 * (0.5 + 0 + 1) / 3)  # pass@1: accuracy averaged over the samples
    assert at[2] == pytest.approx(100 * ((1 - math.comb(2, 2) / math.comb(4, 2)) + 0 + 1) / 3)
    assert at[4] == pytest.approx(columns["pass_at_k_pct"])


def test_paired_comparison_with_k_samples_uses_per_problem_means_and_wilcoxon():
    from cotbench.report.analysis import against_base

    base = _copies(_one_per_problem(), 3)
    same = against_base(_copies(_one_per_problem(alpha=1.0), 3), base)
    assert same["accuracy_change_pct"] == 0.0 and same["wilcoxon_p"] == 1.0 and same["mcnemar_p"] is None
    assert same["detectable_difference_pct"] is None  # Connor's formula is McNemar's
    better = [_sample(f"p{i}", k, True, 10, alpha=1.0) for i in range(12) for k in range(3)]
    result = against_base(better, base)
    assert result["accuracy_change_pct"] == pytest.approx(100 * 8 / 12)
    assert result["wilcoxon_p"] < 0.05 and result["accuracy_change_ci_low"] > 0
    single = against_base(_one_per_problem(alpha=1.0), _one_per_problem())
    assert single["mcnemar_p"] == 1.0 and single["wilcoxon_p"] is None
