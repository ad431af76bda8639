"""Mutual TLS between services, with a CA and certificates generated here: a caller without a
certificate from the CA cannot even reach the internal-credential check."""

from __future__ import annotations

import contextlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel, start_grpc_server
from agentry.servicekit.settings import ServiceSettings
from agentry.servicekit.testing import make_test_pki


@pytest.fixture
def pki(tmp_path):
    files = make_test_pki(tmp_path, ["auth", "gateway"])
    rogue = make_test_pki(tmp_path / "rogue", ["intruder"])
    return {"server": files["auth"], "client": files["gateway"], "rogue": rogue["intruder"]}


async def _check(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


async def test_only_callers_with_a_certificate_from_the_ca_get_through(pki):
    async with contextlib.AsyncExitStack() as stack:
        server = await start_grpc_server(
            name="t",
            register=lambda s: None,
            service_names=[],
            host="127.0.0.1",
            port=0,
            internal_token=DEV_INTERNAL_TOKEN,
            stack=stack,
            tls=pki["server"],
        )
        async with open_channel(server.target, DEV_INTERNAL_TOKEN, tls=pki["client"]) as channel:
            assert await _check(channel) == health_pb2.HealthCheckResponse.SERVING
        refused = [
            open_channel(server.target, DEV_INTERNAL_TOKEN),  # plaintext
            open_channel(server.target, DEV_INTERNAL_TOKEN, tls=pki["rogue"]),  # another CA's certificate
            # TLS that trusts the server but shows no certificate of its own
            grpc.aio.secure_channel(server.target, grpc.ssl_channel_credentials(pki["client"].ca_file.read_bytes())),
        ]
        for channel in refused:
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await _check(channel)
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_client_refuses_a_server_from_another_ca(pki):
    async with contextlib.AsyncExitStack() as stack:
        server = await start_grpc_server(
            name="t",
            register=lambda s: None,
            service_names=[],
            host="127.0.0.1",
            port=0,
            internal_token=DEV_INTERNAL_TOKEN,
            stack=stack,
            tls=pki["rogue"],
        )
        async with open_channel(server.target, DEV_INTERNAL_TOKEN, tls=pki["client"]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _check(channel)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


def test_settings_take_all_three_files_or_none(pki, monkeypatch):
    assert ServiceSettings().tls() is None
    files = pki["client"]
    for name, value in (
        ("AGENTRY_TLS_CERT_FILE", files.cert_file),
        ("AGENTRY_TLS_KEY_FILE", files.key_file),
        ("AGENTRY_TLS_CA_FILE", files.ca_file),
    ):
        monkeypatch.setenv(name, str(value))
    assert ServiceSettings().tls() == files
    monkeypatch.delenv("AGENTRY_TLS_CA_FILE")
    with pytest.raises(ValueError, match="go together"):
        ServiceSettings()
