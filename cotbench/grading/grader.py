"""``grade(response, gold)``: extract the answer a protocol picks, then check equivalence."""
from __future__ import annotations

from cotbench.grading.extract import extract_answer, last_boxed
from cotbench.grading.verify import equivalent
from cotbench.records import Grade

DEFAULT_PROTOCOL = "math"
DEFAULT_TIMEOUT_S = 5.0  # math-verify's own default per comparison


def grade(response: str, gold: str, protocol: str = DEFAULT_PROTOCOL, timeout_s: float = DEFAULT_TIMEOUT_S) -> Grade:
    """Grade one response. Never raises on odd text: an unreadable answer is an incorrect verdict.

    >>> grade("so the total is \\\\boxed{\\\\frac{1}{2}}", "0.5").correct
    True
    """
    extraction = extract_answer(response, protocol)
    gold_text = last_boxed(gold) or gold  # a gold given as "\\boxed{..}" is fine too
    if extraction.text is None:
        return Grade(False, None, gold_text, protocol, f"no answer found ({extraction.how})")
    correct, why = equivalent(extraction.text, gold_text, timeout_s)
    return Grade(correct, extraction.text, gold_text, protocol, f"{why}; answer from {extraction.how}")
