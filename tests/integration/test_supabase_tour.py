"""The README tour with AGENTRY_AUTH_PROVIDER=supabase, end to end against a fake GoTrue: sign-up,
token, run, stream, refresh, logout; and the token-refusal suite for Supabase-signed tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import pytest_asyncio

from agentry.auth.fake_gotrue import FakeGoTrue
from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn

from .test_identity import FORGERIES, Minter

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}
PASSWORD = "a long password"


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer({"tour": Script(turns=(Turn(text="hello from the sandbox"),))}) as server:
        yield server


@pytest.fixture(scope="module")
def gotrue():
    with FakeGoTrue() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(llm, gotrue, tmp_path_factory) -> AsyncIterator[httpx.AsyncClient]:
    supabase = {
        "provider": "supabase",
        "supabase_url": gotrue.url,
        "supabase_anon_key": gotrue.anon_key,
        "supabase_service_role_key": gotrue.service_role_key,
    }
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=tmp_path_factory.mktemp("supabase"),
            llm_api_base=llm.base_url,
            ports=PORTS,
            auth_overrides=supabase,
            gateway_overrides={"token_verification": "auth"},
        )
        async with httpx.AsyncClient(base_url=f"{dev.gateway_url}/api", timeout=30) as client:
            yield client


async def _sse(client: httpx.AsyncClient, url: str, **kwargs) -> list[tuple[str, dict]]:
    async with client.stream("GET", url, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        events, event_id = [], None
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                events.append((event_id, orjson.loads(line[5:])))
    return events


async def test_the_readme_tour_on_supabase(client, gotrue):
    signup = await client.post("/auth/signup", json={"email": "me@example.com", "password": PASSWORD})
    assert signup.status_code == 201, signup.text
    token = await client.post("/auth/token", json={"email": "me@example.com", "password": PASSWORD})
    assert token.status_code == 200, token.text
    session = token.json()
    auth = {"Authorization": f"Bearer {session['access_token']}"}
    assert ("POST", "/signup") in gotrue.requests and ("POST", "/token") in gotrue.requests

    thread = (await client.post("/threads", json={}, headers=auth)).json()["thread_id"]
    run = await client.post(
        f"/threads/{thread}/agent/start",
        json={"prompt": "say hello from the sandbox", "model_name": "openai/tour"},
        headers=auth,
    )
    assert run.status_code == 202, run.text
    run_id = run.json()["agent_run_id"]
    events = await _sse(client, f"/agent-run/{run_id}/stream", headers=auth)
    assert events[-1][1]["type"] == "run_finished" and events[-1][1]["reason"] == "completed"
    resumed = await _sse(client, f"/agent-run/{run_id}/stream", headers={**auth, "Last-Event-ID": "2"})
    assert resumed == [e for e in events if int(e[0]) > 2]
    stream_token = (await client.post(f"/agent-run/{run_id}/stream-token", headers=auth)).json()["token"]
    assert await _sse(client, f"/agent-run/{run_id}/stream", params={"access_token": stream_token}) == events
    messages = (await client.get(f"/threads/{thread}/messages", headers=auth)).json()["messages"]
    assert "hello from the sandbox" in orjson.dumps(messages).decode()

    refreshed = await client.post("/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    again = await client.post("/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert again.status_code == 401 and again.json()["error"]["code"] == "refresh_token_reused"
    # GoTrue revoked the family: the refreshed pair's refresh token is dead too.
    dead = await client.post("/auth/refresh", json={"refresh_token": refreshed.json()["refresh_token"]})
    assert dead.status_code == 401

    fresh = (await client.post("/auth/token", json={"email": "me@example.com", "password": PASSWORD})).json()
    fresh_auth = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert (await client.post("/auth/logout", headers=fresh_auth)).status_code == 204
    assert (await client.post("/auth/refresh", json={"refresh_token": fresh["refresh_token"]})).status_code == 401
    assert ("POST", "/logout") in gotrue.requests

    jwks = (await client.get("/auth/.well-known/jwks.json")).json()
    assert gotrue.kid in [k["kid"] for k in jwks["keys"]]


async def test_wrong_password_and_unknown_email_answer_the_same(client):
    await client.post("/auth/signup", json={"email": "same@example.com", "password": PASSWORD})
    wrong = await client.post("/auth/token", json={"email": "same@example.com", "password": "not it at all"})
    unknown = await client.post("/auth/token", json={"email": "nobody@example.com", "password": "not it at all"})
    assert wrong.status_code == unknown.status_code == 401 and wrong.json() == unknown.json()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def minter(client, gotrue) -> Minter:
    await client.post("/auth/signup", json={"email": "victim@example.com", "password": PASSWORD})
    user = next(u for u in gotrue.state.users.values() if u.email == "victim@example.com")
    session = gotrue.new_session(user)
    sid = next(s for s, uid in gotrue.state.sessions.items() if uid == user.id)
    assert session["access_token"]
    return Minter(gotrue.key, gotrue.kid, gotrue.claims(user, sid))


async def test_a_token_built_like_gotrues_is_accepted(client, minter):
    assert (
        await client.post("/threads", json={}, headers={"Authorization": f"Bearer {minter.sign()}"})
    ).status_code == 201


@pytest.mark.parametrize("forgery", [f for f in FORGERIES if f != "stream-token-audience"])
async def test_forged_supabase_tokens_are_refused(client, minter, forgery):
    token = FORGERIES[forgery](minter)
    response = await client.post("/threads", json={}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert all(part not in response.text for part in token.split(".") if len(part) > 8)


async def test_api_keys_on_supabase_confirm_the_session_with_gotrue(client, gotrue):
    await client.post("/auth/signup", json={"email": "keys@example.com", "password": PASSWORD})
    session = (await client.post("/auth/token", json={"email": "keys@example.com", "password": PASSWORD})).json()
    auth = {"Authorization": f"Bearer {session['access_token']}"}
    before = gotrue.requests.count(("GET", "/user"))
    created = await client.post("/api-keys", json={"name": "ci"}, headers=auth)
    assert created.status_code == 201, created.text
    assert gotrue.requests.count(("GET", "/user")) == before + 1  # the sensitive action asked GoTrue
    key = created.json()
    assert (await client.post("/threads", json={}, headers={"X-API-Key": key["key"]})).status_code == 201
    assert (await client.delete(f"/api-keys/{key['id']}", headers=auth)).status_code == 204
    assert (await client.post("/threads", json={}, headers={"X-API-Key": key["key"]})).status_code == 401
    # Signed out at GoTrue: the token still verifies locally, but GoTrue's /user refuses it.
    assert (await client.post("/auth/logout", headers=auth)).status_code == 204
    assert (await client.post("/api-keys", json={"name": "late"}, headers=auth)).status_code == 401
