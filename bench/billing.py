"""Billing: CheckRun latency (in-process and through gRPC) and RecordUsage throughput.

Run: uv run python bench/billing.py [--pg postgresql+asyncpg://postgres@127.0.0.1:5432/DB]
     → prints and writes bench/results/billing.md

CheckRun is answered from the service's in-memory cache (plan + balance per account), so it is
measured warm: after one call per account has filled the cache. RecordUsage writes one ledger
entry and moves the balance in one transaction: its throughput is the database's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import agentry.billing
from agentry.api.billing.v1 import billing_pb2 as pb
from agentry.api.billing.v1 import billing_pb2_grpc
from agentry.billing import BillingService, BillingSettings, Usage, load_catalog
from agentry.billing.adapters.sql import SqlBillingStore
from agentry.billing.main import start
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel
from agentry.servicekit.db import open_database

ACCOUNTS = 200
CHECKS = 20_000
GRPC_CHECKS = 3_000
USAGE_WRITES = 2_000
CONCURRENCY = 16
MIGRATIONS = Path(agentry.billing.__file__).parent / "migrations"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def in_process(url: str) -> dict:
    async with contextlib.AsyncExitStack() as stack:
        engine = await open_database(
            url, migrations_dir=MIGRATIONS, version_table="alembic_version_billing", stack=stack, pool_size=CONCURRENCY
        )
        service = BillingService(
            SqlBillingStore(engine), load_catalog(None), opening_grant_micros=5_000_000, cache_ttl=3600
        )
        accounts = [f"bench-{i}" for i in range(ACCOUNTS)]
        for a in accounts:
            await service.check_run(a, "openai/gpt-4o-mini")
        samples = []
        for i in range(CHECKS):
            t0 = time.perf_counter_ns()
            await service.check_run(accounts[i % ACCOUNTS], "openai/gpt-4o-mini")
            samples.append((time.perf_counter_ns() - t0) / 1000)

        # RecordUsage: CONCURRENCY writers over distinct keys, as many runs would.
        counter = iter(range(USAGE_WRITES))

        async def writer(w: int) -> None:
            for n in counter:
                await service.record_usage(
                    Usage(
                        account_id=accounts[n % ACCOUNTS],
                        run_id=f"run-{w}",
                        step=n,
                        model="openai/gpt-4o-mini",
                        prompt_tokens=1000,
                        completion_tokens=200,
                        cost_micros=450,
                    )
                )

        t0 = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(CONCURRENCY)))
        elapsed = time.perf_counter() - t0
        return {
            "p50_us": statistics.median(samples),
            "p99_us": pct(samples, 0.99),
            "usage_per_s": USAGE_WRITES / elapsed,
        }


async def through_grpc(url: str) -> dict:
    async with contextlib.AsyncExitStack() as stack:
        server = await start(BillingSettings(port=0, database_url=url, cache_ttl_seconds=3600), stack)
        channel = open_channel(server.target, DEV_INTERNAL_TOKEN)
        stack.push_async_callback(channel.close)
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        accounts = [f"grpc-{i}" for i in range(ACCOUNTS)]
        for a in accounts:
            await stub.CheckRun(pb.CheckRunRequest(account_id=a, model="openai/gpt-4o-mini"))
        samples = []
        for i in range(GRPC_CHECKS):
            t0 = time.perf_counter_ns()
            await stub.CheckRun(pb.CheckRunRequest(account_id=accounts[i % ACCOUNTS], model="openai/gpt-4o-mini"))
            samples.append((time.perf_counter_ns() - t0) / 1000)
        return {"p50_us": statistics.median(samples), "p99_us": pct(samples, 0.99)}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pg", help="a PostgreSQL URL (an empty database) for RecordUsage; default SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.pg or f"sqlite+aiosqlite:///{tmp}/billing.db"
        local = await in_process(url)
        remote = await through_grpc(f"sqlite+aiosqlite:///{tmp}/billing-grpc.db")
    db = "PostgreSQL" if args.pg else "SQLite"
    lines = [
        "| measure | value |",
        "|---|---|",
        f"| CheckRun in-process, warm cache: p50 / p99 | {local['p50_us']:.1f} µs / {local['p99_us']:.1f} µs |",
        f"| CheckRun through gRPC (loopback, one client): p50 / p99 | {remote['p50_us']:.0f} µs / {remote['p99_us']:.0f} µs |",
        f"| RecordUsage in-process on {db}, {CONCURRENCY} concurrent writers | {local['usage_per_s']:.0f} writes/s |",
    ]
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).parent / "results" / "billing.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
