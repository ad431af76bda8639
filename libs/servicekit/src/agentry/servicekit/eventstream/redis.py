"""Redis Streams event stream, so any gateway replica can tail a run that any runner worker writes.

Connections: a blocked XREAD holds its connection for up to `block_ms`, so every SSE stream
tailing a run occupies one pooled connection while it waits. The pool is a
BlockingConnectionPool: past `max_connections` further readers queue for a free connection
(up to `pool_timeout`) instead of opening sockets without bound and hitting Redis' maxclients.
Size `max_connections` to the concurrent SSE streams one gateway replica should serve plus a
few for writers; beyond that, keep `block_ms` short so queued readers get a turn.

Restarts: Redis may restart (a pod rescheduled, a failover) under running streams. A command
whose connection breaks is sent again on a new connection, with backoff, for up to
`reconnect_seconds`; only when Redis stays away longer does the caller get
EventStreamUnavailable. A blocked read that loses its connection resumes its wait for the time
it has left (redis-py's one immediate reconnect re-sends the read as it was, so a connection
dropped and regained at once may wait up to one `block_ms` longer). Appends are idempotent per
seq, so an XADD that landed just before its connection broke is not an error when sent again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentry.servicekit.eventstream.port import EventStreamUnavailable, SequenceError, StreamEntry

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a command keeps trying to reach a Redis that went away before its caller is told.
DEFAULT_RECONNECT_SECONDS = 10.0
# Idle pooled connections are PINGed before reuse after this many seconds.
HEALTH_CHECK_INTERVAL = 30


def connection_pool(
    redis_url: str,
    *,
    max_connections: int = 256,
    pool_timeout: float = 20.0,
    socket_timeout: float | None = 5.0,
    health_check_interval: int = HEALTH_CHECK_INTERVAL,
) -> aioredis.BlockingConnectionPool:
    """A pool whose connections reconnect once at once when a pooled socket turns out dead.

    redis-py's own Retry only covers that first, immediate reconnect (a server restart leaves
    every pooled socket dead); waiting for a server that is still down is `reconnecting`'s job,
    bounded in time rather than in attempts.
    """
    return aioredis.BlockingConnectionPool.from_url(
        redis_url, max_connections=max_connections, timeout=pool_timeout,
        socket_timeout=socket_timeout, socket_connect_timeout=5.0, socket_keepalive=True,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=health_check_interval,
    )


def is_transient_redis_error(exc: BaseException) -> bool:
    """A lost or refused connection (not a full pool, which waiting longer would not cure)."""
    if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):
        return False
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError))


async def reconnecting(
    operation: Callable[[], Awaitable[T]],
    *,
    reconnect_seconds: float = DEFAULT_RECONNECT_SECONDS,
    what: str = "redis command",
) -> T:
    """Awaits `operation()` again after connection failures, with jittered exponential backoff
    (50 ms doubling to 1 s), until `reconnect_seconds` have passed since the first failure;
    then that last failure is raised. Other errors are raised at once."""
    loop = asyncio.get_running_loop()
    give_up_at: float | None = None
    delay = 0.05
    while True:
        try:
            return await operation()
        except RedisError as exc:
            if not is_transient_redis_error(exc):
                raise
            now = loop.time()
            if give_up_at is None:
                give_up_at = now + reconnect_seconds
                logger.warning("%s: redis connection lost (%s); reconnecting for up to %.0fs",
                               what, exc, reconnect_seconds)
            if now >= give_up_at:
                raise
            await asyncio.sleep(min(give_up_at - now, delay / 2 + random.uniform(0, delay / 2)))
            delay = min(delay * 2, 1.0)


# XADD and EXPIRE in one atomic step: a rejected (out-of-order) terminal append must not set a
# TTL, and a crash between the two must not leave a finished run's log without one.
_APPEND = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[2], 'd', ARGV[3], 't', ARGV[4])
if ARGV[4] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
return id
"""


# The longest a read may block; longer requests are shortened (callers loop anyway).
MAX_BLOCK_MS = 60_000


