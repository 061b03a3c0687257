"""Exact values of plain numbers, and their comparison (pure, bounded: no input makes this slow or raise).

A number here is what a normalised answer is when it is nothing else: an integer or decimal, ``a/b`` or
``\\frac{a}{b}``, scientific notation (``1.5e3``, ``1.5 \\times 10^{3}``), optionally ending in ``%``.
Values are exact ``Fraction``s while they stay small (at most ``MAX_DIGITS`` digits and ``|exponent| <=
MAX_EXPONENT``); beyond that a number is kept as its canonical decimal (sign, digits, exponent), which
compares exactly without ever being expanded, so ``1e100000000`` or a 100,000-digit integer costs
microseconds and never trips Python's limit on integer-string conversion.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_DIGITS = 4000  # below Python's 4,300-digit int <-> str limit
MAX_EXPONENT = 4000

_DECIMAL = re.compile(r"^(-?)(\d*)(?:\.(\d*))?(?:[eE]([-+]?\d+))?$")
_SCI_TIMES = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|\*|×|x)\s*10\s*\^\s*\{?\s*([-+]?\d+)\s*\}?$")
_FRAC = re.compile(r"^(-?)\\frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(-?\d+)\s*\}$|^(-?)\\frac(\d)(\d)$|^(-?\d+)\s*/\s*(-?\d+)$")


@dataclass(frozen=True)
class Number:
    value: Fraction | None  # exact, when small enough
    big: tuple[int, str, int] | None  # (sign, significant digits without trailing zeros, exponent) otherwise
    decimal_places: int  # digits written after a decimal point (0 for integers and fractions)
    percent: bool  # written with a trailing %
    fraction: bool = False  # written as a/b or \\frac{a}{b}

    @property
    def terminating(self) -> bool:
        """True when some finite decimal equals the value (its denominator has only 2s and 5s)."""
        if self.value is None:
            return True
        d = self.value.denominator
        for p in (2, 5):
            while d % p == 0:
                d //= p
        return d == 1


def parse_number(text: str) -> Number | None:
    s = text.replace(" ", "")
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    if not s or len(s) > 3 * MAX_DIGITS:
        return _big_decimal(s, percent) if s and len(s) < 2_000_000 else None
    m = _DECIMAL.match(s)
    if m and (m.group(2) or m.group(3)):
        return _decimal(m.group(1), m.group(2), m.group(3) or "", int(m.group(4) or 0) if _small_exp(m.group(4)) else None,
                        s, percent)
    m = _SCI_TIMES.match(text.strip().rstrip("%").strip())
    if m:
        dm = _DECIMAL.match(m.group(1))
        exp = int(m.group(2)) if _small_exp(m.group(2)) else None
        return _decimal(dm.group(1), dm.group(2), dm.group(3) or "", exp, m.group(1) + "e" + m.group(2), percent)
    m = _FRAC.match(s)
    if m:
        groups = [g for g in m.groups() if g is not None]
        sign = groups[0] if len(groups) == 3 else ""
        num, den = groups[-2:]
        if len(num) + len(den) > MAX_DIGITS or int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return Number(-value if sign else value, None, 0, percent, fraction=True)
    return None


def _small_exp(exp: str | None) -> bool:
    return exp is None or len(exp.lstrip("+-")) <= 5 and abs(int(exp)) <= MAX_EXPONENT


def _decimal(sign: str, whole: str, frac: str, exp: int | None, raw: str, percent: bool) -> Number:
    if exp is None or len(whole) + len(frac) > MAX_DIGITS:
        return _big_decimal(raw, percent)
    value = Fraction(int(whole + frac or "0"), 10 ** len(frac)) * Fraction(10) ** exp
    return Number(-value if sign else value, None, max(0, len(frac) - exp), percent)


def _big_decimal(raw: str, percent: bool) -> Number | None:
    """Canonical (sign, digits, exponent) of a decimal too large to expand; None if it is not a decimal."""
    m = _DECIMAL.match(raw)
    if not m or not (m.group(2) or m.group(3)):
        return None
    whole, frac, exp_text = m.group(2), m.group(3) or "", m.group(4) or "0"
    if len(exp_text.lstrip("+-")) > 12:
        return None  # an exponent of more than a trillion is not a number anyone means
    digits = (whole + frac).lstrip("0")
    stripped = digits.rstrip("0")
    exp = int(exp_text) - len(frac) + len(digits) - len(stripped)
    places = max(0, len(frac) - int(exp_text))
    if not stripped:
        return Number(Fraction(0), None, places, percent)
    sign = -1 if m.group(1) else 1
    if len(stripped) <= MAX_DIGITS and abs(exp) <= MAX_EXPONENT:  # long to write, small in value: 0.5000...0
        return Number(sign * Fraction(int(stripped)) * Fraction(10) ** exp, None, places, percent)
    return Number(None, (sign, stripped, exp), places, percent)


def numbers_equal(a: Number, b: Number, percent_policy: str, rel_tol: float) -> tuple[bool, str]:
    """Exact comparison, with three documented exceptions: the percent policy, and ``rel_tol`` between a
    finite decimal and a value no finite decimal equals (``0.333333`` vs ``1/3``)."""
    for x, y, how in _readings(a, b, percent_policy):
        if _same(x, y, rel_tol):
            return True, how
    return False, "numbers differ"


def _readings(a: Number, b: Number, policy: str):
    yield _scaled(a), _scaled(b), "numeric match"
    bare = b if a.percent else a
    if policy == "value_or_bare" and a.percent != b.percent and not bare.fraction:
        # "50%" against a bare "50" written as a number: golds often drop the sign. A fraction on the
        # other side is a value, not a dropped sign (0.5% is not 1/2). Named policy: config.PERCENT_POLICIES.
        yield _unscaled(a), _unscaled(b), "numeric match (percent sign on one side only)"


def _scaled(n: Number) -> Number:
    if not n.percent:
        return n
    if n.value is not None:
        return Number(n.value / 100, None, n.decimal_places + 2, False, n.fraction)
    sign, digits, exp = n.big
    return Number(None, (sign, digits, exp - 2), n.decimal_places + 2, False, n.fraction)


def _unscaled(n: Number) -> Number:
    return Number(n.value, n.big, n.decimal_places, False, n.fraction)


def _same(a: Number, b: Number, rel_tol: float) -> bool:
    if a.value is None or b.value is None:
        return a.big is not None and b.big is not None and a.big == b.big  # a big value never equals a small one
    if a.value == b.value:
        return True
    # One side a finite decimal, the other a value no finite decimal equals: the decimal is an approximation.
    approx = (a.decimal_places > 0 and not b.terminating) or (b.decimal_places > 0 and not a.terminating)
    if approx and rel_tol > 0:
        scale = max(abs(a.value), abs(b.value))
        return abs(a.value - b.value) <= scale * Fraction(str(rel_tol))
    return False
