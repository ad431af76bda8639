"""The thread stream's generator against the in-memory event stream and a fake runner: how it
learns of new runs (the doorbell, the end of the run it follows, the keep-alive safety net)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.gateway.errors import ApiError
from agentry.gateway.thread_stream import parse_cursor, thread_events, thread_frame
from agentry.servicekit.eventstream import MemoryEventStream, thread_log_id

THREAD = "00000000-0000-0000-0000-0000000000aa"
KEEPALIVE = 0.2


class Unavailable(grpc.aio.AioRpcError):
    def __init__(self) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


class FakeRunner:
    """The runner's thread and run bookkeeping: placed runs, their statuses, failures on demand."""

    def __init__(self) -> None:
        self.runs: list[pb.ThreadRun] = []
        self.fail_lists = 0
        self.lists = 0

    def place(self, run_id: str, status: str = "queued") -> pb.ThreadRun:
        placed = pb.ThreadRun(
            thread_seq=len(self.runs) + 1, run=pb.Run(agent_run_id=run_id, thread_id=THREAD, status=status)
        )
        self.runs.append(placed)
        return placed

    async def ListThreadRuns(self, request: pb.ListThreadRunsRequest) -> pb.ListThreadRunsResponse:
        self.lists += 1
        if self.fail_lists:
            self.fail_lists -= 1
            raise Unavailable()
        return pb.ListThreadRunsResponse(runs=[r for r in self.runs if r.thread_seq > request.after_thread_seq])

    async def GetRun(self, request: pb.GetRunRequest) -> pb.Run:
        return next(r.run for r in self.runs if r.run.agent_run_id == request.agent_run_id)

    async def ListRunEvents(self, request: pb.ListRunEventsRequest) -> pb.ListRunEventsResponse:
        return pb.ListRunEventsResponse()


async def emit(events: MemoryEventStream, run_id: str, seq: int, kind: str = "text_delta") -> None:
    await events.append(run_id, seq, b'{"seq":%d,"type":"%s"}' % (seq, kind.encode()), terminal=kind == "run_finished")


class Reader:
    def __init__(
        self, runner: FakeRunner, events: MemoryEventStream, *, resume=None, runs=None, keepalive: float = KEEPALIVE
    ) -> None:
        self.keepalive = keepalive
        self.frames: list[bytes] = []
        after = resume[0] - 1 if resume else 0
        # What the route listed before the stream began.
        runs = [r for r in runner.runs if r.thread_seq > after] if runs is None else runs
        self.task = asyncio.create_task(self._read(runner, events, resume, after, runs))

    async def _read(self, runner, events, resume, after, runs) -> None:
        async for chunk in thread_events(
            thread_id=THREAD,
            account_id="a",
            runs=runs,
            listed_after=after,
            resume=resume,
            events=events,
            runner=runner,
            keepalive_seconds=self.keepalive,
        ):
            self.frames.append(chunk)

    def ids(self) -> list[str]:
        return [f.split(b"\n")[0][4:].decode() for f in self.frames if f.startswith(b"id: ")]

    async def until(self, count: int, timeout: float = 3.0) -> list[str]:
        async with asyncio.timeout(timeout):
            while len(self.ids()) < count:
                await asyncio.sleep(0.01)
        return self.ids()

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def events():
    stream = MemoryEventStream()
    yield stream
    await stream.close()


async def test_frames_splice_the_run_id_into_the_event() -> None:
    assert (
        thread_frame(3, 7, "r-1", b'{"seq":7,"type":"x"}') == b'id: 3.7\ndata: {"run_id":"r-1","seq":7,"type":"x"}\n\n'
    )
    assert parse_cursor(" 3.7 ") == (3, 7)
    for bad in ("3", "3.", ".7", "0.7", "3.7.1", "-3.7", "3.+7", "3.\u00b2"):
        with pytest.raises(ApiError):
            parse_cursor(bad)


async def test_an_idle_stream_is_woken_by_the_doorbell_and_follows_runs_in_order(events) -> None:
    runner = FakeRunner()
    reader = Reader(runner, events, keepalive=60)  # so only the doorbell can wake it in time
    try:
        await asyncio.sleep(0.05)
        first = runner.place("r-1")
        await events.append(thread_log_id(THREAD), 1, b"{}", terminal=True)
        await emit(events, "r-1", 1)
        assert await reader.until(1) == ["1.1"]
        second = runner.place("r-2")  # promoted as r-1 ends: no doorbell
        await emit(events, "r-2", 1)
        await emit(events, "r-1", 2, "run_finished")
        first.run.status = second.run.status = "completed"
        await emit(events, "r-2", 2, "run_finished")
        assert await reader.until(4) == ["1.1", "1.2", "2.1", "2.2"]
        assert reader.task.done() is False  # a thread may get more runs
    finally:
        await reader.close()


async def test_a_run_placed_without_a_doorbell_is_found_at_the_next_keepalive(events) -> None:
    runner = FakeRunner()
    reader = Reader(runner, events)
    try:
        runner.place("r-1", "completed")  # e.g. promoted by the sweeper while nobody followed a run
        await emit(events, "r-1", 1, "run_finished")
        assert await reader.until(1, timeout=KEEPALIVE * 3) == ["1.1"]
    finally:
        await reader.close()


async def test_a_doorbell_for_a_run_not_yet_listed_does_not_spin(events) -> None:
    runner = FakeRunner()
    reader = Reader(runner, events)
    try:
        await events.append(thread_log_id(THREAD), 5, b"{}", terminal=True)
        await asyncio.sleep(KEEPALIVE * 2.5)
        assert runner.lists <= 4  # once on the ring, then once per keep-alive period
        assert b": keep-alive\n\n" in reader.frames
    finally:
        await reader.close()


async def test_the_runner_away_delays_the_next_run_but_loses_nothing(events) -> None:
    runner = FakeRunner()
    first = runner.place("r-1", "completed")
    await emit(events, "r-1", 1, "run_finished")
    runner.place("r-2", "completed")  # placed as r-1 ended, but the runner cannot be asked at first
    await emit(events, "r-2", 1, "run_finished")
    runner.fail_lists = 2
    reader = Reader(runner, events, runs=[first])
    try:
        assert await reader.until(2, timeout=KEEPALIVE * 5) == ["1.1", "2.1"]
        assert runner.lists >= 3
    finally:
        await reader.close()


async def test_resume_skips_exactly_what_the_client_has(events) -> None:
    runner = FakeRunner()
    for run_id in ("r-1", "r-2"):
        runner.place(run_id, "completed")
        for seq in (1, 2):
            await emit(events, run_id, seq)
        await emit(events, run_id, 3, "run_finished")
    reader = Reader(runner, events, resume=(1, 2))
    try:
        assert await reader.until(4) == ["1.3", "2.1", "2.2", "2.3"]
    finally:
        await reader.close()
    reader = Reader(runner, events, resume=(1, 3))
    try:
        assert await reader.until(3) == ["2.1", "2.2", "2.3"]
    finally:
        await reader.close()


def test_an_event_that_names_its_run_already_gets_no_second_run_id() -> None:
    started = b'{"seq":1,"run_id":"r-1","thread_id":"t","model":"m","type":"run_started"}'
    assert thread_frame(2, 1, "r-1", started) == b"id: 2.1\ndata: " + started + b"\n\n"
