"""The SQL UserRepository over SQLite and PostgreSQL: one transaction per sign-up, unique emails."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from agentry.auth.adapters.sql import SqlUserRepository, accounts, memberships, users
from agentry.auth.domain import Account, Membership, Principal, User
from agentry.auth.errors import EmailTaken


def _rows(n: int, email: str = "ada@example.com"):
    user = User(user_id=f"u-{n}", email=email, password_hash="$argon2id$h", created_at=100.5)
    account = Account(account_id=f"a-{n}", name="ada's account", personal=True, created_at=100.5)
    return (
        user,
        account,
        Membership(account_id=account.account_id, user_id=user.user_id, role="owner", created_at=100.5),
    )


async def _count(engine, table) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


async def test_add_user_stores_user_account_and_membership(engine):
    repo = SqlUserRepository(engine)
    await repo.add_user(*_rows(1))
    assert await repo.find_user_by_email("ada@example.com") == _rows(1)[0]
    assert await repo.personal_account_id("u-1") == "a-1"
    assert await repo.find_principal("u-1", "a-1") == Principal("u-1", "a-1", "ada@example.com")
    async with engine.connect() as conn:
        account = (await conn.execute(sa.select(accounts))).one()
        membership = (await conn.execute(sa.select(memberships))).one()
    assert account.personal is True and account.name == "ada's account"
    assert membership.role == "owner" and membership.created_at == 100.5


async def test_duplicate_email_is_email_taken_and_leaves_nothing_behind(engine):
    repo = SqlUserRepository(engine)
    await repo.add_user(*_rows(1))
    with pytest.raises(EmailTaken) as caught:
        await repo.add_user(*_rows(2))
    assert caught.value.code == "email_taken"
    assert (await _count(engine, users), await _count(engine, accounts), await _count(engine, memberships)) == (1, 1, 1)


async def test_a_failure_after_the_user_insert_rolls_back_the_whole_sign_up(engine):
    repo = SqlUserRepository(engine)
    await repo.add_user(*_rows(1))
    user, _, _ = _rows(2, email="bob@example.com")
    _, taken_account, _ = _rows(1)
    # The taken account id breaks the transaction's second insert, after the user row went in.
    with pytest.raises(sa.exc.IntegrityError):
        await repo.add_user(user, taken_account, Membership("a-1", "u-2", "owner", 1.0))
    assert await repo.find_user_by_email("bob@example.com") is None
    assert await _count(engine, users) == 1


async def test_lookups_of_unknown_things_return_none(engine):
    repo = SqlUserRepository(engine)
    await repo.add_user(*_rows(1))
    assert await repo.find_user_by_email("nobody@example.com") is None
    assert await repo.personal_account_id("u-404") is None
    assert await repo.find_principal("u-404", "a-1") is None
    # A real user, but not a member of that account.
    assert await repo.find_principal("u-1", "a-404") is None


async def test_set_password_hash_replaces_only_that_users_hash(engine):
    repo = SqlUserRepository(engine)
    await repo.add_user(*_rows(1))
    await repo.add_user(*_rows(2, email="bob@example.com"))
    await repo.set_password_hash("u-1", "$argon2id$new")
    assert (await repo.find_user_by_email("ada@example.com")).password_hash == "$argon2id$new"
    assert (await repo.find_user_by_email("bob@example.com")).password_hash == "$argon2id$h"


async def test_deleting_a_user_removes_their_memberships(engine):
    repo = SqlUserRepository(engine)
    await repo.add_user(*_rows(1))
    async with engine.begin() as conn:
        await conn.execute(users.delete().where(users.c.user_id == "u-1"))
    assert await _count(engine, memberships) == 0
    assert await repo.find_principal("u-1", "a-1") is None
