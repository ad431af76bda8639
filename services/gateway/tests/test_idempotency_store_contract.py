"""Contract for the IdempotencyStore port: the in-process adapter must behave like the Redis one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from agentry.gateway.idempotency import (
    Completed,
    IdempotencyStore,
    IdempotencyUnavailable,
    InFlight,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    Reserved,
    StoredAnswer,
    scoped_key,
)
from agentry.servicekit.testing import FakeClock

TTL_SECONDS = 3600
LOCK_SECONDS = 30
ANSWER = StoredAnswer(202, b'{"agent_run_id":"r-1","status":"queued"}')


@dataclass
class Harness:
    store: IdempotencyStore
    # Checks that `key` is kept for `seconds` (give or take a few) and no longer.
    check_expiry: Callable[[str, int], Awaitable[None]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()
        store = MemoryIdempotencyStore(ttl_seconds=TTL_SECONDS, lock_seconds=LOCK_SECONDS, clock=clock)

        async def memory_expiry(key: str, seconds: int) -> None:
            clock.advance(seconds - 1)
            assert not isinstance(await store.reserve(key, "probe"), Reserved), "kept until the end"
            clock.advance(2)
            assert isinstance(await store.reserve(key, "probe"), Reserved), "gone after"

        yield Harness(store, memory_expiry)
        await store.close()
        return

    from redis import asyncio as aioredis

    url: str = request.getfixturevalue("redis_url")
    prefix = f"{request.getfixturevalue('unique_name')}:idem:"
    store = RedisIdempotencyStore(url, key_prefix=prefix, ttl_seconds=TTL_SECONDS, lock_seconds=LOCK_SECONDS)
    admin = aioredis.Redis.from_url(url)

    async def redis_expiry(key: str, seconds: int) -> None:
        ttl_ms = await admin.pttl(store.key(key))
        assert (seconds - 5) * 1000 < ttl_ms <= seconds * 1000

    try:
        yield Harness(store, redis_expiry)
    finally:
        await store.close()
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def test_a_free_key_is_reserved_then_in_flight(harness: Harness) -> None:
    store = harness.store
    first = await store.reserve("k", "fp-1")
    assert isinstance(first, Reserved) and first.token
    assert await store.reserve("k", "fp-1") == InFlight("fp-1")
    # Whoever asks next learns the first request's fingerprint, whatever it sent.
    assert await store.reserve("k", "fp-2") == InFlight("fp-1")


async def test_completed_answer_is_returned_byte_for_byte(harness: Harness) -> None:
    store = harness.store
    held = await store.reserve("k", "fp-1")
    assert isinstance(held, Reserved)
    body = '{"text":"héllo ✓ \\"quoted\\"\\n"}'.encode()
    assert await store.complete("k", held.token, "fp-1", StoredAnswer(201, body))
    for fingerprint in ("fp-1", "fp-other"):
        assert await store.reserve("k", fingerprint) == Completed("fp-1", StoredAnswer(201, body))


async def test_release_frees_the_key_for_a_retry(harness: Harness) -> None:
    store = harness.store
    held = await store.reserve("k", "fp-1")
    assert isinstance(held, Reserved)
    assert await store.release("k", held.token)
    again = await store.reserve("k", "fp-2")
    assert isinstance(again, Reserved) and again.token != held.token
    assert await store.reserve("k", "fp-1") == InFlight("fp-2")


async def test_release_needs_the_holders_token(harness: Harness) -> None:
    store = harness.store
    held = await store.reserve("k", "fp-1")
    assert isinstance(held, Reserved)
    assert not await store.release("k", "not-the-token")
    assert not await store.release("missing", held.token)
    assert await store.reserve("k", "fp-1") == InFlight("fp-1")


async def test_a_completed_answer_is_never_released(harness: Harness) -> None:
    store = harness.store
    held = await store.reserve("k", "fp-1")
    assert isinstance(held, Reserved)
    assert await store.complete("k", held.token, "fp-1", ANSWER)
    assert not await store.release("k", held.token)
    assert await store.reserve("k", "fp-1") == Completed("fp-1", ANSWER)


async def test_complete_never_overwrites_another_requests_hold(harness: Harness) -> None:
    store = harness.store
    held = await store.reserve("k", "fp-1")
    assert isinstance(held, Reserved)
    assert not await store.complete("k", "someone-else", "fp-1", ANSWER)
    assert await store.reserve("k", "fp-1") == InFlight("fp-1")
    assert await store.complete("k", held.token, "fp-1", ANSWER)


async def test_complete_after_the_hold_lapsed_still_keeps_the_answer(harness: Harness) -> None:
    store = harness.store
    assert await store.complete("lapsed", "t-1", "fp-1", ANSWER)
    assert await store.reserve("lapsed", "fp-1") == Completed("fp-1", ANSWER)


async def test_keys_are_independent(harness: Harness) -> None:
    store = harness.store
    a = await store.reserve("a", "fp")
    b = await store.reserve("b", "fp")
    assert isinstance(a, Reserved) and isinstance(b, Reserved)
    assert await store.complete("a", a.token, "fp", ANSWER)
    assert await store.reserve("b", "fp") == InFlight("fp")
    assert await store.release("b", b.token)
    assert await store.reserve("a", "fp") == Completed("fp", ANSWER)


async def test_concurrent_reservations_admit_exactly_one(harness: Harness) -> None:
    results = await asyncio.gather(*(harness.store.reserve("k", f"fp-{i}") for i in range(25)))
    reserved = [r for r in results if isinstance(r, Reserved)]
    assert len(reserved) == 1
    winner = results.index(reserved[0])
    assert all(r == InFlight(f"fp-{winner}") for r in results if not isinstance(r, Reserved))


async def test_a_hold_lapses_after_lock_seconds(harness: Harness) -> None:
    assert isinstance(await harness.store.reserve("k", "fp"), Reserved)
    await harness.check_expiry("k", LOCK_SECONDS)


async def test_an_answer_is_kept_for_the_ttl(harness: Harness) -> None:
    held = await harness.store.reserve("k", "fp")
    assert isinstance(held, Reserved)
    assert await harness.store.complete("k", held.token, "fp", ANSWER)
    await harness.check_expiry("k", TTL_SECONDS)


def test_scoped_keys_separate_accounts_and_routes_and_hide_the_key() -> None:
    base = scoped_key("acct-1", "POST /a", "key-1")
    assert len(base) == 64 and all(c in "0123456789abcdef" for c in base)
    assert base == scoped_key("acct-1", "POST /a", "key-1")
    others = {
        scoped_key("acct-2", "POST /a", "key-1"),
        scoped_key("acct-1", "POST /b", "key-1"),
        scoped_key("acct-1", "POST /a", "key-2"),
        # no ambiguity from where one part ends and the next begins
        scoped_key("acct-1POST /a", "", "key-1"),
        scoped_key("acct-1", "POST /akey-1", ""),
    }
    assert base not in others and len(others) == 5


@pytest.mark.redis
async def test_redis_key_names_hold_no_user_input(redis_url: str, unique_name: str) -> None:
    from redis import asyncio as aioredis

    prefix = f"{unique_name}:idem:"
    store = RedisIdempotencyStore(redis_url, key_prefix=prefix)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        key = scoped_key("acct-1", "POST /api/threads/{thread_id}/messages", "user*key:{with}\r\nnewlines")
        held = await store.reserve(key, "fp")
        assert isinstance(held, Reserved)
        names = [name.decode() async for name in admin.scan_iter(match=f"{prefix}*")]
        assert names == [f"{prefix}{key}"]
        assert await admin.ttl(names[0]) <= 60  # a hold, not yet a day
    finally:
        await store.close()
        keys = [k async for k in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def test_redis_that_cannot_be_reached_is_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisIdempotencyStore(f"redis://127.0.0.1:{port}/0", socket_timeout=1)
    try:
        with pytest.raises(IdempotencyUnavailable):
            await store.reserve("k", "fp")
        with pytest.raises(IdempotencyUnavailable):
            await store.complete("k", "t", "fp", ANSWER)
        with pytest.raises(IdempotencyUnavailable):
            await store.release("k", "t")
    finally:
        await store.close()
