"""The gRPC -> HTTP status table and the one JSON error body every failure answers with."""

from __future__ import annotations

import grpc
import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from agentry.gateway.errors import (
    GRPC_TO_HTTP,
    ApiError,
    UpstreamUnavailable,
    _from_grpc,
    error_body,
    install_error_handlers,
)
from agentry.servicekit.errors import ERROR_CODE_KEY
from agentry.servicekit.eventstream import EventStreamUnavailable

SECRET = "db password hunter2 at /srv/internal/stack.py line 42"


def rpc_error(code: grpc.StatusCode, details: str = "upstream said no", *, error_code: str | None = None):
    trailing = grpc.aio.Metadata((ERROR_CODE_KEY, error_code)) if error_code else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, initial_metadata=grpc.aio.Metadata(), trailing_metadata=trailing, details=details)


EXPECTED_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.OUT_OF_RANGE: 422,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    # Not in the table: the upstream broke, the caller can do nothing about it.
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 502,
    grpc.StatusCode.UNIMPLEMENTED: 502,
    grpc.StatusCode.DATA_LOSS: 502,
}


def test_every_grpc_status_has_an_expectation():
    assert set(EXPECTED_STATUS) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert set(GRPC_TO_HTTP) < set(EXPECTED_STATUS)


@pytest.mark.parametrize("code", list(EXPECTED_STATUS), ids=lambda c: c.name)
def test_status_table(code):
    status, _, _ = _from_grpc(rpc_error(code, error_code="some_code"))
    assert status == EXPECTED_STATUS[code]


@pytest.mark.parametrize(
    "code",
    [c for c in GRPC_TO_HTTP if c not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)],
    ids=lambda c: c.name,
)
def test_mapped_status_keeps_the_domain_code_and_message(code):
    status, error_code, message = _from_grpc(rpc_error(code, "thread t-1 not found", error_code="thread_not_found"))
    assert (error_code, message) == ("thread_not_found", "thread t-1 not found")


def test_without_a_domain_code_the_status_name_is_the_code():
    assert _from_grpc(rpc_error(grpc.StatusCode.NOT_FOUND, "gone")) == (404, "not_found", "gone")
    assert _from_grpc(rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "")) == (
        409,
        "failed_precondition",
        "FAILED_PRECONDITION",
    )


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED], ids=lambda c: c.name)
def test_unavailable_upstreams_answer_a_generic_retry_message(code):
    status, error_code, message = _from_grpc(rpc_error(code, f"connect to 10.0.0.7:50052 failed: {SECRET}"))
    assert status in (503, 504)
    assert error_code == code.name.lower()
    assert message == "an internal service is unavailable; try again"


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS], ids=lambda c: c.name
)
def test_upstream_failures_do_not_leak_details_or_codes(code):
    status, error_code, message = _from_grpc(rpc_error(code, SECRET, error_code="sqlalchemy_integrity_error"))
    assert status >= 500
    assert error_code == "upstream_error"
    assert message == "an internal service failed"


def test_error_body_shape():
    assert error_body("x", "y") == {"error": {"code": "x", "message": "y"}}
    assert error_body("x", "y", fields=[]) == {"error": {"code": "x", "message": "y", "fields": []}}


class _Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str


def _app(exc: Exception | None = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise")
    async def _raise():
        raise exc

    @app.post("/things")
    async def _things(body: _Thing):
        return {"ok": True}

    return app


async def _request(app: FastAPI, method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://gateway"
    ) as client:
        return await client.request(method, path, **kwargs)


async def test_grpc_error_becomes_the_json_error_body():
    response = await _request(
        _app(rpc_error(grpc.StatusCode.ALREADY_EXISTS, "email is taken", error_code="email_taken")), "GET", "/raise"
    )
    assert response.status_code == 409
    assert response.json() == {"error": {"code": "email_taken", "message": "email is taken"}}


async def test_internal_grpc_error_body_leaks_nothing():
    response = await _request(_app(rpc_error(grpc.StatusCode.INTERNAL, SECRET, error_code="internal")), "GET", "/raise")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "upstream_error", "message": "an internal service failed"}}
    assert "hunter2" not in response.text


async def test_every_401_names_the_bearer_scheme():
    from_gateway = await _request(_app(ApiError(401, "unauthenticated", "missing bearer token")), "GET", "/raise")
    from_upstream = await _request(
        _app(rpc_error(grpc.StatusCode.UNAUTHENTICATED, "invalid email or password", error_code="invalid_credentials")),
        "GET",
        "/raise",
    )
    for response in (from_gateway, from_upstream):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
    assert from_upstream.json()["error"]["code"] == "invalid_credentials"


