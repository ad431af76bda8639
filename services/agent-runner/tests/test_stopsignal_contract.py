"""Contract for the StopSignal port: the in-process adapter must behave like the Redis one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from agentry.runner.adapters.stop_memory import MemoryStopSignal
from agentry.runner.adapters.stop_redis import RedisStopSignal
from agentry.runner.stopsignal import StopSignal, StopSignalUnavailable
from agentry.servicekit.testing import FakeClock

TTL_SECONDS = 3600


@dataclass
class Harness:
    """`replica()` opens another instance that shares the stop state, as a second process would;
    the in-process adapter can only share by being the same instance."""

    open_replica: Callable[[], StopSignal]
    check_expiry: Callable[[StopSignal, str], Awaitable[None]]
    signals: list[StopSignal] = field(default_factory=list)

    def replica(self) -> StopSignal:
        signal = self.open_replica()
        self.signals.append(signal)
        return signal


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()
        shared = MemoryStopSignal(ttl_seconds=TTL_SECONDS, clock=clock)

        async def memory_expiry(signal: StopSignal, run_id: str) -> None:
            clock.advance(TTL_SECONDS - 1)
            assert await signal.is_stop_requested(run_id)
            clock.advance(2)
            assert not await signal.is_stop_requested(run_id)

        yield Harness(open_replica=lambda: shared, check_expiry=memory_expiry)
        await shared.close()
        return

    from redis import asyncio as aioredis

    url: str = request.getfixturevalue("redis_url")
    prefix = f"{request.getfixturevalue('unique_name')}:run:"
    admin = aioredis.Redis.from_url(url)

    async def redis_expiry(signal: StopSignal, run_id: str) -> None:
        assert isinstance(signal, RedisStopSignal)
        assert 0 < await admin.pttl(signal.key(run_id)) <= TTL_SECONDS * 1000

    h = Harness(
        open_replica=lambda: RedisStopSignal(url, key_prefix=prefix, ttl_seconds=TTL_SECONDS),
        check_expiry=redis_expiry,
    )
    try:
        yield h
    finally:
        for signal in h.signals:
            await signal.close()
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def test_watcher_wakes_when_a_stop_is_requested(harness: Harness) -> None:
    signal = harness.replica()
    async with signal.watch("r1") as stopped:
        assert not stopped.is_set()
        await signal.request_stop("r1")
        await asyncio.wait_for(stopped.wait(), timeout=1)


async def test_watch_after_request_is_set_on_entry(harness: Harness) -> None:
    signal = harness.replica()
    await signal.request_stop("r1")

    async with signal.watch("r1") as stopped:
        assert stopped.is_set()


async def test_is_stop_requested_remembers_per_run(harness: Harness) -> None:
    signal = harness.replica()
    assert not await signal.is_stop_requested("r1")

    await signal.request_stop("r1")

    assert await signal.is_stop_requested("r1")
    assert not await signal.is_stop_requested("r2")


async def test_request_for_one_run_does_not_wake_another(harness: Harness) -> None:
    signal = harness.replica()
    async with signal.watch("r1") as r1, signal.watch("r2") as r2:
        await signal.request_stop("r2")
        await asyncio.wait_for(r2.wait(), timeout=1)
        # r2's wake-up travelled the same path r1's would have, so r1 would be set by now.
        assert not r1.is_set()


async def test_every_watcher_of_a_run_wakes(harness: Harness) -> None:
    signal = harness.replica()
    async with signal.watch("r1") as first, signal.watch("r1") as second:
        await signal.request_stop("r1")
        await asyncio.wait_for(asyncio.gather(first.wait(), second.wait()), timeout=1)


async def test_request_on_one_replica_wakes_a_watcher_on_another(harness: Harness) -> None:
    api_replica, worker_replica = harness.replica(), harness.replica()
    async with worker_replica.watch("r1") as stopped:
        await api_replica.request_stop("r1")
        await asyncio.wait_for(stopped.wait(), timeout=1)
    assert await worker_replica.is_stop_requested("r1")


async def test_request_made_on_another_replica_before_watching_is_seen(harness: Harness) -> None:
    api_replica, worker_replica = harness.replica(), harness.replica()
    await api_replica.request_stop("queued-run")

    async with worker_replica.watch("queued-run") as stopped:
        assert stopped.is_set()


async def test_stop_request_expires(harness: Harness) -> None:
    signal = harness.replica()
    await signal.request_stop("r1")

    await harness.check_expiry(signal, "r1")


@pytest.mark.redis
async def test_watching_many_runs_shares_one_subscription(redis_url: str, unique_name: str) -> None:
    from redis import asyncio as aioredis

    signal = RedisStopSignal(redis_url, key_prefix=f"{unique_name}:run:")
    admin = aioredis.Redis.from_url(redis_url)
    try:
        async with signal.watch("a"), signal.watch("b"), signal.watch("c") as c:
            subscribers = await admin.pubsub_numsub(f"{unique_name}:run:stop")
            assert subscribers == [(f"{unique_name}:run:stop".encode(), 1)]
            await signal.request_stop("c")
            await asyncio.wait_for(c.wait(), timeout=1)
    finally:
        await signal.close()
        await admin.aclose()


async def test_unreachable_redis_is_stop_signal_unavailable() -> None:
    # Redis would be waited for up to 10 s by default (a restart); this one never answers.
    signal = RedisStopSignal("redis://127.0.0.1:1/0", reconnect_seconds=0.3)
    try:
        with pytest.raises(StopSignalUnavailable):
            await signal.request_stop("r1")
        with pytest.raises(StopSignalUnavailable):
            async with signal.watch("r1"):
                pass
    finally:
        await signal.close()
