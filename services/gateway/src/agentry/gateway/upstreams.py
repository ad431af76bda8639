"""The gateway's clients: gRPC stubs of every service, the run event stream and the idempotency store."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import grpc

from agentry.api.auth.v1 import auth_pb2_grpc
from agentry.api.billing.v1 import billing_pb2_grpc
from agentry.api.runner.v1 import runner_pb2_grpc
from agentry.api.sandbox.v1 import sandbox_pb2_grpc
from agentry.servicekit import open_channel
from agentry.servicekit.eventstream import EventStream, MemoryEventStream, RedisEventStream

from .config import GatewaySettings
from .idempotency import IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore
from .ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from .recent import Recent
from .tokens import AuthServiceVerifier, CredentialVerifier, JwksVerifier, TokenVerifier

# A run this gateway started is remembered this long (for the stream its client opens next).
STARTED_RUN_SECONDS = 10.0
STARTED_RUNS_MAX = 10_000


@dataclass(frozen=True, slots=True)
class StartedRun:
    """What StartRun answered this gateway: whose run it is and its status then."""

    account_id: str
    status: str


def _started_runs() -> Recent[str, StartedRun]:
    return Recent(STARTED_RUNS_MAX, STARTED_RUN_SECONDS)


@dataclass
class Upstreams:
    auth: auth_pb2_grpc.AuthServiceStub
    billing: billing_pb2_grpc.BillingServiceStub
    runner: runner_pb2_grpc.RunnerServiceStub
    events: EventStream
    # name -> channel, for health checks
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    verifier: TokenVerifier | None = None
    idempotency: IdempotencyStore = field(default_factory=MemoryIdempotencyStore)
    sandbox: sandbox_pb2_grpc.SandboxServiceStub | None = None
    # Stream tokens are always verified here, with auth's published keys.
    stream_verifier: JwksVerifier | None = None
    limiter: RateLimiter = field(default_factory=MemoryRateLimiter)
    # run id -> the account that started it here a moment ago: the stream opened right after the
    # start needs no GetRun to know the run exists and is the caller's (routes.stream_run).
    started_runs: Recent[str, StartedRun] = field(default_factory=_started_runs)

    def token_verifier(self) -> TokenVerifier:
        if self.verifier is None:
            self.verifier = CredentialVerifier(self.auth, AuthServiceVerifier(self.auth))
        return self.verifier

    def stream_token_verifier(self) -> JwksVerifier:
        if self.stream_verifier is None:
            self.stream_verifier = JwksVerifier(self.auth, issuer="agentry-local", audience="authenticated")
        return self.stream_verifier


async def open_upstreams(
    settings: GatewaySettings, stack: contextlib.AsyncExitStack, *, events: EventStream | None = None
) -> Upstreams:
    token = settings.internal_token.get_secret_value()
    channels = {
        name: open_channel(target, token, default_timeout=settings.upstream_timeout_seconds, tls=settings.tls())
        for name, target in (
            ("auth", settings.auth_target),
            ("billing", settings.billing_target),
            ("sandbox", settings.sandbox_target),
            ("runner", settings.runner_target),
        )
    }
    for channel in channels.values():
        stack.push_async_callback(channel.close)
    if events is None:
        if settings.events == "redis":
            events = RedisEventStream(settings.redis_url, key_prefix=settings.redis_prefix)
        else:
            events = MemoryEventStream()
        stack.push_async_callback(events.close)
    # Answers to Idempotency-Key requests live where the event stream does: in this process, or in
    # Redis when the gateway runs in split mode (so every replica sees every key).
    idempotency: IdempotencyStore
    if settings.events == "redis":
        idempotency = RedisIdempotencyStore(
            settings.redis_url,
            key_prefix=settings.idempotency_prefix,
            ttl_seconds=settings.idempotency_ttl_seconds,
            lock_seconds=settings.idempotency_lock_seconds,
        )
    else:
        idempotency = MemoryIdempotencyStore(
            ttl_seconds=settings.idempotency_ttl_seconds, lock_seconds=settings.idempotency_lock_seconds
        )
    stack.push_async_callback(idempotency.close)
    limiter: RateLimiter
    if settings.events == "redis":
        limiter = RedisRateLimiter(settings.redis_url, key_prefix=settings.rate_limit_prefix)
    else:
        limiter = MemoryRateLimiter()
    stack.push_async_callback(limiter.close)
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    jwks = JwksVerifier(auth, issuer=settings.token_issuer, audience=settings.token_audience)
    verifier = CredentialVerifier(auth, jwks if settings.token_verification == "local" else AuthServiceVerifier(auth))
    return Upstreams(
        auth=auth,
        billing=billing_pb2_grpc.BillingServiceStub(channels["billing"]),
        runner=runner_pb2_grpc.RunnerServiceStub(channels["runner"]),
        sandbox=sandbox_pb2_grpc.SandboxServiceStub(channels["sandbox"]),
        events=events,
        channels=channels,
        verifier=verifier,
        idempotency=idempotency,
        stream_verifier=jwks,
        limiter=limiter,
    )
