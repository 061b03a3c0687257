"""The grading table (cases.py), the protocols, and time limits on and off the main thread."""
import threading

import pytest

from cotbench.grading import extract_answer, grade
from grading.cases import NOT_YET, all_cases

def _table():
    pending = pytest.mark.xfail(strict=True, reason="a family row whose rule has not landed")
    return [pytest.param(*case, marks=pending) if case[1:3] in NOT_YET else case for case in all_cases()]


@pytest.mark.parametrize("category,gold,response,expected", _table())
def test_grade_table(category, gold, response, expected):
    verdict = grade(response, gold)
    assert verdict.correct is expected, verdict


def test_verdict_keeps_extracted_answer_and_reason():
    verdict = grade("thinking... \\boxed{\\frac{1}{2}}", "0.5")
    assert verdict.extracted == "\\frac{1}{2}"
    assert "numeric" in verdict.reason and "boxed" in verdict.reason
    missing = grade("no idea", "3", protocol="paper")
    assert missing.extracted is None and not missing.correct and "no answer" in missing.reason


@pytest.mark.parametrize("protocol,response,expected", [
    ("paper", "a 1 b \\boxed{2} c 3", "2"),          # last box wins over later numbers
    ("paper", "a 1 b 2 c 3.5", "3.5"),               # else last number
    ("gsm8k-strict", "so\n#### 1,234\nthen 5", "1,234"),
    ("gsm8k-strict", "the answer is 5", None),
    ("gsm8k-flexible", "costs $12.50 then 7", "7"),
    ("gsm8k-flexible", "costs $12.50", "$12.50"),
    ("math", "The answer is: $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("math", "We get $x=2$ and then $y = 9$ so done", "y = 9"),
])
def test_protocols(protocol, response, expected):
    assert extract_answer(response, protocol).text == expected


def test_nested_and_unbalanced_boxes():
    assert extract_answer("\\boxed{\\frac{a}{b^{2}}}", "paper").text == "\\frac{a}{b^{2}}"
    assert extract_answer("ran out \\boxed{\\frac{1", "paper").text == "1"  # paper: cut off inside the box -> last number
    assert extract_answer("ran out \\boxed{\\frac{1", "math").text is None  # math: a cut-off box is no answer


def test_grade_works_off_the_main_thread():
    out = []
    thread = threading.Thread(target=lambda: out.append(grade("\\boxed{x^2+2x+1}", "(x+1)^2")))
    thread.start()
    thread.join(60)
    assert out and out[0].correct


def _fail(*args, **kwargs):
    raise RecursionError("maximum recursion depth exceeded while calling a Python object")


def test_a_fault_while_comparing_is_an_error_not_a_wrong_answer(monkeypatch):
    """sympy (and math-verify) raising on two parsed answers: the grader cannot say, so the verdict is an
    error, kept out of accuracy; the old rule turned it into "not equivalent"."""
    import math_verify
    import sympy

    from cotbench.grading.grader import grade_in_worker  # symbolic work inline, where the patch applies

    monkeypatch.setattr(sympy, "simplify", _fail)
    monkeypatch.setattr(math_verify, "verify", _fail)
    verdict = grade_in_worker("x^2 + 2x + 1", "(x+1)^2", "math", 5.0)
    assert verdict.status == "error" and not verdict.judged and "RecursionError" in verdict.reason
    # an exact check that decides before any faulty one still decides
    assert grade_in_worker("\\frac{1}{2}", "0.5", "math", 5.0).correct


def test_one_faulty_check_does_not_hide_another_that_decides(monkeypatch):
    import sympy

    from cotbench.grading.grader import grade_in_worker

    monkeypatch.setattr(sympy, "simplify", _fail)  # math-verify still finds them equal
    assert grade_in_worker("(x+1)^2", "(1+x)^2", "math", 5.0).correct


def test_an_unreadable_answer_is_the_models_fault():
    verdict = grade("so the answer is \\boxed{\\frac{3}{}}", "x+1")
    assert verdict.status == "incorrect" and verdict.judged


@pytest.mark.parametrize("response,truncated,expected", [
    # cut mid-line: its last number is wherever the cap fell, not an answer it gave
    ("the total distance minus the distance walked: \\[ 6 \\text{ miles} - 6", True, None),
    # not told how it ended: the last line is unfinished (an open \\[), so no answer either (issue 35's family
    # "an unfinished last line is no answer"; this row expected "6" before it)
    ("the total distance minus the distance walked: \\[ 6 \\text{ miles} - 6", False, None),
    ("the total distance minus the distance walked is 6 miles. So 6", False, "6"),  # a finished line: its number
    ("first \\boxed{6}, and to double-check, 3 + 3 = 6, so", True, "6"),  # a complete box: committed
    ("The answer is 6.\n\nLet me verify this once more by adding the", True, "6"),  # an answer marker: committed
])
def test_a_response_cut_at_the_cap_has_an_answer_only_if_it_committed_to_one(response, truncated, expected):
    from cotbench.grading.grader import NO_COMMITMENT

    verdict = grade(response, "6", truncated=truncated)
    assert verdict.extracted == expected
    if expected is None:
        assert not verdict.correct and verdict.judged
        assert verdict.reason == NO_COMMITMENT if truncated else "unfinished" in verdict.reason
    # the paper's protocol takes the last number by design, cut or not
    assert grade(response, "6", "paper", truncated=True).extracted == "6"


def test_a_cut_response_to_a_choice_question_needs_its_letter_committed():
    assert not grade("Let me think about (B) and (C). Option B seems", "B", truncated=True).correct
    assert grade("The answer is B. Now to check", "B", truncated=True).correct


@pytest.mark.parametrize("family,gold,response", [
    ("labelled answers", "t^2+1", "\\boxed{g(t) = t^2 + 1}"),
    ("labelled answers", "(5, -2)", "\\boxed{a=5;\\ b=-2}"),
    ("answers given in pieces", "4, -9", "The solutions are $\\boxed{4}$ and $\\boxed{-9}$."),
    ("notation", "\\begin{pmatrix} 1 \\\\ 2 \\\\ 3 \\end{pmatrix}", "\\boxed{[1, 2, 3]}"),
    ("where the answer sits", "42", "We have 12 + 30 = 42 and 7 extra.\n\n# Answer\n\n42"),
    ("run-on responses", "12", "The answer is $\\boxed{12}$.\n\nQuestion: Tom has 5 apples.\nAnswer: $\\boxed{5}$"),
    ("times and ratios are their own kinds of value", "10:00", "\\boxed{4:00}"),
    ("a choice letter inside an expression is no choice", "D", "\\boxed{\\mathbf{D}+1}"),
    ("an unfinished last line is no answer", "12", "We have 3 * 4 = 12.\nThen 12 +"),
    ("exact closed forms and relative tolerance", "\\sqrt{5+2\\sqrt{6}}", "\\boxed{\\sqrt{2}+\\sqrt{3}}"),
])
def test_explain_names_the_family_rule_that_decided(family, gold, response):
    from cotbench.grading import explain
    from grading.cases import CASES

    assert family in CASES  # named as in the grading tables
    assert family in explain(response, gold).families


def test_cli_explain_prints_the_family_rule(capsys):
    from cotbench.cli import main

    assert main(["grade", "--explain", "\\boxed{19:05}", "\\text{7:05 p.m.}"]) == 0
    assert "family rule: times and ratios are their own kinds of value" in capsys.readouterr().out
