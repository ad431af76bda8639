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

_MISSING = "missing credentials: send 'Authorization: Bearer <token or API key>' or 'X-API-Key: <key>'"


def bearer(request: Request) -> str:
    """The credential of the request: `Authorization: Bearer <token or key>` or `X-API-Key: <key>`."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    if api_key:
        return api_key
    raise ApiError(401, "unauthenticated", _MISSING)


async def get_caller(request: Request, upstreams: UpstreamsDep) -> Caller:
    return await upstreams.token_verifier().verify(bearer(request))


def _stream_resource(request: Request) -> str:
    params = request.path_params
    if "run_id" in params:
        return f"run:{params['run_id']}"
    if "thread_id" in params:
        return f"thread:{params['thread_id']}"
    raise ApiError(401, "unauthenticated", _MISSING)


async def get_stream_caller(request: Request, upstreams: UpstreamsDep) -> Caller:
    """A header credential, or (EventSource cannot set headers) a stream token for this very
    stream in `?access_token=`: a URL never carries a credential that opens anything else."""
    if request.headers.get("authorization") or request.headers.get("x-api-key"):
        return await get_caller(request, upstreams)
    token = request.query_params.get("access_token")
    if not token:
        raise ApiError(401, "unauthenticated", _MISSING)
    return await upstreams.stream_token_verifier().verify_stream(token, _stream_resource(request))


CallerDep = Annotated[Caller, Depends(get_caller)]
StreamCallerDep = Annotated[Caller, Depends(get_stream_caller)]
