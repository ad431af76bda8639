"""The agent loop end to end with the shipped test models and in-memory ports."""

from __future__ import annotations

import orjson
import pytest

from agentpress import (
    Agent,
    AssistantMessage,
    ContextConfig,
    FinishReason,
    FunctionModel,
    ModelCallError,
    ModelRequest,
    ModelRetry,
    ModelTransientError,
    RetryPolicy,
    ScriptedCall,
    ScriptedModel,
    ScriptedReply,
    ToolExecution,
    ToolResultMessage,
    default_tools,
    tool,
)

FAST_RETRY = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.01)
CTX = ContextConfig(context_window=100_000)


def agent(model, **kw) -> Agent:
    kw.setdefault("tools", default_tools())
    return Agent(model=model, system_prompt="You are a test.", retry=FAST_RETRY, context=CTX, **kw)


def call(name: str, **args) -> ScriptedCall:
    return ScriptedCall(name, args)


def finished_once(h) -> None:
    types = h.types()
    assert types[0] == "run_started" and types[-1] == "run_finished" and types.count("run_finished") == 1


async def test_tools_then_complete(harness):
    model = ScriptedModel(
        [
            ScriptedReply(
                text="Working.",
                tool_calls=[call("run_command", command="ls"), call("create_file", path="a.py", content="print(1)")],
            ),
            ScriptedReply(tool_calls=[call("complete", summary="made a.py")]),
        ],
        chunk_size=3,
    )
    result = await agent(model).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED and result.steps == 2
    finished_once(harness)
    assert harness.sandbox.files == {"/workspace/a.py": b"print(1)"}
    assert harness.sandbox.commands == ["ls"]
    kinds = [m.kind for m in harness.store.messages]
    assert kinds == ["user", "assistant", "tool", "tool", "assistant", "tool"]
    harness.assert_calls_paired()
    assert harness.text() == "Working."
    # The second request carries the first turn's calls and their results, in call order.
    second = model.requests[1].messages
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in second[3:]] == ["call_1_0", "call_1_1"]
    assert model.requests[0].tools and {t["function"]["name"] for t in model.requests[0].tools} >= {"run_command"}


async def test_plain_answer_completes(harness):
    result = await agent(ScriptedModel(["Hello there."])).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED
    assert isinstance(harness.store.messages[-1], AssistantMessage)
    assert harness.store.messages[-1].text == "Hello there."
    assert len(harness.usage.records) == 1 and harness.usage.records[0].step == 1


async def test_ask_ends_with_asked_user(harness):
    result = await agent(ScriptedModel([ScriptedReply(tool_calls=[call("ask", question="Which file?")])])).run(
        harness.ctx
    )
    assert result.reason is FinishReason.ASKED_USER
    assert harness.store.messages[-1].output == "Which file?"


async def test_step_limit(harness):
    model = FunctionModel(lambda req: ScriptedReply(tool_calls=[call("run_command", command="true")]))
    result = await agent(model, max_steps=3).run(harness.ctx)
    assert result.reason is FinishReason.STEP_LIMIT and len(model.requests) == 3
    harness.assert_calls_paired()


async def test_model_failure_ends_with_error_not_exception(harness):
    result = await agent(ScriptedModel([ModelCallError("401 bad key")])).run(harness.ctx)
    assert result.reason is FinishReason.ERROR and "bad key" in (result.error or "")
    finished_once(harness)
    assert harness.events.events[-1].error == result.error


async def test_unexpected_exception_in_model_is_an_error_result(harness):
    def explode(req):
        raise ZeroDivisionError("boom")

    result = await agent(FunctionModel(explode)).run(harness.ctx)
    # The kind is told, not the text: a host's exception may hold internal addresses or SQL.
    assert result.reason is FinishReason.ERROR and "ZeroDivisionError" in (result.error or "")
    assert "boom" not in (result.error or "")
    finished_once(harness)


async def test_transient_errors_are_retried(harness):
    model = ScriptedModel([ModelTransientError("429"), ModelTransientError("503"), "ok"])
    result = await agent(model).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED and len(model.requests) == 3


async def test_fallback_model_used_after_retries(harness):
    primary = ScriptedModel([ModelTransientError("429")] * 3, name="primary")
    backup = ScriptedModel(["from backup"], name="backup")
    result = await agent(primary, fallback_models=[backup]).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED
    assert harness.store.messages[-1].model == "backup"
    assert harness.usage.records[0].model == "backup"


async def test_budget_exceeded_after_current_step(make_harness):
    h = make_harness(budget_usd=0.5)
    model = ScriptedModel([ScriptedReply(tool_calls=[call("run_command", command="ls")]), "never"], cost_per_token=1.0)
    result = await agent(model).run(h.ctx)
    assert result.reason is FinishReason.BUDGET_EXCEEDED
    assert h.sandbox.commands == ["ls"], "the step's tools still ran"
    assert model.remaining == 1
    assert h.events.of_type("usage")[0].cost_usd > 0


