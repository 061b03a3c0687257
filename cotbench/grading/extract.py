"""Answer extraction: response text -> the answer string a protocol picks (pure functions).

Protocols
- ``paper``: the CoT-Valve protocol: the last ``\\boxed{}``, else the last number in the response.
- ``gsm8k-strict`` / ``gsm8k-flexible``: lm-evaluation-harness's GSM8K filters (``#### N``, first match;
  the last number-like run, respectively).
- ``math`` (default): the last ``\\boxed{}``; else the whole response when it is itself a short answer;
  else what follows the last "answer is" / "Answer:" on its line; else the math span or number that ends
  last. ``grade`` adds one more reading for this protocol: math-verify's own, on the whole response.

Numbers include thousands groups, decimals, ``a/b`` and ``1e5``, but never digits glued to a preceding
letter ("x2", "AZYUK2A").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from cotbench.grading.normalize import strip_math_delimiters
from cotbench.registry import Registry


@dataclass(frozen=True)
class Extraction:
    text: str | None  # None: nothing found
    how: str  # which rule picked it, kept in the verdict's reason


# A number not glued to a preceding letter ("AZYUK2A" holds none): thousands groups, decimals, a/b, 1e5.
_NUMBER = re.compile(r"(?<![A-Za-z_\d])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?:[eE][-+]?\d+)?|\.\d+)")
_LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-eval gsm8k.yaml "strict-match"
_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # lm-eval gsm8k.yaml "flexible-extract"
_ANSWER_MARKER = re.compile(r"answer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_HOPE = re.compile(r"\s*I hope it is correct.*$", re.IGNORECASE | re.DOTALL)
# Display math may span lines; inline $...$ and \(...\) may not (as in LaTeX). "\$" is a dollar sign.
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\(([^\n]+?)\\\)|(?<!\\)\$((?:[^$\n\\]|\\.)+?)(?<!\\)\$",
                        re.DOTALL)
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
    inner = _strip_math_delimiters(text)
    if "$" in inner or "\\(" in inner or "\\[" in inner:
        return False  # prose around math: "Answer $$ 9 $$" is not itself an answer
    plain = re.sub(r"\\text\{[^}]*\}|\\[a-zA-Z]+", " ", inner)
    return len(re.findall(r"[A-Za-z]{2,}", plain)) <= 2


def _strip_math_delimiters(s: str) -> str:
    return strip_math_delimiters(s.strip().rstrip(".").strip())


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


def last_token(text: str) -> str | None:
    """The math span or number that ends last: answers come at the end of what a model says."""
    best_end, best = -1, None
    for m in _MATH_SPAN.finditer(text):
        best_end, best = m.end(), next(g for g in m.groups() if g is not None).strip()
    outside = _MATH_SPAN.sub(lambda m: " " * len(m.group(0)), text)  # numbers inside math don't count twice
    numbers = list(_NUMBER.finditer(outside))
    if numbers and numbers[-1].end() > best_end:
        best = numbers[-1].group(0)
    return best or None


def _after_last_marker(response: str) -> str | None:
    """What follows the last "answer is" / "Answer:" on its line, without "I hope it is correct"."""
    markers = list(_ANSWER_MARKER.finditer(response))
    if not markers:
        return None
    rest = response[markers[-1].end():].split("\n", 1)[0]
    rest = _HOPE.sub("", rest).strip()
    return rest or None


def _math(response: str) -> Extraction:
    boxed = last_boxed(response)
    if boxed is not None:
        return Extraction(boxed, "last \\boxed{}")
    stripped = response.strip()
    if stripped and _looks_like_bare_answer(stripped):
        return Extraction(_strip_math_delimiters(stripped), "whole response")
    said = _after_last_marker(response)
    if said:
        if _looks_like_bare_answer(said):
            return Extraction(_strip_math_delimiters(said), "'answer is ...'")
        token = last_token(said)
        if token:
            return Extraction(token, "last math or number after 'answer is'")
    token = last_token(response)
    return Extraction(token, "last math or number") if token else Extraction(None, "no answer found")


PROTOCOLS: Registry = Registry("grading protocol")
PROTOCOLS.register("paper")(_paper)
PROTOCOLS.register("gsm8k-strict")(_gsm8k_strict)
PROTOCOLS.register("gsm8k-flexible")(_gsm8k_flexible)
PROTOCOLS.register("math")(_math)


def extract_answer(response: str, protocol: str = "math") -> Extraction:
    return PROTOCOLS.get(protocol)(response)
