"""The local provider's use cases over a real SQLite repository, argon2 and ES256 tokens."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa

from agentry.auth.adapters.sql import SqlSessionRepository, SqlUserRepository, users
from agentry.auth.errors import EmailTaken, InvalidCredentials, InvalidEmail, InvalidPassword, InvalidToken
from agentry.auth.service import LocalIdentityProvider


class CountingHasher:
    """Wraps a real hasher and counts verifications, to prove unknown emails cost the same work."""

    def __init__(self, inner) -> None:
        self.inner, self.verified = inner, []

    async def hash(self, password):
        return await self.inner.hash(password)

    async def verify(self, password_hash, password):
        self.verified.append(password_hash)
        return await self.inner.verify(password_hash, password)

    def needs_rehash(self, password_hash):
        return self.inner.needs_rehash(password_hash)


@pytest.fixture
def repo(sqlite_engine):
    return SqlUserRepository(sqlite_engine)


@pytest.fixture
def sessions(sqlite_engine):
    return SqlSessionRepository(sqlite_engine)


@pytest.fixture
def provider(repo, hasher, tokens, sessions, clock):
    ids = (f"id-{n}" for n in itertools.count(1))
    return LocalIdentityProvider(repo, hasher, tokens, sessions, clock=clock, new_id=lambda: next(ids))


async def test_sign_up_sign_in_verify(provider, clock):
    signed_up = await provider.sign_up("  Ada@Example.com", "correct horse")
    assert (signed_up.user_id, signed_up.account_id) == ("id-1", "id-2")
    issued = await provider.sign_in("ada@example.COM", "correct horse")
    verified = await provider.verify(issued.access_token)
    assert verified.principal.user_id == "id-1"
    assert verified.principal.account_id == "id-2"
    assert verified.principal.email == "ada@example.com"
    assert verified.expires_at == int(clock()) + 3600


async def test_stored_password_is_an_argon2_hash(provider, repo):
    await provider.sign_up("ada@example.com", "correct horse")
    stored = (await repo.find_user_by_email("ada@example.com")).password_hash
    assert stored.startswith("$argon2id$") and "correct horse" not in stored


async def test_duplicate_email_ignores_case(provider):
    await provider.sign_up("ada@example.com", "correct horse")
    with pytest.raises(EmailTaken):
        await provider.sign_up("ADA@example.com", "another password")


async def test_sign_up_validates_before_hashing_or_storing(provider, repo):
    with pytest.raises(InvalidEmail):
        await provider.sign_up("not-an-email", "correct horse")
    with pytest.raises(InvalidPassword):
        await provider.sign_up("ada@example.com", "short")
    assert await repo.find_user_by_email("ada@example.com") is None


@pytest.mark.parametrize(
    ("email", "password"),
    [
        ("ada@example.com", "wrong horse"),
        ("nobody@example.com", "correct horse"),
        ("not-an-email", "correct horse"),
        ("ada@example.com", "x" * 1025),
    ],
)
async def test_every_bad_sign_in_gets_the_same_answer(provider, email, password):
    await provider.sign_up("ada@example.com", "correct horse")
    with pytest.raises(InvalidCredentials) as caught:
        await provider.sign_in(email, password)
    assert (caught.value.code, caught.value.message) == ("invalid_credentials", "invalid email or password")


async def test_unknown_email_still_runs_a_password_verification(repo, hasher, tokens, sessions, clock):
    counting = CountingHasher(hasher)
    provider = LocalIdentityProvider(repo, counting, tokens, sessions, clock=clock)
    with pytest.raises(InvalidCredentials):
        await provider.sign_in("nobody@example.com", "correct horse")
    with pytest.raises(InvalidCredentials):
        await provider.sign_in("nobody@example.com", "correct horse")
    assert len(counting.verified) == 2
    assert counting.verified[0] == counting.verified[1]  # one dummy hash, made once


async def test_sign_in_upgrades_an_outdated_hash(repo, make_hasher, tokens, sessions, clock):
    await LocalIdentityProvider(repo, make_hasher(), tokens, sessions, clock=clock).sign_up(
        "ada@example.com", "correct horse"
    )
    old = (await repo.find_user_by_email("ada@example.com")).password_hash
    stronger = make_hasher(time_cost=2)
    await LocalIdentityProvider(repo, stronger, tokens, sessions, clock=clock).sign_in(
        "ada@example.com", "correct horse"
    )
    new = (await repo.find_user_by_email("ada@example.com")).password_hash
    assert new != old and "t=2" in new and not stronger.needs_rehash(new)
    assert await stronger.verify(new, "correct horse")


async def test_token_of_a_deleted_user_is_refused(provider, sqlite_engine):
    await provider.sign_up("ada@example.com", "correct horse")
    token = (await provider.sign_in("ada@example.com", "correct horse")).access_token
    async with sqlite_engine.begin() as conn:
        await conn.execute(sa.delete(users))
    with pytest.raises(InvalidToken) as caught:
        await provider.verify(token)
    assert caught.value.code == "invalid_token"


async def test_jwks_is_the_token_services(provider, tokens):
    assert await provider.jwks() == tokens.jwks()
