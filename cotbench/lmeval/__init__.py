"""lm-evaluation-harness glue: cotbench tasks (``tasks/``), the ``valve`` model, and the ``cotbench lm-eval`` shim."""
from pathlib import Path

TASKS_DIR = Path(__file__).with_name("tasks")  # pass to `lm_eval --include_path`; `cotbench lm-eval tasks-path` prints it

__all__ = ["TASKS_DIR"]
