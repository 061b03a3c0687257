"""The sympy side of equivalence: parse two answers and compare them. Runs where it can be killed
(``sandbox``): nothing here has a time limit of its own.

- LaTeX goes through math-verify's parser (latex2sympy2). Text without a backslash is plain maths, read the
  way people type it (``pi``, ``sqrt(2)``, ``exp(-x)``, ``2+3i``, ``x**2``) by rewriting it as LaTeX first; never
  through ``eval``.
- ``i`` is the imaginary unit when the answers read as complex numbers (math-verify's own test), on both
  sides alike.
- Two numbers (no free symbols) are compared exactly: equal rationals, else by value at 50 significant digits
  (equal below a relative difference of 1e-40, different above 1e-30), and only in between by ``simplify``.
  A float on one side is an approximation, equal within ``rel_tol``. math-verify's own numeric check rounds to 6 decimals absolute,
  which calls 1/2004! and 1/2006! equal; it is used only for what is not a plain number (sets, intervals,
  matrices, relations).
- Two equations are equal when one is a non-zero constant multiple of the other (``y = 3x - 4`` and
  ``3x - y = 4``).
"""
from __future__ import annotations

import logging
import re

_FUNCS = ("arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "sin", "cos", "tan", "sec", "csc", "cot",
          "ln", "log")
_PLAIN_FUNC = re.compile(r"\b(sqrt|exp|abs|" + "|".join(_FUNCS) + r")\s*\(")
_IMAGINARY = re.compile(r"(?<![A-Za-z\\_])i(?![A-Za-z])")


class _QuietTimeoutWarning(logging.Filter):
    # We call math-verify with its own signal-based limit off, on purpose: ours is the process around it.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


def _quiet() -> None:
    for name in ("math_verify.parser", "math_verify.grader"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietTimeoutWarning) for f in logger.filters):
            logger.addFilter(_QuietTimeoutWarning())


def warm_up() -> None:
    """Import and exercise the parser once (a fresh worker pays ~1 s of imports here, not in a verdict).
    Called only in cotbench's own worker processes (``_worker.serve``): the logging filter it adds to
    math-verify's loggers never reaches the caller's process."""
    _quiet()
    symbolic_equal("\\frac{1}{2}", "0.5", 1e-6)


def plain_to_latex(s: str) -> str:
    """``2*pi*sqrt(3)/exp(x)`` -> ``2\\cdot\\pi\\cdot\\sqrt{3}/e^{x}`` for text typed without LaTeX."""
    out, i = [], 0
    s = s.replace("**", "^")
    while i < len(s):
        m = _PLAIN_FUNC.match(s, i) if (i == 0 or not s[i - 1].isalpha()) else None
        if m:
            close = _matching_paren(s, m.end() - 1)
            if close < 0:
                return s  # unbalanced: leave it for the parser to refuse
            inner = plain_to_latex(s[m.end():close])
            name = m.group(1)
            out.append({"sqrt": f"\\sqrt{{{inner}}}", "exp": f"e^{{{inner}}}", "abs": f"\\left|{inner}\\right|"}
                       .get(name, f"\\{name}\\left({inner}\\right)"))
            i = close + 1
            continue
        word = re.match(r"pi\b|infinity\b|inf\b|oo\b", s[i:]) if (i == 0 or not s[i - 1].isalpha()) else None
        if word:
            out.append("\\pi " if word.group(0) == "pi" else "\\infty ")
            i += len(word.group(0))
            continue
        if s[i] == "*":
            out.append("\\cdot ")
        elif s[i] == "^" and i + 1 < len(s) and s[i + 1] == "(":
            close = _matching_paren(s, i + 1)
            if close > 0:
                out.append("^{" + plain_to_latex(s[i + 2:close]) + "}")
                i = close + 1
                continue
            out.append("^")
        else:
            out.append(s[i])
        i += 1
    return "".join(out)


def _matching_paren(s: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(s)):
        depth += (s[j] == "(") - (s[j] == ")")
        if depth == 0:
            return j
    return -1


_JOINED = re.compile(r"\s+(or|and)\s+|\\text\{\s*(or|and)\s*\}|\\(lor|vee|land|wedge)(?![A-Za-z])|,")


