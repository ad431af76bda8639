"""Idempotency-Key over HTTP against the embedded stack: a retried start or message does not run twice.

Starts go through a gateway in front of a runner with no worker, so a run stays queued and a second
start that really reached the runner would answer 409 run_active. That gateway is tried with both
idempotency stores: in memory (as `agentry dev` runs) and in Redis (as split mode runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn
from agentry.gateway.config import GatewaySettings
from agentry.gateway.main import start as start_gateway
from agentry.runner.config import RunnerSettings
from agentry.runner.main import start as start_runner
from agentry.servicekit.eventstream import MemoryEventStream

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery staple"
MODEL = "openai/idem-quick"
SCRIPTS = {"idem-quick": Script(turns=(Turn(text="Hello from the idempotency test."),))}


@dataclass
class System:
    url: str  # the dev stack's own gateway (runs complete)
    idle_url: str  # a gateway whose runner never takes a run (memory store)
    broken_url: str  # a gateway whose billing and runner upstreams are closed ports
    idle_runner_db: Path  # the idle runner's SQLite database, to count runs
    gateway_settings: dict  # what a further gateway in front of the idle runner needs
    idle_events: MemoryEventStream


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
    data_dir = tmp_path_factory.mktemp("idempotency")
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
        idle_db = data_dir / "idle-runner.db"
        idle_runner = await start_runner(
            RunnerSettings(
                port=0,
                database_url=f"sqlite+aiosqlite:///{idle_db}",
                role="api",
                default_model=MODEL,
                billing_target=targets["billing"],
            ),
            stack,
            events=idle_events,
        )
        idle_settings = {
            "auth_target": targets["auth"],
            "billing_target": targets["billing"],
            "sandbox_target": targets["sandbox"],
            "runner_target": idle_runner.target,
        }
        idle = await start_gateway(GatewaySettings(port=0, **idle_settings), stack, events=idle_events)
        broken = await start_gateway(
            GatewaySettings(
                port=0,
                auth_target=targets["auth"],
                billing_target=f"127.0.0.1:{closed_port()}",
                sandbox_target=targets["sandbox"],
                # The start route's upstream is the runner (which asks billing itself).
                runner_target=f"127.0.0.1:{closed_port()}",
            ),
            stack,
            events=dev.events,
        )
        yield System(dev.gateway_url, idle.base_url, broken.base_url, idle_db, idle_settings, idle_events)


@pytest_asyncio.fixture(loop_scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def idle(request, system) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway in front of the worker-less runner, with the store of that mode."""
    if request.param == "memory":
        async with httpx.AsyncClient(base_url=system.idle_url, timeout=20) as client:
            yield client
        return

    from redis import asyncio as aioredis

    redis_url = request.getfixturevalue("redis_url")
    prefix = f"{request.getfixturevalue('unique_name')}:idem:"
    try:
        async with contextlib.AsyncExitStack() as stack:
            # events="redis" chooses the Redis idempotency store (as split mode does); the run events
            # still come from the idle runner's in-process stream.
            gateway = await start_gateway(
                GatewaySettings(
                    port=0, events="redis", redis_url=redis_url, idempotency_prefix=prefix, **system.gateway_settings
                ),
                stack,
                events=system.idle_events,
            )
            async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as client:
                yield client
    finally:
        admin = aioredis.Redis.from_url(redis_url)
        keys = [key async for key in admin.scan_iter(match=f"{prefix}*")]
        if keys:
            await admin.delete(*keys)
        await admin.aclose()


