"""Per-thread run policies over HTTP: `multitask_strategy` on agent/start (reject, enqueue,
interrupt, rollback) and the per-account cap on active runs (429 + Retry-After), end to end on
the embedded stack; enqueue once more in split mode (PostgreSQL, RabbitMQ, Redis, separate
worker process), where the sweeper publishes the promoted run's job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import orjson
import pytest

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ScriptedToolCall, ThreadedFakeLLMServer, Turn

from .test_run_end_to_end import sign_up_and_in, stream

pytestmark = pytest.mark.integration

CAP = 3
RETRY_AFTER = 4
# A short reply, a reply of about a second, and a run that writes an assistant message and a tool
# result at once and then talks for about ten seconds (so a stop always lands mid-run, after it
# has written something).
SCRIPTS = {
    "mt-quick": Script(turns=(Turn(text="Quick answer."),)),
    "mt-slow": Script(turns=(Turn(text=" ".join(f"word{i}" for i in range(40))),), tokens_per_second=40),
    "mt-long": Script(
        turns=(
            Turn(
                text="Looking first.",
                tool_calls=(ScriptedToolCall(name="run_command", arguments={"command": "echo looked"}),),
            ),
            Turn(text=" ".join(f"token{i}" for i in range(300))),
        ),
        tokens_per_second=30,
    ),
}


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer(SCRIPTS) as server:
        yield server


@pytest.fixture
async def gateway_url(llm, tmp_path) -> AsyncIterator[str]:
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=tmp_path,
            llm_api_base=llm.base_url,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
            runner_overrides={"max_active_runs_per_account": CAP, "active_runs_retry_after_seconds": RETRY_AFTER},
        )
        yield dev.gateway_url


@pytest.fixture
async def client(gateway_url) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as client:
        yield client


class Api:
    def __init__(self, client: httpx.AsyncClient, headers: dict) -> None:
        self.client, self.headers = client, headers

    async def thread(self) -> str:
        return (await self.client.post("/api/threads", json={}, headers=self.headers)).json()["thread_id"]

    async def start(self, thread_id: str, prompt: str, model: str, strategy: str | None = None) -> httpx.Response:
        body = {"prompt": prompt, "model_name": f"openai/{model}"}
        if strategy is not None:
            body["multitask_strategy"] = strategy
        return await self.client.post(f"/api/threads/{thread_id}/agent/start", json=body, headers=self.headers)

    async def started(self, thread_id: str, prompt: str, model: str, strategy: str | None = None) -> dict:
        response = await self.start(thread_id, prompt, model, strategy)
        assert response.status_code == 202, response.text
        return response.json()

    async def run(self, run_id: str) -> dict:
        response = await self.client.get(f"/api/agent-run/{run_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def events(self, run_id: str, *, limit: int | None = None, timeout: float = 30) -> list[dict]:
        got = await asyncio.wait_for(stream(self.client, run_id, self.headers, limit=limit), timeout)
        return [orjson.loads(data) for _, data in got]

    async def messages(self, thread_id: str) -> list[dict]:
        response = await self.client.get(f"/api/threads/{thread_id}/messages", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()["messages"]

    async def wait_for(self, run_id: str, event_type: str) -> None:
        """Reads the run's stream until an event of `event_type` (then disconnects)."""
        seen = 0
        while True:
            events = await self.events(run_id, limit=seen + 1)
            seen = len(events)
            if events[-1]["type"] == event_type:
                return
            assert events[-1]["type"] != "run_finished", f"the run ended before {event_type}"


async def api_for(client: httpx.AsyncClient, email: str) -> Api:
    return Api(client, (await sign_up_and_in(client, email))["headers"])


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def user_texts(messages: list[dict]) -> list[str]:
    return [m["content"]["text"] for m in messages if m["type"] == "user"]


async def check_enqueue(api: Api, first_model: str, second_model: str) -> None:
    thread = await api.thread()
    first = await api.started(thread, "first question", first_model)
    second = await api.started(thread, "second question", second_model, "enqueue")
    assert second["status"] == "pending"

    first_events = await api.events(first["agent_run_id"])
    second_events = await api.events(second["agent_run_id"])

    assert first_events[-1]["reason"] == "completed" and second_events[-1]["reason"] == "completed"
    assert second_events[0]["type"] == "run_started"
    one, two = await api.run(first["agent_run_id"]), await api.run(second["agent_run_id"])
    assert (one["status"], two["status"]) == ("completed", "completed")
    assert at(two["started_at"]) >= at(one["completed_at"]), "the second run started after the first ended"
    # The second prompt joined the thread when its run started: after the first run's answer.
    kinds = [(m["type"], m["content"].get("text", "")) for m in await api.messages(thread)]
    second_prompt = kinds.index(("user", "second question"))
    assert kinds[0] == ("user", "first question")
    assert ("assistant" in {k for k, _ in kinds[1:second_prompt]}) and kinds[-1][0] == "assistant"


