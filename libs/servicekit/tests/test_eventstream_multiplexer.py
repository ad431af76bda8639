"""RedisEventStream's multiplexed reader, on a private redis-server (so its client count is ours):
thousands of waiting readers on two connections, the slow-reader policy (a reader that stops
reading catches up by cursor, losing nothing, while what is kept per stream stays bounded), and
the subscription's own hazards: a rejected append, a lost, silent or idle connection, a first
read that fails, is answered across a reconnect or queued before one, a log deleted (also during
its first read), a reader far behind."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from agentry.servicekit.eventstream import RedisEventStream, SequenceError
from agentry.servicekit.faults import PrivateRedis, TcpProxy
from agentry.servicekit.testing import eventually, needs

pytestmark = needs(PrivateRedis.available(), "redis-server")


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    async with PrivateRedis() as server:
        yield server


@pytest.fixture
async def stream(private_redis: PrivateRedis) -> AsyncIterator[RedisEventStream]:
    events = RedisEventStream(private_redis.url, max_connections=8)
    yield events
    await events.close()


async def clients(url: str) -> int:
    admin = aioredis.from_url(url)
    try:
        return len(await admin.client_list()) - 1  # not this one
    finally:
        await admin.aclose()


async def test_two_thousand_waiting_readers_share_two_connections(private_redis, stream) -> None:
    readers = [asyncio.create_task(stream.read(f"run-{i}", 0, block_ms=30_000)) for i in range(2000)]
    await asyncio.sleep(0.3)
    assert not any(r.done() for r in readers)
    # The multiplexer's subscribed connection and the pooled one the streams' first reads went out on.
    assert await clients(private_redis.url) <= 2

    # Written together, as 2,000 runs of one worker process would (their appends are batched),
    # by a writer of its own, as in production (a worker writes, a gateway reads).
    writer = RedisEventStream(private_redis.url)
    try:
        await asyncio.gather(*(writer.append(f"run-{i}", 1, f"event of {i}".encode()) for i in range(2000)))
    finally:
        await writer.close()
    answers = await asyncio.wait_for(asyncio.gather(*readers), 10)
    assert [[(e.seq, e.data) for e in a] for a in answers] == [[(1, f"event of {i}".encode())] for i in range(2000)]
    for _ in range(20):  # (the writer's closed connections may take Redis a moment to drop)
        if await clients(private_redis.url) <= 2:
            break
        await asyncio.sleep(0.1)
    assert await clients(private_redis.url) <= 2


async def test_a_reader_joining_a_blocked_read_is_answered_without_waiting_for_it(stream) -> None:
    first = asyncio.create_task(stream.read("quiet", 0, block_ms=30_000))
    await asyncio.sleep(0.2)  # the multiplexer blocks on "quiet" alone now (for up to 5 s)
    await stream.append("busy", 1, b"already there")
    started = time.monotonic()
    entries = await stream.read("busy", 0, block_ms=30_000)
    assert [e.data for e in entries] == [b"already there"]
    assert time.monotonic() - started < 2.0, "the blocked read was not woken for the new reader"
    await stream.append("quiet", 1, b"at last")
    assert [e.data for e in await asyncio.wait_for(first, 5)] == [b"at last"]


async def test_readers_at_different_cursors_of_one_run_each_get_what_they_have_not_seen(stream) -> None:
    for seq in range(1, 4):
        await stream.append("run", seq, b"%d" % seq)
    behind = asyncio.create_task(stream.read("run", 1, block_ms=10_000))
    tail = asyncio.create_task(stream.read("run", 3, block_ms=10_000))
    assert [e.seq for e in await asyncio.wait_for(behind, 5)] == [2, 3]
    await asyncio.sleep(0.1)
    assert not tail.done(), "a reader at the tail waits for the next append"
    await stream.append("run", 4, b"4")
    assert [e.seq for e in await asyncio.wait_for(tail, 5)] == [4]


async def test_a_reader_that_stops_reading_catches_up_in_order_and_is_held_nowhere(stream) -> None:
    """The slow-client policy: nothing is queued per reader; a reader that comes back reads from
    its own cursor (in batches of at most `count`) and receives every event, in order."""
    await stream.append("run", 1, b"e1")
    got = await stream.read("run", 0, block_ms=10_000)
    assert [e.seq for e in got] == [1]

    # The reader stops reading while 5,000 more events are written.
    for start in range(2, 5002, 500):  # one run's appends come one after the other, in order
        for seq in range(start, min(start + 500, 5002)):
            await stream.append("run", seq, b"e%d" % seq)
    mux = stream._mux  # noqa: SLF001 - the policy under test is that it holds nothing per reader
    assert mux.watching() == 0, "a reader that is not reading has nothing held for it"
    # What the stream keeps for whoever reads it next is bounded, however far behind they are.
    assert all(len(sub.entries) <= 32 for sub in mux._subs.values())  # noqa: SLF001

    seen = [1]
    while seen[-1] < 5001:
        batch = await stream.read("run", seen[-1], block_ms=10_000)
        assert 0 < len(batch) <= 500, "answers come in bounded batches"
        seen.extend(e.seq for e in batch)
    assert seen == list(range(1, 5002))


async def test_a_waiting_reader_that_gives_up_leaves_nothing_behind(stream) -> None:
    assert await stream.read("nobody-writes", 0, block_ms=200) == []
    reader = asyncio.create_task(stream.read("nobody-writes-2", 0, block_ms=30_000))
    await asyncio.sleep(0.1)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert stream._mux.watching() == 0  # noqa: SLF001


async def test_a_rejected_append_reaches_no_waiting_reader(stream) -> None:
    """Appends publish in the same script as their XADD: one Redis refuses (a seq already used,
    by a writer that lost its run, say) is never seen live."""
    await stream.append("run", 1, b"one")
    await stream.append("run", 2, b"two")
    reader = asyncio.create_task(stream.read("run", 2, block_ms=10_000))
    await asyncio.sleep(0.2)
    with pytest.raises(SequenceError):
        await stream.append("run", 2, b"an impostor")
    await asyncio.sleep(0.2)
    assert not reader.done()
    await stream.append("run", 3, b"three")
    assert [(e.seq, e.data) for e in await asyncio.wait_for(reader, 5)] == [(3, b"three")]


async def test_entries_appended_while_the_multiplexer_reconnects_reach_its_readers(private_redis, stream) -> None:
    await stream.append("run", 1, b"one")
    reader = asyncio.create_task(stream.read("run", 1, block_ms=20_000))
    await asyncio.sleep(0.2)
    admin = aioredis.from_url(private_redis.url)
    try:
        # Its subscribed connection is dropped; the append lands before it is back.
        assert await admin.client_kill_filter(_type="pubsub") == 1
        await stream.append("run", 2, b"two")
    finally:
        await admin.aclose()
    assert [(e.seq, e.data) for e in await asyncio.wait_for(reader, 5)] == [(2, b"two")]
    reader = asyncio.create_task(stream.read("run", 2, block_ms=20_000))
    await asyncio.sleep(0.2)
    await stream.append("run", 3, b"three")
    assert [e.seq for e in await asyncio.wait_for(reader, 5)] == [3]


async def test_a_stream_nobody_waits_on_is_unsubscribed_after_the_linger(private_redis, stream) -> None:
    mux = stream._mux  # noqa: SLF001 - the linger and ping period, shortened for the test
    mux._linger, mux._ping_seconds = 0.3, 0.1  # noqa: SLF001
    await stream.append("run", 1, b"one")
    assert [e.seq for e in await stream.read("run", 0, block_ms=5_000)] == [1]
    admin = aioredis.from_url(private_redis.url)
    try:
        channel = stream.key("run")
        assert await admin.pubsub_numsub(channel) == [(channel.encode(), 1)]
        await asyncio.sleep(1.0)
        assert await admin.pubsub_numsub(channel) == [(channel.encode(), 0)]
    finally:
        await admin.aclose()
    # And a reader coming back later is subscribed again.
    reader = asyncio.create_task(stream.read("run", 1, block_ms=5_000))
    await asyncio.sleep(0.2)
    await stream.append("run", 2, b"two")
    assert [e.seq for e in await asyncio.wait_for(reader, 5)] == [2]


async def test_a_subscribed_connection_that_goes_silent_is_replaced(private_redis) -> None:
    """A partitioned connection (open, carrying nothing) is noticed by its unanswered PING and
    replaced; the readers waiting on it hear what was appended meanwhile."""
    with TcpProxy.for_url(private_redis.url) as proxy:
        stream = RedisEventStream(proxy.url_for(private_redis.url))
        writer = RedisEventStream(private_redis.url)
        stream._mux._ping_seconds = 0.2  # noqa: SLF001
        try:
            await writer.append("run", 1, b"one")
            reader = asyncio.create_task(stream.read("run", 1, block_ms=30_000))
            await asyncio.sleep(0.3)
            proxy.blackhole()
            await writer.append("run", 2, b"two")
            started = time.monotonic()
            # Noticed within two pings; the newest entries are then read on a pooled connection,
            # which was silenced too: it is given up on after its 5 s socket timeout.
            assert [(e.seq, e.data) for e in await asyncio.wait_for(reader, 20)] == [(2, b"two")]
            assert time.monotonic() - started < 10, "the silent connection was waited out"
        finally:
            await stream.close()
            await writer.close()


async def test_a_first_waiting_reader_far_behind_a_stream_gets_everything_after_its_cursor(stream) -> None:
    """The multiplexer keeps only the newest entries of a stream it subscribes; a reader behind
    them (a resume from long ago) is answered from its own cursor, in order, in bounded batches."""
    for seq in range(1, 101):
        await stream.append("run", seq, b"e%d" % seq)
    seen = [10]
    while seen[-1] < 100:
        batch = await asyncio.wait_for(stream.read("run", seen[-1], block_ms=10_000, count=40), 5)
        assert 0 < len(batch) <= 40
        seen.extend(e.seq for e in batch)
    assert seen == list(range(10, 101))
    reader = asyncio.create_task(stream.read("run", 100, block_ms=10_000))
    await asyncio.sleep(0.1)
    await stream.append("run", 101, b"live")
    assert [e.seq for e in await asyncio.wait_for(reader, 5)] == [101]


class _Pipe:
    def __init__(self, real, after_execute: Callable[[], Awaitable[None]]) -> None:
        self._real, self._after = real, after_execute

    async def __aenter__(self):
        await self._real.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._real.__aexit__(*exc)

    def xrevrange(self, *args, **kwargs):
        return self._real.xrevrange(*args, **kwargs)

    async def execute(self):
        result = await self._real.execute()
        await self._after()
        return result


class _Redis:
    """The multiplexer's pooled client, with a hook run after each pipeline's answer is read
    (as if the answer were slow on the wire) -- or before it, raising, to fail it."""

    def __init__(self, real, after_execute: Callable[[], Awaitable[None]]) -> None:
        self._real, self._after = real, after_execute

    def pipeline(self, **kwargs):
        return _Pipe(self._real.pipeline(**kwargs), self._after)


async def test_a_first_read_answered_before_a_lost_connection_is_not_applied_after_it(private_redis) -> None:
    """The connection is lost while `_sync`'s XREVRANGE answer is on its way; the multiplexer
    reconnects and resubscribes before that (pre-loss) answer arrives. An entry appended while it
    was disconnected must still reach the reader."""
    stream = RedisEventStream(private_redis.url)
    admin = aioredis.from_url(private_redis.url)
    mux = stream._mux  # noqa: SLF001
    calls = 0

    async def slow_first_answer() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first XREVRANGE has been answered (it saw seq 1 only)
            assert await admin.client_kill_filter(_type="pubsub") == 1
            await stream.append("run", 2, b"two")  # published while nobody is subscribed
            await asyncio.sleep(0.5)  # the multiplexer reconnects and subscribes again meanwhile

    try:
        await stream.append("run", 1, b"one")
        mux._redis = _Redis(mux._redis, slow_first_answer)  # noqa: SLF001
        reader = asyncio.create_task(stream.read("run", 1, block_ms=10_000))
        await asyncio.sleep(1.0)
        await stream.append("run", 3, b"three")
        got = [e.seq for e in await asyncio.wait_for(reader, 5)]
        assert got[:1] == [2], f"seq 2 was skipped: the reader got {got}"
    finally:
        await stream.close()
        await admin.aclose()


async def test_an_idle_multiplexer_keeps_its_healthy_connection(private_redis, caplog) -> None:
    """Once every stream is unsubscribed the connection leaves subscribed mode, so PING answers
    "+PONG" (not ["pong", ""]); the multiplexer must not take the healthy connection for dead."""
    stream = RedisEventStream(private_redis.url)
    mux = stream._mux  # noqa: SLF001
    mux._linger, mux._ping_seconds = 0.2, 0.1  # noqa: SLF001
    try:
        with caplog.at_level(logging.WARNING, logger="agentry.servicekit.eventstream.redis"):
            assert await stream.read("run", 0, block_ms=100) == []
            await asyncio.sleep(1.5)
        pings = [r.getMessage() for r in caplog.records if "no answer to PING" in r.getMessage()]
        assert pings == [], f"a healthy idle connection was closed {len(pings)} times in 1.5 s"
    finally:
        await stream.close()


async def test_a_failed_first_read_does_not_unsubscribe_the_stream_subscribed_again(private_redis) -> None:
    """A stream's first read fails (its pooled connection stays lost past `reconnect_seconds`);
    meanwhile the stream was forgotten after the linger and a new reader subscribed it again.
    The failed batch's UNSUBSCRIBE must not cancel the new subscription."""
    stream = RedisEventStream(private_redis.url, reconnect_seconds=1.0)
    mux = stream._mux  # noqa: SLF001
    mux._linger, mux._ping_seconds = 0.2, 0.1  # noqa: SLF001
    loop = asyncio.get_running_loop()
    fail_until = loop.time() + 1.6

    async def lost_for_a_while() -> None:
        if loop.time() < fail_until:
            raise RedisConnectionError("injected: the pooled connection is lost")

    try:
        # Another stream with a waiting reader keeps the connection in subscribed mode.
        other = asyncio.create_task(stream.read("other", 0, block_ms=15_000))
        await asyncio.sleep(0.2)  # its first read is done (before the fault)
        mux._redis = _Redis(mux._redis, lost_for_a_while)  # noqa: SLF001
        assert await stream.read("run", 0, block_ms=100) == []  # its first read is failing
        await asyncio.sleep(0.5)  # "run" is forgotten after the linger (UNSUBSCRIBE)
        assert "run" not in [k.rsplit(":", 2)[-2] for k in mux._subs]  # noqa: SLF001
        reader = asyncio.create_task(stream.read("run", 0, block_ms=6_000))  # subscribed again
        await asyncio.sleep(2.0)  # the first batch failed (~1.0 s); the second succeeded (~1.6 s)
        admin = aioredis.from_url(private_redis.url)
        try:
            [(_, subscribers)] = await admin.pubsub_numsub(stream.key("run"))
        finally:
            await admin.aclose()
        state = mux._subs[stream.key("run")].state  # noqa: SLF001
        await stream.append("run", 1, b"one")
        got = [e.seq for e in await asyncio.wait_for(reader, 10)]
        assert got == [1], f"the reader got {got} (stream state {state}, 2 = live; subscribers {subscribers})"
        other.cancel()
    finally:
        await stream.close()


