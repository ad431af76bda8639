"""Split mode heals itself: a service process that is killed comes back and runs keep working."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from agentry.cli.split import MIGRATED, SplitConfig, SplitProcesses, free_port

from .conftest import TOOL_MARKER

pytestmark = pytest.mark.integration


@pytest.fixture
async def split(
    request, fake_llm, tmp_path, postgres_url, redis_url, amqp_url, unique_name
) -> AsyncIterator[SplitProcesses]:
    ports = {name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")}
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
            workers=2,
        )
    )
    await asyncio.to_thread(procs.start)
    try:
        yield procs
    finally:
        await asyncio.to_thread(procs.stop)
        import aio_pika

        connection = await aio_pika.connect(amqp_url)
        async with connection:
            await (await connection.channel()).queue_delete(f"agentry.runs.{unique_name}")


async def _signed_in(client: httpx.AsyncClient) -> dict:
    credentials = {"email": "healer@example.com", "password": "correct horse battery staple"}
    assert (await client.post("/api/auth/signup", json=credentials)).status_code == 201
    token = (await client.post("/api/auth/token", json=credentials)).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def _run_to_the_end(client: httpx.AsyncClient, headers: dict) -> list[dict]:
    thread_id = (await client.post("/api/threads", json={}, headers=headers)).json()["thread_id"]
    start = await client.post(
        f"/api/threads/{thread_id}/agent/start",
        json={"model_name": "openai/it-script", "prompt": "Run the check."},
        headers=headers,
    )
    assert start.status_code == 202, start.text
    run_id = start.json()["agent_run_id"]
    events = []
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(orjson.loads(line[5:]))
    run = await client.get(f"/api/agent-run/{run_id}", headers=headers)
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "completed", (run.json(), events[-1])
    return events


async def test_the_launcher_migrates_every_service_first_so_none_runs_alembic(split: SplitProcesses) -> None:
    # As deploy/k8s's migration Jobs: each service's tables are migrated by a short-lived
    # `python -m agentry.<service> migrate`; the services then start at head and skip Alembic.
    for name in MIGRATED:
        assert "Running upgrade" in (split.log_dir / f"{name}-migrate.log").read_text(), name
    for name in split.procs:
        assert "Running upgrade" not in (split.log_dir / f"{name}.log").read_text(), name


async def test_a_failing_migration_stops_the_start_and_names_its_log(tmp_path, postgres_url) -> None:
    url = postgres_url.replace("://postgres@", "://no_such_role@")
    procs = SplitProcesses(
        SplitConfig(database_url=url, redis_url="redis://127.0.0.1:1", amqp_url="amqp://127.0.0.1:1", data_dir=tmp_path)
    )
    procs.log_dir.mkdir(parents=True)
    with pytest.raises(RuntimeError, match=r"auth's migrations failed \(exit 1\); see .*auth-migrate\.log"):
        await asyncio.to_thread(procs.migrate, 60.0)
    assert "no_such_role" in (procs.log_dir / "auth-migrate.log").read_text()


async def test_killed_services_come_back_and_a_later_run_completes(split: SplitProcesses) -> None:
    assert sorted(split.procs) == ["auth", "billing", "gateway", "runner", "sandbox", "worker", "worker-2"]
    assert split.ports["worker-2"] != split.ports["worker"]
    untouched = {name: split.supervisor.pid(name) for name in ("auth", "runner", "gateway", "worker", "worker-2")}

    async with httpx.AsyncClient(base_url=split.gateway_url, timeout=60) as client:
        headers = await _signed_in(client)

        killed = {name: split.kill(name) for name in ("sandbox", "billing")}
        back_in = await asyncio.to_thread(split.wait_healthy, ["sandbox", "billing"], timeout=60)

        log = (split.log_dir / "supervisor.log").read_text()
        for name, old_pid in killed.items():
            assert split.supervisor.pid(name) not in (None, old_pid)
            assert split.supervisor.restarts(name) == 1, log
        assert {name: split.supervisor.pid(name) for name in untouched} == untouched, f"the rest kept running: {log}"
        assert back_in < 30
        assert f"sandbox (pid {killed['sandbox']}) was killed by SIGKILL" in log
        assert "billing restarted" in log

        events = await _run_to_the_end(client, headers)
        assert events[-1]["type"] == "run_finished" and events[-1]["reason"] == "completed"
        finished = [e for e in events if e["type"] == "tool_call_finished"]
        assert TOOL_MARKER in finished[0]["output"], "the restarted sandbox ran the command"


async def test_a_run_completes_on_the_other_worker_while_one_is_down(split: SplitProcesses) -> None:
    async with httpx.AsyncClient(base_url=split.gateway_url, timeout=60) as client:
        headers = await _signed_in(client)
        split.kill("worker")
        events = await _run_to_the_end(client, headers)
        assert events[-1]["reason"] == "completed"
        await asyncio.to_thread(split.wait_healthy, "worker", timeout=60)
        assert split.supervisor.restarts("worker") == 1
        events = await _run_to_the_end(client, headers)
        assert events[-1]["reason"] == "completed"
