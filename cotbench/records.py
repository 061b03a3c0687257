"""Typed records passed between pipeline stages. Units are in the field names."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Problem:
    """One benchmark item, as a task adapter yields it."""

    task: str
    problem_id: str
    question: str
    gold: str  # the reference final answer, already extracted (e.g. "72", "\\frac{1}{2}")
    metadata: Mapping[str, Any] = field(default_factory=dict)  # MATH level/subject, source line, ...


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete. It carries its own valve strength so a backend may mix α values in a batch."""

    request_id: str
    prompt: str  # fully rendered text (chat template already applied)
    alpha: float | None  # None: no valve
    sampling: SamplingSettings
    add_special_tokens: bool = False  # True only for plain-text prompts without a chat template
    thinking_budget: int | None = None  # budget forcing (methods.py): think at most this many tokens


@dataclass(frozen=True)
class Generation:
    request_id: str
    text: str
    n_prompt_tokens: int
    n_generated_tokens: int  # exact, model tokenizer; includes the EOS token it emitted, never padding
    finish_reason: str  # "stop" (EOS or stop string) or "length" (hit max_new_tokens)
    latency_s: float  # from the row's prefill to its last token (static scheduler: its batch's wall time)
    # The generated ids (EOS included), where the engine gives them: thinking tokens are counted from them.
    token_ids: tuple[int, ...] | None = field(default=None, compare=False, repr=False)
    n_thinking_tokens: int | None = None  # known by construction (budget forcing); else counted by the runner


GRADE_STATUSES = ("correct", "incorrect", "timeout", "error")


@dataclass(frozen=True)
class Grade:
    """A verdict. An unreadable answer is data (`extracted is None`), not an exception."""

    correct: bool
    extracted: str | None
    gold: str
    protocol: str
    reason: str  # why it was judged so, e.g. "numeric match", "no answer found", "timeout: ..."
    # correct | incorrect | timeout (no verdict in time) | error (the grader failed). The last two are not
    # judgements: they are kept out of accuracy and counted apart. Empty: derived from `correct`.
    status: str = ""

    def __post_init__(self):
        if not self.status:
            object.__setattr__(self, "status", "correct" if self.correct else "incorrect")
        elif self.status not in GRADE_STATUSES:
            raise ValueError(f"grade status must be one of {GRADE_STATUSES}, got {self.status!r}")
        if self.correct and self.status != "correct":
            raise ValueError(f"a {self.status} verdict cannot be correct")

    @property
    def judged(self) -> bool:
        """True for a real verdict (correct or incorrect), False for a timeout or a grader error."""
        return self.status in ("correct", "incorrect")


@dataclass(frozen=True)
class Sample:
    """Everything stored about one (model, valve, α, task, problem) generation."""

    key: str
    model: str
    valve: str  # "" when there is no valve
    alpha: float | None
    problem: Problem
    prompt: str
    generation: Generation
    grade: Grade | None = None
    n_thinking_tokens: int | None = None  # the thinking block's tokens, closing delimiter included (thinking.py)
    thinking_state: str = "none"  # none | closed | open (the response ended while thinking)
    method: str = "valve"  # the sweep axis (methods.py): valve | prompt-budget | budget-forcing | nothink
    knob: float | None = None  # the point on it: α for valve, a token budget, None for nothink
    # Settings that change only floating-point rounding (batch size, scheduler, threads, kernels): recorded,
    # never keyed, so a resumed run with others reuses the sample and the report can say rows mix them.
    numerics: str = ""
    model_identity: str = ""  # the model's content identity its key holds (keys.py); "" in older stores
    sample_index: int = 0  # which of the K samples of its (problem, point) it is (--samples K); 0 when K = 1
