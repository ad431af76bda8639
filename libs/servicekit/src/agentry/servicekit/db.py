"""The database port's two adapters (SQLite via aiosqlite, PostgreSQL via asyncpg) and migrations.

Each service owns its tables and its own Alembic history (`<service>/migrations`, recorded in
its own version table), so services can share one PostgreSQL database without touching each
other's tables.

PostgreSQL may restart or fail over under a running service. The engine checks a pooled
connection that sat idle for more than a second before use, so connections that died with the
old server are replaced silently (a busy pool's connections are not pinged: a round trip per
transaction); an operation that was already on the wire when the server went away fails,
and `retrying` runs it again with backoff while `is_transient_db_error` says the failure was the
connection's, not the statement's.

Behind a pooler in transaction mode (PgBouncer, Supabase's Supavisor on port 6543) a client's
statements run on whichever server connection is free, so asyncpg's named, cached prepared
statements collide or vanish. `pool_mode="transaction"` (or a URL that says so: port 6543 or
`?pgbouncer=true`) turns the statement caches off and gives each prepared statement a unique
name; migrations should still run over the direct connection.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import errno
import functools
import logging
import random
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

logger = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")

# A burst of requests waits this long for a pooled connection instead of failing at once.
DEFAULT_POOL_TIMEOUT = 60.0
# Connections are replaced after this many seconds, so none outlives a proxy's or firewall's idle cut.
DEFAULT_POOL_RECYCLE = 1800
# How long one connection attempt may take (asyncpg's own default is 60 s).
DEFAULT_CONNECT_TIMEOUT = 10.0
# The port Supabase (Supavisor) serves transaction pooling on.
TRANSACTION_POOLER_PORT = 6543

PoolMode = Literal["session", "transaction"]


def resolve_pool_mode(url: str, configured: PoolMode | None = None) -> tuple[str, PoolMode]:
    """The URL to connect with and the pooling mode of the server behind it.

    `configured` (AGENTRY_DATABASE_POOL_MODE) wins; otherwise `?pgbouncer=true` or port 6543 mean
    transaction pooling. The `pgbouncer` marker is removed from the URL (asyncpg would reject it).
    """
    if not url.startswith("postgresql"):
        return url, configured or "session"
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    marker = parsed.query.get("pgbouncer")
    if marker is not None:
        parsed = parsed.difference_update_query(["pgbouncer"])
        url = parsed.render_as_string(hide_password=False)
    if configured is not None:
        return url, configured
    if str(marker).lower() in {"true", "1", "yes"} or parsed.port == TRANSACTION_POOLER_PORT:
        return url, "transaction"
    return url, "session"


def _transaction_pooling_args() -> dict:
    # No statement survives a transaction on its server connection: asyncpg's cache off, and a
    # unique name for each statement SQLAlchemy prepares (the default numbering collides when two
    # clients share a server connection). A Close of a name the server no longer has is no error.
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4().hex}__",
    }


def create_engine(
    url: str,
    *,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    pool_recycle: int = DEFAULT_POOL_RECYCLE,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    pool_mode: PoolMode | None = None,
    **kwargs,
) -> AsyncEngine:
    """An AsyncEngine for `url`; SQLite gets WAL, foreign keys and a busy timeout.

    PostgreSQL gets a pool of 10 (+20 overflow) whose callers queue up to
    `pool_timeout` seconds for a free connection, connections recycled after `pool_recycle`.
    Behind a transaction-mode pooler (`pool_mode`, or detected from the URL: see
    `resolve_pool_mode`) no prepared statement is cached or reused.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - exercised by every sqlite test
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # Ping only connections that sat idle (see _ping_when_idle), not every checkout: under load
    # that round trip per transaction cost ~8% of a runner worker's CPU.
    kwargs.setdefault("pool_pre_ping", False)
    # The most recently returned connection is handed out first: under light or bursty load a few
    # connections stay hot (no idle ping) and the rest idle until pool_recycle, instead of every
    # connection in turn sitting idle past the ping threshold.
    kwargs.setdefault("pool_use_lifo", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    url, mode = resolve_pool_mode(url, pool_mode)
    if url.startswith("postgresql+asyncpg"):
        pooling = _transaction_pooling_args() if mode == "transaction" else {}
        kwargs["connect_args"] = {"timeout": connect_timeout, **pooling, **kwargs.get("connect_args", {})}
    engine = create_async_engine(url, pool_timeout=pool_timeout, pool_recycle=pool_recycle, **kwargs)
    if not kwargs["pool_pre_ping"]:
        _ping_when_idle(engine)
    return engine


# A connection idle longer than this is pinged before it is handed out.
IDLE_PING_SECONDS = 1.0


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """Pre-ping, but only for connections that sat in the pool more than `idle_seconds` (and a
    free local check of every connection the server closed): one that died with its server (a
    restart, a failover, an idle timeout) is replaced before use,
    while a busy pool, whose connections come back within milliseconds, pays no round trip per
    transaction. A connection that dies in the last moment before reuse fails its statement,
    which `retrying` runs again on a fresh one."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_since(dbapi_conn, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_conn, record, proxy) -> None:
        # A server that closed the socket (restart, failover) is seen locally, without a round
        # trip: asyncpg marks its connection closed as soon as the loop reads the close.
        driver = getattr(dbapi_conn, "_connection", None)
        if driver is not None and getattr(driver, "is_closed", lambda: False)():
            raise sa_exc.DisconnectionError("pooled connection was closed by the server")
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= idle_seconds:
            return
        try:
            alive = dialect.do_ping(dbapi_conn)
        except Exception as exc:
            if not dialect.is_disconnect(exc, dbapi_conn, None):  # pyright: ignore[reportArgumentType] - any error the ping raised
                raise
            alive = False
        if not alive:
            raise sa_exc.DisconnectionError("pooled connection died while idle")


# SQLSTATEs of a server that is going away, starting up or full: the same statement may succeed
# on a new connection. Class 08 is "connection exception".
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }
)


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (and pool) with every statement committed on its own: no BEGIN before and
    no ROLLBACK/COMMIT after, so a read or a single-statement write is one round trip instead of
    three. For reads (each statement sees the latest committed data, as under READ COMMITTED
    anyway) and for writes that are one statement; anything that needs several statements to
    commit together uses `engine.begin()`.

    On SQLite the engine itself: there is no round trip to save, and switching a pysqlite
    connection's isolation level in and out of autocommit has side effects of its own (setting
    it commits what is open; with it, a run's stop in the worker tests stalled for seconds about
    one time in eight)."""
    if engine.dialect.name == "sqlite":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def is_transient_db_error(exc: BaseException) -> bool:
    """True when `exc` says the connection or the server failed, not the statement.

    Such an operation may be run again once a connection can be had (see `retrying`). Constraint
    violations, syntax errors and the like are never transient.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.TimeoutError):  # the pool had no connection in time
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, ConnectionError):  # refused, reset, aborted, broken pipe
            return True
        if isinstance(current, OSError) and current.errno in _TRANSIENT_ERRNOS:
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in _TRANSIENT_SQLSTATES):
            return True
        if type(current).__name__ == "ConnectionDoesNotExistError":  # asyncpg, lost mid-operation
            return True
        wrapped = getattr(current, "orig", None)
        current = wrapped if isinstance(wrapped, BaseException) else (current.__cause__ or current.__context__)
    return False


def is_pool_timeout(exc: BaseException) -> bool:
    """True when `exc` is the pool's "no connection came free in time" (QueuePool's timeout)."""
    return isinstance(exc, sa_exc.TimeoutError)


async def retrying(
    operation: Callable[[], Awaitable[T]],
    *,
    deadline: float = 30.0,
    base_delay: float = 0.05,
    max_delay: float = 1.0,
    is_transient: Callable[[BaseException], bool] = is_transient_db_error,
    clock: Callable[[], float] = time.monotonic,
    queue_waits: int = 0,
) -> T:
    """Awaits `operation()`, calling it again after transient failures until `deadline` seconds
    have passed since the first call; then the last failure is raised.

    `queue_waits`: how many times a wait for a pooled connection that ran out (the pool's own
    timeout: every connection was busy, the database answering) may be followed by another,
    whatever the deadline. A busy pool is a line to wait in, not a database that is away.

    Waits double from `base_delay` up to `max_delay`, each between half and all of its nominal
    length (jitter, so a crowd of clients does not reconnect in lock step). `operation` must be
    safe to run again: a transaction that failed this way was rolled back, but a statement
    outside one may have been applied before the connection dropped.
    """
    started = clock()
    attempt = 0
    while True:
        try:
            return await operation()
        except Exception as exc:
            if queue_waits > 0 and is_pool_timeout(exc):
                queue_waits -= 1
                logger.warning("every pooled database connection stayed busy; waiting in line again")
                continue
            remaining = started + deadline - clock()
            if not is_transient(exc) or remaining <= 0:
                raise
            delay = min(max_delay, base_delay * 2**attempt)
            delay = min(remaining, delay / 2 + random.uniform(0, delay / 2))
            attempt += 1
            logger.warning(
                "unavailable (%s: %s); attempt %d again in %.2fs", type(exc).__name__, exc, attempt + 1, delay
            )
            await asyncio.sleep(delay)


def retry_transient(
    *, deadline: float = 30.0, max_delay: float = 1.0
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorates an async function so that transient database failures run it again (`retrying`)."""

    def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await retrying(lambda: fn(*args, **kwargs), deadline=deadline, max_delay=max_delay)

        return wrapper

    return decorate


