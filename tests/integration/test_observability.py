"""Operators' view of a run (issue 11), on the split stack (every service its own process, the
worker as two prefork processes): every service's /metrics moves by what one tool-using run did,
and the JSON log lines of every process carry the ids and never a prompt, an output, a password,
a token or a key."""

from __future__ import annotations

import re
import secrets

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import TOOL_MARKER
from .test_run_end_to_end import sign_up_and_in, stream

pytestmark = pytest.mark.integration

PROCESSES = ("auth", "billing", "sandbox", "runner", "worker")
PROMPT = "Run the check, secret prompt words 5c1d"
LLM_KEY = "sk-agentry-test-" + secrets.token_hex(12)
PASSWORD = "correct horse battery staple"  # sign_up_and_in's


Samples = dict[tuple[str, frozenset], float]


def scrape(url: str) -> Samples:
    body = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= lbls)


@pytest.fixture
def split(fake_llm, tmp_path, postgres_url, redis_url, amqp_url, unique_name):
    import asyncio

    from agentry.cli.split import SplitConfig, SplitProcesses, free_port

    from .conftest import _delete_queue

    ports = {name: free_port() for name in PROCESSES}
    metrics_ports = {name: free_port() for name in PROCESSES}
    procs = SplitProcesses(
        SplitConfig(
            database_url=postgres_url,
            redis_url=redis_url,
            amqp_url=amqp_url,
            data_dir=tmp_path,
            gateway_port=free_port(),
            grpc_ports=ports,
            llm_api_base=fake_llm.base_url,
            queue_name=f"agentry.runs.{unique_name}",
            redis_prefix=f"agentry:{unique_name}:",
            metrics_ports=metrics_ports,
            # The worker is two prefork processes: one /metrics sums both (multiprocess mode).
            extra_env={
                "AGENTRY_LOG_FORMAT": "json",
                "AGENTRY_LOG_LEVEL": "INFO",
                "AGENTRY_RUNNER_PROCESSES": "2",
                "AGENTRY_RUNNER_LLM_API_KEY": LLM_KEY,
                "AGENTRY_RUNNER_QUEUE_SAMPLE_SECONDS": "0.2",
            },
        )
    )
    procs.start(timeout=300)  # a loaded machine imports LiteLLM slowly
    try:
        yield procs, metrics_ports
    finally:
        procs.stop()
        asyncio.run(_delete_queue(amqp_url, f"agentry.runs.{unique_name}"))


def scrape_all(procs, metrics_ports) -> dict[str, Samples]:
    found = {name: scrape(f"http://127.0.0.1:{port}/metrics") for name, port in metrics_ports.items()}
    found["gateway"] = scrape(f"{procs.gateway_url}/metrics")
    return found


