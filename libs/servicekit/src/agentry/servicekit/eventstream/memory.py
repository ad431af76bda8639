"""In-process event stream for `agentry dev` and tests, with the same trimming and expiry as Redis."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from agentry.servicekit.eventstream.port import SequenceError, StreamEntry


@dataclass(slots=True)
class _Run:
    entries: deque[StreamEntry]
    # Kept apart from `entries` because trimming must not let an old seq be appended again.
    last_seq: int = 0
    expires_at: float | None = None
    waiters: set[asyncio.Future[None]] = field(default_factory=set)


class MemoryEventStream:
    def __init__(
        self,
        *,
        maxlen: int = 10_000,
        ttl_seconds: float = 3600,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._maxlen = maxlen
        self._ttl = ttl_seconds
        self._clock = clock
        self._runs: dict[str, _Run] = {}
        # Every terminal run gets the same TTL from a monotonic clock, so expiry order is the
        # order runs were last marked terminal: sweeping from the front is enough.
        self._expiring: OrderedDict[str, float] = OrderedDict()
        # Readers blocked on a run nobody has written yet (Redis XREAD BLOCK waits for the key too).
        self._pending_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._closed = False

    async def append(self, run_id: str, seq: int, data: bytes, *, terminal: bool = False) -> None:
        self._sweep()
        run = self._runs.get(run_id)
        if run is None:
            run = _Run(entries=deque(maxlen=self._maxlen))
            run.waiters = self._pending_waiters.pop(run_id, set())
            self._runs[run_id] = run
        if seq <= run.last_seq or seq < 1:
            raise SequenceError(f"run {run_id}: seq {seq} is not greater than the last appended seq {run.last_seq}")
        run.entries.append(StreamEntry(seq=seq, data=bytes(data), terminal=terminal))
        run.last_seq = seq
        if terminal:
            run.expires_at = self._clock() + self._ttl
            self._expiring[run_id] = run.expires_at
            self._expiring.move_to_end(run_id)
        waiters, run.waiters = run.waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def read(self, run_id: str, after_seq: int, *, count: int = 500, block_ms: int = 0) -> list[StreamEntry]:
        entries = self._collect(run_id, after_seq, count)
        if entries or block_ms <= 0 or self._closed:
            return entries
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while not entries:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            waiter: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters_for(run_id)
            waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                return []
            finally:
                waiters.discard(waiter)
                if not waiters and self._pending_waiters.get(run_id) is waiters:
                    del self._pending_waiters[run_id]
            entries = self._collect(run_id, after_seq, count)
            if self._closed:
                break
        return entries

    async def first_seq(self, run_id: str) -> int | None:
        self._sweep()
        run = self._runs.get(run_id)
        if run is None or not run.entries:
            return None
        return run.entries[0].seq

    async def delete(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            run = self._runs.pop(run_id, None)
            self._expiring.pop(run_id, None)
            for waiter in (run.waiters if run else set()) | self._pending_waiters.pop(run_id, set()):
                if not waiter.done():
                    waiter.set_result(None)

    async def close(self) -> None:
        # Blocked readers wake and return whatever is held, as a closed Redis connection ends them.
        self._closed = True
        for waiters in [run.waiters for run in self._runs.values()] + list(self._pending_waiters.values()):
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _collect(self, run_id: str, after_seq: int, count: int) -> list[StreamEntry]:
        self._sweep()
        run = self._runs.get(run_id)
        if run is None or not run.entries or run.entries[-1].seq <= after_seq:
            return []
        # Readers tail the log, so walk back from the newest entry: cost is what they have not seen.
        newer: list[StreamEntry] = []
        for entry in reversed(run.entries):
            if entry.seq <= after_seq:
                break
            newer.append(entry)
        newer.reverse()
        return newer[:count]

    def _waiters_for(self, run_id: str) -> set[asyncio.Future[None]]:
        run = self._runs.get(run_id)
        if run is not None:
            return run.waiters
        return self._pending_waiters.setdefault(run_id, set())

    def _sweep(self) -> None:
        now = self._clock()
        while self._expiring:
            run_id, expires_at = next(iter(self._expiring.items()))
            if expires_at > now:
                return
            del self._expiring[run_id]
            run = self._runs.pop(run_id, None)
            if run is not None and run.waiters:
                # Readers blocked on an expired run keep waiting for a fresh log under that id.
                self._pending_waiters.setdefault(run_id, set()).update(run.waiters)