async def test_api_error_other_than_401_has_no_challenge():
    response = await _request(_app(ApiError(402, "insufficient_credits", "no credit left")), "GET", "/raise")
    assert response.status_code == 402
    assert "www-authenticate" not in response.headers
    assert response.json() == {"error": {"code": "insufficient_credits", "message": "no credit left"}}


async def test_validation_error_names_the_field():
    response = await _request(_app(), "POST", "/things", json={"name": 3, "extra": True})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert {f["field"] for f in error["fields"]} == {"body.name", "body.extra"}
    assert "body.name" in error["message"] and "body.extra" in error["message"]


async def test_unknown_route_and_wrong_method_use_the_error_body():
    missing = await _request(_app(), "GET", "/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await _request(_app(), "DELETE", "/things")
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


def test_an_upstream_refusing_the_gateways_credential_is_a_server_fault_not_the_users():
    from agentry.servicekit.errors import INTERNAL_CREDENTIAL_REFUSED

    status, code, message = _from_grpc(
        rpc_error(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or invalid internal service credential",
            error_code=INTERNAL_CREDENTIAL_REFUSED,
        )
    )
    assert (status, code) == (502, "upstream_error")
    assert "credential" not in message


# --- Retry-After on answers the client should simply retry ----------------------------------------


def rpc_error_with(code: grpc.StatusCode, *metadata: tuple[str, str], details: str = "busy"):
    return grpc.aio.AioRpcError(
        code, initial_metadata=grpc.aio.Metadata(), trailing_metadata=grpc.aio.Metadata(*metadata), details=details
    )


async def test_unavailable_upstream_is_503_with_retry_after():
    response = await _request(
        _app(rpc_error(grpc.StatusCode.UNAVAILABLE, f"connect failed: {SECRET}")), "GET", "/raise"
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": {"code": "unavailable", "message": "an internal service is unavailable; try again"}
    }
    assert "hunter2" not in response.text


async def test_resource_exhausted_without_a_hint_is_429_with_retry_after_1():
    response = await _request(
        _app(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many runs", error_code="too_many_runs")),
        "GET",
        "/raise",
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": {"code": "too_many_runs", "message": "too many runs"}}


@pytest.mark.parametrize(
    "sent,expected",
    [
        ("7", "7"),
        (" 30 ", "30"),
        ("0", "0"),
        ("2.5", "3"),
        ("86400", "3600"),
        ("soon", "1"),
        ("-5", "1"),
        ("nan", "1"),
        ("inf", "1"),
        ("", "1"),
    ],
)
async def test_resource_exhausted_uses_the_upstreams_retry_after(sent, expected):
    exc = rpc_error_with(grpc.StatusCode.RESOURCE_EXHAUSTED, ("retry-after", sent), (ERROR_CODE_KEY, "rate_limited"))
    response = await _request(_app(exc), "GET", "/raise")
    assert response.status_code == 429
    assert response.headers["retry-after"] == expected
    assert response.json()["error"]["code"] == "rate_limited"


@pytest.mark.parametrize(
    "code",
    [c for c in EXPECTED_STATUS if c not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)],
    ids=lambda c: c.name,
)
async def test_other_failures_carry_no_retry_after(code):
    exc = rpc_error_with(code, ("retry-after", "9"))
    response = await _request(_app(exc), "GET", "/raise")
    assert response.status_code == EXPECTED_STATUS[code]
    assert "retry-after" not in response.headers


@pytest.mark.parametrize(
    "exc",
    [
        EventStreamUnavailable("cannot read run r1: Error 111 connecting to 10.0.0.9:6379"),
        UpstreamUnavailable("idempotency store: connection refused"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=["event-stream", "upstream-unavailable", "connection-refused"],
)
async def test_unreachable_dependencies_are_503_never_500(exc):
    response = await _request(_app(exc), "GET", "/raise")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "error": {"code": "unavailable", "message": "an internal service is unavailable; try again"}
    }
    assert "10.0.0.9" not in response.text


async def test_api_error_headers_are_sent():
    response = await _request(_app(ApiError(409, "busy", "try again", headers={"Retry-After": "2"})), "GET", "/raise")
    assert (response.status_code, response.headers["retry-after"]) == (409, "2")


async def test_a_closed_port_upstream_is_503_with_retry_after():
    # A real channel to a port nobody listens on: what an upstream that is down looks like.
    import socket

    from agentry.api.runner.v1 import runner_pb2, runner_pb2_grpc
    from agentry.servicekit import open_channel

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    channel = open_channel(f"127.0.0.1:{port}", "token", default_timeout=5)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await runner_pb2_grpc.RunnerServiceStub(channel).GetRun(runner_pb2.GetRunRequest(agent_run_id="r"))
    finally:
        await channel.close()
    response = await _request(_app(failed.value), "GET", "/raise")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
