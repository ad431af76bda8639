"""Human in the loop over HTTP: a run pauses (requires_action) on a question or a call to approve,
its stream stays open, and POST /resume continues the same run on the same stream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ScriptedToolCall, ThreadedFakeLLMServer, Turn

from .test_run_end_to_end import sign_up_and_in

pytestmark = pytest.mark.integration

SCRIPTS = {
    "hitl-ask": Script(
        turns=(
            Turn(tool_calls=(ScriptedToolCall(name="ask", arguments={"question": "Which colour?"}),)),
            Turn(text="Blue it is."),
        )
    ),
    "hitl-shell": Script(
        turns=(
            Turn(
                text="I need to run a command.",
                tool_calls=(ScriptedToolCall(name="run_command", arguments={"command": "echo approved-and-ran"}),),
            ),
            Turn(text="Finished."),
        )
    ),
}


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer(SCRIPTS) as server:
        yield server


@pytest.fixture
async def client(llm, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=tmp_path,
            llm_api_base=llm.base_url,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
            runner_overrides={"approval_tools": ["run_command"]},
        )
        async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=30) as client:
            yield client


async def start(client: httpx.AsyncClient, headers: dict, model: str) -> str:
    thread = (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]
    started = await client.post(
        f"/api/threads/{thread}/agent/start", headers=headers, json={"model_name": f"openai/{model}", "prompt": "go"}
    )
    assert started.status_code == 202, started.text
    return started.json()["agent_run_id"]


class Stream:
    """One SSE connection kept open across the pause."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.events: list[tuple[int, dict]] = []

    async def until(self, event_type: str) -> dict:
        event_id = data = None
        async with asyncio.timeout(20):
            async for line in self.lines:
                if line.startswith("id:"):
                    event_id = int(line[3:])
                elif line.startswith("data:"):
                    data = orjson.loads(line[5:])
                elif line == "" and data is not None:
                    self.events.append((event_id, data))
                    if data["type"] == event_type:
                        return data
                    event_id = data = None
        raise AssertionError(f"stream ended before {event_type}")


