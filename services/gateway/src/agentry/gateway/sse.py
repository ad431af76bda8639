"""Server-sent events of one run: live from the event stream, older events from the database.

Events arrive already encoded (the runner encodes each once); this module only frames them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.servicekit.eventstream import EventStream

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
KEEPALIVE = b": keep-alive\n\n"


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
) -> AsyncIterator[bytes]:
    """Yields SSE frames for every event after `after_seq`, then ends after the terminal one."""
    last = after_seq
    status = run.status
    yield b"retry: 1000\n\n"
    while True:
        first = await events.first_seq(run.agent_run_id)
        live_is_missing = first is None and status in TERMINAL_STATUSES
        trimmed = first is not None and first > last + 1
        if live_is_missing or trimmed:
            # The live buffer no longer holds what this client needs: replay the durable events.
            reply = await runner.ListRunEvents(pb.ListRunEventsRequest(
                account_id=account_id, agent_run_id=run.agent_run_id, after_seq=last))
            for event in reply.events:
                if first is not None and event.seq >= first:
                    break
                yield frame(event.seq, event.data)
                last = event.seq
                if event.terminal:
                    return
            if live_is_missing:
                logger.warning("run %s ended without a stored terminal event", run.agent_run_id)
                return
        entries = await events.read(run.agent_run_id, last, block_ms=int(keepalive_seconds * 1000))
        if not entries:
            yield KEEPALIVE
            try:
                status = (await runner.GetRun(pb.GetRunRequest(
                    account_id=account_id, agent_run_id=run.agent_run_id))).status
            except grpc.aio.AioRpcError:
                logger.warning("could not refresh run status; stream continues")
            continue
        for entry in entries:
            yield frame(entry.seq, entry.data)
            last = entry.seq
            if entry.terminal:
                return
