"""Stop really stops, promptly, at every point of a run: still queued, while the model streams,
while a shell command runs (the process is gone too), twice, and after the run has ended.

Embedded (one process, SQLite, in-process queue and stream) and split (every service its own
process on PostgreSQL, Redis and RabbitMQ, the fake model in its own process). The worker runs
one run at a time (`worker_concurrency=1`), so a second run waits in the queue behind a long one.
Every stop's latency is printed: POST /stop answered, `run_finished` on the SSE stream, and
GET /agent-run/{id} showing `cancelled`, each measured from sending POST /stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from agentry.fakellm import FakeLLMProcess

pytestmark = pytest.mark.integration

PG_HOST = os.environ.get("AGENTRY_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AGENTRY_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("AGENTRY_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("AGENTRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AGENTRY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

STOP_WITHIN = 1.0  # seconds: the promise under test
MARKER = "stop-marker.txt"
SHELL_COMMAND = f"sleep 60; echo done >> {MARKER}"
SCRIPTS = {
    # About 10 s of model output: a stop always lands while the model is still talking.
    "stop-stream": {"turns": [{"text": " ".join(f"token{i}" for i in range(300))}], "tokens_per_second": 30},
    # A 60 s shell command, then an answer the run never reaches when stopped.
    "stop-shell": [
        {"text": "Running it.", "tool_calls": [{"name": "run_command", "arguments": {"command": SHELL_COMMAND}}]},
        {"text": "The command finished."},
    ],
    "stop-quick": [{"text": "Done already."}],
}
TERMINAL = ("completed", "failed", "cancelled")


# --------------------------------------------------------------------------- the systems


def _require(name: str, host: str, port: int) -> None:
    """As the root conftest's require_server: skip locally, fail under CI, when a server is down."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return
    except OSError:
        pass
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message} (CI=true: a missing server fails the run)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def stop_llm(tmp_path_factory) -> Iterator[str]:
    """The fake model in its own process, so it never waits on the test's event loop."""
    with FakeLLMProcess(
        SCRIPTS, ttft_seconds=0.05, tokens_per_second=None, data_dir=tmp_path_factory.mktemp("llm")
    ) as llm:
        yield llm.base_url


@dataclass
class System:
    mode: str
    gateway_url: str
    data_dir: Path  # the sandboxes' workspaces are under it


@pytest.fixture(scope="module")
def split_stack(stop_llm, tmp_path_factory) -> Iterator[System]:
    """One split stack for the module (a stack costs seconds of CPU to start): one worker
    process running one run at a time. Every test leaves no run active behind it."""
    for name, url in (("Redis", REDIS_URL), ("RabbitMQ", AMQP_URL)):
        parsed = httpx.URL(url)
        _require(name, parsed.host, parsed.port or {"Redis": 6379, "RabbitMQ": 5672}[name])
    _require("PostgreSQL", PG_HOST, PG_PORT)
    from agentry.cli.split import SplitConfig, SplitProcesses, free_port

    unique = f"t{uuid.uuid4().hex[:10]}"
    database = f"agentry_test_{unique}"
    data_dir = tmp_path_factory.mktemp("stop-split")
    queue = f"agentry.runs.{unique}"
    procs = SplitProcesses(
        SplitConfig(
            database_url=f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}",
            redis_url=REDIS_URL,
            amqp_url=AMQP_URL,
            data_dir=data_dir,
            gateway_port=free_port(),
            grpc_ports={name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")},
            llm_api_base=stop_llm,
            queue_name=queue,
            redis_prefix=f"agentry:{unique}:",
            extra_env={
                "AGENTRY_RUNNER_WORKER_CONCURRENCY": "1",
                "AGENTRY_RUNNER_SWEEP_INTERVAL_SECONDS": "1",
                "AGENTRY_RUNNER_DATABASE_POOL_SIZE": "4",
                "AGENTRY_RUNNER_DATABASE_MAX_OVERFLOW": "4",
            },
        )
    )
    procs.start()  # creates the database
    try:
        yield System("split", procs.gateway_url, data_dir)
    finally:
        procs.stop()
        asyncio.run(_cleanup(queue, f"agentry:{unique}:", database))


