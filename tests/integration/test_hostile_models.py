"""Model behaviours seen in the wild, through the whole system (HTTP -> SSE) against a strict model
server that refuses, with OpenAI's 400s, any history OpenAI would refuse (issue 14): duplicate
call ids, arguments that are not a JSON object, empty replies, 429 with Retry-After, and text no
database or provider can hold. Each run on embedded defaults (SQLite) and split (PostgreSQL)."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from agentry.fakellm import Script, ScriptedError, ScriptedToolCall, ThreadedFakeLLMServer, Turn

from .conftest import IT_SCRIPT
from .test_run_end_to_end import sign_up_and_in, stream

pytestmark = pytest.mark.integration

HOSTILE_TEXT = "bad \ud800 surrogate, nul \x00 here, bell \x07, escape \x1b[31mred\x1b[0m, tab\tend"
# What every reader gets back: the unpaired surrogate (which UTF-8 cannot hold) replaced, and
# marked, by U+FFFD; NUL and the other control characters as they were (JSON escapes them).
SAFE_TEXT = "bad \ufffd surrogate, nul \x00 here, bell \x07, escape \x1b[31mred\x1b[0m, tab\tend"
# One line of 200,000 characters: one streamed chunk, one stored message, sent back whole.
LONG_LINE = "start:" + "\u00e9\x1b[0m" * 40_000 + ":end"
# What is sent back to a model: NUL replaced too.
SENT_TEXT = SAFE_TEXT.replace("\x00", "\ufffd")

SCRIPTS = {
    "it-script": IT_SCRIPT,
    "hm-ok": Script(turns=(Turn(text="All good: {last_user}"),)),
    "hm-dup": Script(
        turns=(
            Turn(
                text="Two at once.",
                tool_calls=(
                    ScriptedToolCall("run_command", {"command": "echo output-A"}, id="call_dup"),
                    ScriptedToolCall("run_command", {"command": "echo output-B"}, id="call_dup"),
                ),
            ),
            Turn(text="Both ran."),
        )
    ),
    "hm-badargs": Script(
        turns=(
            Turn(
                text="Trying.",
                tool_calls=(
                    ScriptedToolCall("run_command", raw_arguments='{"command": "echo hi'),
                    ScriptedToolCall("run_command", raw_arguments="[]"),
                    ScriptedToolCall("run_command", raw_arguments="null"),
                ),
            ),
            Turn(text="I see, those calls were malformed."),
        )
    ),
    "hm-empty-blank": Script(turns=(Turn(text=""),)),
    "hm-empty-space": Script(turns=(Turn(text="  \n\t "),)),
    "hm-empty-null": Script(turns=(Turn(text=None),)),
    "hm-limited": Script(turns=(Turn(error=ScriptedError(429, {"Retry-After": "1"})),)),
    "hm-text": Script(turns=(Turn(text=HOSTILE_TEXT),)),
    "hm-long-line": Script(turns=(Turn(text=LONG_LINE),)),
    # Calls whose name and arguments hold what no database or RPC can: NUL, an unpaired surrogate
    # (an escape in the JSON text, a lone code point once decoded), control characters.
    "hm-text-calls": Script(
        turns=(
            Turn(
                text="odd calls",
                tool_calls=(
                    ScriptedToolCall("run_command", raw_arguments='{"command": "echo \\ud800 \\u0000 \\u0007 mark-7"}'),
                    ScriptedToolCall("no\x00such\ud800tool", {"x": 1}),
                ),
            ),
            Turn(text="done with odd calls"),
        )
    ),
}
# The same behaviours from a model the strict server judges by Anthropic's rules ("claude" in the
# name): roles must alternate, the first turn is the user's, no empty or whitespace-only text.
for _name in ("hm-ok", "hm-dup", "hm-badargs", "hm-empty-space", "hm-text-calls"):
    SCRIPTS[_name.replace("hm-", "hm-claude-")] = SCRIPTS[_name]


# Each case on embedded defaults (SQLite); all of them in turn on one split stack (PostgreSQL,
# Redis, RabbitMQ), which costs ~35 s to start.
EMBEDDED = pytest.mark.parametrize("system", ["embedded"], indirect=True)


@pytest.fixture(scope="module")
def fake_llm():
    """This module's strict model server (the `system` fixture points the runner at it)."""
    with ThreadedFakeLLMServer(SCRIPTS, strict=True) as server:
        yield server


async def _run(client: httpx.AsyncClient, headers: dict, thread_id: str, model: str, prompt: str) -> tuple[str, list]:
    start = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": f"openai/{model}", "prompt": prompt},
        headers=headers,
    )
    assert start.status_code == 202, start.text
    run_id = start.json()["agent_run_id"]
    events = [orjson.loads(data) for _, data in await stream(client, run_id, headers)]
    assert events[-1]["type"] == "run_finished"
    return run_id, events


