"""Where symbolic work runs: somewhere that can be stopped at a deadline, on any thread, on any input.

Two mechanisms, one rule (the deadline counts from when the work starts, never from when it was queued):
- ``alarm(budget_s)`` (``deadline.py``): a SIGALRM timer that raises ``GradingTimeout`` in the process's main
  thread; it cannot interrupt C code, so it is used only inside a process that is itself killed past the
  deadline (a grading-pool worker, or the helper below).
- ``HelperProcess``: one worker process (``_worker``) that runs symbolic checks for callers outside a pool
  (``cotbench.grade``, lm-eval's ``process_results``, ``cotbench grade``), each under the alarm; it is killed
  when a check runs ``HARD_GRACE_S`` past its budget and a fresh one starts; the caller gets
  ``GradingTimeout``.
"""
from __future__ import annotations

import atexit
import os
import threading
from typing import Any, Callable

from cotbench.grading.deadline import HARD_GRACE_S, GradingTimeout

class SymbolicCrash(Exception):
    """The process doing a symbolic check died (a crash in C code, or memory)."""


class HelperProcess:
    """A killable worker for symbolic checks, started on first use, replaced after a kill or a fork.

    Concurrent callers take turns (one check at a time); use ``GradingPool`` for throughput.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._worker = None
        self._pid = None

    def run(self, fn: Callable, args: tuple, budget_s: float | None) -> Any:
        """``fn(*args)`` in the helper; ``GradingTimeout`` if it cannot finish within ``budget_s``."""
        from cotbench.grading._worker import Worker, WorkerDied

        if budget_s is not None and budget_s <= 0:
            raise GradingTimeout("no time left")
        with self._lock:
            if self._worker is None or self._pid != os.getpid():
                self._worker, self._pid = Worker(), os.getpid()
            worker = self._worker
            try:
                worker.ensure_ready()  # a fresh worker's imports (~1 s) are not part of any deadline
                worker.submit(fn, args, budget_s)
                answer = worker.collect(1e9 if budget_s is None else budget_s + HARD_GRACE_S)
            except WorkerDied as exc:
                raise SymbolicCrash(str(exc)) from None
            if answer is None:
                worker.kill()  # stuck in C code past the alarm: the next check starts a fresh worker
                raise GradingTimeout(f"exceeded {budget_s:g}s (helper killed)")
        status, value = answer
        if status == "timeout":
            raise GradingTimeout(f"exceeded {budget_s:g}s")
        if status == "error":
            raise SymbolicCrash(value)
        return value

    def close(self) -> None:
        with self._lock:
            if self._worker is not None and self._pid == os.getpid():
                self._worker.kill()
            self._worker = None


def run_inline(fn: Callable, args: tuple, budget_s: float | None) -> Any:
    """Inside a grading-pool worker: the verdict's alarm is already armed and the pool kills past it."""
    return fn(*args)


HELPER = HelperProcess()
atexit.register(HELPER.close)
