"""CPU cost of the Prometheus metrics of one run, in process (issue 11: microseconds per run).

Replays the events of a typical run (run_started, 2 turns of 20 token deltas with a tool call
each, a final turn of 20 deltas, usage per turn, run_finished) through the worker's RunObserver,
plus the per-run counters the worker, the runner api, the gateway and the gRPC interceptors touch
(active runs, queue wait, runs started/finished, duration, 8 gRPC calls on each end, 6 HTTP
requests), and reports the CPU time per run and per token delta, metrics on and off.

    uv run python bench/metrics_cost.py [--runs 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def measure(runs: int) -> dict[str, float]:
    from agentpress import FinishReason, RunFinished, RunStarted, TextDelta, ToolCallFinished, UsageReported
    from agentry.runner import metrics
    from agentry.servicekit import metrics as kit

    events = [RunStarted(run_id="r", thread_id="t", model="openai/gpt-4o-mini")]
    for turn in range(3):
        events += [TextDelta(text="tok ") for _ in range(20)]
        events.append(
            UsageReported(model="openai/gpt-4o-mini", prompt_tokens=500, completion_tokens=20, cost_usd=0.0001)
        )
        if turn < 2:
            events.append(
                ToolCallFinished(
                    call_id="c", name="run_command", arguments={}, output="ok", error=None, duration_ms=12.0
                )
            )
    events.append(RunFinished(reason=FinishReason.COMPLETED))
    deltas = sum(type(e) is TextDelta for e in events)
    handled, seconds = kit._server_families()
    http = kit.family("counter", "agentry_http_requests_total", "", ("method", "route", "status"))

    def one_run() -> None:
        seq = iter(range(1, 10_000))
        current = [0]

        def last_seq() -> int:
            return current[0]

        active = metrics.active_runs()
        active.inc()
        metrics.runs_started().labels(metrics.model_label("openai/gpt-4o-mini")).inc()
        metrics.queue_wait().observe(0.05)
        observer = metrics.RunObserver(model="openai/gpt-4o-mini", created_at=time.time() - 1, seq=last_seq)
        for event in events:
            current[0] = next(seq)
            observer.observe(event)
        observer.flush()
        metrics.record_finished("completed", "completed")
        metrics.run_duration().labels("completed").observe(1.0)
        active.dec()
        for _ in range(8):  # gRPC calls, server and client side, as the interceptors do them
            kit.child(handled, "svc", "Method", "unary", "OK").inc()
            kit.child(seconds, "svc", "Method", "unary").observe(0.002)
            kit.child(kit._client_families()[0], "svc", "Method", "unary", "OK").inc()
            kit.child(kit._client_families()[1], "svc", "Method", "unary").observe(0.002)
        for _ in range(6):  # HTTP requests, as the gateway's middleware counts them
            kit.child(http, "POST", "/api/threads/{thread_id}/agent/start", "202").inc()

    for _ in range(200):
        one_run()
    started = time.process_time()
    for _ in range(runs):
        one_run()
    cpu = time.process_time() - started
    return {"us_per_run": cpu / runs * 1e6, "us_per_delta": cpu / runs / deltas * 1e6, "deltas": deltas}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20_000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.runs)
        print(f"{result['us_per_run']:.1f} {result['us_per_delta']:.3f} {result['deltas']}")
        return 0
    for mode in ("on", "off"):
        env = {**os.environ, "AGENTRY_METRICS": mode}
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--runs", str(args.runs)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        print(
            f"metrics {mode:>3}: {float(out[0]):7.1f} us CPU per run ({out[2]} token deltas: "
            f"{float(out[1]):.3f} us per delta, all metrics of the run included)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
