"""Admission of new runs into a worker process by what the process has left, not by a count.

A run spends nearly all its life waiting on the model, costing memory but almost no CPU, so a
fixed small number of runs per process (the old default was 16) leaves the CPU idle while jobs
wait in the queue. Instead a process takes up to `worker_concurrency` runs (a high ceiling,
default 1000, that also bounds the broker's prefetch) and admits each new one only while

- its resident memory is under `memory_budget_mb` (read from /proc/self/statm), and
- its event loop keeps up: the loop's lag (how late a 100 ms timer fires, smoothed) is under
  `max_loop_lag_ms`. A lagging loop means the process is CPU-bound; more runs would slow every
  run already going (their tokens, their lease heartbeats) rather than add throughput.

and at most `max_per_second` new runs a second (spread over the 100 ms ticks): a burst of
thousands of jobs delivered at once is taken in gradually, so memory and lag can say "enough"
before the burst is all in (measured: 2,000 runs admitted in the same instant overran the
database pool before the loop's lag was even sampled).

A job that cannot be admitted waits (unclaimed, so its run is not leased and any worker may
still take it) and is admitted as soon as there is room again; `waiting` counts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

logger = logging.getLogger(__name__)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_mb() -> float:
    """This process's resident set size in MiB (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


class Admission:
    """See the module docstring. `memory_budget_mb` 0 or `max_loop_lag_ms` 0 turns that check off."""

    def __init__(
        self, *, memory_budget_mb: float, max_loop_lag_ms: float, max_per_second: float = 0, interval: float = 0.1
    ) -> None:
        self.memory_budget_mb = memory_budget_mb
        self.max_loop_lag_ms = max_loop_lag_ms
        self._interval = interval
        # Admissions left in this tick (None: no rate limit).
        self._per_tick = max(1, round(max_per_second * interval)) if max_per_second > 0 else None
        self._tokens = self._per_tick
        self._tick = asyncio.Event()
        self.rss_mb = resident_mb()
        self.lag_ms = 0.0
        self.waiting = 0
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="admission")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._room.set()

    def has_room(self) -> bool:
        over_memory = self.memory_budget_mb > 0 and self.rss_mb > self.memory_budget_mb
        lagging = self.max_loop_lag_ms > 0 and self.lag_ms > self.max_loop_lag_ms
        return not (over_memory or lagging)

    async def admit(self) -> None:
        """Returns once a new run may start here."""
        if self._take():
            return
        self.waiting += 1
        try:
            while not self._take():
                if not self._room.is_set():
                    await self._room.wait()
                else:
                    await self._tick.wait()  # this tick's admissions are used up
        finally:
            self.waiting -= 1

    def _take(self) -> bool:
        if not self._room.is_set():
            return False
        if self._tokens is None:
            return True
        if self._tokens <= 0:
            return False
        self._tokens -= 1
        return True

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        full = False
        while True:
            before = loop.time()
            await asyncio.sleep(self._interval)
            late_ms = max(0.0, (loop.time() - before - self._interval) * 1000)
            self.lag_ms = 0.7 * self.lag_ms + 0.3 * late_ms
            self.rss_mb = resident_mb()
            if self._per_tick is not None:
                self._tokens = self._per_tick
                self._tick.set()
                self._tick = asyncio.Event()
            if self.has_room():
                if full:
                    logger.info("admitting runs again (rss %.0f MB, loop lag %.0f ms)", self.rss_mb, self.lag_ms)
                full = False
                self._room.set()
            else:
                if not full:
                    logger.warning(
                        "admission paused: rss %.0f MB (budget %.0f), loop lag %.0f ms (max %.0f); new runs wait",
                        self.rss_mb,
                        self.memory_budget_mb,
                        self.lag_ms,
                        self.max_loop_lag_ms,
                    )
                full = True
                self._room.clear()
