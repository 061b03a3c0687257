"""Grading off the generation thread: worker processes, each grading on its own main thread so the
per-check timer works; a worker that hangs past a hard deadline is killed and its verdict is 'timeout'."""
from __future__ import annotations

import multiprocessing as mp
import time
from typing import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from cotbench.grading.grader import grade
from cotbench.records import Grade


class GradingPool:
    def __init__(self, protocol: str, timeout_s: float, workers: int = 1):
        self.protocol, self.timeout_s, self.workers = protocol, timeout_s, workers
        # A verdict the worker itself could not time out (stuck in C code) is abandoned after this.
        self.hard_deadline_s = 4 * timeout_s + 30
        self._pending: dict[Future, tuple[str, str, str, float]] = {}  # future -> (key, response, gold, t)
        self._inline: list[tuple[str, Grade]] = []
        self._executor = self._new_executor() if workers > 0 else None

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn: workers must not inherit torch's threads from a forked parent
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))

    def submit(self, key: str, response: str, gold: str) -> None:
        if self._executor is None:
            self._inline.append((key, grade(response, gold, self.protocol, self.timeout_s)))
            return
        future = self._executor.submit(grade, response, gold, self.protocol, self.timeout_s)
        self._pending[future] = (key, response, gold, time.monotonic())

    def ready(self) -> list[tuple[str, Grade]]:
        """Verdicts finished so far, without waiting."""
        done = [f for f in self._pending if f.done()]
        return self._take_inline() + [self._collect(f) for f in done]

    def finish(self, on_progress: Callable[[int], None] | None = None) -> list[tuple[str, Grade]]:
        """Wait for every submitted verdict; ``on_progress(n)`` is told as each n more come in."""
        results = self._take_inline()
        while self._pending:
            done, _ = wait(list(self._pending), timeout=1.0, return_when=FIRST_COMPLETED)
            results += [self._collect(f) for f in done]
            if on_progress and done:
                on_progress(len(done))
            overdue = [f for f, (*_, t) in self._pending.items() if time.monotonic() - t > self.hard_deadline_s]
            if overdue:
                results += [self._give_up(f, "timeout: grading worker stopped answering") for f in overdue]
                self._restart()
        return results

    def _take_inline(self) -> list[tuple[str, Grade]]:
        taken, self._inline = self._inline, []
        return taken

    def _collect(self, future: Future) -> tuple[str, Grade]:
        key, _, gold, _ = self._pending.pop(future)
        try:
            return key, future.result()
        except BrokenProcessPool:
            self._restart()
            return key, Grade(False, None, gold, self.protocol, "error: grading worker crashed")
        except Exception as exc:  # grading never crashes a run
            return key, Grade(False, None, gold, self.protocol, f"error: {exc!r}")

    def _give_up(self, future: Future, why: str) -> tuple[str, Grade]:
        key, _, gold, _ = self._pending.pop(future)
        future.cancel()
        return key, Grade(False, None, gold, self.protocol, why)

    def _restart(self) -> None:
        """Kill the workers and hand what they still held to fresh ones."""
        old, self._executor = self._executor, self._new_executor()
        for proc in list(getattr(old, "_processes", {}).values()):
            proc.kill()
        old.shutdown(wait=False, cancel_futures=True)
        stranded, self._pending = self._pending, {}
        for future, (key, response, gold, _) in stranded.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                self._inline.append((key, future.result()))
            else:
                self.submit(key, response, gold)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