async def _cleanup(queue: str, redis_prefix: str, database: str) -> None:
    import aio_pika
    import asyncpg
    from redis import asyncio as aioredis

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for name in (queue, f"{queue}.dead"):
            await channel.queue_delete(name)
    redis = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
    conn = await asyncpg.connect(f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["embedded", "split"])
async def system(request, stop_llm, tmp_path) -> AsyncIterator[System]:
    if request.param == "split":
        yield request.getfixturevalue("split_stack")
        return
    from agentry.cli.devstack import start_dev_stack

    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(
            stack,
            data_dir=tmp_path,
            llm_api_base=stop_llm,
            ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
            runner_overrides={"worker_concurrency": 1},
        )
        # The dev stack imports LiteLLM in a background thread; a run's first model call, on the
        # event loop, would wait for that import (and then LiteLLM's first-call setup) with the
        # whole process frozen - seconds in which every request, a stop included, waits or
        # times out (504). Wait for the import off the loop, then make one model call.
        await asyncio.to_thread(importlib.import_module, "litellm")
        async with httpx.AsyncClient(base_url=dev.gateway_url, timeout=60) as client:
            headers = await sign_up(client, "warm-up")
            warm = follow(client, await start_run(client, headers, "stop-quick"), headers)
            await warm.wait_for(lambda s: s.terminal is not None, timeout=60)
        yield System("embedded", dev.gateway_url, tmp_path)


# --------------------------------------------------------------------------- the client


