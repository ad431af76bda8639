"""The server builder's interceptors: credential check, error mapping, request ids, health."""

from __future__ import annotations

import contextlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentry.servicekit import DEV_INTERNAL_TOKEN, NotFound, open_channel, request_id_var, start_grpc_server
from agentry.servicekit.errors import ERROR_CODE_KEY

SERVICE = "agentry.test.Echo"
seen_request_ids: list[str] = []


async def _echo(request: bytes, context) -> bytes:
    seen_request_ids.append(request_id_var.get())
    if request == b"missing":
        raise NotFound("no such thing", code="thing_not_found")
    if request == b"boom":
        raise RuntimeError("secret internals")
    return request


async def _echo_stream(request: bytes, context):
    for part in request.split(b","):
        if part == b"missing":
            raise NotFound("gone midway")
        yield part


def _register(server: grpc.aio.Server) -> None:
    identity = lambda b: b  # noqa: E731 - raw bytes in and out
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(_echo, identity, identity),
                    "EchoStream": grpc.unary_stream_rpc_method_handler(_echo_stream, identity, identity),
                },
            ),
        )
    )


@pytest.fixture
async def server():
    async with contextlib.AsyncExitStack() as stack:
        yield await start_grpc_server(
            name="test",
            register=_register,
            service_names=[SERVICE],
            host="127.0.0.1",
            port=0,
            internal_token=DEV_INTERNAL_TOKEN,
            stack=stack,
            grace=0.1,
        )


async def test_call_with_credential_succeeds_and_carries_request_id(server):
    async with open_channel(server.target, DEV_INTERNAL_TOKEN) as channel:
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        request_id_var.set("req-123")
        assert await echo(b"hello") == b"hello"
    assert seen_request_ids[-1] == "req-123"


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_call_without_internal_credential_is_refused(server, token):
    async with open_channel(server.target, token) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(f"/{SERVICE}/Echo")(b"hello")
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in channel.unary_stream(f"/{SERVICE}/EchoStream")(b"a,b"):
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_domain_error_maps_to_status_and_code(server):
    async with open_channel(server.target, DEV_INTERNAL_TOKEN) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(f"/{SERVICE}/Echo")(b"missing")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert err.value.details() == "no such thing"
    assert dict(err.value.trailing_metadata())[ERROR_CODE_KEY] == "thing_not_found"


async def test_unexpected_error_is_internal_without_leaking(server):
    async with open_channel(server.target, DEV_INTERNAL_TOKEN) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary(f"/{SERVICE}/Echo")(b"boom")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (err.value.details() or "")


async def test_streaming_error_after_items(server):
    async with open_channel(server.target, DEV_INTERNAL_TOKEN) as channel:
        got = []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for item in channel.unary_stream(f"/{SERVICE}/EchoStream")(b"a,b,missing"):
                got.append(item)
    assert got == [b"a", b"b"]
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_answers_without_credential_and_drains_on_stop(server):
    async with open_channel(server.target, None) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await server.health.enter_graceful_shutdown()
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_started_service_freezes_its_startup_heap_before_taking_load():
    """serve_until_signalled (every service process's main) takes what start() left alive out of
    the collector's reach once start() returns, and shuts down on SIGTERM as before."""
    import asyncio
    import gc
    import os
    import signal
    from types import SimpleNamespace

    from agentry.servicekit.server import serve_until_signalled

    seen: dict[str, int] = {}
    closed: list[bool] = []

    async def start(settings, stack) -> None:
        seen["during_start"] = gc.get_freeze_count()
        stack.callback(closed.append, True)

        def after_start() -> None:  # runs once start() has returned and the service waits
            seen["after_start"] = gc.get_freeze_count()
            os.kill(os.getpid(), signal.SIGTERM)

        asyncio.get_running_loop().call_soon(after_start)

    gc.unfreeze()
    try:
        await asyncio.wait_for(serve_until_signalled(start, SimpleNamespace(metrics_port=None)), 10)
    finally:
        gc.unfreeze()
    assert seen["during_start"] == 0
    assert seen["after_start"] > 1000  # the interpreter's and the libraries' objects, at least
    assert closed == [True]