async def test_a_run_moves_every_services_metrics_and_its_logs_hold_ids_but_no_secrets(split):
    procs, metrics_ports = split
    async with httpx.AsyncClient(base_url=procs.gateway_url, timeout=60) as client:
        user = await sign_up_and_in(client, "metrics@example.com")
        headers = user["headers"]
        access_token = headers["Authorization"].removeprefix("Bearer ")
        key = await client.post("/api/api-keys", json={"name": "ci"}, headers=headers)
        assert key.status_code == 201, key.text
        api_key = key.json()["key"]
        thread = await client.post("/api/threads", json={"name": "metrics"}, headers={"X-API-Key": api_key})
        assert thread.status_code == 201, thread.text
        thread_id = thread.json()["thread_id"]

        before = scrape_all(procs, metrics_ports)
        start = await client.post(
            f"/api/threads/{thread_id}/agent/start",
            json={"model_name": "openai/it-script", "prompt": PROMPT},
            headers=headers,
        )
        assert start.status_code == 202, start.text
        run_id = start.json()["agent_run_id"]
        events = [orjson.loads(data) for _, data in await stream(client, run_id, headers)]
        assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "completed", events[-1]
        after = scrape_all(procs, metrics_ports)

    usage = [e for e in events if e["type"] == "usage"]
    tools = [e for e in events if e["type"] == "tool_call_finished"]
    assert [t["name"] for t in tools] == ["run_command", "create_file"]
    output = "".join(e["text"] for e in events if e["type"] == "text_delta")
    assert output

    gateway, runner, worker = after["gateway"], after["runner"], after["worker"]
    # gateway: the request by its route template, the stream's events, its calls to the runner
    assert (
        delta(
            gateway,
            before["gateway"],
            "agentry_http_requests_total",
            method="POST",
            route="/api/threads/{thread_id}/agent/start",
            status="202",
        )
        == 1
    )
    assert (
        delta(
            gateway,
            before["gateway"],
            "agentry_http_requests_total",
            method="GET",
            route="/api/agent-run/{run_id}/stream",
            status="200",
        )
        == 1
    )
    assert not any(run_id in str(labels) for (_, labels) in gateway), "no id in a label"
    assert delta(gateway, before["gateway"], "agentry_sse_events_sent_total", stream="run") == len(events)
    assert total(gateway, "agentry_sse_streams_open") == 0
    assert (
        delta(
            gateway,
            before["gateway"],
            "grpc_client_handled_total",
            grpc_service="agentry.api.runner.v1.RunnerService",
            grpc_method="StartRun",
            grpc_type="unary",
            grpc_code="OK",
        )
        == 1
    )
    # runner api: the run accepted, the call served, the queue sampled
    assert delta(runner, before["runner"], "agentry_runs_started_total", model="openai/it-script") == 1
    assert (
        delta(
            runner,
            before["runner"],
            "grpc_server_handled_total",
            grpc_service="agentry.api.runner.v1.RunnerService",
            grpc_method="StartRun",
            grpc_type="unary",
            grpc_code="OK",
        )
        == 1
    )
    assert ("agentry_run_queue_depth", frozenset()) in runner
    # worker: the run's end, duration, first token, events, tokens, tool calls, its calls out
    assert delta(worker, before["worker"], "agentry_runs_finished_total", status="completed", reason="completed") == 1
    assert delta(worker, before["worker"], "agentry_run_duration_seconds_count", status="completed") == 1
    assert (
        delta(worker, before["worker"], "agentry_run_time_to_first_token_seconds_count", model="openai/it-script") == 1
    )
    assert delta(worker, before["worker"], "agentry_run_queue_wait_seconds_count") == 1
    assert delta(worker, before["worker"], "agentry_run_events_total") == len(events)
    for kind, field in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
        moved = total(worker, "agentry_llm_tokens_total", kind=kind) - total(
            before["worker"], "agentry_llm_tokens_total", kind=kind
        )
        assert moved == sum(u[field] for u in usage) > 0
    cost = sum(u["cost_usd"] for u in usage)
    assert total(worker, "agentry_llm_cost_usd_total") - total(
        before["worker"], "agentry_llm_cost_usd_total"
    ) == pytest.approx(cost)
    assert delta(worker, before["worker"], "agentry_tool_calls_total", tool="run_command", outcome="ok") == 1
    assert delta(worker, before["worker"], "agentry_tool_calls_total", tool="create_file", outcome="ok") == 1
    assert delta(worker, before["worker"], "agentry_tool_call_duration_seconds_count", tool="run_command") == 1
    assert total(worker, "agentry_runner_active_runs") == 0
    assert delta(worker, before["worker"], "agentry_runner_lease_losses_total") == 0
    assert (
        total(worker, "grpc_client_handled_total", grpc_code="OK")
        - total(before["worker"], "grpc_client_handled_total", grpc_code="OK")
        >= 2
    )
    # sandbox: the command's latency; billing: the usage it charged; auth: nothing failed
    assert delta(after["sandbox"], before["sandbox"], "agentry_sandbox_exec_duration_seconds_count", outcome="ok") == 1
    assert total(after["sandbox"], "grpc_server_handled_total", grpc_code="OK") > total(
        before["sandbox"], "grpc_server_handled_total", grpc_code="OK"
    )
    assert total(after["billing"], "grpc_server_handled_total", grpc_code="OK") > total(
        before["billing"], "grpc_server_handled_total", grpc_code="OK"
    )
    assert total(after["billing"], "agentry_billing_checks_total", decision="allowed") >= total(
        before["billing"], "agentry_billing_checks_total", decision="allowed"
    )
    assert total(after["auth"], "grpc_server_handled_total", grpc_code="OK") >= 3  # sign-up, token, API key

    # Logs: JSON lines with the four ids; the run's lines carry its run and account ids.
    account_id = user.get("account_id") or start.json().get("account_id")
    forbidden = {
        "prompt": PROMPT,
        "model output": output.strip()[:40],
        "password": PASSWORD,
        "access token": access_token,
        "refresh token": user.get("refresh_token") or access_token,
        "API key": api_key,
        "internal token": procs.internal_token,
        "LLM key": LLM_KEY,
        "tool output": TOOL_MARKER + "\n",
    }
    run_lines = 0
    for name in ("gateway", *PROCESSES):
        text = (procs.log_dir / f"{name}.log").read_text(errors="replace")
        for what, secret in forbidden.items():
            assert secret not in text, f"{name}.log holds the {what}"
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            record = orjson.loads(line)
            assert {"ts", "level", "logger", "msg", "request_id", "run_id", "account_id", "trace_id"} <= set(record)
            if record["run_id"] == run_id:
                run_lines += 1
                if account_id and name == "worker":
                    assert record["account_id"] == account_id
        json_lines = [ln for ln in text.splitlines() if ln.strip()]
        assert json_lines, f"{name}.log is empty"
        not_json = [
            ln for ln in json_lines if not ln.startswith("{") and not _supervisor_line(ln) and not _grpc_core_line(ln)
        ]
        assert not not_json, f"{name}.log has lines that are not JSON: {not_json[:3]}"
    assert run_lines >= 1  # the worker's "run finished" at least


def _supervisor_line(line: str) -> bool:
    return bool(re.match(r"^(\[supervisor\]|-----)", line))


def _grpc_core_line(line: str) -> bool:
    """A line gRPC's C core wrote to stderr itself (absl's format: `E1130 19:18:12.463890 443
    ev_epoll1_linux.cc:309] ...`), past Python's logging, which cannot make it JSON. One was seen
    once in sandbox.log, most likely from the launcher's fork before the supervisor stopped
    forking (docs/architecture.md, "Logs"); gRPC may write others. The secrets check above still
    covers it."""
    return bool(re.match(r"^[EWIF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w./-]+\.cc:\d+\] ", line))
