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

from cotbench.grading.config import COMMITTING
from cotbench.grading.normalize import strip_math_delimiters


@dataclass(frozen=True)
class Extraction:
    text: str | None  # None: nothing found
    how: str  # which rule picked it, kept in the verdict's reason


_NUMBER = re.compile(r"(?<![A-Za-z_\d.])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?:[eE][-+]?\d+)?|\.\d+)"
                     r"(?:\s?\\?%)?")
# A clock time ("7:05 PM", "19:05"): one answer, never the two numbers around its colon.
_TIME = re.compile(r"(?<![\d:.])\d{1,2}:\d{2}(?::\d{2})?(?:\s?(?i:[ap]\.?\s?m)\b\.?)?(?![\d:])")
# An amount with a decimal comma beside a currency sign ("12,50 €", "R$ 7,30"): one number, not "12" and "50".
_MONEY = re.compile(r"(?:(?:R\$|US\$|\$|€|£|¥)\s?-?\d{1,3}(?:\.\d{3})*,\d{2}(?!\d)"
                    r"|-?\d{1,3}(?:\.\d{3})*,\d{2}(?!\d)\s?(?:€|£|¥|R\$|zł|kr|EUR|BRL))")
# Where a response runs on into an invented next turn: a new question or problem line, a chat role marker.
_RUN_ON = re.compile(r"(?im:^[ \t>*#]*(?:question|problem|q|human|user|instruction)[ \t]*\d*[ \t]*\**[ \t]*[:：])"
                     r"|<\|im_start\|>|<\|im_end\|>|<\|user\|>|<\|start_header_id\|>|<\|eot_id\|>|<\|endoftext\|>"
                     r"|<\|end\|>|<start_of_turn>|<end_of_turn>|\[INST\]")
_HAS_ANSWER = re.compile(r"\d|\\boxed|\\fbox|" + "(?i:answer)")
_LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-eval gsm8k.yaml "strict-match"
_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # lm-eval gsm8k.yaml "flexible-extract"
_MARKER = re.compile(
    r"(?i:(?:final\s+answer|answer)\s*(?:(?:is|should\s+be|would\s+be|will\s+be)\s*:?|[:=：])"
    r"|答案\s*(?:是|为|应为|應為|选|選|应选|應選)\s*[:：]?|(?:最终)?答案\s*[:：]|最终答案\s*(?:是|为)?"
    r"|(?m:^[ \t]*#{1,6}[ \t]*(?i:final[ \t]+)?(?i:answer)[ \t]*:?[ \t]*$)"
    r"|(?:la\s+)?réponse(?:\s+finale)?\s*(?:est|:)\s*:?|antwort\s*(?:ist|lautet|:)\s*:?"
    r"|respuesta(?:\s+final)?\s*(?:es|:)\s*:?|resposta(?:\s+final)?\s*(?:é|:)\s*:?|risposta\s*(?:è|:)\s*:?"
    r"|ответ\s*(?:[:—-]|это)\s*|答え\s*(?:は|[:：])\s*|정답\s*(?:은|[:：])\s*|답\s*(?:은|[:：])\s*)")
_HOPE = re.compile(r"\s*I hope it is correct.*$", re.IGNORECASE | re.DOTALL)
_DISJUNCTION = re.compile(r"(?<![A-Za-z])(?:or|either|ou|oder|или|或者|或)(?![A-Za-z])", re.IGNORECASE)
_GAP = re.compile(r"^[\s,;:$]*(?:(?i:or|either|ou|oder|или|或者|或|maybe|perhaps|possibly|else)[\s,;:$]*)*$")
# Between pieces of one answer ("5 and 11", "$\\boxed{4}$ and $\\boxed{-9}$", "\\boxed{(0,3)}, \\boxed{(3,0)}").
_PIECE_GAP = re.compile(r"^(?:[\s,;&$]|\\[,;:! ]|\\q?quad|\\[\[\]()]|\\text\{\s*(?:and|or|,)?\s*\}"
                        r"|(?i:and|or|either|et|und|y|e|и|和|或|以及)(?![A-Za-z]))*$")
