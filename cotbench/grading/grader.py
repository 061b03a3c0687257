"""``grade(response, gold)``: extract the answer a protocol picks, then check equivalence, within one deadline.

Every verdict has a status: ``correct``, ``incorrect``, ``timeout`` (its time ran out: not a judgement, and
kept out of accuracy) or ``error`` (the grader itself failed: also kept out). ``grade`` never raises and
returns within ``timeout_s`` plus about a second: extraction and normalisation are linear-time text
functions, work that cannot finish is refused up front (``guard``), and the symbolic part runs in a helper
process that is killed past the deadline (``sandbox``). The deadline counts from when the work starts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from cotbench.grading.config import COMMITTING, GradingConfig, resolve
from cotbench.grading.deadline import Deadline, GradingTimeout
from cotbench.grading.extract import (Extraction, boxes, choice_letter, choice_letter_gold, clean, cut_run_on,
                                     run_extractors)
from cotbench.grading.normalize import normalize
from cotbench.grading.sandbox import HELPER, run_inline
from cotbench.grading.verify import Trace, equivalent, split_items
from cotbench.records import Grade

DEFAULT_PROTOCOL = "math"
DEFAULT_TIMEOUT_S = 5.0  # per verdict; math-verify's default per comparison
MAX_RESPONSE_CHARS = 2_000_000  # longer responses are read from their end (answers come last)


def grade(response: str, gold: str, protocol: str | GradingConfig = DEFAULT_PROTOCOL,
          timeout_s: float = DEFAULT_TIMEOUT_S, truncated: bool = False) -> Grade:
    """Grade one response. Never raises; an unreadable answer is an incorrect verdict, a fault of the grader
    (sympy or the parser raising, a RecursionError) an ``error``. ``truncated``: the response stopped at the
    length cap; unless the protocol says otherwise (``paper``), it has an answer only if it committed to one
    (a complete box or an answer marker).

    >>> grade("so the total is \\\\boxed{\\\\frac{1}{2}}", "0.5").correct
    True
    """
    return _grade(response, gold, protocol, timeout_s, HELPER.run, None, truncated)


@dataclass(frozen=True)
class Explanation:
    grade: Grade
    steps: tuple[str, ...]
    seconds: float

    @property
    def families(self) -> tuple[str, ...]:
        """The family rules that applied (``[name]`` in the steps and the reason), named as in the grading
        tables (``tests/grading/cases.py``)."""
        import re

        text = "\n".join(self.steps) + "\n" + self.grade.reason
        return tuple(dict.fromkeys(re.findall(r"\[([a-z][a-z ,'-]+)\]", text)))


def explain(response: str, gold: str, protocol: str | GradingConfig = DEFAULT_PROTOCOL,
            timeout_s: float = DEFAULT_TIMEOUT_S, truncated: bool = False) -> Explanation:
    """The verdict with each step that led to it (extraction, normal forms, the check that decided)."""
    trace = Trace()
    started = time.perf_counter()
    verdict = _grade(response, gold, protocol, timeout_s, HELPER.run, trace, truncated)
    return Explanation(verdict, tuple(trace), time.perf_counter() - started)


def grade_in_worker(response: str, gold: str, protocol: str | GradingConfig, timeout_s: float,
                    truncated: bool = False) -> Grade:
    """The verdict as a grading-pool worker computes it: the worker runs it under one alarm for the whole
    verdict (``_worker.serve``), symbolic work inline; the pool kills the worker if C code outlives it."""
    return _grade(response, gold, protocol, timeout_s, run_inline, None, truncated)


def _grade(response, gold, protocol, timeout_s, runner, trace, truncated=False) -> Grade:
    deadline = Deadline(timeout_s)
    try:
        config = resolve(protocol)
    except Exception as exc:  # an unknown protocol is the caller's error, reported as one
        return Grade(False, None, str(gold), str(protocol), f"error: {exc}", status="error")
    try:
        return _judge(str(response), str(gold), config, runner, deadline, trace, truncated)
    except GradingTimeout:
        return _timeout(gold, config.name, timeout_s)
    except Exception as exc:  # a grader fault (RecursionError included) must not stop a run, nor count as a
        # wrong answer: the verdict says so and is kept out of accuracy
        return Grade(False, None, str(gold), config.name, f"error: {type(exc).__name__}: {exc}"[:300], status="error")


def _timeout(gold, protocol, timeout_s) -> Grade:
    name = protocol if isinstance(protocol, str) else protocol.name
    return Grade(False, None, str(gold), name, f"timeout: no verdict within {timeout_s:g}s", status="timeout")


NO_COMMITMENT = "no answer: cut off at the length cap before committing to one (no complete box, no answer marker)"


def _judge(response: str, gold: str, config: GradingConfig, runner, deadline: Deadline, trace,
           truncated: bool = False) -> Grade:
    response = clean(response[-MAX_RESPONSE_CHARS:])
    ran_on = False
    if config.cut_run_on:
        response, ran_on = cut_run_on(response)
    committed_only = truncated and config.cut_needs_commitment
    golds = gold_answers(clean(gold))
    gold_text = ", ".join(golds)
    letter = choice_letter_gold(normalize(gold_text)) if config.choice_letters and len(golds) == 1 else None
    if letter and letter not in gold_text:
        letter = None  # a lower-case "a" is a variable, not choice (A)
    if letter:
        extraction = choice_letter(response)
        if committed_only and not extraction.how.startswith(("letter in the last", "letter after 'answer")):
            extraction = Extraction(None, NO_COMMITMENT)
    else:
        extractors = tuple(e for e in config.extractors if e in COMMITTING) if committed_only else config.extractors
        n_gold = max(len(golds), len(split_items(normalize(gold_text, config.strip_units))))
        # without a finish reason, an unfinished last line is read as the length cap's would be
        extraction = run_extractors(response, extractors, n_gold, unfinished_is_none=config.cut_needs_commitment)
        if committed_only and extraction.text is None:
            extraction = Extraction(None, NO_COMMITMENT)
    if trace is not None:
        trace.add(f"gold answer{'s' if len(golds) > 1 else ''}: {gold_text!r}")
        if ran_on:
            trace.add("the response ran on into a new question or turn: graded up to it [run-on responses]")
        if committed_only:
            trace.add("the response stopped at the length cap: only a committed answer counts")
        trace.add(f"extracted {extraction.text!r} ({extraction.how})")
    if extraction.text is None:
        return Grade(False, None, gold_text, config.name, extraction.how)
    if letter:
        picked = extraction.text.strip().upper()
        same = picked == letter
        return Grade(same, extraction.text, gold_text, config.name,
                     f"{'same' if same else 'different'} choice letter; answer from {extraction.how}")
    correct, why = equivalent(extraction.text, gold_text, config, runner, deadline, trace)
    if trace is not None:
        trace.add(f"verdict: {'correct' if correct else 'incorrect'} in {deadline.elapsed():.3f}s")
    return Grade(correct, extraction.text, gold_text, config.name, f"{why}; answer from {extraction.how}")


def same_answer(a: str, b: str, protocol: str | GradingConfig = DEFAULT_PROTOCOL,
                timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two extracted answers are one answer by the protocol's equivalence (maj@K's votes): the same
    checks a verdict makes, one answer in the gold's place. A timeout or a grader fault counts as different."""
    if a == b:
        return True
    try:
        return equivalent(clean(str(a)), clean(str(b)), resolve(protocol), HELPER.run, Deadline(timeout_s), None)[0]
    except GradingTimeout:
        return False
    except Exception:  # a fault of the checks: the two answers stay apart, as a wrong verdict would keep them
        return False


def gold_answers(gold: str) -> list[str]:
    """The answers inside a gold: every distinct box of a worked solution (a gold with several boxes is a
    set of answers), a bare gold as it is, else the answer a long solution states."""
    found, _ = boxes(gold)
    if found:
        distinct = list(dict.fromkeys(f for f in found if f))
        return distinct or [gold]
    if len(gold) <= 60:
        return [gold]
    extraction: Extraction = run_extractors(gold, ("marker", "last_math_or_number"))
    return [extraction.text or gold]
