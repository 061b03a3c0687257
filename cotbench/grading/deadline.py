"""A verdict's deadline, and the alarm that enforces it inside a process that can be killed: the part of the
grading sandbox that both sides use (``sandbox`` and the worker process, ``_worker``), so neither imports the
other back.

``alarm(budget_s)`` is a SIGALRM timer in the process's main thread that raises ``GradingTimeout``, a
``BaseException`` so that no library's ``except Exception`` swallows it, and that fires again every 50 ms until
disarmed, in case one did. It cannot interrupt C code, so it is used only inside a process that is itself
killed ``HARD_GRACE_S`` past the deadline.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager

HARD_GRACE_S = 0.75  # past the budget, a worker stuck in C code is killed


class GradingTimeout(BaseException):
    """The verdict's time ran out. A BaseException: math-verify and sympy catch ``Exception`` internally."""


class Deadline:
    def __init__(self, budget_s: float | None):
        self.budget_s = budget_s
        self.started = time.monotonic()

    def remaining(self) -> float | None:
        if self.budget_s is None or self.budget_s <= 0:
            return None
        return max(0.0, self.budget_s - (time.monotonic() - self.started))

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def alarm(budget_s: float | None):
    """Raise ``GradingTimeout`` in this (main) thread once ``budget_s`` has passed; a no-op without a budget
    or off the main thread (there, the process around it is the limit)."""
    usable = (budget_s is not None and budget_s > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def on_alarm(signum, frame):
        raise GradingTimeout(f"exceeded {budget_s:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(budget_s, 1e-3), 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
