"""A grading worker process and its parent-side handle.

Workers are started as ``python -m cotbench.grading._worker``: a fresh interpreter that never imports the
caller's ``__main__``. multiprocessing's (and so pebble's) ``spawn`` re-runs the caller's script in every
child, which breaks ``cotbench.grade`` in any script without an ``if __name__ == "__main__"`` guard, and
``fork`` copies a process that may be running torch's threads. The protocol is one pickled frame per job
and per answer over the child's stdin/stdout; the parent times each job from the moment it hands it over,
and kills the child when it overruns.
"""
from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import Any, Callable

_HEADER = struct.Struct("!Q")
STARTUP_LIMIT_S = 120.0  # a worker that cannot import sympy in two minutes is broken, not slow


class WorkerDied(Exception):
    """The worker process exited (crashed, killed by the OS for memory, or failed to start)."""


class Worker:
    """One child process running one job at a time. Not thread-safe: callers hold a lock or own it."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None  # when the current job was handed over
        self.budget_s: float | None = None
        self.job: Any = None  # the caller's handle for the current job

    # -- life cycle
    def start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the directory holding the cotbench package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        env.setdefault("OMP_NUM_THREADS", "1")  # sympy needs no thread pool; don't take the sweep's cores
        self.proc = subprocess.Popen([sys.executable, "-m", "cotbench.grading._worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)  # Ctrl-C reaches the parent only
        self._booting = True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_ready(self, wait_s: float = STARTUP_LIMIT_S) -> bool:
        """Start if needed; True once the worker has said it is ready (False: still booting after wait_s)."""
        if not self.alive():
            self.start()
        if self._booting:
            frame = self._read(wait_s)
            if frame is None:
                return False
            if frame != ("ready", None):
                self.kill()
                raise WorkerDied(f"grading worker failed to start: {frame!r}")
            self._booting = False
        return True

    def kill(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
        self.proc, self.started_at, self.budget_s, self.job = None, None, None, None

    # -- jobs
    @property
    def busy(self) -> bool:
        return self.started_at is not None

    def submit(self, fn: Callable, args: tuple, budget_s: float | None, job: Any = None) -> None:
        payload = pickle.dumps((fn.__module__, fn.__qualname__, args, budget_s), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(_HEADER.pack(len(payload)) + payload)
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            self.kill()
            raise WorkerDied(f"grading worker is gone ({exc})") from None
        self.started_at, self.budget_s, self.job = time.monotonic(), budget_s, job

    def overdue(self, grace_s: float) -> bool:
        return (self.busy and self.budget_s is not None
                and time.monotonic() - self.started_at > self.budget_s + grace_s)

    def fileno(self) -> int:
        return self.proc.stdout.fileno()

    def collect(self, wait_s: float) -> tuple[bool, Any] | None:
        """The current job's (finished, (status, value)), or None if not done within ``wait_s``."""
        frame = self._read(wait_s)
        if frame is None:
            return None
        self.started_at, self.budget_s, self.job = None, None, None
        return frame

    def _read(self, wait_s: float):
        if self.proc is None:
            raise WorkerDied("grading worker is not running")
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + max(0.0, wait_s)
        if not select.select([fd], [], [], max(0.0, wait_s))[0]:
            return None
        header = _read_exactly(fd, _HEADER.size, deadline + 30)
        if header is None:
            code = self.proc.poll()
            self.kill()
            raise WorkerDied(f"grading worker exited (code {code})")
        (size,) = _HEADER.unpack(header)
        body = _read_exactly(fd, size, deadline + 30)
        if body is None:
            self.kill()
            raise WorkerDied("grading worker exited mid-answer")
        return pickle.loads(body)


def _read_exactly(fd: int, n: int, until: float) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        if not select.select([fd], [], [], max(0.0, until - time.monotonic()))[0]:
            return None
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# -- the child side

def _write(out, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(data)) + data)
    out.flush()


def serve() -> None:
    from cotbench.grading.deadline import GradingTimeout, alarm
    from cotbench.grading.symbolic import warm_up

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print in a library must not corrupt the protocol
    try:
        warm_up()
        _write(stdout, ("ready", None))
    except Exception as exc:  # reported to the parent, which says so
        _write(stdout, ("failed", repr(exc)))
        return
    while True:
        header = stdin.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the parent closed the pipe: done
        module, name, args, budget_s = pickle.loads(stdin.read(_HEADER.unpack(header)[0]))
        try:
            fn = import_module(module)
            for part in name.split("."):
                fn = getattr(fn, part)
            with alarm(budget_s):
                result = ("ok", fn(*args))
        except GradingTimeout:
            result = ("timeout", None)
        except Exception as exc:
            result = ("error", f"{type(exc).__name__}: {exc}"[:500])
        _write(stdout, result)


if __name__ == "__main__":
    serve()
