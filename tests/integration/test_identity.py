"""Identity end to end on the embedded dev stack: sessions with rotating refresh tokens, sign-out,
password change, JWKS, API keys, stream tokens, the token-refusal suite, rate limits, input that
cannot be stored, and logs that never carry a secret."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
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
SCRIPTS = {"id-quick": Script(turns=(Turn(text="done"),))}


@dataclass
class Stack:
    url: str
    data_dir: Path


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer(SCRIPTS) as server:
        yield server


@contextlib.asynccontextmanager
async def dev_stack(llm, data_dir: Path, **overrides) -> AsyncIterator[Stack]:
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(stack, data_dir=data_dir, llm_api_base=llm.base_url, ports=PORTS, **overrides)
        yield Stack(dev.gateway_url, data_dir)


# This module's many users all come from 127.0.0.1: lift the per-address limits here (their own
# tests run on stacks of their own); the per-email limit on failed sign-ins keeps its default.
ADDRESS_LIMITS_LIFTED = {"signup_per_ip": 10_000, "signin_attempts_per_ip": 10_000, "refresh_per_ip": 10_000}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(llm, tmp_path_factory) -> AsyncIterator[Stack]:
    async with dev_stack(llm, tmp_path_factory.mktemp("identity"), gateway_overrides=ADDRESS_LIMITS_LIFTED) as stack:
        yield stack


@pytest_asyncio.fixture(loop_scope="module")
async def client(system) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as client:
        yield client


_emails = iter(range(10**6))


async def sign_up(client: httpx.AsyncClient, prefix: str = "user") -> dict:
    email = f"{prefix}-{next(_emails)}@example.com"
    signup = await client.post("/api/auth/signup", json={"email": email, "password": PASSWORD})
    assert signup.status_code == 201, signup.text
    return {"email": email, **signup.json(), **(await sign_in(client, email))}


async def sign_in(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict:
    token = await client.post("/api/auth/token", json={"email": email, "password": password})
    assert token.status_code == 200, token.text
    body = token.json()
    return {**body, "headers": {"Authorization": f"Bearer {body['access_token']}"}}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    return error


async def new_thread(client: httpx.AsyncClient, headers: dict) -> httpx.Response:
    return await client.post("/api/threads", json={}, headers=headers)


# --- sessions ----------------------------------------------------------------------------------


async def test_refresh_rotates_and_a_reused_token_ends_the_family(client):
    ada = await sign_up(client, "rotate")
    first = ada["refresh_token"]
    refreshed = await client.post("/api/auth/refresh", json={"refresh_token": first})
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != first and second["access_token"] != ada["access_token"]
    assert (await new_thread(client, {"Authorization": f"Bearer {second['access_token']}"})).status_code == 201
    other_session = await sign_in(client, ada["email"])

    reused = await client.post("/api/auth/refresh", json={"refresh_token": first})
    assert_error(reused, 401, "refresh_token_reused")
    # The rest of the family is dead too (whoever holds it), the other sign-in is not.
    assert_error(await client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]}), 401)
    assert (
        await client.post("/api/auth/refresh", json={"refresh_token": other_session["refresh_token"]})
    ).status_code == 200


async def test_sign_out_this_session_or_everywhere(client):
    ada = await sign_up(client, "logout")
    two = await sign_in(client, ada["email"])
    three = await sign_in(client, ada["email"])
    out = await client.post("/api/auth/logout", headers=ada["headers"])
    assert out.status_code == 204, out.text
    assert_error(await client.post("/api/auth/refresh", json={"refresh_token": ada["refresh_token"]}), 401)
    refreshed = await client.post("/api/auth/refresh", json={"refresh_token": two["refresh_token"]})
    assert refreshed.status_code == 200
    everywhere = await client.post("/api/auth/logout", json={"scope": "global"}, headers=two["headers"])
    assert everywhere.status_code == 204
    for token in (refreshed.json()["refresh_token"], three["refresh_token"]):
        assert_error(await client.post("/api/auth/refresh", json={"refresh_token": token}), 401)
    assert_error(
        await client.post("/api/auth/logout", json={"scope": "nowhere"}, headers=three["headers"]),
        422,
        "validation_error",
    )
    assert_error(await client.post("/api/auth/logout"), 401)


async def test_change_password_ends_the_other_sessions(client):
    ada = await sign_up(client, "password")
    other = await sign_in(client, ada["email"])
    wrong = await client.post(
        "/api/auth/password", json={"current_password": "not it", "new_password": "x" * 12}, headers=ada["headers"]
    )
    assert_error(wrong, 401, "invalid_credentials")
    short = await client.post(
        "/api/auth/password", json={"current_password": PASSWORD, "new_password": "short"}, headers=ada["headers"]
    )
    assert "new_password" in assert_error(short, 422, "invalid_password")["message"]
    changed = await client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "a new long password"},
        headers=ada["headers"],
    )
    assert changed.status_code == 204, changed.text
    assert_error(await client.post("/api/auth/refresh", json={"refresh_token": other["refresh_token"]}), 401)
    assert (await client.post("/api/auth/refresh", json={"refresh_token": ada["refresh_token"]})).status_code == 200
    assert_error(await client.post("/api/auth/token", json={"email": ada["email"], "password": PASSWORD}), 401)
    await sign_in(client, ada["email"], "a new long password")


async def test_jwks_verifies_the_access_tokens(client):
    ada = await sign_up(client, "jwks")
    response = await client.get("/api/auth/.well-known/jwks.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    keys = jwt.PyJWKSet.from_dict(response.json())
    kid = jwt.get_unverified_header(ada["access_token"])["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    assert not any("d" in k for k in response.json()["keys"]), "no private key material"
    claims = jwt.decode(
        ada["access_token"], key.key, algorithms=["ES256"], audience="authenticated", issuer="agentry-local"
    )
    assert claims["sub"] == ada["user_id"] and claims["exp"] - claims["iat"] == 900


async def test_key_rotation_signs_nobody_out(llm, tmp_path):
    async with dev_stack(llm, tmp_path) as before, httpx.AsyncClient(base_url=before.url, timeout=30) as client:
        ada = await sign_up(client, "rotation")
    old_pem = (tmp_path / "auth-signing-key.pem").read_text()
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_pem = new_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    rotated = {"signing_key": new_pem, "retired_signing_keys": old_pem}
    async with dev_stack(llm, tmp_path, auth_overrides=rotated) as after:
        async with httpx.AsyncClient(base_url=after.url, timeout=30) as client:
            # The token and the refresh token issued before the rotation still work.
            assert (await new_thread(client, ada["headers"])).status_code == 201
            refreshed = await client.post("/api/auth/refresh", json={"refresh_token": ada["refresh_token"]})
            assert refreshed.status_code == 200
            new_kid = jwt.get_unverified_header(refreshed.json()["access_token"])["kid"]
            assert new_kid == public_jwk(new_key.public_key())["kid"]
            published = [k["kid"] for k in (await client.get("/api/auth/.well-known/jwks.json")).json()["keys"]]
            assert published == [new_kid, jwt.get_unverified_header(ada["access_token"])["kid"]]


# --- the token-refusal suite -------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict, signature: bytes = b"") -> str:
    return ".".join((_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)))


def _hs256(claims: dict, kid: str, secret: bytes) -> str:
    signing_input = ".".join(
        (_b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()), _b64(json.dumps(claims).encode()))
    )
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def _tampered(token: str, **changes) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ".".join((header, _b64(json.dumps({**claims, **changes}).encode()), signature))


@dataclass
class Minter:
    """Builds tokens the way the provider does, with its real key, so each forgery differs from a
    valid token in exactly one way."""

    key: ec.EllipticCurvePrivateKey
    kid: str
    claims: dict

    def sign(self, key=None, kid=None, **changes) -> str:
        claims = {k: v for k, v in {**self.claims, **changes}.items() if v is not None}
        return jwt.encode(claims, key or self.key, algorithm="ES256", headers={"kid": kid or self.kid})

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def local_minter(system: Stack, user: dict) -> Minter:
    key = serialization.load_pem_private_key((system.data_dir / "auth-signing-key.pem").read_bytes(), password=None)
    now = int(time.time())
    claims = {
        "iss": "agentry-local",
        "aud": "authenticated",
        "sub": user["user_id"],
        "account_id": user["account_id"],
        "email": user["email"],
        "iat": now,
        "exp": now + 600,
    }
    return Minter(key, public_jwk(key.public_key())["kid"], claims)


_OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
FORGERIES: dict[str, Callable[[Minter], str]] = {
    "alg-none": lambda m: _unsigned({"alg": "none", "typ": "JWT", "kid": m.kid}, m.claims),
    "hs256-with-the-public-key": lambda m: _hs256(m.claims, m.kid, m.public_pem),
    "wrong-key": lambda m: m.sign(key=_OTHER_KEY),
    "unknown-kid": lambda m: m.sign(key=_OTHER_KEY, kid=public_jwk(_OTHER_KEY.public_key())["kid"]),
    "expired": lambda m: m.sign(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
    "not-yet-valid": lambda m: m.sign(nbf=int(time.time()) + 3600),
    "wrong-audience": lambda m: m.sign(aud="someone-else"),
    "wrong-issuer": lambda m: m.sign(iss="https://attacker.example"),
    "no-expiry": lambda m: m.sign(exp=None),
    "tampered-payload": lambda m: _tampered(m.sign(), account_id="00000000-0000-4000-8000-000000000000"),
    "stream-token-audience": lambda m: m.sign(aud="agentry-stream", resource="run:x"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def victim(system) -> dict:
    async with httpx.AsyncClient(base_url=system.url, timeout=30) as client:
        return await sign_up(client, "victim")


async def test_the_minter_builds_accepted_tokens(client, system, victim):
    """The control: the same builder with no change is accepted, so every refusal below is the change's."""
    token = local_minter(system, victim).sign()
    assert (await new_thread(client, {"Authorization": f"Bearer {token}"})).status_code == 201


