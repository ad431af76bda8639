"""Redis Streams event stream, so any gateway replica can tail a run that any runner worker writes.

Connections: a blocked XREAD holds its connection for up to `block_ms`, so every SSE stream
tailing a run occupies one pooled connection while it waits. The pool is a
BlockingConnectionPool: past `max_connections` further readers queue for a free connection
(up to `pool_timeout`) instead of opening sockets without bound and hitting Redis' maxclients.
Size `max_connections` to the concurrent SSE streams one gateway replica should serve plus a
few for writers; beyond that, keep `block_ms` short so queued readers get a turn.
"""

from __future__ import annotations

from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from agentry.servicekit.eventstream.port import EventStreamUnavailable, SequenceError, StreamEntry

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
    ) -> None:
        self._prefix = key_prefix
        self._maxlen = maxlen
        self._ttl = ttl_seconds
        # redis-py's default 5 s socket timeout would cut a blocked XREAD short; allow the
        # longest block plus slack instead, so a dead server still surfaces as an error.
        self._pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=max_connections, timeout=pool_timeout,
            socket_timeout=MAX_BLOCK_MS / 1000 + 5,
        )
        self._redis = aioredis.Redis.from_pool(self._pool)
        self._append = self._redis.register_script(_APPEND)

    def key(self, run_id: str) -> str:
        return f"{self._prefix}{run_id}:events"

    async def append(self, run_id: str, seq: int, data: bytes, *, terminal: bool = False) -> None:
        if seq < 1:
            raise SequenceError(f"run {run_id}: seq must be at least 1, got {seq}")
        try:
            await self._append(
                keys=[self.key(run_id)],
                args=[self._maxlen, f"{seq}-0", data, b"1" if terminal else b"0", self._ttl],
            )
        except ResponseError as exc:
            if "equal or smaller" in str(exc):
                raise SequenceError(
                    f"run {run_id}: seq {seq} is not greater than the last appended seq"
                ) from exc
            raise EventStreamUnavailable(f"cannot append to run {run_id}: {exc}") from exc
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot append to run {run_id}: {exc}") from exc

    async def read(
        self, run_id: str, after_seq: int, *, count: int = 500, block_ms: int = 0
    ) -> list[StreamEntry]:
        key = self.key(run_id)
        # BLOCK 0 means "forever" to Redis; our block_ms=0 means "do not wait".
        try:
            response = await self._redis.xread(
                {key: f"{max(after_seq, 0)}-0"},
                count=count,
                block=min(block_ms, MAX_BLOCK_MS) if block_ms > 0 else None,
            )
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
            oldest = await self._redis.xrange(self.key(run_id), count=1)
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot read run {run_id}: {exc}") from exc
        if not oldest:
            return None
        return _seq_of(oldest[0][0])

    async def close(self) -> None:
        await self._redis.aclose()
