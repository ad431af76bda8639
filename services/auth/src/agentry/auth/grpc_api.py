"""The AuthService servicer: translates protobuf to the identity provider's calls and back."""

from __future__ import annotations

import json

import grpc

from agentry.api.auth.v1 import auth_pb2, auth_pb2_grpc

from .ports import IdentityProvider


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, provider: IdentityProvider) -> None:
        self._provider = provider

    async def SignUp(self, request: auth_pb2.SignUpRequest, context: grpc.aio.ServicerContext) -> auth_pb2.SignUpResponse:
        signed_up = await self._provider.sign_up(request.email, request.password)
        return auth_pb2.SignUpResponse(user_id=signed_up.user_id, account_id=signed_up.account_id)

    async def SignIn(self, request: auth_pb2.SignInRequest, context: grpc.aio.ServicerContext) -> auth_pb2.SignInResponse:
        issued = await self._provider.sign_in(request.email, request.password)
        return auth_pb2.SignInResponse(
            access_token=issued.access_token, token_type=issued.token_type, expires_in=issued.expires_in
        )

    async def VerifyToken(
        self, request: auth_pb2.VerifyTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.VerifyTokenResponse:
        verified = await self._provider.verify(request.token)
        principal = verified.principal
        return auth_pb2.VerifyTokenResponse(
            principal=auth_pb2.Principal(
                user_id=principal.user_id, account_id=principal.account_id, email=principal.email
            ),
            expires_at=verified.expires_at,
        )

    async def GetJwks(self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps(await self._provider.jwks(), sort_keys=True))
