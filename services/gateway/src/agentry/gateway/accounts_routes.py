"""The account routes: my accounts, team accounts, members, roles and invitations."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from agentry.api.auth.v1 import auth_pb2

from . import auth_schemas as s
from .deps import CallerDep, UpstreamsDep
from .tokens import Caller

router = APIRouter(prefix="/api")


def _time(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _principal(caller: Caller) -> auth_pb2.Principal:
    return auth_pb2.Principal(user_id=caller.user_id, account_id=caller.account_id, email=caller.email)


def _account(m: auth_pb2.AccountMembership) -> s.AccountOut:
    return s.AccountOut(
        id=m.account_id,
        name=m.name,
        personal=m.personal,
        role=m.role,  # pyright: ignore[reportArgumentType] - pydantic checks it
        created_at=_time(m.created_at),
    )


def _member(m: auth_pb2.Member) -> s.MemberOut:
    return s.MemberOut(
        user_id=m.user_id,
        email=m.email,
        role=m.role,  # pyright: ignore[reportArgumentType] - pydantic checks it
        joined_at=_time(m.joined_at),
    )


@router.get("/accounts", response_model=s.AccountList, tags=["accounts"])
async def list_accounts(caller: CallerDep, up: UpstreamsDep):
    """Every account the caller may act for (send its id as `X-Account-Id`), personal first."""
    reply = await up.auth.ListAccounts(auth_pb2.ListAccountsRequest(user_id=caller.user_id))
    return s.AccountList(accounts=[_account(m) for m in reply.accounts])


@router.post("/accounts", status_code=201, response_model=s.AccountOut, tags=["accounts"])
async def create_team(body: s.NewTeam, caller: CallerDep, up: UpstreamsDep):
    """A team account, owned by the caller."""
    return _account(await up.auth.CreateTeam(auth_pb2.CreateTeamRequest(principal=_principal(caller), name=body.name)))


@router.post("/accounts/invitations/accept", response_model=s.AccountOut, tags=["accounts"])
async def accept_invitation(body: s.InvitationAcceptance, caller: CallerDep, up: UpstreamsDep):
    """Joins the account the invitation is for; it must be addressed to the caller's email."""
    return _account(
        await up.auth.AcceptInvitation(auth_pb2.AcceptInvitationRequest(principal=_principal(caller), token=body.token))
    )


@router.get("/accounts/{account_id}/members", response_model=s.MemberList, tags=["accounts"])
async def list_members(account_id: str, caller: CallerDep, up: UpstreamsDep):
    reply = await up.auth.ListMembers(auth_pb2.ListMembersRequest(principal=_principal(caller), account_id=account_id))
    return s.MemberList(members=[_member(m) for m in reply.members])


@router.post(
    "/accounts/{account_id}/invitations", status_code=201, response_model=s.InvitationCreated, tags=["accounts"]
)
async def invite(account_id: str, body: s.NewInvitation, caller: CallerDep, up: UpstreamsDep):
    """Owners and admins invite by email; deliver the token to the invitee (it is shown once)."""
    reply = await up.auth.CreateInvitation(
        auth_pb2.CreateInvitationRequest(
            principal=_principal(caller), account_id=account_id, email=body.email, role=body.role
        )
    )
    return s.InvitationCreated(id=reply.invitation_id, token=reply.token, expires_at=_time(reply.expires_at))


@router.patch("/accounts/{account_id}/members/{user_id}", response_model=s.MemberOut, tags=["accounts"])
async def change_role(account_id: str, user_id: str, body: s.RoleChange, caller: CallerDep, up: UpstreamsDep):
    return _member(
        await up.auth.ChangeRole(
            auth_pb2.ChangeRoleRequest(
                principal=_principal(caller), account_id=account_id, user_id=user_id, role=body.role
            )
        )
    )


@router.delete("/accounts/{account_id}/members/{user_id}", status_code=204, tags=["accounts"])
async def remove_member(account_id: str, user_id: str, caller: CallerDep, up: UpstreamsDep):
    """Removes a member (owners and admins), or leaves when `user_id` is the caller's own."""
    await up.auth.RemoveMember(
        auth_pb2.RemoveMemberRequest(principal=_principal(caller), account_id=account_id, user_id=user_id)
    )
    return Response(status_code=204)
