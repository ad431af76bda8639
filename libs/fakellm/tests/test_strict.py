"""Strict mode refuses, with the provider's own 400 body, histories OpenAI or Anthropic refuse;
scripts can send duplicate ids, raw arguments and errors with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from agentry.fakellm import Script, ScriptedError, ScriptedToolCall, Turn, create_app

SCRIPTS = {
    "dup": Script(
        turns=(
            Turn(
                tool_calls=(
                    ScriptedToolCall("echo", {"x": "A"}, id="call_dup"),
                    ScriptedToolCall("echo", raw_arguments='{"x": "B', id="call_dup"),
                )
            ),
        )
    ),
    "limited": Script(turns=(Turn(error=ScriptedError(429, {"Retry-After": "1"})),)),
    "ok": Script(turns=(Turn(text="fine"),)),
    "ok-claude": Script(turns=(Turn(text="fine"),)),
}


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    app = create_app(SCRIPTS, strict=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fake") as client:
        yield client, app


def _call(call_id: str, arguments: str = "{}") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": "echo", "arguments": arguments}}


USER = {"role": "user", "content": "hi"}


async def test_scripted_ids_and_raw_arguments_are_sent_as_written(client) -> None:
    http, _ = client
    answer = (await http.post("/v1/chat/completions", json={"model": "dup", "messages": [USER]})).json()
    calls = answer["choices"][0]["message"]["tool_calls"]
    assert [c["id"] for c in calls] == ["call_dup", "call_dup"]
    assert calls[1]["function"]["arguments"] == '{"x": "B'


async def test_a_scripted_error_answers_with_its_status_and_headers_and_is_logged(client) -> None:
    http, app = client
    response = await http.post("/v1/chat/completions", json={"model": "limited", "messages": [USER]})
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert [(r.model, r.status) for r in app.state.requests] == [("limited", 429)]


@pytest.mark.parametrize(
    "messages, fragment",
    [
        (
            [USER, {"role": "assistant", "content": None, "tool_calls": [_call("a")]}],
            "did not have response messages: a",
        ),
        ([USER, {"role": "tool", "tool_call_id": "a", "content": "x"}], "must be a response to a preceeding message"),
        (
            [
                USER,
                {"role": "assistant", "content": None, "tool_calls": [_call("a"), _call("a")]},
                {"role": "tool", "tool_call_id": "a", "content": "x"},
            ],
            "duplicate value 'a'",
        ),
        (
            [
                USER,
                {"role": "assistant", "content": None, "tool_calls": [_call("a", '{"command": "echo hi')]},
                {"role": "tool", "tool_call_id": "a", "content": "x"},
            ],
            "expected a JSON object",
        ),
        (
            [
                USER,
                {"role": "assistant", "content": None, "tool_calls": [_call("a", "null")]},
                {"role": "tool", "tool_call_id": "a", "content": "x"},
            ],
            "expected a JSON object",
        ),
        ([USER, {"role": "assistant", "content": ""}, USER], "non-empty 'content' or 'tool_calls'"),
    ],
)
async def test_openai_rejections_carry_openais_body(client, messages, fragment) -> None:
    http, app = client
    response = await http.post("/v1/chat/completions", json={"model": "ok", "messages": messages})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and fragment in error["message"]
    assert app.state.requests[-1].status == 400


@pytest.mark.parametrize(
    "messages, fragment",
    [
        ([USER, USER], 'multiple "user" roles in a row'),
        ([{"role": "assistant", "content": "hello"}, USER], 'first message must use the "user" role'),
        ([USER, {"role": "assistant", "content": "  "}], "non-whitespace text"),
        (
            [
                USER,
                {"role": "assistant", "content": None, "tool_calls": [_call("functions.echo:0")]},
                {"role": "tool", "tool_call_id": "functions.echo:0", "content": "x"},
            ],
            "should match pattern",
        ),
        (
            [
                USER,
                {"role": "assistant", "content": None, "tool_calls": [_call("a", "[]")]},
                {"role": "tool", "tool_call_id": "a", "content": "x"},
            ],
            "valid dictionary",
        ),
    ],
)
async def test_anthropic_rejections_for_a_claude_model(client, messages, fragment) -> None:
    http, _ = client
    response = await http.post("/v1/chat/completions", json={"model": "ok-claude", "messages": messages})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"]


async def test_a_valid_history_is_answered(client) -> None:
    http, _ = client
    messages = [
        {"role": "system", "content": "s"},
        USER,
        {"role": "assistant", "content": "let me", "tool_calls": [_call("a"), _call("b")]},
        {"role": "tool", "tool_call_id": "b", "content": "x"},
        {"role": "tool", "tool_call_id": "a", "content": "y"},
        {"role": "user", "content": "and now?"},
    ]
    for model in ("ok", "ok-claude"):
        response = await http.post("/v1/chat/completions", json={"model": model, "messages": messages})
        assert response.status_code == 200, response.text
