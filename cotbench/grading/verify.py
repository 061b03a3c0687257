"""Equivalence of a prediction and a gold answer, cheapest check first:

1. normalise both (``normalize``);
2. several answers on either side (``2, 3``, ``x = 1 or x = 2``, several gold boxes) are compared as sets;
3. exact numbers (``numbers``): decisive when both sides are plain numbers;
4. the same text, ignoring spaces and case;
5. equations: both equations -> compared as equations; one equation whose left side names a value
   (``x = 5``, ``f(x) = ...``, ``5 \\times 6 = 30``) -> its last right-hand side against the other side;
   any other equation against a non-equation -> not equal (``2x + z = 1`` is not ``1``);
6. sympy (``symbolic``), unless ``guard`` refuses the work, run by the caller's ``runner`` within the
   verdict's deadline.

Pure apart from the time limit: the same pair under the same config always gets the same verdict.
"""
from __future__ import annotations

import re
from typing import Callable

from cotbench.grading.config import GradingConfig
from cotbench.grading.guard import symbolic_refusal
from cotbench.grading.normalize import normalize
from cotbench.grading.numbers import numbers_equal, parse_number
from cotbench.grading.deadline import Deadline
from cotbench.grading.symbolic import symbolic_equal

Runner = Callable[[Callable, tuple, "float | None"], object]
_RELATION = re.compile(r"\\(?:le|ge|leq|geq|neq|ne|lt|gt|approx|sim|equiv|in|subset|subseteq)(?![A-Za-z])|[<>≤≥≠]")
_SPLIT_WORDS = re.compile(r"\s+(?:and|or)\s+|\s*(?<!\\)(?:\\text\{\s*(?:and|or)\s*\})\s*|\s*;\s*", re.IGNORECASE)
_LEADING_WORDS = re.compile(r"^(?:either|both|maybe|perhaps)\s+", re.IGNORECASE)


class Trace(list):
    """Steps of one verdict, for ``cotbench grade --explain``."""

    def add(self, step: str) -> None:
        self.append(step)


def equivalent(pred: str, gold: str, config: GradingConfig, runner: Runner, deadline: Deadline,
               trace: Trace | None = None) -> tuple[bool, str]:
    """(verdict, reason). Raises ``GradingTimeout`` when the deadline passes; nothing else."""
    p, g = normalize(pred, config.strip_units), normalize(gold, config.strip_units)
    if trace is not None:
        trace.add(f"normalised: answer {p!r}, gold {g!r}")
    if not p:
        return False, "empty answer"
    p, g = _assignments_as_tuple(p, g), _assignments_as_tuple(g, p)
    if trace is not None and (p, g) != (normalize(pred, config.strip_units), normalize(gold, config.strip_units)):
        trace.add(f"named values read as a tuple: answer {p!r}, gold {g!r} [labelled answers]")
    p_items, g_items = split_items(p), split_items(g)
    if len(p_items) > 1 or len(g_items) > 1:
        return _sets_equal(p_items, g_items, config, runner, deadline, trace)
    return _one(p, g, config, runner, deadline, trace)


def split_items(s: str) -> list[str]:
    """Top-level items of a list answer: commas, semicolons, "and"/"or" outside any bracket. Brackets keep
    tuples and intervals whole: ``(1, 2)`` is one item, ``1, 2`` two. A set literal ``\\{1, 2\\}`` is its items
    (a set, as a list answer is), and ``a \\pm b`` is the two items ``a + b`` and ``a - b``."""
    if len(s) > 2000:
        return [s]
    set_literal = re.fullmatch(r"\\\{(.*)\\\}", s.strip())
    if set_literal and _balanced(set_literal.group(1)):
        s = set_literal.group(1)
    parts, depth, last = [], 0, 0
    pieces = []
    if re.search(r"[<>≤≥]|\\[lg]eq?(?![A-Za-z])", s):
        return [s]  # inequalities joined by commas / "or" describe one set
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0 and not s.startswith("\\,", i - 1):
            pieces.append(s[last:i])
            last = i + 1
    pieces.append(s[last:])
    for piece in pieces:
        parts += _split_words_top_level(piece)
    items = [_LEADING_WORDS.sub("", x.strip()).strip() for x in parts]
    items = [y for x in items if x for y in _plus_minus(x)]
    return items if len(items) > 1 else [s]


