"""Rate limits (sliding windows): in this process on embedded defaults, in Redis when replicas share them."""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from typing import Any, Protocol

from .errors import ApiError, UpstreamUnavailable


class RateLimited(ApiError):
    def __init__(self, what: str, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            429, "rate_limited", f"too many {what}; try again in {seconds} s", headers={"Retry-After": str(seconds)}
        )


class RateLimiter(Protocol):
    async def hit(self, name: str, identity: str, *, limit: int, window: float, count: bool = True) -> float | None:
        """None when fewer than `limit` events of `identity` fell in the last `window` seconds
        (and, with `count`, records this one); else the seconds until one drops out."""

    async def record(self, name: str, identity: str, *, window: float) -> None:
        """Counts an event without checking any limit (a failed sign-in, after the fact)."""

    async def close(self) -> None: ...


def _key(name: str, identity: str) -> str:
    # Emails and IPs are hashed: the limiter's keys say nothing about who was limited.
    return f"{name}:{hashlib.sha256(identity.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"


class MemoryRateLimiter:
    """One process's windows; faithful to the Redis one, for `agentry dev` and the tests."""

    def __init__(self, *, clock=time.monotonic, max_keys: int = 100_000) -> None:
        self._clock, self._max_keys = clock, max_keys
        self._events: dict[str, deque[float]] = {}

    def _window(self, key: str, now: float, window: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            if len(self._events) >= self._max_keys:
                self._sweep(now, window)
            events = self._events[key] = deque()
        while events and events[0] <= now - window:
            events.popleft()
        return events

    def _sweep(self, now: float, window: float) -> None:
        for key in [k for k, v in self._events.items() if not v or v[-1] <= now - window]:
            del self._events[key]
        if len(self._events) >= self._max_keys:  # still full: forget the oldest half
            for key in list(self._events)[: self._max_keys // 2]:
                del self._events[key]

    async def hit(self, name: str, identity: str, *, limit: int, window: float, count: bool = True) -> float | None:
        now = self._clock()
        events = self._window(_key(name, identity), now, window)
        if len(events) >= limit:
            return events[len(events) - limit] + window - now
        if count:
            events.append(now)
        return None

    async def record(self, name: str, identity: str, *, window: float) -> None:
        now = self._clock()
        self._window(_key(name, identity), now, window).append(now)

    async def close(self) -> None:
        self._events.clear()


# KEYS[1] the window; ARGV: window (s), limit, count (0/1), a unique member. Redis's own clock, so
# every replica agrees on "now". Answers {1} when allowed, {0, seconds to wait} when not.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
if limit > 0 and n >= limit then
  local nth = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  return {0, tostring(tonumber(nth[2]) + window - now)}
end
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
end
return {1, '0'}
"""


class RedisRateLimiter:
    """Windows in sorted sets shared by every gateway replica, updated by one script per check."""

    def __init__(self, redis_url: str, *, key_prefix: str = "agentry:rl:", socket_timeout: float = 5.0) -> None:
        from redis import asyncio as aioredis

        from agentry.servicekit.eventstream.redis import connection_pool

        self._prefix = key_prefix
        self._redis = aioredis.Redis.from_pool(connection_pool(redis_url, socket_timeout=socket_timeout))
        self._script = self._redis.register_script(_SLIDING_WINDOW)

    async def _call(self, op: Awaitable[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return await op
        except (RedisError, OSError) as exc:
            # Refusing everyone would be an outage; letting everyone through would drop the
            # limit silently. The client gets a 503 it can retry.
            raise UpstreamUnavailable(f"rate limiter: {exc}") from exc

    async def hit(self, name: str, identity: str, *, limit: int, window: float, count: bool = True) -> float | None:
        allowed, wait = await self._call(
            self._script(
                keys=[self._prefix + _key(name, identity)],
                args=[window, limit, "1" if count else "0", uuid.uuid4().hex],
            )
        )
        return None if int(allowed) == 1 else float(wait)

    async def record(self, name: str, identity: str, *, window: float) -> None:
        await self._call(
            self._script(keys=[self._prefix + _key(name, identity)], args=[window, 0, "1", uuid.uuid4().hex])
        )

    async def close(self) -> None:
        await self._redis.aclose()
