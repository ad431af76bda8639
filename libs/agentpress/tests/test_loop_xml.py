"""The loop with XML tool calling, for models without native tool calls."""

from __future__ import annotations

from agentpress import (
    Agent,
    ContextConfig,
    FinishReason,
    ModelSettings,
    ScriptedCall,
    ScriptedModel,
    ScriptedReply,
    ToolResultMessage,
    default_tools,
    xml_call,
)


def xml_agent(model, **kw) -> Agent:
    return Agent(
        model=model,
        system_prompt="Base prompt.",
        tools=default_tools(),
        tool_calling="xml",
        context=ContextConfig(context_window=100_000),
        **kw,
    )


async def test_xml_calls_run_and_results_return_as_user_message(harness):
    model = ScriptedModel(
        [
            ScriptedReply(
                text="Let me write it.",
                tool_calls=[
                    ScriptedCall("create_file", {"path": "n.txt", "content": "42"}),
                    ScriptedCall("read_file", {"path": "n.txt", "start_line": 1}),
                ],
            ),
            "Done, it says 42.",
        ],
        tool_calling="xml",
        chunk_size=7,
    )
    result = await xml_agent(model).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED
    first = model.requests[0]
    assert first.tools == []
    assert "<function_calls>" in first.messages[0]["content"] and first.messages[0]["content"].startswith(
        "Base prompt."
    )
    assert harness.text() == "Let me write it.Done, it says 42."
    results = [m for m in harness.store.messages if isinstance(m, ToolResultMessage)]
    assert [(r.name, r.output, r.error) for r in results] == [
        ("create_file", "wrote 2 bytes to n.txt", None),
        ("read_file", "42", None),
    ]
    second = model.requests[1].messages
    assert second[-2]["role"] == "assistant" and '<invoke name="create_file">' in second[-2]["content"]
    assert (
        second[-1]["role"] == "user" and '<tool_result name="read_file">\n42\n</tool_result>' in second[-1]["content"]
    )
    harness.assert_calls_paired()


async def test_malformed_xml_is_reported_to_the_model(harness):
    model = ScriptedModel(
        [
            'Trying <function_calls><invoke name="run_command"><parameter name="command">ls</parameter>',
            "Sorry, " + xml_call("complete", summary="ok"),
        ],
        tool_calling="xml",
    )
    result = await xml_agent(model).run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED
    errors = [m for m in harness.store.messages if isinstance(m, ToolResultMessage)]
    assert errors[0].error == "invalid_call" and "unterminated" in errors[0].output
    assert "unterminated" in model.requests[1].messages[-1]["content"]
    assert harness.sandbox.commands == []


async def test_model_settings_are_passed_through(harness):
    model = ScriptedModel(["ok"])
    settings = ModelSettings(
        temperature=0.2,
        reasoning_effort="high",
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra={"top_p": 0.9},
    )
    await xml_agent(model, settings=settings).run(harness.ctx)
    assert model.requests[0].settings.as_kwargs() == {
        "temperature": 0.2,
        "reasoning_effort": "high",
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_p": 0.9,
    }