def _balanced(s: str) -> bool:
    depth = 0
    for ch in s:
        depth += (ch in "([{") - (ch in ")]}")
        if depth < 0:
            return False
    return depth == 0


def _plus_minus(item: str) -> list[str]:
    """``1 \\pm \\sqrt{2}`` -> ``1 + \\sqrt{2}``, ``1 - \\sqrt{2}``; ``x = \\pm 3`` -> ``x = +3``, ``x = -3``."""
    marks = [m.start() for m in re.finditer(r"\\pm(?![A-Za-z])|±", item)]
    if len(marks) != 1 or not _balanced(item[:marks[0]]):
        return [item]
    at = marks[0]
    width = 1 if item[at] == "±" else 3
    left, right = item[:at], item[at + width:]
    return [f"{left}+{right}".strip(), f"{left}-{right}".strip()]


def _split_words_top_level(piece: str) -> list[str]:
    if _RELATION.search(piece) and re.search(r"[<>≤≥]|\\[lg]eq?(?![A-Za-z])", piece):
        return [piece]  # "x < -2 or x > 2" is one set (a union), not two answers
    out, last = [], 0
    for m in _SPLIT_WORDS.finditer(piece):
        before = piece[:m.start()]
        if before.count("(") + before.count("[") + before.count("{") == before.count(")") + before.count("]") + before.count("}"):
            out.append(piece[last:m.start()])
            last = m.end()
    out.append(piece[last:])
    return out


def _sets_equal(p_items, g_items, config, runner, deadline, trace) -> tuple[bool, str]:
    p_distinct = _distinct(p_items, config, runner, deadline)
    g_distinct = _distinct(g_items, config, runner, deadline)
    if trace is not None:
        trace.add(f"compared as sets: answer {p_distinct}, gold {g_distinct}")
    if len(p_distinct) != len(g_distinct):
        if len(g_distinct) == 1:
            return False, f"several answers offered ({len(p_distinct)}), one expected"
        return False, f"{len(p_distinct)} answers, {len(g_distinct)} expected"
    unmatched = list(g_distinct)
    for item in p_distinct:
        hit = next((g for g in unmatched if _one(item, g, config, runner, deadline, None)[0]), None)
        if hit is None:
            return False, f"answer {item!r} matches no gold item"
        unmatched.remove(hit)
    return True, f"same set of {len(g_distinct)} answers [answers given in pieces]"


def _distinct(items, config, runner, deadline) -> list[str]:
    kept: list[str] = []
    for item in items:
        if not any(item == k or _one(item, k, config, runner, deadline, None)[0] for k in kept):
            kept.append(item)
    return kept


def _one(p: str, g: str, config: GradingConfig, runner: Runner, deadline: Deadline,
         trace: Trace | None) -> tuple[bool, str]:
    pn, gn = parse_number(p), parse_number(g)
    if pn is not None and gn is not None:
        return _say(trace, numbers_equal(pn, gn, config.percent, config.rel_tol), "exact numbers")
    if _text_key(p) == _text_key(g):
        return _say(trace, (True, "same text after normalisation"), "text")
    kinds = None if _is_equation(p) or _is_equation(g) else _times_or_ratios(p, g)  # a label first: AB : BC = 2 : 9
    if kinds is not None:
        return _say(trace, (kinds[0], kinds[1] + " [times and ratios are their own kinds of value]"), "kinds")
    vectors = _vectors(p, g)
    if vectors is not None:
        same, why = _termwise(*vectors, config, runner, deadline)
        return _say(trace, (same, why + " [notation]"), "vectors")
    p_eq, g_eq = _is_equation(p), _is_equation(g)
    if p_eq != g_eq:
        equation, other = (p, g) if p_eq else (g, p)
        if not _names_a_value(equation):
            return _say(trace, (False, "an equation against a value"), "equations")
        rhs = _last_rhs(equation)
        args = (rhs, other) if p_eq else (other, rhs)
        verdict, why = _one(normalize(args[0], config.strip_units), normalize(args[1], config.strip_units),
                            config, runner, deadline, trace)
        return (verdict, f"{why} (right-hand side of '=') [labelled answers]") if verdict else (False, why)
    if not config.symbolic:
        return _say(trace, (False, "not the same text (symbolic checks off)"), "text")
    refusal = symbolic_refusal(p, config.max_symbolic_chars) or symbolic_refusal(g, config.max_symbolic_chars)
    if refusal:
        return _say(trace, (False, f"not the same text, and no symbolic check: {refusal}"), "guard")
    for variant_p, variant_g, note in _percent_variants(p, g, config.percent):
        # a crash (SymbolicCrash) or a fault while comparing (ComparisonFault) is the grader's, not the answer's:
        # it propagates, and the verdict becomes an error, kept out of accuracy
        verdict, why = runner(symbolic_equal, (variant_p, variant_g, config.rel_tol), deadline.remaining())
        if verdict:
            return _say(trace, (True, why + note), "symbolic")
    return _say(trace, (False, why), "symbolic")


