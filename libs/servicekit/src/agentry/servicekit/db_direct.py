"""PostgreSQL statements run on the pooled asyncpg connection itself, past SQLAlchemy's execution layer.

On a run's path each statement is one short round trip, and SQLAlchemy's own work around it
(checking a `Connection` out and in with its execution options, compiling-cache lookup, parameter
and result processing, the greenlet hops of its async bridge) cost several times asyncpg's:
measured here, `SELECT 1` through an autocommit `AsyncConnection` took ~530-760 µs of CPU, the
same on the asyncpg connection of a pooled one ~180-280 µs, a bare asyncpg connection ~100 µs
(BENCHMARKS.md, sixth sitting). `DirectStatement` keeps everything the engine gives (its pool and
limits, the idle ping on checkout, the transaction-pooler settings, SQLAlchemy's exception types)
and skips the rest:

- A Core statement or `text()` with named bind parameters is compiled once for the engine's
  dialect; a call takes the same dict of parameters and sends them positionally.
- The statement runs on its own, committed as it completes (autocommit: asyncpg outside a
  transaction), so it suits reads and one-statement writes (or a call of a function that does
  several), like `servicekit.db.autocommit`.
- Rows are asyncpg `Record`s, readable by attribute as SQLAlchemy's rows are (`row.status`).
- A failure is raised as `conn.execute` raises it: asyncpg's error translated by SQLAlchemy's
  adapter, wrapped in `sqlalchemy.exc.DBAPIError` (`IntegrityError`, ...) with
  `connection_invalidated` set when the connection broke; a broken or interrupted connection
  (an error that says so, or a cancellation mid-statement) is invalidated, never returned to the
  pool. So `retrying`, `is_transient_db_error` and callers' handlers work unchanged.

PostgreSQL (asyncpg) only: SQLite callers keep `conn.execute`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import greenlet_spawn

Row = Any  # an asyncpg Record of `_row_class()`: columns by name, index or attribute


@functools.cache
def _row_class() -> type:
    """asyncpg's record, its columns also read as attributes (`row.status`) like SQLAlchemy's rows.
    Made on first use: a process on SQLite never imports asyncpg."""
    import asyncpg

    class AttributeRecord(asyncpg.Record):
        __slots__ = ()

        def __getattr__(self, name: str) -> Any:
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    return AttributeRecord


class DirectStatement:
    """One statement, compiled once per dialect, run on a pooled connection's asyncpg connection."""

    __slots__ = ("_compiled", "_statement")

    def __init__(self, statement: sa.ClauseElement) -> None:
        self._statement = statement
        self._compiled: tuple[object, str, tuple[tuple[str, bool, Any, Any], ...]] | None = None

    def _compile(self, engine: AsyncEngine) -> tuple[str, tuple[tuple[str, bool, Any, Any], ...]]:
        """The SQL for the engine's dialect and, in order, each positional parameter: its name,
        whether the caller must give it, its value otherwise (a literal the statement holds,
        such as `status == 'pending'`) and its type's bind processor (None for most)."""
        dialect = engine.dialect
        compiled = self._compiled
        if compiled is None or compiled[0] is not dialect:
            if dialect.driver != "asyncpg":
                raise TypeError(f"DirectStatement runs on asyncpg only, not {dialect.name}+{dialect.driver}")
            c = cast(SQLCompiler, self._statement.compile(dialect=dialect))
            processors = getattr(c, "_bind_processors", {}) or {}
            slots = []
            for name in c.positiontup or ():
                bind = c.binds[name]
                slots.append((name, bind.required, bind.effective_value, processors.get(name)))
            compiled = self._compiled = (dialect, c.string, tuple(slots))
        return compiled[1], compiled[2]

    @staticmethod
    def _args(slots: tuple[tuple[str, bool, Any, Any], ...], params: Mapping[str, Any]) -> list[Any]:
        args = []
        for name, required, default, processor in slots:
            if name in params:
                value = params[name]
            elif required:
                raise KeyError(f"missing value for bind parameter {name!r}")
            else:
                value = default
            args.append(value if processor is None or value is None else processor(value))
        return args

    async def rows(self, engine: AsyncEngine, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Every row the statement answers (a list of `Row`; empty when none)."""
        return await self._run(engine, params or {}, "fetch")

    async def row(self, engine: AsyncEngine, params: Mapping[str, Any] | None = None) -> Row | None:
        """The first row the statement answers, or None."""
        return await self._run(engine, params or {}, "fetchrow")

    async def value(self, engine: AsyncEngine, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = await self._run(engine, params or {}, "fetchrow")
        return None if row is None else row[0]

    async def _run(self, engine: AsyncEngine, params: Mapping[str, Any], method: str) -> Any:
        sql, slots = self._compile(engine)
        args = self._args(slots, params)
        fairy = await engine.raw_connection()
        try:
            driver = fairy.driver_connection
            try:
                return await getattr(driver, method)(sql, *args, record_class=_row_class())
            except Exception as exc:
                translated = _translated(engine, fairy, sql, args, exc)
                if translated is exc:
                    raise
                raise translated from exc
            except BaseException:
                # Cancelled (or interrupted) mid-statement: what the connection holds is unknown.
                fairy.invalidate()
                raise
        finally:
            await _returned(engine, fairy)


async def _returned(engine: AsyncEngine, fairy) -> None:
    """Returns the connection to the pool, to the end even when the caller is cancelled meanwhile.

    Usually it goes back into the pool's queue: no transaction to roll back (none was begun), so
    nothing there awaits and nothing can be abandoned partway. When the queue is full (this one
    was an overflow connection) it is closed instead, which awaits the server: that runs in a task
    of its own, shielded, as SQLAlchemy's `AsyncConnection` does on exit, so a cancellation does
    not leave it half closed (it is raised once the close is done). The shielded way costs a Task
    (~100 µs here), which is why it is kept for that case."""
    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool) and pool.checkedin() < pool.size():
        await greenlet_spawn(fairy.close)
        return
    returning = asyncio.ensure_future(greenlet_spawn(fairy.close))
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(returning)
            break
        except asyncio.CancelledError as exc:
            if returning.done():
                raise
            cancelled = exc
    if cancelled is not None:
        raise cancelled


def _translated(engine: AsyncEngine, fairy, sql: str, args: list[Any], exc: Exception) -> BaseException:
    """`exc` as SQLAlchemy raises it from `conn.execute`; invalidates `fairy` when it broke."""
    dialect = engine.dialect
    dbapi = dialect.loaded_dbapi
    adapted = fairy.dbapi_connection
    try:
        adapted._handle_exception(exc)  # raises the adapter's DBAPI error for asyncpg's
    except Exception as error:  # noqa: BLE001 - whatever the adapter raised is what callers see
        translated = error
    else:  # pragma: no cover - the adapter always raises
        translated = exc
    if not isinstance(translated, dbapi.Error):
        if isinstance(translated, OSError | TimeoutError) or adapted._connection.is_closed():
            fairy.invalidate(translated)
        return translated
    invalidated = dialect.is_disconnect(translated, adapted, None) or adapted._connection.is_closed()
    if invalidated:
        fairy.invalidate(translated)
    return sa_exc.DBAPIError.instance(
        sql, args, translated, dbapi.Error, connection_invalidated=invalidated, dialect=dialect
    )
