"""Grader identity: derived, never bumped by hand, so a stored verdict always says which grader judged it.

``grader_id(config)`` hashes the source of every module in this package, the versions of the libraries a
verdict depends on (math-verify, its LaTeX parser, sympy) and the protocol's config. Any change to any of
them gives a new id, and a resumed run regrades every verdict stored under another id.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from cotbench.grading.config import GradingConfig, resolve

_LIBRARIES = ("math-verify", "latex2sympy2_extended", "sympy", "antlr4-python3-runtime")


@lru_cache(maxsize=1)
def _code_and_libraries() -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for name in _LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "absent"
        digest.update(f"{name}=={version}\0".encode())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def grader_id(protocol: "str | GradingConfig") -> str:
    """``<protocol>-<12 hex digits>``, e.g. ``math-3f2a9c01b4de``."""
    config = resolve(protocol)
    digest = hashlib.sha256((_code_and_libraries() + repr(config)).encode()).hexdigest()
    return f"{config.name}-{digest[:12]}"
