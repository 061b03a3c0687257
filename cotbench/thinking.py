"""Reasoning models: a response's thinking block and its answer, told apart (pure functions).

A thinking block runs from an opening delimiter (``<think>`` by default) to a closing one (``</think>``).
Chat templates of reasoning models (DeepSeek-R1 distills, QwQ, Qwen3 in thinking mode) often open the block
themselves at the end of the prompt; then the response starts inside it, with no opening tag of its own.
Per sample:
- ``thinking``: the text of the block, ``answer``: what follows it (graded; the whole response when there
  is no block), and the state: ``none`` (no block), ``closed``, or ``open`` (the response ended while still
  thinking: truncated while thinking, when it hit max_new_tokens);
- ``n_thinking_tokens``: tokens up to and including the closing delimiter, counted exactly from the
  generated token ids where the engine gives them (hf, vllm), else with the model's tokenizer (a server).
ACU stays on all generated tokens, as the paper defines it.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT = ("<think>", "</think>")


@dataclass(frozen=True)
class ThinkingFormat:
    open: str
    close: str

    def describe(self) -> str:
        return f"{self.open},{self.close}"


def parse_option(value: str | None) -> ThinkingFormat | None:
    """``auto``/``None`` -> <think>,</think> (a response without them has no thinking); ``none`` -> off;
    ``OPEN,CLOSE`` -> custom delimiters."""
    if value in (None, "", "auto"):
        return ThinkingFormat(*DEFAULT)
    if value == "none":
        return None
    if value.count(",") != 1 or not all(part.strip() for part in value.split(",")):
        raise ValueError(f"thinking delimiters must be OPEN,CLOSE (e.g. '<think>,</think>'), 'auto' or 'none'; "
                         f"got {value!r}")
    open_, close = (part.strip() for part in value.split(","))
    return ThinkingFormat(open_, close)


@dataclass(frozen=True)
class Split:
    thinking: str | None  # None: no thinking block
    answer: str
    state: str  # none | closed | open


def prompt_opens_thinking(prompt: str, fmt: ThinkingFormat | None) -> bool:
    """True when the chat template put the opening delimiter at the end of the prompt itself."""
    return fmt is not None and prompt.rstrip().endswith(fmt.open)


def split(response: str, fmt: ThinkingFormat | None, starts_open: bool = False) -> Split:
    if fmt is None:
        return Split(None, response, "none")
    body = response
    stripped = body.lstrip()
    opened = starts_open
    if stripped.startswith(fmt.open):
        body, opened = stripped[len(fmt.open):], True
    end = body.find(fmt.close)
    if end >= 0 and (opened or fmt.open not in body[:end]):
        return Split(body[:end].strip(), body[end + len(fmt.close):].strip(), "closed")
    if opened:
        return Split(body.strip(), "", "open")
    return Split(None, response, "none")


def thinking_token_count(tokenizer, token_ids, parts: Split, fmt: ThinkingFormat | None) -> int | None:
    """Tokens of the thinking block, its closing delimiter included; None without a block.

    From ``token_ids``: the shortest prefix whose decoded text holds the closing delimiter (binary search:
    O(log n) decodes). Without ids (a server's text only), the tokenizer's count of block + delimiter."""
    if parts.thinking is None or fmt is None:
        return None
    if parts.state == "open":
        return len(token_ids) if token_ids is not None else len(_ids(tokenizer, parts.thinking))
    if token_ids is None:
        return len(_ids(tokenizer, parts.thinking + fmt.close))
    ids = list(token_ids)
    low, high = 1, len(ids)
    while low < high:
        mid = (low + high) // 2
        if fmt.close in tokenizer.decode(ids[:mid], skip_special_tokens=False):
            high = mid
        else:
            low = mid + 1
    return low


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]
