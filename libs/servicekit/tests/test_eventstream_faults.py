"""RedisEventStream across Redis restarts and outages, on a private redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from redis import asyncio as aioredis

from agentry.servicekit.eventstream import EventStreamUnavailable, RedisEventStream, SequenceError
from agentry.servicekit.eventstream import redis as redis_stream
from agentry.servicekit.faults import PrivateRedis
from agentry.servicekit.testing import needs

pytestmark = needs(PrivateRedis.available(), "redis-server")


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    # The append-only file makes a graceful restart keep the data, as a real deployment would.
    async with PrivateRedis(extra_args=("--appendonly", "yes")) as server:
        yield server


@pytest.fixture
async def stream(private_redis: PrivateRedis) -> AsyncIterator[RedisEventStream]:
    events = RedisEventStream(private_redis.url, reconnect_seconds=10)
    yield events
    await events.close()


async def test_a_blocked_read_survives_a_restart_and_wakes_on_the_next_append(
    private_redis: PrivateRedis, stream: RedisEventStream
) -> None:
    await stream.append("r1", 1, b"before")
    reader = asyncio.create_task(stream.read("r1", 1, block_ms=20_000))
    await asyncio.sleep(0.2)  # the XREAD is blocked in Redis now

    await private_redis.arestart(downtime_seconds=0.5)
    assert not reader.done(), "the lost connection was not surfaced to the reader"
    back = time.monotonic()
    await stream.append("r1", 2, b"after")
    entries = await asyncio.wait_for(reader, 10)

    assert [(e.seq, e.data) for e in entries] == [(2, b"after")]
    assert time.monotonic() - back < 5
    assert [e.seq for e in await stream.read("r1", 0)] == [1, 2]


async def test_appends_during_a_restart_are_neither_lost_nor_duplicated(
    private_redis: PrivateRedis, stream: RedisEventStream
) -> None:
    total = 150

    async def write() -> float:
        slowest = 0.0
        for seq in range(1, total + 1):
            started = time.monotonic()
            await stream.append("r1", seq, f"event-{seq}".encode(), terminal=seq == total)
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.01)
        return slowest

    writer = asyncio.create_task(write())
    await asyncio.sleep(0.3)
    await private_redis.arestart(downtime_seconds=1.0)
    slowest = await asyncio.wait_for(writer, 30)

    entries = await stream.read("r1", 0, count=1000)
    assert [e.seq for e in entries] == list(range(1, total + 1))
    assert [e.data for e in entries] == [f"event-{n}".encode() for n in range(1, total + 1)]
    assert entries[-1].terminal
    assert 0.9 < slowest < 8, "one append waited out the downtime"


async def test_an_append_whose_answer_never_comes_is_sent_again_on_a_new_connection(
    private_redis: PrivateRedis, stream: RedisEventStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A frozen server (SIGSTOP) accepts the bytes and never answers, as a hung or partitioned
    # Redis does: the append's own connection must give up on it and the batch go out again.
    monkeypatch.setattr(redis_stream, "APPEND_REPLY_SECONDS", 0.3)
    await stream.append("r1", 1, b"a")
    before = await _connections_received(private_redis)
    pid = private_redis._proc.pid  # noqa: SLF001 - the test owns this server process
    os.kill(pid, signal.SIGSTOP)
    try:
        writer = asyncio.create_task(stream.append("r1", 2, b"b"))
        await asyncio.sleep(1.0)  # its answer timed out, and the connects after it too
        assert not writer.done()
    finally:
        os.kill(pid, signal.SIGCONT)
    await asyncio.wait_for(writer, 10)  # the first send landed: the one sent again is a no-op
    await stream.append("r1", 3, b"c", terminal=True)  # and the connection after it works
    assert [(e.seq, e.data) for e in await stream.read("r1", 0)] == [(1, b"a"), (2, b"b"), (3, b"c")]
    # Given up on, not waited out: connections were opened again while the server was frozen
    # (the test's own INFO client is one more).
    assert await _connections_received(private_redis) - before >= 3


async def test_an_append_batch_that_fails_unexpectedly_fails_its_appends_instead_of_leaving_them_waiting(
    stream: RedisEventStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An error redis-py does not wrap (a bug, a parser's surprise) ends the flusher: the appends
    # it carried, and those queued behind it, must hear so, never wait for an answer forever.
    _first_exchange_fails(monkeypatch, after=0.05)  # the second append queues behind it
    first = asyncio.create_task(stream.append("r1", 1, b"a"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(stream.append("r1", 2, b"b"))
    done = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
    assert all(isinstance(result, EventStreamUnavailable) for result in done), done

    await stream.append("r1", 1, b"a")  # the next append starts a new flusher
    assert [(e.seq, e.data) for e in await stream.read("r1", 0)] == [(1, b"a")]


async def test_a_waiting_read_whose_multiplexer_fails_unexpectedly_hears_at_once_and_the_next_one_works(
    stream: RedisEventStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An error redis-py does not wrap, where the multiplexer reads its subscribed connection.
    conn = stream._mux._conn  # noqa: SLF001 - the fault is injected there
    read, calls = conn.read_response, []

    async def broken_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("not a redis error")
        return await read(*args, **kwargs)

    monkeypatch.setattr(conn, "read_response", broken_once)
    started = time.monotonic()
    with pytest.raises(EventStreamUnavailable):
        await stream.read("r1", 0, block_ms=20_000)
    assert time.monotonic() - started < 5, "the reader waited out its block"

    reader = asyncio.create_task(stream.read("r1", 0, block_ms=20_000))
    await asyncio.sleep(0.3)
    await stream.append("r1", 1, b"a")
    assert [(e.seq, e.data) for e in await asyncio.wait_for(reader, 5)] == [(1, b"a")]


def _first_exchange_fails(monkeypatch: pytest.MonkeyPatch, *, after: float = 0.0) -> None:
    """The next exchange with Redis raises an error that is not a Redis error, `after` seconds
    in; the ones after it go through."""
    exchange, calls = redis_stream._exchange, []  # noqa: SLF001 - the fault is injected there

    async def broken_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            await asyncio.sleep(after)
            raise RuntimeError("not a redis error")
        return await exchange(*args, **kwargs)

    monkeypatch.setattr(redis_stream, "_exchange", broken_once)


async def _connections_received(server: PrivateRedis) -> int:
    client = aioredis.Redis.from_url(server.url)
    try:
        return int((await client.info("stats"))["total_connections_received"])
    finally:
        await client.aclose()


async def test_sending_the_same_append_again_is_a_no_op(stream: RedisEventStream) -> None:
    await stream.append("r1", 1, b"a")
    await stream.append("r1", 2, b"b", terminal=True)

    # What a retry of an XADD that landed before its connection broke looks like.
    await stream.append("r1", 2, b"b", terminal=True)
    await stream.append("r1", 1, b"a")

    with pytest.raises(SequenceError):
        await stream.append("r1", 2, b"different")
    with pytest.raises(SequenceError):
        await stream.append("r1", 2, b"b", terminal=False)
    assert [(e.seq, e.data) for e in await stream.read("r1", 0)] == [(1, b"a"), (2, b"b")]


async def test_redis_down_past_the_window_is_unavailable(private_redis: PrivateRedis) -> None:
    events = RedisEventStream(private_redis.url, reconnect_seconds=0.5)
    try:
        await events.append("r1", 1, b"a")
        await private_redis.astop()

        started = time.monotonic()
        with pytest.raises(EventStreamUnavailable):
            await events.append("r1", 2, b"b")
        assert 0.4 < time.monotonic() - started < 5
        with pytest.raises(EventStreamUnavailable):
            await events.first_seq("r1")

        await private_redis.astart()
        await events.append("r1", 2, b"b")  # usable again once Redis is back
        assert [e.seq for e in await events.read("r1", 0)] == [1, 2]
    finally:
        await events.close()


async def test_a_blocked_read_whose_redis_stays_down_is_unavailable(private_redis: PrivateRedis) -> None:
    events = RedisEventStream(private_redis.url, reconnect_seconds=0.5)
    try:
        await events.append("r1", 1, b"a")
        reader = asyncio.create_task(events.read("r1", 1, block_ms=20_000))
        await asyncio.sleep(0.2)
        await private_redis.astop(kill=True)
        with pytest.raises(EventStreamUnavailable):
            await asyncio.wait_for(reader, 10)
    finally:
        await events.close()


async def test_a_read_whose_wait_ran_out_during_the_outage_returns_what_is_there(
    private_redis: PrivateRedis, stream: RedisEventStream
) -> None:
    await stream.append("r1", 1, b"a")
    started = time.monotonic()
    reader = asyncio.create_task(stream.read("r1", 1, block_ms=500))
    await asyncio.sleep(0.1)
    await private_redis.arestart(downtime_seconds=1.0)

    assert await asyncio.wait_for(reader, 10) == []
    assert time.monotonic() - started < 5


async def test_a_terminal_append_loads_its_script_when_redis_has_forgotten_it(
    private_redis: PrivateRedis, stream: RedisEventStream
) -> None:
    # Appends go out as EVALSHA in the batch's pipeline (no SCRIPT EXISTS round trip
    # first): a Redis that restarted, or flushed its scripts, answers NOSCRIPT; the stream loads
    # the script and sends the append again, and the log still expires.
    from redis import asyncio as aioredis

    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        for run_id in ("r1", "r2"):
            await admin.script_flush()
            await stream.append(run_id, 1, b"a")
            await asyncio.gather(
                stream.append(run_id, 2, b"done", terminal=True), stream.append("other-" + run_id, 1, b"x")
            )
            assert [(e.seq, e.terminal) for e in await stream.read(run_id, 0)] == [(1, False), (2, True)]
            assert 0 < await admin.ttl(stream.key(run_id)) <= 3600
    finally:
        await admin.aclose()


async def test_a_redis_that_keeps_forgetting_the_script_fails_the_append_instead_of_looping(
    private_redis: PrivateRedis,
) -> None:
    # NOSCRIPT again right after SCRIPT LOAD (a proxy that sends each command to another
    # server): the appends (each one a script call) fail with EventStreamUnavailable after one
    # reload, instead of loading the script for ever.
    class Forgetful(RedisEventStream):
        async def _send(self, batch: list) -> list:
            await self._redis.script_flush()
            return await super()._send(batch)

    stream = Forgetful(private_redis.url, key_prefix="forgetful:")
    try:
        ended, other = await asyncio.wait_for(
            asyncio.gather(
                stream.append("r1", 1, b"done", terminal=True), stream.append("r2", 1, b"x"), return_exceptions=True
            ),
            10,
        )
        assert isinstance(ended, EventStreamUnavailable) and "NOSCRIPT" in str(ended)
        assert isinstance(other, EventStreamUnavailable) and "NOSCRIPT" in str(other)
        assert await stream.read("r1", 0) == []
    finally:
        await stream.close()
