"""Langfuse tracing end to end: a tool-using run through the whole (embedded) stack, traced to a
local receiver that speaks Langfuse's OTLP endpoint (protobuf, gzip, Basic auth), and decoded
there: one trace per run with its session and user ids, one generation per model call (model,
usage, cost, TTFT), one span per tool call with its output, correctly nested; a failed model call
is an ERROR generation; with Langfuse down, a run's outcome and time to first token are as
without tracing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

import httpx
import orjson
import pytest

from agentry.cli.devstack import start_dev_stack
from agentry.fakellm import Script, ScriptedError, ScriptedToolCall, ThreadedFakeLLMServer, Turn

from .otlp_receiver import LANGFUSE_PATH, OtlpReceiver
from .test_run_end_to_end import sign_up_and_in

pytestmark = pytest.mark.integration

MARKER = "lf-tool-output-5c1d"
SECRET = "sk-live-" + "9" * 24  # must never reach Langfuse
# A model name LiteLLM has a price for, so the generations carry a cost.
MODEL = "gpt-4o-mini"
FAILING = "gpt-4o"
SCRIPTS = {
    MODEL: Script(
        turns=(
            Turn(
                text="Checking.",
                tool_calls=(ScriptedToolCall(name="run_command", arguments={"command": f"echo {MARKER}"}),),
            ),
            Turn(text=f"Done; the key {SECRET} was not needed."),
        )
    ),
    FAILING: Script(turns=(Turn(error=ScriptedError(status=400)),)),
}
PORTS = {"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0}


@pytest.fixture(scope="module")
def llm():
    with ThreadedFakeLLMServer(SCRIPTS) as server:
        yield server


def _langfuse(base_url: str, public: str, secret: str) -> dict:
    return {
        "langfuse_public_key": public,
        "langfuse_secret_key": secret,
        "langfuse_base_url": base_url,
        "langfuse_flush_interval_seconds": 0.2,
        "langfuse_export_timeout_seconds": 1.0,
    }


async def _run(client: httpx.AsyncClient, headers: dict, model: str, prompt: str) -> tuple[str, str, list[dict], float]:
    """(thread id, run id, events, seconds from start request to the first text delta)."""
    thread_id = (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]
    t0 = time.perf_counter()
    started = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": f"openai/{model}", "prompt": prompt},
        headers=headers,
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["agent_run_id"]
    ttft = None
    events = []
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                event = orjson.loads(line[5:])
                events.append(event)
                if ttft is None and event["type"] in ("text_delta", "run_finished"):
                    ttft = time.perf_counter() - t0
                if event["type"] == "run_finished":
                    break
    return thread_id, run_id, events, ttft or 0.0


async def test_a_tool_using_run_is_one_langfuse_trace(llm, tmp_path):
    public, secret = f"pk-lf-{uuid.uuid4().hex[:8]}", f"sk-lf-{uuid.uuid4().hex}"
    with OtlpReceiver(path=LANGFUSE_PATH, basic_auth=(public, secret)) as receiver:
        async with contextlib.AsyncExitStack() as stack:
            dev = await start_dev_stack(
                stack,
                data_dir=tmp_path,
                llm_api_base=llm.base_url,
                ports=PORTS,
                runner_overrides=_langfuse(receiver.base_url, public, secret),
            )
            async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=60) as client:
                user = await sign_up_and_in(client, "traced@example.com")
                thread_id, run_id, events, _ = await _run(client, user["headers"], MODEL, "run the echo")
                assert events[-1]["reason"] == "completed", events[-1]
                _, failed_id, failed_events, _ = await _run(client, user["headers"], FAILING, "this fails")
                assert failed_events[-1]["reason"] == "error"

                def complete(spans) -> bool:
                    roots = [s for s in spans if s.attributes.get("langfuse.observation.type") == "agent"]
                    return len(roots) >= 2 and len(spans) >= 6

                # in a thread: the stack runs on this event loop and must go on (it ends the run's span)
                spans = await asyncio.to_thread(receiver.wait_for, complete)
    assert receiver.refused == 0

    def of_run(rid: str) -> list:
        roots = [s for s in spans if s.attributes.get("langfuse.trace.metadata.run_id") == json.dumps(rid)]
        assert roots, rid
        return [s for s in spans if s.trace_id == roots[0].trace_id]

    run_spans = of_run(run_id)
    assert len({s.trace_id for s in run_spans}) == 1
    [root] = [s for s in run_spans if s.attributes["langfuse.observation.type"] == "agent"]
    generations = [s for s in run_spans if s.attributes["langfuse.observation.type"] == "generation"]
    tools = [s for s in run_spans if s.attributes["langfuse.observation.type"] == "tool"]
    assert len(generations) == 2 and len(tools) == 1
    # nesting: every generation and tool span is a child of the run's observation
    assert all(s.parent_span_id == root.span_id for s in generations + tools)
    assert root.attributes["langfuse.internal.as_root"] is True
    # trace attributes: session = thread, user = the signed-in user, account in metadata, model tag
    for s in run_spans:
        assert s.attributes["session.id"] == thread_id
        assert s.attributes["user.id"] == user["user_id"]
        assert json.loads(s.attributes["langfuse.trace.metadata.account_id"]) == user["account_id"]
        assert s.attributes["langfuse.trace.tags"] == [f"openai/{MODEL}"]
        assert s.attributes["langfuse.trace.name"] == "agent run"
    for g in generations:
        assert g.attributes["langfuse.observation.model.name"] == f"openai/{MODEL}"
        usage = json.loads(g.attributes["langfuse.observation.usage_details"])
        assert usage["input"] > 0 and usage["output"] > 0 and usage["total"] == usage["input"] + usage["output"]
        assert json.loads(g.attributes["langfuse.observation.cost_details"])["total"] > 0
        assert "langfuse.observation.completion_start_time" in g.attributes  # time to first token
        assert json.loads(g.attributes["langfuse.observation.input"])[-1]["role"] in ("user", "tool")
    first, second = sorted(generations, key=lambda s: s.start_ns)
    assert json.loads(first.attributes["langfuse.observation.output"])["tool_calls"][0]["name"] == "run_command"
    assert "Done" in json.loads(second.attributes["langfuse.observation.output"])["content"]
    [tool] = tools
    assert tool.name == "run_command"
    assert json.loads(tool.attributes["langfuse.observation.input"]) == {"command": f"echo {MARKER}"}
    assert MARKER in tool.attributes["langfuse.observation.output"]  # a string is sent as it is
    assert first.end_ns <= tool.start_ns <= tool.end_ns <= second.start_ns
    # secrets are masked on the way out
    assert not any(SECRET in str(s.attributes) for s in spans)

    failed = of_run(failed_id)
    [bad] = [s for s in failed if s.attributes["langfuse.observation.type"] == "generation"]
    assert bad.attributes["langfuse.observation.level"] == "ERROR"
    assert "langfuse.observation.status_message" in bad.attributes
    [failed_root] = [s for s in failed if s.attributes["langfuse.observation.type"] == "agent"]
    assert bad.parent_span_id == failed_root.span_id
    assert failed_root.attributes["langfuse.observation.level"] == "ERROR"
    assert failed_root.trace_id != root.trace_id


async def test_a_dead_langfuse_changes_neither_outcome_nor_time_to_first_token(llm, tmp_path):
    """Langfuse configured at a port nobody listens on vs not configured: same outcome, and the
    median TTFT within a generous factor (export is off the run's path, so any cost is noise)."""
    with OtlpReceiver(path=LANGFUSE_PATH) as gone:
        dead_url = gone.base_url  # closed on leaving the block: connections are refused
    results = {}
    for label, overrides in (("off", {}), ("dead", _langfuse(dead_url, f"pk-lf-{uuid.uuid4().hex[:8]}", "sk-lf-x"))):
        async with contextlib.AsyncExitStack() as stack:
            dev = await start_dev_stack(
                stack, data_dir=tmp_path / label, llm_api_base=llm.base_url, ports=PORTS, runner_overrides=overrides
            )
            async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=60) as client:
                user = await sign_up_and_in(client, f"{label}@example.com")
                await _run(client, user["headers"], MODEL, "warm up")
                runs = [await _run(client, user["headers"], MODEL, "run the echo") for _ in range(3)]
        assert all(events[-1]["reason"] == "completed" for _, _, events, _ in runs), label
        results[label] = sorted(ttft for *_, ttft in runs)[1]
    assert results["dead"] < results["off"] * 3 + 0.25, results
