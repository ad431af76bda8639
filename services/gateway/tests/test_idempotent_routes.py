"""Idempotency-Key on the gateway's routes, with fake upstreams: what is replayed, what is released,
and what is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import httpx
import pytest

from agentry.api.billing.v1 import billing_pb2
from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.gateway.app import create_app
from agentry.gateway.config import GatewaySettings
from agentry.gateway.idempotency import MemoryIdempotencyStore, RedisIdempotencyStore
from agentry.gateway.tokens import Caller
from agentry.gateway.upstreams import Upstreams
from agentry.servicekit.errors import ERROR_CODE_KEY

START = "/api/threads/t-1/agent/start"
MESSAGES = "/api/threads/t-1/messages"


def rpc_error(code: grpc.StatusCode, error_code: str = "", details: str = "upstream said no"):
    trailing = grpc.aio.Metadata((ERROR_CODE_KEY, error_code)) if error_code else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, initial_metadata=grpc.aio.Metadata(), trailing_metadata=trailing, details=details)


class FakeVerifier:
    """The bearer token is the account id."""

    async def verify(self, token: str) -> Caller:
        return Caller(user_id=f"user-of-{token}", account_id=token, email=f"{token}@example.com")


class FakeBilling:
    def __init__(self) -> None:
        self.allowed = True
        self.checks = 0

    async def CheckRun(self, request):
        self.checks += 1
        if self.allowed:
            return billing_pb2.CheckRunResponse(allowed=True)
        return billing_pb2.CheckRunResponse(allowed=False, reason="insufficient_credits", message="no credit left")


class FakeRunner:
    """Counts calls; fails with the queued errors first; waits on `gate` when one is set."""

    def __init__(self) -> None:
        self.starts: list[pb.StartRunRequest] = []
        self.messages: list[pb.AddMessageRequest] = []
        self.errors: list[BaseException] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def _call(self) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)

    async def StartRun(self, request: pb.StartRunRequest) -> pb.Run:
        self.starts.append(request)
        await self._call()
        return pb.Run(agent_run_id=f"run-{len(self.starts)}", status="queued")

    async def AddMessage(self, request: pb.AddMessageRequest) -> pb.Message:
        self.messages.append(request)
        await self._call()
        return pb.Message(message_id=f"msg-{len(self.messages)}")


class Gateway:
    def __init__(self, store) -> None:
        self.runner, self.billing = FakeRunner(), FakeBilling()
        app = create_app(GatewaySettings())
        app.state.upstreams = Upstreams(
            auth=None,
            billing=self.billing,
            runner=self.runner,
            events=None,  # type: ignore[arg-type]
            verifier=FakeVerifier(),
            idempotency=store,
        )
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://gateway"
        )

    async def post(
        self, path: str, *, key: str | bytes | None = None, account: str = "acct-a", **kwargs
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {account}"}
        if key is not None:
            headers["Idempotency-Key"] = key  # type: ignore[assignment]
        return await self.client.post(path, headers=headers, **kwargs)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def gateway(request: pytest.FixtureRequest) -> AsyncIterator[Gateway]:
    if request.param == "memory":
        store = MemoryIdempotencyStore()
    else:
        from redis import asyncio as aioredis

        url = request.getfixturevalue("redis_url")
        prefix = f"{request.getfixturevalue('unique_name')}:idem:"
        store = RedisIdempotencyStore(url, key_prefix=prefix)
    gw = Gateway(store)
    try:
        yield gw
    finally:
        await gw.client.aclose()
        await store.close()
        if request.param == "redis":
            admin = aioredis.Redis.from_url(url)
            keys = [k async for k in admin.scan_iter(match=f"{prefix}*")]
            if keys:
                await admin.delete(*keys)
            await admin.aclose()


async def test_without_a_key_every_request_runs(gateway: Gateway) -> None:
    for _ in range(2):
        response = await gateway.post(MESSAGES, json={"content": "hi"})
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
    assert len(gateway.runner.messages) == 2


@pytest.mark.parametrize(
    "path,body,status,field",
    [(START, {"prompt": "go"}, 202, "agent_run_id"), (MESSAGES, {"content": "hi"}, 201, "message_id")],
)
async def test_a_retry_gets_the_first_answer_and_runs_nothing(gateway: Gateway, path, body, status, field) -> None:
    first = await gateway.post(path, key="k-1", json=body)
    assert first.status_code == status
    assert "idempotent-replayed" not in first.headers
    for _ in range(3):
        again = await gateway.post(path, key="k-1", json=body)
        assert again.status_code == status
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"] == "application/json"
        assert again.content == first.content
        assert again.json()[field] == first.json()[field]
    assert len(gateway.runner.starts) + len(gateway.runner.messages) == 1


async def test_start_without_a_body_and_with_an_empty_one_are_the_same_request(gateway: Gateway) -> None:
    first = await gateway.post(START, key="k-1")
    again = await gateway.post(START, key="k-1", json={})
    also = await gateway.post(START, key="k-1", json={"prompt": None})
    assert first.status_code == again.status_code == also.status_code == 202
    assert again.headers["idempotent-replayed"] == also.headers["idempotent-replayed"] == "true"
    assert len(gateway.runner.starts) == 1


async def test_the_same_key_on_a_different_request_is_422(gateway: Gateway) -> None:
    assert (await gateway.post(MESSAGES, key="k-1", json={"content": "hi"})).status_code == 201
    for path, body in (
        (MESSAGES, {"content": "something else"}),  # another body
        ("/api/threads/t-2/messages", {"content": "hi"}),
    ):  # another thread
        response = await gateway.post(path, key="k-1", json=body)
        assert response.status_code == 422
        error = response.json()["error"]
        assert error["code"] == "idempotency_key_reused"
        assert "different request" in error["message"]
    assert len(gateway.runner.messages) == 1


async def test_keys_are_scoped_to_the_account_and_the_route(gateway: Gateway) -> None:
    a = await gateway.post(MESSAGES, key="shared", json={"content": "hi"}, account="acct-a")
    b = await gateway.post(MESSAGES, key="shared", json={"content": "other"}, account="acct-b")
    start = await gateway.post(START, key="shared", json={"prompt": "go"}, account="acct-a")
    assert (a.status_code, b.status_code, start.status_code) == (201, 201, 202)
    assert "idempotent-replayed" not in b.headers and "idempotent-replayed" not in start.headers
    assert a.json() != b.json()
    assert [m.account_id for m in gateway.runner.messages] == ["acct-a", "acct-b"]
    assert len(gateway.runner.starts) == 1


async def test_a_retry_while_the_first_runs_is_409_with_retry_after(gateway: Gateway) -> None:
    gateway.runner.gate = asyncio.Event()
    first = asyncio.create_task(gateway.post(START, key="k-1", json={"prompt": "go"}))
    await asyncio.wait_for(gateway.runner.entered.wait(), 5)
    busy = await gateway.post(START, key="k-1", json={"prompt": "go"})
    assert busy.status_code == 409
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["error"]["code"] == "idempotency_key_in_use"
    # A different request with the key in use is still told it is a different request.
    reused = await gateway.post(START, key="k-1", json={"prompt": "other"})
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    gateway.runner.gate.set()
    done = await first
    assert done.status_code == 202
    replay = await gateway.post(START, key="k-1", json={"prompt": "go"})
    assert replay.headers["idempotent-replayed"] == "true" and replay.json() == done.json()
    assert len(gateway.runner.starts) == 1


@pytest.mark.parametrize(
    "error,status",
    [
        (rpc_error(grpc.StatusCode.UNAVAILABLE), 503),
        (rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate_limited"), 429),
        (rpc_error(grpc.StatusCode.INTERNAL, "internal"), 500),
        (rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), 504),
        (RuntimeError("a bug"), 500),
    ],
    ids=["unavailable", "resource-exhausted", "internal", "deadline", "exception"],
)
async def test_a_failure_a_retry_may_fix_releases_the_key(gateway: Gateway, error, status) -> None:
    gateway.runner.errors = [error]
    failed = await gateway.post(START, key="k-1", json={"prompt": "go"})
    assert failed.status_code == status
    if status in (429, 503):
        assert failed.headers["retry-after"] == "1"
    retried = await gateway.post(START, key="k-1", json={"prompt": "go"})
    assert retried.status_code == 202
    assert "idempotent-replayed" not in retried.headers
    assert len(gateway.runner.starts) == 2


@pytest.mark.parametrize(
    "error,status,code",
    [
        (rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "run_active", "a run is already active"), 409, "run_active"),
        (rpc_error(grpc.StatusCode.NOT_FOUND, "thread_not_found", "thread t-1 not found"), 404, "thread_not_found"),
    ],
    ids=["run-active", "not-found"],
)
async def test_a_4xx_answer_is_kept_and_replayed(gateway: Gateway, error, status, code) -> None:
    gateway.runner.errors = [error]
    first = await gateway.post(START, key="k-1", json={"prompt": "go"})
    assert (first.status_code, first.json()["error"]["code"]) == (status, code)
    again = await gateway.post(START, key="k-1", json={"prompt": "go"})
    assert again.status_code == status
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(gateway.runner.starts) == 1


async def test_a_billing_refusal_is_kept_too(gateway: Gateway) -> None:
    # Billing is asked by the runner's StartRun (the gateway no longer asks it first): its refusal
    # arrives as PERMISSION_DENIED with billing's reason, 402 for insufficient_credits.
    gateway.runner.errors = [rpc_error(grpc.StatusCode.PERMISSION_DENIED, "insufficient_credits", "no credit left")]
    first = await gateway.post(START, key="k-1", json={"prompt": "go"})
    assert (first.status_code, first.json()["error"]) == (
        402,
        {"code": "insufficient_credits", "message": "no credit left"},
    )
    again = await gateway.post(START, key="k-1", json={"prompt": "go"})
    assert again.status_code == 402 and again.headers["idempotent-replayed"] == "true"
    assert len(gateway.runner.starts) == 1
    assert (await gateway.post(START, key="k-2", json={"prompt": "go"})).status_code == 202
    assert gateway.billing.checks == 0


@pytest.mark.parametrize(
    "key",
    ["", "a" * 256, "caf\xe9", "tab\there", "del\x7f", "nul\x00"],
    ids=["empty", "256-chars", "latin-1", "tab", "del", "nul"],
)
async def test_an_invalid_key_is_400_and_runs_nothing(gateway: Gateway, key: str) -> None:
    for path, body in ((START, {"prompt": "go"}), (MESSAGES, {"content": "hi"})):
        response = await gateway.post(path, key=key.encode("latin-1"), json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_idempotency_key"
        assert "Idempotency-Key" in error["message"]
    assert gateway.runner.starts == [] and gateway.runner.messages == []


@pytest.mark.parametrize("key", ["a", "a" * 255, "9f1c0e6e-2b1d-4c4f-8f5e-0d6a1c1b2a3f", "with spaces ~!@#$%^&*()"])
async def test_valid_keys(gateway: Gateway, key: str) -> None:
    assert (await gateway.post(MESSAGES, key=key, json={"content": "hi"})).status_code == 201
    assert (await gateway.post(MESSAGES, key=key, json={"content": "hi"})).headers["idempotent-replayed"] == "true"


async def test_an_invalid_body_is_still_a_validation_error(gateway: Gateway) -> None:
    response = await gateway.post(MESSAGES, key="k-1", json={"content": ""})
    assert (response.status_code, response.json()["error"]["code"]) == (422, "validation_error")
    # Nothing was kept: the key is free for the corrected request.
    assert (await gateway.post(MESSAGES, key="k-1", json={"content": "hi"})).status_code == 201


async def test_an_unreachable_store_is_503_and_the_request_does_not_run() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = RedisIdempotencyStore(f"redis://127.0.0.1:{port}/0", socket_timeout=1)
    gw = Gateway(store)
    try:
        response = await gw.post(START, key="k-1", json={"prompt": "go"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "unavailable"
        assert gw.runner.starts == []
        # Without a key the store is not needed.
        assert (await gw.post(START, json={"prompt": "go"})).status_code == 202
    finally:
        await gw.client.aclose()
        await store.close()


async def test_an_answer_that_cannot_be_stored_is_still_given() -> None:
    class ForgetfulStore(MemoryIdempotencyStore):
        async def complete(self, key, token, fingerprint, answer):
            from agentry.gateway.idempotency import IdempotencyUnavailable

            raise IdempotencyUnavailable("redis went away")

    gw = Gateway(ForgetfulStore())
    try:
        response = await gw.post(START, key="k-1", json={"prompt": "go"})
        assert response.status_code == 202 and response.json()["agent_run_id"] == "run-1"
    finally:
        await gw.client.aclose()


async def test_openapi_documents_the_header() -> None:
    spec = create_app(GatewaySettings()).openapi()
    for path in ("/api/threads/{thread_id}/agent/start", "/api/threads/{thread_id}/messages"):
        operation = spec["paths"][path]["post"]
        (header,) = [p for p in operation["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["required"] is False
        assert "replayed" in header["description"] and header["schema"]["maxLength"] == 255
        assert {"409", "422"} <= operation["responses"].keys()
    assert all(p["in"] != "header" for p in spec["paths"]["/api/threads"]["post"].get("parameters", []))


@pytest.mark.parametrize("events,store", [("memory", MemoryIdempotencyStore), ("redis", RedisIdempotencyStore)])
async def test_the_event_stream_setting_chooses_the_store(events, store) -> None:
    import contextlib

    from agentry.gateway.upstreams import open_upstreams

    settings = GatewaySettings(events=events, idempotency_ttl_seconds=120, idempotency_prefix="t:idem:")
    async with contextlib.AsyncExitStack() as stack:
        upstreams = await open_upstreams(settings, stack)  # connects lazily: no server needed
        assert type(upstreams.idempotency) is store
        assert upstreams.idempotency._ttl == 120  # type: ignore[attr-defined]
        if events == "redis":
            assert upstreams.idempotency.key("abc") == "t:idem:abc"  # type: ignore[attr-defined]


def test_the_ttl_setting_comes_from_the_environment(monkeypatch) -> None:
    assert GatewaySettings().idempotency_ttl_seconds == 86_400
    monkeypatch.setenv("AGENTRY_GATEWAY_IDEMPOTENCY_TTL_SECONDS", "600")
    assert GatewaySettings().idempotency_ttl_seconds == 600
