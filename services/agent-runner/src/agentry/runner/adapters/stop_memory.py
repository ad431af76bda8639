"""In-process stop signal for `agentry dev` and tests; requests expire like the Redis flag does."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class MemoryStopSignal:
    def __init__(self, *, ttl_seconds: float = 86_400, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        # Same TTL for every request and a monotonic clock: expiry order is insertion order.
        self._requested: OrderedDict[str, float] = OrderedDict()
        self._watchers: dict[str, set[asyncio.Event]] = {}

    async def request_stop(self, run_id: str) -> None:
        self._requested[run_id] = self._clock() + self._ttl
        self._requested.move_to_end(run_id)
        for event in self._watchers.get(run_id, ()):
            event.set()

    async def is_stop_requested(self, run_id: str) -> bool:
        self._expire()
        return run_id in self._requested

    @asynccontextmanager
    async def watch(self, run_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        watchers = self._watchers.setdefault(run_id, set())
        watchers.add(event)
        try:
            if await self.is_stop_requested(run_id):
                event.set()
            yield event
        finally:
            watchers.discard(event)
            if not watchers and self._watchers.get(run_id) is watchers:
                del self._watchers[run_id]

    async def close(self) -> None:
        self._watchers.clear()

    def _expire(self) -> None:
        now = self._clock()
        while self._requested:
            run_id, expires_at = next(iter(self._requested.items()))
            if expires_at > now:
                return
            del self._requested[run_id]
