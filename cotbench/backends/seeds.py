"""One seed per request, the same on every engine."""
from __future__ import annotations

import hashlib


def request_seed(seed: int, request_id: str, n_bytes: int = 8) -> int:
    """The seed of one request's own generator, from the run's ``--seed`` and the request's id (its sample key):
    a sampled response depends on neither its batch mates nor the order requests run in, and the K samples of a
    problem (different keys) differ. ``n_bytes``: the seed's width an engine takes (vLLM and servers: 4)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{request_id}".encode()).digest()[:n_bytes], "big")
