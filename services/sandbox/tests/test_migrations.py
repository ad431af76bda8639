"""The sandbox service's Alembic migrations build exactly the tables its SQL adapter declares (PostgreSQL)."""

from __future__ import annotations

import sqlalchemy as sa

from agentry.sandbox.adapters.sql import metadata
from agentry.sandbox.migrations import MIGRATIONS_DIR, VERSION_TABLE
from agentry.servicekit.schema_drift import schema_drift


async def test_migrations_build_exactly_the_declared_tables(postgres_url):
    drift = await schema_drift(postgres_url, metadata, migrations_dir=MIGRATIONS_DIR, version_table=VERSION_TABLE)
    assert drift == [], "a migration and adapters/sql.py disagree:\n" + "\n".join(drift)
    assert metadata.tables, "the adapter declares its tables"


async def test_a_column_no_migration_adds_is_drift(postgres_url):
    declared = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(declared)
    declared.tables["sandboxes"].append_column(sa.Column("nickname", sa.Text))
    sa.Table("snapshots", declared, sa.Column("id", sa.Text, primary_key=True))

    drift = await schema_drift(postgres_url, declared, migrations_dir=MIGRATIONS_DIR, version_table=VERSION_TABLE)

    assert sorted(drift) == ["add_column sandboxes.nickname", "add_table snapshots"]
