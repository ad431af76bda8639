"""The whole embedded stack with mutual TLS between its services (AGENTRY_TLS_* set, certificates
generated here): a run goes end to end, and a caller without a certificate reaches no service."""

from __future__ import annotations

import contextlib

import grpc
import httpx
import orjson
import pytest

from agentry.api.auth.v1 import auth_pb2, auth_pb2_grpc
from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn
from agentry.servicekit import DEV_INTERNAL_TOKEN, open_channel
from agentry.servicekit.testing import make_test_pki

pytestmark = [pytest.mark.integration]

PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}


async def test_a_run_end_to_end_over_mutual_tls(tmp_path, monkeypatch):
    files = make_test_pki(tmp_path / "pki", ["service"])["service"]
    monkeypatch.setenv("AGENTRY_TLS_CERT_FILE", str(files.cert_file))
    monkeypatch.setenv("AGENTRY_TLS_KEY_FILE", str(files.key_file))
    monkeypatch.setenv("AGENTRY_TLS_CA_FILE", str(files.ca_file))
    with ThreadedFakeLLMServer({"mtls": Script(turns=(Turn(text="over tls"),))}) as llm:
        async with contextlib.AsyncExitStack() as stack:
            dev = await start_dev_stack(stack, data_dir=tmp_path / "stack", llm_api_base=llm.base_url, ports=PORTS)
            async with httpx.AsyncClient(base_url=f"{dev.gateway_url}/api", timeout=30) as client:
                credentials = {"email": "tls@example.com", "password": "correct horse battery"}
                assert (await client.post("/auth/signup", json=credentials)).status_code == 201
                token = (await client.post("/auth/token", json=credentials)).json()["access_token"]
                auth = {"Authorization": f"Bearer {token}"}
                thread = (await client.post("/threads", json={}, headers=auth)).json()["thread_id"]
                run = await client.post(
                    f"/threads/{thread}/agent/start", json={"model_name": "openai/mtls", "prompt": "hi"}, headers=auth
                )
                assert run.status_code == 202, run.text
                async with client.stream(
                    "GET", f"/agent-run/{run.json()['agent_run_id']}/stream", headers=auth
                ) as response:
                    data = [orjson.loads(line[5:]) async for line in response.aiter_lines() if line.startswith("data:")]
                assert data[-1]["type"] == "run_finished" and data[-1]["reason"] == "completed"
                assert (await client.get("/health")).json()["status"] == "ok"

            target = f"127.0.0.1:{dev.ports['auth']}"
            async with open_channel(target, DEV_INTERNAL_TOKEN, tls=files) as channel:
                await auth_pb2_grpc.AuthServiceStub(channel).GetJwks(auth_pb2.GetJwksRequest())
            # The internal credential alone is no longer enough: without a certificate, no handshake.
            async with open_channel(target, DEV_INTERNAL_TOKEN) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await auth_pb2_grpc.AuthServiceStub(channel).GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
