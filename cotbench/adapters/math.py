"""MATH and MATH-500: gold is the ``answer`` field, else the last ``\\boxed{}`` of ``solution``."""
from __future__ import annotations

from cotbench.adapters.base import HubSource, require
from cotbench.adapters.file_task import FileTask
from cotbench.errors import DataError
from cotbench.grading.extract import last_boxed
from cotbench.records import Problem


def math_gold(row: dict, where: str) -> str:
    answer = row.get("answer")
    if answer is not None:
        return str(answer).strip()
    boxed = last_boxed(require(row, "solution", where))
    if boxed is None:
        raise DataError(f"{where}: no 'answer' field and no \\boxed{{}} in 'solution'.")
    return boxed


def _level(value) -> int | None:
    # MATH-500 stores 3; Hendrycks' MATH stores "Level 3"; two MATH items say "Level ?".
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return int(digits) if digits else None


def _make(task: str):
    def to_problem(row: dict, where: str, split: str, index: int) -> Problem:
        return Problem(
            task=task,
            problem_id=next((str(row[k]) for k in ("unique_id", "idx") if row.get(k) is not None), f"{split}-{index}"),
            question=require(row, "problem", where),
            gold=math_gold(row, where),
            metadata={"level": _level(row.get("level")), "subject": row.get("subject") or row.get("type"),
                      "source": where, "reference": row.get("solution")},
        )

    return to_problem


def math_solution(row: dict) -> str:
    return row["solution"]


MATH500 = FileTask("math500", _make("math500"), HubSource("HuggingFaceH4/MATH-500"), few_shot_split=None)
MATH = FileTask("math", _make("math"), HubSource("DigitalLearningGmbH/MATH-lighteval"), to_solution=math_solution)
