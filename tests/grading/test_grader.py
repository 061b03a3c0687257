"""The grading table (cases.py), the protocols, and time limits on and off the main thread."""
import threading

import pytest

from cotbench.grading import extract_answer, grade
from grading.cases import all_cases

@pytest.mark.parametrize("category,gold,response,expected", all_cases())
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
