"""Both model lanes -- LiteLLM's own path and the direct OpenAI-protocol lane (agentpress.openai_stream)
-- against a tiny OpenAI-compatible streaming server on 127.0.0.1:0: every test runs on each, and
both must behave alike (same deltas, same error classes, same Retry-After)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from agentpress import Agent, ContextConfig, FinishReason, RetryPolicy, ToolResultMessage, default_tools
from agentpress.errors import ModelCallError
from agentpress.models import LiteLLMModel, ModelRequest


def _chunk(delta: dict | None, finish: str | None = None, usage: dict | None = None) -> str:
    body: dict = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "agentry-test",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


def _tool_turn() -> list[str]:
    args = json.dumps({"path": "hello.py", "content": "print('hi')"})
    return [
        _chunk({"role": "assistant", "content": "Creating "}),
        _chunk({"content": "the file."}),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "create_file", "arguments": args[:9]},
                    }
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[9:20]}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[20:]}}]}),
        _chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "run_command", "arguments": '{"command": "python hello.py"}'},
                    }
                ]
            }
        ),
        _chunk({}, "tool_calls"),
        _chunk(None, usage={"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}),
        "data: [DONE]\n\n",
    ]


def _text_turn() -> list[str]:
    return [
        _chunk({"role": "assistant", "content": "All "}),
        _chunk({"content": "done."}, "stop"),
        _chunk(None, usage={"prompt_tokens": 90, "completion_tokens": 3, "total_tokens": 93}),
        "data: [DONE]\n\n",
    ]


@pytest.fixture(params=["litellm", "direct"], autouse=True)
def lane(request, monkeypatch):
    monkeypatch.setenv("AGENTPRESS_DIRECT_OPENAI", "1" if request.param == "direct" else "0")
    return request.param


class FakeProvider:
    def __init__(self, fail_first: int = 0, error: tuple[int, dict, dict] | None = None) -> None:
        self.requests: list[dict] = []
        self.fail_first = fail_first
        self.error = error  # (status, body, headers) answered to every request

    async def completions(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        if self.error is not None:
            status, error_body, headers = self.error
            return JSONResponse(error_body, status_code=status, headers=headers)
        if len(self.requests) <= self.fail_first:
            return JSONResponse({"error": {"message": "upstream hiccup", "type": "server_error"}}, status_code=503)
        turn = _tool_turn() if len(self.requests) - self.fail_first == 1 else _text_turn()

        async def stream() -> AsyncIterator[str]:
            for piece in turn:
                yield piece
                await asyncio.sleep(0)

        return StreamingResponse(stream(), media_type="text/event-stream")


@asynccontextmanager
async def serve(provider: FakeProvider):
    app = Starlette(routes=[Route("/v1/chat/completions", provider.completions, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await task


async def test_run_through_litellm(harness):
    provider = FakeProvider()
    async with serve(provider) as base:
        agent = Agent(
            model="openai/agentry-test",
            api_base=base,
            api_key="sk-test",
            system_prompt="Be brief.",
            tools=default_tools(),
            context=ContextConfig(context_window=16_000),
        )
        result = await agent.run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED, result.error
    assert harness.sandbox.files == {"/workspace/hello.py": b"print('hi')"}
    assert harness.sandbox.commands == ["python hello.py"]
    assert harness.text() == "Creating the file.All done."
    first, second = provider.requests
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert {t["function"]["name"] for t in first["tools"]} >= {"run_command", "create_file"}
    tool_msgs = [m for m in second["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_msgs] == ["call_1", "call_2"]
    usage = [(u.prompt_tokens, u.completion_tokens) for u in harness.usage.records]
    assert usage == [(50, 20), (90, 3)]
    assert all(math.isnan(u.cost_usd) for u in harness.usage.records), "unknown model: no price (NaN, never 0)"
    assert [m.call_id for m in harness.store.messages if isinstance(m, ToolResultMessage)] == ["call_1", "call_2"]
    harness.assert_calls_paired()


async def test_5xx_is_retried_through_litellm(harness):
    provider = FakeProvider(fail_first=1)
    async with serve(provider) as base:
        agent = Agent(
            model="openai/agentry-test",
            api_base=base,
            api_key="sk-test",
            tools=default_tools(),
            retry=RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.05),
            context=ContextConfig(context_window=16_000),
        )
        result = await agent.run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED, result.error
    assert len(provider.requests) == 3, "one failed call, then the two turns"


async def test_unreachable_provider_ends_with_error(harness):
    agent = Agent(
        model="openai/agentry-test",
        api_base="http://127.0.0.1:9/v1",
        api_key="sk-test",
        retry=RetryPolicy(attempts=2, initial_wait=0.01, max_wait=0.02),
        context=ContextConfig(context_window=16_000),
    )
    result = await agent.run(harness.ctx)
    assert result.reason is FinishReason.ERROR and result.error
    assert harness.types()[-1] == "run_finished"


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retry_after"),
    [
        (
            429,
            {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
            {"retry-after": "2"},
            "rate_limit",
            2.0,
        ),
        (429, {"error": {"message": "slow down"}}, {"retry-after-ms": "1500"}, "rate_limit", 1.5),
        (
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens.",
                    "code": "context_length_exceeded",
                }
            },
            {},
            "context_window",
            None,
        ),
        (401, {"error": {"message": "Incorrect API key provided"}}, {}, "auth", None),
        (503, {"error": {"message": "overloaded"}}, {}, "overloaded", None),
        (400, {"error": {"message": "messages: bad role"}}, {}, "bad_request", None),
    ],
)
async def test_errors_are_classified_alike_on_both_lanes(status, body, headers, kind, retry_after):
    provider = FakeProvider(error=(status, body, headers))
    async with serve(provider) as base:
        model = LiteLLMModel("openai/agentry-test", api_base=base, api_key="sk-test")
        with pytest.raises(ModelCallError) as caught:
            async for _ in model.stream(ModelRequest(messages=[{"role": "user", "content": "hi"}], tools=[])):
                pass
    assert caught.value.kind == kind, caught.value
    assert caught.value.retry_after == retry_after
    assert caught.value.status == status
    assert len(provider.requests) == 1, "one attempt: retries are agentpress's, not the client's"


async def test_the_direct_lane_sends_the_request_litellm_would(lane):
    provider = FakeProvider()
    async with serve(provider) as base:
        model = LiteLLMModel("openai/agentry-test", api_base=base, api_key="sk-test")
        request = ModelRequest(messages=[{"role": "user", "content": "hi"}], tools=[])
        deltas = [d async for d in model.stream(request)]
    (sent,) = provider.requests
    assert sent["model"] == "agentry-test" and sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    calls = [c for d in deltas for c in d.tool_calls]
    assert [(c.index, c.call_id, c.name) for c in calls if c.name] == [
        (0, "call_1", "create_file"),
        (1, "call_2", "run_command"),
    ]
    assert "".join(c.arguments for c in calls if c.index == 0) == json.dumps(
        {"path": "hello.py", "content": "print('hi')"}
    )
    assert [(d.prompt_tokens, d.completion_tokens) for d in deltas if d.prompt_tokens] == [(50, 20)]
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]


async def test_a_rate_limited_call_is_attempted_three_times_in_all_on_each_lane(harness):
    """The default policy's 3 attempts are all the provider sees: neither the OpenAI SDK's
    max_retries nor LiteLLM's num_retries adds any (issue 14, case 4)."""
    provider = FakeProvider(
        error=(
            429,
            {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
            {"retry-after-ms": "20"},
        )
    )
    async with serve(provider) as base:
        agent = Agent(
            model="openai/agentry-test",
            api_base=base,
            api_key="sk-test",
            retry=RetryPolicy(initial_wait=0.001, max_wait=0.002),
            context=ContextConfig(context_window=16_000),
        )
        result = await agent.run(harness.ctx)
    assert result.reason is FinishReason.ERROR and result.error.startswith("rate limit reached (HTTP 429)")
    assert len(provider.requests) == 3


class PiecesProvider(FakeProvider):
    """Answers one stream written as the given byte pieces (a line may be cut anywhere)."""

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__()
        self.pieces = pieces

    async def completions(self, request: Request):
        self.requests.append(await request.json())

        async def stream() -> AsyncIterator[bytes]:
            for piece in self.pieces:
                yield piece
                await asyncio.sleep(0.001)  # each piece its own network read

        return StreamingResponse(stream(), media_type="text/event-stream")


async def test_lines_cut_anywhere_and_a_line_longer_than_any_buffer_are_read_whole():
    # A tool call's whole arguments may come in one chunk: 300 KB on one line, more than aiohttp's
    # own readline would take, and sent in pieces that cut lines (and \r\n endings) anywhere.
    big = "x" * 300_000
    text = (
        _chunk({"role": "assistant", "content": "Hello "}).replace("\n\n", "\r\n\r\n")
        + ": keep-alive comment\n\n"
        + _chunk({"content": big})
        + _chunk({"content": " world"}, "stop")
        + _chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8})
        + "data: [DONE]\n\n"
    ).encode()
    cuts = [0, 7, 8, 30, 200, 5_000, 150_000, 300_100, len(text) - 3, len(text)]
    provider = PiecesProvider([text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)])
    async with serve(provider) as base:
        model = LiteLLMModel("openai/agentry-test", api_base=base, api_key="sk-test")
        request = ModelRequest(messages=[{"role": "user", "content": "hi"}], tools=[])
        deltas = [d async for d in model.stream(request)]
    assert "".join(d.text for d in deltas) == "Hello " + big + " world"
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert [(d.prompt_tokens, d.completion_tokens) for d in deltas if d.prompt_tokens] == [(5, 3)]