def parse_math(s: str):
    """The sympy object an answer denotes, or None when neither parser reads it."""
    joined = _relations_as_set(s)
    if joined is not None:
        return joined
    return _parse_one(s)


def _relations_as_set(s: str):
    """``x < -2 or x > 2`` -> the set it describes (a union; ``and``: an intersection); None if not that."""
    if not re.search(r"[<>]|\\[lg]eq?(?![A-Za-z])", s):
        return None
    pieces, ops, last = [], [], 0
    for m in _JOINED.finditer(s):
        pieces.append(s[last:m.start()])
        word = next(g for g in m.groups() if g) if m.group(0) != "," else "or"
        ops.append("and" if word in ("and", "land", "wedge") else "or")
        last = m.end()
    pieces.append(s[last:])
    if len(pieces) < 2:
        return None
    import sympy

    sets = []
    for piece in pieces:
        rel = _parse_one(piece.strip())
        if rel is None or not isinstance(rel, (sympy.core.relational.Relational, sympy.And, sympy.Or)) \
                or len(rel.free_symbols) != 1:
            return None
        sets.append(rel.as_set())
    out = sets[0]
    for op, nxt in zip(ops, sets[1:]):
        out = sympy.Intersection(out, nxt) if op == "and" else sympy.Union(out, nxt)
    return out


def _parse_one(s: str):
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = s if ("\\" in s or "$" in s) else plain_to_latex(s)
    # math-verify's own unit stripping is off: it takes letters after a number for units ("4ab" -> 4);
    # ours (normalize.py) strips only known units and nouns.
    latex = LatexExtractionConfig(boxed_match_priority=0, normalization_config=NormalizationConfig(
        basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="all", equations=False))
    configs = [latex, ExprExtractionConfig()]
    for candidate in (f"${text}$", f"\\boxed{{{text}}}", text):
        parsed = parse(candidate, extraction_config=configs, parsing_timeout=None)
        if parsed:
            return parsed[0]
    return None


def _as_complex(expr, use: bool):
    if not use:
        return expr
    import sympy

    try:  # by name: the parser's symbol carries assumptions, so Symbol("i") would not match it
        return expr.subs({s: sympy.I for s in getattr(expr, "free_symbols", ()) if s.name == "i"})
    except Exception:
        return expr


class ComparisonFault(Exception):
    """A check raised while comparing two parsed values, and no other check found them equal: the grader
    cannot say, so the verdict is an ``error`` (kept out of accuracy), never a wrong answer."""


def symbolic_equal(pred: str, gold: str, rel_tol: float) -> tuple[bool, str]:
    """(verdict, how) for two normalised answers; ``ComparisonFault`` where the grader itself failed."""
    from math_verify.grader import should_treat_as_complex

    g, p = parse_math(gold), parse_math(pred)
    if p is None:  # the model's fault: what it wrote is no maths either parser reads
        return False, "unreadable: the answer could not be parsed as maths"
    if g is None:
        return False, "the gold could not be parsed as maths, and the texts differ"
    complex_i = (should_treat_as_complex(gold) or should_treat_as_complex(pred)) and bool(
        _IMAGINARY.search(gold) or _IMAGINARY.search(pred))
    g, p = _as_complex(g, complex_i), _as_complex(p, complex_i)
    return compare(g, p, rel_tol)


def compare(g, p, rel_tol: float) -> tuple[bool, str]:
    """Each check in turn, cheapest first; the first that finds the two equal decides. A check that raises
    is noted: if no other check finds them equal, the grader could not decide (``ComparisonFault``)."""
    import sympy
    from math_verify import verify

    if _is_scalar_number(g) and _is_scalar_number(p):
        return numbers_equal(g, p, rel_tol)
    faults: list[str] = []
    g, p = _relation_as_set_beside(g, p), _relation_as_set_beside(p, g)
    if isinstance(g, sympy.Set) and isinstance(p, sympy.Set):
        with _noting(faults, "set difference"):
            if g == p or (sympy.Complement(g, p) == sympy.EmptySet and sympy.Complement(p, g) == sympy.EmptySet):
                return True, "same set (sympy)"
    if _is_expression(g) and _is_expression(p):
        with _noting(faults, "simplify"):  # math-verify compares a lone symbol by name only: x vs 2·x/2 fails
            if sympy.simplify(g - p) == 0:
                return True, "same expression (sympy)"
    if isinstance(g, sympy.Eq) and isinstance(p, sympy.Eq):
        with _noting(faults, "equations"):
            if _equations_equal(g, p):
                return True, "same equation (sympy)"
    with _noting(faults, "math-verify"):
        if verify(g, p, timeout_seconds=None, raise_on_error=True):
            return True, "symbolic match (math-verify)"
    if faults:
        raise ComparisonFault("; ".join(faults))
    return False, "not equivalent"


