"""Request dependencies: the upstream clients and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from agentry.servicekit.context import new_request_id, request_id_var

from .errors import ApiError
from .tokens import Caller
from .upstreams import Upstreams


def get_upstreams(request: Request) -> Upstreams:
    request_id_var.set(request.headers.get("x-request-id") or new_request_id())
    return request.app.state.upstreams


UpstreamsDep = Annotated[Upstreams, Depends(get_upstreams)]


def _bearer(request: Request, *, allow_query: bool = False) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    # EventSource cannot set headers; the stream routes (and only they) also accept ?access_token=.
    if allow_query and request.query_params.get("access_token"):
        return request.query_params["access_token"]
    raise ApiError(401, "unauthenticated", "missing bearer token: send 'Authorization: Bearer <token>'")


async def _verify(upstreams: Upstreams, token: str) -> Caller:
    return await upstreams.token_verifier().verify(token)


async def get_caller(request: Request, upstreams: UpstreamsDep) -> Caller:
    return await _verify(upstreams, _bearer(request))


async def get_stream_caller(request: Request, upstreams: UpstreamsDep) -> Caller:
    return await _verify(upstreams, _bearer(request, allow_query=True))


CallerDep = Annotated[Caller, Depends(get_caller)]
StreamCallerDep = Annotated[Caller, Depends(get_stream_caller)]
