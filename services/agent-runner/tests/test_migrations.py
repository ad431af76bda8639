"""The runner service's Alembic migrations build exactly the tables its SQL adapter declares (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import agentry.runner
from agentry.runner.adapters.sql import metadata
from agentry.servicekit.schema_drift import schema_drift

MIGRATIONS = Path(agentry.runner.__file__).parent / "migrations"


async def test_migrations_build_exactly_the_declared_tables(postgres_url):
    drift = await schema_drift(
        postgres_url, metadata, migrations_dir=MIGRATIONS, version_table="alembic_version_runner"
    )
    assert drift == [], "a migration and adapters/sql.py disagree:\n" + "\n".join(drift)
    assert metadata.tables, "the adapter declares its tables"
