"""Server-sent events of one run: live from the event stream, older events from the database.

Events arrive already encoded (the runner encodes each once); this module only frames them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.servicekit.eventstream import EventStream, StreamEntry

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
KEEPALIVE = b": keep-alive\n\n"
READ_COUNT = 500  # the event stream's default batch
END_OF_BATCH = StreamEntry(seq=0, data=b"", terminal=False)  # run_entries(batches=True): flush here


def frame(seq: int, data: bytes) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (seq, data)


async def run_events(
    *,
    run: pb.Run,
    account_id: str,
    after_seq: int,
    events: EventStream,
    runner,
    keepalive_seconds: float,
    first: list[StreamEntry] | None = None,
) -> AsyncIterator[bytes]:
    """Yields SSE frames for every event after `after_seq`, then ends after the terminal one.
    The events of one live read leave as one chunk (one send through the ASGI stack, one write
    to the socket), however many there are."""
    from .metrics import sse_events_sent

    sent = sse_events_sent().labels("run")
    yield b"retry: 1000\n\n"
    batch: list[bytes] = []
    async for entry in run_entries(
        run=run,
        account_id=account_id,
        after_seq=after_seq,
        events=events,
        runner=runner,
        keepalive_seconds=keepalive_seconds,
        batches=True,
        first=first,
    ):
        if entry is None:
            yield KEEPALIVE
        elif entry is END_OF_BATCH:
            if batch:
                sent.inc(len(batch))
                yield b"".join(batch)
                batch = []
        else:
            batch.append(frame(entry.seq, entry.data))
            if len(batch) >= 64:  # a replay from the database has no read boundaries: bound the chunk
                sent.inc(len(batch))
                yield b"".join(batch)
                batch = []
    if batch:
        sent.inc(len(batch))
        yield b"".join(batch)


async def run_entries(
    *,
    run: pb.Run,
    account_id: str,
    after_seq: int,
    events: EventStream,
    runner,
    keepalive_seconds: float,
    batches: bool = False,
    first: list[StreamEntry] | None = None,
) -> AsyncIterator[StreamEntry | None]:
    """Every event of the run after `after_seq`, in order, ending after the terminal one; None
    each time `keepalive_seconds` passed without one (the caller sends a keep-alive). With
    `batches`, END_OF_BATCH follows the entries of each read (a place to flush).

    One read per batch: the first read answers at once with what the run has; later ones wait
    for the next append (through the event stream's multiplexer, holding no connection). A
    batch that starts past `last + 1` means the live buffer was trimmed (or lost) under this
    reader: the durable events from the database fill the gap first. `first`, when given, is
    what an immediate read after `after_seq` answered (the caller's, made before the response
    started): it stands for the first read."""
    last = after_seq
    status = run.status
    wait = False
    while True:
        ended = status in TERMINAL_STATUSES
        if first is not None:
            entries, first = first, None
        else:
            entries = await events.read(
                run.agent_run_id, last, block_ms=int(keepalive_seconds * 1000) if wait and not ended else 0
            )
        if entries:
            if entries[0].seq > last + 1:
                async for entry in _replay(runner, run, account_id, last, before=entries[0].seq):
                    last = entry.seq
                    yield entry
                    if entry.terminal:
                        return
            for entry in entries:
                if entry.seq <= last:
                    continue
                yield entry
                last = entry.seq
                if entry.terminal:
                    return
            if batches:
                yield END_OF_BATCH
            wait = len(entries) < READ_COUNT  # a full batch: more may be there already
            continue
        if ended:
            # Nothing live after `last` and the run is over (its buffer may have expired): the
            # database holds the rest of what matters, or nothing if the client saw the end.
            async for entry in _replay(runner, run, account_id, last, before=None):
                yield entry
                if entry.terminal:
                    return
            # Resumed past the run's end (a Last-Event-ID the run never reached): the terminal
            # event still closes the stream, under its own (lower) id.
            if last > 0 and (terminal := await terminal_event(runner, run, account_id, unless_seq=last)):
                yield terminal
            return
        if not wait:
            wait = True  # nothing yet: wait for the next append
            continue
        yield None
        try:
            status = (
                await runner.GetRun(pb.GetRunRequest(account_id=account_id, agent_run_id=run.agent_run_id))
            ).status
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.NOT_FOUND:
                return  # the run is gone (its thread was deleted): nothing more will come
            logger.warning("could not refresh run status; stream continues")


async def terminal_event(runner, run: pb.Run, account_id: str, *, unless_seq: int) -> StreamEntry | None:
    """The finished run's terminal event, or None when it is the event numbered `unless_seq` (the
    client has it) or the run has none. One call when the client stands on it; otherwise the
    durable events are read through (a Last-Event-ID past the end is rare)."""
    at = await runner.ListRunEvents(
        pb.ListRunEventsRequest(account_id=account_id, agent_run_id=run.agent_run_id, after_seq=unless_seq - 1)
    )
    if at.events and at.events[0].seq == unless_seq and at.events[0].terminal:
        return None
    async for entry in _replay(runner, run, account_id, 0, before=None):
        if entry.terminal:
            return None if entry.seq == unless_seq else entry
    return None


async def _replay(runner, run: pb.Run, account_id: str, after: int, *, before: int | None):
    """Yields the persisted events after `after` (and before `before`)."""
    while True:
        reply = await runner.ListRunEvents(
            pb.ListRunEventsRequest(account_id=account_id, agent_run_id=run.agent_run_id, after_seq=after)
        )
        if not reply.events:
            return
        for event in reply.events:
            if before is not None and event.seq >= before:
                return
            yield StreamEntry(seq=event.seq, data=event.data, terminal=event.terminal)
            after = event.seq
            if event.terminal:
                return