def _seq_of(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> StreamEntry:
    return StreamEntry(seq=_seq_of(entry_id), data=fields[b"d"], terminal=fields.get(b"t") == b"1")


class RedisEventStream:
    def __init__(
        self,
        redis_url: str,
        *,
        key_prefix: str = "agentry:run:",
        maxlen: int = 10_000,
        ttl_seconds: int = 3600,
        max_connections: int = 256,
        pool_timeout: float = 20.0,
        reconnect_seconds: float = DEFAULT_RECONNECT_SECONDS,
    ) -> None:
        self._prefix = key_prefix
        self._maxlen = maxlen
        self._ttl = ttl_seconds
        self._reconnect_seconds = reconnect_seconds
        # redis-py's default 5 s socket timeout would cut a blocked XREAD short; allow the
        # longest block plus slack instead, so a dead server still surfaces as an error.
        self._pool = connection_pool(redis_url, max_connections=max_connections, pool_timeout=pool_timeout,
                                     socket_timeout=MAX_BLOCK_MS / 1000 + 5)
        self._redis = aioredis.Redis.from_pool(self._pool)
        self._append = self._redis.register_script(_APPEND)

    def key(self, run_id: str) -> str:
        return f"{self._prefix}{run_id}:events"

    async def append(self, run_id: str, seq: int, data: bytes, *, terminal: bool = False) -> None:
        """Appends `<seq>-0`. Sending the same (seq, data, terminal) again is a no-op, so an
        append retried after its connection broke is not an error if the first one landed;
        a different entry under a seq already used is a SequenceError."""
        if seq < 1:
            raise SequenceError(f"run {run_id}: seq must be at least 1, got {seq}")
        key, flag = self.key(run_id), b"1" if terminal else b"0"
        try:
            await self._reconnecting(
                lambda: self._append(keys=[key], args=[self._maxlen, f"{seq}-0", data, flag, self._ttl]),
                f"append to run {run_id}")
        except ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise EventStreamUnavailable(f"cannot append to run {run_id}: {exc}") from exc
            if await self._holds(key, seq, data, flag):
                return
            raise SequenceError(
                f"run {run_id}: seq {seq} is not greater than the last appended seq"
            ) from exc
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot append to run {run_id}: {exc}") from exc

    async def _holds(self, key: str, seq: int, data: bytes, flag: bytes) -> bool:
        try:
            found = await self._reconnecting(lambda: self._redis.xrange(key, f"{seq}-0", f"{seq}-0"),
                                             f"check {key}")
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot read {key}: {exc}") from exc
        return bool(found) and found[0][1].get(b"d") == data and found[0][1].get(b"t") == flag

    async def read(
        self, run_id: str, after_seq: int, *, count: int = 500, block_ms: int = 0
    ) -> list[StreamEntry]:
        key = self.key(run_id)
        loop = asyncio.get_running_loop()
        wake_at = loop.time() + min(block_ms, MAX_BLOCK_MS) / 1000

        async def xread():
            # BLOCK 0 means "forever" to Redis; our block_ms=0 means "do not wait". A read sent
            # again after a reconnect blocks only for what is left of the caller's wait.
            left_ms = int((wake_at - loop.time()) * 1000) if block_ms > 0 else 0
            return await self._redis.xread({key: f"{max(after_seq, 0)}-0"}, count=count,
                                           block=left_ms if left_ms > 0 else None)

        try:
            response = await self._reconnecting(xread, f"read run {run_id}")
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot read run {run_id}: {exc}") from exc
        if not response:
            return []
        # RESP2 answers [[key, entries]]; RESP3 answers {key: [entries]}. One key was asked for.
        if isinstance(response, dict):
            (stream_entries,) = next(iter(response.values()))
        else:
            ((_, stream_entries),) = response
        return [_entry(entry_id, fields) for entry_id, fields in stream_entries]

    async def first_seq(self, run_id: str) -> int | None:
        try:
            oldest = await self._reconnecting(lambda: self._redis.xrange(self.key(run_id), count=1),
                                              f"read run {run_id}")
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot read run {run_id}: {exc}") from exc
        if not oldest:
            return None
        return _seq_of(oldest[0][0])

    def _reconnecting(self, operation: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
        return reconnecting(operation, reconnect_seconds=self._reconnect_seconds, what=what)

    async def close(self) -> None:
        await self._redis.aclose()
