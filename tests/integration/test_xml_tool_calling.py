"""A model without native tool calling: the runner in XML mode, through the whole system."""

from __future__ import annotations

import contextlib

import httpx
import orjson
import pytest

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ThreadedFakeLLMServer, Turn

from .test_run_end_to_end import sign_up_and_in, stream

pytestmark = pytest.mark.integration

XML_CALL = (
    'I will run it now. <function_calls><invoke name="run_command">'
    '<parameter name="command">echo xml-mode-works</parameter></invoke></function_calls>'
)


async def test_xml_tool_calls_are_parsed_executed_and_streamed(tmp_path):
    script = Script(turns=(Turn(text=XML_CALL), Turn(text="The command printed what I expected.")))
    with ThreadedFakeLLMServer({"xml-model": script}) as llm:
        async with contextlib.AsyncExitStack() as stack:
            dev = await start_dev_stack(
                stack,
                data_dir=tmp_path,
                llm_api_base=llm.base_url,
                ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
                runner_overrides={"tool_calling": "xml"},
            )
            async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=60) as client:
                user = await sign_up_and_in(client, "xml@example.com")
                thread_id = (await client.post("/api/threads", json={}, headers=user["headers"])).json()["thread_id"]
                run_id = (
                    await client.post(
                        f"/api/threads/{thread_id}/agent/start",
                        json={"model_name": "openai/xml-model", "prompt": "run it"},
                        headers=user["headers"],
                    )
                ).json()["agent_run_id"]
                events = [orjson.loads(data) for _, data in await stream(client, run_id, user["headers"])]
    finished = [e for e in events if e["type"] == "tool_call_finished"]
    assert [f["name"] for f in finished] == ["run_command"]
    assert "xml-mode-works" in finished[0]["output"] and not finished[0]["error"]
    text = "".join(e["text"] for e in events if e["type"] == "text_delta")
    assert "I will run it now." in text and "<function_calls>" not in text
    assert "The command printed what I expected." in text
    assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "completed"
