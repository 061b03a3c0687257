"""Name -> object registries with "did you mean" on a miss (the lm-evaluation-harness message shape)."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from cotbench.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        close = difflib.get_close_matches(name, self._items, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownNameError(f"Unknown {self.kind} '{name}'.{hint} Available: {', '.join(sorted(self._items))}")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
