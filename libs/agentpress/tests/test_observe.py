"""agentpress.observe: a run's model and tool calls reach the RunObserver, whatever the lane."""

from __future__ import annotations

import asyncio

from agentpress import (
    Agent,
    MemoryMessageStore,
    MemorySandbox,
    RecordingEventSink,
    RecordingUsageSink,
    RunContext,
    ScriptedCall,
    ScriptedModel,
    ScriptedReply,
    UserMessage,
    tool,
)
from agentpress.errors import ModelCallError
from agentpress.observe import RecordingObserver, RunObserver


@tool
def add(a: int, b: int) -> str:
    """Adds two numbers."""
    return str(a + b)


def _ctx(observer: RunObserver | None) -> RunContext:
    return RunContext(
        run_id="r1",
        thread_id="t1",
        messages=MemoryMessageStore([UserMessage(text="add 2 and 3")]),
        sandbox=MemorySandbox(),
        usage=RecordingUsageSink(),
        events=RecordingEventSink(),
        observer=observer,
    )


async def test_every_model_call_and_tool_call_is_observed():
    model = ScriptedModel(
        [
            ScriptedReply(text="adding", tool_calls=[ScriptedCall("add", {"a": 2, "b": 3})]),
            ScriptedReply(text="it is 5"),
        ],
        cost_per_token=0.001,
    )
    observer = RecordingObserver()
    result = await Agent(model, tools=[add]).run(_ctx(observer))
    assert result.reason == "completed"
    assert [c["text"] for c in observer.model_calls] == ["adding", "it is 5"]
    first = observer.model_calls[0]
    assert first["model"] == model.name and first["first_token"] is not None and first["error"] is None
    assert first["tool_calls"][0]["name"] == "add" and '"a"' in first["tool_calls"][0]["arguments"]
    assert observer.model_calls[1]["messages"][-1]["role"] == "tool"
    assert first["cost_usd"] is None or first["cost_usd"] >= 0
    assert observer.tool_calls == [
        {
            "name": "add",
            "call_id": observer.tool_calls[0]["call_id"],
            "arguments": observer.tool_calls[0]["arguments"],
            "output": "5",
            "error": None,
            "duration_ms": observer.tool_calls[0]["duration_ms"],
        }
    ]


async def test_a_failed_model_call_is_reported_as_failed_and_the_run_ends_as_without_observer():
    def broken():
        return ScriptedModel([ModelCallError("bad request: nope", kind="bad_request")])

    observer = RecordingObserver()
    result = await Agent(broken()).run(_ctx(observer))
    assert result.reason == "error"
    assert len(observer.model_calls) == 1 and isinstance(observer.model_calls[0]["error"], ModelCallError)
    plain = await Agent(broken()).run(_ctx(None))
    assert (plain.reason, plain.error) == (result.reason, result.error)


async def test_a_broken_observer_never_breaks_the_run():
    class Broken:
        def model_call(self, model, request):
            raise RuntimeError("tracer down")

        def tool_call(self, name, call_id, arguments):
            raise RuntimeError("tracer down")

    model = ScriptedModel([ScriptedReply(tool_calls=[ScriptedCall("add", {"a": 1, "b": 1})]), ScriptedReply(text="2")])
    result = await Agent(model, tools=[add]).run(_ctx(Broken()))
    assert result.reason == "completed"


async def test_a_cancelled_stream_is_finished_as_interrupted():
    slow = ScriptedModel([ScriptedReply(text="hel" + "lo" * 200)], chunk_size=3, delay=0.05)
    observer = RecordingObserver()
    ctx = _ctx(observer)
    task = asyncio.create_task(Agent(slow).run(ctx))
    while not observer.model_calls or observer.model_calls[0]["first_token"] is None:
        await asyncio.sleep(0.01)
    ctx.cancel.set()
    assert (await task).reason == "cancelled"
    assert observer.model_calls[0]["finish_reason"] == "interrupted" and observer.model_calls[0]["text"].startswith(
        "hel"
    )