def test_the_direct_lane_takes_its_proxy_from_the_environment(monkeypatch):
    from agentpress.openai_stream import DirectLane

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    lane = DirectLane(model="openai/m", provider_model="m", base_url="https://api.example/v1", api_key=None, timeout=5)
    local = DirectLane(model="openai/m", provider_model="m", base_url="http://127.0.0.1:9/v1", api_key=None, timeout=5)
    assert (lane.proxy, local.proxy) == ("http://proxy.internal:3128", None)


class PacedProvider:
    """Answers a text turn, waiting `gaps[i]` seconds before chunk i (a model that stalls)."""

    def __init__(self, gaps: list[float]) -> None:
        self.gaps = gaps

    async def completions(self, request: Request):
        await request.json()
        turn = _text_turn()

        async def stream() -> AsyncIterator[str]:
            for gap, piece in zip(self.gaps + [0.0] * len(turn), turn, strict=False):
                await asyncio.sleep(gap)
                yield piece

        return StreamingResponse(stream(), media_type="text/event-stream")


async def _text_of(model: LiteLLMModel, pause: float = 0.0) -> str:
    text = ""
    async for delta in model.stream(ModelRequest(messages=[{"role": "user", "content": "hi"}], tools=[])):
        text += getattr(delta, "text", "") or ""
        await asyncio.sleep(pause)
    return text


async def test_a_model_that_stalls_mid_stream_times_out_alike_on_both_lanes(lane):
    provider = PacedProvider([0.0, 30.0])  # the first chunk, then nothing
    async with serve(provider) as base:
        model = LiteLLMModel("openai/agentry-test", api_base=base, api_key="sk-test", timeout=0.5)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ModelCallError) as caught:
            await asyncio.wait_for(_text_of(model), 25)
    assert caught.value.kind == "timeout", caught.value
    # The direct lane gives up after its timeout; LiteLLM's client tries again itself first.
    assert asyncio.get_running_loop().time() - started < (3 if lane == "direct" else 20)


async def test_a_consumer_slower_than_the_timeout_is_not_a_stalled_model():
    # Only waiting for the model counts: the caller may spend longer than `timeout` between chunks.
    provider = PacedProvider([0.0, 0.1, 0.1])
    async with serve(provider) as base:
        model = LiteLLMModel("openai/agentry-test", api_base=base, api_key="sk-test", timeout=0.5)
        assert await asyncio.wait_for(_text_of(model, pause=0.8), 20) == "All done."
