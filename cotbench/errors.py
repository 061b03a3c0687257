"""One base error type. `cli.py` catches it once, prints the message and exits non-zero.

Every message says what was wrong, the value seen, and what to do next.
"""


class CotbenchError(Exception):
    """Base class of every error cotbench raises on purpose."""


class ConfigError(CotbenchError, ValueError):
    """A setting is invalid. Holds every problem found, not just the first."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = self.problems
        text = lines[0] if len(lines) == 1 else "invalid settings:\n" + "\n".join(f"  - {p}" for p in lines)
        super().__init__(text)


class UnknownNameError(CotbenchError, KeyError):
    """A registry miss (unknown task, backend, protocol)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DataError(CotbenchError):
    """A dataset cannot be found, read or parsed."""


class ModelLoadError(CotbenchError):
    """A base model cannot be found or loaded."""


class ValveError(CotbenchError):
    """A valve (LoRA adapter) is missing, malformed, or does not fit the base model."""


class RunDirError(CotbenchError):
    """A run directory is missing, in use by another process, unreadable, or written by an incompatible
    configuration."""


class StorageError(CotbenchError, OSError):
    """A file cannot be written (full disk, read-only folder) or a lock cannot be had."""
