"""``grade(response, gold)``: extract the answer a protocol picks, then check equivalence."""
from __future__ import annotations

from cotbench.grading.extract import extract_answer, last_boxed
from cotbench.grading._timeout import call_with_timeout
from cotbench.grading.normalize import normalize
from cotbench.grading.verify import equivalent, symbolic_equal_raw
from cotbench.records import Grade

DEFAULT_PROTOCOL = "math"
DEFAULT_TIMEOUT_S = 5.0  # math-verify's own default per comparison


def grade(response: str, gold: str, protocol: str = DEFAULT_PROTOCOL, timeout_s: float = DEFAULT_TIMEOUT_S) -> Grade:
    """Grade one response. Never raises on odd text: an unreadable answer is an incorrect verdict.

    >>> grade("so the total is \\\\boxed{\\\\frac{1}{2}}", "0.5").correct
    True
    """
    extraction = extract_answer(response, protocol)
    gold_text = gold_answer(gold)
    if extraction.text is None:
        return Grade(False, None, gold_text, protocol, f"no answer found ({extraction.how})")
    correct, why = equivalent(extraction.text, gold_text, timeout_s)
    if not correct and protocol == "math" and len(response) > len(extraction.text) + 2:
        # Our extraction picks one span; math-verify's own reads LaTeX structures (matrices, relations,
        # "x \\in ...") that a span can cut. Either reading being right counts.
        if _raw_match(response, gold_text, timeout_s):
            return Grade(True, extraction.text, gold_text, protocol, "symbolic match (math-verify on the whole response)")
    return Grade(correct, extraction.text, gold_text, protocol, f"{why}; answer from {extraction.how}")


def gold_answer(gold: str) -> str:
    """The answer inside a gold that is a whole worked solution; a bare gold is kept as it is."""
    boxed = last_boxed(gold)
    if boxed is not None:
        return boxed
    return gold if len(gold) <= 60 else (extract_answer(gold, "math").text or gold)


def _raw_match(response: str, gold: str, timeout_s: float) -> bool:
    try:
        return bool(call_with_timeout(symbolic_equal_raw, (response, normalize(gold)), timeout_s))
    except Exception:  # a timeout or a sympy failure leaves the first verdict standing
        return False
