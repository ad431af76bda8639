"""DirectStatement: a statement on the pooled asyncpg connection behaves as `conn.execute` does
(its rows, its errors, a broken connection kept out of the pool), on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from agentry.servicekit.db import autocommit, create_engine, is_transient_db_error, retrying
from agentry.servicekit.db_direct import DirectStatement

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("item_id", sa.String(36), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    sa.Column("blob", sa.LargeBinary),
)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url, pool_size=2, max_overflow=0)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def _backend_pid(engine: AsyncEngine) -> int:
    return await DirectStatement(sa.text("SELECT pg_backend_pid()")).value(engine)


async def test_rows_read_as_the_same_statement_through_sqlalchemy_reads(engine: AsyncEngine) -> None:
    insert = DirectStatement(
        items.insert()
        .values(
            item_id=sa.bindparam("p_id"),
            status="new",  # a literal the statement holds: not the caller's to give
            weight=sa.bindparam("p_weight"),
            blob=sa.bindparam("p_blob", type_=sa.LargeBinary),
        )
        .returning(items.c.item_id, items.c.status)
    )
    by_status = items.select().where(items.c.status == "new").order_by(items.c.item_id)

    first = await insert.row(engine, {"p_id": "a", "p_weight": 1.5, "p_blob": b"\x00\xff"})
    await insert.row(engine, {"p_id": "b", "p_weight": 2.0, "p_blob": None})
    direct = await DirectStatement(by_status).rows(engine)
    async with autocommit(engine).connect() as conn:
        through_sqlalchemy = (await conn.execute(by_status)).all()

    assert (first.item_id, first.status, first["status"], first[1]) == ("a", "new", "new", "new")
    assert [tuple(r) for r in direct] == [tuple(r) for r in through_sqlalchemy]
    assert [(r.item_id, r.weight, r.blob) for r in direct] == [("a", 1.5, b"\x00\xff"), ("b", 2.0, None)]
    assert await DirectStatement(by_status.where(items.c.item_id == "zzz")).row(engine) is None
    with pytest.raises(AttributeError):
        _ = first.no_such_column
    with pytest.raises(KeyError, match="p_weight"):
        await insert.row(engine, {"p_id": "c", "p_blob": None})


async def test_a_constraint_error_is_sqlalchemys_integrity_error_and_the_connection_stays_usable(
    engine: AsyncEngine,
) -> None:
    insert = DirectStatement(sa.text("INSERT INTO items (item_id, status, weight) VALUES (:i, 'new', 1)"))
    await insert.rows(engine, {"i": "dup"})
    pid = await _backend_pid(engine)

    with pytest.raises(sa_exc.IntegrityError) as raised:
        await insert.rows(engine, {"i": "dup"})

    assert not raised.value.connection_invalidated
    assert not is_transient_db_error(raised.value)
    assert await _backend_pid(engine) == pid  # the same pooled connection, back in the pool


async def test_a_connection_the_server_ended_is_invalidated_and_the_statement_runs_again(
    engine: AsyncEngine, postgres_url: str
) -> None:
    import asyncpg

    pid = await _backend_pid(engine)
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()

    # The local check on checkout may see the close first (then the pool replaces it quietly);
    # otherwise the statement fails as a disconnect, transient, and `retrying` runs it again.
    pids = await retrying(lambda: _backend_pid(engine), deadline=10)

    assert pids != pid
    assert await _backend_pid(engine) != pid


async def test_a_connection_that_breaks_mid_statement_fails_as_a_transient_disconnect(
    engine: AsyncEngine, postgres_url: str
) -> None:
    import asyncpg

    pid = await _backend_pid(engine)
    slow = asyncio.create_task(DirectStatement(sa.text("SELECT pg_sleep(5)")).rows(engine))
    await asyncio.sleep(0.3)
    admin = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()

    with pytest.raises(sa_exc.DBAPIError) as raised:
        await slow

    assert raised.value.connection_invalidated
    assert is_transient_db_error(raised.value)
    assert await _backend_pid(engine) != pid


async def test_a_statement_cancelled_mid_flight_does_not_return_its_connection_to_the_pool(
    engine: AsyncEngine,
) -> None:
    pid = await _backend_pid(engine)
    slow = asyncio.create_task(DirectStatement(sa.text("SELECT pg_sleep(5)")).rows(engine))
    await asyncio.sleep(0.3)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow

    assert await _backend_pid(engine) != pid
    assert await DirectStatement(sa.text("SELECT 41 + 1")).value(engine) == 42


async def test_it_refuses_a_database_other_than_postgresql(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        with pytest.raises(TypeError, match="asyncpg only"):
            await DirectStatement(sa.text("SELECT 1")).value(engine)
    finally:
        await engine.dispose()


async def test_callers_cancelled_at_any_moment_leave_every_connection_in_the_pool(postgres_url: str) -> None:
    # A run's task is cancelled when the run is stopped, whatever its statement is doing: taking
    # a connection, waiting on the server, or giving the connection back (an overflow connection
    # is closed on its way back: that awaits the server).
    engine = create_engine(postgres_url, pool_size=1, max_overflow=3)
    try:
        await _cancel_callers_at_many_moments(engine)
    finally:
        await engine.dispose()


async def _cancel_callers_at_many_moments(engine: AsyncEngine) -> None:
    statement = DirectStatement(sa.text("SELECT pg_sleep(CAST(:s AS float))"))

    async def caller(n: int) -> None:
        for k in range(5):
            await statement.rows(engine, {"s": 0.001 * ((n + k) % 4)})

    for delay in [0.00025 * step for step in range(60)]:
        callers = [asyncio.create_task(caller(n)) for n in range(8)]  # more callers than connections
        await asyncio.sleep(delay)
        for task in callers:
            task.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        assert engine.sync_engine.pool.checkedout() == 0  # pyright: ignore[reportAttributeAccessIssue]

    assert await asyncio.gather(*(DirectStatement(sa.text("SELECT 7")).value(engine) for _ in range(4))) == [7] * 4
