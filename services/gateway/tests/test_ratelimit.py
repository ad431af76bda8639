"""The rate limiter's contract, over the in-process limiter and the Redis one."""

from __future__ import annotations

import pytest

from agentry.gateway.ratelimit import MemoryRateLimiter, RedisRateLimiter
from agentry.servicekit.testing import FakeClock


@pytest.fixture(params=["memory", "redis"])
async def limiter(request, unique_name):
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    redis = RedisRateLimiter(request.getfixturevalue("redis_url"), key_prefix=f"agentry:{unique_name}:rl:")
    yield redis
    await redis.close()


async def test_allows_up_to_the_limit_then_says_how_long_to_wait(limiter):
    for _ in range(3):
        assert await limiter.hit("signin-ip", "10.0.0.1", limit=3, window=60) is None
    wait = await limiter.hit("signin-ip", "10.0.0.1", limit=3, window=60)
    assert wait is not None and 0 < wait <= 60
    # Other identities and other limits are counted apart.
    assert await limiter.hit("signin-ip", "10.0.0.2", limit=3, window=60) is None
    assert await limiter.hit("signup-ip", "10.0.0.1", limit=3, window=60) is None


async def test_refused_attempts_are_not_counted(limiter):
    for _ in range(2):
        assert await limiter.hit("x", "id", limit=2, window=60) is None
    for _ in range(5):
        assert await limiter.hit("x", "id", limit=2, window=60) is not None
    # Raising the limit shows that the refusals above left no trace.
    assert await limiter.hit("x", "id", limit=3, window=60) is None


async def test_check_without_counting_and_record(limiter):
    for _ in range(4):
        assert await limiter.hit("fail", "ada@example.com", limit=2, window=300, count=False) is None
    await limiter.record("fail", "ada@example.com", window=300)
    await limiter.record("fail", "ada@example.com", window=300)
    assert await limiter.hit("fail", "ada@example.com", limit=2, window=300, count=False) is not None


async def test_the_window_slides():
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock)
    assert await limiter.hit("x", "id", limit=2, window=10) is None
    clock.advance(6)
    assert await limiter.hit("x", "id", limit=2, window=10) is None
    assert await limiter.hit("x", "id", limit=2, window=10) == pytest.approx(4)
    clock.advance(4)  # the first event drops out, the second is still in
    assert await limiter.hit("x", "id", limit=2, window=10) is None
    assert await limiter.hit("x", "id", limit=2, window=10) == pytest.approx(6)


async def test_memory_limiter_forgets_idle_keys_when_full():
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock=clock, max_keys=10)
    for i in range(50):
        await limiter.hit("x", f"id-{i}", limit=1, window=5)
        clock.advance(1)
    assert len(limiter._events) <= 10


async def test_redis_limiter_down_is_a_503_not_a_pass(unique_name):
    from agentry.gateway.errors import UpstreamUnavailable

    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", key_prefix=f"agentry:{unique_name}:", socket_timeout=0.5)
    with pytest.raises(UpstreamUnavailable):
        await limiter.hit("x", "id", limit=1, window=5)
    await limiter.close()
