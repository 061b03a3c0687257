"""Answer normalisation before equivalence checking (pure string functions).

Each rule removes a way of writing the same value that math-verify does not see through on its own:
thousands separators, currency and percent signs, degree marks, units, spacing commands, ``\\dfrac``,
assignment prefixes such as ``x =``, multiple-choice wrappers and scientific notation.
"""
from __future__ import annotations

import re
from fractions import Fraction

_THIN_SPACE = re.compile(r"\\[,!]")  # 10\\,000 and 16,\\!386: thousands spacing, never a separator of items
_SPACING = re.compile(r"\\[;: ]|\\q?quad|~")
_TEXT_CMD = re.compile(r"\\(?:text|textnormal|textbf|textit|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_TRAILING_TEXT = re.compile(r"^(.*\d[^a-zA-Z]*?)\s*\\(?:text|textnormal|mbox|mathrm)\s*\{[^{}]*\}(?:\^\{?\d\}?)?$")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:([, ])\d{3})(?:\1\d{3})*(?:\.\d+)?$")
# "1,22", "1000,99", "0,111": a comma that cannot be a thousands separator is a decimal comma.
_DECIMAL_COMMA = re.compile(r"^-?(?:0,\d+|\d+,(?:\d{1,2}|\d{4,}))$")
_ASSIGNMENT = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=[^=])")
_TRAILING_UNITS = re.compile(r"^(-?[\d.,/]+(?:\s*\\?%)?)\s*[a-zA-Z][a-zA-Z\s.]*$")
_CHOICE = re.compile(r"^\(?([A-Ea-e])\)?$")
_SCI_E = re.compile(r"^(-?\d+(?:\.\d+)?)[eE]([-+]?\d+)$")
_SCI_TIMES = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|\*|x)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?$")
_NUMBER = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)$")
_SIMPLE_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?\d+)\s*/\s*(-?\d+)$")


def normalize(answer: str) -> str:
    """Canonical text of an answer. Idempotent: normalize(normalize(x)) == normalize(x)."""
    s = answer.strip()
    s = re.sub(r"^\\boxed\{(.*)\}$", r"\1", s, flags=re.DOTALL)
    s = strip_math_delimiters(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\displaystyle", "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = _THIN_SPACE.sub("", s)
    s = _SPACING.sub(" ", s)
    s = s.replace("{,}", ",")  # LaTeX thousands separator 1{,}000
    s = re.sub(r"\^\s*\{?\\circ\}?|°|\\degree", "", s)
    s = s.replace("\\%", "%")
    s = s[:-1].strip() if s.endswith("%") else s
    s = s.replace("\\$", "").replace("$", "").strip()
    s = _drop_text_units(s)
    s = s.strip().rstrip(".").strip()
    m = _TRAILING_UNITS.match(s)
    if m and not re.search(r"[a-zA-Z]", m.group(1)):
        s = m.group(1).strip()
    if _THOUSANDS.match(s):
        s = s.replace(",", "").replace(" ", "")
    elif _DECIMAL_COMMA.match(s):
        s = s.replace(",", ".")
    s = _ASSIGNMENT.sub("", s) if s.count("=") == 1 else s
    choice = _CHOICE.match(s)
    if choice:
        s = choice.group(1).upper()
    return re.sub(r"\s+", " ", s).strip()


def strip_math_delimiters(s: str) -> str:
    """``$x$``, ``$$x$$``, ``\\(x\\)``, ``\\[x\\]`` -> ``x``; anything else unchanged."""
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            return s[len(left):-len(right)].strip()
    return s


def _drop_text_units(s: str) -> str:
    """``10\\text{ cm}`` -> ``10`` (a unit after a number); any other \\text{X} -> X (text answers)."""
    m = _TRAILING_TEXT.match(s)
    if m:
        s = m.group(1)
    return _TEXT_CMD.sub(lambda t: t.group(1), s)


def as_number(s: str) -> Fraction | None:
    """Exact value of a plain number, simple fraction or scientific notation; None for anything else."""
    s = s.replace(" ", "")
    if _NUMBER.match(s):
        return Fraction(s)
    m = _SCI_E.match(s) or _SCI_TIMES.match(s)
    if m:
        return Fraction(m.group(1)) * Fraction(10) ** int(m.group(2))
    m = _SIMPLE_FRAC.match(s)
    if m:
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else ("", m.group(4), m.group(5))
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if sign else value
    return None
