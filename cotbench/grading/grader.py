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

from cotbench.grading.config import GradingConfig, resolve
from cotbench.grading.extract import Extraction, boxes, choice_letter, choice_letter_gold, run_extractors
from cotbench.grading.normalize import normalize
from cotbench.grading.sandbox import HELPER, Deadline, GradingTimeout, run_inline
from cotbench.grading.verify import Trace, equivalent
from cotbench.records import Grade

DEFAULT_PROTOCOL = "math"
DEFAULT_TIMEOUT_S = 5.0  # per verdict; math-verify's default per comparison
MAX_RESPONSE_CHARS = 2_000_000  # longer responses are read from their end (answers come last)


def grade(response: str, gold: str, protocol: str | GradingConfig = DEFAULT_PROTOCOL,
          timeout_s: float = DEFAULT_TIMEOUT_S) -> Grade:
    """Grade one response. Never raises; an unreadable answer is an incorrect verdict.

    >>> grade("so the total is \\\\boxed{\\\\frac{1}{2}}", "0.5").correct
    True
    """
    return _grade(response, gold, protocol, timeout_s, HELPER.run, None)


@dataclass(frozen=True)
class Explanation:
    grade: Grade
    steps: tuple[str, ...]
    seconds: float


def explain(response: str, gold: str, protocol: str | GradingConfig = DEFAULT_PROTOCOL,
            timeout_s: float = DEFAULT_TIMEOUT_S) -> Explanation:
    """The verdict with each step that led to it (extraction, normal forms, the check that decided)."""
    trace = Trace()
    started = time.perf_counter()
    verdict = _grade(response, gold, protocol, timeout_s, HELPER.run, trace)
    return Explanation(verdict, tuple(trace), time.perf_counter() - started)


def grade_in_worker(response: str, gold: str, protocol: str | GradingConfig, timeout_s: float) -> Grade:
    """The verdict as a grading-pool worker computes it: the worker runs it under one alarm for the whole
    verdict (``_worker.serve``), symbolic work inline; the pool kills the worker if C code outlives it."""
    return _grade(response, gold, protocol, timeout_s, run_inline, None)


def _grade(response, gold, protocol, timeout_s, runner, trace) -> Grade:
    deadline = Deadline(timeout_s)
    try:
        config = resolve(protocol)
    except Exception as exc:  # an unknown protocol is the caller's error, reported as one
        return Grade(False, None, str(gold), str(protocol), f"error: {exc}", status="error")
    try:
        return _judge(str(response), str(gold), config, runner, deadline, trace)
    except GradingTimeout:
        return _timeout(gold, config.name, timeout_s)
    except RecursionError:
        return Grade(False, None, str(gold), config.name, "incorrect: answer nested too deeply to read")
    except Exception as exc:  # a grader bug must not stop a run; the verdict says so and is kept out of accuracy
        return Grade(False, None, str(gold), config.name, f"error: {type(exc).__name__}: {exc}"[:300], status="error")


def _timeout(gold, protocol, timeout_s) -> Grade:
    name = protocol if isinstance(protocol, str) else protocol.name
    return Grade(False, None, str(gold), name, f"timeout: no verdict within {timeout_s:g}s", status="timeout")


def _judge(response: str, gold: str, config: GradingConfig, runner, deadline: Deadline, trace) -> Grade:
    response = response.replace("\x00", "")[-MAX_RESPONSE_CHARS:]
    golds = gold_answers(gold)
    gold_text = ", ".join(golds)
    letter = choice_letter_gold(normalize(gold_text)) if config.choice_letters and len(golds) == 1 else None
    if letter and letter not in gold_text:
        letter = None  # a lower-case "a" is a variable, not choice (A)
    if letter:
        extraction = choice_letter(response)
    else:
        extraction = run_extractors(response, config.extractors, n_gold=len(golds))
    if trace is not None:
        trace.add(f"gold answer{'s' if len(golds) > 1 else ''}: {gold_text!r}")
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