_BOX_TOKENS = re.compile(r"\\[{}]|\\(?:boxed|fbox)\s*\{|\\(?:boxed|fbox)\s+([^\s${}]+)|[{}]")
_SPAN_TOKENS = re.compile(r"\\\$|\$\$|\$|\\\[|\\\]|\\\(|\\\)|\n")
# Words of a sentence, not of an answer: "It is 50%" is prose around an answer, "10 dollars" an answer.
_PROSE = frozenset("it is are was were the so we get thus hence therefore this that be has have answer equals "
                   "gives total result value which means".split())
_MAX_LINE = 1000  # an answer marker's line is read this far


def boxes(text: str) -> tuple[list[str], bool]:
    """(contents of the top-level balanced boxes in order, whether a box is still open at the end). One pass."""
    found, still_open = box_spans(text)
    return [content for _, _, content in found], still_open


def box_spans(text: str) -> tuple[list[tuple[int, int, str]], bool]:
    """(start, end, content) of each top-level balanced box, and whether a box is still open at the end."""
    found, depth, open_at, open_depth, start = [], 0, None, 0, 0
    for m in _BOX_TOKENS.finditer(text):
        token = m.group(0)
        if token in ("\\{", "\\}"):
            continue  # a literal brace, not a group
        if m.group(1) is not None:
            if open_at is None:
                found.append((m.start(), m.end(), m.group(1)))  # "\boxed 5"
            continue
        if token.endswith("{") and token != "{":
            if open_at is None:
                open_at, open_depth, start = m.end(), depth, m.start()
            depth += 1
        elif token == "{":
            depth += 1
        else:
            depth = max(0, depth - 1)
            if open_at is not None and depth == open_depth:
                found.append((start, m.end(), text[open_at:m.start()].strip()))
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
    """(the math span, number, clock time or amount that ends last, its start, its end): answers come at the
    end. Outside math, of tokens that end together the longest wins ("7:05 PM" over "05")."""
    spans = math_spans(text)
    best = (spans[-1][2], spans[-1][0], spans[-1][1]) if spans else None
    outside, last = [], 0
    for s, e, _ in spans:
        outside.append(text[last:s])
        outside.append(" " * (e - s))  # numbers inside math don't count twice
        last = e
    outside.append(text[last:])
    plain = "".join(outside)
    found = _last_matches(_NUMBER, plain)
    if found:  # a time or an amount that ends last holds the last number's digits: look only around it
        window = max(0, found[0].start() - 24)
        found += [m for pattern in (_TIME, _MONEY) for m in _last_matches(pattern, plain, window)]
        m = max(found, key=lambda m: (m.end(), m.end() - m.start()))
        if best is None or m.end() > best[2]:
            best = (m.group(0), m.start(), m.end())
    return best


def _last_matches(pattern: re.Pattern, text: str, start: int = 0) -> list[re.Match]:
    last = None
    for last in pattern.finditer(text, start):
        pass
    return [last] if last is not None else []


def _alternatives(text: str, end: int, pieces: bool = False) -> str | None:
    """"18 or 20" when the answer ending at ``end`` is offered as one of several: the tokens just before it
    are joined to it only by "or" (in a few languages), "either", "maybe" and punctuation. ``pieces`` (the gold
    has several answers): "and" joins them too ("5 and 11"), and the answer is the list of them."""
    start = max(0, end - 300)
    sentence = text[start:end]
    tokens = [(m.start(), m.end(), m.group(0)) for m in _NUMBER.finditer(sentence)]
    tokens += [(s, e, c) for s, e, c in math_spans(sentence)]
    tokens = sorted(t for t in tokens if not any(o[0] < t[0] and t[1] <= o[1] for o in tokens if o != t))
    if len(tokens) < 2:
        return None
    gap_rule = _PIECE_GAP if pieces else _GAP
    chain = [tokens[-1]]
    for prev in reversed(tokens[:-1]):
        gap = sentence[prev[1]:chain[0][0]]
        if not gap_rule.match(gap):
            break
        chain.insert(0, prev)
    if len(chain) < 2:
        return None
    if pieces:
        return ", ".join(t[2] for t in chain)
    if not any(_DISJUNCTION.search(sentence[a[1]:b[0]]) for a, b in zip(chain, chain[1:])):
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
    said, _ = _after_marker(response)
    return said


