"""The Supabase provider: the real `supabase` auth client against a fake GoTrue started here, and
local verification of GoTrue's tokens that refuses every forgery."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentry.auth.adapters.sql import SqlUserRepository
from agentry.auth.adapters.supabase import SupabaseIdentityProvider
from agentry.auth.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidPassword,
    InvalidToken,
    RefreshTokenReused,
    TokenExpired,
)
from agentry.auth.fake_gotrue import FakeGoTrue

PASSWORD = "correct horse battery"


@contextlib.asynccontextmanager
async def provider_for(gotrue: FakeGoTrue, engine, tokens):
    provider = SupabaseIdentityProvider(
        url=gotrue.url,
        anon_key=gotrue.anon_key,
        service_role_key=gotrue.service_role_key,
        jwt_secret=gotrue.jwt_secret,
        users=SqlUserRepository(engine),
        stream_tokens=tokens,
    )
    try:
        yield provider
    finally:
        await provider.close()


@pytest.fixture
def gotrue():
    with FakeGoTrue() as server:
        yield server


@pytest.fixture
async def provider(gotrue, sqlite_engine, tokens):
    async with provider_for(gotrue, sqlite_engine, tokens) as p:
        yield p


async def test_sign_up_sign_in_verify_with_a_personal_account(provider, gotrue):
    signed_up = await provider.sign_up(" Ada@Example.com", PASSWORD)
    issued = await provider.sign_in("ada@example.com", PASSWORD)
    verified = await provider.verify(issued.access_token)
    assert verified.principal.user_id == signed_up.user_id
    assert verified.principal.account_id == signed_up.account_id  # the same personal account every time
    assert verified.principal.email == "ada@example.com" and verified.principal.session_id
    assert issued.refresh_token and issued.expires_in == 3600
    assert ("POST", "/signup") in gotrue.requests and ("POST", "/token") in gotrue.requests
    # Verification is local: no call per token, only the JWKS once.
    assert gotrue.requests.count(("GET", "/.well-known/jwks.json")) == 1
    assert ("GET", "/user") not in gotrue.requests


async def test_a_user_created_elsewhere_gets_a_personal_account_on_first_sight(provider, gotrue):
    other = await provider.sign_up("bob@example.com", PASSWORD)
    user = next(u for u in gotrue.state.users.values() if u.email == "bob@example.com")
    # Straight from GoTrue (as if signed up in the Supabase dashboard): the mirror already exists here.
    session = gotrue.new_session(user)
    assert (await provider.verify(session["access_token"])).principal.account_id == other.account_id
    gotrue.state.users["0d7b7c9e-0000-4000-8000-000000000000"] = type(user)(
        id="0d7b7c9e-0000-4000-8000-000000000000", email="carol@example.com", password="x" * 10, created_at=0
    )
    carol = gotrue.new_session(gotrue.state.users["0d7b7c9e-0000-4000-8000-000000000000"])
    first = await provider.verify(carol["access_token"])
    again = await provider.verify(carol["access_token"])
    assert first.principal.account_id == again.principal.account_id != other.account_id


async def test_errors_map_to_ours(provider):
    await provider.sign_up("ada@example.com", PASSWORD)
    with pytest.raises(EmailTaken):
        await provider.sign_up("ADA@example.com", PASSWORD)
    for email, password in (("ada@example.com", "wrong password"), ("nobody@example.com", PASSWORD), ("nope", "x")):
        with pytest.raises(InvalidCredentials):
            await provider.sign_in(email, password)
    with pytest.raises(InvalidPassword):
        await provider.sign_up("bob@example.com", "short")


async def test_refresh_rotates_and_reuse_revokes_the_family(provider):
    await provider.sign_up("ada@example.com", PASSWORD)
    first = await provider.sign_in("ada@example.com", PASSWORD)
    second = await provider.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    with pytest.raises(RefreshTokenReused):
        await provider.refresh(first.refresh_token)
    with pytest.raises(InvalidToken):
        await provider.refresh(second.refresh_token)


async def test_sign_out_and_change_password(provider):
    await provider.sign_up("ada@example.com", PASSWORD)
    one = await provider.sign_in("ada@example.com", PASSWORD)
    two = await provider.sign_in("ada@example.com", PASSWORD)
    await provider.sign_out(one.access_token, everywhere=False)
    with pytest.raises(InvalidToken):
        await provider.refresh(one.refresh_token)
    with pytest.raises(InvalidToken):
        await provider.confirm(one.access_token)  # GoTrue's /user knows the session ended
    await provider.refresh(two.refresh_token)
    three = await provider.sign_in("ada@example.com", PASSWORD)
    four = await provider.sign_in("ada@example.com", PASSWORD)
    with pytest.raises(InvalidCredentials):
        await provider.change_password(three.access_token, "wrong", "a new long password")
    await provider.change_password(three.access_token, PASSWORD, "a new long password")
    with pytest.raises(InvalidToken):
        await provider.refresh(four.refresh_token)
    await provider.refresh(three.refresh_token)
    with pytest.raises(InvalidCredentials):
        await provider.sign_in("ada@example.com", PASSWORD)
    await provider.sign_in("ada@example.com", "a new long password")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(gotrue: FakeGoTrue, claims: dict, kind: str) -> str:
    other = ec.generate_private_key(ec.SECP256R1())
    public_pem = gotrue.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    if kind == "alg-none":
        return ".".join(
            (_b64(json.dumps({"alg": "none", "kid": gotrue.kid}).encode()), _b64(json.dumps(claims).encode()), "")
        )
    if kind == "hs256-with-the-public-key":
        signing_input = ".".join(
            (
                _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": gotrue.kid}).encode()),
                _b64(json.dumps(claims).encode()),
            )
        )
        return f"{signing_input}.{_b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())}"
    if kind == "wrong-key":
        return jwt.encode(claims, other, algorithm="ES256", headers={"kid": gotrue.kid})
    if kind == "unknown-kid":
        return jwt.encode(claims, other, algorithm="ES256", headers={"kid": "someone-elses"})
    changes = {
        "expired": {"iat": now - 7200, "exp": now - 3600},
        "not-yet-valid": {"nbf": now + 3600},
        "wrong-audience": {"aud": "anon"},
        "wrong-issuer": {"iss": "https://attacker.example/auth/v1"},
        "no-expiry": {"exp": None},
    }
    if kind in changes:
        return gotrue.sign({k: v for k, v in {**claims, **changes[kind]}.items() if v is not None})
    assert kind == "tampered-payload"
    header, _, signature = gotrue.sign(claims).split(".")
    return ".".join(
        (header, _b64(json.dumps({**claims, "sub": "00000000-0000-4000-8000-000000000000"}).encode()), signature)
    )


FORGERIES = [
    "alg-none",
    "hs256-with-the-public-key",
    "wrong-key",
    "unknown-kid",
    "expired",
    "not-yet-valid",
    "wrong-audience",
    "wrong-issuer",
    "no-expiry",
    "tampered-payload",
]


@pytest.mark.parametrize("kind", FORGERIES)
async def test_forged_and_stale_tokens_are_refused(provider, gotrue, kind):
    await provider.sign_up("ada@example.com", PASSWORD)
    user = next(iter(gotrue.state.users.values()))
    claims = gotrue.claims(user, "a-session")
    assert (await provider.verify(gotrue.sign(claims))).principal.email == "ada@example.com"  # the control
    with pytest.raises(TokenExpired if kind == "expired" else InvalidToken):
        await provider.verify(_forge(gotrue, claims, kind))


async def test_unknown_kids_refetch_the_jwks_at_most_every_few_seconds(provider, gotrue):
    other = ec.generate_private_key(ec.SECP256R1())
    for i in range(20):
        with pytest.raises(InvalidToken):
            await provider.verify(jwt.encode({"sub": "x"}, other, algorithm="ES256", headers={"kid": f"k{i}"}))
    assert gotrue.requests.count(("GET", "/.well-known/jwks.json")) == 1


async def test_legacy_hs256_projects(sqlite_engine, tokens):
    with FakeGoTrue(jwt_secret="a-legacy-project-secret-of-32-chars!") as gotrue:
        async with provider_for(gotrue, sqlite_engine, tokens) as provider:
            await provider.sign_up("ada@example.com", PASSWORD)
            issued = await provider.sign_in("ada@example.com", PASSWORD)
            assert jwt.get_unverified_header(issued.access_token)["alg"] == "HS256"
            assert (await provider.verify(issued.access_token)).principal.email == "ada@example.com"
            claims = jwt.decode(issued.access_token, options={"verify_signature": False})
            for forged in (
                jwt.encode(claims, "another-secret-of-at-least-32-chars", algorithm="HS256"),
                jwt.encode({**claims, "aud": "anon"}, gotrue.jwt_secret, algorithm="HS256"),
                jwt.encode({**claims, "iss": "https://x.example/auth/v1"}, gotrue.jwt_secret, algorithm="HS256"),
            ):
                with pytest.raises(InvalidToken):
                    await provider.verify(forged)
    # A project with asymmetric keys and no secret refuses HS256 outright.
    with FakeGoTrue() as gotrue:
        async with provider_for(gotrue, sqlite_engine, tokens) as provider:
            with pytest.raises(InvalidToken):
                await provider.verify(jwt.encode(claims, "any-secret-at-all-of-32-chars-long!", algorithm="HS256"))
