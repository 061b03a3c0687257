"""Equivalence of two answer strings: exact numbers first, then math-verify, then normalised text.

Pure apart from the time limit: the same pair always gets the same verdict.
"""
from __future__ import annotations

import logging
import re

from cotbench.grading._timeout import CallTimedOut, call_with_timeout
from cotbench.grading.normalize import as_number, normalize


class _DropTimeoutDisabledWarning(logging.Filter):
    # We switch math-verify's signal-based limit off on purpose (see _timeout.py); its warning is noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def equivalent(pred: str, gold: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(verdict, reason) for a prediction against a gold answer, both raw or normalised.

    When one side is an equation and the other is not, the right-hand side of its last "=" is compared
    too ("x = 5" vs "5", "k = 5+5 = 10" vs "10"); an approximation after it is ignored ("= 1/3 ≈ 0.33").
    """
    p, g = normalize(pred), normalize(gold)
    if not p:
        return False, "empty answer"
    same, why = _equivalent_normalised(p, g, timeout_s)
    if same or ("=" in p) == ("=" in g):
        return same, why
    p2, g2 = (_last_rhs(p), g) if "=" in p else (p, _last_rhs(g))
    if not p2 or not g2 or not _names_a_value(p if "=" in p else g):
        return same, why
    same2, why2 = _equivalent_normalised(normalize(p2), normalize(g2), timeout_s)
    return (True, f"{why2} (right-hand side of '=')") if same2 else (same, why)


def _names_a_value(equation: str) -> bool:
    """True for "x = ...", "f(x) = ..." or "5 \\times 6 = ...": the left side is one name or pure arithmetic.
    False for "2x + z = 1", where the right side alone is not the answer."""
    lhs = equation.split("=", 1)[0].strip()
    if re.fullmatch(r"\\?[A-Za-z]+(?:_\{?\w+\}?)?(?:\([A-Za-z]\))?", lhs):
        return True
    return not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", lhs))


def _last_rhs(s: str) -> str:
    s = re.split(r"\\approx|≈", s)[0]
    return s.rsplit("=", 1)[1].strip() if "=" in s else s


def _equivalent_normalised(p: str, g: str, timeout_s: float) -> tuple[bool, str]:
    pn, gn = as_number(p), as_number(g)
    if pn is not None and gn is not None:
        # Exact rationals: 0.5 == 1/2 == 5e-1. A tiny relative slack absorbs printed float noise only.
        same = pn == gn or abs(pn - gn) <= abs(gn) * 1e-9
        return same, "numeric match" if same else "numbers differ"
    if _text_key(p) == _text_key(g):
        return True, "same text after normalisation"
    try:
        same = call_with_timeout(_symbolic_equal, (p, g), timeout_s)
    except CallTimedOut:
        return False, f"timeout: symbolic check exceeded {timeout_s:g}s"
    except Exception as exc:  # grading never crashes a run
        return False, f"error in symbolic check: {exc}"
    return same, "symbolic match (math-verify)" if same else "not equivalent"


def _text_key(s: str) -> str:
    return re.sub(r"\s+", "", s).lower()


def _parse(s: str):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    for candidate in (f"\\boxed{{{s}}}", f"${s}$", s):
        parsed = parse(candidate, extraction_config=configs, parsing_timeout=None)
        if parsed:
            return parsed
    return []


def symbolic_equal_raw(response: str, gold: str) -> bool:
    """math-verify on the whole response (its own extraction), against the gold answer."""
    from math_verify import parse, verify

    gold_parsed, pred_parsed = _parse(gold), parse(response, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _symbolic_equal(pred: str, gold: str) -> bool:
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
