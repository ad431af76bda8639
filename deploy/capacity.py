"""Capacity model of an Agentry deployment: how many worker and gateway pods a load needs, and what
it asks of PostgreSQL, Redis and RabbitMQ; with a simulation of N worker pods x M concurrent runs.

    uv run python deploy/capacity.py --runs-per-second 5 --seconds-per-run 60
    uv run python deploy/capacity.py --runs-per-second 5 --seconds-per-run 60 --workers 20

The CPU costs default to BENCHMARKS.md (split mode, concurrency 10, HEAD 4b566ab: worker 44.6 ms,
runner api 9.5 ms per run; gateway ~10 ms, billing ~5 ms from the TTFT runs) for the benchmark's
short scripted run; scale them for longer runs (more turns, more tokens). docs/operations.md
explains the model.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    runs_per_second: float
    seconds_per_run: float  # mean wall time of a run (mostly the LLM)
    streams_per_run: float = 1.0  # clients watching a live run
    idle_streams: int = 0  # thread streams open with no run going


@dataclass(frozen=True)
class Costs:
    """CPU milliseconds per run, by process (BENCHMARKS.md), and per-run traffic."""

    worker_cpu_ms: float = 44.6
    gateway_cpu_ms: float = 10.0
    runner_api_cpu_ms: float = 9.5
    billing_cpu_ms: float = 5.0
    db_transactions_per_run: float = 12.0  # start, claim, messages, durable events, end
    events_per_run: float = 60.0  # Redis stream entries (token deltas dominate)
    event_bytes: float = 250.0


@dataclass(frozen=True)
class Shape:
    """What one pod of each kind is given (overlays/production/resources.yaml)."""

    concurrency: int = 250  # runs a worker process drives in steady state (KEDA target); the ceiling AGENTRY_RUNNER_WORKER_CONCURRENCY is 1000
    processes: int = 1  # AGENTRY_RUNNER_PROCESSES
    worker_cores: float = 1.0  # the worker's CPU request
    gateway_cores: float = 0.5
    target_cpu: float = 0.6  # utilisation the autoscalers aim for
    streams_per_gateway: int = 2000  # SSE budget per gateway pod (measured: BENCHMARKS.md, Performance at scale)
    db_pool: int = 15  # AGENTRY_<SVC>_DATABASE_POOL_SIZE + MAX_OVERFLOW per process
    lease_seconds: float = 10.0
    event_ttl_seconds: float = 3600.0


@dataclass
class Plan:
    concurrent_runs: float
    workers_for_slots: int
    workers_for_cpu: int
    workers: int
    gateways: int
    runner_api: int
    billing: int
    db_connections_max: int
    db_transactions_per_second: float
    redis_writes_per_second: float
    redis_memory_mb: float
    amqp_publishes_per_second: float


def plan(load: Load, costs: Costs = Costs(), shape: Shape = Shape()) -> Plan:
    """Little's law for the runs in flight, then pods for slots and for CPU (the larger wins)."""
    in_flight = load.runs_per_second * load.seconds_per_run
    slots = shape.concurrency * shape.processes
    for_slots = math.ceil(in_flight / slots)
    for_cpu = math.ceil(load.runs_per_second * costs.worker_cpu_ms / 1000 / (shape.worker_cores * shape.target_cpu))
    workers = max(2, for_slots, for_cpu)
    streams = in_flight * load.streams_per_run + load.idle_streams
    gateways = max(
        2,
        math.ceil(load.runs_per_second * costs.gateway_cpu_ms / 1000 / (shape.gateway_cores * shape.target_cpu)),
        math.ceil(streams / shape.streams_per_gateway),
    )
    runner_api = max(2, math.ceil(load.runs_per_second * costs.runner_api_cpu_ms / 1000 / (0.5 * shape.target_cpu)))
    billing = max(2, math.ceil(load.runs_per_second * costs.billing_cpu_ms / 1000 / (0.25 * shape.target_cpu)))
    processes = workers * shape.processes + runner_api + billing + 2 + 1  # + auth x2 + sandbox
    heartbeats = workers * shape.processes / (shape.lease_seconds / 3)
    retained_runs = load.runs_per_second * (load.seconds_per_run + shape.event_ttl_seconds)
    return Plan(
        concurrent_runs=in_flight,
        workers_for_slots=for_slots,
        workers_for_cpu=for_cpu,
        workers=workers,
        gateways=gateways,
        runner_api=runner_api,
        billing=billing,
        db_connections_max=processes * shape.db_pool,
        db_transactions_per_second=load.runs_per_second * costs.db_transactions_per_run + heartbeats,
        redis_writes_per_second=load.runs_per_second * costs.events_per_run,
        redis_memory_mb=retained_runs * costs.events_per_run * costs.event_bytes / 1e6,
        amqp_publishes_per_second=load.runs_per_second,
    )


@dataclass
class Simulation:
    runs: int
    wait_p50: float
    wait_p95: float
    wait_p99: float
    max_queue: int
    slot_utilisation: float
    worker_cpu_utilisation: float


