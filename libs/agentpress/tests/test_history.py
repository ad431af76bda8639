"""What is sent is valid whatever was stored: repair and finalize, and a property test that any
sequence of model turns leaves a history the strict fake model (OpenAI's and Anthropic's rules) accepts."""

from __future__ import annotations

import asyncio

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentpress import (
    Agent,
    AssistantMessage,
    ContextConfig,
    FinishReason,
    FunctionModel,
    MemoryMessageStore,
    MemorySandbox,
    RecordingEventSink,
    RecordingUsageSink,
    RetryPolicy,
    RunContext,
    ScriptedCall,
    ScriptedModel,
    ScriptedReply,
    StatusMessage,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    close_interrupted_calls,
    tool,
)
from agentpress.history import INVALID_ARGUMENTS_KEY, finalize, repair
from agentpress.prompt import render
from agentpress.provider_rules import check

FAST = RetryPolicy(attempts=2, initial_wait=0.0001, max_wait=0.001)
CTX = ContextConfig(context_window=1_000_000)


@tool
async def echo(text: str = "") -> str:
    """Say it back."""
    return f"echo:{text}"


def _sent(history, family="openai"):
    return finalize(render("sys", None, repair(history)), family)


def test_duplicate_ids_are_renamed_and_results_pair_in_order():
    a = AssistantMessage(
        tool_calls=(
            ToolCall(call_id="dup", name="echo", arguments='{"text": "A"}'),
            ToolCall(call_id="dup", name="echo", arguments='{"text": "B"}'),
        )
    )
    history = [
        UserMessage(text="go"),
        a,
        ToolResultMessage(call_id="dup", name="echo", output="A out"),
        ToolResultMessage(call_id="dup", name="echo", output="B out"),
    ]
    sent = _sent(history)
    assert check(sent) is None and check(sent, "anthropic") is None
    ids = [c["id"] for c in sent[2]["tool_calls"]]
    assert ids[0] == "dup" and ids[1] != "dup"
    assert [(m["tool_call_id"], m["content"]) for m in sent[3:5]] == [(ids[0], "A out"), (ids[1], "B out")]
    assert history[1] is a and a.tool_calls[1].call_id == "dup", "what was stored stays as it was"


def test_orphan_and_second_results_are_left_out_and_a_missing_one_is_filled():
    history = [
        UserMessage(text="go"),
        ToolResultMessage(call_id="ghost", name="echo", output="?"),
        AssistantMessage(
            tool_calls=(
                ToolCall(call_id="c1", name="echo", arguments="{}"),
                ToolCall(call_id="c2", name="echo", arguments="{}"),
            )
        ),
        ToolResultMessage(call_id="c1", name="echo", output="one"),
        ToolResultMessage(call_id="c1", name="echo", output="one again"),
    ]
    sent = _sent(history)
    assert check(sent) is None
    tools = [(m["tool_call_id"], m["content"]) for m in sent if m["role"] == "tool"]
    assert tools[0] == ("c1", "one") and tools[1][0] == "c2" and "no result" in tools[1][1]


def test_invalid_arguments_are_replaced_by_a_marked_placeholder():
    for raw in ('{"command": "echo hi', "[]", "null", "42"):
        history = [
            UserMessage(text="go"),
            AssistantMessage(tool_calls=(ToolCall(call_id="c", name="echo", arguments=raw),)),
            ToolResultMessage(call_id="c", name="echo", output="bad arguments", error="invalid_call"),
        ]
        sent = _sent(history, "anthropic")
        assert check(sent, "anthropic") is None and check(sent) is None
        assert orjson.loads(sent[2]["tool_calls"][0]["function"]["arguments"]) == {INVALID_ARGUMENTS_KEY: raw}
        assert "bad arguments" in sent[3]["content"]


def test_empty_messages_get_marked_text_and_anthropic_turns_alternate():
    history = [
        AssistantMessage(text="hello first"),
        UserMessage(text=""),
        UserMessage(text="again"),
        AssistantMessage(text="  "),
        AssistantMessage(text="continued"),
        AssistantMessage(tool_calls=(ToolCall(call_id="functions.echo:0", name="echo", arguments=""),)),
        ToolResultMessage(call_id="functions.echo:0", name="echo", output=""),
        UserMessage(text="bad \ud800 text \x00"),
    ]
    assert check(_sent(history)) is None
    sent = _sent(history, "anthropic")
    assert check(sent, "anthropic") is None, check(sent, "anthropic")
    assert sent[1] == {"role": "user", "content": "[the conversation continues]"}
    assert "[empty message]" in sent[3]["content"] and "again" in sent[3]["content"]
    assert sent[-1]["content"] == "bad \ufffd text \ufffd"


# -- the property: any turns, any interruption, the next history is accepted ----------------------

