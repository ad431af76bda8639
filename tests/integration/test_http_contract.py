"""The HTTP contract of /api, route by route: status codes, body shapes, SSE framing, health.

On the embedded dev stack, plus two more gateways over its services: one in front of a runner that
has no worker (its runs stay queued, so streams stay idle), one whose billing target is a closed
port (health must name it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import orjson
import pytest
import pytest_asyncio

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn
from agentry.gateway.config import GatewaySettings
from agentry.gateway.main import start as start_gateway
from agentry.runner.config import RunnerSettings
from agentry.runner.main import start as start_runner
from agentry.servicekit.eventstream import EventStreamUnavailable, MemoryEventStream

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery staple"
KEEPALIVE_SECONDS = 0.2
SCRIPTS = {"ct-quick": Script(turns=(Turn(text="Hello from the contract test."),))}
ROUTES = {
    "/api/auth/signup": {"post"},
    "/api/auth/token": {"post"},
    "/api/auth/refresh": {"post"},
    "/api/auth/logout": {"post"},
    "/api/auth/password": {"post"},
    "/api/auth/.well-known/jwks.json": {"get"},
    "/api/api-keys": {"get", "post"},
    "/api/api-keys/{api_key_id}": {"delete"},
    "/api/agent-run/{run_id}/stream-token": {"post"},
    "/api/threads/{thread_id}/stream-token": {"post"},
    "/api/accounts": {"get", "post"},
    "/api/accounts/invitations/accept": {"post"},
    "/api/accounts/{account_id}/members": {"get"},
    "/api/accounts/{account_id}/invitations": {"post"},
    "/api/accounts/{account_id}/members/{user_id}": {"patch", "delete"},
    "/api/threads": {"get", "post"},
    "/api/threads/{thread_id}/runs": {"get"},
    "/api/threads/{thread_id}/messages/{message_id}": {"delete"},
    "/api/agent/initiate": {"post"},
    "/api/me": {"get"},
    "/api/threads/{thread_id}/messages": {"get", "post"},
    "/api/threads/{thread_id}/agent/start": {"post"},
    "/api/agent-run/{run_id}": {"get"},
    "/api/agent-run/{run_id}/stream": {"get"},
    "/api/agent-run/{run_id}/stop": {"post"},
    "/api/agent-run/{run_id}/resume": {"post"},
    "/api/threads/{thread_id}/stream": {"get"},
    "/api/threads/{thread_id}": {"get", "patch", "delete"},
    "/api/sandboxes": {"get"},
    "/api/sandboxes/{sandbox_id}": {"get", "delete"},
    "/api/sandboxes/{sandbox_id}/files": {"get", "post", "delete"},
    "/api/sandboxes/{sandbox_id}/files/content": {"get"},
    "/api/sandboxes/{sandbox_id}/exec": {"post"},
    "/api/sandboxes/{sandbox_id}/preview/{port}": {"get"},
    "/api/sandboxes/{sandbox_id}/preview/{port}/proxy/{path}": {"get"},
    "/api/projects/{project_id}/sandbox/ensure-active": {"post"},
    "/api/health": {"get"},
    "/api/health/live": {"get"},
    "/api/billing/plans": {"get"},
    "/api/billing/subscription": {"get"},
    "/api/billing/usage": {"get"},
    "/api/billing/checkout": {"post"},
    "/api/billing/portal": {"post"},
    "/api/billing/webhook": {"post"},
}


@dataclass
class System:
    url: str  # the dev stack's own gateway
    idle_url: str  # a gateway whose runner never takes a run, keep-alive every KEEPALIVE_SECONDS
    broken_url: str  # a gateway whose billing upstream is a closed port
    no_events_url: str  # a gateway whose event stream cannot be reached


class UnreachableEvents(MemoryEventStream):
    """An event stream whose store is down (Redis past its reconnect window)."""

    async def first_seq(self, run_id: str):
        raise EventStreamUnavailable(f"cannot read run {run_id}: connection refused")

    async def read(self, run_id: str, after_seq: int, **kwargs):
        raise EventStreamUnavailable(f"cannot read run {run_id}: connection refused")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer(SCRIPTS) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(llm, tmp_path_factory) -> AsyncIterator[System]:
    data_dir = tmp_path_factory.mktemp("contract")
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=data_dir,
            llm_api_base=llm.base_url,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
        )
        targets = {name: f"127.0.0.1:{port}" for name, port in dev.ports.items()}
        idle_events = MemoryEventStream()
        stack.push_async_callback(idle_events.close)
        idle_runner = await start_runner(
            RunnerSettings(
                port=0,
                database_url=f"sqlite+aiosqlite:///{data_dir / 'idle-runner.db'}",
                role="api",
                default_model="openai/ct-quick",
                billing_target=targets["billing"],
            ),
            stack,
            events=idle_events,
        )
        idle = await start_gateway(
            GatewaySettings(
                port=0,
                auth_target=targets["auth"],
                billing_target=targets["billing"],
                sandbox_target=targets["sandbox"],
                runner_target=idle_runner.target,
                keepalive_seconds=KEEPALIVE_SECONDS,
            ),
            stack,
            events=idle_events,
        )
        broken = await start_gateway(
            GatewaySettings(
                port=0,
                auth_target=targets["auth"],
                billing_target=f"127.0.0.1:{closed_port()}",
                sandbox_target=targets["sandbox"],
                runner_target=targets["runner"],
            ),
            stack,
            events=dev.events,
        )
        no_events = await start_gateway(
            GatewaySettings(
                port=0,
                auth_target=targets["auth"],
                billing_target=targets["billing"],
                sandbox_target=targets["sandbox"],
                runner_target=targets["runner"],
            ),
            stack,
            events=UnreachableEvents(),
        )
        yield System(dev.gateway_url, idle.base_url, broken.base_url, no_events.base_url)


@pytest_asyncio.fixture(loop_scope="module")
async def client(system) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url, timeout=20) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def idle(system) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.idle_url, timeout=20) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def headers(system) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=system.url, timeout=20) as client:
        await client.post("/api/auth/signup", json={"email": "contract@example.com", "password": PASSWORD})
        token = await client.post("/api/auth/token", json={"email": "contract@example.com", "password": PASSWORD})
        return {"Authorization": f"Bearer {token.json()['access_token']}"}


def iso(value: str) -> datetime:
    """An ISO-8601 timestamp with an explicit UTC offset."""
    assert isinstance(value, str) and "T" in value, value
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


async def new_thread(client: httpx.AsyncClient, headers: dict) -> str:
    response = await client.post("/api/threads", json={}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["thread_id"]


async def start(client: httpx.AsyncClient, headers: dict, thread_id: str, **body) -> str:
    body.setdefault("model_name", "openai/ct-quick")
    response = await client.post(f"/api/threads/{thread_id}/agent/start", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["agent_run_id"]


@dataclass
class Sse:
    events: list[tuple[int, dict]]
    comments: list[str]
    retry: int | None


async def read_sse(response: httpx.Response, *, stop_at_comment: bool = False) -> Sse:
    sse = Sse([], [], None)
    event_id, data = None, None
    async for line in response.aiter_lines():
        if line.startswith(":"):
            sse.comments.append(line)
            if stop_at_comment:
                break
        elif line.startswith("retry:"):
            sse.retry = int(line[6:])
        elif line.startswith("id:"):
            event_id = int(line[3:])
        elif line.startswith("data:"):
            data = orjson.loads(line[5:])
        elif line == "" and data is not None:
            sse.events.append((event_id, data))
            event_id, data = None, None
    return sse


async def stream(client: httpx.AsyncClient, run_id: str, headers: dict, **kwargs) -> Sse:
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        return await asyncio.wait_for(read_sse(response), timeout=15)


# --- auth --------------------------------------------------------------------------------------


async def test_signup_and_token(client):
    signup = await client.post("/api/auth/signup", json={"email": "shape@example.com", "password": PASSWORD})
    assert signup.status_code == 201
    assert signup.headers["content-type"] == "application/json"
    assert set(signup.json()) == {"user_id", "account_id"}
    assert all(isinstance(v, str) and v for v in signup.json().values())

    token = await client.post("/api/auth/token", json={"email": "shape@example.com", "password": PASSWORD})
    assert token.status_code == 200
    body = token.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer" and body["refresh_token"].startswith("agentry_rt_")
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert body["access_token"].count(".") == 2


# --- threads and messages ----------------------------------------------------------------------


async def test_create_thread_with_and_without_a_body(client, headers):
    for kwargs in ({"json": {"name": "named"}}, {"json": {}}, {}):
        response = await client.post("/api/threads", headers=headers, **kwargs)
        assert response.status_code == 201, response.text
        assert set(response.json()) == {
            "thread_id",
            "project_id",
            "sandbox_id",
            "name",
            "created_at",
            "updated_at",
            "last_run_status",
            "message_count",
        }
        ids = {k: v for k, v in response.json().items() if k in ("thread_id", "project_id", "sandbox_id")}
        assert all(isinstance(v, str) and v for v in ids.values())
        assert response.json()["sandbox_id"].startswith("sbx_")
        assert (response.json()["message_count"], response.json()["last_run_status"]) == (0, None)


async def test_messages(client, headers):
    thread_id = await new_thread(client, headers)
    empty = await client.get(f"/api/threads/{thread_id}/messages", headers=headers)
    assert (empty.status_code, empty.json()) == (200, {"messages": [], "next_cursor": None})

    ids = []
    for text in ("first", "second"):
        created = await client.post(f"/api/threads/{thread_id}/messages", json={"content": text}, headers=headers)
        assert created.status_code == 201
        assert set(created.json()) == {"message_id"}
        ids.append(created.json()["message_id"])

    listed = await client.get(f"/api/threads/{thread_id}/messages", headers=headers)
    assert listed.status_code == 200
    assert set(listed.json()) == {"messages", "next_cursor"}
    messages = listed.json()["messages"]
    assert [m["message_id"] for m in messages] == ids
    for message, text in zip(messages, ("first", "second"), strict=True):
        assert set(message) == {"message_id", "type", "content", "created_at"}
        assert message["type"] == "user"
        assert message["content"]["text"] == text
        iso(message["created_at"])
    assert iso(messages[0]["created_at"]) <= iso(messages[1]["created_at"])


# --- runs --------------------------------------------------------------------------------------


async def test_run_lifecycle(client, headers):
    thread_id = await new_thread(client, headers)
    response = await client.post(
        f"/api/threads/{thread_id}/agent/start", json={"model_name": "openai/ct-quick", "prompt": "hi"}, headers=headers
    )
    assert response.status_code == 202
    assert set(response.json()) == {"agent_run_id", "status"}
    assert response.json()["status"] == "queued"
    run_id = response.json()["agent_run_id"]

    sse = await stream(client, run_id, headers)
    assert sse.retry == 1000
    assert [seq for seq, _ in sse.events] == list(range(1, len(sse.events) + 1))
    assert all(event["seq"] == seq and isinstance(event["type"], str) for seq, event in sse.events)
    types = [event["type"] for _, event in sse.events]
    assert types[0] == "run_started" and types[-1] == "run_finished" and types.count("run_finished") == 1

    run = await client.get(f"/api/agent-run/{run_id}", headers=headers)
    assert run.status_code == 200
    body = run.json()
    assert set(body) == {
        "agent_run_id",
        "thread_id",
        "status",
        "error",
        "created_at",
        "started_at",
        "completed_at",
        "finish_reason",
        "phase",
        "phase_detail",
        "phase_since",
        "attempt",
        "pending",
    }
    assert (body["finish_reason"], body["phase"], body["attempt"], body["pending"]) == (
        "completed",
        "finished",
        1,
        None,
    )
    assert (body["agent_run_id"], body["thread_id"], body["status"], body["error"]) == (
        run_id,
        thread_id,
        "completed",
        None,
    )
    assert iso(body["created_at"]) <= iso(body["started_at"]) <= iso(body["completed_at"])

    stop = await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
    assert stop.status_code == 200
    assert stop.json() == {"agent_run_id": run_id, "status": "completed"}, "stopping a finished run changes nothing"


async def test_start_without_a_body_uses_the_default_model(client, headers):
    # The dev stack's default is the scripted demo model, which the fake LLM always serves.
    thread_id = await new_thread(client, headers)
    response = await client.post(f"/api/threads/{thread_id}/agent/start", headers=headers)
    assert response.status_code == 202, response.text
    sse = await stream(client, response.json()["agent_run_id"], headers)
    assert sse.events[-1][1]["type"] == "run_finished" and sse.events[-1][1]["reason"] == "completed"


async def test_queued_run_fields_and_second_start_conflict(idle, headers):
    thread_id = await new_thread(idle, headers)
    run_id = await start(idle, headers, thread_id, model_name="openai/ct-quick")
    run = (await idle.get(f"/api/agent-run/{run_id}", headers=headers)).json()
    assert run["status"] == "queued"
    assert run["started_at"] is None and run["completed_at"] is None and run["error"] is None
    iso(run["created_at"])
    again = await idle.post(f"/api/threads/{thread_id}/agent/start", json={}, headers=headers)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "run_active"
    await idle.post(f"/api/agent-run/{run_id}/stop", headers=headers)


async def test_stopping_a_queued_run_ends_its_stream_with_one_terminal_event(idle, headers):
    thread_id = await new_thread(idle, headers)
    run_id = await start(idle, headers, thread_id)
    async with idle.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert await anext(lines) == "retry: 1000"  # the stream is open and waiting
        stop = await idle.post(f"/api/agent-run/{run_id}/stop", headers=headers)
        assert stop.status_code == 200
        assert stop.json() == {"agent_run_id": run_id, "status": "cancelled"}
        rest = []
        async with asyncio.timeout(10):
            async for line in lines:
                rest.append(line)
    data = [orjson.loads(line[5:]) for line in rest if line.startswith("data:")]
    assert [(d["type"], d["reason"], d["seq"]) for d in data] == [("run_finished", "cancelled", 1)]
    assert [line for line in rest if line.startswith("id:")] == ["id: 1"]
    # A later reader (from the start, and after the end) sees the same single event, then the end.
    assert [(seq, e["type"]) for seq, e in (await stream(idle, run_id, headers)).events] == [(1, "run_finished")]
    # After the end: 204, so an EventSource stops reconnecting (never a 200 that says nothing).
    after_end = await idle.get(f"/api/agent-run/{run_id}/stream", headers={**headers, "Last-Event-ID": "1"})
    assert (after_end.status_code, after_end.content) == (204, b"")
    assert (await idle.get(f"/api/agent-run/{run_id}", headers=headers)).json()["status"] == "cancelled"


async def test_idle_stream_sends_keepalive_comments(idle, headers):
    thread_id = await new_thread(idle, headers)
    run_id = await start(idle, headers, thread_id)
    try:
        async with idle.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
            assert response.status_code == 200
            sse = await asyncio.wait_for(read_sse(response, stop_at_comment=True), timeout=KEEPALIVE_SECONDS * 20)
        assert sse.comments == [": keep-alive"]
        assert sse.events == []
    finally:
        await idle.post(f"/api/agent-run/{run_id}/stop", headers=headers)


@pytest.mark.parametrize(
    "value",
    ["abc", "-1", "1.5", "0x10", "1 2", "²", "1³", "9" * 30, "9" * 5000],
    ids=[
        "letters",
        "negative",
        "decimal",
        "hex",
        "two-numbers",
        "superscript",
        "digit-superscript",
        "above-int64",
        "5000-digits",
    ],
)
async def test_bad_last_event_id_is_400(client, headers, value):
    thread_id = await new_thread(client, headers)
    run_id = await start(client, headers, thread_id)
    await stream(client, run_id, headers)  # let it finish
    # Header bytes reach the app latin-1 decoded: b"\xb2" arrives as "²", which str.isdigit() accepts.
    response = await client.get(
        f"/api/agent-run/{run_id}/stream", headers={**headers, "Last-Event-ID": value.encode("latin-1")}
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_last_event_id"


async def test_last_event_id_resumes_after_that_event(client, headers):
    thread_id = await new_thread(client, headers)
    run_id = await start(client, headers, thread_id)
    whole = await stream(client, run_id, headers)
    n = len(whole.events)
    for cut in (0, 1, n - 1):
        rest = await stream(client, run_id, {**headers, "Last-Event-ID": str(cut)})
        assert rest.events == whole.events[cut:]
    for past in (n, n + 100):  # at or past the end of the finished run: 204, nothing more will come
        done = await client.get(f"/api/agent-run/{run_id}/stream", headers={**headers, "Last-Event-ID": str(past)})
        assert (done.status_code, done.content) == (204, b"")


async def test_stream_token_in_the_query_works_for_that_stream_only(client, headers):
    token = headers["Authorization"].removeprefix("Bearer ")
    thread_id = await new_thread(client, headers)
    run_id = await start(client, headers, thread_id)
    issued = await client.post(f"/api/agent-run/{run_id}/stream-token", headers=headers)
    assert issued.status_code == 200, issued.text
    stream_token = issued.json()["token"]
    assert 0 < issued.json()["expires_in"] <= 300
    sse = await stream(client, run_id, {}, params={"access_token": stream_token})
    assert sse.events[-1][1]["type"] == "run_finished"
    # The long-lived access token no longer opens the stream from a URL, and garbage never did.
    for bad in (token, "nope"):
        refused = await client.get(f"/api/agent-run/{run_id}/stream", params={"access_token": bad})
        assert refused.status_code == 401
    # A stream token is not a credential anywhere else, not even as a header.
    for method, path in (
        ("GET", f"/api/agent-run/{run_id}"),
        ("POST", f"/api/agent-run/{run_id}/stop"),
        ("GET", f"/api/threads/{thread_id}/messages"),
    ):
        response = await client.request(method, path, params={"access_token": stream_token})
        assert response.status_code == 401, (method, path)
        assert response.json()["error"]["code"] == "unauthenticated"
        response = await client.request(method, path, headers={"Authorization": f"Bearer {stream_token}"})
        assert response.status_code == 401, (method, path)


async def test_unknown_ids_are_404_with_the_error_body(client, headers):
    for method, path in (
        ("GET", "/api/threads/nope/messages"),
        ("GET", "/api/agent-run/nope"),
        ("GET", "/api/agent-run/nope/stream"),
        ("POST", "/api/agent-run/nope/stop"),
    ):
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 404
        assert set(response.json()["error"]) == {"code", "message"}
    unknown = await client.get("/api/no-such-route")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")


# --- health and docs ---------------------------------------------------------------------------


async def test_health(client):
    response = await client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "upstreams": dict.fromkeys(("auth", "billing", "sandbox", "runner"), "serving"),
    }


async def test_health_names_the_upstream_that_is_down(system):
    async with httpx.AsyncClient(base_url=system.broken_url, timeout=20) as client:
        response = await client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["upstreams"]["billing"].startswith("unreachable")
    assert {k: v for k, v in body["upstreams"].items() if k != "billing"} == {
        "auth": "serving",
        "sandbox": "serving",
        "runner": "serving",
    }


async def test_openapi_and_docs(client):
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "openapi.json" in docs.text
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {path: set(ops) for path, ops in paths.items()} == ROUTES
    assert "text/event-stream" in paths["/api/agent-run/{run_id}/stream"]["get"]["responses"]["200"]["content"]
    assert paths["/api/threads/{thread_id}/agent/start"]["post"]["responses"].keys() >= {"202"}
    assert paths["/api/auth/signup"]["post"]["responses"].keys() >= {"201"}


async def test_a_stream_whose_event_store_is_down_is_503_before_it_starts(system, client, headers):
    thread_id = await new_thread(client, headers)
    run_id = await start(client, headers, thread_id, model_name="openai/ct-quick")
    async with httpx.AsyncClient(base_url=system.no_events_url, timeout=20) as other:
        response = await other.get(f"/api/agent-run/{run_id}/stream", headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert not response.headers["content-type"].startswith("text/event-stream")
