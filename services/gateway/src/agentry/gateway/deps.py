"""Request dependencies: the upstream clients and the authenticated caller."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import grpc
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from agentry.api.auth.v1 import auth_pb2
from agentry.servicekit.context import account_id_var, new_request_id, request_id_var, run_id_var

from .errors import ApiError
from .schemas import unstorable
from .tokens import Caller
from .upstreams import Upstreams


def _refuse_unstorable(request: Request) -> None:
    """A NUL or a lone surrogate in a path or query parameter is a 422 naming it (it would fail
    deep in a driver: PostgreSQL refuses NUL in text)."""
    for where, items in (("path", request.path_params.items()), ("query", request.query_params.multi_items())):
        for name, value in items:
            if isinstance(value, str) and (problem := unstorable(value)):
                raise ApiError(
                    422,
                    "validation_error",
                    f"invalid request: {where}.{name}: {problem}",
                    fields=[{"field": f"{where}.{name}", "message": problem}],
                )


async def get_upstreams(request: Request) -> Upstreams:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per request.
    request_id_var.set(request.headers.get("x-request-id") or new_request_id())
    run_id = request.path_params.get("run_id")
    if isinstance(run_id, str) and len(run_id) <= 64 and run_id.isprintable():
        run_id_var.set(run_id)  # in this request's log lines and the gRPC calls it makes
    _refuse_unstorable(request)
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


ACCOUNT_HEADER = "x-account-id"


async def _active_account(request: Request, upstreams: Upstreams, caller: Caller) -> Caller:
    """The caller acting for the account named by X-Account-Id (default: the credential's own)."""
    wanted = request.headers.get(ACCOUNT_HEADER, "").strip()
    if not wanted or wanted == caller.account_id:
        return caller
    # An API key acts for its one account; anything else, or an account the user is not a member
    # of, is the same 404 as an account that does not exist.
    not_found = ApiError(404, "account_not_found", "account not found")
    if caller.api_key_id or len(wanted) > 64 or not wanted.isascii() or not wanted.isprintable():
        raise not_found
    try:
        membership = await upstreams.auth.ResolveAccount(
            auth_pb2.ResolveAccountRequest(user_id=caller.user_id, account_id=wanted)
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            raise not_found from exc
        raise
    return dataclasses.replace(caller, account_id=membership.account_id, role=membership.role)


# Only documented through these (OpenAPI security schemes, Swagger's Authorize); bearer() reads the headers.
_BEARER = HTTPBearer(auto_error=False, scheme_name="bearer")
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey")
BearerDoc = Annotated[object, Security(_BEARER)]
ApiKeyDoc = Annotated[object, Security(_API_KEY)]


async def get_caller(
    request: Request, upstreams: UpstreamsDep, _bearer: BearerDoc = None, _api_key: ApiKeyDoc = None
) -> Caller:
    caller = await upstreams.token_verifier().verify(bearer(request))
    caller = await _active_account(request, upstreams, caller)
    account_id_var.set(caller.account_id)  # in this request's log lines and the gRPC calls it makes
    return caller


def _stream_resource(request: Request) -> str:
    params = request.path_params
    if "run_id" in params:
        return f"run:{params['run_id']}"
    if "thread_id" in params:
        return f"thread:{params['thread_id']}"
    if "sandbox_id" in params:  # a sandbox's preview, opened in an iframe or a new tab
        return f"sandbox:{params['sandbox_id']}"
    raise ApiError(401, "unauthenticated", _MISSING)


async def get_stream_caller(
    request: Request, upstreams: UpstreamsDep, _bearer: BearerDoc = None, _api_key: ApiKeyDoc = None
) -> Caller:
    """A header credential, or (EventSource cannot set headers) a stream token for this very
    stream in `?access_token=`: a URL never carries a credential that opens anything else."""
    if request.headers.get("authorization") or request.headers.get("x-api-key"):
        return await get_caller(request, upstreams)
    token = request.query_params.get("access_token")
    if not token:
        raise ApiError(401, "unauthenticated", _MISSING)
    caller = await upstreams.stream_token_verifier().verify_stream(token, _stream_resource(request))
    account_id_var.set(caller.account_id)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
StreamCallerDep = Annotated[Caller, Depends(get_stream_caller)]