_IDS = st.one_of(st.none(), st.sampled_from(["call_dup", "call_1", "functions.echo:0", "a b", "", "x" * 80]))
_ARGS = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=4)}),
    st.sampled_from(['{"text": "x', "[]", "null", "", "42", '{"text": 1}', "{}"]),
)
_CALL = st.builds(
    ScriptedCall,
    name=st.sampled_from(["echo", "echo", "no_such_tool", "bad name!", "x" * 70]),
    arguments=_ARGS,
    call_id=_IDS,
)
_TEXT = st.one_of(st.sampled_from(["", " ", "\n\t", "ok", "bad \ud800", "nul \x00"]), st.text(max_size=8))
_REPLY = st.one_of(
    _TEXT,
    st.builds(ScriptedReply, text=_TEXT, tool_calls=st.lists(_CALL, max_size=3)),
    st.builds(ScriptedReply, text=_TEXT, finish_reason=st.just("length")),
)
_RUN = st.tuples(
    _TEXT, st.lists(_REPLY, min_size=1, max_size=4), st.sampled_from(["none", "stop", "lost"]), st.integers(0, 3)
)


async def _drive(runs, name: str) -> list:
    store = MemoryMessageStore([])
    rejections = []
    for prompt, replies, interruption, at in runs:
        await store.append(UserMessage(text=prompt))
        cancel = asyncio.Event()
        queue = list(replies)
        calls = 0

        def reply(request, queue=queue, interruption=interruption, at=at, cancel=cancel):
            nonlocal calls
            calls += 1
            if interruption == "stop" and calls - 1 == at:
                cancel.set()
            return queue.pop(0) if queue else "done"

        model = FunctionModel(reply, name=name, chunk_size=3)
        ctx = RunContext(
            run_id="r",
            thread_id="t",
            messages=store,
            sandbox=MemorySandbox(),
            usage=RecordingUsageSink(None),
            events=RecordingEventSink(),
            cancel=cancel,
        )
        agent = Agent(model=model, tools=[echo], max_steps=4, retry=FAST, context=CTX)
        result = await agent.run(ctx)
        rejections += model.rejections
        assert result.reason is not FinishReason.ERROR or not model.rejections, result.error
        if interruption == "lost":
            # The worker died: the results of the last turn's calls after the first were never stored.
            last = max((i for i, m in enumerate(store.messages) if isinstance(m, AssistantMessage)), default=None)
            if last is not None:
                results = [i for i, m in enumerate(store.messages[last:], last) if isinstance(m, ToolResultMessage)]
                for i in reversed(results[1:]):
                    del store.messages[i]
                if at % 2:  # a host that resumes closes the calls left open first (sometimes)
                    for m in close_interrupted_calls(store.messages, ()):
                        await store.append(m)
    final = FunctionModel(lambda request: "the end", name=name)
    ctx = RunContext(
        run_id="r",
        thread_id="t",
        messages=store,
        sandbox=MemorySandbox(),
        usage=RecordingUsageSink(None),
        events=RecordingEventSink(),
        cancel=asyncio.Event(),
    )
    await store.append(UserMessage(text="and now?"))
    result = await Agent(model=final, tools=[echo], retry=FAST, context=CTX).run(ctx)
    assert result.reason is FinishReason.COMPLETED, result.error
    return rejections + final.rejections


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_RUN, min_size=1, max_size=4), st.sampled_from(["scripted", "claude-scripted"]))
def test_any_model_turns_leave_a_history_the_strict_model_accepts(runs, name):
    assert asyncio.run(_drive(runs, name)) == []


# -- empty replies ------------------------------------------------------------------------------


async def test_an_empty_reply_is_asked_again_once(harness):
    model = ScriptedModel(["  ", "Here it is."])
    result = await Agent(model=model, retry=FAST, context=CTX).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED
    assert [m.kind for m in harness.store.messages] == ["user", "assistant"]
    assert harness.store.messages[-1].text == "Here it is."


async def test_two_empty_replies_end_the_run_empty_response_never_stored_as_an_answer(harness):
    model = ScriptedModel(["", ScriptedReply(text="\n")])
    result = await Agent(model=model, retry=FAST, context=CTX).run(harness.ctx)
    assert result.reason is FinishReason.EMPTY_RESPONSE and "empty reply" in (result.error or "")
    assert harness.events.events[-1].reason is FinishReason.EMPTY_RESPONSE
    stored = harness.store.messages
    assert [m.kind for m in stored] == ["user", "status"]
    assert isinstance(stored[-1], StatusMessage) and stored[-1].status == "empty_response"


async def test_a_summary_request_is_valid_whatever_the_transcript_holds():
    """The summary call quotes old turns: their unsafe text is replaced there too."""
    store = MemoryMessageStore(
        [
            UserMessage(text="old \ud800 turn \x00 " + "x" * 4000),
            AssistantMessage(text="old answer " * 300),
            UserMessage(text="new question"),
        ]
    )
    summariser = ScriptedModel(["the summary"], name="summariser")
    model = ScriptedModel(["answer"], name="main")
    ctx = RunContext(
        run_id="r",
        thread_id="t",
        messages=store,
        sandbox=MemorySandbox(),
        usage=RecordingUsageSink(None),
        events=RecordingEventSink(),
        cancel=asyncio.Event(),
    )
    config = ContextConfig(
        context_window=1_500, reserve_tokens=200, token_counter=lambda model, messages: len(orjson.dumps(messages)) // 4
    )
    result = await Agent(model=model, summary_model=summariser, retry=FAST, context=config).run(ctx)
    assert result.reason is FinishReason.COMPLETED, result.error
    assert len(summariser.requests) == 1 and summariser.rejections == [] and model.rejections == []
    assert "\ufffd" in summariser.requests[0].messages[1]["content"]
