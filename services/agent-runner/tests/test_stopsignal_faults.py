"""RedisStopSignal across Redis restarts, on a private redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from agentry.runner.adapters.stop_redis import RedisStopSignal
from agentry.runner.stopsignal import StopSignalUnavailable
from agentry.servicekit.faults import PrivateRedis
from agentry.servicekit.testing import needs

pytestmark = needs(PrivateRedis.available(), "redis-server")


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    async with PrivateRedis() as server:
        yield server


@pytest.fixture
async def replicas(private_redis: PrivateRedis) -> AsyncIterator[tuple[RedisStopSignal, RedisStopSignal]]:
    api = RedisStopSignal(private_redis.url, key_prefix="t:run:")
    worker = RedisStopSignal(private_redis.url, key_prefix="t:run:")
    yield api, worker
    await api.close()
    await worker.close()


async def test_a_stop_requested_after_a_restart_wakes_the_watcher(
    private_redis: PrivateRedis, replicas: tuple[RedisStopSignal, RedisStopSignal]
) -> None:
    api, worker = replicas
    assert not await api.is_stop_requested("r1")  # the api replica has a pooled connection now
    async with worker.watch("r1") as stopped:
        await private_redis.arestart(downtime_seconds=0.5)
        assert not stopped.is_set()

        requested = time.monotonic()
        await api.request_stop("r1")  # its pooled connection died with the server
        await asyncio.wait_for(stopped.wait(), 10)
        woke_after = time.monotonic() - requested
    assert woke_after < 5
    assert await worker.is_stop_requested("r1")


async def test_a_stop_requested_while_redis_is_down_lands_once_it_is_back(
    private_redis: PrivateRedis, replicas: tuple[RedisStopSignal, RedisStopSignal]
) -> None:
    api, worker = replicas
    async with worker.watch("r1") as stopped:
        await private_redis.astop()
        request = asyncio.create_task(api.request_stop("r1"))
        await asyncio.sleep(1.0)
        assert not request.done(), "the request waits for Redis instead of failing"
        await private_redis.astart()

        await asyncio.wait_for(request, 10)
        # Published to the new server, or seen by the recheck after the watcher resubscribes.
        await asyncio.wait_for(stopped.wait(), 10)


async def test_redis_down_past_the_window_is_unavailable(private_redis: PrivateRedis) -> None:
    signal = RedisStopSignal(private_redis.url, key_prefix="t:run:", reconnect_seconds=0.5)
    try:
        await signal.request_stop("r0")
        await private_redis.astop(kill=True)
        started = time.monotonic()
        with pytest.raises(StopSignalUnavailable):
            await signal.request_stop("r1")
        with pytest.raises(StopSignalUnavailable):
            await signal.is_stop_requested("r1")
        assert time.monotonic() - started < 8
    finally:
        await signal.close()
