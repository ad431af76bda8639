"""Accounts and teams: personal and team accounts, members and roles, invitations."""

from __future__ import annotations

import logging
import secrets
import time
import uuid

from .domain import (
    ADMIN,
    OWNER,
    ROLE_RANK,
    ROLES,
    TEAM_NAME_MAX_LENGTH,
    Account,
    AccountMembership,
    Invitation,
    Member,
    Membership,
    Principal,
    normalize_email,
    text_problem,
)
from .errors import AccountNotFound, InvalidInvitation, InvalidName, LastOwner, MemberNotFound, RoleRequired
from .ports import AccountRepository, Clock, IdFactory
from .service import secret_hash

logger = logging.getLogger(__name__)

INVITATION_PREFIX = "agentry_inv_"
INVITATION_TTL_SECONDS = 7 * 86_400


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidName(f"role: must be one of {', '.join(ROLES)}", code="invalid_role")
    return role


class AccountService:
    def __init__(
        self,
        accounts: AccountRepository,
        *,
        clock: Clock = time.time,
        new_id: IdFactory = lambda: str(uuid.uuid4()),
        invitation_ttl_seconds: int = INVITATION_TTL_SECONDS,
    ) -> None:
        self._accounts, self._clock, self._new_id = accounts, clock, new_id
        self._invitation_ttl = invitation_ttl_seconds

    async def resolve(self, user_id: str, account_id: str) -> AccountMembership:
        """The user's membership of the account; AccountNotFound when there is none."""
        membership = await self._accounts.membership(user_id, account_id) if account_id else None
        if membership is None:
            raise AccountNotFound(f"account {account_id} not found")
        return membership

    async def _require(self, user_id: str, account_id: str, role: str) -> AccountMembership:
        membership = await self.resolve(user_id, account_id)
        if ROLE_RANK[membership.role] < ROLE_RANK[role]:
            raise RoleRequired(f"this needs the {role} role in the account")
        return membership

    async def list(self, user_id: str) -> list[AccountMembership]:
        return await self._accounts.list_for_user(user_id)

    async def create_team(self, principal: Principal, name: str) -> AccountMembership:
        name = name.strip()
        problem = "is required" if not name else text_problem(name, max_length=TEAM_NAME_MAX_LENGTH)
        if problem:
            raise InvalidName(f"name: {problem}")
        now = self._clock()
        account = Account(account_id=self._new_id(), name=name, personal=False, created_at=now)
        await self._accounts.add_account(account, Membership(account.account_id, principal.user_id, OWNER, now))
        logger.info("team account %s created by user %s", account.account_id, principal.user_id)
        return AccountMembership(account, OWNER)

    async def members(self, principal: Principal, account_id: str) -> list[Member]:
        await self.resolve(principal.user_id, account_id)
        return await self._accounts.members(account_id)

    async def invite(self, principal: Principal, account_id: str, email: str, role: str) -> tuple[Invitation, str]:
        membership = await self._require(principal.user_id, account_id, ADMIN)
        if membership.account.personal:
            raise RoleRequired("a personal account has no other members: create a team account")
        _check_role(role)
        if ROLE_RANK[role] > ROLE_RANK[membership.role]:
            raise RoleRequired(f"an {membership.role} cannot invite an {role}")
        now = self._clock()
        token = INVITATION_PREFIX + secrets.token_urlsafe(32)
        invitation = Invitation(
            invitation_id=self._new_id(),
            account_id=account_id,
            email=normalize_email(email),
            role=role,
            invited_by=principal.user_id,
            created_at=now,
            expires_at=now + self._invitation_ttl,
        )
        await self._accounts.add_invitation(invitation, secret_hash(token))
        logger.info(
            "invitation %s to account %s created by user %s", invitation.invitation_id, account_id, principal.user_id
        )
        return invitation, token

    async def accept(self, principal: Principal, token: str) -> AccountMembership:
        if not token.startswith(INVITATION_PREFIX) or len(token) > 128:
            raise InvalidInvitation("invitation not found")
        invitation = await self._accounts.accept_invitation(
            secret_hash(token), principal.user_id, normalize_email(principal.email), now=self._clock()
        )
        if invitation is None:
            raise InvalidInvitation("invitation not found")
        logger.info("user %s joined account %s", principal.user_id, invitation.account_id)
        return await self.resolve(principal.user_id, invitation.account_id)

    async def change_role(self, principal: Principal, account_id: str, user_id: str, role: str) -> Member:
        _check_role(role)
        actor = await self._require(principal.user_id, account_id, ADMIN)
        target = await self._member(account_id, user_id)
        # An admin manages members and admins; only an owner makes or unmakes owners.
        if OWNER in (role, target.role) and actor.role != OWNER:
            raise RoleRequired("only an owner can change an owner's role or make an owner")
        if not await self._accounts.set_role(account_id, user_id, role, keep_an_owner=True):
            raise LastOwner("the account's last owner cannot stop being its owner")
        return Member(target.user_id, target.email, role, target.joined_at)

    async def remove(self, principal: Principal, account_id: str, user_id: str) -> None:
        """Removes a member; removing yourself is leaving."""
        actor = await self.resolve(principal.user_id, account_id)
        if actor.account.personal:
            raise RoleRequired("a personal account cannot be left")
        if user_id != principal.user_id:
            actor = await self._require(principal.user_id, account_id, ADMIN)
            target = await self._member(account_id, user_id)
            if target.role == OWNER and actor.role != OWNER:
                raise RoleRequired("only an owner can remove an owner")
        if not await self._accounts.remove_member(account_id, user_id, keep_an_owner=True):
            raise LastOwner("the account's last owner cannot leave it: make another member owner first")
        logger.info("user %s removed from account %s by user %s", user_id, account_id, principal.user_id)

    async def _member(self, account_id: str, user_id: str) -> Member:
        member = next((m for m in await self._accounts.members(account_id) if m.user_id == user_id), None)
        if member is None:
            raise MemberNotFound(f"member {user_id} not found")
        return member