@pytest.mark.parametrize("forgery", list(FORGERIES))
async def test_forged_or_stale_tokens_are_refused(client, system, victim, forgery):
    token = FORGERIES[forgery](local_minter(system, victim))
    for headers in ({"Authorization": f"Bearer {token}"}, {"X-API-Key": token}):
        response = await new_thread(client, headers)
        assert_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert all(part not in response.text for part in token.split(".") if len(part) > 8)


# --- API keys ----------------------------------------------------------------------------------


async def test_api_key_lifecycle(client, system):
    ada, bob = await sign_up(client, "keys"), await sign_up(client, "keys-other")
    created = await client.post("/api/api-keys", json={"name": "ci"}, headers=ada["headers"])
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["key"].startswith("agentry_sk_") and key["key"].startswith(key["prefix"])
    assert key["expires_at"] is None and key["last_used_at"] is None

    for headers in ({"Authorization": f"Bearer {key['key']}"}, {"X-API-Key": key["key"]}):
        thread = await new_thread(client, headers)
        assert thread.status_code == 201, thread.text
        # The key acts for Ada's account: she sees the thread, Bob does not.
        thread_id = thread.json()["thread_id"]
        assert (await client.get(f"/api/threads/{thread_id}/messages", headers=ada["headers"])).status_code == 200
        assert_error(await client.get(f"/api/threads/{thread_id}/messages", headers=bob["headers"]), 404)

    listed = await client.get("/api/api-keys", headers=ada["headers"])
    assert [k["id"] for k in listed.json()["api_keys"]] == [key["id"]]
    assert key["key"] not in listed.text and listed.json()["api_keys"][0]["last_used_at"] is not None
    assert (await client.get("/api/api-keys", headers=bob["headers"])).json() == {"api_keys": []}
    assert_error(await client.delete(f"/api/api-keys/{key['id']}", headers=bob["headers"]), 404, "api_key_not_found")
    assert (await new_thread(client, {"X-API-Key": key["key"]})).status_code == 201

    revoked = await client.delete(f"/api/api-keys/{key['id']}", headers=ada["headers"])
    assert revoked.status_code == 204
    for headers in ({"Authorization": f"Bearer {key['key']}"}, {"X-API-Key": key["key"]}):
        assert_error(await new_thread(client, headers), 401, "invalid_token")
    assert_error(await client.delete(f"/api/api-keys/{key['id']}", headers=ada["headers"]), 404)
    assert key["key"].encode() not in (system.data_dir / "auth.db").read_bytes()


