"""GSM8K: the gold answer follows ``####`` at the end of ``answer``; thousands commas are stripped."""
from __future__ import annotations

import re

from cotbench.adapters.base import HubSource, require
from cotbench.adapters.file_task import FileTask
from cotbench.errors import DataError
from cotbench.records import Problem

_CALCULATOR = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations, e.g. <<48/2=24>>


def gsm8k_gold(answer: str, where: str) -> str:
    if "####" not in answer:
        raise DataError(f"{where}: GSM8K answer has no '#### <number>' line.")
    return answer.rsplit("####", 1)[1].strip().replace(",", "")


def gsm8k_solution(row: dict) -> str:
    """Reference solution rewritten to end in \\boxed{}, the format our prompt asks for."""
    body, final = row["answer"].rsplit("####", 1)
    return f"{_CALCULATOR.sub('', body).strip()}\nThe final answer is \\boxed{{{final.strip().replace(',', '')}}}."


def _problem(row: dict, where: str, split: str, index: int) -> Problem:
    return Problem(
        task="gsm8k",
        problem_id=f"{split}-{index}",
        question=require(row, "question", where),
        gold=gsm8k_gold(require(row, "answer", where), where),
        metadata={"source": where, "reference": row["answer"]},
    )


GSM8K = FileTask("gsm8k", _problem, HubSource("openai/gsm8k", "main"), to_solution=gsm8k_solution)
