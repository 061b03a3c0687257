"""What every task adapter shares: data options, locating local files, reading JSONL, the Hub fallback.

Local layout (the same as ``../shared/data``): ``<data_dir>/<task>/<split>.jsonl``. ``data_dir`` comes
from ``--data-dir`` or the ``COTBENCH_DATA_DIR`` environment variable; when no local file is there and
the ``datasets`` package can reach the Hugging Face Hub, the Hub copy is used instead.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from cotbench.errors import DataError
from cotbench.records import Problem

DATA_DIR_ENV = "COTBENCH_DATA_DIR"


@dataclass(frozen=True)
class DataOptions:
    data_dir: Path | None = None  # None: $COTBENCH_DATA_DIR, then the Hub
    split: str | None = None  # None: the task's evaluation split
    # The `jsonl` task: a user's own GSM8K/MATH-style file.
    data_file: Path | None = None
    question_field: str = "question"
    answer_field: str = "answer"
    id_field: str | None = None  # None: the 1-based line number
    answer_format: str = "auto"  # auto | gsm8k ("#### N") | boxed (last \boxed{}) | raw
    # The embedded `arithmetic` task.
    n_generated: int = 30  # problems: 30 × 5 α, about 27 s (AMX, bf16) to ~130 s (AVX2, fp32, estimated) on 2 cores; intervals ~±17 points
    difficulty: int = 1  # one single-digit addition: SmolLM2-135M lands off the floor (arithmetic.py)
    seed: int = 0


@dataclass(frozen=True)
class HubSource:
    path: str
    name: str | None = None
    splits: tuple[tuple[str, str], ...] = (("test", "test"), ("train", "train"))  # ours -> Hub's


class TaskAdapter(Protocol):
    """Yields problems. Implementations are registered by name in ``cotbench.adapters.TASKS``."""

    name: str
    # A task may carry its own instruction (used unless the run gives one); most use prompts.DEFAULT_INSTRUCTION.

    def load(self, options: DataOptions, limit: int | None = None) -> list[Problem]: ...

    def few_shot(self, k: int, options: DataOptions) -> list[tuple[str, str]]:
        """k (question, worked solution ending in \\boxed{answer}) pairs from a split not evaluated."""
        ...


def resolve_data_dir(options: DataOptions) -> Path | None:
    if options.data_dir is not None:
        return Path(options.data_dir)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else None


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line names the file and line."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}. Check the path.") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}). "
                                "Each line must be one JSON object.") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}.")
            yield number, obj


def require(row: dict[str, Any], field: str, where: str) -> Any:
    if field not in row or row[field] is None:
        raise DataError(f"{where}: missing field '{field}' (fields present: {', '.join(sorted(row)) or 'none'}).")
    return row[field]


def load_rows(task: str, split: str, options: DataOptions, hub: HubSource | None) -> list[tuple[str, dict]]:
    """(where, row) pairs, from the local data directory if it has the file, else from the Hub."""
    data_dir = resolve_data_dir(options)
    tried: list[str] = []
    if data_dir is not None:
        path = data_dir / task / f"{split}.jsonl"
        if path.is_file():
            return [(f"{path}:{n}", row) for n, row in read_jsonl(path)]
        tried.append(f"no file {path}")
    else:
        tried.append(f"no data directory given (--data-dir or ${DATA_DIR_ENV})")
    if hub is not None:
        rows, why = _from_hub(hub, split)
        if rows is not None:
            return [(f"{hub.path}[{split}]#{i}", row) for i, row in enumerate(rows)]
        tried.append(why)
    raise DataError(
        f"cannot load task '{task}' split '{split}': {'; '.join(tried)}. Either point --data-dir (or "
        f"${DATA_DIR_ENV}) at a directory holding {task}/{split}.jsonl, or go online and install "
        f"`datasets` so cotbench can fetch {hub.path if hub else 'it'} from the Hugging Face Hub."
    )


def _from_hub(hub: HubSource, split: str) -> tuple[list[dict] | None, str]:
    hub_split = dict(hub.splits).get(split)
    if hub_split is None:
        return None, f"the Hub copy {hub.path} has no '{split}' split"
    try:
        import datasets
    except ImportError:
        return None, "the `datasets` package is not installed (pip install 'cotbench[hub]')"
    try:
        return list(datasets.load_dataset(hub.path, hub.name, split=hub_split)), ""
    except Exception as exc:  # offline, gated, renamed: all end the same way for the user
        return None, f"the Hub copy {hub.path} could not be loaded ({type(exc).__name__}: {str(exc)[:160]})"


def take(problems: Sequence[Problem], limit: int | None) -> list[Problem]:
    """The first ``limit`` problems (all for None). Ids must be unique: samples, pairs with the base and
    resumed runs are matched by id, so two problems under one id would silently merge."""
    seen: dict[str, Problem] = {}
    for problem in problems:
        if problem.problem_id in seen:
            first, second = seen[problem.problem_id], problem
            raise DataError(f"two problems of task {problem.task!r} have the id {problem.problem_id!r} "
                            f"({first.metadata.get('source', 'one')} and {second.metadata.get('source', 'another')}); "
                            "ids must be unique: fix the data, or leave --id-field out to number rows by line")
        seen[problem.problem_id] = problem
    return list(problems if limit is None else problems[:limit])
