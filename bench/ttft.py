"""Platform overhead on time to first token, embedded and split mode, end to end over HTTP.

TTFT here is what a user sees: from sending POST /api/threads/{id}/agent/start to receiving
the first `text_delta` event on GET /api/agent-run/{id}/stream (opened as soon as the start
request returns; the stream replays from seq 1, so no token is missed). The platform overhead
is that minus the fake model's configured time to first token.

The fake OpenAI-compatible model (libs/fakellm) runs in its own process in both modes, behind a
small ASGI wrapper that notes, per run, when the model request arrived and when the first token
left, so every run also splits into: before the model (start request, queue, worker, LiteLLM
request), the model itself, and after the model (LiteLLM parsing, agentpress, event stream,
gateway SSE, client). All times are CLOCK_MONOTONIC, shared by every process on the machine.

    uv run python bench/ttft.py --mode both --runs 200 --concurrency 8 --ttft-ms 50

measures, per mode, TTFT with the model's TTFT at --ttft-ms and at 0 (raw overhead; --no-raw
skips it), sequentially (concurrency 1) and with --concurrency runs in flight, after warm-up
runs that are not counted (the first run in a process imports LiteLLM, ~7 s).

Embedded mode runs every service inside this process, on the event loop the client uses.
Split mode starts every service as its own process on PostgreSQL, Redis and RabbitMQ (fresh
database, unique queue and key prefix, all removed at the end); the client is then alone here.
The run is bounded: each run times out after --run-timeout seconds, each configuration stops
issuing runs after --max-seconds, and everything started is stopped and cleaned up on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import orjson

# The gateway's rate limits (sign-ups and sign-ins per address, run starts per account) would
# refuse a benchmark's burst from one client: it measures the platform, not the limits.
NO_RATE_LIMITS = {"AGENTRY_GATEWAY_RUN_STARTS_PER_ACCOUNT": "1000000", "AGENTRY_GATEWAY_SIGNUP_PER_IP": "1000000",
                  "AGENTRY_GATEWAY_SIGNIN_ATTEMPTS_PER_IP": "1000000"}

PG_ADMIN = os.environ.get("AGENTRY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("AGENTRY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AGENTRY_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

ANSWER = "The benchmark answer arrives now, token by token."
CLK_TCK = os.sysconf("SC_CLK_TCK")
now = time.monotonic


def model_for(ttft_ms: float) -> str:
    return f"bench-ttft{ttft_ms:g}"


# --------------------------------------------------------------------------- the fake model process


class MarkingApp:
    """Wraps the fake LLM app: per run tag, when the completion request arrived and when the first
    body chunk (the first token) was handed to the server. GET /bench/marks returns and clears them."""

    def __init__(self, app) -> None:
        self.app = app
        self.marks: dict[str, tuple[float, float | None]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/bench/marks":
            body = orjson.dumps(self.marks)
            self.marks = {}
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return None
        if not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        arrived = now()
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        tag = _tag_of(body)
        replayed = False
        first: float | None = None

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def marking_send(message) -> None:
            nonlocal first
            if first is None and message["type"] == "http.response.body" and message.get("body"):
                first = now()
            await send(message)

        await self.app(scope, replay, marking_send)
        if tag and tag not in self.marks:
            self.marks[tag] = (arrived, first)
        return None


def _tag_of(body: bytes) -> str | None:
    try:
        messages = orjson.loads(body).get("messages") or []
    except (orjson.JSONDecodeError, AttributeError):
        return None
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if isinstance(content, str) and content.startswith("bench "):
                return content.split()[1]
            return None
    return None


def serve_fakellm(port: int, ttfts_ms: list[float]) -> None:
    import uvicorn

    from agentry.fakellm import Script, Turn, create_app

    scripts = {model_for(ms): Script(turns=(Turn(text=ANSWER),), ttft_seconds=ms / 1000) for ms in ttfts_ms}
    app = MarkingApp(create_app(scripts))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


class FakeLLMProcess:
    def __init__(self, ttfts_ms: list[float], log_dir: Path) -> None:
        from agentry.cli.split import free_port

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        log = open(log_dir / "fakellm.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-fakellm", str(self.port),
             "--ttft-ms", ",".join(f"{ms:g}" for ms in ttfts_ms), "--no-raw"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = now() + 30
        while now() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake LLM exited with {self.proc.returncode}; see {log_dir / 'fakellm.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("the fake LLM did not start")

    async def marks(self) -> dict[str, tuple[float, float | None]]:
        async with httpx.AsyncClient(timeout=10) as client:
            return (await client.get(f"http://127.0.0.1:{self.port}/bench/marks")).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- the systems under test


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@dataclass
class System:
    mode: str
    gateway_url: str
    pids: dict[str, int]  # process name -> pid, for CPU accounting


@contextlib.asynccontextmanager
async def embedded_system(llm: FakeLLMProcess, data_dir: Path):
    from agentry.cli.devstack import start_dev_stack

    async with contextlib.AsyncExitStack() as stack:
        dev = await start_dev_stack(stack, data_dir=data_dir, llm_api_base=llm.base_url,
                                    ports={"auth": 0, "billing": 0, "sandbox": 0, "runner": 0, "gateway": 0},
                                    gateway_overrides={k.removeprefix("AGENTRY_GATEWAY_").lower(): int(v)
                                                       for k, v in NO_RATE_LIMITS.items()})
        yield System("embedded", dev.gateway_url,
                     {"bench (client + all services)": os.getpid(), "fakellm": llm.proc.pid})


@contextlib.asynccontextmanager
async def split_system(llm: FakeLLMProcess, data_dir: Path):
    from agentry.cli.split import SplitConfig, SplitProcesses, free_port

    unique = f"bench{uuid.uuid4().hex[:10]}"
    database = f"agentry_{unique}"
    admin = httpx.URL(PG_ADMIN)
    database_url = f"postgresql+asyncpg://{admin.username or 'postgres'}@{admin.host}:{admin.port or 5432}/{database}"
    queue_name, redis_prefix = f"agentry.runs.{unique}", f"agentry:{unique}:"
    ports = {name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")}
    procs = SplitProcesses(SplitConfig(
        database_url=database_url, redis_url=REDIS_URL, amqp_url=AMQP_URL, data_dir=data_dir,
        gateway_port=free_port(), grpc_ports=ports, llm_api_base=llm.base_url,
        queue_name=queue_name, redis_prefix=redis_prefix, extra_env=NO_RATE_LIMITS))
    try:
        # start() blocks while it polls health: keep it off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, procs.start)
        pids = {name: p.pid for name, p in procs.procs.items()}
        yield System("split", procs.gateway_url, {**pids, "bench (client)": os.getpid(), "fakellm": llm.proc.pid})
    finally:
        await asyncio.get_running_loop().run_in_executor(None, procs.stop)
        await _cleanup_split(database, queue_name, redis_prefix)


async def _cleanup_split(database: str, queue_name: str, redis_prefix: str) -> None:
    for what, step in (("queue", _delete_queue(queue_name)), ("redis keys", _delete_redis_keys(redis_prefix)),
                       ("database", _drop_database(database))):
        try:
            await asyncio.wait_for(step, 30)
        except Exception as exc:  # noqa: BLE001 - report and go on cleaning the rest
            print(f"cleanup: could not remove the {what}: {exc!r}", file=sys.stderr)


async def _delete_queue(name: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


async def _delete_redis_keys(prefix: str) -> None:
    from redis import asyncio as aioredis

    redis = aioredis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i:i + 500])
    finally:
        await redis.aclose()


async def _drop_database(name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# --------------------------------------------------------------------------- the client


@dataclass
class Slot:
    """One user thread: a thread allows one active run at a time."""

    thread_id: str
    headers: dict[str, str]


@dataclass
class Sample:
    ttft_ms: float          # configured model TTFT
    t0: float               # start request sent
    start_done: float       # start request answered
    stream_open: float      # stream response headers received
    first_event: float      # first SSE event (run_started)
    first_token: float      # first text_delta
    finished: float         # run_finished received
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
    start = await client.post(f"/api/threads/{slot.thread_id}/agent/start",
                              json={"model_name": f"openai/{model_for(ttft_ms)}", "prompt": f"bench {tag}"},
                              headers=slot.headers)
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


async def run_phase(client: httpx.AsyncClient, system: System, llm: FakeLLMProcess, headers: dict[str, str], *,
                    ttft_ms: float, runs: int, concurrency: int, run_timeout: float, max_seconds: float,
                    warmup: bool = False) -> Phase:
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
        raise RuntimeError(f"too many failed runs in {system.mode} ttft={ttft_ms:g} c={concurrency}: {phase.errors[:3]}")
    return phase


async def _stop_run(client: httpx.AsyncClient, slot: Slot, run_id: str) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(15):
            await client.post(f"/api/agent-run/{run_id}/stop", headers=slot.headers)
            while (await client.get(f"/api/agent-run/{run_id}", headers=slot.headers)).json().get(
                    "status") not in ("completed", "failed", "cancelled"):
                await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- statistics and output


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p90": pct(values, 90), "p99": pct(values, 99),
            "mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def result_rows(phases: list[Phase]) -> list[str]:
    rows = ["| mode | model TTFT ms | concurrency | runs | overhead p50 | p90 | p99 | mean | min | max "
            "| TTFT p50 | runs/s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ph in phases:
        if not ph.samples:
            rows.append(f"| {ph.mode} | {ph.ttft_ms:g} | {ph.concurrency} | 0 | (no samples) ||||||||")
            continue
        s = summary([x.overhead for x in ph.samples])
        ttft = pct([x.ttft for x in ph.samples], 50)
        rows.append(f"| {ph.mode} | {ph.ttft_ms:g} | {ph.concurrency} | {len(ph.samples)} | "
                    + " | ".join(f"{s[k]:.1f}" for k in ("p50", "p90", "p99", "mean", "min", "max"))
                    + f" | {ttft:.1f} | {ph.runs_per_second:.1f} |")
    return rows


def breakdown_rows(phases: list[Phase]) -> list[str]:
    """Where the time goes, p50 / p99 ms of each hop (hops overlap: the run is queued while the
    start request is still being answered)."""
    rows = ["| mode | model TTFT | conc. | start request | stream open (after start) | to run_started "
            "| start → model request | model (fake TTFT) | model first token → client | "
            "first token → run_finished |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for ph in phases:
        marked = [x for x in ph.samples if x.llm_arrived is not None and x.llm_first is not None]
        if not marked:
            continue

        def cell(values: list[float]) -> str:
            return f"{pct(values, 50):.1f} / {pct(values, 99):.1f}"

        rows.append(" | ".join([
            f"| {ph.mode}", f"{ph.ttft_ms:g}", str(ph.concurrency),
            cell([(x.start_done - x.t0) * 1000 for x in ph.samples]),
            cell([(x.stream_open - x.start_done) * 1000 for x in ph.samples]),
            cell([(x.first_event - x.t0) * 1000 for x in ph.samples]),
            cell([(x.llm_arrived - x.t0) * 1000 for x in marked]),
            cell([(x.llm_first - x.llm_arrived) * 1000 for x in marked]),
            cell([(x.first_token - x.llm_first) * 1000 for x in marked]),
            cell([(x.finished - x.first_token) * 1000 for x in ph.samples]),
        ]) + " |")
    return rows


def cpu_rows(phases: list[Phase]) -> list[str]:
    rows = ["| mode | model TTFT | conc. | CPU ms per run, by process |", "|---|---:|---:|---|"]
    for ph in phases:
        if not ph.samples:
            continue
        per_run = {name: sec * 1000 / len(ph.samples) for name, sec in ph.cpu.items()}
        total = sum(per_run.values())
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(per_run.items(), key=lambda kv: -kv[1]))
        rows.append(f"| {ph.mode} | {ph.ttft_ms:g} | {ph.concurrency} | total {total:.1f}: {parts} |")
    return rows


# --------------------------------------------------------------------------- main


async def bench_mode(mode: str, args, llm: FakeLLMProcess, data_dir: Path) -> list[Phase]:
    system_cm = embedded_system if mode == "embedded" else split_system
    ttfts = [args.ttft_ms] + ([0.0] if args.raw and args.ttft_ms != 0 else [])
    phases: list[Phase] = []
    print(f"[{mode}] starting services...", file=sys.stderr, flush=True)
    async with system_cm(llm, data_dir / mode) as system:
        limits = httpx.Limits(max_connections=4 * args.concurrency + 8, max_keepalive_connections=4 * args.concurrency + 8)
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=args.run_timeout, limits=limits) as client:
            headers = await make_user(client)
            print(f"[{mode}] warming up...", file=sys.stderr, flush=True)
            common = {"run_timeout": max(args.run_timeout, 60.0), "max_seconds": args.max_seconds, "warmup": True}
            for ttft in ttfts:
                await run_phase(client, system, llm, headers, ttft_ms=ttft, runs=args.warmup, concurrency=1, **common)
                await run_phase(client, system, llm, headers, ttft_ms=ttft, runs=2 * args.concurrency,
                                concurrency=args.concurrency, **common)
            for ttft in ttfts:
                for concurrency in sorted({1, args.concurrency}):
                    print(f"[{mode}] model ttft {ttft:g} ms, concurrency {concurrency}: {args.runs} runs...",
                          file=sys.stderr, flush=True)
                    phase = await run_phase(client, system, llm, headers, ttft_ms=ttft, runs=args.runs,
                                            concurrency=concurrency, run_timeout=args.run_timeout,
                                            max_seconds=args.max_seconds)
                    phases.append(phase)
                    print("\n".join(result_rows([phase])[2:]), file=sys.stderr, flush=True)
    return phases


async def main_async(args) -> int:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    modes = ["embedded", "split"] if args.mode == "both" else [args.mode]
    ttfts = [args.ttft_ms] + ([0.0] if args.raw and args.ttft_ms != 0 else [])
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="agentry-bench-") as tmp:
        data_dir = Path(tmp)
        llm = FakeLLMProcess(ttfts, data_dir)
        try:
            for mode in modes:
                phases += await bench_mode(mode, args, llm, data_dir)
        finally:
            llm.stop()
    output = [
        f"Platform overhead on TTFT, ms (measured TTFT minus the model's configured TTFT); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
        "", *result_rows(phases), "",
        "Where the time goes, p50 / p99 ms:", "", *breakdown_rows(phases), "",
        "CPU per run:", "", *cpu_rows(phases),
    ]
    print("\n".join(output))
    if args.json:
        Path(args.json).write_text(json.dumps([
            {"mode": ph.mode, "ttft_ms": ph.ttft_ms, "concurrency": ph.concurrency, "wall_seconds": ph.wall_seconds,
             "errors": ph.errors, "cpu_seconds": ph.cpu, "samples": [vars(s) for s in ph.samples]}
            for ph in phases], indent=1))
    return 0


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["embedded", "split", "both"], default="both")
    parser.add_argument("--runs", type=int, default=200, help="measured runs per configuration (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="runs in flight for the concurrent phase")
    parser.add_argument("--ttft-ms", default="50",
                        help="the fake model's time to first token, ms (default 50)")
    parser.add_argument("--no-raw", dest="raw", action="store_false",
                        help="do not also measure with a model TTFT of 0")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted sequential runs per model TTFT first")
    parser.add_argument("--run-timeout", type=float, default=30.0, help="seconds before one run counts as failed")
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="a configuration issues no new run after this many seconds")
    parser.add_argument("--json", help="also write every sample to this file")
    parser.add_argument("--serve-fakellm", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_fakellm:
        serve_fakellm(args.serve_fakellm, [float(x) for x in args.ttft_ms.split(",")])
        return 0
    args.ttft_ms = float(args.ttft_ms)
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; services stopped and cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
