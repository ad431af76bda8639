"""Durable runs, measured in split mode over HTTP: how fast a stop stops a streaming run, and how
fast a run whose worker process is SIGKILLed streams again on another one.

    uv run python bench/durable.py --stops 50 --kills 20 --leases 10,3

**Stop latency** (`--stops N`, one split stack, one worker process): N runs, one after the other,
each a ~10 s scripted model reply (300 tokens at 30 tokens/s). The client opens the run's SSE
stream right after the start, waits for its 3rd `text_delta` plus a random 0-200 ms (so the stop
lands anywhere in the token stream), sends POST /agent-run/{id}/stop and measures, from sending
it: the POST's answer, `run_finished` arriving on the stream, and GET /agent-run/{id} first
answering `cancelled` (polled every 5 ms). A stop is *lost* when the run ends any other way.

**Failover** (`--kills K` per lease in `--leases`, one split stack per lease): one worker service
forking 2 worker processes (AGENTRY_RUNNER_PROCESSES=2: the prefork parent replaces a dead one
in milliseconds), lease AGENTRY_RUNNER_LEASE_SECONDS=L, everything else default. Per trial:
`--runs-per-kill` runs (each ~30 s of model output), all followed on SSE; once every run
streams, and after a random 0-L s more (so the kill lands anywhere in the lease heartbeat's
cycle, which renews every L/3), the worker process holding the first run (from agent_runs.worker_id,
`<host>-<pid>-<hex>`) is SIGKILLed, and for every run it held the benchmark measures from the
kill to `run_resumed` on the stream (the first event the new holder writes; tokens the dead
process had sent just before the kill may still arrive first, and are counted, not timed) and
to the first `text_delta` after that (the model call made again). It also reads the run's lease_expires_at
just before the kill: the takeover cannot happen before the lease lapses, so
`kill -> run_resumed` minus the lease time left is the platform's own takeover overhead
(redelivery, claim, reading the stream's tail, writing run_resumed). The runs are then stopped.

Each part starts its own processes on a fresh PostgreSQL database, RabbitMQ queue and Redis key
prefix, all removed at the end. The fake model (libs/fakellm) runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import orjson
from ttft import AMQP_URL, NO_RATE_LIMITS, PG_ADMIN, REDIS_URL, _cleanup_split, make_user, pct

from agentry.fakellm import FakeLLMProcess

now = time.monotonic
TERMINAL = ("completed", "failed", "cancelled")
SCRIPTS = {
    # ~10 s: the stop always lands while the model talks.
    "bench-stop": {"turns": [{"text": " ".join(f"token{i}" for i in range(300))}], "tokens_per_second": 30},
    # ~30 s: still talking after a kill, the lease running out and the model call made again.
    "bench-long": {"turns": [{"text": " ".join(f"token{i}" for i in range(900))}], "tokens_per_second": 30},
}


# --------------------------------------------------------------------------- processes


# The gateway's rate limits (sign-ups and sign-ins per address, run starts per account) would
# refuse a benchmark's burst from one client: it measures the platform, not the limits.


@dataclass
class Stack:
    gateway_url: str
    database: str  # asyncpg DSN of the stack's database
    procs: object


@contextlib.asynccontextmanager
async def split_stack(llm: FakeLLMProcess, data_dir: Path, env: dict[str, str]):
    from agentry.cli.split import SplitConfig, SplitProcesses, free_port

    unique = f"bench{uuid.uuid4().hex[:10]}"
    database = f"agentry_{unique}"
    admin = httpx.URL(PG_ADMIN)
    host, port, user = admin.host, admin.port or 5432, admin.username or "postgres"
    queue_name, redis_prefix = f"agentry.runs.{unique}", f"agentry:{unique}:"
    procs = SplitProcesses(
        SplitConfig(
            database_url=f"postgresql+asyncpg://{user}@{host}:{port}/{database}",
            redis_url=REDIS_URL,
            amqp_url=AMQP_URL,
            data_dir=data_dir,
            gateway_port=free_port(),
            grpc_ports={name: free_port() for name in ("auth", "billing", "sandbox", "runner", "worker")},
            llm_api_base=llm.base_url,
            queue_name=queue_name,
            redis_prefix=redis_prefix,
            extra_env={"AGENTRY_RUNNER_MAX_ACTIVE_RUNS_PER_ACCOUNT": "0", **NO_RATE_LIMITS, **env},
        )
    )
    try:
        await asyncio.to_thread(procs.start)
        yield Stack(procs.gateway_url, f"postgresql://{user}@{host}:{port}/{database}", procs)
    finally:
        await asyncio.to_thread(procs.stop)
        await _cleanup_split(database, queue_name, redis_prefix)
        with contextlib.suppress(Exception):  # the dead-letter queue too
            import aio_pika

            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                await (await connection.channel()).queue_delete(f"{queue_name}.dead")


# --------------------------------------------------------------------------- the client


@dataclass
class Follower:
    run_id: str
    events: list[dict] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    @property
    def terminal(self) -> dict | None:
        return self.events[-1] if self.events and self.events[-1]["type"] == "run_finished" else None

    async def until(self, predicate, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self.changed.clear()
                if self.task is not None and self.task.done():
                    self.task.result()
                    if not predicate(self):
                        raise RuntimeError(f"the stream of {self.run_id} ended: {self.events[-2:]}")
                await self.changed.wait()

    def first_after(self, t: float, kind: str | None = None) -> tuple[dict, float] | None:
        for event, at in zip(self.events, self.arrived):
            if at > t and (kind is None or event["type"] == kind):
                return event, at
        return None


def follow(client: httpx.AsyncClient, run_id: str, headers: dict) -> Follower:
    seen = Follower(run_id)

    async def read() -> None:
        last = None
        while seen.terminal is None:
            extra = {"Last-Event-ID": str(last)} if last is not None else {}
            try:
                async with client.stream(
                    "GET", f"/api/agent-run/{run_id}/stream", headers={**headers, **extra}
                ) as response:
                    if response.status_code != 200:
                        raise RuntimeError(f"stream answered {response.status_code}")
                    event_id = data = None
                    async for line in response.aiter_lines():
                        if line.startswith("id:"):
                            event_id = int(line[3:].strip())
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                        elif line == "" and data is not None:
                            seen.arrived.append(now())
                            seen.events.append(orjson.loads(data))
                            last = event_id
                            seen.changed.set()
                            event_id = data = None
            except httpx.TransportError:
                await asyncio.sleep(0.1)

    seen.task = asyncio.create_task(read())
    seen.task.add_done_callback(lambda _: seen.changed.set())
    return seen


async def start_run(client: httpx.AsyncClient, headers: dict, model: str) -> str:
    thread = await client.post("/api/threads", json={}, headers=headers)
    thread.raise_for_status()
    started = await client.post(
        f"/api/threads/{thread.json()['thread_id']}/agent/start",
        headers=headers,
        json={"model_name": f"openai/{model}", "prompt": "go"},
    )
    if started.status_code != 202:
        raise RuntimeError(f"start answered {started.status_code}: {started.text[:200]}")
    return started.json()["agent_run_id"]


async def stop_and_wait(client: httpx.AsyncClient, headers: dict, run_ids: list[str], timeout: float = 60) -> None:
    for run_id in run_ids:
        await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
    async with asyncio.timeout(timeout):
        for run_id in run_ids:
            while (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()["status"] not in TERMINAL:
                await asyncio.sleep(0.1)


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{pct(values, 50) * 1000:.0f} / {pct(values, 99) * 1000:.0f} / {max(values) * 1000:.0f}"


# --------------------------------------------------------------------------- stop latency


@dataclass
class StopSample:
    answered: float
    streamed: float | None  # run_finished on the stream, None if it never came in time
    observed: float | None  # GET showed `cancelled`
    answer: str
    reason: str | None  # the run_finished reason; anything but "cancelled" is a lost stop
    tokens_before: int


async def bench_stops(args, llm: FakeLLMProcess, data_dir: Path) -> dict:
    print(f"[stop] starting a split stack (1 worker process); {args.stops} stops...", file=sys.stderr, flush=True)
    samples: list[StopSample] = []
    async with split_stack(llm, data_dir / "stop", {}) as stack:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
            headers = await make_user(client)
            warm = follow(client, await start_run(client, headers, "bench-stop"), headers)  # the first model call
            await warm.until(lambda s: any(e["type"] == "text_delta" for e in s.events), 120)
            await stop_and_wait(client, headers, [warm.run_id])
            for i in range(args.stops):
                run_id = await start_run(client, headers, "bench-stop")
                seen = follow(client, run_id, headers)
                try:
                    await seen.until(lambda s: sum(e["type"] == "text_delta" for e in s.events) >= 3, 60)
                    await asyncio.sleep(random.uniform(0, 0.2))
                    samples.append(await _one_stop(client, headers, run_id, seen))
                finally:
                    await stop_and_wait(client, headers, [run_id])
                    seen.task.cancel()
                s = samples[-1]
                if s.reason != "cancelled":
                    print(f"  stop {i}: LOST, the run ended {s.reason} {s.streamed}s after the stop", file=sys.stderr)
    ok = [s for s in samples if s.reason == "cancelled"]
    lost = [s for s in samples if s.reason != "cancelled"]
    result = {
        "stops": len(samples),
        "lost": len(lost),
        "answered": [s.answered for s in samples],
        "streamed_all": [s.streamed if s.streamed is not None else float("inf") for s in samples],
        "streamed": [s.streamed for s in ok],
        "observed": [s.observed for s in ok],
        "lost_detail": [vars(s) for s in lost],
    }
    print("\nStop latency, split mode, ms from sending POST /stop (p50 / p99 / max):", flush=True)
    print(
        f"| stops | lost | POST answered | run_finished on the stream | GET shows cancelled |\n"
        f"|---:|---:|---:|---:|---:|\n"
        f"| {len(samples)} | {len(lost)} | {ms(result['answered'])} | {ms(result['streamed'])} | "
        f"{ms(result['observed'])} |",
        flush=True,
    )
    if lost:
        print(
            f"lost stops ended: {[(s.reason, round(s.streamed or -1, 2)) for s in lost]}; over all stops, "
            f"run_finished p50 / p99 / max: {ms(result['streamed_all'])}",
            flush=True,
        )
    return result


async def _one_stop(client: httpx.AsyncClient, headers: dict, run_id: str, seen: Follower) -> StopSample:
    tokens = sum(e["type"] == "text_delta" for e in seen.events)
    t0 = now()
    answer = await client.post(f"/api/agent-run/{run_id}/stop", headers=headers)
    answered = now() - t0
    answer.raise_for_status()
    observed = None
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while observed is None:
                status = (await client.get(f"/api/agent-run/{run_id}", headers=headers)).json()["status"]
                if status == "cancelled":
                    observed = now() - t0
                elif status in TERMINAL:
                    break
                else:
                    await asyncio.sleep(0.005)
    with contextlib.suppress(TimeoutError, RuntimeError):
        await seen.until(lambda s: s.terminal is not None, 20)
    terminal = seen.terminal
    streamed = seen.arrived[-1] - t0 if terminal is not None else None
    return StopSample(
        answered, streamed, observed, answer.json()["status"], terminal["reason"] if terminal else None, tokens
    )


# --------------------------------------------------------------------------- failover


@dataclass
class Takeover:
    lease: float
    lease_left: float  # lease time left on the run at the kill
    resumed: float | None  # kill -> run_resumed on the stream
    token: float | None  # kill -> first text_delta after run_resumed
    event: str | None  # "run_resumed", or what came instead
    reason: str | None  # run_resumed's reason (worker_lost)
    late: int = 0  # events sent before the kill that arrived after it
    attempt: int | None = None


def worker_pid(worker_id: str | None) -> int | None:
    if not worker_id:
        return None
    try:
        return int(worker_id.rsplit("-", 2)[1])  # <hostname>-<pid>-<hex>; the hostname may hold dashes
    except (IndexError, ValueError):
        return None


async def bench_failover(args, llm: FakeLLMProcess, data_dir: Path, lease: float) -> dict:
    import asyncpg

    print(
        f"[failover] lease {lease:g} s: a split stack with 2 prefork worker processes; {args.kills} kills...",
        file=sys.stderr,
        flush=True,
    )
    env = {"AGENTRY_RUNNER_PROCESSES": "2", "AGENTRY_RUNNER_LEASE_SECONDS": f"{lease:g}"}
    takeovers: list[Takeover] = []
    misses = 0
    async with split_stack(llm, data_dir / f"lease{lease:g}", env) as stack:
        db = await asyncpg.connect(stack.database)
        try:
            async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=httpx.Timeout(30, read=120)) as client:
                headers = await make_user(client)
                for trial in range(args.kills):
                    run_ids = [await start_run(client, headers, "bench-long") for _ in range(args.runs_per_kill)]
                    followers = [follow(client, run_id, headers) for run_id in run_ids]
                    try:
                        for f in followers:
                            await f.until(lambda s: any(e["type"] == "text_delta" for e in s.events), 120)
                        # Anywhere in the heartbeat's cycle (it renews every third of a lease).
                        await asyncio.sleep(random.uniform(0, lease))
                        rows = {
                            r["run_id"]: r
                            for r in await db.fetch(
                                "SELECT run_id::text AS run_id, worker_id, lease_expires_at FROM agent_runs "
                                "WHERE run_id::text = ANY($1::text[])",
                                run_ids,
                            )
                        }
                        pid = worker_pid(rows[run_ids[0]]["worker_id"])
                        if pid is None:
                            misses += 1
                            continue
                        victims = [r for r in run_ids if worker_pid(rows[r]["worker_id"]) == pid]
                        left = {r: rows[r]["lease_expires_at"] - time.time() for r in victims}
                        os.kill(pid, signal.SIGKILL)
                        killed = now()
                        for r in victims:
                            f = followers[run_ids.index(r)]
                            with contextlib.suppress(TimeoutError):
                                await f.until(
                                    lambda s, k=killed: (
                                        (
                                            (resumed := s.first_after(k, "run_resumed")) is not None
                                            and s.first_after(resumed[1], "text_delta") is not None
                                        )
                                        or s.terminal is not None
                                    ),
                                    lease + 60,
                                )
                            resumed = f.first_after(killed, "run_resumed")
                            token = f.first_after(resumed[1], "text_delta") if resumed else None
                            # Tokens the process sent just before it died may arrive just after.
                            late = [
                                e["type"]
                                for e, at in zip(f.events, f.arrived)
                                if at > killed and (resumed is None or at < resumed[1])
                            ]
                            takeovers.append(
                                Takeover(
                                    lease,
                                    left[r],
                                    resumed[1] - killed if resumed else None,
                                    token[1] - killed if token else None,
                                    "run_resumed" if resumed else (late[0] if late else None),
                                    resumed[0].get("reason") if resumed else None,
                                    len(late),
                                    resumed[0].get("attempt") if resumed else None,
                                )
                            )
                        t = takeovers[-len(victims) :]
                        print(
                            f"  kill {trial + 1}/{args.kills}: pid {pid} held {len(victims)} of {len(run_ids)} runs; "
                            f"run_resumed after "
                            f"{', '.join(f'{x.resumed:.2f}s' if x.resumed is not None else 'never' for x in t)} "
                            f"(lease left {', '.join(f'{x.lease_left:.2f}s' for x in t)})",
                            file=sys.stderr,
                            flush=True,
                        )
                    finally:
                        await stop_and_wait(client, headers, run_ids)
                        for f in followers:
                            f.task.cancel()
                    await asyncio.sleep(0.5)  # the prefork parent has replaced the process by now
        finally:
            await db.close()
    print(
        f"  run_resumed reasons: {sorted({t.reason for t in takeovers if t.reason})}; events in flight at "
        f"the kill, arriving after it: {sum(t.late for t in takeovers)} in {sum(t.late > 0 for t in takeovers)} "
        f"runs",
        file=sys.stderr,
        flush=True,
    )
    resumed = [t.resumed for t in takeovers if t.resumed is not None and t.event == "run_resumed"]
    overhead = [t.resumed - t.lease_left for t in takeovers if t.resumed is not None and t.event == "run_resumed"]
    tokens = [t.token for t in takeovers if t.token is not None and t.event == "run_resumed"]
    wrong = [vars(t) for t in takeovers if t.event != "run_resumed"]
    return {
        "lease": lease,
        "kills": args.kills - misses,
        "runs": len(takeovers),
        "resumed": resumed,
        "overhead": overhead,
        "token": tokens,
        "lease_left": [t.lease_left for t in takeovers],
        "not_resumed": wrong,
        "within_target": sum(r <= lease + 1 for r in resumed),
    }


def failover_rows(results: list[dict]) -> list[str]:
    rows = [
        "| lease | kills | runs killed | kill → run_resumed p50 / p99 / max | ≤ lease + 1 s "
        "| lease left at the kill p50 (min–max) | takeover overhead p50 / p99 / max "
        "| kill → first token again p50 / p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        left = r["lease_left"]
        rows.append(
            f"| {r['lease']:g} s | {r['kills']} | {r['runs']} | {ms(r['resumed'])} ms | "
            f"{r['within_target']}/{len(r['resumed'])} | "
            f"{pct(left, 50):.2f} s ({min(left):.2f}–{max(left):.2f}) | {ms(r['overhead'])} ms | "
            f"{pct(r['token'], 50) * 1000:.0f} / {pct(r['token'], 99) * 1000:.0f} ms |"
            if r["resumed"]
            else f"| {r['lease']:g} s | {r['kills']} | {r['runs']} | no run resumed |||||"
        )
    return rows


# --------------------------------------------------------------------------- main


async def main_async(args) -> int:
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    out: dict = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="agentry-durable-") as tmp:
        data_dir = Path(tmp)
        llm = FakeLLMProcess(SCRIPTS, ttft_seconds=0.05, data_dir=data_dir)
        try:
            if args.stops:
                out["stop"] = await bench_stops(args, llm, data_dir)
            if args.kills:
                out["failover"] = []
                for lease in args.leases:
                    out["failover"].append(await bench_failover(args, llm, data_dir, lease))
                    print("\nFailover after SIGKILL of the worker process holding the run (ms unless said):")
                    print("\n".join(failover_rows(out["failover"])), flush=True)
        finally:
            llm.stop()
    out["load_after"] = os.getloadavg()
    print(
        f"\n{os.cpu_count()} CPUs; load average {out['load_before'][0]:.2f} before, {out['load_after'][0]:.2f} after",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stops", type=int, default=50, help="stops during a model stream (0: skip)")
    parser.add_argument("--kills", type=int, default=20, help="worker SIGKILLs per lease (0: skip)")
    parser.add_argument("--leases", default="10,3", help="lease lengths to measure failover with, seconds")
    parser.add_argument(
        "--runs-per-kill",
        type=int,
        default=4,
        help="runs started before each kill (those the killed process held are measured)",
    )
    parser.add_argument("--json", help="also write every sample to this file")
    args = parser.parse_args(argv)
    args.leases = [float(x) for x in args.leases.split(",") if x]
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; services stopped and cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