def _upgrade(connection: Connection, migrations_dir: Path, version_table: str) -> None:
    from alembic import command
    from alembic.config import Config

    if connection.dialect.name == "postgresql":
        # Replicas of one service may start together: one migrates, the others wait.
        key = zlib.crc32(version_table.encode())
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = version_table
    command.upgrade(config, "head")


_REVISION_FIELDS = ("revision", "down_revision", "branch_labels", "depends_on")


@functools.cache
def migration_heads(migrations_dir: Path) -> frozenset[str] | None:
    """The head revisions of a migrations directory, read from its scripts' `revision` and
    `down_revision` (with `ast`, without importing Alembic or the scripts); None when a script
    says more than that (branch labels, dependencies, computed values): Alembic decides then."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((migrations_dir / "versions").glob("*.py")):
        values: dict[str, Any] = {}
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:
                if isinstance(node, ast.Assign):
                    targets, value = node.targets, node.value
                elif isinstance(node, ast.AnnAssign) and node.value is not None:
                    targets, value = [node.target], node.value
                else:
                    continue
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in _REVISION_FIELDS:
                        values[target.id] = ast.literal_eval(value)
        except (OSError, SyntaxError, ValueError):
            return None
        revision, down = values.get("revision"), values.get("down_revision")
        if not isinstance(revision, str) or values.get("branch_labels") or values.get("depends_on"):
            return None
        revisions.add(revision)
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list) and all(isinstance(d, str) for d in down):
            parents.update(down)
        elif down is not None:
            return None
    heads = frozenset(revisions - parents)
    return heads or None


def _at_head(connection: Connection, migrations_dir: Path, version_table: str) -> bool:
    """Whether the database is at the scripts' heads already (read-only; False when unsure)."""
    heads = migration_heads(migrations_dir)
    if heads is None or not sa.inspect(connection).has_table(version_table):
        return False
    rows = connection.execute(sa.select(sa.column("version_num")).select_from(sa.table(version_table)))
    return frozenset(row[0] for row in rows) == heads


