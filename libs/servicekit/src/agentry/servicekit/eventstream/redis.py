"""Redis Streams event stream, so any gateway replica can tail a run that any runner worker writes.

Connections: readers that wait (`read(..., block_ms>0)`) do not each hold a connection, nor send
a command per wait. Every append publishes its entry on a pub/sub channel named as its stream's
key, in the same script as its XADD. One multiplexer per RedisEventStream -- one task on one
dedicated connection -- is SUBSCRIBEd to the channel of every stream some reader of this process
waits on, reads each stream's newest entries once when it subscribes, and keeps up to a small
number of the newest per stream: a live entry reaches every waiting reader as one message, at no
command, whatever the number of streams watched (one XREAD BLOCK over all of them, sent again
after every entry, cost the gateway CPU per event in proportion to the streams it watched). So
one gateway process holds thousands of streams on two connections, and a reader never waits for
a pooled connection. A reader holds no buffer of its own beyond the one batch (`count`) it was
handed: a slow client simply reads again later from its own seq (catching up by cursor; nothing
is dropped, and memory stays bounded by a few dozen entries per watched stream). Non-waiting
reads and writes use the pool (a BlockingConnectionPool: past `max_connections` callers queue
for a connection, up to `pool_timeout`, instead of opening sockets without bound); appends go out
in batches on a connection of their own.

Restarts: Redis may restart (a pod rescheduled, a failover) under running streams. A command
whose connection breaks is sent again on a new connection, with backoff, for up to
`reconnect_seconds`; only when Redis stays away longer does the caller get
EventStreamUnavailable. A waiting read whose multiplexer loses its connection keeps waiting for
the time it has left: the multiplexer reconnects, subscribes again and reads the newest entries of
every stream again, so what was appended meanwhile is not missed. Appends are idempotent per
seq, so an XADD that landed just before its connection broke is not an error when sent again.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import math
import random
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


# Every append: XADD, PUBLISH of the entry on the channel named as the stream's key (for the
# multiplexers of the readers waiting on it: the terminal flag, "<seq>-0", a space, the data) and,
# for a terminal entry, EXPIRE, in one atomic step: a rejected append (a seq already used, by a
# retry or a writer that lost its run) publishes nothing and sets no TTL, and a crash between the
# steps cannot leave a finished run's log without one or an entry that no waiting reader heard of.
_APPEND = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[2], 'd', ARGV[3], 't', ARGV[4])
if ARGV[4] == '1' then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
redis.call('PUBLISH', KEYS[1], ARGV[4] .. ARGV[2] .. ' ' .. ARGV[3])
return id
"""


