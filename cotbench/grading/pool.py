"""Grading beside generation: worker processes (``_worker``), each verdict under its own deadline.

- The deadline of a verdict counts from when a worker *starts* it (the job is handed to an idle worker and
  timed from then), never from when it was queued: a queue of thousands behind one worker on a loaded
  machine times nothing out.
- Inside the worker the whole verdict runs under a SIGALRM alarm; C code that outlives it is killed
  ``HARD_GRACE_S`` later and a fresh worker takes its place.
- A verdict that times out, whose worker died, or that the grader failed on (``error``) is retried once, in a
  fresh worker when the first one was killed or failed; if it fails again it is stored as ``timeout`` /
  ``error``, which summaries count apart and keep out of accuracy, never as a wrong answer.
"""
from __future__ import annotations

import select
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from cotbench.grading._worker import Worker, WorkerDied
from cotbench.grading.config import GradingConfig, resolve
from cotbench.grading.grader import grade, grade_in_worker
from cotbench.grading.deadline import HARD_GRACE_S
from cotbench.records import Grade

MAX_ATTEMPTS = 2  # a timeout or a crash gets one more try


@dataclass
class _Job:
    key: str
    response: str
    gold: str
    truncated: bool = False  # the response stopped at the length cap
    attempt: int = 1


class GradingPool:
    def __init__(self, protocol: str | GradingConfig, timeout_s: float, workers: int = 1):
        self.config, self.timeout_s, self.workers = resolve(protocol), timeout_s, workers
        self.budget_s = timeout_s if timeout_s and timeout_s > 0 else None
        self._queue: deque[_Job] = deque()
        self._done: list[tuple[str, Grade]] = []
        self._workers = [Worker() for _ in range(workers)]
        self.n_retried = 0
        for w in self._workers:
            w.start()  # boot in the background while generation starts

    @property
    def n_pending(self) -> int:
        return len(self._queue) + sum(w.busy for w in self._workers)

    def submit(self, key: str, response: str, gold: str, truncated: bool = False) -> None:
        """Queue one verdict; ``truncated``: the response stopped at the length cap (``grade``'s rule)."""
        if not self._workers:
            self._done.append((key, grade(response, gold, self.config, self.timeout_s, truncated)))
            return
        self._queue.append(_Job(key, response, gold, truncated))
        self._pump(0.0)

    def ready(self, wait_s: float = 0.0) -> list[tuple[str, Grade]]:
        """Verdicts finished so far, waiting up to ``wait_s`` for the first of them."""
        self._pump(wait_s if not self._done else 0.0)
        taken, self._done = self._done, []
        return taken

    def finish(self, on_progress: Callable[[int], None] | None = None) -> list[tuple[str, Grade]]:
        """Wait for every submitted verdict; ``on_progress(n)`` is told as each n more come in."""
        results = self.ready()
        while self.n_pending:
            got = self.ready(0.2)
            if got and on_progress:
                on_progress(len(got))
            results += got
        return results

    # -- the dispatcher: hand jobs to idle workers, collect answers, kill overdue ones
    def _pump(self, wait_s: float) -> None:
        for w in self._workers:
            if not w.busy and self._queue:
                self._hand_over(w)
        busy = [w for w in self._workers if w.busy]
        if not busy:
            return
        readable = select.select(busy, [], [], self._wait(busy, wait_s))[0]
        for w in busy:
            job = w.job
            try:
                answer = w.collect(0.0) if w in readable else None
            except WorkerDied as exc:
                self._settle(job, Grade(False, None, job.gold, self.config.name,
                                        f"error: grading worker died ({exc})", status="error"), fresh=True)
                continue
            if answer is not None:
                verdict = self._verdict(job, answer)
                if verdict.status == "error":  # the grader failed in this worker: its retry gets a fresh one
                    w.kill()
                    w.start()
                self._settle(job, verdict, fresh=verdict.status == "error")
            elif w.overdue(HARD_GRACE_S):
                w.kill()  # stuck in C code past its alarm; the retry goes to a fresh worker
                w.start()
                self._settle(job, self._timeout(job, "worker killed"), fresh=True)
        for w in self._workers:
            if not w.busy and self._queue:
                self._hand_over(w)

    def _wait(self, busy: list[Worker], wait_s: float) -> float:
        if self.budget_s is None:
            return wait_s
        now = time.monotonic()
        next_due = min(w.started_at + self.budget_s + HARD_GRACE_S - now for w in busy)
        return max(0.0, min(wait_s, next_due + 0.01))

    def _hand_over(self, w: Worker) -> None:
        job = self._queue.popleft()
        try:
            if not w.ensure_ready():
                self._queue.appendleft(job)  # still booting: try again on the next pump
                return
            w.submit(grade_in_worker, (job.response, job.gold, self.config, self.timeout_s, job.truncated),
                     self.budget_s, job)
        except WorkerDied as exc:
            w.start()
            self._settle(job, Grade(False, None, job.gold, self.config.name, f"error: grading worker died ({exc})",
                                    status="error"), fresh=True)

    def _verdict(self, job: _Job, answer) -> Grade:
        status, value = answer
        if status == "ok":
            return value
        if status == "timeout":
            return self._timeout(job, "alarm")
        return Grade(False, None, job.gold, self.config.name, f"error: {value}"[:300], status="error")

    def _timeout(self, job: _Job, how: str) -> Grade:
        return Grade(False, None, job.gold, self.config.name,
                     f"timeout: no verdict within {self.timeout_s:g}s ({how})", status="timeout")

    def _settle(self, job: _Job, verdict: Grade, fresh: bool) -> None:
        if not verdict.judged and job.attempt < MAX_ATTEMPTS:
            self.n_retried += 1
            retry = _Job(job.key, job.response, job.gold, job.truncated, job.attempt + 1)
            self._queue.appendleft(retry)
            return
        if job.attempt > 1 and not verdict.judged:
            verdict = Grade(False, None, verdict.gold, verdict.protocol, verdict.reason + "; also on a second try",
                            status=verdict.status)
        self._done.append((job.key, verdict))

    def close(self) -> None:
        for w in self._workers:
            w.kill()
        self._workers = []
