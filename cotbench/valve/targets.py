"""Short target chains for CoT-Valve training, built from GSM8K train reference solutions (never committed:
the command writes them from the data directory). Two styles, both ending in ``\\boxed{answer}`` so that every
grading preset reads the answer:

- ``solutions``: the reference solution as written, calculator annotations ``<<48/2=24>>`` removed and
  ``#### 72`` turned into ``The final answer is \\boxed{72}.``; GSM8K's own short chains, the paper's short end.
- ``equations``: the calculator equations alone, one per line (the shipped SmolLM2 valve's target).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from cotbench.adapters import DataOptions
from cotbench.adapters.base import load_rows
from cotbench.adapters.gsm8k import GSM8K, gsm8k_gold
from cotbench.files import write_text

STYLES = ("solutions", "equations")
_CALCULATOR = re.compile(r"<<([^>]*)>>")


def _final(answer: str, where: str) -> str:
    return f"The final answer is \\boxed{{{gsm8k_gold(answer, where)}}}."


def equations_only(answer: str, where: str) -> str | None:
    """GSM8K reference answer -> its calculator equations, one per line, then the boxed final answer."""
    equations = _CALCULATOR.findall(answer.rsplit("####", 1)[0])
    if not equations:
        return None  # a few rows have no annotations; they would teach an empty chain
    return "\n".join(e.strip() for e in equations) + "\n" + _final(answer, where)


def reference_solution(answer: str, where: str) -> str | None:
    """GSM8K reference answer -> its text without calculator annotations, then the boxed final answer."""
    text = _CALCULATOR.sub("", answer.rsplit("####", 1)[0]).strip()
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return "\n".join(lines) + "\n" + _final(answer, where) if lines else None


def write_training_data(data_dir: str | Path | None, out_file: str | Path, n_rows: int, style: str) -> int:
    """Write (question, solution) JSONL from the first ``n_rows`` GSM8K train rows; returns the rows written
    (a row whose chain would be empty is skipped)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    chain = equations_only if style == "equations" else reference_solution
    rows = load_rows("gsm8k", "train", DataOptions(data_dir=Path(data_dir) if data_dir else None), GSM8K.hub)
    lines = []
    for where, row in rows[:n_rows]:
        solution = chain(row["answer"], where)
        if solution:
            lines.append(json.dumps({"question": row["question"], "solution": solution}))
    write_text(out_file, "".join(line + "\n" for line in lines))
    return len(lines)
