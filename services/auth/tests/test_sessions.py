"""Sessions of the local provider: rotating refresh tokens, reuse detection, sign-out, password
change, API keys and key rotation, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec

from agentry.auth.adapters.sql import (
    SqlApiKeyRepository,
    SqlSessionRepository,
    SqlUserRepository,
    api_keys,
    refresh_tokens,
)
from agentry.auth.apikeys import API_KEY_PREFIX, ApiKeyService
from agentry.auth.domain import Principal
from agentry.auth.errors import (
    ApiKeyNotFound,
    InvalidCredentials,
    InvalidEmail,
    InvalidName,
    InvalidPassword,
    InvalidToken,
    RefreshTokenReused,
    TokenExpired,
)
from agentry.auth.service import LocalIdentityProvider
from agentry.auth.tokens import STREAM_AUDIENCE, TokenService, public_jwk

PASSWORD = "correct horse"


@pytest.fixture
def users(engine):
    return SqlUserRepository(engine)


@pytest.fixture
def provider(engine, users, hasher, tokens, clock):
    return LocalIdentityProvider(
        users, hasher, tokens, SqlSessionRepository(engine), refresh_ttl_seconds=86_400, clock=clock
    )


@pytest.fixture
def keys(engine, users, clock):
    return ApiKeyService(SqlApiKeyRepository(engine), users, clock=clock)


async def _ada(provider):
    signed_up = await provider.sign_up("ada@example.com", PASSWORD)
    return signed_up, await provider.sign_in("ada@example.com", PASSWORD)


async def test_refresh_rotates_and_keeps_the_session(provider, clock):
    _, first = await _ada(provider)
    assert first.refresh_token.startswith("agentry_rt_")
    sid = (await provider.verify(first.access_token)).principal.session_id
    clock.advance(60)
    second = await provider.refresh(first.refresh_token)
    assert second.refresh_token != first.refresh_token and second.access_token != first.access_token
    assert (await provider.verify(second.access_token)).principal.session_id == sid
    third = await provider.refresh(second.refresh_token)
    assert (await provider.verify(third.access_token)).principal.session_id == sid


async def test_a_reused_refresh_token_revokes_its_whole_family(provider, engine):
    _, first = await _ada(provider)
    second = await provider.refresh(first.refresh_token)
    _, other_session = None, await provider.sign_in("ada@example.com", PASSWORD)
    with pytest.raises(RefreshTokenReused) as caught:
        await provider.refresh(first.refresh_token)
    assert caught.value.code == "refresh_token_reused"
    # The thief's (or the user's) newer token dies with the family, and so do its access tokens.
    for token in (second.refresh_token, first.refresh_token):
        with pytest.raises(InvalidToken):
            await provider.refresh(token)
    for access in (first.access_token, second.access_token):
        with pytest.raises(InvalidToken):
            await provider.verify(access)
    # Another sign-in of the same user is another family: untouched.
    await provider.verify(other_session.access_token)
    await provider.refresh(other_session.refresh_token)
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.select(refresh_tokens.c.token_hash))).scalars().all()
    assert first.refresh_token not in stored and all(len(h) == 64 for h in stored)


async def test_two_refreshes_racing_with_one_token_leave_one_winner_and_a_revoked_family(provider):
    _, first = await _ada(provider)
    results = await asyncio.gather(*(provider.refresh(first.refresh_token) for _ in range(4)), return_exceptions=True)
    assert any(isinstance(r, RefreshTokenReused) for r in results)
    assert all(isinstance(r, InvalidToken) or hasattr(r, "refresh_token") for r in results)
    # Whoever won, the family is now revoked.
    for r in results:
        if not isinstance(r, BaseException):
            with pytest.raises(InvalidToken):
                await provider.refresh(r.refresh_token)


async def test_expired_and_unknown_refresh_tokens(provider, clock):
    _, first = await _ada(provider)
    clock.advance(86_400)
    with pytest.raises(TokenExpired):
        await provider.refresh(first.refresh_token)
    for token in ("agentry_rt_nope", "", "x" * 5000, "agentry_rt_\x00"):
        with pytest.raises(InvalidToken):
            await provider.refresh(token)


async def test_sign_out_this_session_or_all(provider):
    _, one = await _ada(provider)
    two = await provider.sign_in("ada@example.com", PASSWORD)
    three = await provider.sign_in("ada@example.com", PASSWORD)
    await provider.sign_out(one.access_token, everywhere=False)
    with pytest.raises(InvalidToken):
        await provider.verify(one.access_token)
    with pytest.raises(InvalidToken):
        await provider.refresh(one.refresh_token)
    await provider.verify(two.access_token)
    await provider.sign_out(two.access_token, everywhere=True)
    for session in (two, three):
        with pytest.raises(InvalidToken):
            await provider.verify(session.access_token)
        with pytest.raises(InvalidToken):
            await provider.refresh(session.refresh_token)


async def test_change_password_ends_the_other_sessions(provider):
    _, mine = await _ada(provider)
    other = await provider.sign_in("ada@example.com", PASSWORD)
    with pytest.raises(InvalidCredentials):
        await provider.change_password(mine.access_token, "wrong password", "a new long password")
    with pytest.raises(InvalidPassword) as caught:
        await provider.change_password(mine.access_token, PASSWORD, "short")
    assert caught.value.message.startswith("new_password:")
    await provider.change_password(mine.access_token, PASSWORD, "a new long password")
    await provider.verify(mine.access_token)
    await provider.refresh(mine.refresh_token)
    with pytest.raises(InvalidToken):
        await provider.refresh(other.refresh_token)
    with pytest.raises(InvalidCredentials):
        await provider.sign_in("ada@example.com", PASSWORD)
    await provider.sign_in("ada@example.com", "a new long password")


@pytest.mark.parametrize(
    "email,password,error,field",
    [
        ("ada\x00@example.com", PASSWORD, InvalidEmail, "email"),
        ("ad\ud800a@example.com", PASSWORD, InvalidEmail, "email"),
        ("a" * 5000 + "@example.com", PASSWORD, InvalidEmail, "email"),
        ("ada@example.com", "correct\x00horse", InvalidPassword, "password"),
        ("ada@example.com", "correct horse\udfff", InvalidPassword, "password"),
        ("ada@example.com", "p" * 1025, InvalidPassword, "password"),
    ],
)
async def test_unstorable_input_names_the_field(provider, email, password, error, field):
    with pytest.raises(error) as caught:
        await provider.sign_up(email, password)
    assert caught.value.message.startswith(f"{field}:")


async def test_emails_are_normalized(provider):
    await provider.sign_up(" Ade\u0301le@Example.COM ", PASSWORD)  # decomposed é
    await provider.sign_in("ad\u00e9le@example.com", PASSWORD)  # composed é


async def test_api_key_lifecycle(provider, keys, engine, clock):
    signed_up, _ = await _ada(provider)
    ada = Principal(user_id=signed_up.user_id, account_id=signed_up.account_id, email="ada@example.com")
    key, secret = await keys.create(ada, "ci", None)
    assert secret.startswith(API_KEY_PREFIX) and key.display_prefix == secret[: len(key.display_prefix)]
    verified = await keys.verify(secret)
    assert (verified.principal.account_id, verified.principal.api_key_id) == (ada.account_id, key.api_key_id)
    listed = await keys.list(ada.account_id)
    assert [k.api_key_id for k in listed] == [key.api_key_id] and listed[0].last_used_at == clock()
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(api_keys))).one()
    assert secret not in str(tuple(row)) and len(row.key_hash) == 64
    # Another account cannot see or revoke it: not found, as if it did not exist.
    bob = await provider.sign_up("bob@example.com", PASSWORD)
    assert await keys.list(bob.account_id) == []
    with pytest.raises(ApiKeyNotFound):
        await keys.revoke(bob.account_id, key.api_key_id)
    await keys.verify(secret)
    await keys.revoke(ada.account_id, key.api_key_id)
    with pytest.raises(InvalidToken):
        await keys.verify(secret)
    assert await keys.list(ada.account_id) == []
    with pytest.raises(ApiKeyNotFound):
        await keys.revoke(ada.account_id, key.api_key_id)


async def test_expired_api_key_and_bad_names(provider, keys, clock):
    signed_up, _ = await _ada(provider)
    ada = Principal(user_id=signed_up.user_id, account_id=signed_up.account_id, email="ada@example.com")
    _, secret = await keys.create(ada, "short-lived", clock() + 60)
    await keys.verify(secret)
    clock.advance(60)
    with pytest.raises(InvalidToken) as caught:
        await keys.verify(secret)
    assert caught.value.code == "api_key_expired"
    for name in ("", "   ", "a\x00b", "\ud800", "n" * 201):
        with pytest.raises(InvalidName) as bad:
            await keys.create(ada, name, None)
        assert bad.value.message.startswith("name:")
    with pytest.raises(InvalidName):
        await keys.create(ada, "past", clock() - 1)
    for garbage in ("agentry_sk_unknown", "not-a-key", "agentry_sk_" + "x" * 500):
        with pytest.raises(InvalidToken):
            await keys.verify(garbage)


async def test_key_rotation_signs_nobody_out(clock):
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ada = Principal(user_id="u", account_id="a", email="ada@example.com", session_id="s")
    before = TokenService(old, issuer="i", audience="authenticated", ttl_seconds=900, clock=clock)
    issued_before = before.issue(ada)
    after = TokenService(
        new, issuer="i", audience="authenticated", ttl_seconds=900, clock=clock, retired_keys=[old.public_key()]
    )
    assert after.verify(issued_before.access_token).principal == ada
    issued_after = after.issue(ada)
    assert jwt.get_unverified_header(issued_after.access_token)["kid"] == public_jwk(new.public_key())["kid"]
    assert [k["kid"] for k in after.jwks()["keys"]] == [
        public_jwk(new.public_key())["kid"],
        public_jwk(old.public_key())["kid"],
    ]
    # Once the operator drops the retired key, its tokens (expired by then) no longer verify.
    dropped = TokenService(new, issuer="i", audience="authenticated", ttl_seconds=900, clock=clock)
    with pytest.raises(InvalidToken):
        dropped.verify(issued_before.access_token)


async def test_stream_token_is_not_an_access_token(tokens):
    ada = Principal(user_id="u", account_id="a", email="ada@example.com")
    stream = tokens.issue_stream(ada, "run:r1")
    claims = jwt.decode(stream.access_token, options={"verify_signature": False})
    assert claims["aud"] == STREAM_AUDIENCE and claims["resource"] == "run:r1" and stream.expires_in == 300
    with pytest.raises(InvalidToken):
        tokens.verify(stream.access_token)
