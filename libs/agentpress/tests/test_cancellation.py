"""Cancelling a run: during the model stream, during a long tool, and by cancelling the task."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentpress import (
    Agent,
    AssistantMessage,
    ContextConfig,
    ExecResult,
    FinishReason,
    MemorySandbox,
    RecordingEventSink,
    ScriptedCall,
    ScriptedModel,
    ScriptedReply,
    ToolExecution,
    ToolResultMessage,
    default_tools,
)


class WatchingSink(RecordingEventSink):
    """Sets `seen` once an event of the watched type arrives (a condition to wait on, not a sleep)."""

    def __init__(self, watched: str) -> None:
        super().__init__()
        self.watched = watched
        self.seen = asyncio.Event()

    async def emit(self, event) -> None:
        await super().emit(event)
        if event.type == self.watched:
            self.seen.set()


def _agent(model, **kw) -> Agent:
    return Agent(model=model, tools=default_tools(), context=ContextConfig(context_window=100_000), **kw)


async def test_cancel_during_model_stream(make_harness):
    h = make_harness()
    h.ctx.events = sink = WatchingSink("text_delta")
    model = ScriptedModel([ScriptedReply(text="x" * 10_000)], chunk_size=5, delay=0.05)
    task = asyncio.create_task(_agent(model).run(h.ctx))
    await sink.seen.wait()
    started = time.monotonic()
    h.ctx.cancel.set()
    result = await asyncio.wait_for(task, 1.0)
    assert time.monotonic() - started < 1.0
    assert result.reason is FinishReason.CANCELLED
    assert sink.events[-1].type == "run_finished" and sink.events[-1].reason == "cancelled"
    partial = h.store.messages[-1]
    assert isinstance(partial, AssistantMessage) and partial.text and set(partial.text) == {"x"}
    assert partial.finish_reason == "interrupted"


@pytest.mark.parametrize("when", ["on_stream", "after_turn"])
async def test_cancel_during_long_tool(make_harness, when):
    running = asyncio.Event()

    async def slow(command: str, timeout: float) -> ExecResult:
        if command == "sleep 60":
            running.set()
            await asyncio.sleep(60)
        return ExecResult(exit_code=0, output="fast")

    h = make_harness(sandbox=MemorySandbox(slow))
    model = ScriptedModel(
        [
            ScriptedReply(
                text="Running.",
                tool_calls=[
                    ScriptedCall("run_command", {"command": "echo hi"}),
                    ScriptedCall("run_command", {"command": "sleep 60"}),
                    ScriptedCall("create_file", {"path": "never.txt", "content": ""}),
                ],
            )
        ]
    )
    agent = _agent(model, tool_execution=ToolExecution(when))  # type: ignore[arg-type]
    task = asyncio.create_task(agent.run(h.ctx))
    await running.wait()
    started = time.monotonic()
    h.ctx.cancel.set()
    result = await asyncio.wait_for(task, 1.0)
    assert time.monotonic() - started < 1.0
    assert result.reason is FinishReason.CANCELLED
    h.assert_calls_paired()
    results = [m for m in h.store.messages if isinstance(m, ToolResultMessage)]
    assert [(r.output, r.error) for r in results] == [
        ("[exit code 0]\nfast", None),
        ("cancelled before it finished", "cancelled"),
        ("cancelled before it finished", "cancelled"),
    ]
    assert "/workspace/never.txt" not in h.sandbox.files


async def test_cancel_before_start(make_harness):
    h = make_harness()
    h.ctx.cancel.set()
    result = await _agent(ScriptedModel(["never"])).run(h.ctx)
    assert result.reason is FinishReason.CANCELLED
    assert h.types() == ["run_started", "run_finished"]


async def test_cancelling_the_calling_task_still_finishes_the_run(make_harness):
    h = make_harness()
    h.ctx.events = sink = WatchingSink("text_delta")
    model = ScriptedModel([ScriptedReply(text="y" * 10_000)], chunk_size=5, delay=0.05)
    task = asyncio.create_task(_agent(model).run(h.ctx))
    await sink.seen.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1.0)
    assert [e.type for e in sink.events].count("run_finished") == 1
    assert sink.events[-1].type == "run_finished" and sink.events[-1].reason == "cancelled"
    assert isinstance(h.store.messages[-1], AssistantMessage)