async def test_an_expired_api_key_is_refused(client):
    ada = await sign_up(client, "expiring")
    soon = datetime.now(UTC) + timedelta(seconds=2)
    key = (
        await client.post(
            "/api/api-keys", json={"name": "short", "expires_at": soon.isoformat()}, headers=ada["headers"]
        )
    ).json()
    assert (await new_thread(client, {"X-API-Key": key["key"]})).status_code == 201
    for _ in range(100):  # until the expiry passes (a condition, not a fixed sleep)
        response = await new_thread(client, {"X-API-Key": key["key"]})
        if response.status_code != 201:
            break
        await asyncio.sleep(0.1)
    assert_error(response, 401, "api_key_expired")
    past = await client.post(
        "/api/api-keys", json={"name": "past", "expires_at": "2020-01-01T00:00:00Z"}, headers=ada["headers"]
    )
    assert "expires_at" in assert_error(past, 422)["message"]


async def test_api_keys_need_a_live_session_and_cannot_sign_out_or_change_the_password(client):
    ada = await sign_up(client, "key-session")
    key = (await client.post("/api/api-keys", json={"name": "k"}, headers=ada["headers"])).json()["key"]
    assert_error(
        await client.post("/api/api-keys", json={"name": "k2"}, headers={"X-API-Key": key}), 403, "session_required"
    )
    other = await sign_in(client, ada["email"])
    assert (await client.post("/api/auth/logout", headers=other["headers"])).status_code == 204
    # The gateway still accepts the signed-out session's access token (local verification, until it
    # expires), but auth confirms the session before making a long-lived key: refused.
    assert_error(await client.post("/api/api-keys", json={"name": "k3"}, headers=other["headers"]), 401)
    assert_error(await client.post("/api/auth/logout", headers={"X-API-Key": key}), 401)
    change = {"current_password": PASSWORD, "new_password": "another long one"}
    assert_error(await client.post("/api/auth/password", json=change, headers={"X-API-Key": key}), 401)


