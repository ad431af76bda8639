"""The PostgreSQL engine and `retrying` across a server restart, on a private server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from agentry.servicekit.db import create_engine, is_transient_db_error, retry_transient, retrying
from agentry.servicekit.faults import PrivatePostgres
from agentry.servicekit.testing import needs

POSTGRES = needs(PrivatePostgres.available(), "PostgreSQL (initdb, pg_ctl)")


@pytest.fixture
async def private_pg() -> AsyncIterator[PrivatePostgres]:
    async with PrivatePostgres() as server:
        yield server


class _Sqlstate(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (ConnectionResetError(104, "reset"), True),
        (sa_exc.TimeoutError("QueuePool limit reached"), True),
        (sa_exc.DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True), True),
        (sa_exc.OperationalError("SELECT 1", {}, _Sqlstate("57P01")), True),  # admin shutdown
        (sa_exc.OperationalError("SELECT 1", {}, _Sqlstate("57P03")), True),  # starting up
        (sa_exc.OperationalError("SELECT 1", {}, _Sqlstate("08006")), True),  # connection failure
        (sa_exc.IntegrityError("INSERT", {}, _Sqlstate("23505")), False),  # unique violation
        (sa_exc.ProgrammingError("SELEC", {}, _Sqlstate("42601")), False),  # syntax error
        (ValueError("not a database error"), False),
    ],
)
def test_is_transient_db_error(exc: BaseException, transient: bool) -> None:
    assert is_transient_db_error(exc) is transient


def test_a_cause_that_is_transient_makes_the_error_transient() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError as inner:
            raise RuntimeError("while connecting") from inner
    except RuntimeError as outer:
        assert is_transient_db_error(outer)


async def test_retrying_gives_up_after_the_deadline_with_the_last_error() -> None:
    calls = 0

    async def always_refused() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError(111, f"refused #{calls}")

    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError, match=r"refused #\d+"):
        await retrying(always_refused, deadline=0.4, base_delay=0.01, max_delay=0.05)
    assert 0.35 < time.monotonic() - started < 1.5
    assert calls > 3


async def test_retrying_raises_a_permanent_error_at_once() -> None:
    calls = 0

    @retry_transient(deadline=5)
    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise sa_exc.IntegrityError("INSERT", {}, _Sqlstate("23505"))

    with pytest.raises(sa_exc.IntegrityError):
        await broken()
    assert calls == 1


@POSTGRES
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_queries_keep_succeeding_across_a_server_restart(private_pg: PrivatePostgres, mode: str) -> None:
    engine = create_engine(private_pg.url, pool_size=4, max_overflow=0)
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE ticks (n int PRIMARY KEY)"))
    retried: list[str] = []

    def transient(exc: BaseException) -> bool:
        ok = is_transient_db_error(exc)
        if ok:
            retried.append(type(exc).__name__)
        return ok

    async def tick(n: int) -> None:
        # Idempotent, so a commit whose answer was lost can safely be sent again.
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO ticks VALUES (:n) ON CONFLICT DO NOTHING"), {"n": n})

    restarted = asyncio.Event()
    slowest = 0.0

    async def worker(first: int) -> int:
        nonlocal slowest
        n, after_restart = first, 0
        while after_restart < 20:
            started = time.monotonic()
            await retrying(lambda n=n: tick(n), deadline=30, is_transient=transient)
            slowest = max(slowest, time.monotonic() - started)
            n += 1
            after_restart += restarted.is_set()
            await asyncio.sleep(0.005)
        return n - first

    try:
        workers = [asyncio.create_task(worker(i * 100_000)) for i in range(4)]
        await asyncio.sleep(0.3)
        await private_pg.arestart(downtime_seconds=1.0, mode=mode)
        restarted.set()
        done = await asyncio.wait_for(asyncio.gather(*workers), 60)
        async with engine.connect() as conn:
            stored = await conn.scalar(sa.text("SELECT count(*) FROM ticks"))
    finally:
        await engine.dispose()

    assert stored == sum(done), "every tick is stored exactly once"
    assert retried, "the restart was noticed (and ridden out) by some operation"
    # A query waits out the downtime and then some, but not the whole deadline.
    assert slowest < 15, slowest


@POSTGRES
async def test_a_burst_larger_than_the_pool_waits_for_connections(private_pg: PrivatePostgres) -> None:
    engine = create_engine(private_pg.url, pool_size=2, max_overflow=0, pool_timeout=30)

    async def slow_query() -> int:
        async with engine.connect() as conn:
            return await conn.scalar(sa.text("SELECT 1 FROM pg_sleep(0.1)"))

    try:
        results = await asyncio.gather(*(slow_query() for _ in range(20)))
    finally:
        await engine.dispose()
    assert results == [1] * 20


@POSTGRES
async def test_an_idle_pool_reconnects_after_a_restart_without_help(private_pg: PrivatePostgres) -> None:
    engine = create_engine(private_pg.url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT 1")) == 1
        await private_pg.arestart()
        # The pooled connection died with the server; pre-ping replaces it without an error.
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT 2")) == 2
    finally:
        await engine.dispose()


async def test_a_busy_pool_is_waited_for_again_only_when_queue_waits_allow(postgres_url: str) -> None:
    # Every pooled connection stays busy longer than the pool's own timeout: without queue_waits
    # the pool's TimeoutError ends the operation (the deadline is not what ran out), with them it
    # waits in line again and gets the connection once it is free.
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    held = asyncio.Event()

    async def hold(seconds: float) -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
            held.set()
            await asyncio.sleep(seconds)

    async def select_one() -> int:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT 1"))).scalar_one()

    try:
        holder = asyncio.create_task(hold(0.5))
        await held.wait()
        with pytest.raises(sa_exc.TimeoutError):
            await retrying(select_one, deadline=0.0)
        await holder
        held.clear()
        holder = asyncio.create_task(hold(0.5))
        await held.wait()
        assert await retrying(select_one, deadline=0.0, queue_waits=5) == 1
        await holder
    finally:
        await engine.dispose()
