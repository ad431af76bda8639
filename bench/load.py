"""Load on the split stack, over HTTP: how many runs per second it sustains, what each run and each
streamed token costs in CPU, and how many live streams one gateway holds.

    uv run python bench/load.py throughput --concurrency 1,10,50,200 --seconds 20
    uv run python bench/load.py streams --runs 2000 --tokens 40 --tps 20
    uv run python bench/load.py idle

Every measure starts its own split stack (every service in its own process on PostgreSQL, Redis
and RabbitMQ: a fresh database, a unique queue and Redis key prefix, all removed at the end) and
the fake OpenAI-compatible model (libs/fakellm) in its own process. The client is this process
(aiohttp; its CPU is reported apart and not counted as Agentry's).

**throughput**: a closed loop at each concurrency C: C clients, each starting a run on a fresh
thread (threads made beforehand, untimed), reading its SSE stream to `run_finished`, then
starting the next, for `--seconds` after `--warmup-seconds` of uncounted runs. The model answers
~14 tokens (`--tokens`) at 200 tokens/s after 50 ms (`--ttft-ms`). Reported: runs/s, run latency
(start request sent → `run_finished` received) p50/p99, and CPU ms per run of every process
(user + system from /proc/<pid>/stat, deltas over the counted window divided by the runs
completed in it), Agentry's processes summed, plus PostgreSQL, Redis and RabbitMQ (all their
processes on the machine, so anything else using them at the time is counted too).

**streams**: `--runs` N runs started at once (each on its own fresh thread; the start requests go
out together, `--start-concurrency` at a time), each stream opened right after its start
answered, each model reply `--tokens` K tokens at `--tps` tokens/s after `--ttft-ms`. Reported:
how many completed, how many streams were cut (ended without `run_finished`, or an HTTP error),
TTFT (start sent → first `text_delta`) and total (→ `run_finished`) p50/p99, peak RSS of every
process (sampled every 0.25 s), and CPU per streamed token (CPU of runner worker + gateway +
Redis over the measure, divided by the tokens delivered, counted as the words of the text
deltas, the fake model's tokens, so deltas the worker merged still count every token; the per-run
fixed cost measured by `throughput` is subtracted when `--per-run-cpu-ms` is given, and without it
that figure is mostly the runs' fixed cost).

**idle**: RSS of every process of a started split stack after one run, once it has settled. The
venv must hold compiled bytecode, as `make setup` and the image leave it (otherwise, where
PYTHONDONTWRITEBYTECODE is set, each process compiles what it imports and holds more memory).

Bounded: every run has a timeout (`--run-timeout`), each measure stops issuing runs at its end,
and every process started is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
import orjson
from durable import split_stack as durable_split_stack
from ttft import pct, tracing_env

from agentry.fakellm import FakeLLMProcess

now = time.monotonic
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
INFRA = {"postgres": "postgresql", "redis-server": "redis", "beam.smp": "rabbitmq"}
TERMINAL = ("completed", "failed", "cancelled")


# --------------------------------------------------------------------------- /proc


# The gateway's rate limits (sign-ups and sign-ins per address, run starts per account) would
# refuse a benchmark's burst from one client: it measures the platform, not the limits.


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def infra_cpu() -> dict[str, float]:
    """CPU seconds so far of every PostgreSQL, Redis and RabbitMQ process on the machine (the
    counters of processes that ended in between are lost: PostgreSQL backends of closed
    connections; the stack keeps its pools open, so few are)."""
    totals = dict.fromkeys(INFRA.values(), 0.0)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            continue
        if comm in INFRA:
            totals[INFRA[comm]] += cpu_seconds(int(entry.name))
    return totals


def descendants(pid: int) -> list[int]:
    """pid and every process below it (prefork workers are children of the worker service)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


