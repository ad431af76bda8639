"""Accounts and teams: roles, invitations (single use, expiring, for one email), leaving and the
last owner, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from agentry.auth.accounts import AccountService
from agentry.auth.adapters.sql import SqlAccountRepository, SqlSessionRepository, SqlUserRepository
from agentry.auth.domain import Principal
from agentry.auth.errors import (
    AccountNotFound,
    InvalidInvitation,
    InvalidName,
    LastOwner,
    MemberNotFound,
    RoleRequired,
)
from agentry.auth.service import LocalIdentityProvider


@pytest.fixture
def accounts(engine, clock):
    return AccountService(SqlAccountRepository(engine), clock=clock, invitation_ttl_seconds=3600)


@pytest.fixture
def people(engine, hasher, tokens, clock):
    provider = LocalIdentityProvider(
        SqlUserRepository(engine), hasher, tokens, SqlSessionRepository(engine), clock=clock
    )

    async def make(name: str) -> Principal:
        signed_up = await provider.sign_up(f"{name}@example.com", "correct horse")
        return Principal(user_id=signed_up.user_id, account_id=signed_up.account_id, email=f"{name}@example.com")

    return make


async def _team_with(accounts, owner, *others_and_roles):
    team = (await accounts.create_team(owner, "Acme")).account
    for person, role in others_and_roles:
        _, token = await accounts.invite(owner, team.account_id, person.email, role)
        await accounts.accept(person, token)
    return team


async def test_personal_and_team_accounts(accounts, people):
    ada = await people("ada")
    [personal] = await accounts.list(ada.user_id)
    assert (personal.account.account_id, personal.account.personal, personal.role) == (ada.account_id, True, "owner")
    team = await accounts.create_team(ada, "  Acme  ")
    assert (team.account.name, team.account.personal, team.role) == ("Acme", False, "owner")
    assert [m.account.account_id for m in await accounts.list(ada.user_id)] == [ada.account_id, team.account.account_id]
    for name in ("", "a\x00", "x" * 201):
        with pytest.raises(InvalidName):
            await accounts.create_team(ada, name)


async def test_invitation_is_single_use_for_one_email_and_expires(accounts, people, clock):
    ada, bob, eve = await people("ada"), await people("bob"), await people("eve")
    team = (await accounts.create_team(ada, "Acme")).account
    _, token = await accounts.invite(ada, team.account_id, "BOB@example.com", "member")
    with pytest.raises(InvalidInvitation):
        await accounts.accept(eve, token)  # addressed to Bob
    joined = await accounts.accept(bob, token)
    assert (joined.account.account_id, joined.role) == (team.account_id, "member")
    with pytest.raises(InvalidInvitation):
        await accounts.accept(bob, token)  # used
    _, late = await accounts.invite(ada, team.account_id, "eve@example.com", "admin")
    clock.advance(3600)
    with pytest.raises(InvalidInvitation):
        await accounts.accept(eve, late)
    with pytest.raises(InvalidInvitation):
        await accounts.accept(eve, "agentry_inv_made-up")


async def test_roles_decide_who_may_invite_and_manage(accounts, people):
    ada, bob, carl, dan = await people("ada"), await people("bob"), await people("carl"), await people("dan")
    team = await _team_with(accounts, ada, (bob, "admin"), (carl, "member"))
    with pytest.raises(RoleRequired):
        await accounts.invite(carl, team.account_id, "dan@example.com", "member")
    with pytest.raises(RoleRequired):
        await accounts.invite(bob, team.account_id, "dan@example.com", "owner")  # above the admin's own role
    with pytest.raises(AccountNotFound):
        await accounts.invite(dan, team.account_id, "dan@example.com", "member")  # not a member at all
    with pytest.raises(AccountNotFound):
        await accounts.members(dan, team.account_id)
    assert {m.email: m.role for m in await accounts.members(carl, team.account_id)} == {
        "ada@example.com": "owner",
        "bob@example.com": "admin",
        "carl@example.com": "member",
    }
    with pytest.raises(RoleRequired):
        await accounts.change_role(carl, team.account_id, carl.user_id, "admin")
    with pytest.raises(RoleRequired):
        await accounts.change_role(bob, team.account_id, ada.user_id, "member")  # an admin cannot demote an owner
    assert (await accounts.change_role(bob, team.account_id, carl.user_id, "admin")).role == "admin"
    with pytest.raises(MemberNotFound):
        await accounts.change_role(ada, team.account_id, dan.user_id, "admin")
    with pytest.raises(InvalidName):
        await accounts.change_role(ada, team.account_id, carl.user_id, "superuser")
    with pytest.raises(RoleRequired):
        await accounts.invite(ada, ada.account_id, "bob@example.com", "member")  # personal accounts have no teams


async def test_the_last_owner_stays(accounts, people):
    ada, bob = await people("ada"), await people("bob")
    team = await _team_with(accounts, ada, (bob, "member"))
    with pytest.raises(LastOwner):
        await accounts.remove(ada, team.account_id, ada.user_id)
    with pytest.raises(LastOwner):
        await accounts.change_role(ada, team.account_id, ada.user_id, "admin")
    await accounts.change_role(ada, team.account_id, bob.user_id, "owner")
    await accounts.remove(ada, team.account_id, ada.user_id)  # now Ada may leave
    with pytest.raises(AccountNotFound):
        await accounts.resolve(ada.user_id, team.account_id)
    with pytest.raises(RoleRequired):
        await accounts.remove(ada, ada.account_id, ada.user_id)  # a personal account cannot be left


async def test_removing_members(accounts, people):
    ada, bob, carl = await people("ada"), await people("bob"), await people("carl")
    team = await _team_with(accounts, ada, (bob, "admin"), (carl, "member"))
    with pytest.raises(RoleRequired):
        await accounts.remove(carl, team.account_id, bob.user_id)
    with pytest.raises(RoleRequired):
        await accounts.remove(bob, team.account_id, ada.user_id)
    await accounts.remove(bob, team.account_id, carl.user_id)
    with pytest.raises(AccountNotFound):
        await accounts.members(carl, team.account_id)
    await accounts.remove(bob, team.account_id, bob.user_id)  # leaving
    assert [m.email for m in await accounts.members(ada, team.account_id)] == ["ada@example.com"]
