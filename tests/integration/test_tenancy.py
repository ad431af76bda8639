"""Tenant isolation over every route of the OpenAPI document: another account's resource is a 404
(never a 403, never data), whatever the route. A route the test cannot place in a tenancy case
fails it, so a new route is covered the day it is added."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "correct horse battery staple"
SECRET = "the owner's secret plan"
PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}

# Routes that need no credential: nothing in them belongs to an account.
PUBLIC = {
    "POST /api/auth/signup": "creates an identity",
    "POST /api/auth/token": "signs in",
    "POST /api/auth/refresh": "the refresh token is the credential (its family is its tenancy: test_identity)",
    "GET /api/auth/.well-known/jwks.json": "public keys",
    "GET /api/health": "liveness of the upstreams",
    "GET /api/health/live": "liveness of the process",
    "POST /api/billing/webhook": "Stripe's; the signature is the credential, the event names its own customer",
}
# Routes whose stream answer is checked on the status line only (they would never end otherwise).
STREAMS = {"GET /api/threads/{thread_id}/stream", "GET /api/agent-run/{run_id}/stream"}
# Account-admin routes: a team member with the plain member role is refused (403: they know the
# team exists), and changes nothing.
NEEDS_ADMIN = {
    "POST /api/accounts/{account_id}/invitations",
    "PATCH /api/accounts/{account_id}/members/{user_id}",
    "DELETE /api/accounts/{account_id}/members/{user_id}",
}


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer({"ten-quick": Script(turns=(Turn(text="done"),))}) as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(llm, tmp_path_factory) -> AsyncIterator[httpx.AsyncClient]:
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack, data_dir=tmp_path_factory.mktemp("tenancy"), llm_api_base=llm.base_url, ports=PORTS
        )
        async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=30) as client:
            yield client


async def _person(client: httpx.AsyncClient, name: str) -> dict:
    email = f"{name}@tenancy.example"
    signup = (await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})).json()
    token = (await client.post("/api/auth/token", json={"email": email, "password": PASSWORD})).json()
    return {**signup, "email": email, "headers": {"Authorization": f"Bearer {token['access_token']}"}}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(client) -> dict:
    """The owner's resources, one of each kind a path parameter can name."""
    ada, bob, eve = await _person(client, "ada"), await _person(client, "bob"), await _person(client, "eve")
    h = ada["headers"]
    team = (await client.post("/api/accounts", json={"name": "Acme"}, headers=h)).json()
    invitation = (
        await client.post(
            f"/api/accounts/{team['id']}/invitations", json={"email": bob["email"], "role": "member"}, headers=h
        )
    ).json()
    assert (
        await client.post(
            "/api/accounts/invitations/accept", json={"token": invitation["token"]}, headers=bob["headers"]
        )
    ).status_code == 200
    thread = await client.post("/api/threads", json={"name": "ada's"}, headers=h)
    thread_id = thread.json()["thread_id"]
    message = await client.post(f"/api/threads/{thread_id}/messages", json={"content": SECRET}, headers=h)
    assert message.status_code == 201, message.text
    run = await client.post(f"/api/threads/{thread_id}/agent/start", json={"model_name": "openai/ten-quick"}, headers=h)
    assert run.status_code == 202, run.text
    key = (await client.post("/api/api-keys", json={"name": "ada's key"}, headers=h)).json()
    project_id = thread.json()["project_id"]
    params = {
        "thread_id": thread_id,
        "run_id": run.json()["agent_run_id"],
        "api_key_id": key["id"],
        "account_id": team["id"],
        "user_id": bob["user_id"],
        "project_id": project_id,
        "message_id": message.json()["message_id"],
        # Not resources: any valid value (the resource they are under is the owner's).
        "port": "8080",
        "path": "index.html",
    }
    paths = (await client.get("/openapi.json")).json()["paths"]
    if "/api/projects/{project_id}/sandbox/ensure-active" in paths:  # the sandbox routes (issue 8)
        box = await client.post(f"/api/projects/{project_id}/sandbox/ensure-active", headers=h)
        assert box.status_code == 200, box.text
        params["sandbox_id"] = box.json()["sandbox_id"]
    return {
        "ada": ada,
        "bob": bob,
        "eve": eve,
        "team": team,
        "params": params,
        "owner_data": [SECRET, ada["email"], "ada's key", "Acme", key["key"]],
    }


def _example(schema: dict, spec: dict) -> Any:
    """A minimal valid value for a JSON schema of the spec (bodies the routes accept)."""
    if "$ref" in schema:
        target: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _example(target, spec)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _example(next(s for s in schema[key] if s.get("type") != "null"), spec)
    if "enum" in schema:
        return schema["enum"][-1]
    kind = schema.get("type")
    if kind == "object":
        return {
            name: _example(prop, spec)
            for name, prop in schema.get("properties", {}).items()
            if name in schema.get("required", [])
        }
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if schema.get("format") == "date-time":
        return "2099-01-01T00:00:00Z"
    if schema.get("format") == "email" or "email" in schema.get("title", "").lower():
        return "someone@tenancy.example"
    return "x" * max(1, schema.get("minLength", 1))


