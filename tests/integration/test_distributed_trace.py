"""One trace per request across the split stack: a run started with a `traceparent` header is
found, in the spans every process exports to a local OTLP/HTTP receiver, under that one trace id
in the gateway, the runner api, the worker (through RabbitMQ), the sandbox and the model call."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from agentry.fakellm import Script, ScriptedToolCall, ThreadedFakeLLMServer, Turn

from .otlp_receiver import OtlpReceiver
from .test_run_end_to_end import sign_up_and_in

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SCRIPT = Script(
    turns=(
        Turn(text="Looking.", tool_calls=(ScriptedToolCall(name="run_command", arguments={"command": "echo traced"}),)),
        Turn(text="Done."),
    )
)


async def test_one_trace_id_from_the_gateway_to_the_model_call(
    tmp_path, postgres_url, redis_url, amqp_url, unique_name
):
    from agentry.cli.split import SplitConfig, SplitProcesses, free_port

    with ThreadedFakeLLMServer({"traced": SCRIPT}) as llm, OtlpReceiver() as receiver:
        ports = {name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")}
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base_url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "AGENTRY_BILLING_INITIAL_CREDIT_MICROS": str(10**9),
        }
        procs = SplitProcesses(
            SplitConfig(
                database_url=postgres_url,
                redis_url=redis_url,
                amqp_url=amqp_url,
                data_dir=tmp_path,
                gateway_port=free_port(),
                grpc_ports=ports,
                llm_api_base=llm.base_url,
                queue_name=f"agentry.runs.{unique_name}",
                redis_prefix=f"agentry:{unique_name}:",
                extra_env=env,
            )
        )
        await asyncio.to_thread(procs.start, 240.0)  # LiteLLM's import takes long on a busy machine
        try:
            async with httpx.AsyncClient(base_url=procs.gateway_url, timeout=60) as client:
                user = await sign_up_and_in(client, "traced@example.com")
                headers = user["headers"]
                thread_id = (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]
                started = await client.post(
                    f"/api/threads/{thread_id}/agent/start",
                    json={"model_name": "openai/traced", "prompt": "go"},
                    headers={**headers, "traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
                )
                assert started.status_code == 202, started.text
                run_id = started.json()["agent_run_id"]
                async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data:") and orjson.loads(line[5:])["type"] == "run_finished":
                            assert orjson.loads(line[5:])["reason"] == "completed"
                            break

            def traced(spans) -> bool:
                mine = [s for s in spans if s.trace_id == TRACE_ID]
                names = {s.name for s in mine}
                return (
                    {"gateway", "runner-api", "runner-worker", "sandbox"} <= {s.service for s in mine}
                    and sum(s.name.startswith("chat ") for s in mine) >= 2
                    and "execute_tool run_command" in names
                    and "run job" in names
                )

            spans = await asyncio.to_thread(receiver.wait_for, traced, 60.0)
        finally:
            await asyncio.to_thread(procs.stop)
            await _delete_queue(amqp_url, f"agentry.runs.{unique_name}")

    mine = [s for s in spans if s.trace_id == TRACE_ID]
    by_id = {s.span_id: s for s in mine}
    [http] = [s for s in mine if s.parent_span_id == PARENT]  # the caller's span
    assert (http.service, http.name) == ("gateway", "POST /api/threads/{thread_id}/agent/start")
    start = next(s for s in mine if s.service == "runner-api" and s.name.endswith("/StartRun"))
    assert by_id[start.parent_span_id].service == "gateway"
    job = next(s for s in mine if s.service == "runner-worker" and s.name == "run job")
    assert job.parent_span_id == start.span_id  # through the RabbitMQ message's traceparent header
    models = [s for s in mine if s.name == "chat openai/traced"]
    assert len(models) == 2 and all(m.service == "runner-worker" for m in models)
    assert all(m.parent_span_id == job.span_id for m in models)
    assert all(m.attributes["gen_ai.usage.output_tokens"] > 0 for m in models)
    sandbox = [s for s in mine if s.service == "sandbox"]
    assert sandbox and all(
        by_id[s.parent_span_id].service == "runner-worker" for s in sandbox if s.parent_span_id in by_id
    )
    # nothing of this request leaked into another trace
    assert not [
        s
        for s in spans
        if s.trace_id != TRACE_ID and s.service == "runner-worker" and s.attributes.get("agentry.run_id") == run_id
    ]


async def _delete_queue(amqp_url: str, name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)
