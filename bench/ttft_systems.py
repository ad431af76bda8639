"""ttft.py's systems under test: every service in this process (embedded) or each in its own (split)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from bench_env import AMQP_URL, NO_RATE_LIMITS, PG_ADMIN, REDIS_URL, tracing_env
from ttft_model import FakeLLMProcess

CLK_TCK = os.sysconf("SC_CLK_TCK")
now = time.monotonic


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class System:
    mode: str
    gateway_url: str
    pids: dict[str, int]  # process name -> pid, for CPU accounting


@contextlib.asynccontextmanager
async def embedded_system(llm: FakeLLMProcess, data_dir: Path):
    from agentry.cli.devstack import start_dev_stack

    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=data_dir,
            llm_api_base=llm.base_url,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
            gateway_overrides={k.removeprefix("AGENTRY_GATEWAY_").lower(): int(v) for k, v in NO_RATE_LIMITS.items()},
        )
        yield System(
            "embedded", dev.gateway_url, {"bench (client + all services)": os.getpid(), "fakellm": llm.proc.pid}
        )


@contextlib.asynccontextmanager
async def split_system(llm: FakeLLMProcess, data_dir: Path, tracing: str = "prometheus"):
    """Every service in its own process; `tracing` is the observability level (bench_env.tracing_env)."""
    from agentry.cli.split import SplitConfig, SplitProcesses, free_port

    unique = f"bench{uuid.uuid4().hex[:10]}"
    database = f"agentry_{unique}"
    admin = httpx.URL(PG_ADMIN)
    database_url = f"postgresql+asyncpg://{admin.username or 'postgres'}@{admin.host}:{admin.port or 5432}/{database}"
    queue_name, redis_prefix = f"agentry.runs.{unique}", f"agentry:{unique}:"
    ports = {name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")}
    procs = SplitProcesses(
        SplitConfig(
            database_url=database_url,
            redis_url=REDIS_URL,
            amqp_url=AMQP_URL,
            data_dir=data_dir,
            gateway_port=free_port(),
            grpc_ports=ports,
            llm_api_base=llm.base_url,
            queue_name=queue_name,
            redis_prefix=redis_prefix,
            extra_env={**NO_RATE_LIMITS, **tracing_env(tracing)},
        )
    )
    try:
        # start() blocks while it polls health: keep it off the event loop.
        # 300 s: on a loaded machine the worker's LiteLLM import alone can pass 60 s.
        await asyncio.get_running_loop().run_in_executor(None, procs.start, 300.0)
        pids = {name: p.pid for name, p in procs.procs.items()}
        yield System("split", procs.gateway_url, {**pids, "bench (client)": os.getpid(), "fakellm": llm.proc.pid})
    finally:
        await asyncio.get_running_loop().run_in_executor(None, procs.stop)
        await cleanup_split(database, queue_name, redis_prefix)


async def cleanup_split(database: str, queue_name: str, redis_prefix: str) -> None:
    for what, step in (
        ("queue", _delete_queue(queue_name)),
        ("redis keys", _delete_redis_keys(redis_prefix)),
        ("database", _drop_database(database)),
    ):
        try:
            await asyncio.wait_for(step, 30)
        except Exception as exc:  # noqa: BLE001 - report and go on cleaning the rest
            print(f"cleanup: could not remove the {what}: {exc!r}", file=sys.stderr)


async def _delete_queue(name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def _delete_redis_keys(prefix: str) -> None:
    from redis import asyncio as aioredis

    redis = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
    finally:
        await redis.aclose()


async def _drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
