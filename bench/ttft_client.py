"""ttft.py's client: users, threads and runs over HTTP, timing each hop of a run's first token."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass, field

import httpx
import orjson
from ttft_model import FakeLLMProcess, model_for
from ttft_systems import System, cpu_seconds

now = time.monotonic


@dataclass
class Slot:
    """One user thread: a thread allows one active run at a time."""

    thread_id: str
    headers: dict[str, str]


@dataclass
class Sample:
    ttft_ms: float  # configured model TTFT
    t0: float  # start request sent
    start_done: float  # start request answered
    stream_open: float  # stream response headers received
    first_event: float  # first SSE event (run_started)
    first_token: float  # first text_delta
    finished: float  # run_finished received
    llm_arrived: float | None = None
    llm_first: float | None = None

    @property
    def ttft(self) -> float:
        return (self.first_token - self.t0) * 1000

    @property
    def overhead(self) -> float:
        return self.ttft - self.ttft_ms


async def make_user(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    password = "benchmark password 1234"
    signup = await client.post("/api/auth/signup", json={"email": email, "password": password})
    signup.raise_for_status()
    token = await client.post("/api/auth/token", json={"email": email, "password": password})
    token.raise_for_status()
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def make_threads(client: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[Slot]:
    """Fresh, empty threads, one per run: every run is a conversation's first turn, and its
    prompt does not grow with the number of runs measured before it."""
    gate = asyncio.Semaphore(8)

    async def one(i: int) -> Slot:
        async with gate:
            thread = await client.post("/api/threads", json={"name": f"bench {i}"}, headers=headers)
            thread.raise_for_status()
            return Slot(thread.json()["thread_id"], headers)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def one_run(client: httpx.AsyncClient, slot: Slot, ttft_ms: float, tag: str, started: list[str]) -> Sample:
    t0 = now()
    start = await client.post(
        f"/api/threads/{slot.thread_id}/agent/start",
        json={"model_name": f"openai/{model_for(ttft_ms)}", "prompt": f"bench {tag}"},
        headers=slot.headers,
    )
    start_done = now()
    if start.status_code != 202:
        raise RuntimeError(f"start answered {start.status_code}: {start.text[:200]}")
    run_id = start.json()["agent_run_id"]
    started.append(run_id)
    first_event = first_token = None
    async with client.stream("GET", f"/api/agent-run/{run_id}/stream", headers=slot.headers) as response:
        stream_open = now()
        if response.status_code != 200:
            raise RuntimeError(f"stream answered {response.status_code}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            seen = now()
            if first_event is None:
                first_event = seen
            event = orjson.loads(line[5:])
            if first_token is None and event["type"] == "text_delta":
                first_token = seen
            if event["type"] == "run_finished":
                if event.get("reason") != "completed":
                    raise RuntimeError(f"run {run_id} ended: {event}")
                break
        else:
            raise RuntimeError(f"stream of run {run_id} ended without run_finished")
    if first_token is None:
        raise RuntimeError(f"run {run_id} streamed no text_delta")
    return Sample(ttft_ms, t0, start_done, stream_open, first_event, first_token, now())


@dataclass
class Phase:
    mode: str
    ttft_ms: float
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds during the phase

    @property
    def runs_per_second(self) -> float:
        return len(self.samples) / self.wall_seconds if self.wall_seconds else 0.0


async def run_phase(
    client: httpx.AsyncClient,
    system: System,
    llm: FakeLLMProcess,
    headers: dict[str, str],
    *,
    ttft_ms: float,
    runs: int,
    concurrency: int,
    run_timeout: float,
    max_seconds: float,
    warmup: bool = False,
) -> Phase:
    phase = Phase(system.mode, ttft_ms, concurrency)
    issued = 0
    deadline = now() + max_seconds
    tags: dict[str, Sample] = {}
    max_errors = max(3, runs // 10)
    fresh = await make_threads(client, headers, runs)  # outside the timed section

    async def worker() -> None:
        nonlocal issued
        while issued < runs and now() < deadline and len(phase.errors) < max_errors:
            slot = fresh[issued]
            issued += 1
            tag = uuid.uuid4().hex[:12]
            started: list[str] = []
            try:
                async with asyncio.timeout(run_timeout):
                    sample = await one_run(client, slot, ttft_ms, tag, started)
            except (Exception, TimeoutError) as exc:  # noqa: BLE001 - counted and reported
                phase.errors.append(repr(exc)[:300])
                if started:  # a run that may still hold the thread: stop it so the slot can go on
                    await _stop_run(client, slot, started[0])
                continue
            tags[tag] = sample
            phase.samples.append(sample)

    await llm.marks()  # clear
    cpu_before = {name: cpu_seconds(pid) for name, pid in system.pids.items()}
    started = now()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.wall_seconds = now() - started
    phase.cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in system.pids.items()}
    for tag, (arrived, first) in (await llm.marks()).items():
        if tag in tags:
            tags[tag].llm_arrived, tags[tag].llm_first = arrived, first
    if phase.errors and not warmup:
        print(f"  {len(phase.errors)} failed runs, first: {phase.errors[0]}", file=sys.stderr)
    if len(phase.errors) >= max_errors:
        raise RuntimeError(
            f"too many failed runs in {system.mode} ttft={ttft_ms:g} c={concurrency}: {phase.errors[:3]}"
        )
    return phase


async def _stop_run(client: httpx.AsyncClient, slot: Slot, run_id: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(15):
            await client.post(f"/api/agent-run/{run_id}/stop", headers=slot.headers)
            while (await client.get(f"/api/agent-run/{run_id}", headers=slot.headers)).json().get("status") not in (
                "completed",
                "failed",
                "cancelled",
            ):
                await asyncio.sleep(0.1)
