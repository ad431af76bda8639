"""Infrastructure faults are survived, end to end: a split stack (every service its own supervised
process) on a private PostgreSQL, a private Redis and the shared RabbitMQ behind a cuttable TCP
proxy. Mid-run, one at a time: Redis restarts, the broker connection is cut, PostgreSQL restarts.

For each fault, 30 runs (each a ~2 s shell command with a side effect) are started just before
it, and it lands once their streams are flowing; 5 more are started while it lasts (a start then
answers 202, or 503/429 with Retry-After, and the client retries with its Idempotency-Key; never a
500), and 5 more clients open streams of running runs while the server is down. Every accepted
run must complete (no run lost, stuck, failed or with a failed tool call), every stream a client
follows (reconnecting with Last-Event-ID) must hold ids 1..n once each and end once, no side
effect may happen twice, and no 503 may come after the server is back. What the fault cost is
printed: runs resumed by another attempt, 503s, how long streams stalled and runs took beyond a
fault-free batch (a noisy number on a shared machine; the stall is the steadier one).

Redis keeps an append-only file, as a production Redis would: a restart keeps the live streams.

The shared servers are never touched: Redis and PostgreSQL are private (faults.py), and the
broker is only ever cut at the proxy.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from agentry.fakellm import FakeLLMProcess
from agentry.servicekit.faults import PrivatePostgres, PrivateRedis, TcpProxy
from agentry.servicekit.testing import needs

from .test_durable_runs import percentile, side_effects

pytestmark = [
    pytest.mark.integration,
    pytest.mark.serial,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.rabbitmq,
    needs(PrivateRedis.available(), "redis-server"),
    needs(PrivatePostgres.available(), "PostgreSQL (initdb, pg_ctl)"),
]

SIDE_EFFECT_FILE = "side-effects.txt"
MODEL = "openai/fault-tool"
SCRIPTS = {
    # One shell call with a side effect that must happen at most once, then the answer.
    "fault-tool": [
        {
            "text": "Working.",
            "tool_calls": [
                {"name": "run_command", "arguments": {"command": f"echo once >> {SIDE_EFFECT_FILE} && sleep 2"}}
            ],
        },
        {"text": "Recorded."},
    ],
}
LEASE_SECONDS = 5.0
RUNS_BEFORE = 30  # started just before the fault
RUNS_DURING = 5  # started while it lasts
LATE_JOINERS = 5  # runs whose stream a second client opens while the server is down
TERMINAL = ("completed", "failed", "cancelled")


def _amqp_url() -> str:
    """The shared RabbitMQ (as the root conftest's `amqp_url`, usable from a module fixture)."""
    url = os.environ.get("AGENTRY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=1.0).close()
    except OSError:
        message = f"RabbitMQ is not reachable at {parts.hostname}:{parts.port}"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{message} (CI=true: a missing server fails the run)", pytrace=False)
        pytest.skip(message)
    return url


@dataclass
class Infra:
    postgres: PrivatePostgres
    redis: PrivateRedis
    broker: TcpProxy  # in front of the shared RabbitMQ
    amqp_url: str  # the real broker (for cleanup)


@dataclass
class Stack:
    procs: object
    infra: Infra
    gateway_url: str
    sandbox_target: str
    internal_token: str
    log_dir: Path
    baseline: list[float] = field(default_factory=list)  # seconds from 202 to run_finished, no fault
    baseline_stalls: list[float] = field(default_factory=list)  # each run's longest gap between events


@pytest.fixture(scope="module")
def fault_llm(tmp_path_factory) -> Iterator[str]:
    """The fake model in its own process, so it never waits on the test's event loop."""
    with FakeLLMProcess(
        SCRIPTS, ttft_seconds=0.05, tokens_per_second=400, data_dir=tmp_path_factory.mktemp("llm")
    ) as llm:
        yield llm.base_url


@pytest.fixture(scope="module")
def infra() -> Iterator[Infra]:
    amqp_url = _amqp_url()
    # The append-only file makes a restart keep the streams, as a production Redis would.
    with (
        PrivatePostgres(database="agentry") as postgres,
        PrivateRedis(extra_args=("--appendonly", "yes")) as redis,
        TcpProxy.for_url(amqp_url) as broker,
    ):
        yield Infra(postgres, redis, broker, amqp_url)


@pytest.fixture(scope="module")
def stack(infra: Infra, fault_llm: str, tmp_path_factory) -> Iterator[Stack]:
    from agentry.cli.split import SplitConfig, SplitProcesses, free_port
    from agentry.cli.supervisor import RestartPolicy

    unique = f"t{uuid.uuid4().hex[:10]}"
    queue = f"agentry.runs.{unique}"
    data_dir = tmp_path_factory.mktemp("faults")
    ports = {name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")}
    env = {
        "AGENTRY_RUNNER_LEASE_SECONDS": str(LEASE_SECONDS),
        "AGENTRY_RUNNER_SWEEP_INTERVAL_SECONDS": "1",
        "AGENTRY_RUNNER_WORKER_CONCURRENCY": "16",
        "AGENTRY_RUNNER_GRACE_SECONDS": "5",
        "AGENTRY_BILLING_INITIAL_CREDIT_MICROS": str(10**10),
        "AGENTRY_RUNNER_MAX_ACTIVE_RUNS_PER_ACCOUNT": "0",
        "AGENTRY_RUNNER_DATABASE_POOL_SIZE": "4",
        "AGENTRY_RUNNER_DATABASE_MAX_OVERFLOW": "4",
    }
    procs = SplitProcesses(
        SplitConfig(
            database_url=infra.postgres.url,
            redis_url=infra.redis.url,
            amqp_url=infra.broker.url_for(infra.amqp_url),
            data_dir=data_dir,
            gateway_port=free_port(),
            grpc_ports=ports,
            llm_api_base=fault_llm,
            queue_name=queue,
            redis_prefix=f"agentry:{unique}:",
            extra_env=env,
            workers=2,
            restart_policy=RestartPolicy(initial_delay=0.2, max_delay=1.0, reset_after=5.0),
        )
    )
    procs.start()
    try:
        yield Stack(
            procs, infra, procs.gateway_url, f"127.0.0.1:{ports['sandbox']}", procs.internal_token, procs.log_dir
        )
    finally:
        procs.stop()
        _run_async(_delete_queues(infra.amqp_url, queue))


def _run_async(coro: Awaitable[object]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _delete_queues(amqp_url: str, name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for queue in (name, f"{name}.dead"):
            await channel.queue_delete(queue)


# -- a client that retries like a well-behaved one ---------------------------------------------


@dataclass
class Tally:
    """Every HTTP answer the clients got during one fault, by request kind and status."""

    statuses: Counter = field(default_factory=Counter)
    transport_errors: Counter = field(default_factory=Counter)
    missing_retry_after: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unavailable_at: list[float] = field(default_factory=list)  # when each 503 arrived

    def saw(self, kind: str, response: httpx.Response) -> None:
        self.statuses[(kind, response.status_code)] += 1
        if response.status_code == 503:
            self.unavailable_at.append(time.monotonic())
        if response.status_code in (429, 503) and "retry-after" not in response.headers:
            self.missing_retry_after.append(f"{kind} {response.status_code}")

    def count(self, status: int) -> int:
        return sum(n for (_, s), n in self.statuses.items() if s == status)

    def server_errors(self) -> dict:
        return {k: n for k, n in self.statuses.items() if k[1] >= 500 and k[1] != 503}


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(float(response.headers.get("retry-after", "1")), 5.0)
    except ValueError:
        return 1.0


async def call(
    client: httpx.AsyncClient,
    tally: Tally,
    kind: str,
    method: str,
    url: str,
    *,
    deadline: float,
    retry_on: tuple[int, ...] = (429, 503),
    **kwargs,
) -> httpx.Response:
    """One request, sent again after a 503/429 (waiting Retry-After) or a dropped connection."""
    while True:
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            tally.transport_errors[(kind, type(exc).__name__)] += 1
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
            continue
        tally.saw(kind, response)
        conflict_in_use = response.status_code == 409 and b"idempotency_key_in_use" in response.content
        if (response.status_code in retry_on or conflict_in_use) and time.monotonic() < deadline:
            await asyncio.sleep(_retry_after(response))
            continue
        return response


@dataclass
class Started:
    run_id: str
    project_id: str
    asked_at: float  # the first attempt
    accepted_at: float  # the 202


async def start_run(client: httpx.AsyncClient, tally: Tally, user: dict, thread: dict, label: str) -> Started | None:
    """A start retried through 503/429 with one Idempotency-Key, as a careful client does."""
    asked = time.monotonic()
    response = await call(
        client,
        tally,
        "start",
        "POST",
        f"/api/threads/{thread['thread_id']}/agent/start",
        headers={**user["headers"], "Idempotency-Key": f"start-{label}"},
        json={"model_name": MODEL, "prompt": f"run {label}"},
        deadline=asked + 60,
    )
    if response.status_code != 202:
        tally.unexpected.append(f"start {label}: {response.status_code} {response.text[:200]}")
        return None
    return Started(response.json()["agent_run_id"], thread["project_id"], asked, time.monotonic())


@dataclass
class Followed:
    """What one SSE client saw of one run, reconnecting with Last-Event-ID as needed."""

    run_id: str
    ids: list[int] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    reconnects: int = 0

    @property
    def terminal(self) -> dict | None:
        return self.events[-1] if self.events and self.events[-1]["type"] == "run_finished" else None


async def follow(
    client: httpx.AsyncClient, tally: Tally, seen: Followed, headers: dict, *, deadline: float
) -> Followed:
    run_id = seen.run_id
    while seen.terminal is None and time.monotonic() < deadline:
        extra = {"Last-Event-ID": str(seen.ids[-1])} if seen.ids else {}
        wait = 0.2
        try:
            async with client.stream(
                "GET", f"/api/agent-run/{run_id}/stream", headers={**headers, **extra}
            ) as response:
                tally.saw("stream", response)
                if response.status_code != 200:
                    await response.aread()
                    wait = _retry_after(response)
                else:
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
        except httpx.TransportError as exc:
            tally.transport_errors[("stream", type(exc).__name__)] += 1
        if seen.terminal is None:
            seen.reconnects += 1
            await asyncio.sleep(wait)
    return seen


async def sign_up(client: httpx.AsyncClient, email: str) -> dict:
    password = "correct horse battery staple"
    signup = await client.post("/api/auth/signup", json={"email": email, "password": password})
    assert signup.status_code == 201, signup.text
    token = await client.post("/api/auth/token", json={"email": email, "password": password})
    assert token.status_code == 200, token.text
    return {**signup.json(), "headers": {"Authorization": f"Bearer {token.json()['access_token']}"}}


async def new_threads(client: httpx.AsyncClient, user: dict, n: int) -> list[dict]:
    async def one() -> dict:
        created = await client.post("/api/threads", headers=user["headers"], json={})
        assert created.status_code == 201, created.text
        return created.json()

    return list(await asyncio.gather(*(one() for _ in range(n))))


def assert_continuous(seen: Followed) -> None:
    """Every event once, in order: ids 1..n with no gap and no duplicate, one terminal event last."""
    assert seen.ids == list(range(1, len(seen.ids) + 1)), (seen.run_id, seen.ids)
    assert [e["seq"] for e in seen.events] == seen.ids, seen.run_id
    assert [e["type"] for e in seen.events].count("run_finished") == 1, seen.run_id


# -- the scenario every fault goes through ------------------------------------------------------


@dataclass
class Outcome:
    name: str
    started: list[Started]
    seen: list[Followed]
    finals: list[dict]
    counts: list[int]
    tally: Tally
    fault: tuple[float, float] | None  # (on, over), monotonic
    baseline: list[float]
    baseline_stalls: list[float]
    joined: list[Followed] = field(default_factory=list)  # streams opened while the server was down

    @property
    def latencies(self) -> list[float]:
        """Seconds from each run's 202 to its run_finished."""
        return [s.arrived[-1] - r.accepted_at for r, s in zip(self.started, self.seen) if s.terminal]

    @property
    def stalls(self) -> list[float]:
        """Each run's longest wait between two events on its stream (the 2 s command, normally)."""
        return [max(b - a for a, b in zip(s.arrived, s.arrived[1:])) for s in self.seen if len(s.arrived) > 1]

    @property
    def in_flight(self) -> int:
        """Runs the fault hit mid-run: they had streamed before it began and ended after."""
        if self.fault is None:
            return 0
        on, _ = self.fault
        return sum(1 for s in self.seen if s.arrived and s.arrived[0] < on < s.arrived[-1])

    @property
    def resumed(self) -> int:
        return sum(any(e["type"] == "run_resumed" for e in s.events) for s in self.seen)

    @property
    def tool_errors(self) -> list[tuple[str, str]]:
        return [
            (s.run_id, e["error"])
            for s in self.seen
            for e in s.events
            if e["type"] == "tool_call_finished" and e.get("error")
        ]

    def summary(self) -> str:
        statuses = Counter(f["status"] for f in self.finals)
        p50, top = percentile(self.latencies, 0.5), max(self.latencies, default=float("nan"))
        base_p50, base_top = percentile(self.baseline, 0.5), max(self.baseline, default=float("nan"))
        stall_p50, stall_top = percentile(self.stalls, 0.5), max(self.stalls, default=float("nan"))
        base_stall = percentile(self.baseline_stalls, 0.5)
        during = [r.accepted_at - r.asked_at for r in self.started[RUNS_BEFORE:]]
        down = f"down {self.fault[1] - self.fault[0]:.1f}s, hit {self.in_flight} runs mid-run; " if self.fault else ""
        unavailable = {k: n for (k, status), n in self.tally.statuses.items() if status == 503}
        return (
            f"{self.name}: {down}{len(self.started)} runs accepted, "
            f"{statuses.get('completed', 0)} completed, {statuses.get('failed', 0)} failed, "
            f"{statuses.get('cancelled', 0)} cancelled, {self.resumed} resumed by another attempt, "
            f"{len(self.tool_errors)} tool calls failed; 202->run_finished p50 {p50:.2f}s max {top:.2f}s "
            f"(no fault: p50 {base_p50:.2f}s max {base_top:.2f}s; extra p50 {p50 - base_p50:+.2f}s "
            f"max {top - base_top:+.2f}s); longest stall of a stream p50 {stall_p50:.2f}s max {stall_top:.2f}s "
            f"(no fault: p50 {base_stall:.2f}s); 503s {unavailable or 0}, 429s {self.tally.count(429)}; "
            f"starts during the fault accepted after max {max(during, default=0):.2f}s; "
            f"SSE reconnects {sum(s.reconnects for s in self.seen)}, "
            f"transport errors {sum(self.tally.transport_errors.values())}{self._slowest()}"
        )

    def _slowest(self) -> str:
        """When the slowest run was accepted, first streamed and ended, from the fault's start."""
        done = [(s.arrived[-1] - r.accepted_at, r, s) for r, s in zip(self.started, self.seen) if s.terminal]
        if not done or self.fault is None:
            return ""
        _, run, seen = max(done, key=lambda d: d[0])
        on = self.fault[0]
        return (
            f"; slowest run {run.run_id}: accepted {run.accepted_at - on:+.1f}s, "
            f"first event {seen.arrived[0] - on:+.1f}s, "
            f"ended {seen.arrived[-1] - on:+.1f}s after the fault began, longest stall ends at "
            f"{max(zip(seen.arrived, seen.arrived[1:]), key=lambda g: g[1] - g[0])[1] - on:+.1f}s"
        )


async def measure_baseline(stack: Stack) -> list[float]:
    """202->run_finished of a fault-free batch on a warm stack (computed once per module)."""
    if not stack.baseline:
        await exercise(stack, "warm-up", None, runs=10)  # first LiteLLM calls, sandboxes, pools
        outcome = await exercise(stack, "no fault", None)
        print(f"\n{outcome.summary()}")
        assert [f["status"] for f in outcome.finals] == ["completed"] * len(outcome.finals)
        stack.baseline.extend(outcome.latencies)
        stack.baseline_stalls.extend(outcome.stalls)
    return stack.baseline


async def exercise(
    stack: Stack, name: str, fault: Callable[[asyncio.Event], Awaitable[None]] | None, *, runs: int = RUNS_BEFORE
) -> Outcome:
    """Starts `runs` runs, injects `fault` (it sets the event once the server is down and returns
    once it is back) while starting RUNS_DURING more, follows every accepted run to its end."""
    await asyncio.to_thread(stack.procs.wait_healthy, timeout=60)
    tally = Tally()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, timeout=httpx.Timeout(30, read=60), limits=limits
    ) as client:
        user = await sign_up(client, f"{name.replace(' ', '-')}-{uuid.uuid4().hex[:6]}@example.com")
        n_during = RUNS_DURING if fault is not None else 0
        threads = await new_threads(client, user, runs + n_during)
        deadline = time.monotonic() + 120
        followers: list[asyncio.Task[Followed]] = []
        started: list[Started] = []
        live: list[Followed] = []

        def followed(run: Started) -> None:
            started.append(run)
            live.append(Followed(run.run_id))
            followers.append(asyncio.create_task(follow(client, tally, live[-1], user["headers"], deadline=deadline)))

        async def start_and_follow(i: int, thread: dict) -> None:
            # Followed from the moment its start answers: on a slow machine the last of the
            # starts can answer after the first runs have ended.
            run = await start_run(client, tally, user, thread, f"{name}-{i}")
            assert run is not None, tally.unexpected
            followed(run)

        await asyncio.gather(*(start_and_follow(i, t) for i, t in enumerate(threads[:runs])))
        window = None
        if fault is not None:
            # The fault lands while the runs stream and run their command: once most of them are
            # mid-run (streamed, not ended). On a slow machine the starts spread out, so waiting
            # for most clients to have their first events let the earliest runs end first.
            connected = time.monotonic() + 15
            while (
                sum(1 for f in live if f.ids and f.terminal is None) < 0.7 * len(live) and time.monotonic() < connected
            ):
                await asyncio.sleep(0.05)
            on = asyncio.Event()
            began = time.monotonic()
            faulting = asyncio.create_task(fault(on))
            await on.wait()
            during = [
                asyncio.create_task(start_run(client, tally, user, t, f"{name}-during-{i}"))
                for i, t in enumerate(threads[runs:])
            ]
            # Clients that open a stream while the server is down (from the start, as a new tab
            # would) must get the whole stream too.
            late = [
                asyncio.create_task(follow(client, tally, Followed(run.run_id), user["headers"], deadline=deadline))
                for run in started[-LATE_JOINERS:]
            ]
            await faulting
            window = (began, time.monotonic())
            for run in await asyncio.gather(*during):
                if run is not None:
                    followed(run)
        seen = list(await asyncio.gather(*followers))
        joined = list(await asyncio.gather(*late)) if fault is not None else []
        finals = []
        for run in started:
            got = await call(
                client,
                tally,
                "get",
                "GET",
                f"/api/agent-run/{run.run_id}",
                headers=user["headers"],
                deadline=time.monotonic() + 30,
            )
            assert got.status_code == 200, got.text
            finals.append(got.json())
    counts = await side_effects(stack, user["account_id"], [r.project_id for r in started])
    return Outcome(name, started, seen, finals, counts, tally, window, stack.baseline, stack.baseline_stalls, joined)


# A 503 this long after the fault was over means a client that did not notice the recovery.
RECOVERY_GRACE_SECONDS = 2.0


def check(outcome: Outcome, stack: Stack) -> None:
    print(f"\n{outcome.summary()}")
    tally = outcome.tally
    logs = f" (logs: {stack.log_dir})"
    assert outcome.in_flight >= RUNS_BEFORE // 2, "the fault missed the runs: too few were running when it began"
    assert not tally.server_errors(), f"5xx other than 503: {tally.server_errors()}{logs}"
    assert not tally.missing_retry_after, f"503/429 without Retry-After: {tally.missing_retry_after}"
    assert not tally.unexpected, f"{tally.unexpected}{logs}"
    assert outcome.fault is not None
    lingering = [
        round(at - outcome.fault[1], 2) for at in tally.unavailable_at if at > outcome.fault[1] + RECOVERY_GRACE_SECONDS
    ]
    assert not lingering, f"503s long after the fault was over (s after): {lingering}{logs}"
    assert len(outcome.started) == RUNS_BEFORE + RUNS_DURING, "a start during the fault was never accepted"
    unfinished = [s.run_id for s in outcome.seen + outcome.joined if s.terminal is None]
    assert not unfinished, f"streams that never ended: {unfinished[:5]}{logs}"
    for joined in outcome.joined:
        assert_continuous(joined)
        first = next(s for s in outcome.seen if s.run_id == joined.run_id)
        assert joined.ids == first.ids and joined.events == first.events, "two clients saw different streams"
    not_ended = [f for f in outcome.finals if f["status"] not in TERMINAL]
    assert not not_ended, f"runs lost or stuck: {not_ended[:5]}{logs}"
    for s in outcome.seen:
        assert_continuous(s)
    twice = [(s.run_id, [e["type"] for e in s.events]) for s, n in zip(outcome.seen, outcome.counts) if n > 1]
    assert not twice, f"a side effect happened twice: {twice}{logs}"
    failed = [(f["agent_run_id"], f["error"]) for f in outcome.finals if f["status"] != "completed"]
    assert not failed, f"runs that did not complete: {failed[:5]}{logs}"
    assert all(s.terminal["reason"] == "completed" for s in outcome.seen)
    assert not outcome.tool_errors, f"tool calls that failed: {outcome.tool_errors[:5]}{logs}"


# -- the faults, in turn ------------------------------------------------------------------------

REDIS_DOWN_SECONDS = 3.0
BROKER_CUT_SECONDS = 4.0
# Plus pg_ctl's own stop and start: about 2 s unreachable in all. A worker stops its runs when it
# could not renew their leases for 70% of one (3.5 s); it renews every third (1.7 s), so an outage
# that begins just before a renewal is due may stop them after 1.8 s (another worker resumes them).
POSTGRES_DOWN_SECONDS = 1.5


async def test_redis_restart_mid_run(stack: Stack) -> None:
    await measure_baseline(stack)

    async def restart_redis(on: asyncio.Event) -> None:
        await stack.infra.redis.astop()  # graceful: the append-only file keeps the streams
        on.set()
        await asyncio.sleep(REDIS_DOWN_SECONDS)
        await stack.infra.redis.astart()

    check(await exercise(stack, "redis-restart", restart_redis), stack)


async def test_broker_connection_cut_mid_run(stack: Stack) -> None:
    await measure_baseline(stack)

    async def cut_broker(on: asyncio.Event) -> None:
        await asyncio.to_thread(stack.infra.broker.cut)
        on.set()
        await asyncio.sleep(BROKER_CUT_SECONDS)
        await asyncio.to_thread(stack.infra.broker.restore)

    outcome = await exercise(stack, "rabbitmq-cut", cut_broker)
    check(outcome, stack)
    # Runs hold their workers through a broker blink: none is stopped and resumed elsewhere.
    assert outcome.resumed == 0
    # A run accepted while the broker was away is dispatched once it is back (the sweeper's next
    # pass), not when its job counts as lost (`redispatch_after`, 120 s: a sweep that failed on an
    # unexpected error once left every run of its pass waiting for that).
    assert outcome.fault is not None
    late = [
        round(seen.arrived[0] - outcome.fault[1], 1)
        for seen in outcome.seen
        if seen.arrived and seen.arrived[0] > outcome.fault[1] + 30
    ]
    assert not late, (
        f"runs that first streamed long after the broker was back (s after): {late} (logs: {stack.log_dir})"
    )


async def test_postgres_restart_mid_run(stack: Stack) -> None:
    await measure_baseline(stack)

    async def restart_postgres(on: asyncio.Event) -> None:
        await stack.infra.postgres.astop(mode="fast")
        on.set()
        await asyncio.sleep(POSTGRES_DOWN_SECONDS)
        await stack.infra.postgres.astart()

    check(await exercise(stack, "postgres-restart", restart_postgres), stack)