# Deleting logs: each DEL with its empty message (see `_Multiplexer._on_message`), atomically.
_DELETE = """
for _, key in ipairs(KEYS) do
  redis.call('DEL', key)
  redis.call('PUBLISH', key, '')
end
return #KEYS
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


_SUBSCRIBING, _SYNCING, _LIVE = 0, 1, 2
_BEHIND: list[StreamEntry] = []  # a waiter's answer meaning "read by cursor" (identity, never mutated)


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result([])


def _entry_of_message(payload: bytes) -> StreamEntry:
    """An entry as the append script publishes it: the terminal flag, "<seq>-0", a space, the data."""
    space = payload.index(b" ")
    return StreamEntry(
        seq=int(payload[1:space].partition(b"-")[0]), data=payload[space + 1 :], terminal=payload[0] == 49
    )


def _pack(*args: bytes) -> bytes:
    """One command in RESP, its arguments already bytes."""
    return b"".join([b"*%d\r\n" % len(args), *(b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args)])


class _Subscription:
    """A stream some reader waits on (or did, within the linger): its channel's state and the newest
    entries, every entry with seq > `base` that Redis holds (at most `buffer` of them) once live."""

    __slots__ = ("base", "early", "entries", "idle_since", "key", "seqs", "state", "waiters")

    def __init__(self, key: str) -> None:
        self.key = key
        self.state = _SUBSCRIBING
        self.base = 0
        self.entries: list[StreamEntry] = []
        self.seqs: list[int] = []
        self.early: list[StreamEntry] = []  # published while the stream was being read (SYNCING)
        self.waiters: list[tuple[int, asyncio.Future[list[StreamEntry]]]] = []
        self.idle_since: float | None = None

    @property
    def top(self) -> int:
        return self.seqs[-1] if self.seqs else self.base


class _Multiplexer:
    """Live entries for every waiting reader of this process over one pub/sub connection; see the
    module docstring.

    A reader waiting on a stream subscribes the process to the stream's channel (once: later
    readers of that stream share it), and the newest entries are read once (XREVRANGE, batched
    over every stream subscribed at the same moment); from then on each append arrives as a
    message, at no further command, and is handed to the readers waiting for it. Up to `buffer`
    of the newest entries are kept per subscribed stream, so a reader coming back for more (after
    sending the last batch to its client) is answered at once; a reader behind them reads from its
    own cursor (`direct`), which is the slow-client policy: nothing is queued per reader. A stream
    nobody waited on for `linger_seconds` is unsubscribed and forgotten.

    The connection is PINGed every `ping_seconds`; one that does not answer by the next ping is
    closed. On a lost connection every stream is subscribed and read again after reconnecting
    (appends published meanwhile are read then), with backoff; past `reconnect_seconds` of
    failing, the waiting readers fail with EventStreamUnavailable (as a direct read would).
    """

    def __init__(
        self,
        redis_url: str,
        *,
        redis: aioredis.Redis,
        direct: Callable[[str, int], Awaitable[list[StreamEntry]]],
        count: int,
        reconnect_seconds: float,
        buffer: int = 32,
        linger_seconds: float = 5.0,
        ping_seconds: float = 5.0,
    ) -> None:
        # A connection of its own, no pool, no socket timeout (it waits for messages); no hidden
        # retries either: a lost connection surfaces in `_loop`, which decides. RESP2: messages
        # are plain replies (RESP3 sends them as pushes, which redis-py hands to a handler that
        # formats each one for a debug log line).
        self._conn = aioredis.ConnectionPool.from_url(
            redis_url,
            protocol=2,
            socket_timeout=None,
            socket_connect_timeout=5.0,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        ).make_connection()
        self._redis = redis  # pooled: the streams' first reads
        self._direct = direct
        self._count = count
        self._buffer = max(buffer, 1)
        self._linger = linger_seconds
        self._ping_seconds = ping_seconds
        self._reconnect_seconds = reconnect_seconds
        self._subs: dict[str, _Subscription] = {}
        self._connected = False  # subscribed mode is set up on `_conn` (by `_loop`)
        self._epoch = 0  # connections lost so far: what was read before one is not applied after it
        # Per channel, what each SUBSCRIBE (its subscription) or UNSUBSCRIBE (None) sent on this
        # connection stands for, in the order sent: Redis answers each, in order, and an answer
        # is matched to what was asked, never to a later subscription of the same stream.
        self._asked: dict[str, collections.deque[_Subscription | None]] = {}
        self._unanswered_ping = False
        self._to_subscribe: list[str] = []
        self._to_sync: list[_Subscription] = []
        self._syncer: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def wait(self, key: str, after: int, timeout: float) -> list[StreamEntry]:
        """The entries after `after` (at most `count`), as soon as there are any; [] when
        `timeout` seconds pass first."""
        if self._closed:
            return []
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._loop(), name="redis-event-multiplexer")
        deadline = loop.time() + timeout
        while True:
            sub = self._subs.get(key)
            if sub is None:
                sub = self._subs[key] = _Subscription(key)
                self._subscribe(key)
            elif sub.state == _LIVE:
                if after >= sub.base:
                    start = bisect.bisect_right(sub.seqs, after)
                    if start < len(sub.seqs):
                        return sub.entries[start : start + self._count]
                else:  # behind the newest entries kept: read from its own cursor
                    entries = await self._direct(key, after)
                    if entries or self._closed:
                        return entries
                    if self._subs.get(key) is not sub:
                        continue  # forgotten meanwhile: subscribe again
            sub.idle_since = None
            future: asyncio.Future[list[StreamEntry]] = loop.create_future()
            waiter = (after, future)
            sub.waiters.append(waiter)
            # A timer, not asyncio.timeout: no cancellation to undo, a third of the cost per wait.
            timer = loop.call_at(deadline, _expire, future)
            try:
                entries = await future
            finally:
                timer.cancel()
                try:
                    sub.waiters.remove(waiter)
                except ValueError:
                    pass
                if not sub.waiters:
                    sub.idle_since = loop.time()
            if entries is not _BEHIND:
                return entries

    def _subscribe(self, key: str) -> None:
        """SUBSCRIBE `key` soon (every key asked for in this loop iteration in one command); when
        disconnected, `_loop` subscribes every stream on reconnecting."""
        if not self._connected:
            return
        self._to_subscribe.append(key)
        if len(self._to_subscribe) == 1:
            asyncio.get_running_loop().call_soon(self._flush_subscribes)

    def _flush_subscribes(self) -> None:
        keys, self._to_subscribe = self._to_subscribe, []
        subs = [sub for key in dict.fromkeys(keys) if (sub := self._subs.get(key)) and sub.state == _SUBSCRIBING]
        if subs and self._connected:
            self._send(*self._subscribing(subs))

    @staticmethod
    def _subscribing(subs: list[_Subscription]) -> tuple[bytes, list[tuple[str, _Subscription | None]]]:
        return _pack(b"SUBSCRIBE", *(sub.key.encode() for sub in subs)), [(sub.key, sub) for sub in subs]

    @staticmethod
    def _unsubscribing(keys: list[str]) -> tuple[bytes, list[tuple[str, _Subscription | None]]]:
        return _pack(b"UNSUBSCRIBE", *(key.encode() for key in keys)), [(key, None) for key in keys]

    def _send(self, packed: bytes, asked: list[tuple[str, _Subscription | None]]) -> None:
        _spawn(self._send_now(packed, asked, self._epoch))

    async def _send_now(self, packed: bytes, asked: list[tuple[str, _Subscription | None]], epoch: int) -> None:
        if self._closed or epoch != self._epoch or not self._conn.is_connected:
            return  # (never connect here: `_loop` reconnects, and subscribes every stream then)
        self._ask(asked)
        try:
            await self._conn.send_packed_command(packed, check_health=False)
        except Exception as exc:  # noqa: BLE001 - the connection is closed; `_loop` reconnects
            logger.debug("event multiplexer: send failed: %r", exc)

    def _ask(self, asked: list[tuple[str, _Subscription | None]]) -> None:
        for key, sub in asked:
            self._asked.setdefault(key, collections.deque()).append(sub)

    def _answered(self, key: str) -> _Subscription | None:
        """What the (UN)SUBSCRIBE this answer is to stood for (None: an UNSUBSCRIBE)."""
        asked = self._asked.get(key)
        if not asked:
            return None
        sub = asked.popleft()
        if not asked:
            del self._asked[key]
        return sub

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        delay = 0.05
        while not self._closed:
            try:
                if not self._connected:
                    await self._connect()
                response = await self._conn.read_response(timeout=math.inf)
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect; readers hear past the window
                self._disconnected()
                await self._conn.disconnect(nowait=True)
                if self._closed:
                    return
                now = loop.time()
                failing_since = failing_since or now
                if not is_transient_redis_error(exc) or now - failing_since >= self._reconnect_seconds:
                    self._fail_all(EventStreamUnavailable(f"cannot read run events: {exc}"))
                    failing_since = None if not is_transient_redis_error(exc) else failing_since
                logger.warning("event multiplexer: redis connection failed (%r); reconnecting", exc)
                await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))
                delay = min(delay * 2, 1.0)
                continue
            failing_since, delay = None, 0.05
            if not isinstance(response, list) or not response:
                if response == b"PONG":  # PING's answer outside subscribed mode (nothing subscribed)
                    self._unanswered_ping = False
                continue
            kind = response[0]
            if kind == b"message":
                self._on_message(response[1].decode(), response[2])
            elif kind == b"subscribe":
                self._on_subscribed(response[1].decode())
            elif kind == b"unsubscribe":
                self._answered(response[1].decode())
            elif kind == b"pong":
                self._unanswered_ping = False

    async def _connect(self) -> None:
        """Connects and subscribes every stream a reader waits on (the rest are forgotten)."""
        await self._conn.connect()
        for key in [key for key, sub in self._subs.items() if not sub.waiters]:
            del self._subs[key]
        self._connected, self._unanswered_ping = True, False
        self._to_subscribe = []
        if self._subs:
            packed, asked = self._subscribing(list(self._subs.values()))
            self._ask(asked)
            await self._conn.send_packed_command(packed, check_health=False)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._ping_seconds, self._tick)

    def _disconnected(self) -> None:
        """Every subscription is gone with the connection: each stream is subscribed and read again."""
        self._connected = False
        self._epoch += 1
        self._asked.clear()
        self._to_sync = []  # each is queued again when its new SUBSCRIBE is answered
        for sub in self._subs.values():
            sub.state, sub.early = _SUBSCRIBING, []
            sub.entries, sub.seqs, sub.base = [], [], 0

    def _tick(self) -> None:
        """Every `ping_seconds`: forget streams nobody waited on for the linger, and PING (a ping
        still unanswered from the last tick means the connection is dead: close it)."""
        self._timer = None
        if self._closed:
            return
        if self._connected:
            if self._unanswered_ping:
                logger.warning("event multiplexer: no answer to PING; reconnecting")
                _spawn(self._conn.disconnect(nowait=True))  # the blocked read fails; `_loop` reconnects
            else:
                now = asyncio.get_running_loop().time()
                idle = [
                    key
                    for key, sub in self._subs.items()
                    if not sub.waiters and sub.idle_since is not None and now - sub.idle_since >= self._linger
                ]
                for key in idle:
                    del self._subs[key]
                packed, asked = self._unsubscribing(idle) if idle else (b"", [])
                self._unanswered_ping = True
                self._send(packed + _pack(b"PING"), asked)
        self._timer = asyncio.get_running_loop().call_later(self._ping_seconds, self._tick)

    def _on_subscribed(self, key: str) -> None:
        sub = self._answered(key)
        if sub is None or self._subs.get(key) is not sub or sub.state != _SUBSCRIBING:
            return  # a subscription since forgotten (its UNSUBSCRIBE follows), or a stale answer
        sub.state = _SYNCING
        self._to_sync.append(sub)
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.create_task(self._sync(), name="redis-event-multiplexer-sync")

    async def _sync(self) -> None:
        """Reads the newest entries of the streams just subscribed, all in one round trip per
        batch (those subscribed while a batch is out go in the next), and makes them live."""
        while self._to_sync:
            batch, self._to_sync = self._to_sync, []
            keys = [sub.key for sub in batch]
            epoch = self._epoch

            async def newest(keys: list[str] = keys) -> list:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.xrevrange(key, count=self._buffer)
                    return await pipe.execute()

            try:
                answers = await reconnecting(newest, reconnect_seconds=self._reconnect_seconds, what="read run events")
            except Exception as exc:  # noqa: BLE001 - those streams' readers hear; the next wait subscribes again
                if epoch != self._epoch:
                    continue  # the connection was lost meanwhile: every stream is subscribed and read again
                dropped = []
                for sub in batch:
                    if self._subs.get(sub.key) is sub and sub.state == _SYNCING:
                        del self._subs[sub.key]
                        dropped.append(sub.key)
                        self._fail(sub, EventStreamUnavailable(f"cannot read {sub.key}: {exc}"))
                if dropped and self._connected:
                    self._send(*self._unsubscribing(dropped))
                continue
            if epoch != self._epoch:
                continue  # read before the connection was lost: every stream is subscribed and read again
            for sub, answer in zip(batch, answers, strict=True):
                if self._subs.get(sub.key) is not sub or sub.state != _SYNCING:
                    continue  # forgotten meanwhile
                entries = [_entry(entry_id, fields) for entry_id, fields in reversed(answer)]
                sub.state = _LIVE
                sub.base = entries[0].seq - 1 if len(entries) >= self._buffer else 0
                for after, future in sub.waiters:
                    if after < sub.base and not future.done():
                        future.set_result(_BEHIND)  # older than what is kept: by cursor (`wait`)
                early, sub.early = sub.early, []
                self._add(sub, entries + sorted(early, key=lambda entry: entry.seq))

    def _on_message(self, key: str, payload: bytes) -> None:
        sub = self._subs.get(key)
        if sub is None:
            return
        if not payload:  # the log was deleted (`RedisEventStream.delete`): nothing is kept, waiters wake
            sub.entries, sub.seqs, sub.base, sub.early = [], [], 0, []
            if sub.state == _SYNCING:
                sub.state = _LIVE  # complete as empty: a first read that ran before the delete is not applied
            for _, future in sub.waiters:
                if not future.done():
                    future.set_result([])
            return
        try:
            entry = _entry_of_message(payload)
        except ValueError:  # not the append script's (another publisher on the channel): ignored
            logger.warning("event multiplexer: unreadable message on %s ignored", key)
            return
        if sub.state == _LIVE:
            self._add(sub, [entry])
        else:
            sub.early.append(entry)

    def _add(self, sub: _Subscription, entries: list[StreamEntry]) -> None:
        """Keeps `entries` (those newer than what the stream holds; older ones are repeats) and
        answers every waiter they are news to."""
        top = sub.top
        for entry in entries:
            if entry.seq > top:
                sub.entries.append(entry)
                sub.seqs.append(entry.seq)
                top = entry.seq
        if sub.waiters:
            for after, future in sub.waiters:
                if not future.done():
                    start = bisect.bisect_right(sub.seqs, after)
                    if start < len(sub.seqs):
                        future.set_result(sub.entries[start : start + self._count])
        extra = len(sub.seqs) - self._buffer
        if extra > 0:
            sub.base = sub.seqs[extra - 1]
            del sub.entries[:extra], sub.seqs[:extra]

    @staticmethod
    def _fail(sub: _Subscription, exc: Exception) -> None:
        for _, future in sub.waiters:
            if not future.done():
                future.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        subs, self._subs = self._subs, {}
        for sub in subs.values():
            self._fail(sub, exc)

    def watching(self) -> int:
        """How many readers wait now (for tests and metrics)."""
        return sum(len(sub.waiters) for sub in self._subs.values())

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in (self._task, self._syncer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for sub in self._subs.values():
            for _, future in sub.waiters:
                if not future.done():
                    future.set_result([])
        self._subs.clear()
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
        # Nothing on the pool blocks (waiting reads go through the multiplexer): a command that
        # has no answer within the pool's 5 s socket timeout is on a dead connection.
        self._pool = connection_pool(redis_url, max_connections=max_connections, pool_timeout=pool_timeout)
        self._redis = aioredis.Redis.from_pool(self._pool)
        self._append_sha = self._redis.register_script(_APPEND).sha
        self._pending: list[tuple[str, int, bytes, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._appender: AbstractConnection | None = None  # the flusher's connection (see _send)
        self._mux = _Multiplexer(
            redis_url, redis=self._redis, direct=self._read_key, count=500, reconnect_seconds=reconnect_seconds
        )

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
        # One script call per append (see _APPEND), packed here: EVALSHA itself, not redis-py's
        # Script, which asks SCRIPT EXISTS before every batch (a round trip); a NOSCRIPT answer
        # loads it and sends again.
        sha, maxlen, ttl = self._append_sha.encode(), b"%d" % self._maxlen, b"%d" % self._ttl
        packed = b"".join(
            _pack(b"EVALSHA", sha, b"1", self.key(run_id).encode(), maxlen, b"%d-0" % seq, data, flag, ttl)
            for run_id, seq, data, flag, _ in batch
        )
        return await _exchange(conn, [packed], len(batch), APPEND_REPLY_SECONDS, "appends")

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
        return await self._read_key(key, after_seq, count)

    async def _read_key(self, key: str, after_seq: int, count: int = 500) -> list[StreamEntry]:
        """One XREAD of the entries after `after_seq` on a pooled connection (not waiting)."""

        async def xread():
            return await self._redis.xread({key: f"{max(after_seq, 0)}-0"}, count=count)

        try:
            response = await self._reconnecting(xread, f"read {key}")
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot read {key}: {exc}") from exc
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
        """Deletes the logs and publishes an empty message on each: the multiplexers that keep
        their newest entries forget them, and their waiting readers wake to nothing."""
        if not run_ids:
            return
        keys = [self.key(run_id) for run_id in run_ids]
        try:
            await self._reconnecting(
                lambda: self._redis.eval(_DELETE, len(keys), *keys), f"delete {len(keys)} run logs"
            )
        except RedisError as exc:
            raise EventStreamUnavailable(f"cannot delete run logs: {exc}") from exc

    def _reconnecting(self, operation: Callable[[], Awaitable[T]], what: str) -> Awaitable[T]:
        return reconnecting(operation, reconnect_seconds=self._reconnect_seconds, what=what)

    async def close(self) -> None:
        await self._mux.close()
        if self._appender is not None:
            await self._appender.disconnect()
        await self._redis.aclose()