async def test_reject_is_the_default_and_answers_409(client):
    api = await api_for(client, "reject@example.com")
    thread = await api.thread()
    first = await api.started(thread, "first", "mt-slow")

    for strategy in (None, "reject"):
        refused = await api.start(thread, "second", "mt-quick", strategy)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "run_active"

    assert (await api.events(first["agent_run_id"]))[-1]["reason"] == "completed"
    assert user_texts(await api.messages(thread)) == ["first"]


async def test_an_unknown_strategy_is_422_naming_the_field(client):
    api = await api_for(client, "bad-strategy@example.com")
    thread = await api.thread()

    bad = await api.start(thread, "hi", "mt-quick", "later")

    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "validation_error"
    assert [f["field"] for f in bad.json()["error"]["fields"]] == ["body.multitask_strategy"]
    assert await api.messages(thread) == []


async def test_enqueue_runs_the_second_run_after_the_first(client):
    await check_enqueue(await api_for(client, "enqueue@example.com"), "mt-slow", "mt-quick")


async def test_interrupt_cancels_the_active_run_and_runs_the_new_one(client):
    api = await api_for(client, "interrupt@example.com")
    thread = await api.thread()
    first = await api.started(thread, "long task", "mt-long")
    await api.wait_for(first["agent_run_id"], "tool_call_finished")

    second = await api.started(thread, "do this instead", "mt-quick", "interrupt")
    assert second["status"] == "pending"

    # Left alone the first run would talk for ~10 s more: it ends cancelled well before.
    first_events = await api.events(first["agent_run_id"], timeout=8)
    assert first_events[-1]["reason"] == "cancelled"
    assert (await api.events(second["agent_run_id"]))[-1]["reason"] == "completed"
    one, two = await api.run(first["agent_run_id"]), await api.run(second["agent_run_id"])
    assert (one["status"], two["status"]) == ("cancelled", "completed")
    assert at(two["started_at"]) >= at(one["completed_at"])
    # What the first run wrote is kept, and the new prompt follows it.
    messages = await api.messages(thread)
    types = [m["type"] for m in messages]
    assert types[:3] == ["user", "assistant", "tool"]
    assert user_texts(messages) == ["long task", "do this instead"]
    assert types[-1] == "assistant" and messages[-1]["content"]["text"] == "Quick answer."


async def test_rollback_deletes_the_stopped_runs_messages(client):
    api = await api_for(client, "rollback@example.com")
    thread = await api.thread()
    first = await api.started(thread, "long task", "mt-long")
    await api.wait_for(first["agent_run_id"], "tool_call_finished")
    # agentpress stores a step's assistant message and tool results when the step's model reply
    # has ended, which is after tool_call_finished: wait for them, then check.
    for _ in range(100):
        kinds = [m["type"] for m in await api.messages(thread)][:3]
        if kinds == ["user", "assistant", "tool"]:
            break
        await asyncio.sleep(0.05)
    assert kinds == ["user", "assistant", "tool"]

    second = await api.started(thread, "forget that", "mt-quick", "rollback")

    first_events = await api.events(first["agent_run_id"], timeout=8)
    assert first_events[-1]["reason"] == "cancelled"
    assert (await api.events(second["agent_run_id"]))[-1]["reason"] == "completed"
    assert (await api.run(first["agent_run_id"]))["status"] == "cancelled"
    # The first run's assistant and tool messages are gone; its prompt stays.
    messages = await api.messages(thread)
    assert [(m["type"], m["content"].get("text")) for m in messages] == [
        ("user", "long task"),
        ("user", "forget that"),
        ("assistant", "Quick answer."),
    ]


async def test_the_cap_on_active_runs_answers_429_with_retry_after(client):
    api = await api_for(client, "capped@example.com")
    threads = [await api.thread() for _ in range(CAP + 1)]
    first = await api.started(threads[0], "one", "mt-long")
    others = [await api.started(thread, "more", "mt-long") for thread in threads[1:CAP]]

    refused = await api.start(threads[CAP], "one too many", "mt-quick")

    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_active_runs"
    assert refused.headers["Retry-After"] == str(RETRY_AFTER)
    assert await api.messages(threads[CAP]) == []
    # Waiting runs count too: an enqueue on a busy thread is refused the same way.
    assert (await api.start(threads[0], "later", "mt-quick", "enqueue")).status_code == 429
    # Another account is not affected.
    other = await api_for(client, "uncapped@example.com")
    await other.started(await other.thread(), "mine", "mt-quick")

    # Once a run has ended there is room again.
    stopped = await client.post(f"/api/agent-run/{first['agent_run_id']}/stop", headers=api.headers)
    assert stopped.status_code == 200
    await api.events(first["agent_run_id"], timeout=8)
    await api.started(threads[CAP], "now it fits", "mt-quick")
    for run in others:  # not left running into the stack's shutdown
        await client.post(f"/api/agent-run/{run['agent_run_id']}/stop", headers=api.headers)


@pytest.mark.parametrize("system", ["split"], indirect=True)
async def test_enqueue_in_split_mode(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        await check_enqueue(await api_for(client, "enqueue-split@example.com"), "it-slow", "it-script")
