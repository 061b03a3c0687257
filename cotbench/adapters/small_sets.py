"""AIME 2024 (integer answers, some with leading zeros) and SVAMP (float answers, body + question)."""
from __future__ import annotations

from cotbench.adapters.base import HubSource, require
from cotbench.adapters.file_task import FileTask
from cotbench.errors import DataError
from cotbench.records import Problem


def _aime(row: dict, where: str, split: str, index: int) -> Problem:
    raw = str(require(row, "answer", where)).strip()
    try:
        gold = str(int(raw))  # "025" -> "25": AIME answers are integers 0-999
    except ValueError:
        raise DataError(f"{where}: AIME answer {raw!r} is not an integer.") from None
    return Problem("aime24", str(row.get("id", f"{split}-{index}")), require(row, "problem", where), gold,
                   {"source": where})


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _svamp(row: dict, where: str, split: str, index: int) -> Problem:
    body = str(row.get("Body", "")).strip()
    question = str(require(row, "Question", where)).strip()
    return Problem("svamp", str(row.get("ID", f"{split}-{index}")), f"{body} {question}".strip(),
                   _number_text(require(row, "Answer", where)), {"type": row.get("Type"), "source": where})


AIME24 = FileTask("aime24", _aime, HubSource("HuggingFaceH4/aime_2024", splits=(("test", "train"),)),
                  few_shot_split=None)
SVAMP = FileTask("svamp", _svamp, HubSource("ChilleD/SVAMP"), few_shot_split=None)
