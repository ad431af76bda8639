"""Context management: long threads stay inside a small window, summaries are made once and reused."""

from __future__ import annotations

import orjson

from agentpress import (
    Agent,
    AssistantMessage,
    ContextConfig,
    FinishReason,
    FunctionModel,
    ModelRequest,
    ScriptedCall,
    ScriptedModel,
    ScriptedReply,
    StatusMessage,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    default_tools,
)
from agentpress.context import litellm_token_counter
from agentpress.prompt import with_cache_markers

WINDOW = 8_000


def long_thread(n_messages: int = 500, output_chars: int = 3_000) -> list:
    history: list = []
    i = 0
    while len(history) < n_messages:
        history.append(UserMessage(text=f"request {i}: please check the logs"))
        history.append(
            AssistantMessage(
                text=f"Checking {i}.",
                tool_calls=(
                    ToolCall(
                        call_id=f"c{i}", name="run_command", arguments=orjson.dumps({"command": f"cat log{i}"}).decode()
                    ),
                ),
            )
        )
        history.append(ToolResultMessage(call_id=f"c{i}", name="run_command", output=f"log {i} " + "z" * output_chars))
        history.append(AssistantMessage(text=f"Log {i} looks fine."))
        i += 1
    return history[:n_messages]


def assert_paired(messages: list[dict]) -> None:
    """In a prompt, every call is answered right after its assistant message, every result has a call."""
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and m.get("tool_calls"):
            ids = [c["id"] for c in m["tool_calls"]]
            following = [x.get("tool_call_id") for x in messages[i + 1 : i + 1 + len(ids)]]
            assert following == ids
        if m["role"] == "tool":
            owners = [x for x in messages[:i] if x["role"] == "assistant" and x.get("tool_calls")]
            assert owners and m["tool_call_id"] in {c["id"] for c in owners[-1]["tool_calls"]}


def prompt_tokens(model: str, request: ModelRequest) -> int:
    tools = (
        litellm_token_counter(model, [{"role": "system", "content": orjson.dumps(request.tools).decode()}])
        if request.tools
        else 0
    )
    return litellm_token_counter(model, request.messages) + tools


async def test_500_message_thread_fits_a_small_window(make_harness):
    h = make_harness(long_thread(500) + [UserMessage(text="now run the build, several times")])
    summaries: list[str] = []

    def summarise(req: ModelRequest):
        summaries.append(req.messages[-1]["content"])
        return f"SUMMARY {len(summaries)}: earlier the user had logs checked."

    def work(req: ModelRequest):
        step = len(model.requests) - 1  # older build outputs get summarised away, so count calls
        if step < 6:
            return ScriptedReply(text=f"Build {step}.", tool_calls=[ScriptedCall("run_command", {"command": "make"})])
        return ScriptedReply(tool_calls=[ScriptedCall("complete", {"summary": "built"})])

    async def build(command: str, timeout: float):
        from agentpress import ExecResult

        return ExecResult(exit_code=0, output="build output " + "b" * 4_000)

    from agentpress import MemorySandbox

    h.ctx.sandbox = MemorySandbox(build)
    model = FunctionModel(work, name="small-model", context_window=WINDOW)
    summary_model = FunctionModel(summarise, name="cheap-model")
    agent = Agent(
        model=model,
        summary_model=summary_model,
        tools=default_tools(),
        system_prompt="You build things.",
        context=ContextConfig(reserve_tokens=1_000),
        max_steps=10,
    )
    result = await agent.run(h.ctx)
    assert result.reason is FinishReason.COMPLETED, result.error
    assert len(model.requests) == 7
    for request in model.requests:
        assert prompt_tokens(model.name, request) <= WINDOW - 1_000
        assert_paired(request.messages)
    stored = [m for m in h.store.messages if isinstance(m, StatusMessage) and m.status == "summary"]
    assert 1 <= len(stored) <= 2, "summaries are reused, not remade every turn"
    assert len(summary_model.requests) == len(stored)
    assert summary_model.requests[0].messages[0]["role"] == "system"
    # Consecutive prompts carry the same summary until a new one is made.
    texts = [r.messages[1]["content"] for r in model.requests]
    assert all(t.startswith("Summary of the earlier conversation:\nSUMMARY") for t in texts)
    assert len(set(texts)) == len(stored)
    # The summary costs are reported too.
    assert {u.model for u in h.usage.records} == {"small-model", "cheap-model"}
    h.assert_calls_paired()


async def test_summary_is_reused_by_the_next_run(make_harness):
    h = make_harness(long_thread(200) + [UserMessage(text="hi")])
    summary_model = ScriptedModel(["SUMMARY A", "SUMMARY B"], name="cheap")
    model = ScriptedModel(["one", "two"], name="small", context_window=WINDOW)
    agent = Agent(model=model, summary_model=summary_model, context=ContextConfig(reserve_tokens=1_000))
    await agent.run(h.ctx)
    h.store.messages.append(UserMessage(text="again"))
    await agent.run(h.ctx)
    assert len(summary_model.requests) == 1
    assert model.requests[1].messages[0]["content"].endswith("SUMMARY A")


async def test_single_huge_tool_output_is_cut_to_fit(make_harness):
    history = [
        UserMessage(text="go"),
        AssistantMessage(tool_calls=(ToolCall(call_id="c", name="run_command", arguments="{}"),)),
        ToolResultMessage(call_id="c", name="run_command", output="start " + "q" * 200_000 + " end"),
    ]
    h = make_harness(history)
    model = ScriptedModel(["the user said go", "ok"], name="small", context_window=WINDOW)
    await Agent(model=model, context=ContextConfig(reserve_tokens=1_000)).run(h.ctx)
    sent = model.requests[1]
    assert prompt_tokens("small", sent) <= WINDOW - 1_000
    tool_msg = next(m for m in sent.messages if m["role"] == "tool")
    assert tool_msg["content"].startswith("start") and tool_msg["content"].endswith("end")
    assert "cut to fit the context window" in tool_msg["content"]
    assert h.store.messages[2].output.endswith("end") and len(h.store.messages[2].output) > 200_000


def test_window_override_and_litellm_lookup():
    from agentpress.context import ContextManager

    async def never(_: str) -> str:
        raise AssertionError

    assert ContextManager(ContextConfig(context_window=1234), never).window("gpt-4o", None) == 1234
    assert ContextManager(ContextConfig(), never).window("gpt-4o", None) == 128_000
    assert ContextManager(ContextConfig(default_context_window=777), never).window("openai/unknown-x", None) == 777
    assert ContextManager(ContextConfig(), never).window("anything", 5000) == 5000


def test_anthropic_cache_markers(harness):
    marked = with_cache_markers(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    )
    assert marked[0]["content"] == [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]
    assert marked[1]["content"] == "a"
    assert marked[2]["content"][0]["cache_control"] == {"type": "ephemeral"}


async def test_markers_only_for_anthropic_models(harness):
    anthropic = ScriptedModel(["ok"], name="anthropic/claude-sonnet-4")
    await Agent(model=anthropic, system_prompt="S", context=ContextConfig(context_window=50_000)).run(harness.ctx)
    assert isinstance(anthropic.requests[0].messages[0]["content"], list)
    other = ScriptedModel(["ok"], name="openai/gpt-4o")
    await Agent(model=other, system_prompt="S", context=ContextConfig(context_window=50_000)).run(harness.ctx)
    assert other.requests[0].messages[0]["content"] == "S"
