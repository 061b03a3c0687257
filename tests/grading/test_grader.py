"""Grading regression table: (gold, response, expected). Each comment names the quirk a row covers."""
import threading
import time

import pytest

from cotbench.grading import extract_answer, grade
from cotbench.grading._timeout import CallTimedOut, call_with_timeout

CASES = [
    # plain numbers and the fast path
    ("72", "So she sold \\boxed{72} clips.", True),
    ("72", "So she sold \\boxed{73} clips.", False),
    ("-3", "\\boxed{-3}", True),
    ("5", "5.00", True),
    ("25", "025", True),  # AIME leading zeros
    # thousands separators
    ("2125", "The total is \\boxed{2,125}.", True),
    ("1000", "1{,}000", True),
    ("12345.6", "12,345.6", True),
    # fractions and decimals vs exact values
    ("0.5", "\\frac{1}{2}", True),
    ("\\frac12", "0.5", True),
    ("\\frac{3}{4}", "\\dfrac{3}{4}", True),
    ("1/2", "0.5", True),
    ("\\frac13", "0.333", False),  # a rounded decimal is not the exact value
    # percents, currency, degrees, units
    ("50", "50\\%", True),
    ("10", "\\$10", True),
    ("10", "10 dollars", True),
    ("10", "10\\text{ cm}", True),
    ("90", "90^\\circ", True),
    ("18", "Janet makes $18 every day. The answer is $18.", True),
    # scientific notation
    ("1500", "1.5e3", True),
    ("1500", "1.5 \\times 10^{3}", True),
    # equations and assignments
    ("5", "x = 5", True),
    ("2x+3", "y=2x+3", True),
    ("(x+1)^2", "x^2+2x+1", True),
    # intervals, sets and tuples
    ("(1,2)", "(1, 2)", True),
    ("(1,2)", "(2,1)", False),
    ("[1,2)", "[1, 2)", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\frac{\\pi}{2})}", True),  # MATH-500 #1
    # radicals and symbolic forms
    ("\\frac{\\sqrt2}{2}", "\\sqrt{2}/2", True),
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    # LaTeX delimiters
    ("7", "$7$", True),
    ("7", "\\(7\\)", True),
    ("7", "The final answer is $\\boxed{7}$.", True),
    # text and multiple-choice answers
    ("\\text{Monday}", "Monday", True),
    ("A", "(A)", True),
    ("\\text{(C)}", "C", True),
    ("\\text{Monday}", "Tuesday", False),
    # answers buried in long responses
    ("18", "Step 1: 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * 2 = 18 dollars.\nThe answer is 18.", True),
    ("3", "First 1, then 2, and finally \\boxed{3}. Note 4 and 5 are not answers.", True),
    ("18", "She sells 9 eggs at $2 each, making 18 dollars a day in total, not 20", False),
    # no answer at all
    ("7", "I am not sure.", False),
    ("7", "", False),
]


@pytest.mark.parametrize("gold,response,expected", CASES)
def test_grade_table(gold, response, expected):
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
    assert extract_answer("ran out \\boxed{\\frac{1", "paper").text == "1"  # cut off inside the box: last number


def test_timeout_applies_on_and_off_the_main_thread():
    with pytest.raises(CallTimedOut):
        call_with_timeout(time.sleep, (5,), 0.3)
    caught = []

    def worker():
        try:
            call_with_timeout(time.sleep, (5,), 0.3)
        except CallTimedOut as exc:
            caught.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert caught and time.monotonic() - started < 4


def test_grade_works_off_the_main_thread():
    out = []
    thread = threading.Thread(target=lambda: out.append(grade("\\boxed{x^2+2x+1}", "(x+1)^2")))
    thread.start()
    thread.join(60)
    assert out and out[0].correct
