"""Per-run model options given on the start request reach the model call."""

from __future__ import annotations

import contextlib

import httpx
import orjson
import pytest

from agentry.cli.devstack import start_dev_stack

from .test_run_end_to_end import sign_up_and_in, stream

pytestmark = pytest.mark.integration


async def test_reasoning_effort_is_validated_and_a_run_with_it_completes(fake_llm, tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=tmp_path,
            llm_api_base=fake_llm.base_url,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
        )
        async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=60) as client:
            user = await sign_up_and_in(client, "effort@example.com")
            headers = user["headers"]
            thread_id = (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]
            bad = await client.post(
                f"/api/threads/{thread_id}/agent/start",
                json={"prompt": "hi", "reasoning_effort": "extreme"},
                headers=headers,
            )
            assert bad.status_code == 422
            assert "reasoning_effort" in bad.json()["error"]["message"]
            started = await client.post(
                f"/api/threads/{thread_id}/agent/start",
                json={"model_name": "openai/it-script", "prompt": "hi", "reasoning_effort": "high"},
                headers=headers,
            )
            assert started.status_code == 202, started.text
            events = [orjson.loads(d) for _, d in await stream(client, started.json()["agent_run_id"], headers)]
    assert events[-1]["type"] == "run_finished"
    assert events[-1]["reason"] == "completed", events[-1]