class _noting:
    """A check's exception noted in ``faults`` instead of raised, so the other checks still run. Only
    ``Exception``: the deadline's alarm (a ``BaseException``) always goes through."""

    def __init__(self, faults: list[str], check: str):
        self.faults, self.check = faults, check

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is not None and issubclass(kind, Exception):
            self.faults.append(f"{self.check} raised {kind.__name__}: {str(exc)[:120]}")
            return True
        return False


def _relation_as_set_beside(x, other):
    """An inequality in one variable, read as the set it describes when the other side is a set
    (``x \\geq 2`` and ``[2, \\infty)``)."""
    import sympy

    if isinstance(other, sympy.Set) and isinstance(x, (sympy.core.relational.Relational, sympy.And, sympy.Or)) \
            and not isinstance(x, sympy.Eq) and len(x.free_symbols) == 1:
        try:
            return x.as_set()
        except Exception:
            return x
    return x


def _is_expression(x) -> bool:
    import sympy

    return (isinstance(x, sympy.Expr) and not isinstance(x, (sympy.MatrixBase, sympy.MatrixExpr))
            and not x.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan))


def _is_scalar_number(x) -> bool:
    import sympy

    return (isinstance(x, sympy.Expr) and not isinstance(x, (sympy.MatrixBase, sympy.MatrixExpr))
            and not x.free_symbols and x.is_number)


def numbers_equal(g, p, rel_tol: float) -> tuple[bool, str]:
    """Two numbers without free symbols. Exact closed forms are decided by their values at 50 significant
    digits first (mpmath, through sympy): equal below a relative difference of 1e-40, different above 1e-30,
    and only in between by ``simplify`` (which can take seconds on nested radicals and fractional powers). A
    float on either side is an approximation: equal within ``rel_tol``."""
    import sympy

    if g == p:
        return True, "same number (sympy)"
    if g.is_Rational and p.is_Rational:
        return False, "numbers differ (exact)"
    if g.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan) or p.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        return False, "numbers differ (infinite)"  # oo - (-oo) is no finite difference to measure
    approximate = g.has(sympy.Float) or p.has(sympy.Float)
    faults: list[str] = []
    with _noting(faults, "numeric evaluation"):
        gv, pv = sympy.N(g, 50), sympy.N(p, 50)
        diff, scale = abs(gv - pv), max(abs(gv), abs(pv))
        if diff.is_number and scale.is_number and not diff.has(sympy.nan, sympy.zoo):
            if scale == 0:
                return True, "both zero"
            if approximate:
                if bool(diff <= sympy.Rational(str(rel_tol)) * scale):
                    return True, "numeric match within relative tolerance"
                return False, "numbers differ"
            if bool(diff <= sympy.Float("1e-40", 50) * scale):
                return True, "same value to 40 significant digits [exact closed forms and relative tolerance]"
            if bool(diff > sympy.Float("1e-30", 50) * scale):
                return False, "numbers differ at 50 significant digits [exact closed forms and relative tolerance]"
    if not approximate:  # too close to call by value, or not evaluable: exactly, if sympy can
        with _noting(faults, "simplify"):
            if sympy.simplify(g - p) == 0:
                return True, "same closed form (sympy)"
            if not faults:
                return False, "numbers differ"
    if faults:
        raise ComparisonFault("; ".join(faults))
    return False, "numbers differ"


def _equations_equal(g, p) -> bool:
    import sympy

    a, b = g.lhs - g.rhs, p.lhs - p.rhs
    if b == 0 or a == 0:
        return a == b
    ratio = sympy.simplify(a / b)
    return bool(ratio.is_number and ratio != 0 and not ratio.free_symbols)
