"""The identity routes under /api/auth, with their rate limits, and the stream-token routes."""

from __future__ import annotations

import grpc
from fastapi import APIRouter, Request, Response

from agentry.api.auth.v1 import auth_pb2
from agentry.api.runner.v1 import runner_pb2 as pb

from . import auth_schemas, schemas
from .deps import CallerDep, UpstreamsDep, bearer
from .ratelimit import RateLimited
from .thread_stream import list_thread_runs
from .tokens import Caller
from .upstreams import Upstreams

router = APIRouter(prefix="/api")


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _limit(up: Upstreams, what: str, name: str, identity: str, limit: int, window: int) -> None:
    wait = await up.limiter.hit(name, identity, limit=limit, window=window)
    if wait is not None:
        raise RateLimited(what, wait)


def _token_answer(reply: auth_pb2.SignInResponse) -> schemas.TokenAnswer:
    return schemas.TokenAnswer(
        access_token=reply.access_token,
        token_type="bearer",
        expires_in=reply.expires_in,
        refresh_token=reply.refresh_token,
    )


@router.post("/auth/signup", status_code=201, response_model=schemas.SignUpAnswer, tags=["auth"])
async def signup(body: schemas.Credentials, request: Request, up: UpstreamsDep):
    s = request.app.state.settings
    await _limit(up, "sign-ups", "signup-ip", client_ip(request), s.signup_per_ip, s.signup_window_seconds)
    reply = await up.auth.SignUp(auth_pb2.SignUpRequest(email=body.email, password=body.password))
    return schemas.SignUpAnswer(user_id=reply.user_id, account_id=reply.account_id)


@router.post("/auth/token", response_model=schemas.TokenAnswer, tags=["auth"])
async def token(body: schemas.Credentials, request: Request, up: UpstreamsDep):
    """Sign in. Unknown email and wrong password get the same answer; failed attempts are
    limited per email and all attempts per client address (429 with Retry-After)."""
    s = request.app.state.settings
    await _limit(
        up,
        "sign-in attempts",
        "signin-ip",
        client_ip(request),
        s.signin_attempts_per_ip,
        s.signin_attempts_window_seconds,
    )
    email = body.email.strip().lower()
    wait = await up.limiter.hit(
        "signin-fail", email, limit=s.signin_failures_per_email, window=s.signin_failures_window_seconds, count=False
    )
    if wait is not None:
        raise RateLimited("failed sign-ins for this email", wait)
    try:
        reply = await up.auth.SignIn(auth_pb2.SignInRequest(email=body.email, password=body.password))
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
            await up.limiter.record("signin-fail", email, window=s.signin_failures_window_seconds)
        raise
    return _token_answer(reply)


@router.post("/auth/refresh", response_model=schemas.TokenAnswer, tags=["auth"])
async def refresh(body: auth_schemas.RefreshBody, request: Request, up: UpstreamsDep):
    """The next access token and refresh token. A refresh token works once: presenting it again
    ends its whole session (401 `refresh_token_reused`)."""
    s = request.app.state.settings
    await _limit(up, "refreshes", "refresh-ip", client_ip(request), s.refresh_per_ip, s.refresh_window_seconds)
    return _token_answer(await up.auth.Refresh(auth_pb2.RefreshRequest(refresh_token=body.refresh_token)))


@router.post("/auth/logout", status_code=204, tags=["auth"])
async def logout(request: Request, caller: CallerDep, up: UpstreamsDep, body: auth_schemas.SignOutBody | None = None):
    """Ends this session (`local`) or every session of the user (`global`): their refresh
    tokens stop working at once, their access tokens when they expire."""
    await up.auth.SignOut(auth_pb2.SignOutRequest(token=bearer(request), scope=body.scope if body else "local"))
    return Response(status_code=204)


@router.post("/auth/password", status_code=204, tags=["auth"])
async def change_password(body: auth_schemas.PasswordChange, request: Request, caller: CallerDep, up: UpstreamsDep):
    """Sets a new password; every other session of the user ends."""
    await up.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(
            token=bearer(request), current_password=body.current_password, new_password=body.new_password
        )
    )
    return Response(status_code=204)


@router.get("/auth/.well-known/jwks.json", tags=["auth"])
async def jwks(up: UpstreamsDep):
    """The public keys that sign access tokens (the current one and any retired one still valid)."""
    reply = await up.auth.GetJwks(auth_pb2.GetJwksRequest())
    return Response(reply.jwks_json, media_type="application/json", headers={"Cache-Control": "public, max-age=60"})


async def _stream_token(up: Upstreams, caller: Caller, resource: str) -> auth_schemas.StreamToken:
    principal = auth_pb2.Principal(user_id=caller.user_id, account_id=caller.account_id, email=caller.email)
    reply = await up.auth.IssueStreamToken(auth_pb2.IssueStreamTokenRequest(principal=principal, resource=resource))
    return auth_schemas.StreamToken(token=reply.token, expires_in=reply.expires_in)


@router.post("/agent-run/{run_id}/stream-token", response_model=auth_schemas.StreamToken, tags=["runs"])
async def run_stream_token(run_id: str, caller: CallerDep, up: UpstreamsDep):
    """A token for `GET /api/agent-run/{run_id}/stream?access_token=`: it opens this run's stream
    only, for a few minutes, so a browser's EventSource never puts a real credential in a URL."""
    run = await up.runner.GetRun(pb.GetRunRequest(account_id=caller.account_id, agent_run_id=run_id))
    return await _stream_token(up, caller, f"run:{run.agent_run_id}")


@router.post("/threads/{thread_id}/stream-token", response_model=auth_schemas.StreamToken, tags=["threads"])
async def thread_stream_token(thread_id: str, caller: CallerDep, up: UpstreamsDep):
    """Like the run's stream token, for `GET /api/threads/{thread_id}/stream`."""
    await list_thread_runs(up.runner, caller.account_id, thread_id, 0)  # 404 for another account's thread
    return await _stream_token(up, caller, f"thread:{thread_id}")


async def run_start_limit(request: Request, caller: CallerDep, up: UpstreamsDep) -> None:
    """Run starts per account (a dependency of the start route)."""
    s = request.app.state.settings
    await _limit(
        up, "run starts", "run-start", caller.account_id, s.run_starts_per_account, s.run_starts_window_seconds
    )
