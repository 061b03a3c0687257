"""A user's own GSM8K- or MATH-style JSONL file (``--data FILE``), field names given as options."""
from __future__ import annotations

from dataclasses import dataclass

from cotbench.adapters.base import DataOptions, read_jsonl, require, take
from cotbench.adapters.gsm8k import gsm8k_gold
from cotbench.errors import ConfigError, DataError
from cotbench.grading.extract import last_boxed
from cotbench.records import Problem

ANSWER_FORMATS = ("auto", "gsm8k", "boxed", "raw")


def parse_gold(raw: str, answer_format: str, where: str) -> str:
    """auto: '#### N' if present, else the last \\boxed{} if present, else the text as it is."""
    if answer_format == "gsm8k" or (answer_format == "auto" and "####" in raw):
        return gsm8k_gold(raw, where)
    if answer_format in ("boxed", "auto"):
        boxed = last_boxed(raw)
        if boxed is not None:
            return boxed
        if answer_format == "boxed":
            raise DataError(f"{where}: answer has no \\boxed{{}} (answer format 'boxed').")
    return raw.strip()


@dataclass(frozen=True)
class JsonlTask:
    name: str = "jsonl"

    def load(self, options: DataOptions, limit: int | None = None) -> list[Problem]:
        if options.data_file is None:
            raise ConfigError("task 'jsonl' needs --data FILE (a JSONL file with one problem per line).")
        if options.answer_format not in ANSWER_FORMATS:
            raise ConfigError(f"answer format {options.answer_format!r} is not one of {', '.join(ANSWER_FORMATS)}.")
        problems = []
        for line, row in read_jsonl(options.data_file):
            where = f"{options.data_file}:{line}"
            pid = str(require(row, options.id_field, where)) if options.id_field else str(line)
            raw = str(require(row, options.answer_field, where))
            problems.append(Problem("jsonl", pid, str(require(row, options.question_field, where)),
                                    parse_gold(raw, options.answer_format, where), {"source": where}))
        return take(problems, limit)

    def few_shot(self, k: int, options: DataOptions) -> list[tuple[str, str]]:
        if k:
            raise DataError("task 'jsonl' has no separate split for few-shot examples; use --n-shot 0.")
        return []
