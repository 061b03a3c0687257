"""Answer extraction: response text -> the answer string a protocol picks (pure functions).

Protocols
- ``paper``: the CoT-Valve protocol: the last ``\\boxed{}``, else the last number in the response.
- ``gsm8k-strict`` / ``gsm8k-flexible``: lm-evaluation-harness's GSM8K filters (``#### N``, first match;
  the last number-like run, respectively).
- ``math`` (default): the last ``\\boxed{}``; else the whole response when it is itself a short answer;
  else the last "answer is X" / "Answer: X"; else the last inline math; else the last number.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from cotbench.registry import Registry


@dataclass(frozen=True)
class Extraction:
    text: str | None  # None: nothing found
    how: str  # which rule picked it, kept in the verdict's reason


_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|-?\.\d+")
_LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-eval gsm8k.yaml "strict-match"
_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # lm-eval gsm8k.yaml "flexible-extract"
_ANSWER_IS = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*:?\s*(.+?)(?:\n|$)", re.IGNORECASE
)
_INLINE_MATH = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$(.+?)\$", re.DOTALL)
_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox``), braces balanced; also ``\\boxed 5``."""
    start, cmd = max((text.rfind(c), c) for c in _BOX_COMMANDS)
    if start < 0:
        return None
    rest = text[start + len(cmd):]
    if not rest.lstrip().startswith("{"):
        m = re.match(r"\s+([^\s$]+)", rest)  # "\boxed 5": up to the next space or "$"
        return m.group(1) if m else None
    open_at = start + len(cmd) + (len(rest) - len(rest.lstrip()))
    depth = 0
    for j in range(open_at, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:j].strip()
    return None  # unbalanced: the response was cut off inside the box


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def _looks_like_bare_answer(text: str) -> bool:
    """A response that is already an answer: short, one line, few plain words."""
    if len(text) > 60 or "\n" in text.strip():
        return False
    plain = re.sub(r"\\text\{[^}]*\}|\\[a-zA-Z]+", " ", text)
    return len(re.findall(r"[A-Za-z]{2,}", plain)) <= 2


def _strip_math_delimiters(s: str) -> str:
    s = s.strip().rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            return s[len(left):-len(right)].strip()
    return s


def _paper(response: str) -> Extraction:
    boxed = last_boxed(response)
    if boxed is not None:
        return Extraction(boxed, "last \\boxed{}")
    number = last_number(response)
    return Extraction(number, "last number" if number is not None else "no \\boxed{} and no number")


def _gsm8k_strict(response: str) -> Extraction:
    m = _LM_EVAL_STRICT.search(response)
    return Extraction(m.group(1), "'#### N'") if m else Extraction(None, "no '#### N' line")


def _gsm8k_flexible(response: str) -> Extraction:
    matches = _LM_EVAL_FLEXIBLE.findall(response)
    if not matches:
        return Extraction(None, "no number")
    last = next(g for g in matches[-1] if g)
    return Extraction(last, "last number-like run")


def _math(response: str) -> Extraction:
    boxed = last_boxed(response)
    if boxed is not None:
        return Extraction(boxed, "last \\boxed{}")
    stripped = response.strip()
    if stripped and _looks_like_bare_answer(stripped):
        return Extraction(_strip_math_delimiters(stripped), "whole response")
    said = _ANSWER_IS.findall(response)
    if said and said[-1].strip():
        return Extraction(_strip_math_delimiters(said[-1]), "'answer is ...'")
    maths = [next(g for g in m if g) for m in _INLINE_MATH.findall(response)]
    if maths:
        return Extraction(maths[-1].strip(), "last inline math")
    return _paper(response) if last_number(response) else Extraction(None, "no answer found")


PROTOCOLS: Registry = Registry("grading protocol")
PROTOCOLS.register("paper")(_paper)
PROTOCOLS.register("gsm8k-strict")(_gsm8k_strict)
PROTOCOLS.register("gsm8k-flexible")(_gsm8k_flexible)
PROTOCOLS.register("math")(_math)


def extract_answer(response: str, protocol: str = "math") -> Extraction:
    return PROTOCOLS.get(protocol)(response)
