"""Request dependencies: the upstream clients and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import grpc
from fastapi import Depends, Request

from agentry.api.auth.v1 import auth_pb2
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


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    # EventSource cannot set headers; the stream route also accepts ?access_token=.
    if request.url.path.endswith("/stream") and request.query_params.get("access_token"):
        return request.query_params["access_token"]
    raise ApiError(401, "unauthenticated", "missing bearer token: send 'Authorization: Bearer <token>'")


async def get_caller(request: Request, upstreams: UpstreamsDep) -> Caller:
    token = _bearer(request)
    try:
        reply = await upstreams.auth.VerifyToken(auth_pb2.VerifyTokenRequest(token=token))
    except grpc.aio.AioRpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT,
                          grpc.StatusCode.NOT_FOUND):
            raise ApiError(401, "invalid_token", exc.details() or "invalid token") from exc
        raise
    p = reply.principal
    return Caller(user_id=p.user_id, account_id=p.account_id, email=p.email)


CallerDep = Annotated[Caller, Depends(get_caller)]
