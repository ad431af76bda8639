"""Server-sent events of every run of a thread: the runs one after the other, in the order they
held the thread (their `thread_seq`, 1, 2, 3, ...), live as they happen.

A thread's runs never overlap in that order (one run holds a thread at a time; a run that waited
and ended without holding it is placed when it ended), so following them one after the other
sees every event as it happens. Each run's events come exactly as on its own stream (sse.py: live
from the event stream, older ones from the database). When the run being followed ends, the
runner is asked for the runs placed after it (a run that got the thread from it was placed in
the same transaction that ended it). With no run to follow, the stream waits on the thread's
doorbell (`thread_log_id`), which the runner rings when a run gets the thread as it is created,
and asks again each time it rings (and, as a safety net, at every keep-alive).

Frames: `id: <thread_seq>.<seq>` (the run's place on the thread, the event's number in the run)
and `data:` the run's event with `"run_id":"..."` spliced in first. `Last-Event-ID` resumes
exactly after that event, across runs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator

import grpc

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.servicekit.eventstream import EventStream, thread_log_id

from .errors import ApiError
from .sse import KEEPALIVE, run_entries

logger = logging.getLogger(__name__)

_MAX_INT64 = 2**63 - 1


def parse_cursor(value: str) -> tuple[int, int]:
    """`<thread_seq>.<seq>` -> (thread_seq, seq); 422 invalid_last_event_id otherwise."""
    place, dot, seq = value.strip().partition(".")
    if dot and _number(place) and _number(seq) and int(place) >= 1:
        return int(place), int(seq)
    raise ApiError(422, "invalid_last_event_id", "Last-Event-ID must be a thread stream event id: <thread_seq>.<seq>")


def _number(value: str) -> bool:
    # str.isdigit() also accepts "²" and other digits int() refuses; the length check comes first.
    return value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= _MAX_INT64


def thread_frame(thread_seq: int, seq: int, run_id: str, data: bytes) -> bytes:
    """The run's event with its run id spliced in (the event is a JSON object; not re-encoded).
    An event that carries its run id already (run_started) is left as it is: no duplicate key."""
    if b'"run_id":' in data[:200] and data.startswith(b'{"seq":') and b'"type":"run_started"' in data[:200]:
        return b"id: %d.%d\ndata: %s\n\n" % (thread_seq, seq, data)
    return b'id: %d.%d\ndata: {"run_id":"%s",%s\n\n' % (thread_seq, seq, run_id.encode(), data[1:])


async def list_thread_runs(runner, account_id: str, thread_id: str, after: int) -> list[pb.ThreadRun]:
    reply = await runner.ListThreadRuns(
        pb.ListThreadRunsRequest(account_id=account_id, thread_id=thread_id, after_thread_seq=after)
    )
    return list(reply.runs)


async def thread_events(
    *,
    thread_id: str,
    account_id: str,
    runs: list[pb.ThreadRun],
    listed_after: int,
    resume: tuple[int, int] | None,
    events: EventStream,
    runner,
    keepalive_seconds: float,
) -> AsyncIterator[bytes]:
    """Yields SSE frames of the thread's runs from `runs` (the runs placed after `listed_after`,
    as the route listed them) on, never ending: a thread may get more runs. `resume` (thread_seq,
    seq): the first of `runs` is that run, and its events up to seq are skipped."""
    yield b"retry: 1000\n\n"
    pending = deque(runs)
    known = runs[-1].thread_seq if runs else listed_after  # the last place listed
    rung = known  # the last doorbell seen
    while True:
        while pending:
            current = pending.popleft()
            after = resume[1] if resume is not None and current.thread_seq == resume[0] else 0
            async for entry in run_entries(
                run=current.run,
                account_id=account_id,
                after_seq=after,
                events=events,
                runner=runner,
                keepalive_seconds=keepalive_seconds,
            ):
                if entry is None:
                    yield KEEPALIVE
                else:
                    yield thread_frame(current.thread_seq, entry.seq, current.run.agent_run_id, entry.data)
            if not pending:
                # The run that got the thread from this one was placed as this one ended.
                more = await _list(runner, account_id, thread_id, known)
                pending.extend(more)
                known = more[-1].thread_seq if more else known
        # Nothing to follow: wait for the doorbell (woken by the runner's write, not by polling).
        doorbell = await events.read(thread_log_id(thread_id), max(known, rung), block_ms=int(keepalive_seconds * 1000))
        if doorbell:
            rung = max(rung, doorbell[-1].seq)
        # Also after a quiet keep-alive period: a run placed without a doorbell (one that got the
        # thread from the sweeper, or whose doorbell was lost) is found within one period.
        more = await _list(runner, account_id, thread_id, known)
        pending.extend(more)
        known = more[-1].thread_seq if more else known
        if not more and not doorbell:
            yield KEEPALIVE


async def _list(runner, account_id: str, thread_id: str, after: int) -> list[pb.ThreadRun]:
    try:
        return await list_thread_runs(runner, account_id, thread_id, after)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            raise  # the thread is gone: end the stream
        logger.warning("could not list the thread's runs (%s); the stream retries", exc.code().name)
        return []
