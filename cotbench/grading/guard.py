"""Work refused before it starts: answers whose symbolic check cannot finish in any reasonable time.

sympy evaluates integer powers and factorials eagerly, in C, where no timer can interrupt it: ``10^{10^{10}}``,
``9^9^9^9`` or ``(10^{10})!`` would run for hours. These rules bound the work from the text alone (linear
time) and say why; a refused answer is still compared as text, so it can be correct but never by guesswork.
"""
from __future__ import annotations

import math
import re

MAX_DIGITS_OF_RESULT = 20_000  # a power or factorial may have at most this many digits (sympy: milliseconds)
MAX_NESTING = 40  # parsers recurse per level of nesting
MAX_LITERAL_DIGITS = 1000  # longer digit strings are compared exactly as numbers, never symbolically
MAX_FACTORIAL = 3000

_DIGITS = re.compile(r"\d{%d,}" % (MAX_LITERAL_DIGITS + 1))
_E_NOTATION = re.compile(r"\d[eE][-+]?(\d+)")



def symbolic_refusal(text: str, max_chars: int) -> str | None:
    """Why ``text`` must not reach sympy, or None when it may."""
    if len(text) > max_chars:
        return f"{len(text)} characters, more than {max_chars}: too long for a symbolic check"
    depth = deepest = 0
    for ch in text:
        if ch in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")}]":
            depth -= 1
    if deepest > MAX_NESTING:
        return f"nested {deepest} levels deep (limit {MAX_NESTING})"
    if _DIGITS.search(text):
        return f"a number of more than {MAX_LITERAL_DIGITS} digits"
    for m in _E_NOTATION.finditer(text):
        if len(m.group(1)) > 4 or int(m.group(1)) > MAX_DIGITS_OF_RESULT:
            return f"a power of ten with exponent {m.group(1)[:12]}"
    plain = text.replace("**", "^")
    for i, ch in enumerate(plain):
        if ch == "^":
            why = _power_refusal(plain, i)
            if why:
                return why
        elif ch == "!" and not plain.startswith("!=", i):
            why = _factorial_refusal(plain, i)
            if why:
                return why
    return None


def _power_refusal(text: str, at: int) -> str | None:
    base = _operand_before(text, at)
    exponent = _exponent_after(text, at)
    base_log = _log10_bound(base)
    exp_log = _log10_bound(exponent)
    if base_log is None or exp_log is None or base_log <= 0:
        return None  # a symbol, or a base of 0 or 1: no eager blow-up
    digits_log = exp_log + math.log10(max(base_log, 1e-12))  # log10(exponent × log10(base))
    if digits_log > math.log10(MAX_DIGITS_OF_RESULT):
        return f"a power with about 10^{min(digits_log, 1e9):.0f} digits ({base[:20]}^{exponent[:20]})"
    return None


def _factorial_refusal(text: str, at: int) -> str | None:
    operand = _operand_before(text, at + 1 if at + 1 < len(text) and text[at + 1] == "!" else at)
    bound = _log10_bound(operand)
    if bound is not None and bound > math.log10(MAX_FACTORIAL):
        return f"a factorial of about 10^{min(bound, 1e9):.0f} ({operand[:20]}!)"
    return None


def _operand_before(text: str, at: int) -> str:
    """The group or number just before position ``at``: ``{..}``, ``(..)``, digits, or one symbol."""
    j = at - 1
    while j >= 0 and text[j] == " ":
        j -= 1
    if j < 0:
        return ""
    if text[j] in ")}]":
        depth, k = 0, j
        while k >= 0:
            depth += (text[k] in ")}]") - (text[k] in "({[")
            if depth == 0:
                return text[k + 1:j]
            k -= 1
        return text[:j]
    k = j
    while k >= 0 and (text[k].isdigit() or text[k] == "."):
        k -= 1
    return text[k + 1:j + 1] if k < j else text[j]


def _exponent_after(text: str, at: int) -> str:
    """The exponent of the ``^`` at ``at``: a braced group, else a number or one character; a chain of
    unbraced powers (``9^9^9``) is read as a tower, as the parsers do."""
    j = at + 1
    while j < len(text) and text[j] == " ":
        j += 1
    if j >= len(text):
        return ""
    if text[j] in "{(":
        close = {"{": "}", "(": ")"}[text[j]]
        depth, k = 0, j
        while k < len(text):
            depth += (text[k] == text[j]) - (text[k] == close)
            if depth == 0:
                break
            k += 1
        end = k + 1
    else:
        k = j
        while k < len(text) and (text[k].isdigit() or text[k] == "."):
            k += 1
        end = max(k, j + 1)
    exponent = text[j:end]
    rest = text[end:].lstrip(" ")
    if rest.startswith("^"):  # 9^9^9: the exponent is itself a power
        exponent = exponent + "^" + _exponent_after(rest, 0)
    return exponent


def _log10_bound(expr: str) -> float | None:
    """An upper bound of log10|value| of a purely numeric expression written with digits, + - * / ^ ! and
    groups; None when it has a symbol (no eager evaluation) or cannot be read. Can be ``inf``."""
    e = expr.strip().strip("{}()").strip()
    if not e:
        return None
    e = re.sub(r"\\(?:cdot|times|left|right)", "*", e)
    if re.search(r"[A-Za-z]", e.replace("e+", "").replace("e-", "")):
        return None
    if re.fullmatch(r"\d+(?:\.\d+)?", e):
        value = float(e) if len(e) < 300 else math.inf
        return math.log10(value) if value > 0 else -math.inf
    if "^" in e:
        i = e.index("^")
        base = _log10_bound(_operand_before(e, i))
        power = _log10_bound(_exponent_after(e, i))
        if base is None or power is None:
            return None
        if power > 300:
            return math.inf if base > 0 else 0.0
        return max(base, 0.0) * 10 ** power if base > 0 else 0.0
    if e.endswith("!"):
        inner = _log10_bound(e[:-1])
        if inner is None:
            return None
        n = 10 ** inner if inner < 300 else math.inf
        return n * math.log10(max(n, 2)) if math.isfinite(n) else math.inf
    numbers = re.findall(r"\d+(?:\.\d+)?", e)
    if not numbers:
        return None
    # sums and products of these numbers are at most their product (each >= 1) times their count
    return sum(math.log10(max(float(n), 1.0)) for n in numbers) + math.log10(len(numbers))
