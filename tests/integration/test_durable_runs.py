"""Runs survive their workers: SIGKILL chaos, rolling restarts and overload, in split mode on the
real PostgreSQL, Redis and RabbitMQ (every service its own process, supervised like Kubernetes
would: a process that dies is restarted)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from agentry.api.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc
from agentry.fakellm import FakeLLMProcess
from agentry.servicekit import open_channel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.rabbitmq,
    pytest.mark.serial,
]

SIDE_EFFECT_FILE = "side-effects.txt"


def _tool_turns(seconds: int, answer: str) -> list[dict]:
    command = f"echo once >> {SIDE_EFFECT_FILE} && sleep {seconds}"
    return [
        {"text": "Working.", "tool_calls": [{"name": "run_command", "arguments": {"command": command}}]},
        {"text": answer},
    ]


SCRIPTS = {
    # One shell call with a side effect that must happen at most once, then the answer.
    "durable-tool": _tool_turns(1, "Recorded."),
    # A longer run (about 4 s): a 3 s command between two short replies.
    "durable-slow": _tool_turns(3, "Done working."),
    # No tools: the overload test measures the platform, not the sandbox.
    "durable-chat": [{"text": "Hello from a busy platform, " + " ".join(["word"] * 10)}],
}
LEASE_SECONDS = 5.0


@pytest.fixture(scope="module")
def durable_llm(tmp_path_factory) -> Iterator[str]:
    """The fake model in its own process, so it never waits on the test's event loop."""
    with FakeLLMProcess(
        SCRIPTS, ttft_seconds=0.05, tokens_per_second=400, data_dir=tmp_path_factory.mktemp("llm")
    ) as llm:
        yield llm.base_url


@dataclass
class Stack:
    procs: object
    gateway_url: str
    sandbox_target: str
    internal_token: str
    workers: list[str]


