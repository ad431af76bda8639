"""Delta coalescing in RunEventSink: consecutive deltas merge into one event before they are
numbered, so the stream stays dense and ordered, and resuming from any seq yields the rest."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import orjson
import pytest

from agentpress import (
    MessageCompleted,
    PhaseChanged,
    ReasoningDelta,
    RunFinished,
    RunStarted,
    TextDelta,
    ToolCallDelta,
    ToolCallStarted,
    UsageReported,
)
from agentpress.messages import AssistantMessage
from agentry.runner.domain import DURABLE_EVENT_TYPES, StoredEvent
from agentry.runner.sinks import RunEventSink
from agentry.servicekit.eventstream import EventStreamUnavailable, MemoryEventStream, StreamEntry

WAIT = 10.0
NEVER = float("inf")  # a window that never runs out: only events and the end write deltas


class Repo:
    """The database side of a sink: what it stores, with the run's end."""

    def __init__(self) -> None:
        self.stored: list[StoredEvent] = []
        self.finished: list[str] = []

    async def append_events(
        self, run_id: str, events: list[StoredEvent], *, epoch=None, phase=None, messages=()
    ) -> None:
        self.stored.extend(events)

    async def finish_run(
        self, run_id: str, *, from_, to, error, finish_reason, events, epoch=None, messages=()
    ) -> bool:
        self.finished.append(finish_reason)
        self.stored.extend(events)
        return True


def sink_for(window: float) -> tuple[RunEventSink, MemoryEventStream, Repo]:
    repo, events = Repo(), MemoryEventStream()
    return RunEventSink("r", repo, events, last_seq=0, delta_coalesce=window), events, repo  # type: ignore[arg-type]


async def stream_of(events: MemoryEventStream, after: int = 0) -> list[StreamEntry]:
    return await events.read("r", after, count=100_000)


def decoded(entries: list[StreamEntry]) -> list[dict]:
    return [orjson.loads(e.data) for e in entries]


def merged(emitted: list) -> list[dict]:
    """What a coalesced stream may carry at most: runs of deltas of one kind merged into one."""
    out: list[dict] = []
    for event in emitted:
        item = event.to_dict()
        last = out[-1] if out else None
        if (
            last is not None
            and item["type"] in ("text_delta", "reasoning_delta", "tool_call_delta")
            and last["type"] == item["type"]
            and last.get("call_id") == item.get("call_id")
        ):
            key = "arguments_delta" if item["type"] == "tool_call_delta" else "text"
            last[key] += item[key]
        else:
            out.append(item)
    return out


def merged_stream(events: list[dict]) -> list[dict]:
    """The stream without seqs, adjacent deltas of one kind merged (a delta written at once and
    the ones held after it are two events of one run)."""
    return merged([_Plain(e) for e in events])


class _Plain:
    def __init__(self, data: dict) -> None:
        self.data = {k: v for k, v in data.items() if k != "seq"}

    def to_dict(self) -> dict:
        return dict(self.data)


async def test_deltas_held_in_the_window_merge_into_one_event_and_others_keep_their_place() -> None:
    sink, events, repo = sink_for(NEVER)
    await sink.emit(RunStarted(run_id="r", thread_id="t", model="m"))
    await sink.emit(PhaseChanged(phase="calling_model", at=1.0))
    for text in ("Hel", "lo", ", ", "world"):
        await sink.emit(TextDelta(text=text))
    for text in ("think", "ing"):
        await sink.emit(ReasoningDelta(text=text))
    await sink.emit(TextDelta(text="!"))
    await sink.emit(ToolCallStarted(call_id="c1", name="run_command"))
    for part in ('{"comm', 'and": ', '"ls"}'):
        await sink.emit(ToolCallDelta(call_id="c1", arguments_delta=part))
    await sink.emit(ToolCallDelta(call_id="c2", arguments_delta="{}"))  # another call: not merged with c1's
    await sink.emit(UsageReported(model="m", prompt_tokens=1, completion_tokens=2, cost_usd=0.0))
    await sink.emit(RunFinished(reason="completed"))

    stream = await stream_of(events)
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))  # dense, gapless
    assert [e.terminal for e in stream] == [False] * (len(stream) - 1) + [True]
    assert [{k: v for k, v in e.items() if k != "seq"} for e in decoded(stream)] == [
        {"type": "run_started", "run_id": "r", "thread_id": "t", "model": "m"},
        {"type": "phase", "phase": "calling_model", "tool": None, "call": None, "at": 1.0},
        {"type": "text_delta", "text": "Hel"},  # the first delta of the reply goes at once
        {"type": "text_delta", "text": "lo, world"},  # the rest of the window: one event
        {"type": "reasoning_delta", "text": "thinking"},
        {"type": "text_delta", "text": "!"},
        {"type": "tool_call_started", "call_id": "c1", "name": "run_command"},
        {"type": "tool_call_delta", "call_id": "c1", "arguments_delta": '{"comm'},  # first after another event
        {"type": "tool_call_delta", "call_id": "c1", "arguments_delta": 'and": "ls"}'},
        {"type": "tool_call_delta", "call_id": "c2", "arguments_delta": "{}"},
        {"type": "usage", "model": "m", "prompt_tokens": 1, "completion_tokens": 2, "cost_usd": 0.0},
        {"type": "run_finished", "reason": "completed", "error": None},
    ]
    # Durable events are stored with the numbers the stream gave them, the very same bytes.
    durable = [StoredEvent(e.seq, e.data, e.terminal) for e in stream if decoded([e])[0]["type"] in DURABLE_EVENT_TYPES]
    assert repo.stored == durable


