"""Stop strings, shared by both schedulers so that they cut texts and count tokens the same way."""
from __future__ import annotations


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return text if cut < 0 else text[:cut]


def stop_end(tokenizer, generated: list[int], stops: tuple[str, ...]) -> int | None:
    """Length of the shortest prefix that holds a stop string, checked only when the newest tokens could
    have completed one (a stop of L characters lies within the last L + 4 tokens)."""
    tail = tokenizer.decode(generated[-(max(len(s) for s in stops) + 4):], skip_special_tokens=True)
    if not any(s in tail for s in stops):
        return None
    return shortest_prefix_with_stop(tokenizer, generated, stops)


def shortest_prefix_with_stop(tokenizer, ids: list[int], stops: tuple[str, ...]) -> int | None:
    """Binary search: containing a stop string is monotone in the prefix length."""
    def has_stop(n: int) -> bool:
        text = tokenizer.decode(ids[:n], skip_special_tokens=True)
        return any(s in text for s in stops)

    if not has_stop(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if has_stop(mid) else (mid + 1, hi)
    return lo
