"""HTTP -> gateway -> auth, billing -> runner -> queue -> worker -> LiteLLM -> fake LLM -> sandbox
-> events -> SSE, on embedded defaults and in split mode."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from agentry.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from agentry.servicekit import open_channel

from .conftest import BURST_WORDS, FILE_CONTENT, FILE_PATH, TOOL_MARKER

pytestmark = pytest.mark.integration


async def sign_up_and_in(client: httpx.AsyncClient, email: str) -> dict:
    password = "correct horse battery staple"
    signup = await client.post("/api/auth/signup", json={"email": email, "password": password})
    assert signup.status_code == 201, signup.text
    token = await client.post("/api/auth/token", json={"email": email, "password": password})
    assert token.status_code == 200, token.text
    assert token.json()["token_type"] == "bearer"
    return {**signup.json(), "headers": {"Authorization": f"Bearer {token.json()['access_token']}"}}


async def read_sse(response: httpx.Response, *, limit: int | None = None) -> list[tuple[int, bytes]]:
    """(id, data) of each event; stops after `limit` events when given."""
    events: list[tuple[int, bytes]] = []
    event_id, data = None, None
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = int(line[3:].strip())
        elif line.startswith("data:"):
            data = line[5:].strip().encode()
        elif line == "" and data is not None:
            events.append((event_id, data))
            event_id, data = None, None
            if limit is not None and len(events) >= limit:
                break
    return events


async def stream(
    client: httpx.AsyncClient, run_id: str, headers: dict, *, last_event_id: int | None = None, limit: int | None = None
) -> list[tuple[int, bytes]]:
    extra = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers={**headers, **extra}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return await read_sse(response, limit=limit)


async def test_agent_run_end_to_end(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        health = await client.get("/api/health")
        assert health.status_code == 200, health.text

        user = await sign_up_and_in(client, f"alice-{system.mode}@example.com")
        headers = user["headers"]
        thread = await client.post("/api/threads", json={"name": "integration"}, headers=headers)
        assert thread.status_code == 201, thread.text
        thread_id, project_id = thread.json()["thread_id"], thread.json()["project_id"]

        start = await client.post(
            f"/api/threads/{thread_id}/agent/start",
            json={"model_name": "openai/it-script", "prompt": "Run the check."},
            headers=headers,
        )
        assert start.status_code == 202, start.text
        run_id = start.json()["agent_run_id"]
        assert start.json()["status"] == "queued"

        events = await stream(client, run_id, headers)
        seqs = [seq for seq, _ in events]
        assert seqs == list(range(1, len(events) + 1)), "ids are the per-run sequence, no gap"
        decoded = [orjson.loads(data) for _, data in events]
        assert all(e["seq"] == seq for e, seq in zip(decoded, seqs, strict=True))
        types = [e["type"] for e in decoded]
        assert types[0] == "run_started"
        assert types[-1] == "run_finished" and types.count("run_finished") == 1
        assert decoded[-1]["reason"] == "completed"

        text = "".join(e["text"] for e in decoded if e["type"] == "text_delta")
        assert "Let me check the sandbox." in text
        assert "All done: the command ran and the file is written." in text
        assert types.index("text_delta") < types.index("tool_call_finished"), "tokens stream before the end"

        finished = [e for e in decoded if e["type"] == "tool_call_finished"]
        assert [f["name"] for f in finished] == ["run_command", "create_file"]
        assert TOOL_MARKER in finished[0]["output"] and not finished[0]["error"]
        assert not finished[1]["error"]

        run = await client.get(f"/api/agent-run/{run_id}", headers=headers)
        assert run.status_code == 200
        assert run.json()["status"] == "completed"
        assert run.json()["thread_id"] == thread_id
        assert run.json()["started_at"] and run.json()["completed_at"]

        listed = await client.get(f"/api/threads/{thread_id}/messages", headers=headers)
        assert listed.status_code == 200
        messages = listed.json()["messages"]
        assert [m["type"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
        assert messages[0]["content"]["text"] == "Run the check."
        assert TOOL_MARKER in messages[2]["content"]["output"]
        assert "All done" in messages[-1]["content"]["text"]

        # Resuming after any event yields exactly the rest: no gap, no duplicate.
        for cut in (1, len(events) // 2, len(events) - 1):
            rest = await stream(client, run_id, headers, last_event_id=cut)
            assert rest == events[cut:]
        # After the last event of a finished run: 204, an EventSource stops reconnecting.
        after_end = await client.get(
            f"/api/agent-run/{run_id}/stream", headers={**headers, "Last-Event-ID": str(len(events))}
        )
        assert (after_end.status_code, after_end.content) == (204, b"")

    # The file the tool wrote, read back through the sandbox service.
    async with open_channel(system.sandbox_target, system.internal_token) as channel:
        sandbox = sandbox_pb2_grpc.SandboxServiceStub(channel)
        box = await sandbox.CreateSandbox(
            sandbox_pb2.CreateSandboxRequest(account_id=user["account_id"], project_id=project_id)
        )
        content = await sandbox.ReadFile(
            sandbox_pb2.ReadFileRequest(account_id=user["account_id"], sandbox_id=box.sandbox_id, path=FILE_PATH)
        )
        assert content.content.decode() == FILE_CONTENT


async def test_resume_after_disconnect_mid_run(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        user = await sign_up_and_in(client, f"bob-{system.mode}@example.com")
        headers = user["headers"]
        thread_id = (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]
        run_id = (
            await client.post(
                f"/api/threads/{thread_id}/agent/start",
                json={"model_name": "openai/it-slow", "prompt": "talk slowly"},
                headers=headers,
            )
        ).json()["agent_run_id"]
        first = await stream(client, run_id, headers, limit=5)  # then the connection drops
        assert [s for s, _ in first] == [1, 2, 3, 4, 5]
        status = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()["status"]
        assert status in ("running", "completed")
        rest = await stream(client, run_id, headers, last_event_id=first[-1][0])
        whole = first + rest
        assert [s for s, _ in whole] == list(range(1, len(whole) + 1))
        assert orjson.loads(whole[-1][1])["type"] == "run_finished"
        text = "".join(orjson.loads(d).get("text", "") for _, d in whole if b'"text_delta"' in d)
        assert text.split() == [f"word{i}" for i in range(40)]
        # A fresh reader from the start sees the same bytes.
        assert await stream(client, run_id, headers) == whole


async def test_a_coalesced_stream_is_dense_and_resumes_exactly_from_every_event(system):
    """A reply streamed faster than AGENTRY_RUNNER_DELTA_COALESCE_MS merges its deltas into fewer
    events: the ids stay the per-run sequence, the text is the model's, and a reader that resumes
    after any event gets exactly the rest."""
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        headers = (await sign_up_and_in(client, f"carol-{system.mode}@example.com"))["headers"]
        thread_id = (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]
        run_id = (
            await client.post(
                f"/api/threads/{thread_id}/agent/start",
                json={"model_name": "openai/it-burst", "prompt": "say it all"},
                headers=headers,
            )
        ).json()["agent_run_id"]
        events = await stream(client, run_id, headers)
        assert [s for s, _ in events] == list(range(1, len(events) + 1))
        decoded = [orjson.loads(d) for _, d in events]
        assert decoded[-1]["type"] == "run_finished" and decoded[-1]["reason"] == "completed"
        text = "".join(e["text"] for e in decoded if e["type"] == "text_delta")
        assert text.split() == BURST_WORDS
        types = [e["type"] for e in decoded]
        last_delta = len(types) - 1 - types[::-1].index("text_delta")
        assert last_delta < types.index("message_completed"), "every delta precedes the completed message"
        for cut in range(1, len(events)):
            assert await stream(client, run_id, headers, last_event_id=cut) == events[cut:], cut


async def test_stop_really_stops(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        user = await sign_up_and_in(client, f"carol-{system.mode}@example.com")
        headers = user["headers"]
        thread_id = (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]
        run_id = (
            await client.post(
                f"/api/threads/{thread_id}/agent/start",
                json={"model_name": "openai/it-long", "prompt": "go"},
                headers=headers,
            )
        ).json()["agent_run_id"]
        await stream(client, run_id, headers, limit=3)  # the run is live
        stop = await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
        assert stop.status_code == 200
        assert stop.json()["status"] in ("cancelling", "cancelled")
        # Left alone the model would talk for ~10 s more: ending well before proves the stop.
        events = await asyncio.wait_for(stream(client, run_id, headers), timeout=6)
        last = orjson.loads(events[-1][1])
        assert last["type"] == "run_finished" and last["reason"] == "cancelled"
        run = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()
        assert run["status"] == "cancelled"
        # The thread is free again: a new run may start.
        again = await client.post(
            f"/api/threads/{thread_id}/agent/start", json={"model_name": "openai/it-script"}, headers=headers
        )
        assert again.status_code == 202
