"""Fixtures: a run context wired to the in-memory adapters that ship with agentpress."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from agentpress import (
    MemoryMessageStore,
    MemorySandbox,
    Message,
    RecordingEventSink,
    RecordingUsageSink,
    RunContext,
    ToolResultMessage,
    UserMessage,
)
from agentpress.messages import AssistantMessage


@dataclass
class Harness:
    ctx: RunContext
    store: MemoryMessageStore
    events: RecordingEventSink
    sandbox: MemorySandbox
    usage: RecordingUsageSink

    def types(self) -> list[str]:
        return [e.type for e in self.events.events]

    def assert_calls_paired(self) -> None:
        """Every stored call has exactly one result, stored after the call."""
        seen_calls: set[str] = set()
        results: dict[str, int] = {}
        for m in self.store.messages:
            if isinstance(m, AssistantMessage):
                seen_calls.update(c.call_id for c in m.tool_calls)
            elif isinstance(m, ToolResultMessage):
                assert m.call_id in seen_calls, f"result {m.call_id} stored before its call"
                results[m.call_id] = results.get(m.call_id, 0) + 1
        assert results == dict.fromkeys(seen_calls, 1)

    def text(self) -> str:
        return "".join(e.text for e in self.events.of_type("text_delta"))  # type: ignore[attr-defined]


def make_harness(
    history: list[Message] | None = None,
    *,
    sandbox: MemorySandbox | None = None,
    budget_usd: float | None = None,
    prompt: str = "hello",
) -> Harness:
    store = MemoryMessageStore(history if history is not None else [UserMessage(text=prompt)])
    events = RecordingEventSink()
    usage = RecordingUsageSink(budget_usd)
    sb = sandbox or MemorySandbox()
    ctx = RunContext(
        run_id="r1", thread_id="t1", messages=store, sandbox=sb, usage=usage, events=events, cancel=asyncio.Event()
    )
    return Harness(ctx, store, events, sb, usage)


@pytest.fixture
def harness() -> Harness:
    return make_harness()


@pytest.fixture(name="make_harness")
def make_harness_fixture():
    """Test modules cannot import conftest under --import-mode=importlib; they get the factory."""
    return make_harness
