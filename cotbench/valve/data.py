"""Training data for valves: plain (question, solution) files and MixChain rows.

MixChain layout (as published in horseee/MixChain-Z-GSM8K and MixChain-Z-PRM12K): ``question``, ``answer``,
``target``, and for each level k ``solution_k`` (text), ``solution_k_token`` (its length) and ``correct_k``.
Level 0 is the shortest chain.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from cotbench.adapters.base import read_jsonl, require
from cotbench.errors import DataError

_SOLUTION = re.compile(r"^solution_(\d+)$")


@dataclass(frozen=True)
class TrainExample:
    question: str
    solution: str
    beta: float = 1.0  # valve strength this example trains at (CoT-Valve++); 1 elsewhere
    source: str = ""  # file:line, for error messages and logs


@dataclass(frozen=True)
class MixChainRow:
    question: str
    solutions: tuple[str, ...]  # index = level; level 0 is the shortest
    n_tokens: tuple[int | None, ...]
    correct: tuple[bool, ...]
    source: str


def read_rows(path: str | Path) -> list[tuple[str, dict]]:
    """(where, row) from JSONL or Parquet."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        return [(f"{path} row {i + 1}", row) for i, row in enumerate(frame.to_dict("records"))]
    return [(f"{path}:{n}", row) for n, row in read_jsonl(path)]


def read_pairs(path: str | Path, question_field: str = "question", solution_field: str = "solution") -> list[TrainExample]:
    """A plain CoT-Valve training file: one (question, target chain) per row."""
    examples = [TrainExample(str(require(row, question_field, where)), str(require(row, solution_field, where)),
                             source=where) for where, row in read_rows(path)]
    if not examples:
        raise DataError(f"{path} holds no training rows.")
    return examples


def read_mixchain(path: str | Path) -> list[MixChainRow]:
    rows = []
    for where, row in read_rows(path):
        levels = sorted(int(m.group(1)) for key in row if (m := _SOLUTION.match(key)))
        if not levels:
            raise DataError(f"{where}: no solution_0 ... solution_k fields: not a MixChain row.")
        texts = tuple(str(row[f"solution_{k}"]) for k in levels if row.get(f"solution_{k}") not in (None, ""))
        tokens = tuple(_int_or_none(row.get(f"solution_{k}_token")) for k in levels)
        correct = tuple(bool(row.get(f"correct_{k}", True)) for k in levels)
        rows.append(MixChainRow(str(require(row, "question", where)), texts, tokens, correct, where))
    if not rows:
        raise DataError(f"{path} holds no MixChain rows.")
    return rows


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def plusplus_examples(rows: Sequence[MixChainRow], count_tokens: Callable[[str], int]) -> list[TrainExample]:
    """Every correct solution with β = 1 − (m − m_min)/(m_max − m_min) over its question's solutions.

    The shortest solution trains at β = 1 (the full valve), the longest at β = 0 (the base model)."""
    examples = []
    for row in rows:
        kept = [(text, n if n is not None else count_tokens(text))
                for text, n, ok in zip(row.solutions, row.n_tokens + (None,) * len(row.solutions), row.correct) if ok]
        if len(kept) < 2:
            raise DataError(f"{row.source}: {len(kept)} correct solution(s); CoT-Valve++ needs at least two per "
                            "question, because β compares a solution's length with its question's shortest and longest.")
        lengths = [n for _, n in kept]
        low, high = min(lengths), max(lengths)
        if low == high:
            raise DataError(f"{row.source}: all solutions have {low} tokens, so β = 1 − (m − m_min)/(m_max − m_min) "
                            "is undefined (0/0). Drop the row or give solutions of different lengths.")
        examples += [TrainExample(row.question, text, 1.0 - (n - low) / (high - low), row.source) for text, n in kept]
    return examples


def level_examples(rows: Sequence[MixChainRow], level: int) -> list[TrainExample]:
    """One progressive stage: each question's solution at ``level`` (when present and correct)."""
    examples = [TrainExample(r.question, r.solutions[level], source=r.source)
                for r in rows if level < len(r.solutions) and r.correct[level]]
    if not examples:
        raise DataError(f"no correct solution_{level} in the MixChain data: cannot train that stage.")
    return examples


def levels_longest_first(rows: Sequence[MixChainRow]) -> list[int]:
    return list(range(max(len(r.solutions) for r in rows) - 1, -1, -1))