async def test_held_deltas_are_written_when_the_window_ends_without_another_event() -> None:
    sink, events, _ = sink_for(0.01)
    await sink.emit(TextDelta(text="a"))
    await sink.emit(TextDelta(text="b"))
    await sink.emit(TextDelta(text="c"))
    async with asyncio.timeout(WAIT):
        while len(await stream_of(events)) < 2:
            await asyncio.sleep(0.005)
    assert [(e["seq"], e["text"]) for e in decoded(await stream_of(events))] == [(1, "a"), (2, "bc")]
    assert sink.last_seq == 2


@pytest.mark.parametrize("reason", ["completed", "cancelled"])
async def test_the_end_of_a_run_writes_what_is_held_first(reason: str) -> None:
    sink, events, repo = sink_for(NEVER)
    await sink.emit(TextDelta(text="one"))
    await sink.emit(TextDelta(text=" two"))
    await sink.emit(TextDelta(text=" three"))
    await sink.emit(RunFinished(reason=reason))
    assert [(e["seq"], e["type"], e.get("text")) for e in decoded(await stream_of(events))] == [
        (1, "text_delta", "one"),
        (2, "text_delta", " two three"),
        (3, "run_finished", None),
    ]
    assert repo.finished == [reason]


async def test_flush_writes_what_is_held() -> None:
    sink, events, _ = sink_for(NEVER)
    await sink.emit(TextDelta(text="x"))
    await sink.emit(TextDelta(text="y"))
    await sink.flush()
    assert [e["text"] for e in decoded(await stream_of(events))] == ["x", "y"]


class FlakyStream(MemoryEventStream):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def append(self, run_id: str, seq: int, data: bytes, *, terminal: bool = False) -> None:
        if self.down:
            raise EventStreamUnavailable("redis is away")
        await super().append(run_id, seq, data, terminal=terminal)


async def test_held_deltas_that_cannot_be_written_fail_the_run_visibly() -> None:
    repo, events = Repo(), FlakyStream()
    sink = RunEventSink("r", repo, events, last_seq=0, delta_coalesce=0.01)  # type: ignore[arg-type]
    await sink.emit(TextDelta(text="a"))
    events.down = True
    await sink.emit(TextDelta(text="b"))  # held; its write (by the timer) fails
    async with asyncio.timeout(WAIT):
        while sink.last_seq < 2:
            await asyncio.sleep(0.005)
    with pytest.raises(EventStreamUnavailable):
        await sink.emit(TextDelta(text="c"))  # the run learns it at its next event
    events.down = False
    await sink.emit(RunFinished(reason="completed"))
    assert repo.finished == ["error"]
    body = decoded(await stream_of(events))
    assert body[-1] == {
        "seq": 3,
        "type": "run_finished",
        "reason": "error",
        "error": "the run's events could not be streamed",
    }


