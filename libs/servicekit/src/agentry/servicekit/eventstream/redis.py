"""Redis Streams event stream, so any gateway replica can tail a run that any runner worker writes.

Connections: readers that wait (`read(..., block_ms>0)`) do not each hold a connection. One
multiplexer per RedisEventStream -- one task on one dedicated connection -- sends a single
`XREAD BLOCK` over every stream some reader currently waits on (from the lowest seq any of them
has), and hands each reader the entries after its own seq. A reader that arrives while that read
is blocked wakes it with an XADD to the multiplexer's own wake stream (one per process, MAXLEN 1,
expiring), so the next read includes it at once; no polling, no per-reader round trip. So one
gateway process holds thousands of streams on two connections, and a reader never waits for a
pooled connection. A reader holds no buffer of its own beyond the one batch (`count`) it was
handed: a slow client simply reads again later from its own seq (catching up by cursor; nothing
is dropped, and memory stays bounded by `count` entries per reader). Non-waiting reads and writes
use the pool (a BlockingConnectionPool: past `max_connections` callers queue for a connection,
up to `pool_timeout`, instead of opening sockets without bound).

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
import bisect
import contextlib
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis import asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentry.servicekit.eventstream.port import EventStreamUnavailable, SequenceError, StreamEntry

# The event loop keeps only weak references to tasks: a fire-and-forget task is held here until done.
_background: set[asyncio.Task] = set()


def _spawn(coro) -> None:
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


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
        redis_url,
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        socket_keepalive=True,
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
                logger.warning(
                    "%s: redis connection lost (%s); reconnecting for up to %.0fs", what, exc, reconnect_seconds
                )
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
# How long a batch of appends is waited for (connect, send, answers) before its connection counts
# as lost (and the batch is sent again on a new one, within `reconnect_seconds`).
APPEND_REPLY_SECONDS = 5.0


def _seq_of(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[0])


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> StreamEntry:
    return StreamEntry(seq=_seq_of(entry_id), data=fields[b"d"], terminal=fields.get(b"t") == b"1")


def _entry_of_pairs(entry_id: bytes, fields: list | dict) -> StreamEntry:
    """An entry as Redis sends it, its fields a flat [name, value, ...] list (RESP2 and RESP3)."""
    if not isinstance(fields, dict):
        pairs = iter(fields)
        fields = dict(zip(pairs, pairs, strict=False))
    return _entry(entry_id, fields)


def _raw_streams_of(response) -> list[tuple[bytes, list]]:
    """XREAD's answer as Redis sends it, as (key, entries) pairs: RESP2 [[key, entries]], RESP3
    {key: entries}; None (the block ran out) is no pairs."""
    if not response:
        return []
    if isinstance(response, dict):
        return list(response.items())
    return [(key, entries) for key, entries in response]


async def _exchange(conn: AbstractConnection, packed: list[bytes], answers: int, deadline: float, what: str) -> list:
    """Sends `packed` on `conn` (connecting first when it is not) and reads `answers` answers, in
    order, an error answer as its ResponseError, all within `deadline` seconds: a connection of
    its own, with no socket timeout, used one exchange at a time. No health check (its PING would
    be read without a timeout). A connect or answer that takes longer is a redis TimeoutError; on
    that, any other failure or a cancellation the connection is closed, so a late answer is never
    read as the next exchange's."""
    try:
        async with asyncio.timeout(deadline):
            if not conn.is_connected:
                await conn.connect()
            await conn.send_packed_command(packed, check_health=False)
            results: list = []
            for _ in range(answers):
                try:
                    results.append(await conn.read_response(timeout=math.inf))  # under the deadline
                except ResponseError as exc:  # that command's own error; the connection is fine
                    results.append(exc)
            return results
    except TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError(f"no answer to {what} within {deadline:g} s") from None
    except BaseException:
        await conn.disconnect(nowait=True)
        raise


def _streams_of(response) -> list[tuple[bytes, list]]:
    """XREAD's answer as (key, entries) pairs: RESP2 answers [[key, entries]], RESP3 {key: [entries]}."""
    if not response:
        return []
    if isinstance(response, dict):
        return [(key, value[0] if value else []) for key, value in response.items()]
    return [(key, entries) for key, entries in response]


