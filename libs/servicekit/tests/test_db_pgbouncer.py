"""Behind PgBouncer in transaction mode (what Supabase's pooler on port 6543 is), each transaction
may run on another server connection, so a prepared statement asyncpg cached on one is missing on
the next (and names from different processes collide). With pool_mode "transaction" (set, or
detected from the URL) the engine works: cached-statement reuse across server connections, many
statements, concurrent clients, transactions and a service's migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from agentry.servicekit.db import create_engine, migrate, open_database
from agentry.servicekit.faults import PrivatePgBouncer

pytestmark = pytest.mark.postgres

BILLING_MIGRATIONS = Path(__import__("agentry.billing.main", fromlist=["x"]).__file__).parent / "migrations"


@pytest.fixture
def pgbouncer(postgres_url):
    """PgBouncer in transaction mode with two server connections, in front of the test database."""
    import os

    if not PrivatePgBouncer.available():
        message = "pgbouncer (Debian package) is not installed"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{message} (CI=true: .ci/run installs it)", pytrace=False)
        pytest.skip(message)
    database = postgres_url.rsplit("/", 1)[1]
    with PrivatePgBouncer(pool_mode="transaction", pool_size=2) as bouncer:
        yield bouncer, bouncer.url(database)


async def _statement_on_another_server_connection(engine) -> int:
    """A client runs a statement, then runs it again while another client's open transaction
    holds the server connection the first run used (PgBouncer hands out the most recently used
    one), so the second run lands on the other server connection."""
    query = sa.text("SELECT CAST(:n AS int) + 1")
    async with engine.connect() as first:
        assert (await first.execute(query, {"n": 1})).scalar_one() == 2
        await first.commit()
        async with engine.connect() as second:
            await second.execute(sa.text("SELECT 42"))  # its transaction stays open
            return (await first.execute(query, {"n": 2})).scalar_one()


async def _distinct_statements(engine, rounds: int) -> list[int]:
    """Two client connections taking turns, each preparing statements the other has not."""
    results = []
    async with engine.connect() as first, engine.connect() as second:
        for i in range(rounds):
            for conn, offset in ((first, 0), (second, 1000)):
                value = (await conn.execute(sa.text(f"SELECT {i + offset} + :n AS v"), {"n": 1})).scalar_one()
                await conn.commit()
                results.append(value)
    return results


async def test_the_default_statement_cache_breaks_behind_transaction_pooling(pgbouncer):
    """The failure the setting exists for (if this ever passes, PgBouncer learnt to track
    prepared statements and the workaround may go)."""
    _, url = pgbouncer
    engine = create_engine(url, pool_mode="session", pool_size=2, max_overflow=0)
    try:
        with pytest.raises(sa.exc.DBAPIError, match=r"prepared statement .* does not exist"):
            await _statement_on_another_server_connection(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("how", ["setting", "url"])
async def test_transaction_mode_works_behind_pgbouncer(pgbouncer, postgres_url, how):
    _, url = pgbouncer
    # Migrations run over the direct connection first, as the Kubernetes Jobs do.
    direct = create_engine(postgres_url)
    await migrate(direct, migrations_dir=BILLING_MIGRATIONS, version_table="alembic_version_billing")
    await direct.dispose()

    async with __import__("contextlib").AsyncExitStack() as stack:
        # Opening the database re-checks the migrations (at head: a no-op) through the pooler.
        kwargs = {"pool_mode": "transaction"} if how == "setting" else {}
        engine = await open_database(
            url if how == "setting" else f"{url}?pgbouncer=true",
            migrations_dir=BILLING_MIGRATIONS,
            version_table="alembic_version_billing",
            stack=stack,
            pool_size=4,
            max_overflow=4,
            **kwargs,
        )
        assert await _statement_on_another_server_connection(engine) == 3
        assert await _distinct_statements(engine, rounds=10) == [v for i in range(10) for v in (i + 1, i + 1001)]

        async def client(n: int) -> int:
            async with engine.begin() as conn:  # a transaction of several statements
                await conn.execute(sa.text("CREATE TEMP TABLE IF NOT EXISTS t_scratch (n int) ON COMMIT DROP"))
                await conn.execute(sa.text("INSERT INTO t_scratch VALUES (:n), (:m)"), {"n": n, "m": n})
                total = (await conn.execute(sa.text("SELECT sum(n) FROM t_scratch"))).scalar_one()
                tables = (
                    await conn.execute(
                        sa.text("SELECT count(*) FROM information_schema.tables WHERE table_name = :t"),
                        {"t": "alembic_version_billing"},
                    )
                ).scalar_one()
                return total * tables

        assert await asyncio.gather(*(client(n) for n in range(40))) == [2 * n for n in range(40)]

        # Statements past SQLAlchemy's execution layer (servicekit.db_direct) on the same engine:
        # asyncpg prepares each without caching it (the pooler settings), so neither a statement
        # run again on another server connection nor many clients at once find a stale one.
        from agentry.servicekit.db_direct import DirectStatement

        plus = DirectStatement(sa.text("SELECT CAST(:n AS int) + 1"))

        async def direct_client(n: int) -> list[int]:
            return [await plus.value(engine, {"n": n + k}) for k in range(10)]

        assert await asyncio.gather(*(direct_client(100 * n) for n in range(20))) == [
            [100 * n + k + 1 for k in range(10)] for n in range(20)
        ]