async def test_ask_pauses_then_an_answer_continues_the_same_run_on_the_same_stream(client) -> None:
    user = await sign_up_and_in(client, "hitl-ask@example.com")
    headers = user["headers"]
    run_id = await start(client, headers, "hitl-ask")
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
        stream = Stream(response)
        waiting = await stream.until("requires_action")
        assert waiting["pending"]["kind"] == "question" and waiting["pending"]["question"] == "Which colour?"

        run = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()
        assert run["status"] == "requires_action" and run["pending"] == waiting["pending"]
        for _ in range(50):  # the phase lands with the pause
            if run["phase"] == "waiting_for_user":
                break
            await asyncio.sleep(0.05)
            run = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()
        assert run["phase"] == "waiting_for_user" and run["phase_since"]

        # The input must fit what the run waits for.
        wrong = await client.post(f"/api/agent-run/{run_id}/resume", json={"decision": "approve"}, headers=headers)
        assert wrong.status_code == 422, wrong.text
        resumed = await client.post(f"/api/agent-run/{run_id}/resume", json={"content": "blue"}, headers=headers)
        assert resumed.status_code == 200, resumed.text
        assert resumed.json()["status"] in ("queued", "running", "completed")

        finished = await stream.until("run_finished")
    assert finished["reason"] == "completed"
    ids = [i for i, _ in stream.events]
    assert ids == list(range(1, len(ids) + 1))  # one run, one continuous sequence
    assert [e["type"] for _, e in stream.events].count("run_started") == 1

    messages = (await client.get(f"/api/threads/{run['thread_id']}/messages", headers=headers)).json()["messages"]
    assert [m["type"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[2]["content"]["output"] == "blue"
    assert messages[3]["content"]["text"] == "Blue it is."
    # A run that is not waiting: 409.
    again = await client.post(f"/api/agent-run/{run_id}/resume", json={"content": "red"}, headers=headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_not_waiting"


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_shell_command_waits_for_approval(client, decision: str) -> None:
    user = await sign_up_and_in(client, f"hitl-{decision}@example.com")
    headers = user["headers"]
    run_id = await start(client, headers, "hitl-shell")
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
        stream = Stream(response)
        waiting = await stream.until("requires_action")
        assert waiting["pending"] == {
            "kind": "approval",
            "tool": "run_command",
            "arguments": {"command": "echo approved-and-ran"},
            "call_id": waiting["pending"]["call_id"],
        }
        assert not [e for _, e in stream.events if e["type"] == "tool_call_finished"]  # nothing ran yet
        body = {"decision": decision} if decision == "approve" else {"decision": "reject", "content": "no"}
        assert (await client.post(f"/api/agent-run/{run_id}/resume", json=body, headers=headers)).status_code == 200
        await stream.until("run_finished")
    run = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()
    assert run["status"] == "completed" and run["pending"] is None
    messages = (await client.get(f"/api/threads/{run['thread_id']}/messages", headers=headers)).json()["messages"]
    result = messages[2]["content"]
    if decision == "approve":
        assert "approved-and-ran" in result["output"]
    else:
        assert result["error"] == "rejected" and result["output"] == "the user rejected this call: no"


async def test_a_paused_run_can_be_stopped_and_bad_input_is_refused(client) -> None:
    user = await sign_up_and_in(client, "hitl-stop@example.com")
    headers = user["headers"]
    run_id = await start(client, headers, "hitl-ask")
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
        stream = Stream(response)
        await stream.until("requires_action")
        bad = await client.post(f"/api/agent-run/{run_id}/resume", json={"decision": "maybe"}, headers=headers)
        assert bad.status_code == 422 and "decision" in bad.text
        stopped = await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
        assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled"
        finished = await stream.until("run_finished")
    assert finished["reason"] == "cancelled"
    other = await sign_up_and_in(client, "hitl-other@example.com")
    assert (
        await client.post(f"/api/agent-run/{run_id}/resume", json={"content": "x"}, headers=other["headers"])
    ).status_code == 404


async def test_agentry_chat_asks_the_question_on_the_terminal_and_continues(client) -> None:
    import io

    from rich.console import Console

    from agentry.cli.chat import run_chat

    class Terminal(Console):
        asked: list[str] = []

        def input(self, prompt="", **kwargs) -> str:  # type: ignore[override]
            self.asked.append(str(prompt))
            return "blue"

    out = io.StringIO()
    terminal = Terminal(file=out, width=120)
    code = await asyncio.to_thread(
        run_chat,
        url=str(client.base_url).rstrip("/"),
        email="hitl-chat@example.com",
        password="a long password",
        prompt="pick",
        thread_id=None,
        model="openai/hitl-ask",
        console=terminal,
    )
    assert code == 0, out.getvalue()
    assert "Which colour?" in out.getvalue() and "run finished: completed" in out.getvalue()
    assert len(terminal.asked) == 1


async def test_bad_resume_input_is_a_4xx_naming_the_field(client) -> None:
    user = await sign_up_and_in(client, "hitl-bad@example.com")
    headers = {**user["headers"], "content-type": "application/json"}
    run_id = await start(client, user["headers"], "hitl-ask")
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=user["headers"]) as response:
        await Stream(response).until("requires_action")
        url = f"/api/agent-run/{run_id}/resume"
        cases = {
            b'{"content": "\\ud800"}': "content",  # a lone surrogate
            b'{"content": "' + b"x" * 100_001 + b'"}': "content",  # too long
            b'{"content": 5}': "content",  # wrong type
            b'{"decision": ["approve"]}': "decision",
        }
        for body, field in cases.items():
            answer = await client.post(url, content=body, headers=headers)
            assert 400 <= answer.status_code < 500, (body[:40], answer.status_code, answer.text)
            assert field in answer.text, answer.text
        nul = await client.post(url, json={"content": "a\x00b"}, headers=user["headers"])
        # NUL is refused in every body field (the gateway's one rule for text), naming the field.
        assert nul.status_code == 422 and "content" in nul.text, nul.text
    assert (
        await client.post(
            f"/api/agent-run/{'0' * 8}-0000-0000-0000-{'0' * 12}/resume", json={"content": "x"}, headers=user["headers"]
        )
    ).status_code == 404
    assert (
        await client.post("/api/agent-run/not-a-uuid/resume", json={"content": "x"}, headers=user["headers"])
    ).status_code == 404