async def _thread(client: httpx.AsyncClient, email: str) -> tuple[dict, str]:
    headers = (await sign_up_and_in(client, email))["headers"]
    thread = await client.post("/api/threads", json={}, headers=headers)
    assert thread.status_code == 201, thread.text
    return headers, thread.json()["thread_id"]


async def _messages(client: httpx.AsyncClient, headers: dict, thread_id: str) -> list[dict]:
    listed = await client.get(f"/api/threads/{thread_id}/messages", headers=headers)
    assert listed.status_code == 200, listed.text
    return listed.json()["messages"]


def _accepted(fake_llm, model: str, since: float) -> list:
    return [r for r in list(fake_llm.requests) if r.model == model and r.at >= since]


@EMBEDDED
async def test_two_calls_sharing_an_id_each_keep_their_own_result(system, fake_llm):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        headers, thread_id = await _thread(client, f"dup-{system.mode}@example.com")
        since = time.monotonic()
        _, events = await _run(client, headers, thread_id, "hm-dup", "run both")
        assert events[-1]["reason"] == "completed", events[-1]

        finished = [e for e in events if e["type"] == "tool_call_finished"]
        assert len(finished) == 2 and finished[0]["call_id"] != finished[1]["call_id"]
        assert "output-A" in finished[0]["output"] and "output-B" in finished[1]["output"]

        messages = await _messages(client, headers, thread_id)
        assert [m["type"] for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
        calls = messages[1]["content"]["tool_calls"]
        ids = [c["call_id"] for c in calls]
        assert len(set(ids)) == 2 and ids[0] == "call_dup"  # the provider's id where it is unique
        assert calls[1]["provider_id"] == "call_dup"  # the one renamed remembers the provider's
        results = {m["content"]["call_id"]: m["content"]["output"] for m in messages[2:4]}
        assert "output-A" in results[ids[0]] and "output-B" in results[ids[1]]

        # The model was sent each result paired with its own call, and accepted the history.
        second = [r for r in _accepted(fake_llm, "hm-dup", since) if r.status == 200][-1]
        sent = {m["tool_call_id"]: m["content"] for m in second.messages if m["role"] == "tool"}
        assert "output-A" in sent[ids[0]] and "output-B" in sent[ids[1]]
        assert all(r.status == 200 for r in _accepted(fake_llm, "hm-dup", since))


@EMBEDDED
async def test_arguments_that_are_not_an_object_do_not_poison_the_thread(system, fake_llm):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        headers, thread_id = await _thread(client, f"args-{system.mode}@example.com")
        since = time.monotonic()
        _, events = await _run(client, headers, thread_id, "hm-badargs", "try it")
        assert events[-1]["reason"] == "completed", events[-1]
        finished = [e for e in events if e["type"] == "tool_call_finished"]
        assert len(finished) == 3 and all(f["error"] == "invalid_call" for f in finished)

        # What was stored stays as the model wrote it (audit) ...
        calls = (await _messages(client, headers, thread_id))[1]["content"]["tool_calls"]
        assert [c["arguments"] for c in calls] == ['{"command": "echo hi', "[]", "null"]
        # ... and the next run on the thread completes against the strict model.
        _, events = await _run(client, headers, thread_id, "hm-ok", "still there?")
        assert events[-1]["reason"] == "completed", events[-1]
        assert "All good: still there?" in "".join(e["text"] for e in events if e["type"] == "text_delta")
        assert all(r.status == 200 for r in _accepted(fake_llm, "hm-ok", since))
        sent = _accepted(fake_llm, "hm-ok", since)[-1].messages
        placeholders = [orjson.loads(c["function"]["arguments"]) for m in sent for c in m.get("tool_calls") or []]
        assert placeholders == [
            {"_invalid_arguments": '{"command": "echo hi'},
            {"_invalid_arguments": "[]"},
            {"_invalid_arguments": "null"},
        ]


@EMBEDDED
async def test_an_empty_reply_fails_the_run_empty_response_and_the_thread_stays_usable(system, fake_llm):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        headers, thread_id = await _thread(client, f"empty-{system.mode}@example.com")
        for model in ("hm-empty-blank", "hm-empty-space", "hm-empty-null"):
            since = time.monotonic()
            run_id, events = await _run(client, headers, thread_id, model, f"say something ({model})")
            assert events[-1]["reason"] == "empty_response", events[-1]
            assert "empty reply" in events[-1]["error"]
            assert len(_accepted(fake_llm, model, since)) == 2, "retried once, then failed"
            run = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()
            assert run["status"] == "failed" and run["finish_reason"] == "empty_response"
        # Never stored as an answer.
        assert not [m for m in await _messages(client, headers, thread_id) if m["type"] == "assistant"]
        since = time.monotonic()
        _, events = await _run(client, headers, thread_id, "hm-ok", "now answer")
        assert events[-1]["reason"] == "completed", events[-1]
        assert [r.status for r in _accepted(fake_llm, "hm-ok", since)] == [200]


@EMBEDDED
async def test_a_rate_limit_is_retried_after_retry_after_and_stops_at_the_limit(system, fake_llm):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        headers, thread_id = await _thread(client, f"limit-{system.mode}@example.com")
        since = time.monotonic()
        run_id, events = await _run(client, headers, thread_id, "hm-limited", "go")
        assert events[-1]["reason"] == "error", events[-1]
        assert "rate limit" in events[-1]["error"].lower()
        attempts = _accepted(fake_llm, "hm-limited", since)
        assert [r.status for r in attempts] == [429, 429, 429], "3 attempts: the first and two retries"
        gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:])]
        assert all(gap >= 1.0 for gap in gaps), f"Retry-After: 1 not honoured: {gaps}"
        run = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()
        assert run["status"] == "failed" and "rate limit" in run["error"].lower()
        # The thread is not harmed: the next run completes.
        _, events = await _run(client, headers, thread_id, "hm-ok", "again")
        assert events[-1]["reason"] == "completed", events[-1]


