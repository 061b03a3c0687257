"""Each adapter on its real file format (../shared/data through COTBENCH_DATA_DIR) and on bad input."""
import json
import re

import pytest

from cotbench.adapters import TASKS, DataOptions
from cotbench.errors import ConfigError, DataError


def load(task, limit=None, **options):
    return TASKS.get(task).load(DataOptions(**options), limit)


def test_gsm8k_gold_after_hashes_with_commas_stripped():
    problems = load("gsm8k")
    assert len(problems) == 1319
    assert problems[0].gold == "18" and problems[0].question.startswith("Janet")
    with_comma = [p for p in problems if not p.gold.lstrip("-").isdigit()]
    assert with_comma == []  # every gold is a bare integer once "2,125"-style commas are gone
    assert len(load("gsm8k", split="train")) == 7473


def test_math500_uses_answer_field_and_keeps_level_subject():
    p = load("math500", limit=1)[0]
    assert p.problem_id == "test/precalculus/807.json"
    assert p.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert p.metadata["level"] == 2 and p.metadata["subject"] == "Precalculus"


def test_math_test_without_answer_field_takes_last_boxed():
    p = load("math", limit=1)[0]  # Hendrycks format: no `answer`, level "Level 3", subject in `type`
    assert p.gold == "2" and p.metadata["level"] == 3 and p.metadata["subject"] == "Algebra"
    assert len(load("math", split="train")) == 12000


def test_aime24_integer_answers_lose_leading_zeros():
    problems = load("aime24")
    assert len(problems) == 30
    assert all(p.gold == str(int(p.gold)) for p in problems)
    assert "25" in {p.gold for p in problems}  # "025" in the file


def test_svamp_joins_body_and_question():
    p = load("svamp", limit=1)[0]
    assert p.gold == "145" and p.question.startswith("There are 87 oranges") and p.question.endswith("?")


def test_jsonl_user_file_with_custom_fields(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"q": "1+1?", "sol": "it is 2\n#### 2", "uid": "a"}, {"q": "half?", "sol": "so \\boxed{\\frac12}", "uid": "b"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    problems = load("jsonl", data_file=path, question_field="q", answer_field="sol", id_field="uid")
    assert [(p.problem_id, p.gold) for p in problems] == [("a", "2"), ("b", "\\frac12")]


def test_duplicate_problem_ids_are_refused_naming_both_rows(tmp_path):
    """Two rows under one id would merge silently wherever samples are matched by id (pairs with the base)."""
    path = tmp_path / "dup.jsonl"
    rows = [{"q": "1+1?", "a": "2", "uid": "x"}, {"q": "2+2?", "a": "4", "uid": "y"}, {"q": "3+3?", "a": "6", "uid": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"id 'x' \(.*dup\.jsonl:1 and .*dup\.jsonl:3\)"):
        load("jsonl", data_file=path, question_field="q", answer_field="a", id_field="uid")
    assert len(load("jsonl", data_file=path, question_field="q", answer_field="a")) == 3  # line numbers: unique


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok", "answer": "1"}\n{"question": "broken",\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        load("jsonl", data_file=path)


def test_missing_field_names_row_and_field(tmp_path):
    path = tmp_path / "nofield.jsonl"
    path.write_text('{"question": "ok"}\n')
    with pytest.raises(DataError, match=r"nofield\.jsonl:1: missing field 'answer'"):
        load("jsonl", data_file=path)


def test_no_local_data_and_no_hub_names_both_ways(tmp_path):
    with pytest.raises(DataError) as err:
        load("gsm8k", data_dir=tmp_path)
    message = str(err.value)
    assert "--data-dir" in message and "Hugging Face Hub" in message and "openai/gsm8k" in message


def test_unknown_task_lists_known_ones():
    with pytest.raises(KeyError) as err:
        TASKS.get("gsm8")
    assert "Did you mean 'gsm8k'" in str(err.value) and "math500" in str(err.value)


def test_arithmetic_is_seeded_exact_and_has_a_difficulty_knob():
    a, b = load("arithmetic", limit=5), load("arithmetic", limit=5)
    assert a == b
    assert load("arithmetic", limit=5, seed=1) != a
    hard = load("arithmetic", limit=1, difficulty=6)[0]
    assert hard.question.count("Then") == 6 and hard.gold.lstrip("-").isdigit()
    with pytest.raises(ConfigError):
        load("arithmetic", difficulty=0)


def test_arithmetic_answers_are_right():
    from cotbench.adapters.arithmetic import make_problem

    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "×": lambda x, y: x * y, "÷": lambda x, y: x / y}
    for i in range(50):
        problem, solution = make_problem(0, 4, i)
        steps = re.findall(r"(\d+) ([-+×÷]) (\d+) = (\d+)", solution)
        assert steps and all(ops[op](int(x), int(y)) == int(z) for x, op, y, z in steps)
        assert steps[-1][3] == problem.gold and solution.endswith(f"\\boxed{{{problem.gold}}}.")
