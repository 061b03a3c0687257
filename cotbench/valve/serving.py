"""How α-scaled copies of a valve are named and served: one place for the vLLM backend, ``valve export`` and
the openai backend (which asks a server for them by name), below all three."""
from __future__ import annotations

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM accepts as --max-lora-rank


def served_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of ``rank``."""
    return next((r for r in LORA_RANKS if r >= rank), rank)


def alpha_label(alpha: float) -> str:
    """α as adapter names write it: the shortest text that reads back as exactly this float (``0.5``, ``1``,
    ``1e-07``, ``0.1234567``), so no two α share a name; a minus sign becomes ``m`` (``m0.5``)."""
    value = float(alpha)
    text = f"{value:g}"
    if float(text) != value:
        text = repr(value)
    return text.replace("-", "m")


def adapter_name(alpha: float, template: str = "alpha_{alpha}") -> str:
    """The name of the copy of a valve at strength ``alpha`` (a directory, and the name a server serves)."""
    return template.format(alpha=alpha_label(alpha))