def _after_marker(response: str) -> tuple[str | None, bool]:
    """What follows the last answer marker on its line, up to a clause that only comments on it ("42 km, which
    is under the limit"); a marker that ends its line (an "# Answer" heading) is followed by its answer on
    the next non-empty line."""
    markers = None
    for markers in _MARKER.finditer(response):
        pass
    if markers is None:
        return None, False
    lines = response[markers.end():markers.end() + _MAX_LINE].split("\n")
    rest, moved = lines[0].strip(), False
    if not rest.strip("*: "):
        rest, moved = next((line.strip() for line in lines[1:] if line.strip()), ""), True
    rest = _HOPE.sub("", rest).strip().lstrip("*").strip()  # "**Answer:** 72"
    head = _before_comment(rest)
    return head or None, moved or head != rest


# A clause after an answer that comments on it: ", which ...", "; because ...", " since ...".
# Never "but" or "wait": what follows those may correct the answer.
_COMMENT = re.compile(r"(?:[,;，；]\s*|\s)(?=(?:which|that|because|since|as|so|meaning|where|when|thus|hence|"
                      r"therefore|i\.e\.|e\.g\.)\b)", re.IGNORECASE)


def _before_comment(said: str) -> str:
    for m in _COMMENT.finditer(said):
        head = said[:m.start()]
        if _balanced_outside_math(head) and re.search(r"\d|\\", head):
            return head.strip()
    return said


def _balanced_outside_math(text: str) -> bool:
    return text.count("$") % 2 == 0 and sum((c in "([{") - (c in ")]}") for c in text) == 0


def cut_run_on(response: str) -> tuple[str, bool]:
    """(the response up to where it runs on into an invented next question or turn, whether it did). A run-on
    starts at a new "Question:"/"Problem:"/"Q:"/"User:" line or a chat role marker, after text that already
    holds an answer (a chat role marker: a number, a box or a marker; a new question line: a box or an answer
    marker, as a model restating its problem mid-way has not answered yet)."""
    for m in _RUN_ON.finditer(response):
        before = response[:m.start()]
        if m.group(0).startswith("<") or m.group(0).startswith("["):  # a chat role marker: a turn has ended
            answered = _HAS_ANSWER.search(before)
        else:  # a "Question:" line may be the model restating its own problem: only after a committed answer
            answered = "\\boxed" in before or "\\fbox" in before or _MARKER.search(before)
        if answered:
            return before, True
    return response, False


def unfinished(response: str) -> bool:
    """The last line stops mid-expression: an open ``\\[`` or ``$$``, an unclosed bracket or brace, or a
    trailing operator."""
    text = response.rstrip()
    if not text:
        return False
    if text.count("\\[") > text.count("\\]") or text.count("$$") % 2:
        return True
    last = text.rsplit("\n", 1)[-1]
    bare = last.replace("\\{", "").replace("\\}", "")
    if sum(map(bare.count, "([{")) > sum(map(bare.count, ")]}")):
        return True
    # a trailing operator; "*" only as one (after a space), never markdown's "**10**"
    return bool(re.search(r"(?:[-+/=^×÷]|\s\*|\\(?:times|cdot|div|frac|sqrt|pm))\s*$", last))


_THIN_GROUP = re.compile(r"(?<=\d)[\u2009\u202f\u00a0](?=\d{3}(?!\d))")


def clean(text: str) -> str:
    """NULs dropped; digit groups joined across thin and no-break spaces ("1 234 567")."""
    return _THIN_GROUP.sub("", text.replace("\x00", ""))


# -- extractors: response -> Extraction | None (None: this rule found nothing, try the next)

def _boxed(response: str, n_gold: int, cut_means_none: bool) -> Extraction | None:
    found, still_open = box_spans(response)
    if cut_means_none and still_open:
        return Extraction(None, "cut off inside its \\boxed{}: no answer")
    if not found:
        return None
    if n_gold > 1 and len(found) > 1:
        distinct = list(dict.fromkeys(c for _, _, c in found))
        return Extraction(", ".join(distinct), f"all {len(distinct)} \\boxed{{}} (the gold has several)")
    chain = [found[-1]]  # boxes given together, one value each: "$\\boxed{4}$ and $\\boxed{-9}$"
    for box in reversed(found[:-1]):
        gap = response[box[1]:chain[0][0]]
        if len(gap) > 40 or not _PIECE_GAP.match(gap):
            break
        chain.insert(0, box)
    distinct = list(dict.fromkeys(c for _, _, c in chain))
    if len(distinct) > 1:
        return Extraction(", ".join(distinct), f"the last {len(distinct)} \\boxed{{}}, given together [answers given in pieces]")
    return Extraction(found[-1][2], "last \\boxed{}")


