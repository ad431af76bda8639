"""Contract for the EventStream port: the in-process adapter must behave like the Redis one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from agentry.servicekit.eventstream import (
    EventStream,
    EventStreamUnavailable,
    MemoryEventStream,
    RedisEventStream,
    SequenceError,
    StreamEntry,
)
from agentry.servicekit.testing import FakeClock

TTL_SECONDS = 600


@dataclass
class Harness:
    """Builds streams of one adapter and checks expiry the way that adapter allows."""

    build: Callable[..., EventStream]
    check_expiry: Callable[[EventStream, str], Awaitable[None]]
    check_no_expiry: Callable[[EventStream, str], Awaitable[None]]
    streams: list[EventStream] = field(default_factory=list)

    def make(self, **kwargs: int) -> EventStream:
        stream = self.build(**kwargs)
        self.streams.append(stream)
        return stream


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        async def memory_expiry(stream: EventStream, run_id: str) -> None:
            clock.advance(TTL_SECONDS - 1)
            assert [e.seq for e in await stream.read(run_id, 0)] == [1, 2]
            clock.advance(2)
            assert await stream.read(run_id, 0) == []
            assert await stream.first_seq(run_id) is None

        async def memory_no_expiry(stream: EventStream, run_id: str) -> None:
            clock.advance(TTL_SECONDS * 10)
            assert await stream.first_seq(run_id) is not None

        def memory(**kwargs: int) -> EventStream:
            return MemoryEventStream(ttl_seconds=TTL_SECONDS, clock=clock, **kwargs)

        h = Harness(memory, memory_expiry, memory_no_expiry)
        yield h
        for stream in h.streams:
            await stream.close()
        return

    from redis import asyncio as aioredis

    url: str = request.getfixturevalue("redis_url")
    prefix = f"{request.getfixturevalue('unique_name')}:run:"
    admin = aioredis.Redis.from_url(url)

    async def redis_expiry(stream: EventStream, run_id: str) -> None:
        assert isinstance(stream, RedisEventStream)
        ttl_ms = await admin.pttl(stream.key(run_id))
        assert 0 < ttl_ms <= TTL_SECONDS * 1000

    async def redis_no_expiry(stream: EventStream, run_id: str) -> None:
        assert isinstance(stream, RedisEventStream)
        assert await admin.pttl(stream.key(run_id)) == -1  # exists, no TTL

    def redis(**kwargs: int) -> EventStream:
        return RedisEventStream(url, key_prefix=prefix, ttl_seconds=TTL_SECONDS, **kwargs)

    h = Harness(redis, redis_expiry, redis_no_expiry)
    try:
        yield h
    finally:
        for stream in h.streams:
            await stream.close()
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


def seqs(entries: list[StreamEntry]) -> list[int]:
    return [entry.seq for entry in entries]


async def test_read_returns_entries_after_seq_oldest_first(harness: Harness) -> None:
    stream = harness.make()
    for seq in range(1, 6):
        await stream.append("r1", seq, f"event-{seq}".encode())

    everything = await stream.read("r1", 0)
    assert seqs(everything) == [1, 2, 3, 4, 5]
    assert [e.data for e in everything] == [f"event-{n}".encode() for n in range(1, 6)]
    assert seqs(await stream.read("r1", 3)) == [4, 5]
    assert await stream.read("r1", 5) == []


async def test_runs_are_separate_logs(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("a", 1, b"a1")
    await stream.append("b", 1, b"b1")
    await stream.append("b", 2, b"b2")

    assert [e.data for e in await stream.read("a", 0)] == [b"a1"]
    assert [e.data for e in await stream.read("b", 0)] == [b"b1", b"b2"]


async def test_seqs_need_not_be_contiguous(harness: Harness) -> None:
    stream = harness.make()
    for seq in (1, 5, 9):
        await stream.append("r1", seq, b"x")

    assert seqs(await stream.read("r1", 2)) == [5, 9]


async def test_count_caps_one_read(harness: Harness) -> None:
    stream = harness.make()
    for seq in range(1, 11):
        await stream.append("r1", seq, b"x")

    assert seqs(await stream.read("r1", 0, count=3)) == [1, 2, 3]
    assert seqs(await stream.read("r1", 3, count=3)) == [4, 5, 6]


async def test_blocking_read_wakes_on_append_from_another_task(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("r1", 1, b"first")
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader = asyncio.create_task(stream.read("r1", 1, block_ms=10_000))
    # Let the reader issue its blocking read before the write lands.
    for _ in range(5):
        await asyncio.sleep(0)

    await stream.append("r1", 2, b"second")
    entries = await asyncio.wait_for(reader, timeout=2)

    assert seqs(entries) == [2]
    assert entries[0].data == b"second"
    assert loop.time() - started < 2


async def test_blocking_read_on_a_run_not_yet_written_wakes_on_its_first_append(
    harness: Harness,
) -> None:
    stream = harness.make()
    reader = asyncio.create_task(stream.read("fresh", 0, block_ms=10_000))
    for _ in range(5):
        await asyncio.sleep(0)

    await stream.append("fresh", 1, b"hello")

    assert seqs(await asyncio.wait_for(reader, timeout=2)) == [1]


async def test_blocking_read_times_out_with_nothing(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("r1", 1, b"x")
    loop = asyncio.get_running_loop()
    started = loop.time()

    assert await stream.read("r1", 1, block_ms=150) == []
    assert loop.time() - started >= 0.1


async def test_read_without_block_returns_at_once(harness: Harness) -> None:
    stream = harness.make()
    assert await asyncio.wait_for(stream.read("r1", 0), timeout=1) == []


async def test_terminal_flag_round_trips(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("r1", 1, b"delta")
    await stream.append("r1", 2, b"done", terminal=True)

    assert [(e.seq, e.data, e.terminal) for e in await stream.read("r1", 0)] == [
        (1, b"delta", False),
        (2, b"done", True),
    ]


async def test_terminal_entry_makes_the_log_expire(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("r1", 1, b"delta")
    await stream.append("r1", 2, b"done", terminal=True)

    await harness.check_expiry(stream, "r1")


async def test_log_without_terminal_entry_does_not_expire(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("r1", 1, b"delta")

    await harness.check_no_expiry(stream, "r1")


async def test_maxlen_trims_oldest_and_first_seq_reports_it(harness: Harness) -> None:
    # Redis trims with MAXLEN ~ (whole radix-tree nodes of ~100 entries), so the contract is:
    # at least the newest `maxlen` entries survive, the oldest go, and what is held is contiguous.
    stream = harness.make(maxlen=10)
    for seq in range(1, 251):
        await stream.append("r1", seq, b"x")

    first = await stream.first_seq("r1")
    held = await stream.read("r1", 0, count=1000)

    assert first is not None and first > 1
    assert seqs(held) == list(range(first, 251))
    assert len(held) >= 10


async def test_first_seq_of_an_untrimmed_log_is_its_first_entry(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("r1", 3, b"x")
    await stream.append("r1", 4, b"y")

    assert await stream.first_seq("r1") == 3


async def test_non_increasing_seq_is_a_sequence_error(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("r1", 1, b"a")
    await stream.append("r1", 2, b"b")

    with pytest.raises(SequenceError):
        await stream.append("r1", 2, b"again")
    with pytest.raises(SequenceError):
        await stream.append("r1", 1, b"older")
    with pytest.raises(SequenceError):
        await stream.append("r2", 0, b"zero")
    assert issubclass(SequenceError, ValueError)

    await stream.append("r1", 3, b"c")
    assert [e.data for e in await stream.read("r1", 0)] == [b"a", b"b", b"c"]


async def test_trimmed_seqs_cannot_be_appended_again(harness: Harness) -> None:
    stream = harness.make(maxlen=10)
    for seq in range(1, 251):
        await stream.append("r1", seq, b"x")

    with pytest.raises(SequenceError):
        await stream.append("r1", 5, b"old")


async def test_rejected_terminal_append_does_not_start_expiry(harness: Harness) -> None:
    stream = harness.make()
    await stream.append("r1", 1, b"a")
    await stream.append("r1", 2, b"b")
    with pytest.raises(SequenceError):
        await stream.append("r1", 2, b"late", terminal=True)

    await harness.check_no_expiry(stream, "r1")
    assert seqs(await stream.read("r1", 0)) == [1, 2]


async def test_many_concurrent_readers_each_see_every_entry_once(harness: Harness) -> None:
    stream = harness.make()
    total = 60

    async def tail() -> list[int]:
        seen: list[int] = []
        after = 0
        while True:
            entries = await stream.read("r1", after, count=7, block_ms=5_000)
            assert entries, "a blocked reader timed out while the writer was still writing"
            seen.extend(seqs(entries))
            after = entries[-1].seq
            if entries[-1].terminal:
                return seen

    readers = [asyncio.create_task(tail()) for _ in range(25)]
    for _ in range(5):
        await asyncio.sleep(0)
    for seq in range(1, total + 1):
        await stream.append("r1", seq, f"{seq}".encode(), terminal=seq == total)
        if seq % 10 == 0:
            await asyncio.sleep(0)

    results = await asyncio.wait_for(asyncio.gather(*readers), timeout=10)
    assert all(result == list(range(1, total + 1)) for result in results)


async def test_unknown_run_reads_empty_and_has_no_first_seq(harness: Harness) -> None:
    stream = harness.make()

    assert await stream.read("nobody", 0) == []
    assert await stream.read("nobody", 0, block_ms=50) == []
    assert await stream.first_seq("nobody") is None


async def test_unreachable_redis_is_event_stream_unavailable() -> None:
    # Redis would be waited for up to 10 s by default (a restart); this one never answers.
    stream = RedisEventStream("redis://127.0.0.1:1/0", reconnect_seconds=0.3)
    try:
        with pytest.raises(EventStreamUnavailable):
            await stream.append("r1", 1, b"x")
        with pytest.raises(EventStreamUnavailable):
            await stream.read("r1", 0)
    finally:
        await stream.close()


async def test_delete_forgets_the_runs_logs_and_keeps_the_others(harness: Harness) -> None:
    stream = harness.make()
    for run_id in ("gone-1", "gone-2", "kept"):
        await stream.append(run_id, 1, b"x", terminal=True)

    await stream.delete(["gone-1", "gone-2", "never-written"])

    assert await stream.read("gone-1", 0) == []
    assert await stream.first_seq("gone-2") is None
    assert seqs(await stream.read("kept", 0)) == [1]
    await stream.delete([])  # nothing to delete is not an error
