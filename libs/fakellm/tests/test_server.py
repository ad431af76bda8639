"""The server on a real socket: embedded in the loop, in a thread, pacing, and the real LiteLLM."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import orjson
import pytest

from agentry.fakellm import FakeLLMServer, Script, ThreadedFakeLLMServer, Turn

DEMO_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "run_command",
            "description": "Run a shell command",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}, "timeout_seconds": {"type": "integer"}},
                "required": ["command"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_file",
            "description": "Create a file",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"],
            },
        },
    },
]


async def _first_content_delay(base_url: str, model: str) -> tuple[float, float]:
    """Seconds to the first content chunk and to the end of the stream."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    start = time.monotonic()
    first = None
    async with httpx.AsyncClient() as client, client.stream("POST", f"{base_url}/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: {") and '"content"' in line:
                first = time.monotonic() - start
    assert first is not None
    return first, time.monotonic() - start


async def test_embedded_server_serves_on_a_free_port_and_stops() -> None:
    async with FakeLLMServer() as server:
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{server.base_url}/models")).status_code == 200
        port = server.port
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/health")


async def test_starting_on_a_taken_port_raises() -> None:
    async with FakeLLMServer() as first:
        with pytest.raises(RuntimeError):
            async with FakeLLMServer(port=first.port):
                pass


def test_threaded_server_serves_sync_callers() -> None:
    with ThreadedFakeLLMServer() as server:
        body = {"model": "agentry-demo", "messages": [{"role": "user", "content": "hi"}]}
        data = httpx.post(f"{server.base_url}/chat/completions", json=body).json()
        assert data["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "run_command"
        port = server.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health")


async def test_ttft_and_tokens_per_second_pace_the_stream() -> None:
    script = Script(turns=(Turn(text="one two three four five six seven eight nine ten"),))
    async with FakeLLMServer({"words": script}, ttft_seconds=0.2, tokens_per_second=50) as server:
        first, total = await _first_content_delay(server.base_url, "words")
    assert first >= 0.2
    # Ten tokens at 50/s: nine intervals of 20 ms after the first.
    assert total >= 0.2 + 9 / 50


async def test_a_script_can_override_the_server_pacing() -> None:
    slow = Script(turns=(Turn(text="slow"),), ttft_seconds=0.3)
    async with FakeLLMServer({"slow": slow}, ttft_seconds=0.0) as server:
        slow_first, _ = await _first_content_delay(server.base_url, "slow")
        body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
        start = time.monotonic()
        async with httpx.AsyncClient() as client:
            await client.post(f"{server.base_url}/chat/completions", json=body)
        plain = time.monotonic() - start
    assert slow_first >= 0.3
    assert plain >= 0.3


async def test_concurrent_conversations_each_get_their_own_turn() -> None:
    async with FakeLLMServer(tokens_per_second=200) as server, httpx.AsyncClient() as client:

        async def ask(depth: int) -> str:
            messages: list[dict] = [{"role": "user", "content": f"conversation {depth}"}]
            messages += [{"role": "assistant", "content": "x"}] * depth
            body = {"model": "agentry-demo", "messages": messages}
            data = (await client.post(f"{server.base_url}/chat/completions", json=body)).json()
            return data["choices"][0]["message"]["content"]

        answers = await asyncio.gather(*(ask(d) for d in [0, 1, 2, 0, 1, 2]))
    assert answers[0] == answers[3] == "[scripted demo model] I will look around the sandbox first."
    assert answers[1] == answers[4] == "Now I will write a note."
    assert answers[2].startswith("[scripted demo model] Done:") and answers[2] == answers[5]


async def test_litellm_streams_text_and_the_full_tool_call() -> None:
    import litellm

    async with FakeLLMServer(ttft_seconds=0.1, tokens_per_second=500) as server:
        start = time.monotonic()
        stream = await litellm.acompletion(
            model="openai/agentry-demo",
            api_base=server.base_url,
            api_key="x",
            messages=[{"role": "user", "content": "say hello"}],
            tools=DEMO_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        text_deltas: list[str] = []
        first_text_at = None
        calls: dict[int, dict] = {}
        finish_reasons = []
        usage = None
        async for chunk in stream:
            if getattr(chunk, "usage", None):
                usage = chunk.usage
            if not chunk.choices:
                continue
            choice = chunk.choices[0]
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)
            delta = choice.delta
            if delta.content:
                first_text_at = first_text_at or time.monotonic() - start
                text_deltas.append(delta.content)
            for call in delta.tool_calls or []:
                entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
                entry["id"] = entry["id"] or call.id
                entry["name"] = entry["name"] or call.function.name
                entry["arguments"] += call.function.arguments or ""

    assert len(text_deltas) > 1
    assert "".join(text_deltas) == "[scripted demo model] I will look around the sandbox first."
    assert first_text_at is not None and first_text_at >= 0.1
    assert list(calls) == [0]
    assert calls[0]["name"] == "run_command"
    assert calls[0]["id"].startswith("call_")
    assert json.loads(calls[0]["arguments"]) == {"command": "echo 'Hello from the Agentry sandbox' && uname -s"}
    assert finish_reasons[-1] == "tool_calls"
    assert usage is not None and usage.completion_tokens > 0


async def test_litellm_non_streaming_round_trip() -> None:
    import litellm

    async with FakeLLMServer() as server:
        response = await litellm.acompletion(
            model="openai/agentry-demo",
            api_base=server.base_url,
            api_key="x",
            messages=[
                {"role": "user", "content": "write it"},
                {
                    "role": "assistant",
                    "content": "looking",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "run_command", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "Linux"},
            ],
            tools=DEMO_TOOLS,
        )
    message = response.choices[0].message
    assert message.content == "Now I will write a note."
    assert message.tool_calls[0].function.name == "create_file"
    assert json.loads(message.tool_calls[0].function.arguments) == {
        "path": "notes/hello.txt",
        "content": "You asked: write it\n",
    }


def test_cli_serves_scripts_from_a_file(tmp_path) -> None:
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps({"echo": [{"text": "You said: {last_user}"}]}))
    with ThreadedFakeLLMServer() as probe:
        port = probe.port  # a port that was free a moment ago
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentry.fakellm",
            "--port",
            str(port),
            "--scripts",
            str(scripts),
            "--log-level",
            "warning",
        ],
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                body = {"model": "echo", "messages": [{"role": "user", "content": "ping"}]}
                data = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body).json()
                break
            except httpx.ConnectError:
                assert process.poll() is None, "the CLI exited"
                assert time.monotonic() < deadline, "the CLI did not start"
                time.sleep(0.05)
        assert data["choices"][0]["message"]["content"] == "You said: ping"
        assert orjson.loads(httpx.get(f"http://127.0.0.1:{port}/v1/models").content)["data"]
    finally:
        process.terminate()
        process.wait(10)
