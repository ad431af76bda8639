"""The sweeper's election behind a transaction pooler (PgBouncer in transaction mode, as Supabase's
port 6543): a session advisory lock stays with the server connection that took it, which then
serves other clients, so two runners both think they are elected; the per-pass transaction lock
lets exactly one pass run at a time."""

from __future__ import annotations

import asyncio
import os

import pytest

from agentry.runner.sweeper import Sweeper
from agentry.servicekit.db import create_engine
from agentry.servicekit.faults import PrivatePgBouncer

pytestmark = pytest.mark.postgres


class NoRuns:
    """A repository with nothing to dispatch: the passes themselves are what is observed."""

    async def dispatch_candidates(self, *, redispatch_after: float) -> list:
        return []


def _pgbouncer(postgres_url: str, pool_size: int) -> tuple[PrivatePgBouncer, str]:
    if not PrivatePgBouncer.available():
        message = "pgbouncer (Debian package) is not installed"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{message} (CI=true: .ci/run installs it)", pytrace=False)
        pytest.skip(message)
    bouncer = PrivatePgBouncer(pool_mode="transaction", pool_size=pool_size)
    bouncer.start()
    return bouncer, bouncer.url(postgres_url.rsplit("/", 1)[1])


def sweeper(engine, *, lock_per_pass: bool) -> Sweeper:
    return Sweeper(
        NoRuns(),
        queue=None,
        engine=engine,
        interval=60,
        redispatch_after=60,  # type: ignore[arg-type]
        lock_per_pass=lock_per_pass,
    )


async def test_a_session_lock_elects_two_sweepers_behind_a_transaction_pooler(postgres_url):
    """Why the per-pass lock exists: with one server connection behind the pooler, the second
    runner's try-lock runs in the session that already holds the lock, and succeeds."""
    bouncer, url = _pgbouncer(postgres_url, pool_size=1)
    engines = [create_engine(url, pool_mode="transaction") for _ in range(2)]
    first, second = (sweeper(e, lock_per_pass=False) for e in engines)
    try:
        assert await first._elected()
        assert await second._elected(), "if this fails, PgBouncer learnt to pin session locks"
    finally:
        for s in (first, second):
            await s.close()
        for e in engines:
            await e.dispose()
        bouncer.close()


async def test_one_pass_at_a_time_behind_a_transaction_pooler(postgres_url):
    bouncer, url = _pgbouncer(postgres_url, pool_size=2)
    engines = [create_engine(url, pool_mode="transaction") for _ in range(2)]
    first, second = (sweeper(e, lock_per_pass=True) for e in engines)
    in_pass, finish = asyncio.Event(), asyncio.Event()
    passes: list[str] = []

    async def slow_pass() -> None:
        passes.append("first")
        in_pass.set()
        await finish.wait()

    first.housekeeping.append(slow_pass)
    second.housekeeping.append(lambda: asyncio.sleep(0, passes.append("second")))
    try:
        running = asyncio.create_task(first._sweep_if_elected_for_this_pass())
        await asyncio.wait_for(in_pass.wait(), 30)
        assert not await second._sweep_if_elected_for_this_pass(), "the other runner is mid-pass"
        finish.set()
        assert await running
        assert await second._sweep_if_elected_for_this_pass(), "after the pass anyone may sweep"
        assert passes == ["first", "second"]
    finally:
        finish.set()
        for s in (first, second):
            await s.close()
        for e in engines:
            await e.dispose()
        bouncer.close()