def _percent_variants(p: str, g: str, policy: str):
    """A trailing % in a symbolic answer: ×1/100; under ``value_or_bare`` also the bare value."""
    def scaled(s):
        return f"\\frac{{{s[:-1]}}}{{100}}" if s.endswith("%") else s

    yield scaled(p), scaled(g), ""
    if policy == "value_or_bare" and p.endswith("%") != g.endswith("%"):
        yield p.rstrip("%"), g.rstrip("%"), " (percent sign on one side only)"


def _say(trace: Trace | None, result: tuple[bool, str], check: str) -> tuple[bool, str]:
    if trace is not None:
        trace.add(f"{check}: {'equal' if result[0] else 'not equal'} ({result[1]})")
    return result


def _text_key(s: str) -> str:
    return re.sub(r"\s+", "", s).lower()


def _is_equation(s: str) -> bool:
    """One '=' at least, outside a relation like ``\\leq`` (which is not an equation)."""
    return "=" in s.replace("\\neq", "").replace("!=", "").replace("<=", "").replace(">=", "") and not _RELATION.search(s)


_NAME = r"\\?[A-Za-z]+(?:_\{?\w+\}?)?'*"
_LABEL = re.compile(  # what a label may be: a name, a function of names, |name| or a norm, a tuple or ratio of them
    rf"{_NAME}(?:\(\s*-?[A-Za-z0-9.]+(?:\s*,\s*-?[A-Za-z0-9.]+)*\s*\))?|\\(?:m\\)?(?:angle|measuredangle)\s*[A-Z]{{1,3}}|\\(?:overline|widehat)\{{[A-Z]{{1,3}}\}}|\|\s*{_NAME}\s*\||\\\|\s*{_NAME}\s*\\\|"
    rf"|\\[lr]?[vV]ert\s*{_NAME}\s*\\[lr]?[vV]ert|\(\s*{_NAME}(?:\s*,\s*{_NAME})+\s*\)|{_NAME}(?:\s*:\s*{_NAME})+")


def _names_a_value(equation: str) -> bool:
    """True for "x = ...", "f(x) = ...", "a_1 = ...", "(a, b) = ...", "AB : BC = ...", "|z| = ...", or
    "5 \\times 6 = ...": the left side labels the value or is pure arithmetic. False for "2x + z = 1", where the
    right side alone is not the answer."""
    lhs = equation.split("=", 1)[0].strip()
    if _LABEL.fullmatch(lhs):
        return True
    return not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", lhs))


_ASSIGNMENT = re.compile(rf"\s*({_NAME})\s*=\s*([^=]+?)\s*")


def _assignments_as_tuple(x: str, other: str) -> str:
    """``a=5; b=-2`` against a tuple ``(5, -2)``: the values in the order given, as a tuple; anything else as
    it is. The names must differ (``x = 1 or x = 2`` is a list of answers, not a tuple)."""
    if not (other.startswith("(") and other.endswith(")")) or "=" not in x:
        return x
    pieces = re.split(r";|,|\s+and\s+|\\text\{\s*and\s*\}", x)
    found = [_ASSIGNMENT.fullmatch(piece) for piece in pieces]
    if len(found) < 2 or not all(found) or len({m.group(1) for m in found}) != len(found):
        return x
    if len(split_items(other[1:-1])) != len(found):
        return x
    return "(" + ", ".join(m.group(2) for m in found) + ")"