def _routes(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def _body(op: dict, spec: dict) -> Any:
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        return _example(content["application/json"]["schema"], spec)
    if "multipart/form-data" in content:  # fields first, then files, as the form declares them
        schema = content["multipart/form-data"]["schema"]
        props = {
            name: prop for name, prop in schema.get("properties", {}).items() if name in schema.get("required", [])
        }
        return _Multipart(
            data={n: _example(p, spec) for n, p in props.items() if p.get("format") != "binary"},
            files={n: (f"{n}.txt", b"x") for n, p in props.items() if p.get("format") == "binary"},
        )
    return None


@dataclass
class _Multipart:
    data: dict
    files: dict


def _query(op: dict, spec: dict, params: dict) -> dict:
    """The route's required query parameters, filled like its path (or with a valid example)."""
    return {
        p["name"]: params.get(p["name"]) or _example(p.get("schema", {}), spec)
        for p in op.get("parameters", [])
        if p.get("in") == "query" and p.get("required")
    }


async def _call(
    client, method: str, path: str, params: dict, headers: dict, body: Any, query: dict | None = None
) -> httpx.Response:
    url = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: params[m.group(1)], path)
    if f"{method} {path}" in STREAMS:
        async with client.stream(method, url, headers=headers, params=query) as response:
            await response.aread() if response.status_code != 200 else None
            return response
    if isinstance(body, _Multipart):
        return await client.request(method, url, headers=headers, data=body.data, files=body.files, params=query)
    return await client.request(method, url, headers=headers, json=body, params=query)


def _refused_like_missing(response: httpx.Response, world: dict, route: str) -> None:
    assert response.status_code == 404, f"{route}: {response.status_code} {response.text}"
    assert set(response.json()) == {"error"}, route
    assert not any(secret in response.text for secret in world["owner_data"]), route


async def test_every_route_has_a_tenancy_case_and_the_outsider_gets_404(client, world):
    spec = (await client.get("/openapi.json")).json()
    routes = _routes(spec)
    known = set(world["params"])
    uncovered = [
        f"{m} {p}" for m, p, _ in routes if f"{m} {p}" not in PUBLIC and not set(re.findall(r"\{(\w+)\}", p)) <= known
    ]
    assert not uncovered, (
        f"routes with no tenancy case (a path parameter this test cannot fill with "
        f"another account's resource): {uncovered}"
    )
    eve = world["eve"]
    covered = 0
    for method, path, op in routes:
        route = f"{method} {path}"
        if route in PUBLIC:
            continue
        body, query = _body(op, spec), _query(op, spec, world["params"])
        placeholders = re.findall(r"\{(\w+)\}", path)
        if placeholders:
            # The owner's resource, asked for by the outsider: as if it did not exist.
            _refused_like_missing(
                await _call(client, method, path, world["params"], eve["headers"], body, query), world, route
            )
        # Any route, acting for the owner's account: the outsider is not a member of it.
        acting = {**eve["headers"], "X-Account-Id": world["team"]["id"]}
        _refused_like_missing(await _call(client, method, path, world["params"], acting, body, query), world, route)
        covered += 1
    assert covered >= 20


async def test_the_owners_resources_are_intact_after_the_outsider(client, world):
    ada, params = world["ada"], world["params"]
    messages = await client.get(f"/api/threads/{params['thread_id']}/messages", headers=ada["headers"])
    assert SECRET in messages.text
    keys = (await client.get("/api/api-keys", headers=ada["headers"])).json()["api_keys"]
    assert [k["id"] for k in keys] == [params["api_key_id"]]
    members = (await client.get(f"/api/accounts/{params['account_id']}/members", headers=ada["headers"])).json()
    assert {m["email"]: m["role"] for m in members["members"]} == {
        ada["email"]: "owner",
        world["bob"]["email"]: "member",
    }


async def test_a_member_without_the_role_is_refused_and_changes_nothing(client, world):
    spec = (await client.get("/openapi.json")).json()
    bob, ada, params = world["bob"], world["ada"], {**world["params"], "user_id": world["ada"]["user_id"]}
    admin_routes = [(m, p, op) for m, p, op in _routes(spec) if f"{m} {p}" in NEEDS_ADMIN]
    assert len(admin_routes) == len(NEEDS_ADMIN)
    for method, path, op in admin_routes:
        response = await _call(client, method, path, params, bob["headers"], _body(op, spec))
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "role_required"
    # What a member may do: read the members, and work in the team's threads.
    assert (
        await client.get(f"/api/accounts/{params['account_id']}/members", headers=bob["headers"])
    ).status_code == 200
    in_team = {**bob["headers"], "X-Account-Id": params["account_id"]}
    thread = await client.post("/api/threads", json={"name": "team work"}, headers=in_team)
    assert thread.status_code == 201
    team_thread = thread.json()["thread_id"]
    assert (
        await client.get(
            f"/api/threads/{team_thread}/messages", headers={**ada["headers"], "X-Account-Id": params["account_id"]}
        )
    ).status_code == 200
    # ...and only while acting for the team: from Ada's personal account, it is not there.
    assert (await client.get(f"/api/threads/{team_thread}/messages", headers=ada["headers"])).status_code == 404
    members = (await client.get(f"/api/accounts/{params['account_id']}/members", headers=ada["headers"])).json()
    assert {m["email"]: m["role"] for m in members["members"]} == {ada["email"]: "owner", bob["email"]: "member"}


async def test_an_api_key_acts_for_its_one_account(client, world):
    ada = world["ada"]
    key = (await client.post("/api/api-keys", json={"name": "personal"}, headers=ada["headers"])).json()["key"]
    # Ada is an owner of the team, but her personal key cannot switch to it.
    response = await client.post(
        "/api/threads", json={}, headers={"X-API-Key": key, "X-Account-Id": world["team"]["id"]}
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "account_not_found"


async def test_every_route_but_the_public_ones_needs_a_credential(client, world):
    spec = (await client.get("/openapi.json")).json()
    for method, path, op in _routes(spec):
        route = f"{method} {path}"
        if route in PUBLIC:
            continue
        response = await _call(
            client, method, path, world["params"], {}, _body(op, spec), _query(op, spec, world["params"])
        )
        assert response.status_code == 401, f"{route}: {response.status_code}"
        assert response.headers["www-authenticate"] == "Bearer", route
