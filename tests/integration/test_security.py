"""What the gateway refuses: bad tokens, other accounts' resources, malformed bodies, duplicate
sign-ups and runs without credit. On the embedded dev stack, which talks real gRPC."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentry.auth.tokens import public_jwk
from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}
PASSWORD = "correct horse battery staple"
ISSUER, AUDIENCE = "agentry-local", "authenticated"  # AuthSettings' defaults, which devstack keeps
SCRIPTS = {
    "sec-quick": Script(turns=(Turn(text="done"),)),
    # Long enough (about 2 s) that another account's stop lands while it runs.
    "sec-slow": Script(turns=(Turn(text=" ".join(f"w{i}" for i in range(200))),), tokens_per_second=100),
}


@dataclass
class Stack:
    url: str
    data_dir: Path


@dataclass
class User:
    email: str
    user_id: str
    account_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer(SCRIPTS) as server:
        yield server


@contextlib.asynccontextmanager
async def dev_stack(llm: ThreadedFakeLLMServer, data_dir: Path, **overrides) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(stack, data_dir=data_dir, llm_api_base=llm.base_url, ports=PORTS, **overrides)
        yield Stack(dev.gateway_url, data_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(llm, tmp_path_factory) -> AsyncIterator[Stack]:
    async with dev_stack(llm, tmp_path_factory.mktemp("security")) as stack:
        yield stack


@pytest_asyncio.fixture(loop_scope="module")
async def client(system) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url, timeout=20) as client:
        yield client


async def sign_up(client: httpx.AsyncClient, email: str) -> User:
    signup = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert signup.status_code == 201, signup.text
    token = await client.post("/api/auth/token", json={"email": email, "password": PASSWORD})
    assert token.status_code == 200, token.text
    return User(email, signup.json()["user_id"], signup.json()["account_id"], token.json()["access_token"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def alice(system) -> User:
    async with httpx.AsyncClient(base_url=system.url, timeout=20) as client:
        return await sign_up(client, "alice@example.com")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bob(system) -> User:
    async with httpx.AsyncClient(base_url=system.url, timeout=20) as client:
        return await sign_up(client, "bob@example.com")


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# --- tokens ------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def real_key(system: Stack) -> ec.EllipticCurvePrivateKey:
    return serialization.load_pem_private_key((system.data_dir / "auth-signing-key.pem").read_bytes(), password=None)


def claims_for(user: User, *, iat: int, exp: int) -> dict:
    """The claims the auth service puts in its tokens (agentry.auth.tokens.TokenService.issue)."""
    return {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": user.user_id,
        "account_id": user.account_id,
        "email": user.email,
        "iat": iat,
        "exp": exp,
        "jti": "f" * 32,
    }


def signed_with(key: ec.EllipticCurvePrivateKey, kid: str, claims: dict) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join((_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)))


async def protected(client: httpx.AsyncClient, headers: dict) -> httpx.Response:
    return await client.post("/api/threads", json={}, headers=headers)


def assert_refused(response: httpx.Response, token: str | None = None) -> None:
    assert_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    if token:
        assert token not in response.text
        # Not even a recognisable part of it (the signature, the payload).
        assert all(part not in response.text for part in token.split(".") if len(part) > 8)
        assert all(token not in value for value in response.headers.values())


async def test_a_token_built_like_the_real_ones_is_accepted(client, system, alice):
    """The control for the forgeries below: the same builder with the real key passes."""
    now = int(time.time())
    key = real_key(system)
    token = signed_with(key, public_jwk(key.public_key())["kid"], claims_for(alice, iat=now, exp=now + 600))
    assert (await protected(client, {"Authorization": f"Bearer {token}"})).status_code == 201


async def test_forged_token_signed_by_another_key(client, system, alice):
    now = int(time.time())
    real_claims = jwt.decode(alice.token, options={"verify_signature": False})
    real_kid = jwt.get_unverified_header(alice.token)["kid"]
    other = ec.generate_private_key(ec.SECP256R1())
    for kid in (real_kid, public_jwk(other.public_key())["kid"]):
        forged = signed_with(other, kid, {**real_claims, "iat": now, "exp": now + 600})
        assert_refused(await protected(client, {"Authorization": f"Bearer {forged}"}), forged)


async def test_expired_token_signed_by_the_real_key(client, system, alice):
    now = int(time.time())
    key = real_key(system)
    expired = signed_with(key, public_jwk(key.public_key())["kid"], claims_for(alice, iat=now - 7200, exp=now - 3600))
    response = await protected(client, {"Authorization": f"Bearer {expired}"})
    assert_refused(response, expired)
    assert "expired" in response.json()["error"]["message"]


async def test_alg_none_and_hs256_tokens(client, system, alice):
    now = int(time.time())
    key = real_key(system)
    kid = public_jwk(key.public_key())["kid"]
    claims = claims_for(alice, iat=now, exp=now + 600)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tokens = [
        unsigned({"alg": "none", "typ": "JWT", "kid": kid}, claims),
        unsigned({"alg": "None", "typ": "JWT", "kid": kid}, claims),
        jwt.encode(claims, "a-guessable-secret-of-32-bytes!!", algorithm="HS256", headers={"kid": kid}),
        # The classic confusion: HMAC keyed with the public key the verifier holds.
        _hs256_with_key(claims, kid, public_pem),
    ]
    for token in tokens:
        assert_refused(await protected(client, {"Authorization": f"Bearer {token}"}), token)


def _hs256_with_key(claims: dict, kid: str, secret: bytes) -> str:
    signing_input = ".".join(
        (_b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()), _b64(json.dumps(claims).encode()))
    )
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "not.a.jwt",
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLWdhcmJhZ2U",
        "a" * 5000,
        "ünïcödé-tökén",
    ],
)
async def test_garbage_tokens(client, token):
    header = {"Authorization": f"Bearer {token}".encode()}
    assert_refused(await protected(client, header), token)


async def test_token_with_an_unhashable_kid_is_refused_not_crashed(client, system, alice):
    now = int(time.time())
    token = unsigned({"alg": "ES256", "typ": "JWT", "kid": ["x"]}, claims_for(alice, iat=now, exp=now + 600), b"s" * 64)
    assert_refused(await protected(client, {"Authorization": f"Bearer {token}"}), token)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6cGFzcw=="},
        {"Authorization": "Token abc.def.ghi"},
    ],
    ids=["missing", "empty", "bearer-only", "basic", "other-scheme"],
)
@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/threads"),
        ("GET", "/api/threads/t/messages"),
        ("POST", "/api/threads/t/messages"),
        ("POST", "/api/threads/t/agent/start"),
        ("GET", "/api/agent-run/r"),
        ("GET", "/api/agent-run/r/stream"),
        ("POST", "/api/agent-run/r/stop"),
    ],
)
async def test_every_protected_route_needs_a_bearer_token(client, headers, method, path):
    body = {"content": "hi"} if path.endswith("/messages") and method == "POST" else None
    response = await client.request(method, path, headers=headers, json=body)
    assert_refused(response)
    assert_error(response, 401, "unauthenticated")


async def test_wrong_scheme_carrying_a_valid_token_is_refused(client, alice):
    assert_refused(await protected(client, {"Authorization": f"Basic {alice.token}"}), alice.token)
    assert_refused(await protected(client, {"Authorization": f"Token {alice.token}"}), alice.token)


async def test_query_token_is_not_accepted_outside_the_stream_route(client, alice):
    # /api/agent-run/stream is the run-details route with run id "stream", not the stream route.
    for method, path in (
        ("GET", "/api/agent-run/stream"),
        ("GET", "/api/threads/stream/messages"),
        ("POST", "/api/threads"),
    ):
        response = await client.request(method, path, params={"access_token": alice.token})
        assert_refused(response, alice.token)


# --- tenancy -----------------------------------------------------------------------------------


async def test_another_accounts_thread_and_run_are_not_found(client, alice, bob):
    thread = await client.post("/api/threads", json={"name": "alice's"}, headers=alice.headers)
    thread_id = thread.json()["thread_id"]
    assert (
        await client.post(f"/api/threads/{thread_id}/messages", json={"content": "secret plan"}, headers=alice.headers)
    ).status_code == 201
    start = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": "openai/sec-slow", "prompt": "go"},
        headers=alice.headers,
    )
    assert start.status_code == 202, start.text
    run_id = start.json()["agent_run_id"]
    before = (await client.get(f"/api/agent-run/{run_id}", headers=alice.headers)).json()
    assert before["status"] in ("queued", "running")

    missing_thread, missing_run = "00000000-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000001"

    async def attempts(thread: str, run: str) -> list[httpx.Response]:
        return [
            await client.get(f"/api/threads/{thread}/messages", headers=bob.headers),
            await client.post(f"/api/threads/{thread}/messages", json={"content": "bob was here"}, headers=bob.headers),
            await client.post(
                f"/api/threads/{thread}/agent/start", json={"model_name": "openai/sec-quick"}, headers=bob.headers
            ),
            await client.get(f"/api/agent-run/{run}", headers=bob.headers),
            await client.get(f"/api/agent-run/{run}/stream", headers=bob.headers),
            await client.post(f"/api/agent-run/{run}/stop", headers=bob.headers),
        ]

    foreign = await attempts(thread_id, run_id)
    truly_missing = await attempts(missing_thread, missing_run)
    for theirs, nobodys in zip(foreign, truly_missing, strict=True):
        error = assert_error(theirs, 404)
        expected = assert_error(nobodys, 404)
        # Indistinguishable from an id that does not exist: same code, same message but the id.
        assert error["code"] == expected["code"]
        assert error["message"].replace(thread_id, "ID").replace(run_id, "ID") == expected["message"].replace(
            missing_thread, "ID"
        ).replace(missing_run, "ID")
        assert "alice" not in theirs.text and "secret plan" not in theirs.text

    # Bob's stop changed nothing: the run goes on and completes.
    after = (await client.get(f"/api/agent-run/{run_id}", headers=alice.headers)).json()
    assert after["status"] in ("queued", "running")
    assert after["error"] is None
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=alice.headers) as response:
        data = [line[5:].strip() async for line in response.aiter_lines() if line.startswith("data:")]
    last = orjson.loads(data[-1])
    assert last["type"] == "run_finished" and last["reason"] == "completed"
    assert (await client.get(f"/api/agent-run/{run_id}", headers=alice.headers)).json()["status"] == "completed"
    # And Bob's message never landed in Alice's thread.
    messages = (await client.get(f"/api/threads/{thread_id}/messages", headers=alice.headers)).json()["messages"]
    assert "bob was here" not in orjson.dumps(messages).decode()


# --- malformed bodies --------------------------------------------------------------------------


async def _thread(client: httpx.AsyncClient, user: User) -> str:
    return (await client.post("/api/threads", json={}, headers=user.headers)).json()["thread_id"]


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"email": "carol@example.com"}, "password"),
        ({"email": 12345, "password": PASSWORD}, "email"),
        ({"email": "carol@example.com", "password": PASSWORD, "is_admin": True}, "is_admin"),
    ],
    ids=["no-password", "email-number", "unknown-field"],
)
async def test_malformed_signup(client, payload, field):
    error = assert_error(await client.post("/api/auth/signup", json=payload), 422, "validation_error")
    assert field in error["message"]
    assert [f["field"] for f in error["fields"]] == [f"body.{field}"]
    assert PASSWORD not in error["message"]
    # Nothing was created: the same email may still sign up.
    retry = await client.post("/api/auth/signup", json={"email": f"{field}-retry@example.com", "password": PASSWORD})
    assert retry.status_code == 201


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"content": ""}, "content"),
        ({}, "content"),
        ({"text": "hi"}, "content"),
    ],
    ids=["content-empty", "content-missing", "wrong-name"],
)
async def test_malformed_message(client, alice, payload, field):
    thread_id = await _thread(client, alice)
    error = assert_error(
        await client.post(f"/api/threads/{thread_id}/messages", json=payload, headers=alice.headers),
        422,
        "validation_error",
    )
    assert field in error["message"]
    assert f"body.{field}" in [f["field"] for f in error["fields"]]
    listed = await client.get(f"/api/threads/{thread_id}/messages", headers=alice.headers)
    assert listed.json()["messages"] == []


async def test_body_that_is_not_json(client, alice):
    thread_id = await _thread(client, alice)
    for path, headers in (("/api/auth/signup", {}), (f"/api/threads/{thread_id}/messages", alice.headers)):
        response = await client.post(
            path, content=b"{not json", headers={**headers, "Content-Type": "application/json"}
        )
        error = assert_error(response, 422, "validation_error")
        assert error["fields"] and all(f["field"].startswith("body") for f in error["fields"])
        assert "body" in error["message"]


async def test_model_name_too_long(client, alice):
    thread_id = await _thread(client, alice)
    response = await client.post(
        f"/api/threads/{thread_id}/agent/start", json={"model_name": "m" * 201}, headers=alice.headers
    )
    error = assert_error(response, 422, "validation_error")
    assert "model_name" in error["message"]
    assert [f["field"] for f in error["fields"]] == ["body.model_name"]
    assert "m" * 201 not in response.text


# --- sign-up idempotency -----------------------------------------------------------------------


async def test_duplicate_signup_is_a_conflict(client):
    first = await client.post("/api/auth/signup", json={"email": "dave@example.com", "password": PASSWORD})
    assert first.status_code == 201
    for email in ("dave@example.com", " Dave@Example.COM "):
        again = await client.post("/api/auth/signup", json={"email": email, "password": "another password"})
        assert_error(again, 409, "email_taken")
    # The first account is untouched: its password still works, the second one does not.
    ok = await client.post("/api/auth/token", json={"email": "dave@example.com", "password": PASSWORD})
    assert ok.status_code == 200
    wrong = await client.post("/api/auth/token", json={"email": "dave@example.com", "password": "another password"})
    assert_error(wrong, 401, "invalid_credentials")
    assert wrong.headers["www-authenticate"] == "Bearer"


# --- billing -----------------------------------------------------------------------------------


async def test_no_credit_means_402_and_no_run(llm, tmp_path):
    async with dev_stack(llm, tmp_path, billing_overrides={"initial_credit_micros": 0}) as broke:
        async with httpx.AsyncClient(base_url=broke.url, timeout=20) as client:
            erin = await sign_up(client, "erin@example.com")
            thread_id = await _thread(client, erin)
            response = await client.post(
                f"/api/threads/{thread_id}/agent/start",
                json={"model_name": "openai/sec-quick", "prompt": "spend"},
                headers=erin.headers,
            )
            assert_error(response, 402, "insufficient_credits")
            messages = await client.get(f"/api/threads/{thread_id}/messages", headers=erin.headers)
            assert messages.json()["messages"] == [], "the prompt is not stored for a refused run"
        with contextlib.closing(sqlite3.connect(tmp_path / "runner.db")) as db:
            assert db.execute("SELECT count(*) FROM agent_runs").fetchone() == (0,)