async def test_auto_continue_on_length(harness):
    model = ScriptedModel([ScriptedReply(text="part one", finish_reason="length"), "part two"])
    result = await agent(model).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED
    assert [m.text for m in harness.store.messages if isinstance(m, AssistantMessage)] == ["part one", "part two"]


async def test_tool_errors_go_back_to_the_model(harness):
    attempts = []

    @tool
    async def flaky(n: int) -> str:
        """Needs n == 3."""
        attempts.append(n)
        if n != 3:
            raise ModelRetry("n must be 3")
        return "fine"

    def decide(req: ModelRequest):
        last = req.messages[-1]
        if last["role"] != "tool":
            return ScriptedReply(tool_calls=[call("flaky", n=1), call("nope"), ScriptedCall("flaky", '{"n": "x"}')])
        if "n must be 3" in str(req.messages):
            if any(m.get("content") == "fine" for m in req.messages):
                return "done"
            return ScriptedReply(tool_calls=[call("flaky", n=3)])
        return "unexpected"

    result = await agent(FunctionModel(decide), tools=[flaky]).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED
    errors = [m.error for m in harness.store.messages if isinstance(m, ToolResultMessage)]
    assert errors == ["retry", "invalid_call", "invalid_call", None]
    assert attempts == [1, 3]
    assert harness.store.messages[-1].text == "done"


@pytest.mark.parametrize(
    "execution",
    [
        ToolExecution("on_stream", False),
        ToolExecution("on_stream", True),
        ToolExecution("after_turn", False),
        ToolExecution("after_turn", True),
    ],
)
async def test_results_in_call_order_for_every_strategy(harness, execution):
    import asyncio

    @tool
    async def sleepy(ms: int) -> str:
        """Sleep."""
        await asyncio.sleep(ms / 1000)
        return str(ms)

    model = ScriptedModel(
        [ScriptedReply(tool_calls=[call("sleepy", ms=30), call("sleepy", ms=1), call("sleepy", ms=10)]), "done"]
    )
    await agent(model, tools=[sleepy], tool_execution=execution).run(harness.ctx)
    outputs = [m.output for m in harness.store.messages if isinstance(m, ToolResultMessage)]
    assert outputs == ["30", "1", "10"]
    finished = [e.output for e in harness.events.of_type("tool_call_finished")]
    assert finished == (["1", "10", "30"] if execution.parallel else ["30", "1", "10"])


async def test_reasoning_is_streamed_and_stored(harness):
    await agent(ScriptedModel([ScriptedReply(text="a", reasoning="think hard")])).run(harness.ctx)
    assert "".join(e.text for e in harness.events.of_type("reasoning_delta")) == "think hard"
    assert harness.store.messages[-1].reasoning == "think hard"


async def test_event_stream_round_trips(harness):
    from agentpress import event_from_dict

    await agent(ScriptedModel([ScriptedReply(tool_calls=[call("run_command", command="ls")]), "ok"])).run(harness.ctx)
    for e in harness.events.events:
        assert event_from_dict(orjson.loads(orjson.dumps(e.to_dict()))) == e


async def test_stream_dying_midway_keeps_partial_text_and_stops_tools(harness):
    from agentpress.models import ModelDelta

    class Dying:
        name = "dying"
        context_window = 100_000
        requests: list = []

        def cost(self, p, c):
            return 0.0

        async def stream(self, request):
            yield ModelDelta(text="partial ")
            raise ModelCallError("connection reset")

    result = await agent(Dying()).run(harness.ctx)
    assert result.reason is FinishReason.ERROR and "connection reset" in (result.error or "")
    assert harness.store.messages[-1].text == "partial "
    finished_once(harness)


async def test_a_stop_whose_first_cancel_is_swallowed_still_stops_the_run(harness):
    """Python 3.11's wait_for returns a result that arrived as a cancel landed, swallowing the
    cancel (redis-py's reads go through it): the loop must cancel again, not stream on."""
    import asyncio

    class SwallowingEvents:
        def __init__(self, inner) -> None:
            self.inner, self.swallowed = inner, 0

        async def emit(self, event) -> None:
            try:
                await self.inner.emit(event)
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if self.swallowed == 0:  # swallow the first cancel, as wait_for does
                    self.swallowed += 1
                    return
                raise

    events = SwallowingEvents(harness.ctx.events)
    harness.ctx.events = events
    model = ScriptedModel([" ".join(["word"] * 400)], chunk_size=1)
    running = asyncio.create_task(agent(model).run(harness.ctx))
    await asyncio.sleep(0.2)
    harness.ctx.cancel.set()
    result = await asyncio.wait_for(running, 2)
    assert result.reason is FinishReason.CANCELLED and events.swallowed == 1