@dataclass
class Follower:
    """Every event of one run's SSE stream as it arrives (reconnecting with Last-Event-ID)."""

    run_id: str
    ids: list[int] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    @property
    def terminal(self) -> dict | None:
        return self.events[-1] if self.events and self.events[-1]["type"] == "run_finished" else None

    @property
    def finished_at(self) -> float | None:
        return self.arrived[-1] if self.terminal is not None else None

    async def wait_for(self, predicate, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self.changed.clear()
                if self.task is not None and self.task.done():
                    self.task.result()
                    assert predicate(self), f"the stream of {self.run_id} ended: {self.events[-3:]}"
                await self.changed.wait()


def follow(client: httpx.AsyncClient, run_id: str, headers: dict) -> Follower:
    seen = Follower(run_id)

    async def read() -> None:
        while seen.terminal is None:
            extra = {"Last-Event-ID": str(seen.ids[-1])} if seen.ids else {}
            try:
                async with client.stream(
                    "GET", f"/api/agent-run/{run_id}/stream", headers={**headers, **extra}
                ) as response:
                    assert response.status_code == 200, response.status_code
                    event_id = data = None
                    async for line in response.aiter_lines():
                        if line.startswith("id:"):
                            event_id = int(line[3:].strip())
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "" and data is not None:
                            seen.arrived.append(time.monotonic())
                            seen.ids.append(event_id)
                            seen.events.append(orjson.loads(data))
                            seen.changed.set()
                            event_id = data = None
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        seen.changed.set()

    seen.task = asyncio.create_task(read())
    seen.task.add_done_callback(lambda _: seen.changed.set())
    return seen


@dataclass
class StopTiming:
    answered: float  # POST /stop answered
    streamed: float  # run_finished arrived on the stream
    observed: float  # GET /agent-run/{id} first showed `cancelled`
    answer: dict

    def line(self, label: str) -> str:
        return (
            f"stop latency {label}: POST answered {self.answered * 1000:.1f} ms, run_finished on the stream "
            f"{self.streamed * 1000:.1f} ms, GET cancelled {self.observed * 1000:.1f} ms "
            f"(answer {self.answer['status']})"
        )


async def stop_and_time(client: httpx.AsyncClient, run_id: str, headers: dict, seen: Follower) -> StopTiming:
    """POSTs /stop, then polls GET until it shows `cancelled` while the follower waits for
    run_finished; all three times from sending the POST."""
    t0 = time.monotonic()
    answer = await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
    answered = time.monotonic() - t0
    assert answer.status_code == 200, (
        f"POST /stop of {run_id} answered {answer.status_code} after {answered:.1f} s: {answer.text}"
    )
    observed = status = None
    try:
        async with asyncio.timeout(10):
            while observed is None:
                status = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()["status"]
                if status == "cancelled":
                    observed = time.monotonic() - t0
                else:
                    assert status == "cancelling", status
                    await asyncio.sleep(0.005)
        await seen.wait_for(lambda s: s.terminal is not None, timeout=10)
    except TimeoutError:
        pytest.fail(
            f"run {run_id} not stopped 10 s after POST /stop answered {answer.json()} in "
            f"{answered * 1000:.0f} ms: GET says {status}, the stream has {len(seen.events)} events, "
            f"last {seen.events[-1:]}",
            pytrace=False,
        )
    return StopTiming(answered, seen.finished_at - t0, observed, answer.json())


async def sign_up(client: httpx.AsyncClient, label: str) -> dict:
    email, password = f"{label}-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery staple"
    signup = await client.post("/api/auth/signup", json={"email": email, "password": password})
    assert signup.status_code == 201, signup.text
    token = await client.post("/api/auth/token", json={"email": email, "password": password})
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def start_run(client: httpx.AsyncClient, headers: dict, model: str) -> str:
    thread = await client.post("/api/threads", json={}, headers=headers)
    assert thread.status_code == 201, thread.text
    started = await client.post(
        f"/api/threads/{thread.json()['thread_id']}/agent/start",
        headers=headers,
        json={"model_name": f"openai/{model}", "prompt": "go"},
    )
    assert started.status_code == 202, started.text
    return started.json()["agent_run_id"]


async def end_all(client: httpx.AsyncClient, headers: dict, run_ids: list[str]) -> None:
    """Leaves nothing running for the next test (the worker runs one run at a time)."""
    for run_id in run_ids:
        await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
    async with asyncio.timeout(30):
        for run_id in run_ids:
            while (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()["status"] not in TERMINAL:
                await asyncio.sleep(0.05)


def assert_one_ending(seen: Follower, reason: str) -> None:
    assert seen.ids == list(range(1, len(seen.ids) + 1)), seen.ids
    assert [e["type"] for e in seen.events].count("run_finished") == 1
    assert seen.terminal is not None and seen.terminal["reason"] == reason, seen.events[-1]


def sandboxed(data_dir: Path, argv: list[bytes]) -> list[int]:
    """Pids of processes running exactly `argv` for a sandbox under `data_dir` (this test's
    sandboxes, not another engineer's `sleep 60`): the process, or one of its ancestors, works in
    a workspace under `data_dir` (no isolation) or names it on its command line (the bubblewrap
    launcher binds it; inside bwrap the cwd is the mount point, not the host path)."""
    wanted = b"\0".join(argv) + b"\0"
    root = str(data_dir.resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() != wanted:
                    continue
        except OSError:
            continue
        if _belongs(int(entry), root):
            found.append(int(entry))
    return found


def _belongs(pid: int, root: str, depth: int = 6) -> bool:
    for _ in range(depth):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(root):
                return True
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if root.encode() in f.read():
                    return True
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])  # the parent
        except (OSError, ValueError):
            return False
        if pid <= 1:
            return False
    return False


def shell_processes(data_dir: Path) -> list[int]:
    return sandboxed(data_dir, [b"sleep", b"60"]) + sandboxed(data_dir, [b"/bin/sh", b"-c", SHELL_COMMAND.encode()])


def report(line: str) -> None:
    print(line)  # shown with -s or -rP


# --------------------------------------------------------------------------- the tests


async def test_stop_a_queued_run_cancels_it_at_once(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        headers = await sign_up(client, f"queued-{system.mode}")
        busy = await start_run(client, headers, "stop-stream")  # holds the worker's only slot
        ahead = follow(client, busy, headers)
        try:
            await ahead.wait_for(lambda s: any(e["type"] == "text_delta" for e in s.events), timeout=30)
            waiting = await start_run(client, headers, "stop-quick")
            await asyncio.sleep(0.3)  # would be picked up by now if the worker had room
            assert (await client.get(f"/api/agent-run/{waiting}", headers=headers)).json()["status"] == "queued"
            seen = follow(client, waiting, headers)
            timing = await stop_and_time(client, waiting, headers, seen)
            report(timing.line(f"[{system.mode}] queued run"))
            assert timing.answer["status"] == "cancelled"  # a queued run is cancelled on the spot
            assert timing.streamed < STOP_WITHIN and timing.observed < STOP_WITHIN, timing
            assert_one_ending(seen, "cancelled")
            assert [e["type"] for e in seen.events] == ["run_finished"]  # it never ran
            # The long run is untouched, and once it ends the worker never runs the stopped one.
            assert ahead.terminal is None
            await end_all(client, headers, [busy])
            await asyncio.sleep(1.0)
            run = (await client.get(f"/api/agent-run/{waiting}", headers=headers)).json()
            assert run["status"] == "cancelled" and run["started_at"] is None, run
        finally:
            await end_all(client, headers, [busy])


async def test_stop_during_the_model_stream(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        headers = await sign_up(client, f"stream-{system.mode}")
        run_id = await start_run(client, headers, "stop-stream")
        try:
            seen = follow(client, run_id, headers)
            await seen.wait_for(lambda s: sum(e["type"] == "text_delta" for e in s.events) >= 5, timeout=30)
            timing = await stop_and_time(client, run_id, headers, seen)
            report(timing.line(f"[{system.mode}] during the model stream"))
            assert timing.answer["status"] in ("cancelling", "cancelled")
            assert timing.streamed < STOP_WITHIN and timing.observed < STOP_WITHIN, timing
            assert_one_ending(seen, "cancelled")
            text = "".join(e.get("text", "") for e in seen.events if e["type"] == "text_delta")
            assert "token299" not in text  # the model was cut off, not waited for
        finally:
            await end_all(client, headers, [run_id])


async def test_stop_during_a_60s_shell_command_kills_it(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        headers = await sign_up(client, f"shell-{system.mode}")
        run_id = await start_run(client, headers, "stop-shell")
        try:
            seen = follow(client, run_id, headers)
            await seen.wait_for(lambda s: any(e["type"] == "tool_call_started" for e in s.events), timeout=30)
            async with asyncio.timeout(15):  # the sandbox may be created first
                while not sandboxed(system.data_dir, [b"sleep", b"60"]):
                    await asyncio.sleep(0.05)
            before = shell_processes(system.data_dir)
            timing = await stop_and_time(client, run_id, headers, seen)
            gone_at = None
            async with asyncio.timeout(5):
                while shell_processes(system.data_dir):
                    await asyncio.sleep(0.01)
            gone_at = time.monotonic()
            killed_after = gone_at - (seen.finished_at - timing.streamed)
            report(
                timing.line(f"[{system.mode}] during a 60 s shell command")
                + f"; shell processes {before} gone {killed_after * 1000:.1f} ms after POST"
            )
            assert timing.streamed < STOP_WITHIN and timing.observed < STOP_WITHIN, timing
            assert killed_after < STOP_WITHIN, f"the command outlived the stop by {killed_after:.2f}s"
            assert_one_ending(seen, "cancelled")
            finished = [e for e in seen.events if e["type"] == "tool_call_finished"]
            assert all(e["name"] == "run_command" for e in finished)
            assert "The command finished." not in "".join(
                e.get("text", "") for e in seen.events if e["type"] == "text_delta"
            )
            await asyncio.sleep(0.5)
            assert not shell_processes(system.data_dir)  # and nothing came back
            assert not list(system.data_dir.rglob(MARKER))
        finally:
            await end_all(client, headers, [run_id])


async def test_stop_is_idempotent(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        headers = await sign_up(client, f"twice-{system.mode}")
        run_id = await start_run(client, headers, "stop-stream")
        try:
            seen = follow(client, run_id, headers)
            await seen.wait_for(lambda s: any(e["type"] == "text_delta" for e in s.events), timeout=30)
            # Two at once, then one more while it is stopping.
            first, second = await asyncio.gather(
                client.post(f"/api/agent-run/{run_id}/stop", headers=headers),
                client.post(f"/api/agent-run/{run_id}/stop", headers=headers),
            )
            third = await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
            for answer in (first, second, third):
                assert answer.status_code == 200, answer.text
                assert answer.json()["agent_run_id"] == run_id
                assert answer.json()["status"] in ("cancelling", "cancelled"), answer.json()
            await seen.wait_for(lambda s: s.terminal is not None, timeout=STOP_WITHIN + 2)
            # Once it has ended every stop answers the same final state, and writes nothing.
            after = [await client.post(f"/api/agent-run/{run_id}/stop", headers=headers) for _ in range(2)]
            assert [(a.status_code, a.json()) for a in after] == [
                (200, {"agent_run_id": run_id, "status": "cancelled"})
            ] * 2
            assert_one_ending(seen, "cancelled")
            again = follow(client, run_id, headers)  # a replay from the start: still one ending
            await again.wait_for(lambda s: s.terminal is not None, timeout=10)
            assert again.ids == seen.ids
            assert_one_ending(again, "cancelled")
        finally:
            await end_all(client, headers, [run_id])


async def test_stop_of_a_finished_run_answers_its_final_state(system):
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        headers = await sign_up(client, f"done-{system.mode}")
        run_id = await start_run(client, headers, "stop-quick")
        seen = follow(client, run_id, headers)
        await seen.wait_for(lambda s: s.terminal is not None, timeout=30)
        assert_one_ending(seen, "completed")
        for _ in range(2):
            answer = await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"agent_run_id": run_id, "status": "completed"}
        run = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()
        assert run["status"] == "completed" and run["error"] is None
        again = follow(client, run_id, headers)
        await again.wait_for(lambda s: s.terminal is not None, timeout=10)
        assert again.ids == seen.ids
        assert_one_ending(again, "completed")
        # A stranger's stop of it is a 404, not an answer about someone else's run.
        other = await sign_up(client, f"stranger-{system.mode}")
        assert (await client.post(f"/api/agent-run/{run_id}/stop", headers=other)).status_code == 404


# A cancel that lands as an awaited call completes can be swallowed (Python 3.11's wait_for, which
# redis-py's reads go through): agentpress keeps cancelling the step until it has ended.
async def test_stop_racing_the_pickup(system):
    """Stops sent 0-300 ms after the start: before, during and just after the worker claims the
    run. Whichever side wins, the run ends `cancelled`, once, within the second."""
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
        headers = await sign_up(client, f"race-{system.mode}")
        lines = []
        for delay in (0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3):
            run_id = await start_run(client, headers, "stop-stream")
            try:
                seen = follow(client, run_id, headers)
                await asyncio.sleep(delay)
                print(f"stop {delay * 1000:g} ms after the start of {run_id}")
                timing = await stop_and_time(client, run_id, headers, seen)
                lines.append(f"{delay * 1000:g} ms: {timing.answer['status']} {timing.streamed * 1000:.0f} ms")
                assert timing.streamed < STOP_WITHIN and timing.observed < STOP_WITHIN, (delay, timing)
                assert_one_ending(seen, "cancelled")
            finally:
                await end_all(client, headers, [run_id])
        report(
            f"stop latency [{system.mode}] racing the pickup (delay after start: answer, run_finished): "
            + "; ".join(lines)
        )
