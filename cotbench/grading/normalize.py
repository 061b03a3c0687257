"""Answer normalisation before equivalence checking (pure string functions, linear time).

Each rule removes one way of writing the same value that the checks after it would not see through:
- spacing commands (``\\,`` ``\\!`` ``\\;`` ``\\quad`` ``~``), never touching a ``\\\\`` row break;
- ``\\dfrac``/``\\tfrac``/``\\cfrac``, ``\\left``/``\\right``, ``\\displaystyle``, a wrapping ``\\boxed{}`` or
  math delimiters;
- thousands separators (``1,000``, ``1{,}000``, ``1\\,000``, ``1 000``) and decimal commas (``1000,99``);
- currency signs; a percent sign is kept as a canonical trailing ``%`` (its meaning is the percent policy's);
- degree marks: stripped from a bare number (``90^\\circ``), turned into ``π/180`` inside a trigonometric
  expression (``\\sin(90^\\circ - x)``), stripped elsewhere (a list of angles);
- units: a ``\\text{...}`` word after a number, or a known unit or plain noun after a number (``10 cm^2``,
  ``18 eggs``); a single letter is never a unit (``2x``, ``3i`` and ``5n`` stay as they are);
- a choice letter's wrapper (``(B)``, ``\\text{(B)}``).

Rules that look at the end of an answer read a bounded suffix, so a 1 MB answer costs one pass.
"""
from __future__ import annotations

import re

# Markdown bold around an answer ("**72** dollars"), never a power between operands ("x**2").
_EMPHASIS = re.compile(r"(?<![\w)])\*\*|\*\*(?![\w(])")
_EMPTY_SET = re.compile(r"\\varnothing(?![A-Za-z])|∅|^\\\{\s*\\\}$|^\{\s*\}$")
_MIXED = re.compile(r"(?<![\d.^_{}A-Za-z])(\d+)\s*\\frac\s*(?:\{([^{}]*)\}\s*\{([^{}]*)\}|(\d)(\d))")
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![A-Za-z])|\\displaystyle")
_SPACING = re.compile(r"\\\\|\\[,!;: ]|\\q?quad(?![A-Za-z])|~")
_TEXT_CMD = re.compile(r"\\(?:text|textnormal|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_TRAILING_TEXT = re.compile(r"\\(?:text|textnormal|textrm|mbox|mathrm)\s*\{([^{}]*)\}\s*(?:\^\s*\{?\s*[23]\s*\}?|[²³])?\s*$")
_THOUSANDS = re.compile(r"^-?[1-9]\d{0,2}(?:([, ])\d{3})(?:\1\d{3})*(?:\.\d+)?$")
# "1,22", "1000,99", "0,111": a comma that cannot be a thousands separator is a decimal comma.
_DECIMAL_COMMA = re.compile(r"^-?(?:0,\d+|\d+,(?:\d{1,2}|\d{4,}))$")
_CHOICE = re.compile(r"^\(([A-Ja-j])\)$|^([A-J])\)?$")
_DEGREE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree(?![A-Za-z])")
_NUMBER_DEGREE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree(?![A-Za-z]))")
_TRIG = re.compile(r"\\?(?:arc)?(?:sin|cos|tan|sec|csc|cot)h?(?![a-z])")
_PERCENT_WORDS = re.compile(r"\s*(?:\\%|%|\\text\{\s*\\?%\s*\}|\bpercent\b|\\text\{\s*percent\s*\}|\bpct\b)\s*\.?$",
                            re.IGNORECASE)
_CURRENCY = re.compile(r"R\$|US\$|\\\$|\$|\\text\{\s*\\\$\s*\}|€|£|¥|\\euro(?![A-Za-z])|\\pounds(?![A-Za-z])")

# Unit words a number may carry. Multi-letter only: a single letter after a number is a variable.
UNITS = frozenset("""
mm cm dm km nm um μm mi yd ft in inch inches foot feet yard yards mile miles meter meters metre metres centimeter
centimeters centimetre centimetres millimeter millimeters kilometer kilometers kilometre kilometres
mg kg lb lbs oz ton tons tonne tonnes gram grams kilogram kilograms pound pounds ounce ounces
ml mL cl dl kl liter liters litre litres gallon gallons quart quarts pint pints cup cups tbsp tsp cc
sec secs second seconds min mins minute minutes hr hrs hour hours day days week weeks month months year years
yr yrs ms ns
mph kph kmh km/h m/s km/hr mi/h ft/s cm/s
dollar dollars cent cents usd eur euro euros yuan rmb yen pence
degree degrees deg rad radian radians
square sq cubic units unit
""".split())
_CONNECTORS = frozenset({"or", "and", "to", "of", "is", "are", "the", "a", "an", "not", "per", "mod", "pmod"})
_MATH_WORDS = frozenset({"sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "sqrt", "pi", "inf",
                         "infinity", "det", "max", "min", "lim", "mod", "gcd", "lcm", "abs", "arcsin", "arccos",
                         "arctan", "sinh", "cosh", "tanh", "cis"})
