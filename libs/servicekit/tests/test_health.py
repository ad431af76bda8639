"""Readiness follows the dependencies and drains; liveness follows only the process."""

from __future__ import annotations

import contextlib

from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel, start_grpc_server
from agentry.servicekit.health import LIVENESS, database_check, redis_check
from agentry.servicekit.metrics import family

SERVICE = "agentry.test.Ready"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def test_readiness_follows_dependencies_and_drains_while_liveness_stays():
    database_up = True

    async def database() -> None:
        if not database_up:
            raise ConnectionRefusedError("database down")

    async with contextlib.AsyncExitStack() as stack:
        running = await start_grpc_server(
            name="ready",
            register=lambda server: None,
            service_names=[SERVICE],
            host="127.0.0.1",
            port=0,
            internal_token=DEV_INTERNAL_TOKEN,
            grace=0.1,
            readiness_checks={"database": database},
            readiness_interval=3600,
        )
        channel = open_channel(running.target, DEV_INTERNAL_TOKEN)
        stack.push_async_callback(channel.close)
        health = health_pb2_grpc.HealthStub(channel)

        async def status(service: str) -> int:
            return (await health.Check(health_pb2.HealthCheckRequest(service=service))).status

        assert await running.readiness.check_once()
        assert [await status(s) for s in ("", SERVICE, LIVENESS)] == [SERVING] * 3

        database_up = False
        assert not await running.readiness.check_once()
        assert running.readiness.failing == {"database": "ConnectionRefusedError"}
        assert [await status(s) for s in ("", SERVICE, LIVENESS)] == [NOT_SERVING, NOT_SERVING, SERVING]
        gauge = family("gauge", "agentry_dependency_up", "", ("dependency",))
        assert gauge.labels("database")._value.get() == 0

        database_up = True
        assert await running.readiness.check_once()
        assert [await status(s) for s in ("", SERVICE)] == [SERVING, SERVING]

        # Draining (SIGTERM): not ready whatever the dependencies say, still alive.
        await running.readiness.drain()
        await running.readiness.check_once()
        assert [await status(s) for s in ("", SERVICE, LIVENESS)] == [NOT_SERVING, NOT_SERVING, SERVING]
        await running.server.stop(0.1)


async def test_database_and_redis_checks_fail_on_what_is_not_there(tmp_path):
    import pytest

    from agentry.servicekit.db import create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ok.db'}")
    try:
        await database_check(engine)()
    finally:
        await engine.dispose()
    from redis.exceptions import ConnectionError as RedisConnectionError

    with pytest.raises(RedisConnectionError):  # nothing listens on port 1
        await redis_check("redis://127.0.0.1:1/0")()
