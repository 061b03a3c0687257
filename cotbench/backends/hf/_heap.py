"""Handing freed heap memory back to the operating system (glibc), where the C library can."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, musl, Windows)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """glibc keeps blocks it freed in the heap for reuse, so RSS does not fall when big tensors are freed
    (converted weights, differently sized batch buffers); malloc_trim returns the free pages. ~1.5 ms on a
    fragmented heap (measured)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
