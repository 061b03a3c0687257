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
    """(verdict, reason) for a normalised-or-raw prediction against a gold answer."""
    p, g = normalize(pred), normalize(gold)
    if not p:
        return False, "empty answer"
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


def _symbolic_equal(pred: str, gold: str) -> bool:
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
