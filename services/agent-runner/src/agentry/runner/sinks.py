"""The message store and event sink a worker plugs into agentpress for one run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agentpress import Event, Message, RunFinished, message_from_dict

from agentry.servicekit.eventstream import EventStream

from .domain import DURABLE_EVENT_TYPES, StoredEvent
from .ports import RunnerRepository

logger = logging.getLogger(__name__)


def encode_event(seq: int, event: Event) -> bytes:
    """The one place an event becomes bytes; the gateway streams these bytes unchanged.

    The sequence number is spliced into the already-encoded object, so each event is encoded once.
    """
    body = event.to_json()
    return b'{"seq":%d,%s' % (seq, body[1:])


class ThreadMessageStore:
    """A thread's messages, persisted in the runner's database as they complete."""

    def __init__(self, repo: RunnerRepository, *, thread_id: str, account_id: str) -> None:
        self._repo = repo
        self._thread_id = thread_id
        self._account_id = account_id

    async def load(self) -> list[Message]:
        import orjson

        return [message_from_dict(orjson.loads(m.content_json)) for m in await self._repo.list_messages(self._thread_id)]

    async def append(self, message: Message) -> None:
        await self._repo.add_message(
            thread_id=self._thread_id, account_id=self._account_id, type=message.kind,
            content_json=message.to_json().decode(), message_id=message.message_id,
            created_at=message.created_at)


# How far (in events) the database may trail the live stream. The gateway replays from the
# database only events the live stream no longer holds (10,000 per run by default), so a durable
# event must be stored long before it could be trimmed from the stream.
MAX_WRITE_LAG = 1_000


class EventStoreFailed(Exception):
    """Durable events of the run could not be written to the database."""


class RunEventSink:
    """Numbers each event, encodes it once, and writes it to the live stream; events that change
    durable state also go to the database, with the same number.

    The database write is off the live path: durable events are queued for one background writer
    per run, which stores them in sequence order (in batches when it falls behind), so the
    database always holds a prefix of the run's durable events. Before the terminal event goes
    out, every queued event is stored, `on_finish` records the run's final status and the terminal
    event is stored: a client that sees the end of the stream and then asks for the run sees it
    ended, and a replay from the database finds every durable event. When the writer fails, the
    next emit raises EventStoreFailed (agentpress then ends the run) and the terminal event says
    the run failed.
    """

    def __init__(self, run_id: str, repo: RunnerRepository, stream: EventStream, *, last_seq: int,
                 on_finish: Callable[[RunFinished], Awaitable[None]]) -> None:
        self._run_id = run_id
        self._repo = repo
        self._stream = stream
        self._seq = last_seq
        self._on_finish = on_finish
        # agentpress emits from concurrent tasks (tools run while the model streams); numbering
        # and writing happen under one lock so the stream receives events in sequence order.
        self._lock = asyncio.Lock()
        self._unwritten: list[StoredEvent] = []  # durable events not yet stored, in sequence order
        self._writer: asyncio.Task[None] | None = None
        self._write_error: Exception | None = None
        self.finished = False

    @property
    def last_seq(self) -> int:
        return self._seq

    async def emit(self, event: Event) -> None:
        async with self._lock:
            await self._emit(event)

    async def _emit(self, event: Event) -> None:
        if self.finished:
            logger.warning("event %s after the terminal event dropped", event.type)
            return
        if isinstance(event, RunFinished):
            await self._finish(event)
            return
        if self._write_error is not None:
            raise EventStoreFailed("the run's events could not be stored") from self._write_error
        self._seq += 1
        data = encode_event(self._seq, event)
        if event.type in DURABLE_EVENT_TYPES:
            self._unwritten.append(StoredEvent(self._seq, data, False))
            if self._writer is None or self._writer.done():
                self._writer = asyncio.create_task(self._write_unwritten())
        if self._unwritten and self._seq - self._unwritten[0].seq > MAX_WRITE_LAG:
            await self._wait_for_writer()  # the database is slow: let the stream wait for it
        await self._stream.append(self._run_id, self._seq, data, terminal=False)

    async def _finish(self, event: RunFinished) -> None:
        self.finished = True
        await self._wait_for_writer()
        if self._write_error is not None:
            event = RunFinished(reason="error", error="the run's events could not be stored")
        self._seq += 1
        data = encode_event(self._seq, event)
        await self._on_finish(event)
        if self._unwritten:  # what the failed writer left: one more try, the terminal event matters more
            try:
                await self._repo.append_events(self._run_id, self._unwritten)
            except Exception:
                logger.exception("%d durable events of the run are lost", len(self._unwritten))
            self._unwritten = []
        try:
            await self._repo.append_events(self._run_id, [StoredEvent(self._seq, data, True)])
        finally:
            # Even when the database refused it, live clients learn that the run ended (its
            # status was recorded above); the failure still propagates.
            await self._stream.append(self._run_id, self._seq, data, terminal=True)

    async def _wait_for_writer(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])  # never raises: the writer records its own failure

    async def _write_unwritten(self) -> None:
        while self._unwritten and self._write_error is None:
            batch = self._unwritten[:]  # emit only appends; only this task removes from the front
            try:
                await self._repo.append_events(self._run_id, batch)
            except Exception as exc:
                logger.exception("storing durable events of the run failed")
                self._write_error = exc
                return
            del self._unwritten[: len(batch)]
