"""A service starting on a database its migration job (or another replica) already brought to
head does not import Alembic nor load the migration scripts (~10 MB of RSS kept for the process's
life); one behind head is still migrated. migration_heads reads the same heads Alembic does."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agentry.billing
from agentry.servicekit.db import migration_heads

MIGRATIONS = {
    name: Path(__import__(f"agentry.{name}", fromlist=["x"]).__file__).parent / "migrations"
    for name in ("auth", "billing", "sandbox", "runner")
}

_MIGRATE = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from sqlalchemy.ext.asyncio import create_async_engine
    from agentry.servicekit.db import migrate

    async def main():
        engine = create_async_engine(sys.argv[1])
        await migrate(engine, migrations_dir=Path(sys.argv[2]), version_table="alembic_version_billing")
        async with engine.connect() as conn:
            version = (await conn.exec_driver_sql("SELECT version_num FROM alembic_version_billing")).scalar()
        await engine.dispose()
        return version

    version = asyncio.run(main())
    print(json.dumps({"version": version, "alembic": "alembic" in sys.modules}))
    """
)


def _migrate(url: str) -> dict:
    billing = Path(agentry.billing.__file__).parent / "migrations"
    out = subprocess.run(
        [sys.executable, "-c", _MIGRATE, url, str(billing)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("service", sorted(MIGRATIONS))
def test_heads_are_alembics(service):
    from alembic.script import ScriptDirectory

    directory = MIGRATIONS[service]
    assert migration_heads(directory) == frozenset(ScriptDirectory(str(directory)).get_heads())


def test_a_database_at_head_is_not_migrated_again(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}"
    first = _migrate(url)
    head = next(iter(migration_heads(Path(agentry.billing.__file__).parent / "migrations") or []))
    assert first == {"version": head, "alembic": True}  # a fresh database: Alembic migrates it
    assert _migrate(url) == {"version": head, "alembic": False}  # at head: Alembic is never imported


def test_a_database_behind_head_is_migrated(tmp_path):
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    directory = Path(agentry.billing.__file__).parent / "migrations"
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'billing.db'}")
    with engine.begin() as connection:  # an older release's database: only the first migration
        config = Config()
        config.set_main_option("script_location", str(directory))
        config.attributes["connection"] = connection
        config.attributes["version_table"] = "alembic_version_billing"
        command.upgrade(config, "0001")
    engine.dispose()
    head = next(iter(migration_heads(directory) or []))
    assert head != "0001"
    assert _migrate(f"sqlite+aiosqlite:///{tmp_path / 'billing.db'}") == {"version": head, "alembic": True}