# --- stream tokens -----------------------------------------------------------------------------


async def test_stream_token_opens_one_run_stream_for_its_account(client):
    ada, bob = await sign_up(client, "stream"), await sign_up(client, "stream-other")
    thread_id = (await new_thread(client, ada["headers"])).json()["thread_id"]
    start = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": "openai/id-quick", "prompt": "hi"},
        headers=ada["headers"],
    )
    run_id = start.json()["agent_run_id"]
    assert_error(await client.post(f"/api/agent-run/{run_id}/stream-token", headers=bob["headers"]), 404)
    token = (await client.post(f"/api/agent-run/{run_id}/stream-token", headers=ada["headers"])).json()["token"]
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", params={"access_token": token}) as response:
        assert response.status_code == 200
        data = [line async for line in response.aiter_lines() if line.startswith("data:")]
    assert json.loads(data[-1][5:])["type"] == "run_finished"
    other_thread = (await new_thread(client, ada["headers"])).json()["thread_id"]
    assert_error(await client.get(f"/api/threads/{other_thread}/stream", params={"access_token": token}), 401)


# --- rate limits and equal answers --------------------------------------------------------------


async def test_failed_sign_ins_are_limited_per_email(client):
    ada = await sign_up(client, "brute")
    bystander = await sign_up(client, "bystander")
    for _ in range(10):
        assert_error(await client.post("/api/auth/token", json={"email": ada["email"], "password": "guess"}), 401)
    for password in ("guess", PASSWORD):  # even the right password waits: the guesser cannot tell
        limited = await client.post("/api/auth/token", json={"email": ada["email"].upper(), "password": password})
        assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["retry-after"]) <= 300
    await sign_in(client, bystander["email"])


