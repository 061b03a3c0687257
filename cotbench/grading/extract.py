"""Answer extraction: response text -> the answer a protocol's extractors pick (pure functions, linear time).

The extractors (named in ``config.EXTRACTORS``) are tried in the order a ``GradingConfig`` lists them:
- ``boxed`` / ``boxed_or_cut``: the last balanced ``\\boxed{}`` or ``\\fbox{}`` (``\\boxed 5`` too). When the gold
  holds several boxes, every distinct box of the response is read, as a set. ``boxed_or_cut``: a response whose
  last box never closes was cut off inside its answer, and has none (no fallback may pass it).
- ``marker``: what follows the last answer marker on its line, in English, Chinese, French, German, Spanish,
  Portuguese, Italian, Russian, Japanese and Korean ("the final answer is", "Answer:", "答案是", "la réponse
  est", ...), without "I hope it is correct". It runs before ``bare``: "Answer: 2x + 3" is "2x + 3".
- ``bare``: the whole response when it is itself a short answer (one line, at most 60 characters, two words).
- ``last_math_or_number``: the math span or number that ends last.
- ``last_number``, ``gsm8k_hash``, ``gsm8k_last_run``: the CoT-Valve paper's and lm-evaluation-harness's rules.

An answer that offers alternatives ("either 18 or 20", "18 or 20, I am not sure") is returned whole, so the
comparison sees several answers where the gold has one. A gold that is a choice letter is read with
``choice_letter`` instead. Numbers include thousands groups, decimals, ``a/b`` and ``1e5``, but never digits
glued to a preceding letter ("x2", "AZYUK2A").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from cotbench.grading.normalize import strip_math_delimiters


@dataclass(frozen=True)
class Extraction:
    text: str | None  # None: nothing found
    how: str  # which rule picked it, kept in the verdict's reason


_NUMBER = re.compile(r"(?<![A-Za-z_\d.])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?:[eE][-+]?\d+)?|\.\d+)"
                     r"(?:\s?\\?%)?")
_LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-eval gsm8k.yaml "strict-match"
_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # lm-eval gsm8k.yaml "flexible-extract"
_MARKER = re.compile(
    r"(?i:(?:final\s+answer|answer)\s*(?:(?:is|should\s+be|would\s+be|will\s+be)\s*:?|[:=：])"
    r"|答案\s*(?:是|为|应为|應為)\s*[:：]?|(?:最终)?答案\s*[:：]|最终答案\s*(?:是|为)?"
    r"|(?:la\s+)?réponse(?:\s+finale)?\s*(?:est|:)\s*:?|antwort\s*(?:ist|lautet|:)\s*:?"
    r"|respuesta(?:\s+final)?\s*(?:es|:)\s*:?|resposta(?:\s+final)?\s*(?:é|:)\s*:?|risposta\s*(?:è|:)\s*:?"
    r"|ответ\s*(?:[:—-]|это)\s*|答え\s*(?:は|[:：])\s*|정답\s*(?:은|[:：])\s*|답\s*(?:은|[:：])\s*)")
_HOPE = re.compile(r"\s*I hope it is correct.*$", re.IGNORECASE | re.DOTALL)
_DISJUNCTION = re.compile(r"(?<![A-Za-z])(?:or|either|ou|oder|или|或者|或)(?![A-Za-z])", re.IGNORECASE)
_GAP = re.compile(r"^[\s,;:$]*(?:(?i:or|either|ou|oder|или|或者|或|maybe|perhaps|possibly|else)[\s,;:$]*)*$")
_BOX_TOKENS = re.compile(r"\\[{}]|\\(?:boxed|fbox)\s*\{|\\(?:boxed|fbox)\s+([^\s${}]+)|[{}]")
_SPAN_TOKENS = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)|\n")
# Words of a sentence, not of an answer: "It is 50%" is prose around an answer, "10 dollars" an answer.
_PROSE = frozenset("it is are was were the so we get thus hence therefore this that be has have answer equals "
                   "gives total result value which means".split())
_MAX_LINE = 1000  # an answer marker's line is read this far


def boxes(text: str) -> tuple[list[str], bool]:
    """(contents of the top-level balanced boxes in order, whether a box is still open at the end). One pass."""
    found, depth, open_at, open_depth = [], 0, None, 0
    for m in _BOX_TOKENS.finditer(text):
        token = m.group(0)
        if token in ("\\{", "\\}"):
            continue  # a literal brace, not a group
        if m.group(1) is not None:
            if open_at is None:
                found.append(m.group(1))  # "\boxed 5"
            continue
        if token.endswith("{") and token != "{":
            if open_at is None:
                open_at, open_depth = m.end(), depth
            depth += 1
        elif token == "{":
            depth += 1
        else:
            depth = max(0, depth - 1)
            if open_at is not None and depth == open_depth:
                found.append(text[open_at:m.start()].strip())
                open_at = None
    return found, open_at is not None


def last_boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` (or ``\\fbox``); also ``\\boxed 5``."""
    found, _ = boxes(text)
    return found[-1] if found else None


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of ``$..$``, ``$$..$$``, ``\\(..\\)``, ``\\[..\\]`` in one pass. Display math may span
    lines; inline math may not (as in LaTeX). ``\\$`` is a dollar sign."""
    spans, opener, start = [], None, 0
    closers = {"$": "$", "$$": "$$", "\\(": "\\)", "\\[": "\\]"}
    for m in _SPAN_TOKENS.finditer(text):
        token = m.group(0)
        if token == "\\$":
            continue
        if opener is None:
            if token in closers:
                opener, start = token, m.end()
        elif token == closers[opener]:
            content = text[start:m.start()].strip()
            if content:
                spans.append((start - len(opener), m.end(), content))
            opener = None
        elif token == "\n" and opener in ("$", "\\("):
            opener = None  # inline math does not cross a line
    return spans


def last_token(text: str) -> tuple[str, int, int] | None:
    """(the math span or number that ends last, its start, its end): answers come at the end."""
    spans = math_spans(text)
    best = (spans[-1][2], spans[-1][0], spans[-1][1]) if spans else None
    outside, last = [], 0
    for s, e, _ in spans:
        outside.append(text[last:s])
        outside.append(" " * (e - s))  # numbers inside math don't count twice
        last = e
    outside.append(text[last:])
    numbers = list(_NUMBER.finditer("".join(outside)))
    if numbers and (best is None or numbers[-1].end() > best[2]):
        best = (numbers[-1].group(0), numbers[-1].start(), numbers[-1].end())
    return best


def _alternatives(text: str, end: int) -> str | None:
    """"18 or 20" when the answer ending at ``end`` is offered as one of several: the tokens just before it
    are joined to it only by "or" (in a few languages), "either", "maybe" and punctuation."""
    start = max(0, end - 300)
    sentence = text[start:end]
    tokens = [(m.start(), m.end(), m.group(0)) for m in _NUMBER.finditer(sentence)]
    tokens += [(s, e, c) for s, e, c in math_spans(sentence)]
    tokens = sorted(t for t in tokens if not any(o[0] < t[0] and t[1] <= o[1] for o in tokens if o != t))
    if len(tokens) < 2:
        return None
    chain = [tokens[-1]]
    for prev in reversed(tokens[:-1]):
        gap = sentence[prev[1]:chain[0][0]]
        if not _GAP.match(gap):
            break
        chain.insert(0, prev)
    if len(chain) < 2 or not any(_DISJUNCTION.search(sentence[a[1]:b[0]]) for a, b in zip(chain, chain[1:])):
        return None
    return " or ".join(t[2] for t in chain)


def _looks_like_bare_answer(text: str) -> bool:
    """A response that is already an answer: short, one line, few plain words."""
    if len(text) > 60 or "\n" in text.strip():
        return False
    inner = _strip_math_delimiters(text)
    if "$" in inner or "\\(" in inner or "\\[" in inner:
        return False  # prose around math: "Answer $$ 9 $$" is not itself an answer
    plain = re.sub(r"\\text\{[^}]*\}|\\[a-zA-Z]+", " ", inner)
    words = re.findall(r"[A-Za-z]{2,}", plain)
    return len(words) <= 2 and not any(w.lower() in _PROSE for w in words)


def _strip_math_delimiters(s: str) -> str:
    return strip_math_delimiters(s.strip().rstrip(".").strip())


def _after_last_marker(response: str) -> str | None:
    markers = None
    for markers in _MARKER.finditer(response):
        pass
    if markers is None:
        return None
    rest = response[markers.end():markers.end() + _MAX_LINE].split("\n", 1)[0]
    rest = _HOPE.sub("", rest).strip().lstrip("*").strip()  # "**Answer:** 72"
    return rest or None


# -- extractors: response -> Extraction | None (None: this rule found nothing, try the next)

def _boxed(response: str, n_gold: int, cut_means_none: bool) -> Extraction | None:
    found, still_open = boxes(response)
    if cut_means_none and still_open:
        return Extraction(None, "cut off inside its \\boxed{}: no answer")
    if not found:
        return None
    if n_gold > 1 and len(found) > 1:
        distinct = list(dict.fromkeys(found))
        return Extraction(", ".join(distinct), f"all {len(distinct)} \\boxed{{}} (the gold has several)")
    return Extraction(found[-1], "last \\boxed{}")


def _marker(response: str) -> Extraction | None:
    said = _after_last_marker(response)
    if not said:
        return None
    if _looks_like_bare_answer(said):
        return Extraction(_strip_math_delimiters(said), "'answer is ...'")
    found = last_token(said)
    if not found:
        return None
    hedged = _alternatives(said, found[2])
    if hedged:
        return Extraction(hedged, "several answers after 'answer is'")
    return Extraction(found[0], "last math or number after 'answer is'")


def _bare(response: str) -> Extraction | None:
    stripped = response.strip()
    if stripped and _looks_like_bare_answer(stripped):
        return Extraction(_strip_math_delimiters(stripped), "whole response")
    return None


def _last_math_or_number(response: str) -> Extraction | None:
    found = last_token(response)
    if not found:
        return None
    hedged = _alternatives(response, found[2])
    if hedged:
        return Extraction(hedged, "several answers in the last sentence")
    return Extraction(found[0], "last math or number")


def _last_number(response: str) -> Extraction | None:
    number = last_number(response)
    return Extraction(number, "last number") if number is not None else None


def _gsm8k_hash(response: str) -> Extraction | None:
    m = _LM_EVAL_STRICT.search(response)
    return Extraction(m.group(1), "'#### N'") if m else None


def _gsm8k_last_run(response: str) -> Extraction | None:
    matches = _LM_EVAL_FLEXIBLE.findall(response)
    if not matches:
        return None
    return Extraction(next(g for g in matches[-1] if g), "last number-like run")


def run_extractors(response: str, extractors: tuple[str, ...], n_gold: int = 1) -> Extraction:
    for name in extractors:
        if name in ("boxed", "boxed_or_cut"):
            found = _boxed(response, n_gold, name == "boxed_or_cut")
        else:
            found = _SIMPLE[name](response)
        if found is not None:
            return found
    return Extraction(None, "no answer found (" + ", ".join(extractors) + ")")


_SIMPLE = {"marker": _marker, "bare": _bare, "last_math_or_number": _last_math_or_number,
           "last_number": _last_number, "gsm8k_hash": _gsm8k_hash, "gsm8k_last_run": _gsm8k_last_run}


# -- choice letters

_CHOICE_GOLD = re.compile(r"^\(?([A-J])\)?$")
_LETTER = r"\(?\s*([A-J])\s*\)?(?![A-Za-z0-9])"
_LETTER_AFTER_MARKER = re.compile(
    r"(?:" + _MARKER.pattern + r")[\s*]*(?:(?i:option|choice)\s*)?(?:\\(?:text|mathrm|textbf)\{\s*)?\(?\s*([A-J])\s*\)?"
    r"(?![A-Za-z0-9])")
_LETTER_NAMED = re.compile(r"(?i:option|choice|choose|pick|select)\s*:?\s*" + _LETTER)
_LETTER_PAREN = re.compile(r"(?<![A-Za-z])\(([A-J])\)")
_LETTER_ALONE = re.compile(r"(?<![A-Za-z'’])([A-J])(?![A-Za-z0-9'’])")


def choice_letter_gold(gold: str) -> str | None:
    """The letter when a (normalised) gold is a multiple-choice letter A-J."""
    m = _CHOICE_GOLD.match(gold.strip())
    return m.group(1) if m else None


def choice_letter(response: str) -> Extraction:
    """The choice a response makes: its box, else a letter after an answer marker, else "option B" / "(B)",
    else the last lone capital letter of a short response or of its last line."""
    found, _ = boxes(response)
    if found:
        m = re.match(r"\s*(?:\\text\{|\\mathrm\{)?\s*\(?([A-J])\)?(?![A-Za-z0-9])", found[-1])
        if m:
            return Extraction(m.group(1), "letter in the last \\boxed{}")
    for pattern, how in ((_LETTER_AFTER_MARKER, "letter after 'answer is'"), (_LETTER_NAMED, "letter after 'option'"),
                         (_LETTER_PAREN, "last '(X)'")):
        last = None
        for last in pattern.finditer(response):
            pass
        if last is not None:
            return Extraction(last.group(1), how)
    stripped = response.strip()
    last_line = stripped.rsplit("\n", 1)[-1][-200:]
    for text, how in ((stripped, "lone letter of a short response"), (last_line, "lone letter on the last line")):
        if len(text) <= 200:
            letters = [m.group(1) for m in _LETTER_ALONE.finditer(text)
                       if not (m.group(1) in "AI" and _is_word_use(text, m))]
            if letters:
                return Extraction(letters[-1], how)
    return Extraction(None, "no choice letter found")


def _is_word_use(text: str, m: re.Match) -> bool:
    """"A" as an article or "I" as a pronoun: followed by a space and a lower-case word."""
    return bool(re.match(r"\s+[a-z]", text[m.end():m.end() + 3]))