# A radical's argument without braces: "\\sqrt[4]x" is "\\sqrt[4]{x}" (LaTeX takes one token).
_BARE_RADICAND = re.compile(r"\\sqrt\s*\[([^\[\]{}]*)\]\s*(?!\{)(\\[A-Za-z]+|[A-Za-z0-9])")
# A repeating decimal: "0.\\overline{3}", "0.1\\overline{6}", "1.\\bar{36}".
# (bounded, and tried only where a digit run starts: linear on a 100k-digit answer)
_REPEATING = re.compile(r"(?<![\d.])(-?)(\d{0,30})\.(\d{0,30})\\(?:overline|bar|dot)\s*\{?\s*(\d{1,30})\s*\}?")
# A unit or counted noun in another script after a number: "3/4 升", "35 元", "12 個".
_CJK_TAIL = re.compile(r"\s*[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+\s*$")
# a.m. / p.m. written as text after a clock time: kept as a plain mark (never dropped as a unit)
_TIME_MARK = re.compile(r"(\d{1,2}:\d{2})\s*\\(?:text|mathrm|textrm|mbox)\s*\{\s*([apAP])\.?\s*[mM]\.?\s*\}")
_TAIL_WINDOW = 80  # units and text after a number live in the last few dozen characters


def normalize(answer: str, strip_units: bool = True) -> str:
    """Canonical text of an answer. Idempotent: normalize(normalize(x)) == normalize(x).

    >>> normalize("\\\\boxed{1{,}000\\\\text{ cm}^2}")
    '1000'
    >>> normalize("2x")
    '2x'
    """
    s = answer.replace("\x00", "").strip()
    s = _EMPHASIS.sub("", s).strip()
    for _ in range(3):  # a box in delimiters in a box: unwrap a few layers
        before = s
        s = _unwrap_boxed(s)
        s = strip_math_delimiters(s)
        if s == before:
            break
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = _SIZING.sub("", s)
    s = _SPACING.sub(_spacing, s)
    s = _EMPTY_SET.sub(r"\\emptyset", s)
    s = _before_approximation(s)
    s = s.replace("{,}", ",")  # LaTeX thousands separator 1{,}000
    s = _MIXED.sub(_mixed_number, s)
    s = _TIME_MARK.sub(lambda m: f"{m.group(1)} {m.group(2).lower()}m", s)
    s = _BARE_RADICAND.sub(r"\\sqrt[\1]{\2}", s)
    s = _REPEATING.sub(_repeating, s)
    s = s.strip().rstrip(".").strip()
    percent = False
    m = _PERCENT_WORDS.search(s[-_TAIL_WINDOW:])
    if m:
        percent, s = True, s[:len(s) - (len(s[-_TAIL_WINDOW:]) - m.start())].strip()
    s = _CURRENCY.sub("", s).strip()
    s = _degrees(s)
    if strip_units:
        s = _drop_units(s)
    s = _TEXT_CMD.sub(lambda t: t.group(1), s)
    s = s.strip().rstrip(".").strip()
    if _THOUSANDS.match(s):
        s = s.replace(",", "").replace(" ", "")
    elif _DECIMAL_COMMA.match(s):
        s = s.replace(",", ".")
    choice = _CHOICE.match(s)
    if choice:  # "(b)" and "B)" are choice B; a bare lower-case "e" stays Euler's number
        s = (choice.group(1) or choice.group(2)).upper()
    s = _number_word(s)
    s = re.sub(r"\s+", " ", s).strip()
    if percent and s:
        s += "%"
    return s


def _spacing(m: re.Match) -> str:
    token = m.group(0)
    if token == "\\\\":
        return token  # a row break of a matrix or an aligned list, not a space
    return "" if token in ("\\,", "\\!") else " "  # thin spaces join digit groups: 10\,000


def strip_math_delimiters(s: str) -> str:
    """``$x$``, ``$$x$$``, ``\\(x\\)``, ``\\[x\\]`` -> ``x``; anything else unchanged."""
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(left) and s.endswith(right) and len(s) > len(left) + len(right):
            inner = s[len(left):-len(right)]
            if left == "$" and "$" in inner:
                return s  # "$a$ and $b$": two spans, not one
            return inner.strip()
    return s


def _unwrap_boxed(s: str) -> str:
    for cmd in ("\\boxed", "\\fbox"):
        if s.startswith(cmd + "{") and s.endswith("}"):
            depth = 0
            for j in range(len(cmd), len(s)):
                depth += (s[j] == "{") - (s[j] == "}")
                if depth == 0:
                    return s[len(cmd) + 1:-1].strip() if j == len(s) - 1 else s
    return s


def _degrees(s: str) -> str:
    if not _DEGREE.search(s):
        return s
    if _TRIG.search(s):
        # Inside trigonometry a degree is π/180: sin(90° - x) = cos x.
        return _DEGREE.sub("", _NUMBER_DEGREE.sub(lambda m: f"\\frac{{{m.group(1)}\\pi}}{{180}}", s))
    return _DEGREE.sub("", s).strip()