async def test_sign_in_attempts_are_limited_per_address(llm, tmp_path):
    limits = {"signin_attempts_per_ip": 5, "signup_per_ip": 3, "refresh_per_ip": 2, "run_starts_per_account": 2}
    async with dev_stack(llm, tmp_path, gateway_overrides=limits) as small:
        async with httpx.AsyncClient(base_url=small.url, timeout=30) as client:
            for i in range(3):
                assert (
                    await client.post("/api/auth/signup", json={"email": f"s{i}@example.com", "password": PASSWORD})
                ).status_code == 201
            assert_error(
                await client.post("/api/auth/signup", json={"email": "s9@example.com", "password": PASSWORD}),
                429,
                "rate_limited",
            )
            for i in range(5):
                await client.post("/api/auth/token", json={"email": f"s{i % 3}@example.com", "password": PASSWORD})
            limited = await client.post("/api/auth/token", json={"email": "s0@example.com", "password": PASSWORD})
            assert_error(limited, 429, "rate_limited")
            assert int(limited.headers["retry-after"]) >= 1
            for _ in range(2):
                assert_error(await client.post("/api/auth/refresh", json={"refresh_token": "agentry_rt_x"}), 401)
            assert_error(
                await client.post("/api/auth/refresh", json={"refresh_token": "agentry_rt_x"}), 429, "rate_limited"
            )
    limits = {"run_starts_per_account": 2}
    async with dev_stack(llm, tmp_path / "runs", gateway_overrides=limits) as small:
        async with httpx.AsyncClient(base_url=small.url, timeout=30) as client:
            ada, bob = await sign_up(client, "starts"), await sign_up(client, "starts-other")
            for user, expected in ((ada, [202, 202, 429]), (bob, [202])):  # per account, not per address
                statuses = []
                for _ in expected:
                    thread = (await new_thread(client, user["headers"])).json()["thread_id"]
                    start = await client.post(
                        f"/api/threads/{thread}/agent/start",
                        json={"model_name": "openai/id-quick"},
                        headers=user["headers"],
                    )
                    statuses.append(start.status_code)
                assert statuses == expected


async def test_unknown_email_and_wrong_password_answer_the_same(client):
    ada = await sign_up(client, "same")
    wrong = await client.post("/api/auth/token", json={"email": ada["email"], "password": "not the password"})
    unknown = await client.post(
        "/api/auth/token", json={"email": "nobody-here@example.com", "password": "not the password"}
    )
    malformed = await client.post("/api/auth/token", json={"email": "not-an-email", "password": "not the password"})
    for response in (wrong, unknown, malformed):
        assert response.status_code == 401
        assert response.json() == wrong.json() and response.headers["www-authenticate"] == "Bearer"


# --- input that cannot be stored ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path,raw,field",
    [
        ("/api/auth/signup", '{"email": "a\\u0000b@example.com", "password": "correct horse battery"}', "email"),
        ("/api/auth/signup", '{"email": "a\\ud800b@example.com", "password": "correct horse battery"}', "email"),
        ("/api/auth/signup", '{"email": "ab@example.com", "password": "correct \\udc00 horse"}', "password"),
        ("/api/auth/token", '{"email": "ab@example.com", "password": "correct\\u0000horse"}', "password"),
        ("/api/auth/signup", '{"email": "%s@example.com", "password": "correct horse battery"}' % ("e" * 400), "email"),
        ("/api/auth/refresh", '{"refresh_token": "agentry_rt_\\u0000"}', "refresh_token"),
        ("/api/api-keys", '{"name": "ci\\u0000"}', "name"),
        ("/api/api-keys", '{"name": "\\ud83d"}', "name"),
        ("/api/api-keys", '{"name": "%s"}' % ("n" * 201), "name"),
        ("/api/threads", '{"name": "t\\u0000"}', "name"),
    ],
    ids=[
        "email-nul",
        "email-surrogate",
        "password-surrogate",
        "signin-password-nul",
        "email-long",
        "refresh-nul",
        "key-name-nul",
        "key-name-surrogate",
        "key-name-long",
        "thread-name-nul",
    ],
)
async def test_unstorable_input_is_a_422_naming_the_field(client, path, raw, field):
    ada = await sign_up(client, "input")
    response = await client.post(
        path, content=raw.encode(), headers={**ada["headers"], "Content-Type": "application/json"}
    )
    error = assert_error(response, 422, "validation_error")
    assert [f["field"] for f in error["fields"]] == [f"body.{field}"]


