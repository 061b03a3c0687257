"""Writing files so that nothing is ever half-written or lost to a concurrent writer: the one mechanism.

- ``atomic_write(path)``: write to a uniquely named temporary file beside ``path``, flush it to disk, then
  rename it over ``path`` in one step. A reader sees the old file or the new one, never a mixture; two
  writers never share a temporary name (each gets its own from ``tempfile``), so the last rename wins whole.
- ``locked(path)``: an inter-process lock (``filelock``) for read-modify-write files such as
  ``leaderboard.csv``, so concurrent ``cotbench leaderboard add`` lose no rows.
- ``RunDirLock``: one process at a time per run directory; a second ``cotbench run`` on the same ``--out``
  is refused at once with a message saying so.

Failures to write (a full disk, a read-only folder) become ``StorageError`` with the path and what to do.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from cotbench.errors import RunDirError, StorageError

LOCK_NAME = ".cotbench.lock"


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """``with atomic_write(p) as f: f.write(...)``: ``p`` is replaced only if the block finishes."""
    path = Path(path)
    binary = "b" in mode
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _storage_error(path, exc) from None
    try:
        with os.fdopen(fd, mode, **({} if binary else {"encoding": encoding, "newline": ""})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise _storage_error(path, exc) from None
    except BaseException:
        _remove(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb", None) as handle:
        handle.write(data)


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _storage_error(path: Path, exc: OSError) -> StorageError:
    import errno

    hint = {errno.ENOSPC: "the disk is full: free some space", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}.get(
        exc.errno, exc.strerror or str(exc))
    return StorageError(f"cannot write {path}: {hint}. Nothing already stored is lost; rerun the same command "
                        "once this is fixed and it goes on from where it stopped.")


@contextmanager
def atomic_dir(target: str | Path, replace: bool = False) -> Iterator[Path]:
    """``with atomic_dir(d) as staging:`` fill ``staging``; it becomes ``d`` only if the block finishes, so a
    directory is whole or absent. ``replace``: an existing ``d`` is swapped out (checkpoints); otherwise an
    existing non-empty ``d`` is an error (finished results are never overwritten)."""
    import shutil

    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    except OSError as exc:
        raise _storage_error(target, exc) from None
    try:
        yield staging
        if target.exists():
            if replace:
                old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
                os.replace(target, old / target.name)
                os.replace(staging, target)
                shutil.rmtree(old, ignore_errors=True)
                return
            if any(target.iterdir()):
                raise StorageError(f"{target} already exists and is not empty: choose another output, or delete it.")
            target.rmdir()  # an empty directory made beforehand is fine to replace
        os.replace(staging, target)
    except OSError as exc:
        raise _storage_error(target, exc) from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def locked(path: str | Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` (a ``<path>.lock`` file beside it) inside the block."""
    from filelock import FileLock, Timeout

    lock = FileLock(f"{path}.lock")
    try:
        with lock.acquire(timeout=timeout_s):
            yield
    except Timeout:
        raise StorageError(f"{path} has been locked by another cotbench process for {timeout_s:g} s; if none is "
                           f"running, delete {path}.lock and retry.") from None


class RunDirLock:
    """Exclusive use of a run directory by one process; released on close or when the process ends."""

    def __init__(self, run_dir: str | Path):
        from filelock import FileLock, Timeout

        self.path = Path(run_dir) / LOCK_NAME
        self._lock = FileLock(str(self.path))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise RunDirError(f"run directory {run_dir} is in use by another cotbench process (it holds "
                              f"{self.path}). Wait for it to finish; to sweep beside it, give `cotbench run` another --out.") from None

    def release(self) -> None:
        self._lock.release()
