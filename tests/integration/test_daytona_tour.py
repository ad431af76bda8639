"""The README tour with AGENTRY_SANDBOX_PROVIDER=daytona: the agent's commands and files go to a
Daytona-compatible server (the fake Daytona API + toolbox, through the real SDK), and what the
agent wrote is downloadable through the gateway."""

from __future__ import annotations

import contextlib

import httpx
import orjson
import pytest

from agentry.cli.devstack import start_dev_stack
from agentry.sandbox.fake_daytona import API_KEY, FakeDaytona

from .conftest import FILE_CONTENT, FILE_PATH, TOOL_MARKER

pytestmark = pytest.mark.integration

PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}


async def test_a_run_executes_in_daytona(fake_llm, tmp_path, monkeypatch) -> None:
    fake = FakeDaytona(tmp_path / "daytona")
    await fake.start()
    monkeypatch.setenv("AGENTRY_SANDBOX_PROVIDER", "daytona")
    monkeypatch.setenv("DAYTONA_API_KEY", API_KEY)
    monkeypatch.setenv("DAYTONA_API_URL", fake.base_url)
    monkeypatch.setenv("DAYTONA_TARGET", "us")
    try:
        async with contextlib.AsyncExitStack() as stack:
            dev = await start_dev_stack(stack, data_dir=tmp_path / "data", llm_api_base=fake_llm.base_url, ports=PORTS)
            async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=120) as client:
                password = "correct horse battery staple"
                signup = await client.post("/api/auth/signup", json={"email": "d@example.com", "password": password})
                token = await client.post("/api/auth/token", json={"email": "d@example.com", "password": password})
                headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
                thread = (await client.post("/api/threads", json={}, headers=headers)).json()
                assert thread["sandbox_id"] and not fake.boxes  # reserved; made in Daytona on first use

                start = await client.post(
                    f"/api/threads/{thread['thread_id']}/agent/start",
                    json={"model_name": "openai/it-script", "prompt": "Run the check."},
                    headers=headers,
                )
                assert start.status_code == 202, start.text
                events = []
                async with client.stream(
                    "GET", f"/api/agent-run/{start.json()['agent_run_id']}/stream", headers=headers
                ) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            events.append(orjson.loads(line[5:]))
                assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "completed", events[-3:]
                phases = [e.get("phase") for e in events if e["type"] == "phase"]
                assert "starting_sandbox" in phases
                finished = [e for e in events if e["type"] == "tool_call_finished"]
                assert [f["name"] for f in finished] == ["run_command", "create_file"]
                assert TOOL_MARKER in finished[0]["output"] and not finished[1]["error"]

                # It ran in the Daytona sandbox, through its toolbox.
                [box] = fake.boxes.values()
                assert box.name == thread["sandbox_id"] and box.network_block_all
                assert ("POST", f"/toolbox/{box.id}/process/execute") in fake.requests
                # And what the agent wrote, the user downloads through the gateway.
                down = await client.get(
                    f"/api/sandboxes/{thread['sandbox_id']}/files/content", params={"path": FILE_PATH}, headers=headers
                )
                assert down.status_code == 200 and down.text == FILE_CONTENT
                preview = await client.get(f"/api/sandboxes/{thread['sandbox_id']}/preview/3000", headers=headers)
                assert preview.json() == {
                    "url": f"https://3000-{box.id}.proxy.daytona.example",
                    "token": f"tok-{box.id[:8]}-3000",
                }
                assert signup.status_code == 201
    finally:
        await fake.stop()
