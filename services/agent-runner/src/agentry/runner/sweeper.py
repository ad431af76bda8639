"""The sweeper: nothing accepted is lost between the database and the broker.

Every runner process runs one; a PostgreSQL advisory lock (held on its own connection) elects the
one that works, so there is one sweep per interval whatever the number of replicas (on SQLite,
one process owns the database and is always elected). Behind a transaction pooler the session
lock would stay with a server connection other clients then use, so there each pass takes a
transaction-scoped lock instead, held for the pass. Each pass re-publishes a job for

- queued runs whose job never reached the broker (the publish failed: `dispatched_at` is NULL)
  or was published long ago (`redispatch_after`: it may have been lost), and
- running runs whose lease lapsed (their worker died without the broker noticing, e.g. a lost
  node) and that were not re-published since.

A duplicate job is harmless: a run is claimed by one worker at a time (see worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .ports import RunnerRepository
from .queue import QueueUnavailable, RunJob, RunQueue

logger = logging.getLogger(__name__)

_LOCK_KEY = zlib.crc32(b"agentry.runner.sweeper")


class Sweeper:
    def __init__(
        self,
        repo: RunnerRepository,
        queue: RunQueue,
        engine: AsyncEngine,
        *,
        interval: float,
        redispatch_after: float,
        lock_per_pass: bool = False,
    ) -> None:
        self._repo = repo
        # Behind a transaction pooler (PgBouncer, Supabase on 6543) a session lock belongs to
        # whichever server connection took it, which then serves other clients: elect per pass.
        self._lock_per_pass = lock_per_pass
        self._queue = queue
        self._engine = engine
        self._interval = interval
        self._redispatch_after = redispatch_after
        self._lock_conn: AsyncConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # Further work each elected pass does after dispatching (expiring paused runs).
        self.housekeeping: list[Callable[[], Awaitable[object]]] = []

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="run-sweeper")

    def wake(self) -> None:
        """Sweep now (a publish just failed) instead of at the next interval."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None
        await self._release()

    async def sweep_once(self) -> int:
        """One pass; returns how many jobs were published."""
        published = 0
        jobs = await self._repo.dispatch_candidates(redispatch_after=self._redispatch_after)
        for n, job in enumerate(jobs):
            try:
                await self._queue.publish(RunJob(run_id=job.run_id, thread_id=job.thread_id, account_id=job.account_id))
            except QueueUnavailable as exc:
                logger.warning("sweeper could not publish run %s: %s", job.run_id, exc)
                await self._repo.mark_undispatched(job.run_id)
                continue
            except BaseException:
                # The candidates are marked dispatched as they are selected: this one and the rest
                # of the pass were not, and must be due again at the next pass, not only once
                # `redispatch_after` has passed (a queue error nobody expected left them there for
                # two minutes).
                for left in jobs[n:]:
                    with contextlib.suppress(Exception):
                        await self._repo.mark_undispatched(left.run_id)
                raise
            published += 1
        if published:
            logger.info("sweeper published %d run jobs", published)
        for task in self.housekeeping:
            await task()
        return published

    async def _loop(self) -> None:
        while True:
            try:
                if self._lock_per_pass:
                    await self._sweep_if_elected_for_this_pass()
                elif await self._elected():
                    await self.sweep_once()
            except Exception:  # the database or broker is away: the next pass tries again
                logger.warning("sweep failed", exc_info=True)
                await self._release()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()

    async def _sweep_if_elected_for_this_pass(self) -> bool:
        """Sweeps if no other process is sweeping now; True if it did. The lock is transaction
        scoped, in a transaction held open for the whole pass, so a transaction pooler keeps it on
        one server connection until the pass ends (it conflicts with the session lock too)."""
        if self._engine.dialect.name != "postgresql":
            await self.sweep_once()
            return True
        async with self._engine.connect() as conn, conn.begin():
            got = (await conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})).scalar_one()
            if got:
                await self.sweep_once()
        return bool(got)

    async def _elected(self) -> bool:
        if self._engine.dialect.name != "postgresql":
            return True
        if self._lock_conn is not None and not self._lock_conn.closed:
            return True
        conn = await self._engine.connect()
        try:
            got = (await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _LOCK_KEY})).scalar_one()
            await conn.commit()
        except Exception:
            await conn.close()
            raise
        if not got:
            await conn.close()
            return False
        self._lock_conn = conn  # the lock lives as long as this session
        return True

    async def _release(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