class Processes:
    """The stack's processes by name (a service's forked children counted with it)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def cpu(self) -> dict[str, float]:
        out = {name: sum(cpu_seconds(p) for p in descendants(pid)) for name, pid in self.pids.items()}
        out.update(infra_cpu())
        return out

    def rss(self) -> dict[str, float]:
        return {name: sum(rss_mb(p) for p in descendants(pid)) for name, pid in self.pids.items()}


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    gateway_url: str
    procs: Processes


@contextlib.asynccontextmanager
async def split_stack(llm: FakeLLMProcess, data_dir: Path, env: dict[str, str]):
    """durable.py's split stack (fresh database, queue and key prefix; per-account limits lifted
    for the one account that drives the load), with every process's pid for /proc."""
    async with durable_split_stack(llm, data_dir, {"AGENTRY_LOG_LEVEL": "WARNING", **env}) as stack:
        pids = {name: p.pid for name, p in stack.procs.procs.items()}
        pids["fakellm"] = llm.proc.pid
        yield Stack(stack.gateway_url, Processes(pids))


# --------------------------------------------------------------------------- the client


@dataclass
class Result:
    t0: float
    first_token: float | None = None
    finished: float | None = None
    tokens: int = 0
    error: str | None = None


async def new_user(session: aiohttp.ClientSession, base: str) -> dict[str, str]:
    email, password = f"load-{uuid.uuid4().hex[:10]}@example.com", "benchmark password 1234"
    async with session.post(f"{base}/api/auth/signup", json={"email": email, "password": password}) as r:
        r.raise_for_status()
    async with session.post(f"{base}/api/auth/token", json={"email": email, "password": password}) as r:
        r.raise_for_status()
        return {"Authorization": f"Bearer {(await r.json())['access_token']}"}


async def new_threads(session: aiohttp.ClientSession, base: str, headers: dict, count: int) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(i: int) -> str:
        async with gate, session.post(f"{base}/api/threads", json={"name": f"load {i}"}, headers=headers) as r:
            r.raise_for_status()
            return (await r.json())["thread_id"]

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def one_run(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict,
    thread_id: str,
    model: str,
    timeout: float,
    start_gate: asyncio.Semaphore | None = None,
) -> Result:
    result = Result(now())
    try:
        async with asyncio.timeout(timeout):
            async with contextlib.AsyncExitStack() as gate:
                if start_gate is not None:
                    await gate.enter_async_context(start_gate)
                async with session.post(
                    f"{base}/api/threads/{thread_id}/agent/start",
                    json={"model_name": f"openai/{model}", "prompt": "load"},
                    headers=headers,
                ) as r:
                    if r.status != 202:
                        result.error = f"start {r.status}: {(await r.text())[:200]}"
                        return result
                    run_id = (await r.json())["agent_run_id"]
            async with session.get(f"{base}/api/agent-run/{run_id}/stream", headers=headers) as r:
                if r.status != 200:
                    result.error = f"stream {r.status}: {(await r.text())[:200]}"
                    return result
                async for line in r.content:
                    if not line.startswith(b"data:"):
                        continue
                    event = orjson.loads(line[5:])
                    kind = event["type"]
                    if kind == "text_delta":
                        # The fake model's tokens are words: a merged delta counts each of them.
                        result.tokens += len(event.get("text", "").split())
                        if result.first_token is None:
                            result.first_token = now()
                    elif kind == "run_finished":
                        result.finished = now()
                        if event.get("reason") != "completed":
                            result.error = f"run ended {event.get('reason')}: {str(event)[:200]}"
                        return result
            result.error = "cut: stream ended without run_finished"
    except TimeoutError:
        result.error = f"timeout after {timeout:.0f}s"
    except aiohttp.ClientError as exc:
        result.error = f"cut: {exc!r}"[:300]
    return result


def scripts(tokens: int, tps: float, ttft_ms: float) -> dict:
    text = " ".join(f"w{i}" for i in range(tokens))
    return {"load": {"turns": [{"text": text}], "tokens_per_second": tps, "ttft_seconds": ttft_ms / 1000}}


