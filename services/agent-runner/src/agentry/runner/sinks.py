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


class RunEventSink:
    """Numbers each event, encodes it once, and writes it to the live stream (and, when the
    event changes durable state, to the database first, with the same number).

    Before the terminal event goes out, `on_finish` records the run's final status, so a client
    that sees the end of the stream and then asks for the run sees it ended too.
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
        self._seq += 1
        data = encode_event(self._seq, event)
        terminal = isinstance(event, RunFinished)
        if terminal:
            self.finished = True
            await self._on_finish(event)
        if event.type in DURABLE_EVENT_TYPES:
            await self._repo.append_events(self._run_id, [StoredEvent(self._seq, data, terminal)])
        await self._stream.append(self._run_id, self._seq, data, terminal=terminal)
