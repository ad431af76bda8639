"""The database port's two adapters (SQLite via aiosqlite, PostgreSQL via asyncpg) and migrations.

Each service owns its tables and its own Alembic history (`<service>/migrations`, recorded in
its own version table), so services can share one PostgreSQL database without touching each
other's tables.
"""

from __future__ import annotations

import contextlib
import zlib
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str, **kwargs) -> AsyncEngine:
    """An AsyncEngine for `url`; SQLite gets WAL, foreign keys and a busy timeout."""
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
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_async_engine(url, **kwargs)


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


async def migrate(engine: AsyncEngine, *, migrations_dir: Path, version_table: str) -> None:
    """Brings the service's tables to the newest migration (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, migrations_dir, version_table)


async def open_database(
    url: str,
    *,
    migrations_dir: Path,
    version_table: str,
    stack: contextlib.AsyncExitStack,
) -> AsyncEngine:
    """Opens the engine, migrates to head, and disposes of the engine when the stack closes."""
    engine = create_engine(url)
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
