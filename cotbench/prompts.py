"""Problem -> chat messages (pure). The backend renders them with the model's chat template, or as
plain text when the model has none (``render_plain``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from cotbench.records import Problem

# The instruction used by Qwen2.5-Math and most open math evaluations; it asks for the \boxed{} our grader reads.
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PromptConfig:
    instruction: str = DEFAULT_INSTRUCTION
    system_prompt: str | None = None  # None: the chat template's own default, if any
    n_shot: int = 0  # zero-shot by default, as in the CoT-Valve evaluations
    token_budget: int | None = None  # the paper's prompt-control baseline: "...using less than N tokens"

    def __post_init__(self):
        if self.n_shot < 0:
            raise ValueError(f"n_shot must be >= 0, got {self.n_shot}")
        if self.token_budget is not None and self.token_budget <= 0:
            raise ValueError(f"token_budget must be a positive number of tokens, got {self.token_budget}")


def user_turn(question: str, config: PromptConfig) -> str:
    text = f"{question.strip()}\n{config.instruction}"
    if config.token_budget is not None:
        text += f" Answer using less than {config.token_budget} tokens."
    return text


def build_messages(problem: Problem, config: PromptConfig, shots: Sequence[tuple[str, str]] = ()) -> Messages:
    """System prompt (optional), then each shot as a user/assistant pair, then the problem."""
    messages: Messages = []
    if config.system_prompt:
        messages.append({"role": "system", "content": config.system_prompt})
    for question, solution in shots:
        messages += [{"role": "user", "content": user_turn(question, config)},
                     {"role": "assistant", "content": solution}]
    messages.append({"role": "user", "content": user_turn(problem.question, config)})
    return messages


def render_plain(messages: Messages) -> str:
    """For base models without a chat template: Question/Answer blocks, ending where the answer starts."""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(m["content"].strip())
        elif m["role"] == "user":
            parts.append(f"Question: {m['content'].strip()}")
        else:
            parts.append(f"Answer: {m['content'].strip()}")
    return "\n\n".join(parts) + "\n\nAnswer:"


def render_chat(tokenizer, messages: Messages) -> tuple[str, bool]:
    """(prompt text, add_special_tokens) for a local engine: the model's chat template when it has one (its
    special tokens are in the text), else :func:`render_plain` (the tokenizer adds BOS and friends)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), False
    return render_plain(messages), True
