"""A task backed by JSONL rows (local or Hub): one class, configured per dataset by two small functions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cotbench.adapters.base import DataOptions, HubSource, load_rows, take
from cotbench.errors import DataError
from cotbench.records import Problem

RowToProblem = Callable[[dict, str, str, int], Problem]  # row, where, split, index -> Problem
RowToSolution = Callable[[dict], str]  # row -> worked solution ending in \boxed{answer}


@dataclass(frozen=True)
class FileTask:
    name: str
    to_problem: RowToProblem
    hub: HubSource | None = None
    local_name: str | None = None  # folder under the data dir; defaults to the task name
    eval_split: str = "test"
    few_shot_split: str | None = "train"
    to_solution: RowToSolution | None = None

    def _rows(self, split: str, options: DataOptions) -> list[tuple[str, dict]]:
        return load_rows(self.local_name or self.name, split, options, self.hub)

    def load(self, options: DataOptions, limit: int | None = None) -> list[Problem]:
        split = options.split or self.eval_split
        rows = self._rows(split, options)
        return take([self.to_problem(row, where, split, i) for i, (where, row) in enumerate(rows)], limit)

    def few_shot(self, k: int, options: DataOptions) -> list[tuple[str, str]]:
        if k == 0:
            return []
        if self.few_shot_split is None or self.to_solution is None:
            raise DataError(f"task '{self.name}' has no worked solutions to draw few-shot examples from; use --n-shot 0.")
        rows = self._rows(self.few_shot_split, options)[:k]
        return [(self.to_problem(row, where, self.few_shot_split, i).question, self.to_solution(row))
                for i, (where, row) in enumerate(rows)]