@pytest.fixture
async def stack(request, durable_llm, tmp_path, postgres_url, redis_url, amqp_url, unique_name) -> AsyncIterator[Stack]:
    from agentry.cli.split import SplitConfig, SplitProcesses, free_port
    from agentry.cli.supervisor import RestartPolicy

    marker = request.node.get_closest_marker("stack")
    options = dict(marker.kwargs) if marker else {}
    ports = {name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")}
    env = {
        "AGENTRY_RUNNER_LEASE_SECONDS": str(LEASE_SECONDS),
        "AGENTRY_RUNNER_SWEEP_INTERVAL_SECONDS": "1",
        "AGENTRY_RUNNER_WORKER_CONCURRENCY": str(options.get("concurrency", 16)),
        "AGENTRY_RUNNER_GRACE_SECONDS": str(options.get("grace", 5)),
        "AGENTRY_BILLING_INITIAL_CREDIT_MICROS": str(10**9),
        "AGENTRY_RUNNER_MAX_ACTIVE_RUNS_PER_ACCOUNT": "0",
        # The overload tests measure the platform under 1,000 starts, not the gateway's rate limits.
        "AGENTRY_GATEWAY_RUN_STARTS_PER_ACCOUNT": "1000000",
        # Every process of the stack together stays well under PostgreSQL's 100 connections.
        "AGENTRY_RUNNER_DATABASE_POOL_SIZE": "4",
        "AGENTRY_RUNNER_DATABASE_MAX_OVERFLOW": "4",
        "AGENTRY_RUNNER_PROCESSES": str(options.get("processes", 1)),
        **options.get("env", {}),
    }
    procs = SplitProcesses(
        SplitConfig(
            database_url=postgres_url,
            redis_url=redis_url,
            amqp_url=amqp_url,
            data_dir=tmp_path,
            gateway_port=free_port(),
            grpc_ports=ports,
            llm_api_base=durable_llm,
            queue_name=f"agentry.runs.{unique_name}",
            redis_prefix=f"agentry:{unique_name}:",
            extra_env=env,
            workers=options.get("workers", 3),
            restart_policy=RestartPolicy(initial_delay=0.2, max_delay=1.0, reset_after=5.0),
        )
    )
    await asyncio.to_thread(procs.start)
    try:
        yield Stack(
            procs, procs.gateway_url, f"127.0.0.1:{ports['sandbox']}", procs.internal_token, list(procs.worker_names)
        )
    finally:
        await asyncio.to_thread(procs.stop)
        await _delete_queues(amqp_url, f"agentry.runs.{unique_name}")


async def _delete_queues(amqp_url: str, name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in (name, f"{name}.dead"):
            await channel.queue_delete(queue)


@dataclass
class Followed:
    """What one SSE client saw of one run, reconnecting with Last-Event-ID as needed."""

    run_id: str
    ids: list[int] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    reconnects: int = 0
    arrived: list[float] = field(default_factory=list)

    @property
    def terminal(self) -> dict | None:
        return self.events[-1] if self.events and self.events[-1]["type"] == "run_finished" else None


async def follow(client: httpx.AsyncClient, run_id: str, headers: dict, *, deadline: float) -> Followed:
    seen = Followed(run_id)
    while seen.terminal is None and time.monotonic() < deadline:
        extra = {"Last-Event-ID": str(seen.ids[-1])} if seen.ids else {}
        try:
            async with client.stream(
                "GET", f"/api/agent-run/{run_id}/stream", headers={**headers, **extra}
            ) as response:
                if response.status_code != 200:
                    raise httpx.HTTPStatusError("stream refused", request=response.request, response=response)
                event_id = data = None
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        event_id = int(line[3:].strip())
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line == "" and data is not None:
                        seen.ids.append(event_id)
                        seen.events.append(orjson.loads(data))
                        seen.arrived.append(time.monotonic())
                        event_id = data = None
        except (httpx.HTTPError, ValueError):
            await asyncio.sleep(0.2)
        if seen.terminal is None:
            seen.reconnects += 1
    return seen


async def get(client: httpx.AsyncClient, url: str, **kwargs) -> httpx.Response:
    for attempt in range(5):
        try:
            return await client.get(url, **kwargs)
        except httpx.TransportError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def post(client: httpx.AsyncClient, url: str, **kwargs) -> httpx.Response:
    """POST as a robust client does: a connection the server closed under a keep-alive race
    ("disconnected without sending a response") is retried; starts carry an Idempotency-Key, so
    a retry never makes a second run."""
    for attempt in range(5):
        try:
            return await client.post(url, **kwargs)
        except httpx.TransportError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def sign_up(client: httpx.AsyncClient, email: str) -> dict:
    password = "correct horse battery staple"
    signup = await client.post("/api/auth/signup", json={"email": email, "password": password})
    assert signup.status_code == 201, signup.text
    token = await client.post("/api/auth/token", json={"email": email, "password": password})
    return {**signup.json(), "headers": {"Authorization": f"Bearer {token.json()['access_token']}"}}


async def start_run(client: httpx.AsyncClient, user: dict, i: int, model: str) -> tuple[str, str]:
    """(run_id, project_id) of a run on a thread of its own (so its own sandbox)."""
    created = await post(client, "/api/threads", headers=user["headers"], json={})
    assert created.status_code == 201, created.text
    thread = created.json()
    started = await post(
        client,
        f"/api/threads/{thread['thread_id']}/agent/start",
        headers={**user["headers"], "Idempotency-Key": f"start-{thread['thread_id']}"},
        json={"model_name": f"openai/{model}", "prompt": f"run {i}"},
    )
    assert started.status_code == 202, started.text
    return started.json()["agent_run_id"], thread["project_id"]


async def start_runs(client: httpx.AsyncClient, user: dict, n: int, model: str) -> list[tuple[str, str]]:
    """(run_id, project_id) of n runs, each on its own thread (so its own sandbox)."""
    limit = asyncio.Semaphore(20)

    async def bounded(i: int) -> tuple[str, str]:
        async with limit:
            return await start_run(client, user, i, model)

    return await asyncio.gather(*(bounded(i) for i in range(n)))


async def side_effects(stack: Stack, account_id: str, project_ids: list[str]) -> list[int]:
    """How many times each run's shell command ran, read from its sandbox."""
    async with open_channel(stack.sandbox_target, stack.internal_token) as channel:
        sandbox = sandbox_pb2_grpc.SandboxServiceStub(channel)
        counts = []
        for project_id in project_ids:
            box = await sandbox.CreateSandbox(
                sandbox_pb2.CreateSandboxRequest(account_id=account_id, project_id=project_id)
            )
            try:
                reply = await sandbox.ReadFile(
                    sandbox_pb2.ReadFileRequest(account_id=account_id, sandbox_id=box.sandbox_id, path=SIDE_EFFECT_FILE)
                )
                counts.append(reply.content.decode().count("once"))
            except Exception:  # noqa: BLE001 - no file: the command never ran
                counts.append(0)
        return counts


def assert_continuous(seen: Followed) -> None:
    """Every event once, in order: ids 1..n with no gap and no duplicate, one terminal event last."""
    assert seen.ids == list(range(1, len(seen.ids) + 1)), (seen.run_id, seen.ids)
    assert [e["seq"] for e in seen.events] == seen.ids
    assert [e["type"] for e in seen.events].count("run_finished") == 1


def worker_processes(stack: Stack) -> list[int]:
    """The prefork children of the (first) worker service, oldest first."""
    parent = stack.procs.supervisor.pid(stack.workers[0])
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            children.append((int(fields[19]), int(entry)))  # start time, pid
    return [pid for _, pid in sorted(children)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# Kills every 3 s are far harsher than any production fault rate, and on a busy 2-core machine a
# run is in flight for several seconds: allow a run five attempts here (the default is three).
@pytest.mark.stack(workers=1, processes=3, env={"AGENTRY_RUNNER_MAX_ATTEMPTS": "5"})
async def test_chaos_sigkill_a_worker_every_3s_loses_no_run_and_repeats_no_side_effect(stack: Stack) -> None:
    n = 200
    kills: list[float] = []
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=httpx.Timeout(60, read=120)) as client:
        user = await sign_up(client, "chaos@example.com")
        deadline = time.monotonic() + 420
        runs: list[tuple[str, str]] = []
        followers: list[asyncio.Task] = []

        async def killer() -> None:
            # Three worker processes (forked by one prefork parent, which replaces a dead one
            # at once); every ~3 s the oldest is SIGKILLed.
            while True:
                await asyncio.sleep(3)
                children = worker_processes(stack)
                if children:
                    os.kill(children[0], signal.SIGKILL)
                    kills.append(time.monotonic())

        killing = asyncio.create_task(killer())
        try:
            # One start every 50 ms, each run followed from its start: runs are in flight for the
            # ~10 s of starts and after, whatever the host's speed, so the kills land among them
            # (started all at once, 200 runs could end on a fast host before the first kill).
            began = time.monotonic()
            for i in range(n):
                await asyncio.sleep(max(0.0, began + i * 0.05 - time.monotonic()))
                run_id, project_id = await start_run(client, user, i, "durable-tool")
                runs.append((run_id, project_id))
                followers.append(asyncio.create_task(follow(client, run_id, user["headers"], deadline=deadline)))
            seen = await asyncio.gather(*followers)
        finally:
            killing.cancel()
        finals = [(await get(client, f"/api/agent-run/{run_id}", headers=user["headers"])).json() for run_id, _ in runs]

    counts = await side_effects(stack, user["account_id"], [p for _, p in runs])
    statuses = [f["status"] for f in finals]
    resumed = [s for s in seen if any(e["type"] == "run_resumed" for e in s.events)]
    # How long each resumed run's stream stalled: from its last event before run_resumed (at
    # most the 1 s command earlier than the kill) to run_resumed. An upper bound on the time
    # from the kill to streaming again.
    stalls = [
        at - s.arrived[i - 1]
        for s in resumed
        for i, (event, at) in enumerate(zip(s.events, s.arrived))
        if event["type"] == "run_resumed" and i > 0
    ]
    print(
        f"\nchaos: {n} runs, {len(kills)} SIGKILLs, {len(resumed)} resumed "
        f"({sum(len([e for e in s.events if e['type'] == 'run_resumed']) for s in resumed)} resumptions), "
        f"{statuses.count('completed')} completed, {statuses.count('failed')} failed, "
        f"{sum(s.reconnects for s in seen)} SSE reconnects; stream stalled by a kill: "
        f"p50 {percentile(stalls, 0.5):.2f}s p99 {percentile(stalls, 0.99):.2f}s max "
        f"{max(stalls, default=float('nan')):.2f}s (lease {LEASE_SECONDS:g}s)"
    )

    assert len(kills) >= 3
    assert all(s.terminal is not None for s in seen), [s.run_id for s in seen if s.terminal is None]
    assert all(status in ("completed", "failed", "cancelled") for status in statuses)
    assert statuses.count("completed") >= 190, [f for f in finals if f["status"] != "completed"][:5]
    for s in seen:
        assert_continuous(s)
    assert max(counts) <= 1, counts  # no side effect happened twice
    assert resumed, "no run was resumed: the kills missed every run"


@pytest.mark.stack(workers=2, processes=1, grace=5)
async def test_rolling_restart_of_every_worker_fails_or_cancels_no_run(stack: Stack) -> None:
    n = 50
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=httpx.Timeout(60, read=120)) as client:
        user = await sign_up(client, "rolling@example.com")
        runs = await start_runs(client, user, n, "durable-slow")
        deadline = time.monotonic() + 300
        followers = [
            asyncio.create_task(follow(client, run_id, user["headers"], deadline=deadline)) for run_id, _ in runs
        ]
        await asyncio.sleep(1.5)  # runs are in their 3 s command
        restarted = []
        for name in stack.workers:  # one at a time, as a Deployment's rolling update does
            started = time.monotonic()
            await asyncio.to_thread(stack.procs.supervisor.kill, name, signal.SIGTERM, wait=30)
            await asyncio.to_thread(stack.procs.supervisor.wait_healthy, [name], timeout=60)
            restarted.append(time.monotonic() - started)
        seen = await asyncio.gather(*followers)
        finals = [(await get(client, f"/api/agent-run/{run_id}", headers=user["headers"])).json() for run_id, _ in runs]
    counts = await side_effects(stack, user["account_id"], [p for _, p in runs])

    statuses = [f["status"] for f in finals]
    handed_back = [
        s for s in seen if any(e["type"] == "run_resumed" and e["reason"] == "handed_back" for e in s.events)
    ]
    print(
        f"\nrolling restart: {n} runs, workers replaced in {', '.join(f'{t:.1f}s' for t in restarted)}; "
        f"{statuses.count('completed')} completed, {len(handed_back)} handed back and resumed"
    )
    assert statuses == ["completed"] * n, [f for f in finals if f["status"] != "completed"][:5]
    for s in seen:
        assert_continuous(s)
    assert max(counts) <= 1, counts


@pytest.mark.stack(workers=1, processes=1, concurrency=400)
async def test_overload_1000_runs_at_once_with_concurrency_above_the_pool_all_end(stack: Stack) -> None:
    """1,000 runs started at once; the worker may run 400 at a time on 8 database connections.
    Every run completes (or is refused up front with 429/503 and Retry-After); none fails for
    lack of a connection, none stays queued or running, every stream ends."""
    n = 1000
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=httpx.Timeout(120, read=300), limits=httpx.Limits(max_connections=300)
    ) as client:
        user = await sign_up(client, "overload@example.com")
        headers = user["headers"]
        limit = asyncio.Semaphore(100)
        refused: list[httpx.Response] = []
        started_at = time.monotonic()

        async def start(i: int) -> str | None:
            async with limit:
                created = await post(client, "/api/threads", headers=headers, json={})
                assert created.status_code == 201, created.text
                thread_id = created.json()["thread_id"]
                response = await post(
                    client,
                    f"/api/threads/{thread_id}/agent/start",
                    headers={**headers, "Idempotency-Key": f"start-{thread_id}"},
                    json={"model_name": "openai/durable-chat", "prompt": f"hello {i}"},
                )
            if response.status_code in (429, 503):
                assert "retry-after" in response.headers, response.text
                refused.append(response)
                return None
            assert response.status_code == 202, response.text
            return response.json()["agent_run_id"]

        run_ids = [r for r in await asyncio.gather(*(start(i) for i in range(n))) if r is not None]
        accepted_in = time.monotonic() - started_at
        readers = asyncio.Semaphore(200)
        deadline = time.monotonic() + 600

        async def read(run_id: str) -> Followed:
            async with readers:
                return await follow(client, run_id, headers, deadline=deadline)

        seen = await asyncio.gather(*(read(r) for r in run_ids))
        finished_in = time.monotonic() - started_at
        finals = [(await get(client, f"/api/agent-run/{r}", headers=headers)).json() for r in run_ids]

    statuses = [f["status"] for f in finals]
    print(
        f"\noverload: {n} starts in {accepted_in:.1f}s ({len(refused)} refused up front), all streams ended "
        f"after {finished_in:.1f}s; {statuses.count('completed')} completed, "
        f"{sum(s.reconnects for s in seen)} SSE reconnects"
    )
    assert len(run_ids) + len(refused) == n
    assert statuses == ["completed"] * len(run_ids), [f for f in finals if f["status"] != "completed"][:5]
    for s in seen:
        assert s.terminal is not None and s.terminal["reason"] == "completed"
        assert_continuous(s)