def connector(limit: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=limit, limit_per_host=limit, force_close=False)


# --------------------------------------------------------------------------- measures


def cpu_cells(cpu: dict[str, float], runs: int) -> tuple[float, str]:
    per_run = {name: sec * 1000 / max(runs, 1) for name, sec in cpu.items()}
    agentry = sum(v for k, v in per_run.items() if k not in INFRA.values() and k not in ("fakellm", "client"))
    parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(per_run.items(), key=lambda kv: -kv[1]) if v >= 0.05)
    return agentry, parts


async def throughput(args) -> list[str]:
    rows = [
        "| concurrency | runs | runs/s | latency p50 ms | p99 ms | Agentry CPU ms/run | CPU ms per run by process |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="agentry-load-") as tmp:
        data_dir = Path(tmp)
        with FakeLLMProcess(scripts(args.tokens, 200, args.ttft_ms), data_dir=data_dir / "llm") as llm:
            async with split_stack(llm, data_dir, env_of(args)) as stack:
                base = stack.gateway_url
                levels = [int(c) for c in args.concurrency.split(",")]
                async with aiohttp.ClientSession(connector=connector(2 * max(levels) + 16)) as session:
                    headers = await new_user(session, base)
                    for level in levels:
                        budget = int((args.seconds + args.warmup_seconds) * 150) + level
                        threads = await new_threads(session, base, headers, min(budget, args.max_threads))
                        it = iter(threads)
                        results: list[Result] = []
                        counting = False
                        stop_at = now() + args.warmup_seconds + args.seconds

                        async def client() -> None:
                            while now() < stop_at:
                                thread_id = next(it, None)
                                if thread_id is None:
                                    return
                                r = await one_run(session, base, headers, thread_id, "load", args.run_timeout)
                                if counting and r.t0 >= window_start:
                                    results.append(r)

                        window_start = now() + args.warmup_seconds
                        tasks = [asyncio.create_task(client()) for _ in range(level)]
                        await asyncio.sleep(args.warmup_seconds)
                        counting = True
                        profilers = start_profilers(args, stack, f"c{level}", args.seconds)
                        cpu0, client0, t0 = stack.procs.cpu(), cpu_seconds(os.getpid()), now()
                        await asyncio.gather(*tasks)
                        stop_profilers(profilers)
                        wall = now() - t0
                        cpu1, client1 = stack.procs.cpu(), cpu_seconds(os.getpid())
                        ok = [r for r in results if r.error is None]
                        errors = [r.error for r in results if r.error]
                        cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}
                        cpu["client"] = client1 - client0
                        agentry, parts = cpu_cells(cpu, len(ok))
                        lat = [(r.finished - r.t0) * 1000 for r in ok]
                        row = (
                            (
                                f"| {level} | {len(ok)} | {len(ok) / wall:.1f} | "
                                f"{pct(lat, 50):.0f} | {pct(lat, 99):.0f} | {agentry:.1f} | {parts} |"
                            )
                            if ok
                            else f"| {level} | 0 | - | - | - | - | errors: {errors[:2]} |"
                        )
                        if errors:
                            row += f" ({len(errors)} errors, first: {errors[0][:120]})"
                        rows.append(row)
                        print(row, file=sys.stderr, flush=True)
    return rows