async def migrate(engine: AsyncEngine, *, migrations_dir: Path, version_table: str) -> None:
    """Brings the service's tables to the newest migration (idempotent). A database at head
    already (migrated by the deployment's migration job, or by another replica) is recognised
    from its version table without importing Alembic or loading the scripts, which would keep
    ~10 MB of RSS in every process for the rest of its life."""
    async with engine.connect() as conn:
        if await conn.run_sync(_at_head, migrations_dir, version_table):
            return
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, migrations_dir, version_table)


async def open_database(
    url: str,
    *,
    migrations_dir: Path,
    version_table: str,
    stack: contextlib.AsyncExitStack,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pool_mode: PoolMode | None = None,
) -> AsyncEngine:
    """Opens the engine, migrates to head, and disposes of the engine when the stack closes.

    `pool_size` + `max_overflow` bound this process's PostgreSQL connections (ignored on SQLite):
    size them so that every process of every service together stays under the server's
    max_connections (100 by default), or put PgBouncer in front (then `pool_mode`, see
    `create_engine`).
    """
    pool: dict[str, Any] = {
        k: v for k, v in (("pool_size", pool_size), ("max_overflow", max_overflow)) if v is not None
    }
    if pool_mode is not None and not url.startswith("sqlite"):
        pool["pool_mode"] = pool_mode
    engine = create_engine(url, **({} if url.startswith("sqlite") else pool))
    stack.push_async_callback(engine.dispose)
    await migrate(engine, migrations_dir=migrations_dir, version_table=version_table)
    return engine


def alembic_env(target_metadata: sa.MetaData) -> None:
    """The body of every service's migrations/env.py: run on the connection `migrate` passes."""
    from alembic import context

    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through agentry.servicekit.db.migrate, not the alembic CLI")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=config.attributes["version_table"],
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
