"""The message store and event sink a worker plugs into agentpress for one run."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Sequence

from agentpress import (
    Event,
    FinishReason,
    Message,
    MessageCompleted,
    PhaseChanged,
    ReasoningDelta,
    RequiresAction,
    RunFinished,
    TextDelta,
    ToolCallDelta,
    message_from_dict,
)
from agentry.servicekit.db import is_pool_timeout, retrying
from agentry.servicekit.eventstream import EventStream

from .domain import DURABLE_EVENT_TYPES, NewMessage, RunStatus, StoredEvent, StoredMessage, final_status
from .errors import LeaseLost
from .ports import RunnerRepository

logger = logging.getLogger(__name__)


def encode_event(seq: int, event: Event) -> bytes:
    """The one place an event becomes bytes; the gateway streams these bytes unchanged.

    The sequence number is spliced into the already-encoded object, so each event is encoded once.
    """
    body = event.to_json()
    return b'{"seq":%d,%s' % (seq, body[1:])


class Lease:
    """A worker's hold on one run: its epoch fences every write; once lost, nothing more is written.

    `lost` is set when a fenced write is refused, when the heartbeat no longer finds the run, or
    when the worker hands the run back; `on_lost` callbacks then stop the run's agent.
    """

    def __init__(self, run_id: str, epoch: int) -> None:
        self.run_id = run_id
        self.epoch = epoch
        self.lost = False
        self._callbacks: list[Callable[[], None]] = []

    def on_lost(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)

    def mark_lost(self) -> None:
        if not self.lost:
            self.lost = True
            for callback in self._callbacks:
                callback()


class ThreadMessageStore:
    """A thread's messages, persisted in the runner's database as they complete.

    With a lease, each append is fenced on its epoch; after the lease is lost appends are
    dropped (the run's new holder owns the thread now), never raised into agentpress.
    """

    def __init__(
        self,
        repo: RunnerRepository,
        *,
        thread_id: str,
        account_id: str,
        lease: Lease | None = None,
        sink: RunEventSink | None = None,
        history: Sequence[StoredMessage] | None = None,
    ) -> None:
        """`history`: the thread's messages as the run's claim read them; the first `load`
        answers them instead of reading again, unless a message was appended before it."""
        self._repo = repo
        self._thread_id = thread_id
        self._account_id = account_id
        self._lease = lease
        # With the run's event sink, messages go with its durable events: in one transaction with
        # the events written at the same time (the run's end, for a short run), never after an
        # event that follows them. Without, each is written at once.
        self._sink = sink
        self._history = history

    async def load(self) -> list[Message]:
        import orjson

        stored, self._history = self._history, None
        if stored is None:
            stored = await retrying(
                lambda: self._repo.list_messages(self._thread_id),
                deadline=WRITE_RETRY_SECONDS,
                queue_waits=QUEUE_WAITS,
            )
        queued = self._sink.queued_messages() if self._sink is not None else []  # not yet written
        return [message_from_dict(orjson.loads(m.content_json)) for m in [*stored, *queued]]

    async def append(self, message: Message) -> None:
        self._history = None  # it may be written before the next load: read the thread then
        lease = self._lease
        if lease is not None and lease.lost:
            logger.info("message of a run this worker no longer holds dropped")
            return
        row = NewMessage(
            message_id=message.message_id,
            thread_id=self._thread_id,
            account_id=self._account_id,
            type=message.kind,
            content_json=message.to_json().decode(),
            created_at=message.created_at,
        )
        if self._sink is not None:
            await self._sink.add_message(row)
            return
        try:  # a database that restarts is waited for, as the durable-event writer does
            await retrying(
                lambda: self._repo.add_message(
                    thread_id=row.thread_id,
                    account_id=row.account_id,
                    type=row.type,
                    content_json=row.content_json,
                    message_id=row.message_id,
                    created_at=row.created_at,
                    fence=(lease.run_id, lease.epoch) if lease else None,
                ),
                deadline=WRITE_RETRY_SECONDS,
                queue_waits=QUEUE_WAITS,
            )
        except LeaseLost:
            assert lease is not None
            lease.mark_lost()


# How far (in events) the database may trail the live stream. The gateway replays from the
# database only events the live stream no longer holds (10,000 per run by default), so a durable
# event must be stored long before it could be trimmed from the stream.
MAX_WRITE_LAG = 1_000
# A durable write that fails for an infrastructure reason (a pool timeout, a dropped connection,
# a database restarting) is retried with backoff for this long before the run gives up on it.
WRITE_RETRY_SECONDS = 60.0
# A run's writes that found every pooled connection busy for the pool's whole timeout wait in
# line again, this many times, beyond WRITE_RETRY_SECONDS (bounded by the run's lease too): an
# overloaded worker slows its runs down rather than failing them (`servicekit.db.retrying`).
QUEUE_WAITS = 5


class EventStoreFailed(Exception):
    """Durable events of the run could not be written to the database."""


async def end_run(
    repo: RunnerRepository,
    stream: EventStream,
    run_id: str,
    *,
    seq: int,
    event: RunFinished,
    from_: list[RunStatus],
    epoch: int | None = None,
    pending: list[StoredEvent] | None = None,
    messages: list[NewMessage] | None = None,
    retry_seconds: float = 0.0,
    started_at: float | None = None,
) -> bool:
    """The one place a run ends: its status, its remaining messages and durable events and the
    terminal event (numbered `seq`) are stored in one transaction, then the terminal event goes to the live
    stream. Only from `from_` (and only at lease `epoch` when given); False when the run was not
    there to end (someone else ended or took it), and then nothing is written. With
    `retry_seconds`, a database that is away (restarting) is waited for that long. A run that
    ended is counted in agentry_runs_finished_total (and, given `started_at`, epoch seconds, its
    duration observed).
    """
    status, error = final_status(str(event.reason), event.error)
    if event.error != (error or None):
        event = RunFinished(reason=event.reason, error=error or None)
    data = encode_event(seq, event)
    ended = await retrying(
        lambda: repo.finish_run(
            run_id,
            from_=from_,
            to=status,
            error=error,
            finish_reason=str(event.reason),
            events=[*(pending or ()), StoredEvent(seq, data, True)],
            epoch=epoch,
            messages=messages or (),
        ),
        deadline=retry_seconds,
        queue_waits=QUEUE_WAITS if retry_seconds > 0 else 0,
    )
    if ended:
        from . import metrics

        metrics.record_finished(status.value, str(event.reason))
        if started_at is not None:
            metrics.run_duration().labels(status.value).observe(max(time.time() - started_at, 0.0))
        # The end is stored: live clients must get it even if the run's task is cancelled while
        # the stream is away (the worker's heartbeat no longer finds the ended run's lease).
        await asyncio.shield(stream.append(run_id, seq, data, terminal=True))
    return ended


# Deltas that coalesce (RunEventSink's delta_coalesce): consecutive ones of one kind merge.
_DELTAS = (TextDelta, ReasoningDelta, ToolCallDelta)


def _next_tick(now: float, period: float) -> float:
    """The first instant after `now` (loop time, seconds) on the grid of multiples of `period`:
    a clock every sink of the process shares, so the deltas that all runs hold are written in
    the same loop iteration and leave in one append batch (one write to Redis, one published
    message each, read together by the gateways) instead of one batch per run at its own moment."""
    return (now // period + 1) * period


# Per event loop, per tick (loop time): the callbacks due then. One timer per loop and tick
# calls them all, in one callback: a timer per sink would not do, as uvloop rounds each delay
# to whole milliseconds from its own reading of the clock, which splits a tick's timers over
# two iterations now and then.
_due: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, list[Callable[[float], None]]]] = (
    weakref.WeakKeyDictionary()
)


def _at_tick(when: float, callback: Callable[[float], None]) -> None:
    """Calls `callback(when)` at loop time `when`, with every other callback due at that tick."""
    loop = asyncio.get_running_loop()
    ticks = _due.get(loop)
    if ticks is None:
        ticks = _due[loop] = {}
    callbacks = ticks.get(when)
    if callbacks is None:
        callbacks = ticks[when] = []
        loop.call_at(when, _tick, ticks, when)
    callbacks.append(callback)


def _tick(ticks: dict[float, list[Callable[[float], None]]], when: float) -> None:
    for callback in ticks.pop(when, ()):
        callback(when)


class RunEventSink:
    """Numbers each event, encodes it once, and writes it to the live stream; events that change
    durable state also go to the database, with the same number, fenced on the run's lease.

    The database write is off the live path: durable events (and the thread messages the run
    adds, `add_message`, which go in the same transactions) are queued for one background writer
    per run, which stores them in sequence order, in batches, so the database always holds a
    prefix of the run's durable events. The writer waits `write_delay` seconds before its first
    write, so the events of that interval go in one transaction, and a run that ends within it
    stores them all with its end (one transaction for a short run instead of one per event). Two exceptions wait for the
    database: a `running_tool` phase of a tool that is not idempotent is stored before the tool
    runs (a resumed run must know the call may have had its effect), and the terminal event is
    stored together with every pending event and the run's final status (`end_run`), so a client
    that sees the end of the stream and then asks for the run sees it ended.

    When the lease is lost, every later event is dropped: the run's new holder writes it now.
    When the writer keeps failing, the next emit raises EventStoreFailed (agentpress then ends
    the run) and the terminal event says the run failed.

    Deltas are coalesced when `delta_coalesce` (seconds) is set: a text, reasoning or tool-call
    delta that comes at least that long after the previous delta event, or first after another
    event, goes out at once (so the first token of a reply is never held); one that comes sooner
    is held, and the deltas of the same kind (the same call, for tool-call deltas) that follow
    are merged into it, until the next tick of a clock that ticks every `delta_coalesce` seconds
    for every sink in the process (so at most that long; the held deltas of all runs are
    written together, in one batch). Then the merged delta is numbered and written as ONE
    event. Any other event (and the end, a pause, `flush`) first writes what is held, so events
    keep their order and numbers stay dense: deltas are numbered only when written, never held
    with a number. Deltas are not durable, so nothing else changes. A held delta whose write
    fails makes the next emit raise (and the end says the run failed).
    """

    def __init__(
        self,
        run_id: str,
        repo: RunnerRepository,
        stream: EventStream,
        *,
        last_seq: int,
        lease: Lease | None = None,
        idempotent_tools: frozenset[str] = frozenset(),
        on_event: Callable[[], None] | None = None,
        write_retry_seconds: float = WRITE_RETRY_SECONDS,
        write_delay: float = 0.0,
        delta_coalesce: float = 0.0,
    ) -> None:
        self._run_id = run_id
        self._repo = repo
        self._stream = stream
        self._seq = last_seq
        self._lease = lease
        self.idempotent_tools = idempotent_tools
        self._on_event = on_event
        self._write_retry_seconds = write_retry_seconds
        self._write_delay = write_delay
        self._delaying = False  # the writer waits out write_delay and has written nothing yet
        # agentpress emits from concurrent tasks (tools run while the model streams); numbering
        # and writing happen under one lock so the stream receives events in sequence order.
        self._lock = asyncio.Lock()
        self._unwritten: list[StoredEvent] = []  # durable events not yet stored, in sequence order
        self._messages: list[NewMessage] = []  # thread messages not yet stored, in order
        self._phase: tuple[str, str, float] | None = None  # the newest phase not yet stored
        self.current_phase: tuple[str, str, float] | None = None  # (phase, tool, since)
        self._stored_seq = last_seq
        self._writer: asyncio.Task[None] | None = None
        self._write_error: Exception | None = None
        self.started_at: float | None = None  # epoch seconds of the run's first start (its duration)
        self.finished = False
        self.paused = False  # the run waits for the user (requires_action stored with the status)
        self._coalesce = delta_coalesce
        self._held: list[str] = []  # the text of deltas held to be merged (not numbered yet)
        self._held_kind: tuple[type, str] | None = None  # (delta class, call_id) of what is held
        self._delta_sent_at = float("-inf")  # loop time the last delta event was written
        self._tick: float | None = None  # the tick (loop time) at which what is held is written
        self._timer_tasks: set[asyncio.Task[None]] = set()
        self._stream_error: Exception | None = None  # a held delta's write failed

    @property
    def last_seq(self) -> int:
        return self._seq

    def _lost(self) -> bool:
        return self._lease is not None and self._lease.lost

    async def emit(self, event: Event) -> None:
        async with self._lock:
            seq = await self._emit(event)
        if isinstance(event, PhaseChanged) and event.call is not None and event.tool not in self.idempotent_tools:
            if not seq:  # dropped (the lease is lost): the call must not run unrecorded
                raise LeaseLost(f"run {self._run_id}: lease lost")
            await self._stored(seq)  # the call is on record before it can have an effect

    async def _emit(self, event: Event) -> int:
        if self.finished or self._lost():
            if not self._lost():
                logger.warning("event %s after the terminal event dropped", event.type)
            return 0
        if self._on_event is not None:
            self._on_event()
        if isinstance(event, RunFinished):
            await self._finish(event)
            return 0
        if isinstance(event, RequiresAction):
            await self._pause(event)
            return 0
        if self._write_error is not None:
            raise EventStoreFailed("the run's events could not be stored") from self._write_error
        if self._stream_error is not None:
            raise self._stream_error
        if self._messages and not (isinstance(event, MessageCompleted) and event.message.kind == "assistant"):
            # An assistant's reply waits for the writer only until the event after its
            # message_completed (whoever sees a tool start or the next model call finds it
            # stored), so a run's last reply, followed by the end, goes in the end's transaction.
            # Any other message (a tool's result) is stored before its message_completed goes out,
            # as when it was written at once.
            try:
                await self._stored(self._seq)
            except LeaseLost:
                return 0
        if self._coalesce and isinstance(event, _DELTAS):
            return await self._delta(event)
        if self._held_kind is not None:
            await self._send_held()  # what is held goes first: order is kept
        self._delta_sent_at = float("-inf")  # the next delta starts a new message or call: at once
        return await self._write(event)

    async def _write(self, event: Event) -> int:
        """Numbers the event, encodes it once and writes it (queues it for the database too when
        it is durable)."""
        self._seq += 1
        data = encode_event(self._seq, event)
        if event.type in DURABLE_EVENT_TYPES:
            self._unwritten.append(StoredEvent(self._seq, data, False))
            if isinstance(event, PhaseChanged):
                self._phase = self.current_phase = (event.phase, event.tool or "", event.at)
            self._start_writer()
        if self._unwritten and self._seq - self._unwritten[0].seq > MAX_WRITE_LAG:
            await self._wait_for_writer()  # the database is slow: let the stream wait for it
        await self._stream.append(self._run_id, self._seq, data, terminal=False)
        return self._seq

    async def _delta(self, event: TextDelta | ReasoningDelta | ToolCallDelta) -> int:
        if isinstance(event, ToolCallDelta):
            kind, text = (ToolCallDelta, event.call_id), event.arguments_delta
        else:
            kind, text = (type(event), ""), event.text
        if self._held_kind is not None and self._held_kind != kind:
            await self._send_held()  # another message or call: what is held is complete
        now = asyncio.get_running_loop().time()
        if self._held_kind is None and now - self._delta_sent_at >= self._coalesce:
            self._delta_sent_at = now  # after a quiet spell a delta goes at once (first tokens too)
            return await self._write(event)
        self._held_kind = kind
        self._held.append(text)
        if self._tick is None:
            self._tick = _next_tick(now, self._coalesce)
            _at_tick(self._tick, self._time_up)
        return 0

    async def _send_held(self) -> None:
        """Writes the held deltas as one event (the caller holds the lock)."""
        kind, text = self._held_kind, "".join(self._held)
        self._held_kind, self._held = None, []
        self._tick = None  # written now: its tick, when it comes, finds nothing to do
        assert kind is not None
        cls, call_id = kind
        merged = ToolCallDelta(call_id=call_id, arguments_delta=text) if cls is ToolCallDelta else cls(text=text)
        self._delta_sent_at = asyncio.get_running_loop().time()
        await self._write(merged)

    def _time_up(self, tick: float) -> None:
        if tick != self._tick:
            return  # what was held for that tick was written before it
        self._tick = None
        if self._held_kind is not None:
            task = asyncio.create_task(self._write_held_now(), name=f"deltas:{self._run_id}")
            self._timer_tasks.add(task)
            task.add_done_callback(self._timer_tasks.discard)

    async def _write_held_now(self) -> None:
        async with self._lock:
            if self._held_kind is None or self.finished or self._lost():
                return
            try:
                await self._send_held()
            except Exception as exc:  # noqa: BLE001 - no caller here: the run's next event raises it
                logger.warning("held deltas of the run could not be streamed: %r", exc)
                self._stream_error = exc

    async def _finish(self, event: RunFinished) -> None:
        if self._held_kind is not None:  # the end follows every delta
            try:
                await self._send_held()
            except Exception as exc:  # noqa: BLE001 - the end must still be stored; it says the run failed
                logger.warning("held deltas of the run could not be streamed: %r", exc)
                self._stream_error = exc
        self.finished = True
        await self._cancel_delay()  # what waits to be written goes with the end, in one transaction
        await self._wait_for_writer()
        if self._write_error is not None:
            event = RunFinished(reason=FinishReason.ERROR, error="the run's events could not be stored")
        elif self._stream_error is not None and event.reason == FinishReason.COMPLETED:
            event = RunFinished(reason=FinishReason.ERROR, error="the run's events could not be streamed")
        self._seq += 1
        pending, self._unwritten = self._unwritten, []  # what a failed writer left: one more try
        messages, self._messages = self._messages, []
        lease = self._lease
        try:
            ended = await end_run(
                self._repo,
                self._stream,
                self._run_id,
                seq=self._seq,
                event=event,
                from_=[RunStatus.RUNNING, RunStatus.CANCELLING],
                epoch=lease.epoch if lease else None,
                pending=pending,
                messages=messages,
                retry_seconds=self._write_retry_seconds,
                started_at=self.started_at,
            )
        except Exception:
            # Live clients still learn that the run ended; the failure propagates to the worker,
            # which leaves the run to the sweeper (its lease lapses and another worker ends it).
            logger.exception("the end of the run could not be stored")
            raise
        if not ended and lease is not None:
            lease.mark_lost()

    async def _pause(self, event: RequiresAction) -> None:
        """The run waits for the user: every pending durable event, the requires_action event, a
        waiting_for_user phase and the status are stored in one transaction before the events go
        out, so a client that sees requires_action can resume at once."""
        if self._held_kind is not None:
            await self._send_held()
        await self._cancel_delay()
        await self._wait_for_writer()
        if self._write_error is not None:
            raise EventStoreFailed("the run's events could not be stored") from self._write_error
        pending, self._unwritten = self._unwritten, []
        messages, self._messages = self._messages, []
        phase = PhaseChanged(phase="waiting_for_user")
        out = []
        for item in (event, phase):
            self._seq += 1
            out.append(StoredEvent(self._seq, encode_event(self._seq, item), False))
        lease = self._lease
        if lease is None or not await self._repo.pause_run(
            self._run_id, lease.epoch, event.pending, events=[*pending, *out], messages=messages
        ):
            self._unwritten = pending  # not paused (stopped meanwhile, or the lease is gone)
            self._messages = messages
            self._seq -= len(out)
            return
        self.paused = True
        self._stored_seq = out[-1].seq
        for stored in out:
            await self._stream.append(self._run_id, stored.seq, stored.data, terminal=False)

    def queued_messages(self) -> list[NewMessage]:
        """Messages added and not yet stored, in order."""
        return list(self._messages)

    async def add_message(self, message: NewMessage) -> None:
        """Queues a thread message for the writer: it is stored with the durable events written
        at the same time, at the latest before its `message_completed` goes out (an assistant's
        reply: before any event after that one, or with the run's end or pause, in their
        transaction). Dropped once the lease is lost."""
        async with self._lock:
            if self._lost():
                return
            if self._write_error is not None:
                raise EventStoreFailed("the run's events could not be stored") from self._write_error
            self._messages.append(message)
            self._start_writer()

    async def flush(self) -> None:
        """Returns once every durable event emitted so far is stored (LeaseLost or
        EventStoreFailed when that cannot be)."""
        async with self._lock:
            if self._held_kind is not None and not self.finished and not self._lost():
                await self._send_held()
            seq = self._seq
        await self._stored(seq)

    async def _stored(self, seq: int) -> None:
        while (self._stored_seq < seq and self._unwritten) or self._messages:
            if self._lost():
                raise LeaseLost(f"run {self._run_id}: lease lost")
            if self._write_error is not None:
                raise EventStoreFailed("the run's events could not be stored") from self._write_error
            await self._cancel_delay()  # wanted now: no batching wait
            self._start_writer(delay=False)
            await self._wait_for_writer()

    def _start_writer(self, *, delay: bool = True) -> None:
        if self._writer is None or self._writer.done():
            wait = self._write_delay if delay else 0.0
            self._delaying = wait > 0  # set now: a writer cancelled before it starts wrote nothing either
            self._writer = asyncio.create_task(self._write_unwritten(wait))

    async def _cancel_delay(self) -> None:
        """Ends a writer that is still waiting out its batching delay (it has written nothing)."""
        if self._writer is not None and self._delaying:
            self._writer.cancel()
            await asyncio.wait([self._writer])
            self._delaying = False

    async def _wait_for_writer(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])  # never raises: the writer records its own failure

    async def _write_unwritten(self, delay: float = 0.0) -> None:
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                # Cancelled by _cancel_delay (the events go another way) or with the run's task;
                # either way nothing was written and the events stay queued.
                return
            finally:
                self._delaying = False
        lease = self._lease
        while (self._unwritten or self._messages) and self._write_error is None and not self._lost():
            batch = self._unwritten[:]  # emit only appends; only this task removes from the front
            messages = self._messages[:]  # taken with the events: a message precedes its events
            phase, self._phase = self._phase, None
            delay, deadline = 0.05, asyncio.get_running_loop().time() + self._write_retry_seconds
            queue_waits = QUEUE_WAITS
            while True:
                try:
                    await self._repo.append_events(
                        self._run_id, batch, epoch=lease.epoch if lease else None, phase=phase, messages=messages
                    )
                    break
                except LeaseLost:
                    assert lease is not None
                    lease.mark_lost()
                    return
                except Exception as exc:
                    if queue_waits > 0 and is_pool_timeout(exc) and not self._lost():
                        queue_waits -= 1  # every connection stayed busy: wait in line again
                        logger.warning("storing durable events waited for a pooled connection; waiting again")
                        continue
                    if asyncio.get_running_loop().time() + delay > deadline or self._lost():
                        logger.exception("storing durable events of the run failed")
                        self._write_error = exc
                        return
                    logger.warning("storing durable events failed, retrying in %.2fs: %r", delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            del self._unwritten[: len(batch)]
            del self._messages[: len(messages)]
            if batch:
                self._stored_seq = batch[-1].seq
