"""Compares what a service's Alembic migrations build with what its SQLAlchemy tables declare."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .db import open_database


async def schema_drift(url: str, metadata: sa.MetaData, *, migrations_dir: Path, version_table: str) -> list[str]:
    """Migrates the (empty) database at `url` to head and answers every difference between it
    and `metadata`, one line each (`add_table sandboxes`, `remove_column threads.name`, ...):
    empty when the migrations build exactly the declared tables, columns, types, nullability,
    indexes, unique constraints and foreign keys. Alembic's version table is not compared."""
    async with contextlib.AsyncExitStack() as stack:
        engine = await open_database(url, migrations_dir=migrations_dir, version_table=version_table, stack=stack)
        async with engine.connect() as conn:
            return await conn.run_sync(_compare, metadata, version_table)


def _compare(connection: Connection, metadata: sa.MetaData, version_table: str) -> list[str]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "table" and name == version_table)

    context = MigrationContext.configure(connection, opts={"compare_type": True, "include_object": include})
    return [_describe(diff) for diff in compare_metadata(context, metadata)]


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # the column changes alembic groups: (op, schema, table, column, ...)
        return "; ".join(_describe(d) for d in diff)
    op, *rest = diff
    if op.endswith("_table"):
        return f"{op} {rest[0].name}"
    if op.endswith("_column"):
        return f"{op} {rest[1]}.{rest[2].name}"
    if op.startswith("modify_"):
        return f"{op} {rest[1]}.{rest[2]}: {rest[-2]!r} -> {rest[-1]!r}"
    target = rest[0]
    table = getattr(getattr(target, "table", None), "name", "?")
    return f"{op} {table}.{getattr(target, 'name', None) or target}"