async def test_a_deleted_log_is_forgotten_and_its_waiting_readers_wake_to_nothing(private_redis) -> None:
    """delete(): "a reader blocked on one of them wakes and finds nothing"; and a waiting read
    after the delete must not return entries Redis no longer holds."""
    stream = RedisEventStream(private_redis.url)
    try:
        await stream.append("run", 1, b"one")
        assert [e.seq for e in await stream.read("run", 0, block_ms=1_000)] == [1]
        blocked = asyncio.create_task(stream.read("run", 1, block_ms=20_000))
        await asyncio.sleep(0.2)
        await stream.delete(["run"])
        assert await asyncio.wait_for(blocked, 5) == []
        assert await stream.read("run", 0) == []  # an immediate read: nothing
        got = [e.seq for e in await stream.read("run", 0, block_ms=300)]
        assert got == [], f"a waiting read after delete() returned deleted entries {got}"
    finally:
        await stream.close()


def _until_soon(condition: Callable[[], bool]) -> Awaitable[None]:
    return eventually(condition, 5.0, interval=0.002)  # (a race's window: look often)


_SYNCING = 1  # agentry.servicekit.eventstream.redis's state: subscribed, its first read out


async def test_a_first_read_queued_before_a_reconnect_is_not_applied_after_it() -> None:
    """Stream "s" is subscribed and queued for its first read (`_to_sync`) while the syncer is
    busy with "a"; the subscribed connection is lost. `_disconnected` leaves "s" queued, so the
    next batch reads it at once -- before the multiplexer has subscribed again -- under the new
    epoch. The new SUBSCRIBE is answered while that read's answer is on its way ("s" is SYNCING
    again), so the answer passes both checks and is applied: seq 2, appended after the read and
    before the new SUBSCRIBE, is never delivered."""
    async with PrivateRedis() as server:
        stream = RedisEventStream(server.url)
        writer = RedisEventStream(server.url)
        admin = aioredis.from_url(server.url)
        mux = stream._mux  # noqa: SLF001
        key_s = stream.key("s")
        calls = 0
        premise: dict[str, bool] = {}

        async def hook() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:  # "a"'s first read: held until "s" is queued, then the connection is lost
                await _until_soon(lambda: bool(mux._to_sync))  # noqa: SLF001
                epoch = mux._epoch  # noqa: SLF001
                assert await admin.client_kill_filter(_type="pubsub") == 1
                await _until_soon(lambda: mux._epoch != epoch)  # noqa: SLF001
            elif calls == 2:  # the stale queued read of "s", executed while not subscribed
                premise["read before resubscribing"] = not mux._connected  # noqa: SLF001
                await writer.append("s", 2, b"two")  # published to nobody
                premise["appended before resubscribing"] = not mux._connected  # noqa: SLF001
                # The new SUBSCRIBE is answered before this (older) answer is applied.
                await _until_soon(lambda: mux._subs[key_s].state == _SYNCING)  # noqa: SLF001

        try:
            await writer.append("s", 1, b"one")
            mux._redis = _Redis(mux._redis, hook)  # noqa: SLF001
            reader_a = asyncio.create_task(stream.read("a", 0, block_ms=10_000))
            await asyncio.sleep(0.05)
            reader_s = asyncio.create_task(stream.read("s", 1, block_ms=10_000))
            await asyncio.sleep(1.0)
            await writer.append("s", 3, b"three")
            got = [e.seq for e in await asyncio.wait_for(reader_s, 5)]
            assert got[:1] == [2], f"seq 2 was skipped: the reader got {got} ({premise})"
            reader_a.cancel()
        finally:
            await stream.close()
            await writer.close()
            await admin.aclose()


async def test_a_log_deleted_while_its_first_read_is_answered_is_not_served() -> None:
    """The first read of "run" (XREVRANGE) is executed, then the log is deleted; the delete
    message is handled while the stream is SYNCING (it clears only `early`), then the read's
    answer is applied: the multiplexer keeps, and serves, entries Redis no longer holds."""
    async with PrivateRedis() as server:
        stream = RedisEventStream(server.url)
        mux = stream._mux  # noqa: SLF001
        calls = 0

        async def hook() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:  # the read saw seq 1; the log is deleted before its answer is applied
                await stream.delete(["run"])
                await asyncio.sleep(0.2)  # the delete message is handled meanwhile

        try:
            await stream.append("run", 1, b"one")
            mux._redis = _Redis(mux._redis, hook)  # noqa: SLF001
            assert await stream.read("run", 0, block_ms=2_000) == []  # woken by the delete
            assert await stream.read("run", 0) == []  # Redis holds nothing
            got = [e.seq for e in await stream.read("run", 0, block_ms=300)]
            assert got == [], f"a waiting read after delete() returned deleted entries {got}"
        finally:
            await stream.close()