class TimedStream(MemoryEventStream):
    """Records when each append came: (run_id, seq, `clock()`), the loop's time by default."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.appended: list[tuple[str, int, float]] = []
        self._clock = clock or (lambda: asyncio.get_running_loop().time())

    async def append(self, run_id: str, seq: int, data: bytes, *, terminal: bool = False) -> None:
        self.appended.append((run_id, seq, self._clock()))
        await super().append(run_id, seq, data, terminal=terminal)


async def just_after_a_tick(window: float) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep((loop.time() // window + 1) * window - loop.time() + 0.005)


async def test_the_deltas_held_by_every_run_are_written_together_at_the_next_tick() -> None:
    """Runs that hold deltas from different moments write them at the same tick of the shared
    clock (so the worker's appends leave in one batch), at most one window after each was held."""
    window = 0.2
    loop = asyncio.get_running_loop()
    stream, repo = TimedStream(), Repo()
    sinks = [RunEventSink(f"r{i}", repo, stream, last_seq=0, delta_coalesce=window) for i in range(3)]  # type: ignore[arg-type]
    await just_after_a_tick(window)
    held_at = []
    for sink in sinks:
        await sink.emit(TextDelta(text="first"))  # at once
        await sink.emit(TextDelta(text=" held"))  # held until the next tick
        held_at.append(loop.time())
        await asyncio.sleep(0.02)  # the next run holds its delta 20 ms later
    async with asyncio.timeout(WAIT):
        while len(stream.appended) < 6:
            await asyncio.sleep(0.005)
    written = [t for run_id, seq, t in stream.appended if seq == 2]
    assert len(written) == 3
    tick = (held_at[0] // window + 1) * window
    assert all(tick - 0.002 <= t for t in written)  # not before the tick (the loop's clock is in ms)
    assert max(written) - min(written) < 0.01  # together, in one loop iteration
    assert all(
        t - h <= window + 0.05 for t, h in zip(written, held_at, strict=True)
    )  # never held past the window (+ slack)
    for sink in sinks:
        assert sink.last_seq == 2


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_on_either_loop_the_held_deltas_of_hundreds_of_runs_are_written_in_one_loop_iteration(loop_kind: str) -> None:
    """One timer per tick calls every sink due then: none is left to a later iteration (uvloop
    rounds each timer's delay to whole milliseconds from its own reading of the clock, which
    split per-sink timers of one tick over two iterations now and then)."""
    import uvloop

    async def main() -> set[float]:
        iteration = 0

        def count() -> None:
            nonlocal iteration
            iteration += 1
            loop.call_soon(count)

        loop = asyncio.get_running_loop()
        loop.call_soon(count)
        stream, repo = TimedStream(clock=lambda: iteration), Repo()
        window = 0.2
        sinks = [RunEventSink(f"r{i}", repo, stream, last_seq=0, delta_coalesce=window) for i in range(300)]  # type: ignore[arg-type]
        await just_after_a_tick(window)
        for sink in sinks:
            await sink.emit(TextDelta(text="first"))
            await sink.emit(TextDelta(text=" held"))  # held for the same tick as every other run's
            await asyncio.sleep(0)  # the clock moves on between runs
        async with asyncio.timeout(WAIT):
            while len(written := [at for _, seq, at in stream.appended if seq == 2]) < len(sinks):
                await asyncio.sleep(0.005)
        return set(written)

    factory = uvloop.new_event_loop if loop_kind == "uvloop" else None
    for _ in range(5):
        with asyncio.Runner(loop_factory=factory) as runner:
            iterations = runner.run(main())
        # The writes start in one iteration (the tick's) and their tasks run in the next.
        assert len(iterations) == 1, iterations


async def test_with_coalescing_off_every_delta_is_an_event() -> None:
    sink, events, _ = sink_for(0.0)
    for text in ("a", "b", "c"):
        await sink.emit(TextDelta(text=text))
    assert [(e["seq"], e["text"]) for e in decoded(await stream_of(events))] == [(1, "a"), (2, "b"), (3, "c")]


def random_run(rng: random.Random) -> list:
    events: list = [RunStarted(run_id="r", thread_id="t", model="m")]
    for step in range(rng.randint(1, 4)):
        events.append(PhaseChanged(phase="calling_model", at=float(step)))
        for _ in range(rng.randint(0, 30)):
            kind = rng.random()
            word = rng.choice(["a", "bc", " ", "déf", "\n", "😀", '"q"', "\\"])
            if kind < 0.6:
                events.append(TextDelta(text=word))
            elif kind < 0.75:
                events.append(ReasoningDelta(text=word))
            elif kind < 0.85:
                events.append(ToolCallDelta(call_id=rng.choice(["c1", "c2"]), arguments_delta=word))
            elif kind < 0.92:
                events.append(ToolCallStarted(call_id="c3", name="t"))
            else:
                events.append(UsageReported(model="m", prompt_tokens=1, completion_tokens=1, cost_usd=0.0))
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        events.append(MessageCompleted(message=AssistantMessage(text=text)))
    events.append(RunFinished(reason="completed"))
    return events


@pytest.mark.parametrize("seed", range(20))
async def test_a_coalesced_stream_is_the_emitted_one_with_runs_of_deltas_merged(seed: int) -> None:
    rng = random.Random(seed)
    emitted = random_run(rng)
    # A window that never ends (only events and the end write), or one that may end between
    # emits (the loop runs the timer whenever an emit yields).
    sink, events, _ = sink_for(rng.choice([NEVER, 0.0005]))
    for event in emitted:
        await sink.emit(event)
        if rng.random() < 0.2:
            await asyncio.sleep(rng.choice([0, 0.001]))

    stream = await stream_of(events)
    body = decoded(stream)
    assert [e.seq for e in stream] == list(range(1, len(stream) + 1))
    assert [e["seq"] for e in body] == [e.seq for e in stream]
    # Nothing lost, added or reordered: merging adjacent deltas of the stream gives what merging
    # the emitted events gives; in particular every text concatenates to the model's.
    assert merged_stream(body) == merged(emitted)
    for kind, key in (("text_delta", "text"), ("reasoning_delta", "text"), ("tool_call_delta", "arguments_delta")):
        assert "".join(e[key] for e in body if e["type"] == kind) == "".join(
            e.to_dict()[key] for e in emitted if e.type == kind
        )
    assert len(stream) <= len(emitted)
    # Resuming after any seq yields exactly the remainder, byte for byte.
    for cut in range(len(stream) + 1):
        assert await stream_of(events, cut) == stream[cut:]
