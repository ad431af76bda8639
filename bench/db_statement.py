"""What one PostgreSQL statement costs the calling process, by the way it is run (issue 15).

    uv run python bench/db_statement.py [--statements 3000] [--rounds 2]

Runs the same one-row statement (`SELECT $1::int + 1, $2::text`) sequentially, each way in turn,
and reports CPU (user + system of this process, `time.process_time`) and wall time per statement:

- `sqlalchemy`: `async with autocommit(engine).connect() as conn: (await conn.execute(...)).one()`,
  the way the services ran every read and one-statement write before `servicekit.db_direct`;
- `direct`: `servicekit.db_direct.DirectStatement(...).row(engine, ...)` on the same engine's pool;
- `asyncpg`: `fetchrow` on one bare asyncpg connection (no pool): the floor.

And what a commit waits for: a one-row `UPDATE` autocommitted on the bare connection with
`synchronous_commit` on (PostgreSQL's default: the commit waits for its WAL to reach the disk)
and off (it does not), alternately (`commit sync` / `commit async`, wall time per statement).
Every transaction on the time-to-first-token path that writes (the run's creation, its claim)
waits for that flush.

Also `create_run`: the runner's start of a run on a fresh thread with its prompt, through
`SqlRunnerRepository.create_run` on a freshly migrated database (one function call since
migration 0008). Needs PostgreSQL on localhost (`AGENTRY_BENCH_PG`, an admin DSN, default
postgresql://postgres@127.0.0.1:5432/postgres); its scratch database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
import uuid
from pathlib import Path

import asyncpg
import sqlalchemy as sa

import agentry.runner
from agentry.runner.adapters.sql import SqlRunnerRepository
from agentry.runner.domain import StoredMessage
from agentry.servicekit.db import autocommit, create_engine, open_database
from agentry.servicekit.db_direct import DirectStatement

ADMIN = os.environ.get("AGENTRY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SQL = "SELECT CAST(:a AS integer) + 1 AS x, CAST(:b AS text) AS y"


async def _measure(label: str, call, n: int) -> tuple[str, float, float]:
    for _ in range(min(200, n)):
        await call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await call()
    return label, 1e6 * (time.process_time() - cpu) / n, 1e6 * (time.perf_counter() - wall) / n


async def main(statements: int, rounds: int) -> None:
    name = f"bench_stmt_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        async with contextlib.AsyncExitStack() as stack:
            engine = create_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
            stack.push_async_callback(engine.dispose)
            reads = autocommit(engine)
            text = sa.text(SQL)
            direct = DirectStatement(text)
            bare = await asyncpg.connect(dsn)
            stack.push_async_callback(bare.close)
            params = {"a": 1, "b": "x"}

            async def through_sqlalchemy() -> None:
                async with reads.connect() as conn:
                    (await conn.execute(text, params)).one()

            async def through_direct() -> None:
                await direct.row(engine, params)

            async def through_asyncpg() -> None:
                await bare.fetchrow("SELECT $1::integer + 1 AS x, $2::text AS y", 1, "x")

            await bare.execute("CREATE TABLE commit_probe (id int PRIMARY KEY, n bigint NOT NULL)")
            await bare.execute("INSERT INTO commit_probe VALUES (1, 0)")

            async def update() -> None:
                await bare.execute("UPDATE commit_probe SET n = n + 1 WHERE id = 1")

            results: dict[str, list[tuple[float, float]]] = {}
            for _ in range(rounds):
                for label, call in (
                    ("sqlalchemy", through_sqlalchemy),
                    ("direct", through_direct),
                    ("asyncpg", through_asyncpg),
                ):
                    _, cpu, wall = await _measure(label, call, statements)
                    results.setdefault(label, []).append((cpu, wall))
                for label, mode in (("commit sync", "on"), ("commit async", "off")):
                    await bare.execute(f"SET synchronous_commit = {mode}")
                    _, cpu, wall = await _measure(label, update, max(statements // 10, 1))
                    results.setdefault(label, []).append((cpu, wall))
                await bare.execute("RESET synchronous_commit")

            migrated = await open_database(
                dsn.replace("postgresql://", "postgresql+asyncpg://", 1),
                migrations_dir=Path(agentry.runner.__file__).parent / "migrations",
                version_table="alembic_version_runner",
                stack=stack,
            )
            repo = SqlRunnerRepository(migrated)
            starts: list[tuple[float, float]] = []
            for i in range(600):
                thread = await repo.create_thread(account_id="bench", name="t")
                prompt = StoredMessage(str(uuid.uuid4()), thread.thread_id, "user", '{"text": "hi"}', time.time())
                cpu, wall = time.process_time(), time.perf_counter()
                await repo.create_run(
                    run_id=str(uuid.uuid4()),
                    thread_id=thread.thread_id,
                    account_id="bench",
                    model="m",
                    first_message=prompt,
                )
                if i >= 100:
                    starts.append((1e6 * (time.process_time() - cpu), 1e6 * (time.perf_counter() - wall)))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    print(f"One-row statement, {statements} sequential per way, {rounds} rounds (µs per statement):\n")
    print("| way | CPU µs (each round) | wall µs (each round) |")
    print("|---|---|---|")
    for label, rows in results.items():
        print(f"| {label} | {' / '.join(f'{c:.0f}' for c, _ in rows)} | {' / '.join(f'{w:.0f}' for _, w in rows)} |")
    cpu = sorted(c for c, _ in starts)
    wall = sorted(w for _, w in starts)
    print(
        f"\ncreate_run (500 starts, fresh thread, with prompt): CPU p50 {statistics.median(cpu) / 1000:.2f} ms, "
        f"wall p50 {statistics.median(wall) / 1000:.2f} ms, p90 {wall[int(len(wall) * 0.9)] / 1000:.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--statements", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.statements, args.rounds))
