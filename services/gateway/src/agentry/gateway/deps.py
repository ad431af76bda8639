"""Request dependencies: the upstream clients and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import grpc
from fastapi import Depends, Request

from agentry.api.auth.v1 import auth_pb2
from agentry.servicekit.errors import ERROR_CODE_KEY, INTERNAL_CREDENTIAL_REFUSED
from agentry.servicekit.context import new_request_id, request_id_var

from .errors import ApiError
from .upstreams import Upstreams


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: str
    account_id: str
    email: str


def get_upstreams(request: Request) -> Upstreams:
    request_id_var.set(request.headers.get("x-request-id") or new_request_id())
    return request.app.state.upstreams


UpstreamsDep = Annotated[Upstreams, Depends(get_upstreams)]


def _bearer(request: Request, *, allow_query: bool = False) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    # EventSource cannot set headers; the stream route (and only it) also accepts ?access_token=.
    if allow_query and request.query_params.get("access_token"):
        return request.query_params["access_token"]
    raise ApiError(401, "unauthenticated", "missing bearer token: send 'Authorization: Bearer <token>'")


async def _verify(upstreams: Upstreams, token: str) -> Caller:
    try:
        reply = await upstreams.auth.VerifyToken(auth_pb2.VerifyTokenRequest(token=token))
    except grpc.aio.AioRpcError as exc:
        refused_us = dict(exc.trailing_metadata() or ()).get(ERROR_CODE_KEY) == INTERNAL_CREDENTIAL_REFUSED
        if not refused_us and exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
                          grpc.StatusCode.NOT_FOUND):
            raise ApiError(401, "invalid_token", exc.details() or "invalid token") from exc
        raise
    p = reply.principal
    return Caller(user_id=p.user_id, account_id=p.account_id, email=p.email)


async def get_caller(request: Request, upstreams: UpstreamsDep) -> Caller:
    return await _verify(upstreams, _bearer(request))


async def get_stream_caller(request: Request, upstreams: UpstreamsDep) -> Caller:
    return await _verify(upstreams, _bearer(request, allow_query=True))


CallerDep = Annotated[Caller, Depends(get_caller)]
StreamCallerDep = Annotated[Caller, Depends(get_stream_caller)]
