"""`cotbench compare`: several run directories in one report, tested against each other on shared problems."""
from dataclasses import replace

import pandas as pd
import pytest

from cotbench.cli import main
from cotbench.records import Problem
from cotbench.report import write_run_outputs
from cotbench.report.compare import compare_runs
from cotbench.store import DB_NAME, Store
from report_samples import sample


def _write_run(path, samples, keep_store=True):
    store = Store(path)
    store.set_meta("run", {"config": {"tasks": ["arithmetic"]}, "model_id": samples[0].model, "params_b": 0.1,
                           "n_params": 100_000_000, "backend": {"engine": "hf"}})
    store.put_generations(samples)
    store.put_grades([(s.key, s.grade) for s in samples], "test")
    write_run_outputs(store)
    store.close()
    if not keep_store:  # a committed report: samples file and run.json only
        (path / DB_NAME).unlink()
    return path


def _run_a():
    """Problems 0-29; α = 0 right on multiples of 3, α = 1 right on multiples of 2."""
    return [sample(a, i, right(i), tokens) for a, right, tokens in ((0.0, lambda i: i % 3 == 0, 300),
                                                                     (1.0, lambda i: i % 2 == 0, 100))
            for i in range(30)]


def _run_b(protocol="math"):
    """Another model on problems 10-39, right on every problem but multiples of 5; problem 15 has another gold."""
    out = []
    for i in range(10, 40):
        s = replace(sample(0.0, i, i % 5 != 0, 150), model="other (b.gguf)", valve="", key=f"b-{i}")
        if i == 15:
            problem = Problem(s.problem.task, s.problem.problem_id, s.problem.question, "999")
            s = replace(s, problem=problem, grade=replace(s.grade, gold="999"))
        out.append(replace(s, grade=replace(s.grade, protocol=protocol)))
    return out


def test_rows_of_two_runs_are_tested_on_the_problems_they_share(tmp_path):
    a = _write_run(tmp_path / "a", _run_a())
    b = _write_run(tmp_path / "b", _run_b(), keep_store=False)
    summary, table = compare_runs([a, b], tmp_path / "cmp")
    assert set(summary["run"]) == {"a", "b"} and len(summary) == 3
    assert summary["on_pareto"].notna().all()
    row = table[table["row"].str.startswith("b: other")].iloc[0]
    assert row["against"].startswith("a: tiny") and "α=0" in row["against"]
    assert row["n_shared"] == 19 and row["n_differing"] == 1  # 10-29 less problem 15
    shared = [i for i in range(10, 30) if i != 15]
    expected = 100 * (sum(i % 5 != 0 for i in shared) - sum(i % 3 == 0 for i in shared)) / len(shared)
    assert row["accuracy_change_pct"] == pytest.approx(expected)
    assert row["token_reduction_ratio"] == pytest.approx(2.0)
    inside = table[table["row"].str.contains("α=1")].iloc[0]  # a's own α = 1 against a's base: all 30 problems
    assert inside["n_shared"] == 30 and inside["n_differing"] == 0
    assert table["mcnemar_p_holm"].notna().all()
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "left out because the runs hold the same id with another question or gold" in text
    for name in ("report.html", "comparison.csv", "summary.csv", "accuracy_vs_tokens.png"):
        assert (tmp_path / "cmp" / name).is_file()
    assert "b: other · α=0" in (tmp_path / "cmp" / "report.html").read_text()


def test_a_pair_chosen_by_hand_and_rows_graded_otherwise(tmp_path, capsys):
    a = _write_run(tmp_path / "a", _run_a())
    b = _write_run(tmp_path / "b", _run_b(protocol="paper"))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--pair", "a:α=1=a:alpha=0"]) == 0
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert len(table) == 1 and table.iloc[0]["row"].endswith("α=1") and table.iloc[0]["n_shared"] == 30
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp2")]) == 0
    table = pd.read_csv(tmp_path / "cmp2" / "comparison.csv")
    other = table[table["row"].str.startswith("b:")].iloc[0]
    assert not other["same_grader"] and pd.isna(other["mcnemar_p"])
    assert "different graders" in (tmp_path / "cmp2" / "report.md").read_text()
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp3"), "--pair", "a:α=0.3=b:α=0"]) == 2
    assert "RUN:ROW=RUN:ROW" in capsys.readouterr().err
    assert main(["compare", str(a), "--out", str(tmp_path / "cmp4")]) == 2