def _marker(response: str, n_gold: int = 1) -> Extraction | None:
    said, moved = _after_marker(response)
    if not said:
        return None
    tag = " [where the answer sits]" if moved else ""  # on the next line, or before a comment on it
    if _looks_like_bare_answer(said):
        return Extraction(_strip_math_delimiters(said), "'answer is ...'" + tag)
    found = last_token(said)
    if not found:
        return None
    listed = _alternatives(said, found[2], pieces=n_gold > 1)
    if listed:
        return Extraction(listed, "several answers after 'answer is'" + tag)
    return Extraction(found[0], "last math or number after 'answer is'" + tag)


def _bare(response: str) -> Extraction | None:
    stripped = response.strip()
    if stripped and _looks_like_bare_answer(stripped):
        return Extraction(_strip_math_delimiters(stripped), "whole response")
    return None


def _last_math_or_number(response: str, n_gold: int = 1) -> Extraction | None:
    found = last_token(response)
    if not found:
        return None
    listed = _alternatives(response, found[2], pieces=n_gold > 1)
    if listed:
        return Extraction(listed, "several answers in the last sentence")
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


def run_extractors(response: str, extractors: tuple[str, ...], n_gold: int = 1,
                   unfinished_is_none: bool = False) -> Extraction:
    """The first extractor that finds an answer. ``n_gold``: how many answers the gold holds (a list is read
    whole). ``unfinished_is_none``: a response whose last line stops mid-expression has only the answer it
    committed to (a box or a marker); the fallbacks take nothing from it."""
    cut = unfinished_is_none and unfinished(response)
    for name in extractors:
        if cut and name not in COMMITTING:
            return Extraction(None, "no answer: the last line is unfinished and nothing was committed to "
                                    "[an unfinished last line is no answer]")
        if name in ("boxed", "boxed_or_cut"):
            found = _boxed(response, n_gold, name == "boxed_or_cut")
        elif name in ("marker", "last_math_or_number"):
            found = _SIMPLE[name](response, n_gold)
        else:
            found = _SIMPLE[name](response)
        if found is not None:
            return found
    return Extraction(None, "no answer found (" + ", ".join(extractors) + ")")


_SIMPLE = {"marker": _marker, "bare": _bare, "last_math_or_number": _last_math_or_number,
           "last_number": _last_number, "gsm8k_hash": _gsm8k_hash, "gsm8k_last_run": _gsm8k_last_run}


# -- choice letters

# "B", "(B)", or a letter with its option's text ("B) 12 apples", "(B) 12", "B. 12"): choice B
_CHOICE_GOLD = re.compile(r"^\(?([A-J])\)?$|^\(?([A-J])[).:]\s+\S")
# A box that holds a letter and nothing it could be part of: "\\text{(E) } 12" is E, "\\mathbf{D}+1" no letter
_BOXED_LETTER = re.compile(r"\s*(?:\\(?:text|mathrm|mathbf|textbf)\s*\{)?\s*\(?([A-J])\)?(?:\s*\})?"
                           r"(?=$|[.:,;)]|\s+(?![=+\-*/^<>]))")
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
    return (m.group(1) or m.group(2)) if m else None


def choice_letter(response: str) -> Extraction:
    """The choice a response makes: its box, else a letter after an answer marker, else "option B" / "(B)",
    else the last lone capital letter of a short response or of its last line."""
    found, _ = boxes(response)
    if found:
        m = _BOXED_LETTER.match(found[-1])
        if m:
            return Extraction(m.group(1), "letter in the last \\boxed{}")
        if re.search(r"(?<![A-Za-z\\])[A-J](?![A-Za-z])", found[-1]):  # a letter inside an expression is no choice
            return Extraction(found[-1], "the last \\boxed{} holds no lone letter [a choice letter inside an expression "
                                         "is no choice]")
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
