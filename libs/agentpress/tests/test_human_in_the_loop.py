"""Human in the loop: a question or a call to approve pauses the run; the user's input resumes it."""

from __future__ import annotations

from agentpress import FinishReason, ScriptedModel, ScriptedReply, ToolResultMessage

from .test_loop import agent, call


async def pause(harness, model, **kw):
    a = agent(model, **kw)
    result = await a.run(harness.ctx)
    assert result.reason is FinishReason.REQUIRES_ACTION
    assert harness.types()[-1] == "requires_action" and "run_finished" not in harness.types()
    return a, result


async def test_ask_pauses_and_the_answer_becomes_its_result(harness):
    model = ScriptedModel([ScriptedReply(tool_calls=[call("ask", question="Which file?")]), "Editing b.py."])
    a, result = await pause(harness, model, pause_on_ask=True)
    pending = result.pending
    assert pending == {"kind": "question", "question": "Which file?", "call_id": pending["call_id"]}
    assert harness.events.events[-1].pending == pending
    assert [m.kind for m in harness.store.messages] == ["user", "assistant"]  # no result yet

    assert await a.resolve_pending(harness.ctx, pending, {"content": "b.py"}) is None
    resumed = await a.run(harness.ctx, resumed=True)

    assert resumed.reason is FinishReason.COMPLETED
    results = [m for m in harness.store.messages if isinstance(m, ToolResultMessage)]
    assert [(r.call_id, r.output, r.error) for r in results] == [(pending["call_id"], "b.py", None)]
    assert harness.types().count("run_started") == 1 and harness.types()[-1] == "run_finished"
    harness.assert_calls_paired()
    # The model saw its question answered.
    assert any(m.get("content") == "b.py" for m in model.requests[-1].messages if m.get("role") == "tool")


async def test_an_approved_call_runs_after_the_decision(harness):
    model = ScriptedModel([ScriptedReply(tool_calls=[call("run_command", command="rm -rf build")]), "Done."])
    a, result = await pause(harness, model, approval_tools=["run_command"])
    assert result.pending["kind"] == "approval" and result.pending["tool"] == "run_command"
    assert result.pending["arguments"] == {"command": "rm -rf build"}
    assert harness.sandbox.commands == []  # nothing ran before the decision

    await a.resolve_pending(harness.ctx, result.pending, {"decision": "approve"})
    assert harness.sandbox.commands == ["rm -rf build"]
    assert (await a.run(harness.ctx, resumed=True)).reason is FinishReason.COMPLETED
    harness.assert_calls_paired()


async def test_a_rejected_call_returns_the_rejection_to_the_model(harness):
    model = ScriptedModel([ScriptedReply(tool_calls=[call("run_command", command="rm -rf /")]), "Understood."])
    a, result = await pause(harness, model, approval_tools=["run_command"])

    await a.resolve_pending(harness.ctx, result.pending, {"decision": "reject", "content": "too dangerous"})
    # Resolving twice (a worker lost midway) stores nothing twice.
    await a.resolve_pending(harness.ctx, result.pending, {"decision": "reject", "content": "too dangerous"})
    assert harness.sandbox.commands == []
    [rejection] = [m for m in harness.store.messages if isinstance(m, ToolResultMessage)]
    assert (rejection.error, rejection.output) == ("rejected", "the user rejected this call: too dangerous")
    assert (await a.run(harness.ctx, resumed=True)).reason is FinishReason.COMPLETED


async def test_calls_after_a_paused_one_wait_and_can_pause_again(harness):
    model = ScriptedModel(
        [
            ScriptedReply(
                tool_calls=[call("run_command", command="echo one"), call("run_command", command="echo two")]
            ),
            "Both done.",
        ]
    )
    a, result = await pause(harness, model, approval_tools=["run_command"])
    again = await a.resolve_pending(harness.ctx, result.pending, {"decision": "approve"})
    assert again is not None and again["arguments"] == {"command": "echo two"}
    assert harness.sandbox.commands == ["echo one"]
    assert await a.resolve_pending(harness.ctx, again, {"decision": "approve"}) is None
    assert harness.sandbox.commands == ["echo one", "echo two"]
    assert (await a.run(harness.ctx, resumed=True)).reason is FinishReason.COMPLETED


async def test_without_pause_on_ask_the_run_still_ends_asked_user(harness):
    result = await agent(ScriptedModel([ScriptedReply(tool_calls=[call("ask", question="?")])])).run(harness.ctx)
    assert result.reason is FinishReason.ASKED_USER
