"""Task adapters: source rows -> ``Problem`` records. ``TASKS.get(name)`` finds one by name."""
from cotbench.adapters.arithmetic import ArithmeticTask
from cotbench.adapters.base import DATA_DIR_ENV, DataOptions, TaskAdapter, read_jsonl
from cotbench.adapters.gsm8k import GSM8K
from cotbench.adapters.jsonl import JsonlTask
from cotbench.adapters.math import MATH, MATH500
from cotbench.adapters.small_sets import AIME24, SVAMP
from cotbench.registry import Registry

TASKS: Registry[TaskAdapter] = Registry("task")
for _task in (ArithmeticTask(), GSM8K, MATH500, MATH, AIME24, SVAMP, JsonlTask()):
    TASKS.register(_task.name)(_task)

__all__ = ["TASKS", "DataOptions", "TaskAdapter", "DATA_DIR_ENV", "read_jsonl"]
