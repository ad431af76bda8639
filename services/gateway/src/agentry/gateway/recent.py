"""A small bounded cache whose entries lapse: the gateway's memory of what it verified or started
a moment ago (verified access tokens, the runs it just started), so the next request need not ask
again. Per process, never shared: a miss only costs the call the cache saves."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """At most `maxsize` entries (the least recently used goes first), each until its own expiry
    (`ttl` seconds after it was put, or earlier when `put` is given `until`)."""

    def __init__(self, maxsize: int, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._maxsize, self._ttl, self._clock = maxsize, ttl, clock

    def put(self, key: K, value: V, *, until: float | None = None) -> None:
        """Keeps `value` for `ttl` seconds, or until the clock reads `until` if that is sooner."""
        expires = self._clock() + self._ttl
        if until is not None:
            expires = min(expires, until)
        self._items[key] = (expires, value)
        self._items.move_to_end(key)
        while len(self._items) > self._maxsize:
            self._items.popitem(last=False)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def pop(self, key: K) -> V | None:
        """The entry (None when absent or lapsed), removed."""
        item = self._items.pop(key, None)
        if item is None or item[0] <= self._clock():
            return None
        return item[1]

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