async def sign_in(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"idem-{uuid.uuid4().hex[:8]}@example.com"
    signup = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert signup.status_code == 201, signup.text
    token = await client.post("/api/auth/token", json={"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def new_thread(client: httpx.AsyncClient, headers: dict) -> str:
    response = await client.post("/api/threads", json={}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["thread_id"]


async def texts(client: httpx.AsyncClient, headers: dict, thread_id: str) -> list[str]:
    response = await client.get(f"/api/threads/{thread_id}/messages", headers=headers)
    assert response.status_code == 200, response.text
    return [m["content"].get("text") for m in response.json()["messages"] if m["type"] == "user"]


def runs_of(system: System, thread_id: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(system.idle_runner_db)) as db:
        return [row[0] for row in db.execute("SELECT run_id FROM agent_runs WHERE thread_id = ?", (thread_id,))]


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"it-{uuid.uuid4()}"}


async def test_retried_start_returns_the_same_run_and_starts_no_second_one(system, idle):
    headers = await sign_in(idle)
    thread_id = await new_thread(idle, headers)
    idem = key()
    body = {"model_name": MODEL, "prompt": "do the thing once"}
    first = await idle.post(f"/api/threads/{thread_id}/agent/start", json=body, headers={**headers, **idem})
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    run_id = first.json()["agent_run_id"]
    try:
        for _ in range(2):
            retry = await idle.post(f"/api/threads/{thread_id}/agent/start", json=body, headers={**headers, **idem})
            assert retry.status_code == 202, retry.text
            assert retry.headers["idempotent-replayed"] == "true"
            assert retry.json() == first.json()
        # Without the key the same start reaches the runner, which has one active run already.
        again = await idle.post(f"/api/threads/{thread_id}/agent/start", json=body, headers=headers)
        assert (again.status_code, again.json()["error"]["code"]) == (409, "run_active")
        assert runs_of(system, thread_id) == [run_id]
        assert await texts(idle, headers, thread_id) == ["do the thing once"], "the prompt was added once"
    finally:
        await idle.post(f"/api/agent-run/{run_id}/stop", headers=headers)


async def test_concurrent_retries_start_one_run(system, idle):
    headers = await sign_in(idle)
    thread_id = await new_thread(idle, headers)
    idem = key()
    responses = await asyncio.gather(
        *(
            idle.post(f"/api/threads/{thread_id}/agent/start", json={"model_name": MODEL}, headers={**headers, **idem})
            for _ in range(6)
        )
    )
    try:
        fresh = [r for r in responses if r.status_code == 202 and "idempotent-replayed" not in r.headers]
        assert len(fresh) == 1, [(r.status_code, r.text) for r in responses]
        for response in responses:
            if response.status_code == 409:
                assert response.json()["error"]["code"] == "idempotency_key_in_use"
                assert response.headers["retry-after"] == "1"
            else:
                assert response.status_code == 202 and response.json() == fresh[0].json()
        assert runs_of(system, thread_id) == [fresh[0].json()["agent_run_id"]]
    finally:
        await idle.post(f"/api/agent-run/{fresh[0].json()['agent_run_id']}/stop", headers=headers)


async def test_retried_message_creates_no_second_message(idle):
    headers = await sign_in(idle)
    thread_id = await new_thread(idle, headers)
    idem = key()
    first = await idle.post(
        f"/api/threads/{thread_id}/messages", json={"content": "only once"}, headers={**headers, **idem}
    )
    assert first.status_code == 201, first.text
    retry = await idle.post(
        f"/api/threads/{thread_id}/messages", json={"content": "only once"}, headers={**headers, **idem}
    )
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    assert await texts(idle, headers, thread_id) == ["only once"]
    # A new key is a new message.
    other = await idle.post(
        f"/api/threads/{thread_id}/messages", json={"content": "only once"}, headers={**headers, **key()}
    )
    assert other.status_code == 201 and other.json() != first.json()
    assert await texts(idle, headers, thread_id) == ["only once", "only once"]


async def test_same_key_with_a_different_body_is_422(idle):
    headers = await sign_in(idle)
    thread_id = await new_thread(idle, headers)
    idem = key()
    path = f"/api/threads/{thread_id}/messages"
    assert (await idle.post(path, json={"content": "one"}, headers={**headers, **idem})).status_code == 201
    changed = await idle.post(path, json={"content": "two"}, headers={**headers, **idem})
    assert changed.status_code == 422
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert "different request" in changed.json()["error"]["message"]
    # The same key on another thread is a different request too.
    other_thread = await new_thread(idle, headers)
    moved = await idle.post(
        f"/api/threads/{other_thread}/messages", json={"content": "one"}, headers={**headers, **idem}
    )
    assert (moved.status_code, moved.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert await texts(idle, headers, thread_id) == ["one"] and await texts(idle, headers, other_thread) == []

    start_key = key()
    start = f"/api/threads/{thread_id}/agent/start"
    first = await idle.post(start, json={"model_name": MODEL, "prompt": "a"}, headers={**headers, **start_key})
    assert first.status_code == 202
    try:
        changed = await idle.post(start, json={"model_name": MODEL, "prompt": "b"}, headers={**headers, **start_key})
        assert (changed.status_code, changed.json()["error"]["code"]) == (422, "idempotency_key_reused")
    finally:
        await idle.post(f"/api/agent-run/{first.json()['agent_run_id']}/stop", headers=headers)


async def test_another_account_with_the_same_key_is_independent(system, idle):
    alice, bob = await sign_in(idle), await sign_in(idle)
    shared = key()
    threads = {}
    for who, headers in (("alice", alice), ("bob", bob)):
        threads[who] = await new_thread(idle, headers)
        response = await idle.post(
            f"/api/threads/{threads[who]}/messages", json={"content": f"from {who}"}, headers={**headers, **shared}
        )
        assert response.status_code == 201, response.text
        assert "idempotent-replayed" not in response.headers
    assert await texts(idle, alice, threads["alice"]) == ["from alice"]
    assert await texts(idle, bob, threads["bob"]) == ["from bob"]

    runs = []
    for headers, who in ((alice, "alice"), (bob, "bob")):
        response = await idle.post(
            f"/api/threads/{threads[who]}/agent/start", json={"model_name": MODEL}, headers={**headers, **shared}
        )
        assert response.status_code == 202 and "idempotent-replayed" not in response.headers
        runs.append((headers, response.json()["agent_run_id"]))
    assert runs[0][1] != runs[1][1]
    for headers, run_id in runs:
        await idle.post(f"/api/agent-run/{run_id}/stop", headers=headers)


# (Control characters cannot be sent over HTTP/1.1 at all; the gateway's unit tests cover them.)
@pytest.mark.parametrize("value", ["", "x" * 256, "caf\xe9"], ids=["empty", "too-long", "non-ascii"])
async def test_an_invalid_key_is_400(idle, value):
    headers = await sign_in(idle)
    thread_id = await new_thread(idle, headers)
    for path, body in (
        (f"/api/threads/{thread_id}/messages", {"content": "hi"}),
        (f"/api/threads/{thread_id}/agent/start", {"model_name": MODEL}),
    ):
        response = await idle.post(path, json=body, headers={**headers, "Idempotency-Key": value.encode("latin-1")})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_idempotency_key"
        assert "Idempotency-Key" in response.json()["error"]["message"]
    assert await texts(idle, headers, thread_id) == []


async def test_a_finished_run_is_replayed_not_started_again(system):
    async with httpx.AsyncClient(base_url=system.url, timeout=20) as client:
        headers = await sign_in(client)
        thread_id = await new_thread(client, headers)
        idem = key()
        body = {"model_name": MODEL, "prompt": "hello"}
        first = await client.post(f"/api/threads/{thread_id}/agent/start", json=body, headers={**headers, **idem})
        assert first.status_code == 202
        run_id = first.json()["agent_run_id"]
        async with asyncio.timeout(15):
            while (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()["status"] != "completed":
                await asyncio.sleep(0.05)
        retry = await client.post(f"/api/threads/{thread_id}/agent/start", json=body, headers={**headers, **idem})
        assert retry.status_code == 202 and retry.headers["idempotent-replayed"] == "true"
        assert retry.json() == first.json()
        assert await texts(client, headers, thread_id) == ["hello"]


async def test_an_unreachable_upstream_is_503_with_retry_after_and_frees_the_key(system):
    async with httpx.AsyncClient(base_url=system.url, timeout=20) as working:
        headers = await sign_in(working)
        thread_id = await new_thread(working, headers)  # the broken gateway cannot reach the runner
    async with httpx.AsyncClient(base_url=system.broken_url, timeout=20) as client:
        idem = key()
        for _ in range(2):  # the key was released: the retry runs again (not 409 in use, not a replay)
            response = await client.post(
                f"/api/threads/{thread_id}/agent/start", json={"model_name": MODEL}, headers={**headers, **idem}
            )
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert "idempotent-replayed" not in response.headers
            assert response.json()["error"]["message"] == "an internal service is unavailable; try again"
