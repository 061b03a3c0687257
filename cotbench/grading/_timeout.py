"""A per-call time limit that works on and off the main thread.

math-verify limits time with ``signal.alarm``, which only works in a process's main thread. We switch
its own limit off and apply ours: a SIGALRM timer on the main thread, or a child process elsewhere.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import threading
from typing import Any, Callable


class CallTimedOut(Exception):
    pass


def call_with_timeout(fn: Callable[..., Any], args: tuple, timeout_s: float) -> Any:
    if timeout_s is None or timeout_s <= 0:
        return fn(*args)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        return _with_alarm(fn, args, timeout_s)
    return _in_child_process(fn, args, timeout_s)


def _with_alarm(fn, args, timeout_s):
    def on_alarm(signum, frame):
        raise CallTimedOut(f"exceeded {timeout_s:g}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _child(conn, fn, args):
    try:
        conn.send((True, fn(*args)))
    except BaseException as exc:  # sent back and re-raised in the parent
        conn.send((False, repr(exc)))


def _in_child_process(fn, args, timeout_s):
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout_s):
            raise CallTimedOut(f"exceeded {timeout_s:g}s")
        ok, value = parent.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
    if not ok:
        raise RuntimeError(value)
    return value