_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(?:(?i:([ap])\.?\s?m)\.?)?")
_TERM = r"-?\d+(?:\.\d+)?"
_RATIO = re.compile(rf"({_TERM}(?:\s*:\s*{_TERM})+)(\s*:\s*(?:\\[lc]?dots|\.\.\.|…))?")


def _times_or_ratios(p: str, g: str) -> tuple[bool, str] | None:
    """Clock times and ratios are values of their own: never a division or a number. Two times are equal at
    the same minute of the day (``19:05`` is ``7:05 p.m.``; a time without a.m./p.m. up to 12:59 may be
    either); two ratios term by term; a time or ratio against anything else is not equal. None: neither side
    is one."""
    pt, gt = _TIME.fullmatch(p), _TIME.fullmatch(g)
    pr, gr = _RATIO.fullmatch(p), _RATIO.fullmatch(g)
    if not (pt or gt or pr or gr):
        return None
    if pt and gt and (pt.group(4) or gt.group(4) or not (pr and gr)):
        return (True, "the same time") if _same_time(pt, gt) else (False, "different times")
    if pr and gr:
        pterms, gterms = re.split(r"\s*:\s*", pr.group(1)), re.split(r"\s*:\s*", gr.group(1))
        same = (len(pterms) == len(gterms) and bool(pr.group(2)) == bool(gr.group(2))
                and all(numbers_equal(parse_number(a), parse_number(b), "value", 0.0)[0] for a, b in zip(pterms, gterms)))
        return (True, "the same ratio") if same else (False, "different ratios")
    return False, "a time or ratio against another kind of value"


def _same_time(a: re.Match, b: re.Match) -> bool:
    ha, hb = int(a.group(1)), int(b.group(1))
    if a.group(2) != b.group(2) or (a.group(3) or "00") != (b.group(3) or "00"):
        return False
    marks = (a.group(4) or "").lower(), (b.group(4) or "").lower()
    if all(marks):
        return ha % 12 + 12 * (marks[0] == "p") == hb % 12 + 12 * (marks[1] == "p")
    if not any(marks):
        return ha == hb
    marked, mark, bare = (ha, marks[0], hb) if marks[0] else (hb, marks[1], ha)
    hour24 = marked % 12 + 12 * (mark == "p")
    return bare == hour24 or (1 <= bare <= 12 and bare % 12 == marked % 12)


_MATRIX = re.compile(r"\\begin\{([pbvBV]?matrix)\}(.*)\\end\{\1\}", re.DOTALL)


def _vectors(p: str, g: str) -> tuple[list[str], list[str]] | None:
    """A one-row or one-column matrix against a bracketed list of as many entries (``[1, 2, 3]`` and the
    column vector of 1, 2, 3): their entries, to compare in order. None otherwise."""
    pm, gm = _MATRIX.fullmatch(p.strip()), _MATRIX.fullmatch(g.strip())
    if bool(pm) == bool(gm):
        return None
    matrix, other = (pm, g) if pm else (gm, p)
    rows = [row.strip() for row in matrix.group(2).split("\\\\") if row.strip()]
    cells = [c.strip() for row in rows for c in row.split("&")]
    if len(rows) > 1 and len(cells) != len(rows):
        return None  # a matrix with rows and columns is no vector
    other = other.strip()
    if other.startswith("\\langle") and other.endswith("\\rangle"):
        inner = other[len("\\langle"):-len("\\rangle")]
    elif len(other) >= 2 and other[0] + other[-1] in ("()", "[]"):
        inner = other[1:-1]
    else:
        return None
    entries = split_items(inner)
    if len(entries) != len(cells) or len(cells) < 2:
        return None
    return (entries, cells) if pm is None else (cells, entries)


def _termwise(p_items, g_items, config, runner, deadline) -> tuple[bool, str]:
    for a, b in zip(p_items, g_items):
        if not _one(a, b, config, runner, deadline, None)[0]:
            return False, f"entry {a!r} differs from {b!r}"
    return True, "the same entries in the same order (a vector written another way)"


def _last_rhs(s: str) -> str:
    s = re.split(r"\\approx|≈", s)[0]
    return s.rsplit("=", 1)[1].strip() if "=" in s else s