@EMBEDDED
async def test_any_text_is_stored_streamed_and_sent_back_with_replacements_marked(system, fake_llm):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        headers, thread_id = await _thread(client, f"text-{system.mode}@example.com")
        run_id, events = await _run(client, headers, thread_id, "hm-text", "say the odd things")
        assert events[-1]["reason"] == "completed", events[-1]
        assert "".join(e["text"] for e in events if e["type"] == "text_delta") == SAFE_TEXT
        stored = [m for m in await _messages(client, headers, thread_id) if m["type"] == "assistant"]
        assert [m["content"]["text"] for m in stored] == [SAFE_TEXT]
        completed = [
            e["message"] for e in events if e["type"] == "message_completed" and e["message"]["kind"] == "assistant"
        ]
        assert [m["text"] for m in completed] == [SAFE_TEXT]
        # A reader from the start (the stored events) sees the same.
        again = [orjson.loads(d) for _, d in await stream(client, run_id, headers)]
        assert again == events
        # Sent back as valid text: the strict model accepts the next run.
        since = time.monotonic()
        _, events = await _run(client, headers, thread_id, "hm-ok", "and now?")
        assert events[-1]["reason"] == "completed", events[-1]
        sent = _accepted(fake_llm, "hm-ok", since)[-1].messages
        assert SENT_TEXT in [m.get("content") for m in sent]

        since = time.monotonic()
        _, events = await _run(client, headers, thread_id, "hm-long-line", "one long line")
        assert events[-1]["reason"] == "completed", events[-1]
        assert "".join(e["text"] for e in events if e["type"] == "text_delta") == LONG_LINE
        assert (await _messages(client, headers, thread_id))[-1]["content"]["text"] == LONG_LINE

        # Tool calls whose names and arguments hold the same: the run completes, every result is stored.
        since = time.monotonic()
        _, events = await _run(client, headers, thread_id, "hm-text-calls", "odd calls please")
        assert events[-1]["reason"] == "completed", events[-1]
        finished = [e for e in events if e["type"] == "tool_call_finished"]
        assert len(finished) == 2 and finished[1]["name"] == "no\x00such\ufffdtool"
        assert finished[1]["error"] == "invalid_call"
        assert all(r.status == 200 for r in _accepted(fake_llm, "hm-text-calls", since))
        stored = await _messages(client, headers, thread_id)
        assert [m["type"] for m in stored[-4:]] == ["assistant", "tool", "tool", "assistant"]


@EMBEDDED
async def test_anthropic_rules_hold_after_every_hostile_turn(system, fake_llm):
    """Empty replies leave two user messages in a row, then duplicate ids and bad arguments: every
    request on the thread is still one Anthropic accepts."""
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=60) as client:
        headers, thread_id = await _thread(client, f"claude-{system.mode}@example.com")
        since = time.monotonic()
        _, events = await _run(client, headers, thread_id, "hm-claude-empty-space", "hello")
        assert events[-1]["reason"] == "empty_response", events[-1]
        for model in ("hm-claude-dup", "hm-claude-badargs", "hm-claude-text-calls", "hm-claude-ok"):
            _, events = await _run(client, headers, thread_id, model, f"now {model}")
            assert events[-1]["reason"] == "completed", (model, events[-1])
        statuses = [(r.model, r.status) for r in list(fake_llm.requests) if r.at >= since]
        assert len(statuses) >= 7 and all(status == 200 for _, status in statuses), statuses


@pytest.mark.parametrize("system", ["split"], indirect=True)
async def test_every_case_on_the_split_stack(system, fake_llm):
    for case in (
        test_two_calls_sharing_an_id_each_keep_their_own_result,
        test_arguments_that_are_not_an_object_do_not_poison_the_thread,
        test_an_empty_reply_fails_the_run_empty_response_and_the_thread_stays_usable,
        test_a_rate_limit_is_retried_after_retry_after_and_stops_at_the_limit,
        test_any_text_is_stored_streamed_and_sent_back_with_replacements_marked,
    ):
        await case(system, fake_llm)