@pytest.mark.parametrize(
    "method,url,field",
    [
        ("GET", "/api/threads/a%00b/messages", "path.thread_id"),
        ("GET", "/api/agent-run/%00/stream", "path.run_id"),
        ("DELETE", "/api/api-keys/k%00", "path.api_key_id"),
        ("GET", "/api/accounts/a%00/members", "path.account_id"),
    ],
)
async def test_unstorable_path_parameters_are_a_422_naming_them(client, method, url, field):
    ada = await sign_up(client, "path")
    error = assert_error(await client.request(method, url, headers=ada["headers"]), 422, "validation_error")
    assert [f["field"] for f in error["fields"]] == [field]


# --- no secret in any log line ------------------------------------------------------------------


async def test_no_secret_reaches_a_log_line(client, caplog):
    caplog.set_level(logging.DEBUG)
    ada = await sign_up(client, "logs")
    secrets = [PASSWORD, ada["access_token"], ada["refresh_token"]]
    await client.post("/api/auth/token", json={"email": ada["email"], "password": "wrong password 1"})
    refreshed = (await client.post("/api/auth/refresh", json={"refresh_token": ada["refresh_token"]})).json()
    secrets += [refreshed["access_token"], refreshed["refresh_token"]]
    headers = {"Authorization": f"Bearer {refreshed['access_token']}"}
    await client.post("/api/auth/refresh", json={"refresh_token": ada["refresh_token"]})  # reuse: a warning
    ada = {**ada, **(await sign_in(client, ada["email"]))}
    headers = ada["headers"]
    secrets += [ada["access_token"], ada["refresh_token"], "wrong password 1"]
    key = (await client.post("/api/api-keys", json={"name": "logged?"}, headers=headers)).json()["key"]
    secrets.append(key)
    thread_id = (await new_thread(client, {"X-API-Key": key})).json()["thread_id"]
    run_id = (
        await client.post(
            f"/api/threads/{thread_id}/agent/start",
            json={"model_name": "openai/id-quick", "prompt": "hi"},
            headers=headers,
        )
    ).json()["agent_run_id"]
    stream_token = (await client.post(f"/api/agent-run/{run_id}/stream-token", headers=headers)).json()["token"]
    secrets.append(stream_token)
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", params={"access_token": stream_token}) as r:
        async for _ in r.aiter_lines():
            pass
    await client.get(f"/api/agent-run/{run_id}/stream", params={"access_token": stream_token + "x"})
    await new_thread(client, {"X-API-Key": key + "x"})
    await client.post(
        "/api/auth/password", json={"current_password": PASSWORD, "new_password": "the new password"}, headers=headers
    )
    secrets.append("the new password")
    await client.post("/api/auth/logout", json={"scope": "global"}, headers=headers)

    # The test's own HTTP client logs the URLs it requests; everything else is the stack's.
    lines = [
        record.getMessage() + " " + repr(record.__dict__.get("args")) + " " + (record.exc_text or "")
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    ]
    assert len(lines) > 5, "the stack logged nothing: the scan would prove nothing"
    assert {"agentry.auth.service", "agentry.auth.apikeys"} <= {r.name for r in caplog.records}
    for secret in secrets:
        # Whole secrets, and the signature or payload part of a token on its own.
        parts = [secret] + [p for p in secret.split(".") if len(p) > 16]
        leaked = [line for line in lines if any(p in line for p in parts)]
        assert not leaked, leaked