def _drop_units(s: str) -> str:
    """``10\\text{ cm}`` / ``10 cm^2`` / ``18 eggs`` / ``3/4 升`` -> the number; ``2x``, ``5 n`` and text answers
    stay."""
    tail_start = max(0, len(s) - _TAIL_WINDOW)
    m = _CJK_TAIL.search(s, tail_start)
    if m and _is_value(s[:m.start()]):
        return s[:m.start()].strip()
    m = _TRAILING_TEXT.search(s, tail_start)
    if m and _is_value(s[:m.start()]) and m.group(1).strip().lower() not in _CONNECTORS | {"i"}:
        return s[:m.start()].strip()
    m = re.search(r"(?<![A-Za-z\\])([A-Za-zμ][A-Za-zμ/ .]*?)\s*(?:\^\s*\{?\s*[23]\s*\}?|[²³])?\s*$", s[tail_start:])
    if not m:
        return s
    value, tail = s[:tail_start + m.start()], m.group(1).strip().rstrip(".")
    if not _is_value(value):
        return s
    words = tail.split()
    glued = not value[-1:].isspace()
    if glued:  # "10cm", "5kg": only a known unit may be glued to its number
        return value.strip() if len(words) == 1 and _is_unit(words[0]) else s
    if all(_is_unit(w) or _is_noun(w) for w in words) and not (set(w.lower() for w in words) & _CONNECTORS - {"per"}):
        return value.strip()
    return s


def _is_unit(word: str) -> bool:
    return word in UNITS or word.lower() in UNITS


def _is_noun(word: str) -> bool:
    """A plain word of three letters or more that is not a maths name: "eggs", "apples", "students"."""
    return len(word) >= 3 and word.isalpha() and word.lower() not in _MATH_WORDS


def _is_value(text: str) -> bool:
    """Text a unit can follow: a number or a numeric expression (digits, operators, LaTeX commands, no letters)."""
    t = text.strip()
    if not t or not re.search(r"\d", t) or len(t) > 200:
        return False
    bare = re.sub(r"\\[A-Za-z]+", "", t)
    return not re.search(r"[A-Za-z]", bare) and t[-1] not in "+-*/=^_(,"


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_WORDS = {w: i for i, w in enumerate(_ONES)} | {w: 10 * i for i, w in enumerate(_TENS) if w}
_WORDS |= {f"{t}-{o}": 10 * i + j for i, t in enumerate(_TENS) if t for j, o in enumerate(_ONES[1:10], 1)}
_WORDS |= {f"{t} {o}": 10 * i + j for i, t in enumerate(_TENS) if t for j, o in enumerate(_ONES[1:10], 1)}
_WORDS |= {"a hundred": 100, "one hundred": 100, "a thousand": 1000, "one thousand": 1000}


def _number_word(s: str) -> str:
    """A whole answer written as an English number word ("three", "twenty-five") -> its digits."""
    if len(s) > 20:
        return s
    key = s.lower().strip()
    return str(_WORDS[key]) if key in _WORDS else s


def _before_approximation(s: str) -> str:
    """``\\frac{2}{3} \\approx 0.667`` -> the exact value before it; ``x \\approx 0.67`` -> the value after."""
    m = re.search(r"\\approx(?![A-Za-z])|≈", s)
    if not m:
        return s
    left, right = s[:m.start()].strip(), s[m.end():].strip()
    if "=" in left:
        return left  # "x = 1/3 ≈ 0.33": the equation before the approximation
    if not left or re.fullmatch(r"\\?[A-Za-z]+(?:_\{?\w+\}?)?", left):
        return right
    return left


def _repeating(m: re.Match) -> str:
    """``0.1\\overline{6}`` -> ``\\frac{1}{6}``: the exact value a repeating decimal denotes."""
    from fractions import Fraction

    sign, whole, fixed, period = m.groups()
    if len(whole) + len(fixed) + len(period) > 60:
        return m.group(0)
    value = int(whole or "0") + (Fraction(int(fixed or "0")) + Fraction(int(period), 10 ** len(period) - 1)) / 10 ** len(fixed)
    value = -value if sign else value
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}" if value.denominator != 1 else str(value.numerator)


def _mixed_number(m: re.Match) -> str:
    """``3\\frac{1}{2}`` is 3½ (a proper fraction of digits after a whole number); ``2\\frac{x}{2}`` is 2·x/2."""
    whole, num, den = m.group(1), m.group(2) or m.group(4), m.group(3) or m.group(5)
    if num.strip().isdigit() and den.strip().isdigit() and 0 < int(num) < int(den) and len(whole) < 30:
        n, d = int(whole) * int(den) + int(num), int(den)
        return f"\\frac{{{n}}}{{{d}}}"
    return f"{whole}\\cdot\\frac{{{num}}}{{{den}}}"
