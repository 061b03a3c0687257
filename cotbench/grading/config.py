"""Grading protocols as frozen configs (math-verify's style: behaviour in data, not in flags).

A protocol is a ``GradingConfig``; the named presets below are registered in ``PROTOCOLS`` and chosen with
``--protocol``. A verdict records the preset's name and the grader identity (``identity.grader_id``), so a
report can say exactly which policy judged it and a resumed run regrades what another grader judged.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from cotbench.registry import Registry

# What each extractor reads, in the order a config lists them (first one that finds something wins):
EXTRACTORS = {
    "boxed": "the last balanced \\boxed{} / \\fbox{} (several boxes are kept as a set when the gold has several)",
    "boxed_or_cut": "the last \\boxed{}; a response cut off inside its box has no answer",
    "marker": "what follows the last answer marker ('the answer is', 'Answer:', '答案是', 'la réponse est', ...)",
    "bare": "the whole response when it is itself a short answer",
    "last_math_or_number": "the math span or number that ends last",
    "last_number": "the last number",
    "gsm8k_hash": "lm-evaluation-harness GSM8K strict-match: the first '#### N'",
    "gsm8k_last_run": "lm-evaluation-harness GSM8K flexible-extract: the last number-like run",
}
# Extractors that read an answer the response committed to. A response cut at the length cap has an answer only
# through one of these (unless a config says otherwise, as the paper's protocol does): its last number or
# math span is wherever the cap fell, not an answer it gave.
COMMITTING = ("boxed", "boxed_or_cut", "marker", "gsm8k_hash")
PERCENT_POLICIES = {
    "value": "N% is N/100 and nothing else",
    "value_or_bare": "N% is N/100; it also matches a bare N on the other side (golds often drop the sign)",
}


@dataclass(frozen=True)
class GradingConfig:
    name: str
    extractors: tuple[str, ...]
    # A gold that is a choice letter (A-J) is matched by a letter read from the response, in prose and in
    # several languages ("it's B", "答案：C"), instead of by the extractors above.
    choice_letters: bool = True
    percent: str = "value_or_bare"  # MATH/GSM8K golds write "50" where the response says "50%"
    # Relative tolerance between a finite decimal and a value no finite decimal of that length can equal
    # (1/3, √2): 6 significant digits, as math-verify's default rounding of floats. Exact values (integers,
    # fractions, closed forms) are always compared exactly.
    rel_tol: float = 1e-6
    strip_units: bool = True  # known unit words (with powers) after a number; never a lone letter
    symbolic: bool = True  # sympy (through math-verify's parser) when the exact checks cannot decide
    # Refuse symbolic work on longer answers: they are prose, not answers, and sympy is superlinear on them.
    max_symbolic_chars: int = 1500
    # a response that stopped at the length cap is read only through the COMMITTING extractors
    cut_needs_commitment: bool = True
    # a response that runs on into an invented next question or chat turn is graded up to where it does
    cut_run_on: bool = True
    notes: str = field(default="", compare=False)

    def __post_init__(self):
        problems = [f"unknown extractor {e!r} (known: {', '.join(EXTRACTORS)})" for e in self.extractors
                    if e not in EXTRACTORS]
        if self.percent not in PERCENT_POLICIES:
            problems.append(f"percent policy must be one of {', '.join(PERCENT_POLICIES)}, got {self.percent!r}")
        if not 0 <= self.rel_tol < 0.1:
            problems.append(f"rel_tol must be in [0, 0.1), got {self.rel_tol!r}")
        if not self.extractors:
            problems.append("a grading config needs at least one extractor")
        if problems:
            raise ValueError("; ".join(problems))

    def with_(self, **changes) -> "GradingConfig":
        """A copy with some fields changed (give it a new ``name`` so reports can tell them apart)."""
        return replace(self, **changes)


PROTOCOLS: Registry[GradingConfig] = Registry("grading protocol")


def _preset(config: GradingConfig) -> GradingConfig:
    return PROTOCOLS.register(config.name)(config)


MATH = _preset(GradingConfig(
    "math", ("boxed_or_cut", "marker", "bare", "last_math_or_number"),
    notes="cotbench default: box, else answer marker, else a bare answer, else the math or number that ends last"))
PAPER = _preset(GradingConfig(
    "paper", ("boxed", "last_number"), choice_letters=False, cut_needs_commitment=False, cut_run_on=False,
    notes="CoT-Valve's protocol: the last \\boxed{}, else the last number (also of a response cut at the cap)"))
GSM8K_STRICT = _preset(GradingConfig(
    "gsm8k-strict", ("gsm8k_hash",), choice_letters=False, notes="lm-evaluation-harness gsm8k strict-match"))
GSM8K_FLEXIBLE = _preset(GradingConfig(
    "gsm8k-flexible", ("gsm8k_last_run",), choice_letters=False,
    notes="lm-evaluation-harness gsm8k flexible-extract"))
MATH_STRICT_PERCENT = _preset(MATH.with_(
    name="math-strict-percent", percent="value", notes="as 'math', but N% only ever equals N/100"))


def resolve(protocol: "str | GradingConfig") -> GradingConfig:
    return protocol if isinstance(protocol, GradingConfig) else PROTOCOLS.get(protocol)
