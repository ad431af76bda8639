"""The HTTP API, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from agentry.fakellm import Script, ScriptedToolCall, Turn, create_app

TWO_TOOLS = Script(
    turns=(
        Turn(
            text="Working on {last_user}",
            tool_calls=(
                ScriptedToolCall("run_command", {"command": "ls {last_user}"}),
                ScriptedToolCall("create_file", {"path": "a.txt", "content": "x" * 40}),
            ),
        ),
        Turn(text="The tool said: {last_tool_output}"),
    )
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app({"two-tools": TWO_TOOLS})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as client:
        yield client


def _body(model: str, messages: list[dict], **extra: object) -> dict:
    return {"model": model, "messages": messages, **extra}


async def test_health_and_models_list_builtins_and_given_scripts(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert {m["id"] for m in models["data"]} == {"agentry-demo", "two-tools"}


async def test_non_streaming_answer_has_text_tool_calls_and_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json=_body("openai/two-tools", [{"role": "user", "content": "src dir"}])
    )
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "two-tools"
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Working on src dir"
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["run_command", "create_file"]
    assert orjson.loads(calls[0]["function"]["arguments"]) == {"command": "ls src dir"}
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    usage = data["usage"]
    assert usage["prompt_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 2


async def test_second_turn_uses_last_tool_output_and_stops(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": []},
        {"role": "tool", "tool_call_id": "c1", "content": "42 files"},
    ]
    data = (await client.post("/v1/chat/completions", json=_body("two-tools", messages))).json()
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "The tool said: 42 files"}
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_streaming_text_is_one_word_per_chunk_then_done(client, sse_events) -> None:
    messages = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "x"}]
    response = await client.post("/v1/chat/completions", json=_body("two-tools", messages, stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"][0]["delta"].get("content")]
    assert contents == ["The ", "tool ", "said: "]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in chunks[-1]


async def test_streaming_tool_calls_come_in_fragments_with_stable_indexes(client, sse_events) -> None:
    response = await client.post(
        "/v1/chat/completions", json=_body("two-tools", [{"role": "user", "content": "src"}], stream=True)
    )
    chunks = [e for e in sse_events(response.content) if e != "[DONE]"]
    fragments: dict[int, list[dict]] = {}
    for chunk in chunks:
        for call in chunk["choices"][0]["delta"].get("tool_calls", []):
            fragments.setdefault(call["index"], []).append(call)
    assert sorted(fragments) == [0, 1]
    for index, name in [(0, "run_command"), (1, "create_file")]:
        first, *rest = fragments[index]
        assert first["id"].startswith("call_")
        assert first["function"] == {"name": name, "arguments": ""}
        assert len(rest) >= 2, "arguments should arrive in several chunks"
        assert all("id" not in f and "name" not in f["function"] for f in rest)
        arguments = orjson.loads("".join(f["function"]["arguments"] for f in rest))
        assert arguments == ({"command": "ls src"} if index == 0 else {"path": "a.txt", "content": "x" * 40})
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_include_usage_adds_a_final_usage_chunk(client, sse_events) -> None:
    body = _body(
        "two-tools",
        [{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    events = sse_events((await client.post("/v1/chat/completions", json=body)).content)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    content_chunks = [e for e in events[:-2] if e["choices"][0]["delta"]]
    assert usage_chunk["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": len(content_chunks),
        "total_tokens": 3 + len(content_chunks),
    }
    assert all(e["usage"] is None for e in events[:-2])


async def test_unknown_model_is_404_in_openai_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=_body("gpt-nope", [{"role": "user", "content": "x"}]))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["type"] == "invalid_request_error"
    assert "gpt-nope" in error["message"]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "agentry-demo", "messages": []}',
        b'{"model": "agentry-demo", "messages": [{"content": "x"}]}',
        b'{"model": "agentry-demo", "messages": [{"role": "user"}], "stream": "yes"}',
    ],
)
async def test_malformed_body_is_400_in_openai_error_shape(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post("/v1/chat/completions", content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["type"] == "invalid_request_error"


async def test_builtin_demo_script_runs_command_writes_note_then_finishes(client: httpx.AsyncClient) -> None:
    messages: list[dict] = [{"role": "user", "content": "say hello"}]
    answers = []
    for _ in range(3):
        data = (await client.post("/v1/chat/completions", json=_body("agentry-demo", messages))).json()
        message = data["choices"][0]["message"]
        answers.append(message)
        messages += [message, {"role": "tool", "tool_call_id": "c", "content": "ok"}]

    assert answers[0]["content"].startswith("[scripted demo model]")
    assert answers[0]["tool_calls"][0]["function"]["name"] == "run_command"
    assert orjson.loads(answers[0]["tool_calls"][0]["function"]["arguments"]) == {
        "command": "echo 'Hello from the Agentry sandbox' && uname -s"
    }
    assert answers[1]["content"] == "Now I will write a note."
    assert orjson.loads(answers[1]["tool_calls"][0]["function"]["arguments"]) == {
        "path": "notes/hello.txt",
        "content": "You asked: say hello\n",
    }
    assert "tool_calls" not in answers[2]
    assert answers[2]["content"].startswith("[scripted demo model] Done:")
    assert "OPENAI_API_KEY" in answers[2]["content"]


async def test_given_script_replaces_a_builtin_of_the_same_name() -> None:
    app = create_app({"agentry-demo": Script(turns=(Turn(text="mine"),))})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as client:
        data = (await client.post("/v1/chat/completions", json=_body("agentry-demo", [{"role": "user"}]))).json()
    assert data["choices"][0]["message"]["content"] == "mine"
