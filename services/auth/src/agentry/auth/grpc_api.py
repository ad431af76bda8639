"""The AuthService servicer: translates protobuf to the identity provider's calls and back."""

from __future__ import annotations

import json

import grpc

from agentry.api.auth.v1 import auth_pb2, auth_pb2_grpc
from agentry.servicekit.errors import InvalidArgument

from .accounts import AccountService
from .apikeys import ApiKeyService
from .domain import AccountMembership, ApiKey, IssuedToken, Member, Principal, VerifiedToken
from .errors import InvalidToken
from .ports import IdentityProvider

_STREAM_RESOURCE_KINDS = ("run:", "thread:", "sandbox:")


def _principal_out(principal: Principal) -> auth_pb2.Principal:
    return auth_pb2.Principal(
        user_id=principal.user_id,
        account_id=principal.account_id,
        email=principal.email,
        session_id=principal.session_id,
        api_key_id=principal.api_key_id,
    )


def _principal_in(message: auth_pb2.Principal) -> Principal:
    return Principal(
        user_id=message.user_id,
        account_id=message.account_id,
        email=message.email,
        session_id=message.session_id,
        api_key_id=message.api_key_id,
    )


def _verified(verified: VerifiedToken) -> auth_pb2.VerifyTokenResponse:
    return auth_pb2.VerifyTokenResponse(principal=_principal_out(verified.principal), expires_at=verified.expires_at)


def _issued(issued: IssuedToken) -> auth_pb2.SignInResponse:
    return auth_pb2.SignInResponse(
        access_token=issued.access_token,
        token_type=issued.token_type,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
    )


def _api_key(key: ApiKey) -> auth_pb2.ApiKey:
    return auth_pb2.ApiKey(
        api_key_id=key.api_key_id,
        name=key.name,
        display_prefix=key.display_prefix,
        created_at=key.created_at,
        expires_at=key.expires_at or 0.0,
        last_used_at=key.last_used_at or 0.0,
    )


def _membership(m: AccountMembership) -> auth_pb2.AccountMembership:
    return auth_pb2.AccountMembership(
        account_id=m.account.account_id,
        name=m.account.name,
        personal=m.account.personal,
        role=m.role,
        created_at=m.account.created_at,
    )


def _member(m: Member) -> auth_pb2.Member:
    return auth_pb2.Member(user_id=m.user_id, email=m.email, role=m.role, joined_at=m.joined_at)


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, provider: IdentityProvider, api_keys: ApiKeyService, accounts: AccountService) -> None:
        self._provider = provider
        self._api_keys = api_keys
        self._accounts = accounts

    async def SignUp(
        self, request: auth_pb2.SignUpRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignUpResponse:
        signed_up = await self._provider.sign_up(request.email, request.password)
        return auth_pb2.SignUpResponse(user_id=signed_up.user_id, account_id=signed_up.account_id)

    async def SignIn(
        self, request: auth_pb2.SignInRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignInResponse:
        return _issued(await self._provider.sign_in(request.email, request.password))

    async def Refresh(
        self, request: auth_pb2.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignInResponse:
        return _issued(await self._provider.refresh(request.refresh_token))

    async def SignOut(
        self, request: auth_pb2.SignOutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.SignOutResponse:
        await self._provider.sign_out(request.token, everywhere=request.scope == "global")
        return auth_pb2.SignOutResponse()

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        await self._provider.change_password(request.token, request.current_password, request.new_password)
        return auth_pb2.ChangePasswordResponse()

    async def VerifyToken(
        self, request: auth_pb2.VerifyTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyTokenResponse:
        return _verified(await self._provider.verify(request.token))

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps(await self._provider.jwks(), sort_keys=True))

    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateApiKeyResponse:
        # A long-lived secret is a sensitive action: the session behind it must still be live.
        if not request.token:
            raise InvalidToken("creating an API key needs a signed-in session's access token")
        confirmed = (await self._provider.confirm(request.token)).principal
        if confirmed.user_id != request.principal.user_id:
            raise InvalidToken("invalid token: it is not the caller's")
        key, secret = await self._api_keys.create(
            _principal_in(request.principal), request.name, request.expires_at or None
        )
        return auth_pb2.CreateApiKeyResponse(api_key=_api_key(key), key=secret)

    async def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListApiKeysResponse:
        return auth_pb2.ListApiKeysResponse(
            api_keys=[_api_key(k) for k in await self._api_keys.list(request.account_id)]
        )

    async def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RevokeApiKeyResponse:
        await self._api_keys.revoke(request.account_id, request.api_key_id)
        return auth_pb2.RevokeApiKeyResponse()

    async def VerifyApiKey(
        self, request: auth_pb2.VerifyApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyTokenResponse:
        return _verified(await self._api_keys.verify(request.key))

    async def IssueStreamToken(
        self, request: auth_pb2.IssueStreamTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.IssueStreamTokenResponse:
        # The caller (the gateway) has already checked that the principal may read the resource.
        if not request.resource.startswith(_STREAM_RESOURCE_KINDS) or len(request.resource) > 200:
            raise InvalidArgument("resource: must be run:<id>, thread:<id> or sandbox:<id>", code="invalid_resource")
        issued = self._provider.issue_stream_token(_principal_in(request.principal), request.resource)
        return auth_pb2.IssueStreamTokenResponse(token=issued.access_token, expires_in=issued.expires_in)

    async def ResolveAccount(self, request: auth_pb2.ResolveAccountRequest, context) -> auth_pb2.AccountMembership:
        return _membership(await self._accounts.resolve(request.user_id, request.account_id))

    async def ListAccounts(self, request: auth_pb2.ListAccountsRequest, context) -> auth_pb2.ListAccountsResponse:
        return auth_pb2.ListAccountsResponse(
            accounts=[_membership(m) for m in await self._accounts.list(request.user_id)]
        )

    async def CreateTeam(self, request: auth_pb2.CreateTeamRequest, context) -> auth_pb2.AccountMembership:
        return _membership(await self._accounts.create_team(_principal_in(request.principal), request.name))

    async def ListMembers(self, request: auth_pb2.ListMembersRequest, context) -> auth_pb2.ListMembersResponse:
        members = await self._accounts.members(_principal_in(request.principal), request.account_id)
        return auth_pb2.ListMembersResponse(members=[_member(m) for m in members])

    async def CreateInvitation(
        self, request: auth_pb2.CreateInvitationRequest, context
    ) -> auth_pb2.CreateInvitationResponse:
        invitation, token = await self._accounts.invite(
            _principal_in(request.principal), request.account_id, request.email, request.role
        )
        return auth_pb2.CreateInvitationResponse(
            invitation_id=invitation.invitation_id, token=token, expires_at=invitation.expires_at
        )

    async def AcceptInvitation(self, request: auth_pb2.AcceptInvitationRequest, context) -> auth_pb2.AccountMembership:
        return _membership(await self._accounts.accept(_principal_in(request.principal), request.token))

    async def ChangeRole(self, request: auth_pb2.ChangeRoleRequest, context) -> auth_pb2.Member:
        return _member(
            await self._accounts.change_role(
                _principal_in(request.principal), request.account_id, request.user_id, request.role
            )
        )

    async def RemoveMember(self, request: auth_pb2.RemoveMemberRequest, context) -> auth_pb2.RemoveMemberResponse:
        await self._accounts.remove(_principal_in(request.principal), request.account_id, request.user_id)
        return auth_pb2.RemoveMemberResponse()