async def streams(args) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="agentry-load-") as tmp:
        if args.keep_logs:
            tmp = args.keep_logs  # the services' logs stay there (logs/<service>.log)
            Path(tmp).mkdir(parents=True, exist_ok=True)
        data_dir = Path(tmp)
        with FakeLLMProcess(scripts(args.tokens, args.tps, args.ttft_ms), data_dir=data_dir / "llm") as llm:
            async with split_stack(llm, data_dir, env_of(args)) as stack:
                base = stack.gateway_url
                async with aiohttp.ClientSession(
                    connector=connector(2 * args.runs + 16), read_bufsize=2**16
                ) as session:
                    headers = await new_user(session, base)
                    threads = await new_threads(session, base, headers, args.runs)
                    peak: dict[str, float] = {}
                    done = asyncio.Event()

                    async def sample_rss() -> None:
                        while not done.is_set():
                            for k, v in stack.procs.rss().items():
                                peak[k] = max(peak.get(k, 0.0), v)
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(done.wait(), 0.25)

                    sampler = asyncio.create_task(sample_rss())
                    profilers = start_profilers(args, stack, f"streams{args.runs}", args.profile_seconds)
                    gate = asyncio.Semaphore(args.start_concurrency)
                    cpu0, client0, t0 = stack.procs.cpu(), cpu_seconds(os.getpid()), now()
                    results = await asyncio.gather(
                        *(one_run(session, base, headers, t, "load", args.run_timeout, gate) for t in threads)
                    )
                    wall = now() - t0
                    cpu1, client1 = stack.procs.cpu(), cpu_seconds(os.getpid())
                    done.set()
                    await sampler
                    stop_profilers(profilers)
    ok = [r for r in results if r.error is None]
    cut = [r for r in results if r.error and r.error.startswith("cut")]
    other = [r for r in results if r.error and not r.error.startswith("cut")]
    tokens = sum(r.tokens for r in results)
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu1}
    cpu["client"] = client1 - client0
    agentry, parts = cpu_cells(cpu, len(ok))
    model_ttft = args.ttft_ms
    ttft = [(r.first_token - r.t0) * 1000 for r in ok if r.first_token]
    total = [(r.finished - r.t0) * 1000 for r in ok]
    hot = sum(cpu.get(k, 0.0) for k in ("worker", "gateway", "redis"))
    fixed = args.per_run_cpu_ms / 1000 * len(ok) if args.per_run_cpu_ms else 0.0
    per_token_us = (hot - fixed) * 1e6 / tokens if tokens else float("nan")
    rows = [
        f"{args.runs} runs started at once, {args.tokens} tokens each at {args.tps:g} tok/s after "
        f"{model_ttft:g} ms; wall {wall:.1f} s",
        "",
        "| completed | cut | other errors | TTFT p50 ms | TTFT p99 ms | total p50 ms | total p99 ms "
        "| tokens | CPU µs/token (worker+gateway+redis) | Agentry CPU ms/run |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(ok)} | {len(cut)} | {len(other)} | {pct(ttft, 50) if ttft else float('nan'):.0f} | "
        f"{pct(ttft, 99) if ttft else float('nan'):.0f} | {pct(total, 50) if total else float('nan'):.0f} | "
        f"{pct(total, 99) if total else float('nan'):.0f} | {tokens} | {per_token_us:.0f} | {agentry:.1f} |",
        "",
        f"CPU ms per run by process: {parts}",
        "Peak RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(peak.items(), key=lambda kv: -kv[1])),
    ]
    if cut or other:
        import collections
        import re

        # By kind: a run's own error text, with ids and numbers taken out.
        kinds = collections.Counter(re.sub(r"\b\d+\b|'seq': \d+", "N", r.error or "") for r in cut + other)
        rows.append("Errors by kind: " + "; ".join(f"{n} × {kind}" for kind, n in kinds.most_common(5)))
    return rows


async def idle(args) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="agentry-load-") as tmp:
        data_dir = Path(tmp)
        with FakeLLMProcess(scripts(args.tokens, 200, args.ttft_ms), data_dir=data_dir / "llm") as llm:
            async with split_stack(llm, data_dir, env_of(args)) as stack:
                async with aiohttp.ClientSession() as session:
                    headers = await new_user(session, stack.gateway_url)
                    (thread,) = await new_threads(session, stack.gateway_url, headers, 1)
                    r = await one_run(session, stack.gateway_url, headers, thread, "load", args.run_timeout)
                    if r.error:
                        raise RuntimeError(r.error)
                await asyncio.sleep(args.settle_seconds)
                rss = stack.procs.rss()
    rss.pop("fakellm", None)
    total = sum(rss.values())
    import importlib.util

    import grpc

    compiled = importlib.util.cache_from_source(grpc.__file__)
    warning = [] if Path(compiled).exists() else [f"WARNING: no bytecode ({compiled}): run `make setup` first"]
    return warning + [
        f"Idle RSS after one run, MB: total {total:.0f}: "
        + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rss.items(), key=lambda kv: -kv[1]))
    ]


