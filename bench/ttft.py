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
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx

# The sections live in modules of their own; durable.py and load.py import these names from here.
from bench_env import AMQP_URL, NO_RATE_LIMITS, PG_ADMIN, REDIS_URL, tracing_env
from ttft_client import Phase, make_user, run_phase
from ttft_model import FakeLLMProcess, serve_fakellm
from ttft_report import breakdown_rows, cpu_rows, pct, result_rows
from ttft_systems import cleanup_split as _cleanup_split
from ttft_systems import embedded_system, split_system

__all__ = [
    "AMQP_URL",
    "NO_RATE_LIMITS",
    "PG_ADMIN",
    "REDIS_URL",
    "_cleanup_split",
    "main",
    "make_user",
    "pct",
    "tracing_env",
]


async def bench_mode(mode: str, args, llm: FakeLLMProcess, data_dir: Path) -> list[Phase]:
    ttfts = [args.ttft_ms] + ([0.0] if args.raw and args.ttft_ms != 0 else [])
    phases: list[Phase] = []
    print(f"[{mode}] starting services...", file=sys.stderr, flush=True)
    system_cm = (
        embedded_system(llm, data_dir / mode)
        if mode == "embedded"
        else split_system(llm, data_dir / mode, tracing=args.tracing)
    )
    async with system_cm as system:
        limits = httpx.Limits(
            max_connections=4 * args.concurrency + 8, max_keepalive_connections=4 * args.concurrency + 8
        )
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=args.run_timeout, limits=limits) as client:
            headers = await make_user(client)
            print(f"[{mode}] warming up...", file=sys.stderr, flush=True)
            common = {"run_timeout": max(args.run_timeout, 60.0), "max_seconds": args.max_seconds, "warmup": True}
            for ttft in ttfts:
                await run_phase(client, system, llm, headers, ttft_ms=ttft, runs=args.warmup, concurrency=1, **common)
                await run_phase(
                    client,
                    system,
                    llm,
                    headers,
                    ttft_ms=ttft,
                    runs=2 * args.concurrency,
                    concurrency=args.concurrency,
                    **common,
                )
            for ttft in ttfts:
                for concurrency in sorted({1, args.concurrency}):
                    print(
                        f"[{mode}] model ttft {ttft:g} ms, concurrency {concurrency}: {args.runs} runs...",
                        file=sys.stderr,
                        flush=True,
                    )
                    phase = await run_phase(
                        client,
                        system,
                        llm,
                        headers,
                        ttft_ms=ttft,
                        runs=args.runs,
                        concurrency=concurrency,
                        run_timeout=args.run_timeout,
                        max_seconds=args.max_seconds,
                    )
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
        "",
        *result_rows(phases),
        "",
        "Where the time goes, p50 / p99 ms:",
        "",
        *breakdown_rows(phases),
        "",
        "CPU per run:",
        "",
        *cpu_rows(phases),
    ]
    print("\n".join(output))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "mode": ph.mode,
                        "ttft_ms": ph.ttft_ms,
                        "concurrency": ph.concurrency,
                        "wall_seconds": ph.wall_seconds,
                        "errors": ph.errors,
                        "cpu_seconds": ph.cpu,
                        "samples": [vars(s) for s in ph.samples],
                    }
                    for ph in phases
                ],
                indent=1,
            )
        )
    return 0


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["embedded", "split", "both"], default="both")
    parser.add_argument("--runs", type=int, default=200, help="measured runs per configuration (default 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="runs in flight for the concurrent phase")
    parser.add_argument("--ttft-ms", default="50", help="the fake model's time to first token, ms (default 50)")
    parser.add_argument("--no-raw", dest="raw", action="store_false", help="do not also measure with a model TTFT of 0")
    parser.add_argument("--warmup", type=int, default=5, help="uncounted sequential runs per model TTFT first")
    parser.add_argument("--run-timeout", type=float, default=30.0, help="seconds before one run counts as failed")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="a configuration issues no new run after this many seconds"
    )
    parser.add_argument("--json", help="also write every sample to this file")
    parser.add_argument(
        "--tracing",
        choices=["off", "prometheus", "all"],
        default="prometheus",
        help="split mode's observability: off (AGENTRY_METRICS=off), prometheus (default) or all "
        "(metrics + OTLP export + Langfuse to a discarding local endpoint)",
    )
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