def simulate(
    load: Load,
    workers: int,
    *,
    costs: Costs = Costs(),
    shape: Shape = Shape(),
    duration: float = 1800.0,
    seed: int = 1,
    spread: float = 0.5,
) -> Simulation:
    """N worker pods x M slots, runs arriving as a Poisson process, each holding a slot for a
    log-normal time (mean `seconds_per_run`, sigma `spread`); FIFO queue, as RabbitMQ delivers.
    Returns how long runs waited for a slot and how busy the slots and the workers' CPU were."""
    rng = random.Random(seed)
    slots = workers * shape.concurrency * shape.processes
    mu = math.log(load.seconds_per_run) - spread**2 / 2
    free = slots
    busy_time = 0.0
    queue: list[float] = []  # arrival times waiting for a slot
    ends: list[float] = []  # heap of slot release times
    waits: list[float] = []
    max_queue = 0
    t = rng.expovariate(load.runs_per_second)
    while t < duration:
        while ends and ends[0] <= t:  # slots freed before this arrival serve the queue first
            released = heapq.heappop(ends)
            free += 1
            if queue:
                arrived = queue.pop(0)
                waits.append(released - arrived)
                run = rng.lognormvariate(mu, spread)
                busy_time += run
                heapq.heappush(ends, released + run)
                free -= 1
        if free:
            run = rng.lognormvariate(mu, spread)
            busy_time += run
            heapq.heappush(ends, t + run)
            free -= 1
            waits.append(0.0)
        else:
            queue.append(t)
            max_queue = max(max_queue, len(queue))
        t += rng.expovariate(load.runs_per_second)
    waits.sort()

    def pct(p: float) -> float:
        return waits[min(len(waits) - 1, int(p * len(waits)))] if waits else 0.0

    cpu = load.runs_per_second * costs.worker_cpu_ms / 1000 / (workers * shape.worker_cores)
    return Simulation(
        runs=len(waits),
        wait_p50=pct(0.50),
        wait_p95=pct(0.95),
        wait_p99=pct(0.99),
        max_queue=max_queue,
        slot_utilisation=min(1.0, busy_time / (slots * duration)),
        worker_cpu_utilisation=cpu,
    )


def smallest_fleet(
    load: Load, *, p99_wait: float = 1.0, costs: Costs = Costs(), shape: Shape = Shape(), seed: int = 1
) -> tuple[int, Simulation]:
    """The fewest worker pods (from the plan's bound up) whose simulated p99 wait for a slot is
    at most `p99_wait` seconds and whose CPU stays under the target."""
    workers = max(1, plan(load, costs, shape).workers_for_cpu, math.ceil(plan(load, costs, shape).workers_for_slots))
    while True:
        result = simulate(load, workers, costs=costs, shape=shape, seed=seed)
        if result.wait_p99 <= p99_wait and result.worker_cpu_utilisation <= shape.target_cpu:
            return workers, result
        workers += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-per-second", type=float, required=True)
    parser.add_argument("--seconds-per-run", type=float, default=60.0)
    parser.add_argument("--streams-per-run", type=float, default=1.0)
    parser.add_argument("--idle-streams", type=int, default=0)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=Shape.concurrency,
        help="runs one worker process is planned to drive (KEDA's target per pod / processes)",
    )
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--worker-cpu-ms", type=float, default=Costs.worker_cpu_ms)
    parser.add_argument("--workers", type=int, default=None, help="simulate this many worker pods")
    parser.add_argument("--p99-wait", type=float, default=1.0, help="seconds a run may wait for a slot (p99)")
    args = parser.parse_args()
    load = Load(args.runs_per_second, args.seconds_per_run, args.streams_per_run, args.idle_streams)
    costs = Costs(worker_cpu_ms=args.worker_cpu_ms)
    shape = Shape(concurrency=args.concurrency, processes=args.processes)
    p = plan(load, costs, shape)
    print(f"runs in flight (Little's law): {p.concurrent_runs:.0f}")
    print(
        f"worker pods: {p.workers} (slots need {p.workers_for_slots}, CPU needs {p.workers_for_cpu}); "
        f"gateway pods: {p.gateways}; runner-api: {p.runner_api}; billing: {p.billing}"
    )
    print(
        f"PostgreSQL: up to {p.db_connections_max} connections (pools), "
        f"{p.db_transactions_per_second:.0f} transactions/s; Redis: {p.redis_writes_per_second:.0f} XADD/s, "
        f"~{p.redis_memory_mb:.0f} MB of streams; RabbitMQ: {p.amqp_publishes_per_second:.1f} publishes/s"
    )
    if args.workers is not None:
        workers, sim = args.workers, simulate(load, args.workers, costs=costs, shape=shape)
    else:
        workers, sim = smallest_fleet(load, p99_wait=args.p99_wait, costs=costs, shape=shape)
    print(
        f"simulated {workers} worker pods x {shape.concurrency * shape.processes} runs, {sim.runs} runs: "
        f"wait for a slot p50 {sim.wait_p50:.2f}s p95 {sim.wait_p95:.2f}s p99 {sim.wait_p99:.2f}s, "
        f"longest queue {sim.max_queue}, slots {sim.slot_utilisation:.0%} busy, "
        f"worker CPU {sim.worker_cpu_utilisation:.0%} of requests"
    )


if __name__ == "__main__":
    main()