class _Multiplexer:
    """One XREAD BLOCK over every stream a reader waits on; see the module docstring.

    Readers register (key, after) and await a future that resolves to the entries after `after`
    (at most `count`). The loop reads from the lowest `after` per key, resolves every reader its
    answer covers and drops them; the rest stay registered for the next read. When Redis cannot
    be reached, the loop retries with backoff and, past `reconnect_seconds` of failing, fails the
    waiting readers with EventStreamUnavailable (as a direct read would).
    """

    def __init__(
        self, redis_url: str, *, wake_key: str, count: int, reconnect_seconds: float, block_ms: int = 5_000
    ) -> None:
        # A connection of its own, no pool: the blocked read holds it. No hidden retries either:
        # a lost connection surfaces here, where the loop decides. Commands go straight onto it
        # (`_xread`), not through a client: no socket timeout (redis-py sends under one in
        # `wait_for`, a Task per read on Python 3.11), no lock, no retry wrapper, no reply callback;
        # the read's own deadline is `_read_deadline`.
        self._conn = aioredis.ConnectionPool.from_url(
            redis_url,
            socket_timeout=None,
            socket_connect_timeout=5.0,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        ).make_connection()
        self._read_deadline = block_ms / 1000 + 5
        self._wake_key = wake_key
        self._wake_id = b"0-0"
        self._count = count
        self._block_ms = block_ms
        self._reconnect_seconds = reconnect_seconds
        self._watchers: dict[str, list[tuple[int, asyncio.Future[list[StreamEntry]]]]] = {}
        self._inflight: dict[str, int] | None = None  # key -> after, of the read now blocked
        self._woken = False
        # Readers answered by the last read that have not come back for more yet: the next read
        # waits (briefly) for them, so it covers them without a wake.
        self._returning = 0
        self._back = asyncio.Event()
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._waker: aioredis.Redis | None = None
        self._closed = False

    def bind_waker(self, redis: aioredis.Redis) -> None:
        self._waker = redis  # the pooled client the wake XADD goes out on

    async def wait(self, key: str, after: int, timeout: float) -> list[StreamEntry]:
        if self._closed:
            return []
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="redis-event-multiplexer")
        future: asyncio.Future[list[StreamEntry]] = asyncio.get_running_loop().create_future()
        watch = (after, future)
        self._watchers.setdefault(key, []).append(watch)
        self._changed.set()
        if self._returning > 0:
            self._returning -= 1
            if not self._returning:
                self._back.set()
        inflight = self._inflight
        if inflight is not None and not self._woken and inflight.get(key, after + 1) > after:
            # The blocked read does not cover this reader: wake it so the next one does.
            self._woken = True
            _spawn(self._wake())
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for adds a future, a callback
            # and a timer handle per wait, and may swallow a cancel that lands with the result.
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return []
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                try:
                    watchers.remove(watch)
                except ValueError:
                    pass
                if not watchers:
                    del self._watchers[key]

    async def _wake(self) -> None:
        try:
            assert self._waker is not None
            async with self._waker.pipeline(transaction=False) as pipe:
                pipe.xadd(self._wake_key, {b"w": b"1"}, maxlen=1, approximate=False)
                pipe.expire(self._wake_key, 3600)
                await pipe.execute()
        except RedisError as exc:  # the read wakes by itself within block_ms anyway
            logger.debug("could not wake the event multiplexer: %r", exc)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        delay = 0.05
        while not self._closed:
            if not self._watchers:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams = {key: min(after for after, _ in watchers) for key, watchers in self._watchers.items()}
            self._inflight, self._woken = streams, False
            try:
                response = await self._xread(streams)
            except Exception as exc:  # noqa: BLE001 - any failure: its readers hear, the loop goes on
                self._inflight = None
                now = loop.time()
                failing_since = failing_since or now
                if not is_transient_redis_error(exc) or now - failing_since >= self._reconnect_seconds:
                    self._fail_all(EventStreamUnavailable(f"cannot read run events: {exc}"))
                    failing_since = None if not is_transient_redis_error(exc) else failing_since
                logger.warning("event multiplexer: redis read failed (%r); retrying", exc)
                await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
                delay = min(delay * 2, 1.0)
                continue
            self._inflight = None
            failing_since, delay = None, 0.05
            for raw_key, raw_entries in _raw_streams_of(response):
                key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                if key == self._wake_key:
                    if raw_entries:
                        last = raw_entries[-1][0]
                        self._wake_id = last if isinstance(last, bytes) else last.encode()
                    continue
                self._deliver(key, [_entry_of_pairs(entry_id, fields) for entry_id, fields in raw_entries])
            # Let the readers just answered take their entries and come back (up to 1 ms; one
            # whose stream ended never does), so the next read covers them without a wake.
            if self._returning:
                self._back.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.001):  # not wait_for: no Task per read
                        await self._back.wait()
                self._returning = 0

    async def _xread(self, streams: dict[str, int]):
        """`XREAD COUNT .. BLOCK .. STREAMS` over the wake stream and `streams` (key -> after), as
        Redis answers it (None when the block ran out), within `_read_deadline` (see `_exchange`)."""
        conn = self._conn
        args = ["XREAD", "COUNT", self._count, "BLOCK", self._block_ms, "STREAMS", self._wake_key, *streams]
        args.append(self._wake_id)
        args.extend(f"{after}-0" for after in streams.values())
        [answer] = await _exchange(conn, conn.pack_command(*args), 1, self._read_deadline, "XREAD")
        if isinstance(answer, ResponseError):
            raise answer
        return answer

    def _deliver(self, key: str, entries: list[StreamEntry]) -> None:
        watchers = self._watchers.get(key)
        if not watchers or not entries:
            return
        seqs = [entry.seq for entry in entries]
        keep = []
        for after, future in watchers:
            start = bisect.bisect_right(seqs, after)
            if start < len(entries):
                if not future.done():
                    future.set_result(entries[start : start + self._count])
                    self._returning += 1
            elif not future.done():
                keep.append((after, future))
        if keep:
            self._watchers[key] = keep
        else:
            del self._watchers[key]

    def _fail_all(self, exc: Exception) -> None:
        watchers, self._watchers = self._watchers, {}
        for entries in watchers.values():
            for _, future in entries:
                if not future.done():
                    future.set_exception(exc)

    async def close(self) -> None:
        self._closed = True
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for watchers in self._watchers.values():
            for _, future in watchers:
                if not future.done():
                    future.set_result([])
        self._watchers.clear()
        await self._conn.disconnect()


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
        self._pool = connection_pool(
            redis_url,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            socket_timeout=MAX_BLOCK_MS / 1000 + 5,
        )
        self._redis = aioredis.Redis.from_pool(self._pool)
        self._append_sha = self._redis.register_script(_APPEND).sha
        self._pending: list[tuple[str, int, bytes, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._appender: AbstractConnection | None = None  # the flusher's connection (see _send)
        self._mux = _Multiplexer(
            redis_url,
            wake_key=f"{key_prefix}mux-wake:{uuid.uuid4().hex}",
            count=500,
            reconnect_seconds=reconnect_seconds,
        )
        self._mux.bind_waker(self._redis)

    def key(self, run_id: str) -> str:
        return f"{self._prefix}{run_id}:events"

    async def append(self, run_id: str, seq: int, data: bytes, *, terminal: bool = False) -> None:
        """Appends `<seq>-0`. Sending the same (seq, data, terminal) again is a no-op, so an
        append retried after its connection broke is not an error if the first one landed;
        a different entry under a seq already used is a SequenceError.

        Appends from every run in this process are batched: those made while a batch is on the
        wire go out together in the next one (one pipelined round trip, no timer), so the cost
        per event falls as load rises and an append alone still goes out at once."""
        if seq < 1:
            raise SequenceError(f"run {run_id}: seq must be at least 1, got {seq}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((run_id, seq, data, b"1" if terminal else b"0", future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="redis-event-appends")
        await future

    async def _flush(self) -> None:
        batch: list = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                unloaded = await self._send_and_settle(batch)
                if not unloaded:
                    continue
                # Redis restarted or flushed its scripts: load the append script and send those
                # appends again at once, ahead of anything newer. Once only: a Redis that still
                # answers NOSCRIPT (a proxy sending each command to another server) fails them.
                try:
                    await self._reconnecting(lambda: self._redis.script_load(_APPEND), "load the append script")
                except RedisError as exc:
                    self._fail(unloaded, exc)
                    continue
                self._fail(await self._send_and_settle(unloaded), "NOSCRIPT again after SCRIPT LOAD")
        except BaseException as exc:
            # Whatever else ends the flusher (a bug, an error redis-py does not wrap, a
            # cancellation): its appends and those queued behind them fail now instead of
            # waiting for an answer that would never come.
            pending, self._pending = self._pending, []
            self._fail(batch + pending, f"the append batch failed: {exc!r}")
            if not isinstance(exc, Exception):
                raise
            logger.exception("appending run events failed")

    async def _send_and_settle(self, batch: list) -> list:
        """Sends `batch` and settles each append's future; returns the appends Redis answered
        NOSCRIPT (their futures still pending)."""
        try:
            results = await self._reconnecting(lambda: self._send(batch), "append run events")
        except RedisError as exc:
            self._fail(batch, exc)
            return []
        unloaded = []
        for item, result in zip(batch, results, strict=True):
            run_id, seq, data, flag, future = item
            if future.done():
                continue
            if isinstance(result, NoScriptError):
                unloaded.append(item)
            elif not isinstance(result, Exception):
                future.set_result(None)
            elif isinstance(result, ResponseError) and "equal or smaller" in str(result):
                _spawn(self._settle_duplicate(run_id, seq, data, flag, future))
            else:
                future.set_exception(EventStreamUnavailable(f"cannot append to run {run_id}: {result}"))
        return unloaded

    @staticmethod
    def _fail(batch: list, why: object) -> None:
        for run_id, _, _, _, future in batch:
            if not future.done():
                future.set_exception(EventStreamUnavailable(f"cannot append to run {run_id}: {why}"))

    async def _send(self, batch: list) -> list:
        """The batch in one round trip on the appends' own connection: one answer per append, in
        order (an error answer as its ResponseError, as a pipeline's `raise_on_error=False` gives).

        Not a redis-py pipeline on the pool: batches go out one at a time (one flusher), so a
        connection of their own needs no checkout, and a pooled checkout and release (a condition,
        a timeout, a readability check, metrics hooks) plus the pipeline object cost more CPU than
        the round trip itself (~0.2 ms a batch, bench/floor.py). The connection has no socket
        timeout, so a send makes no Task (redis-py wraps a send under a socket timeout in
        `wait_for`, a Task each on Python 3.11); the exchange has APPEND_REPLY_SECONDS
        (`_exchange`), and the next batch after a failed one connects again."""
        conn = self._appender
        if conn is None:
            kwargs = {**self._pool.connection_kwargs, "socket_timeout": None}
            conn = self._appender = self._pool.connection_class(**kwargs)
        commands = []
        for run_id, seq, data, flag, _ in batch:
            key = self.key(run_id)
            if flag == b"1":
                # XADD and EXPIRE atomically (see _APPEND). EVALSHA itself, not redis-py's Script,
                # which asks SCRIPT EXISTS before every batch that holds one (a round trip per
                # run's end); a NOSCRIPT answer loads it and sends again.
                commands.append(("EVALSHA", self._append_sha, 1, key, self._maxlen, f"{seq}-0", data, flag, self._ttl))
            else:
                commands.append(("XADD", key, "MAXLEN", "~", self._maxlen, f"{seq}-0", b"d", data, b"t", flag))
        return await _exchange(conn, conn.pack_commands(commands), len(commands), APPEND_REPLY_SECONDS, "appends")

    async def _settle_duplicate(
        self, run_id: str, seq: int, data: bytes, flag: bytes, future: asyncio.Future[None]
    ) -> None:
        """An append whose seq is already used: a no-op when the same entry is there (a retry of
        one that landed), a SequenceError otherwise."""
        try:
            same = await self._holds(self.key(run_id), seq, data, flag)
        except EventStreamUnavailable as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if future.done():
            return
        if same:
            future.set_result(None)
        else:
            future.set_exception(SequenceError(f"run {run_id}: seq {seq} is not greater than the last appended seq"))

    async def _holds(self, key: str, seq: int, data: bytes, flag: bytes) -> bool:
        try:
            found = await self._reconnecting(lambda: self._redis.xrange(key, f"{seq}-0", f"{seq}-0"), f"check {key}")
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot read {key}: {exc}") from exc
        fields = found[0][1] if found else None
        return fields is not None and fields.get(b"d") == data and fields.get(b"t") == flag

    async def read(self, run_id: str, after_seq: int, *, count: int = 500, block_ms: int = 0) -> list[StreamEntry]:
        """A waiting read (block_ms > 0) is answered by the multiplexer (no connection held per
        reader); an immediate one is one XREAD on a pooled connection."""
        key = self.key(run_id)
        if block_ms > 0:
            entries = await self._mux.wait(key, max(after_seq, 0), min(block_ms, MAX_BLOCK_MS) / 1000)
            return entries[:count]

        async def xread():
            return await self._redis.xread({key: f"{max(after_seq, 0)}-0"}, count=count)

        try:
            response = await self._reconnecting(xread, f"read run {run_id}")
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot read run {run_id}: {exc}") from exc
        return [
            _entry(entry_id, fields)
            for _, stream_entries in _streams_of(response)
            for entry_id, fields in stream_entries
        ]

    async def first_seq(self, run_id: str) -> int | None:
        try:
            oldest = await self._reconnecting(
                lambda: self._redis.xrange(self.key(run_id), count=1), f"read run {run_id}"
            )
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot read run {run_id}: {exc}") from exc
        entry_id = oldest[0][0] if oldest else None
        if entry_id is None:
            return None
        return _seq_of(entry_id)

    async def delete(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        keys = [self.key(run_id) for run_id in run_ids]
        try:
            await self._reconnecting(lambda: self._redis.delete(*keys), f"delete {len(keys)} run logs")
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot delete run logs: {exc}") from exc

    def _reconnecting(self, operation: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
        return reconnecting(operation, reconnect_seconds=self._reconnect_seconds, what=what)

    async def close(self) -> None:
        await self._mux.close()
        if self._appender is not None:
            await self._appender.disconnect()
        await self._redis.aclose()
