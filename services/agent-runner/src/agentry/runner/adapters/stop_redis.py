"""Redis stop signal: a flag remembers the request, one pub/sub channel wakes watchers on every replica.

Each adapter instance holds ONE subscription to `{prefix}stop` and dispatches to its local
watchers by run id, so a replica running hundreds of runs still uses a single pub/sub
connection. Messages published while that connection is down are lost, so after every
(re)subscription the flags of all watched runs are read again.

Redis restarts: commands follow the event stream's policy (agentry.servicekit.eventstream.redis):
a dead pooled connection is replaced at once and a Redis that is away is waited for up to
`reconnect_seconds` before StopSignalUnavailable; the subscription reconnects on its own, for as
long as it takes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from agentry.runner.stopsignal import StopSignalUnavailable
from agentry.servicekit.eventstream.redis import DEFAULT_RECONNECT_SECONDS, connection_pool, reconnecting

logger = logging.getLogger(__name__)


class RedisStopSignal:
    def __init__(
        self,
        redis_url: str,
        *,
        key_prefix: str = "agentry:run:",
        ttl_seconds: int = 86_400,
        reconnect_seconds: float = DEFAULT_RECONNECT_SECONDS,
    ) -> None:
        # No socket timeout: the subscription's connection is silent until a stop is requested.
        self._redis = aioredis.Redis.from_pool(connection_pool(redis_url, max_connections=64, socket_timeout=None))
        self._reconnect_seconds = reconnect_seconds
        self._prefix = key_prefix
        self._channel = f"{key_prefix}stop"
        self._ttl = ttl_seconds
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._start_lock = asyncio.Lock()

    def key(self, run_id: str) -> str:
        return f"{self._prefix}{run_id}:stop"

    async def request_stop(self, run_id: str) -> None:
        async def set_and_publish() -> None:
            # Sent again after a lost answer this only sets the same flag and wakes watchers twice.
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self.key(run_id), b"1", ex=self._ttl)
                pipe.publish(self._channel, run_id)
                await pipe.execute()

        try:
            await reconnecting(set_and_publish, reconnect_seconds=self._reconnect_seconds, what=f"stop run {run_id}")
        except RedisError as exc:
            raise StopSignalUnavailable(f"cannot request a stop of run {run_id}: {exc}") from exc

    async def is_stop_requested(self, run_id: str) -> bool:
        try:
            return bool(
                await reconnecting(
                    lambda: self._redis.exists(self.key(run_id)),
                    reconnect_seconds=self._reconnect_seconds,
                    what=f"read the stop flag of run {run_id}",
                )
            )
        except RedisError as exc:
            raise StopSignalUnavailable(f"cannot read the stop flag of run {run_id}: {exc}") from exc

    @asynccontextmanager
    async def watch(self, run_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        watchers = self._watchers.setdefault(run_id, set())
        watchers.add(event)
        try:
            # Subscribed before the flag is read: a request lands in one or the other.
            await self._ensure_listening()
            if await self.is_stop_requested(run_id):
                event.set()
            yield event
        finally:
            watchers.discard(event)
            if not watchers and self._watchers.get(run_id) is watchers:
                del self._watchers[run_id]

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.wait([self._listener])
            self._listener = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        await self._redis.aclose()

    async def _ensure_listening(self) -> None:
        async with self._start_lock:
            if self._listener is None or self._listener.done():
                self._subscribed.clear()
                if self._pubsub is not None:
                    await self._pubsub.aclose()
                pubsub = self._redis.pubsub()
                try:
                    await reconnecting(
                        lambda: pubsub.subscribe(self._channel),
                        reconnect_seconds=self._reconnect_seconds,
                        what=f"subscribe to {self._channel}",
                    )
                except RedisError as exc:
                    await pubsub.aclose()
                    raise StopSignalUnavailable(f"cannot subscribe to {self._channel}: {exc}") from exc
                self._pubsub = pubsub
                self._listener = asyncio.create_task(self._listen(pubsub))
            listener = self._listener
        if self._subscribed.is_set():
            return
        subscribed = asyncio.create_task(self._subscribed.wait())
        await asyncio.wait({subscribed, listener}, return_when=asyncio.FIRST_COMPLETED)
        if not subscribed.done():
            subscribed.cancel()
            # The listener only ends on an error it cannot recover from; surface that error.
            cause = None if listener.cancelled() else listener.exception()
            raise StopSignalUnavailable("the stop-signal subscription ended") from cause

    async def _listen(self, pubsub: PubSub) -> None:
        backoff = 0.05
        while True:
            try:
                async for message in pubsub.listen():
                    backoff = 0.05
                    if message["type"] == "subscribe":
                        # First subscription or a resubscription after a reconnect.
                        self._subscribed.set()
                        await self._recheck_watched()
                    elif message["type"] == "message":
                        self._wake(message["data"].decode())
                return  # listen() only ends once unsubscribed, which only close() does
            except (RedisConnectionError, RedisTimeoutError) as exc:
                delay = backoff / 2 + random.uniform(0, backoff / 2)
                logger.warning("stop-signal subscription lost, reconnecting in %.2fs: %s", delay, exc)
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, 1.0)

    async def _recheck_watched(self) -> None:
        for run_id in list(self._watchers):
            if await self._redis.exists(self.key(run_id)):
                self._wake(run_id)

    def _wake(self, run_id: str) -> None:
        for event in self._watchers.get(run_id, ()):
            event.set()