def start_profilers(args, stack: Stack, label: str, seconds: float) -> list:
    """py-spy flame graphs (SVG) of the worker, gateway, runner api and billing while the measure runs."""
    if not args.profile:
        return []
    import subprocess

    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name in ("worker", "gateway", "runner", "billing"):
        pid = stack.procs.pids[name]
        pids = descendants(pid)
        target = pids[-1] if len(pids) > 1 and name == "worker" else pid  # a prefork child, if any
        procs.append(
            subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(target),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--format",
                    args.profile_format,
                    "--output",
                    str(out / f"{label}-{name}.{'svg' if args.profile_format == 'flamegraph' else 'txt'}"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def stop_profilers(procs: list) -> None:
    for p in procs:
        try:
            p.wait(60)
        except Exception:  # noqa: BLE001 - a profiler that hangs is killed, the measure stands
            p.kill()


def env_of(args) -> dict[str, str]:
    env = {}
    env.update(tracing_env(getattr(args, "tracing", "prometheus")))
    for item in args.env or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


async def main_async(args) -> int:
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    measure = {"throughput": throughput, "streams": streams, "idle": idle}[args.measure]
    rows = await measure(args)
    print(f"\n{args.measure}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}\n")
    print("\n".join(rows))
    return 0


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("measure", choices=["throughput", "streams", "idle"])
    parser.add_argument("--concurrency", default="1,10,50,200", help="throughput: closed-loop levels")
    parser.add_argument("--seconds", type=float, default=20.0, help="throughput: counted seconds per level")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="throughput: uncounted seconds first")
    parser.add_argument("--max-threads", type=int, default=6000, help="throughput: fresh threads per level, at most")
    parser.add_argument("--runs", type=int, default=500, help="streams: runs started at once")
    parser.add_argument("--start-concurrency", type=int, default=200, help="streams: start requests in flight")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per model reply (14; streams: 40)")
    parser.add_argument("--keep-logs", metavar="DIR", help="streams: run the stack in DIR and keep its logs there")
    parser.add_argument("--tps", type=float, default=20.0, help="streams: model tokens per second")
    parser.add_argument("--ttft-ms", type=float, default=50.0, help="the model's time to first token")
    parser.add_argument(
        "--per-run-cpu-ms",
        type=float,
        default=0.0,
        help="streams: fixed CPU per run (worker+gateway+redis) to subtract for the per-token cost",
    )
    parser.add_argument("--run-timeout", type=float, default=120.0)
    parser.add_argument("--settle-seconds", type=float, default=5.0, help="idle: wait before reading RSS")
    parser.add_argument("--profile", metavar="DIR", help="write py-spy flame graphs of worker and gateway here")
    parser.add_argument(
        "--profile-format",
        choices=["flamegraph", "raw"],
        default="flamegraph",
        help="flamegraph (SVG) or raw (collapsed stacks, for scripts)",
    )
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="streams: profile this long")
    parser.add_argument("--env", action="append", help="KEY=VALUE for every service (repeatable)")
    parser.add_argument(
        "--tracing",
        choices=["off", "prometheus", "all"],
        default="prometheus",
        help="observability: off (AGENTRY_METRICS=off), prometheus (the default: metrics, no "
        "tracing) or all (metrics + OTLP export + Langfuse, to a discarding local endpoint)",
    )
    args = parser.parse_args(argv)
    if args.tokens is None:
        args.tokens = 40 if args.measure == "streams" else 14
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(main_async(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; services stopped and cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
