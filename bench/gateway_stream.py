"""What the gateway spends per streamed event, alone: its SSE route, its Redis reader, its sockets.

    uv run python bench/gateway_stream.py                       # 10 and 50 streams, 2 rounds
    uv run python bench/gateway_stream.py --streams 10 --events 200 --gap-ms 20 --profile out.prof

`bench/load.py` measures the gateway inside the whole split stack, where its cost per event is
mixed with the runner's and the database's and moves with everything else on two cores. This
runs the gateway by itself, as in production (`create_app`, uvicorn on uvloop, its
`RedisEventStream` on the local Redis), in a process of its own; only what it would ask other
services is answered in-process (the credential is taken as the account, `GetRun` answers
`running`). This process is the rest of the world:

- **writers**: N runs, each appending `--events` events (a ~80-byte `text_delta`) with Agentry's
  own `RedisEventStream.append`, one every `--gap-ms` (±20%), each run starting at a random
  moment within its first gap, so the runs' appends interleave as real runs' do (runs that
  append at the same instants let one read cover many of them, which is not what a gateway
  sees), then the terminal event;
- **clients**: N SSE clients (aiohttp), one per run, opened before the first append, reading
  `GET /api/agent-run/{id}/stream` to its terminal event.

Reported per configuration: events delivered, wall time, the gateway's CPU (user + system from
`/proc/<pid>/stat`) from the first append to the last client's end, divided by the events
delivered (µs per event), and the Redis commands run meanwhile (`INFO commandstats` deltas: the
shared Redis, so anything else using it is counted too). `--profile FILE` runs the gateway
under cProfile for the measured window (slower; for where the time goes, not for the number).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

REDIS_URL = os.environ.get("AGENTRY_BENCH_REDIS", "redis://127.0.0.1:6379/0")

_GATEWAY = r"""
import asyncio, cProfile, os, signal, sys
import uvicorn
from agentry.api.runner.v1 import runner_pb2 as pb
from agentry.gateway.app import create_app
from agentry.gateway.config import GatewaySettings
from agentry.gateway.tokens import Caller
from agentry.gateway.upstreams import Upstreams
from agentry.servicekit.eventstream import RedisEventStream
from agentry.servicekit.server import run_on_event_loop


class Verifier:  # the bearer token is the account id
    async def verify(self, token):
        return Caller(user_id="bench", account_id=token, email="bench@example.com")


class Runner:  # every run exists, is the caller's and is running
    async def GetRun(self, request):
        return pb.Run(agent_run_id=request.agent_run_id, status="running")

    async def ListRunEvents(self, request):
        return pb.ListRunEventsResponse()


async def main(redis_url, prefix, port, profile):
    events = RedisEventStream(redis_url, key_prefix=prefix)
    app = create_app(GatewaySettings())
    app.state.upstreams = Upstreams(auth=None, billing=None, runner=Runner(), events=events, verifier=Verifier())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"))
    server.install_signal_handlers = lambda: None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        loop.add_signal_handler(signal.SIGUSR1, profiler.enable)
        loop.add_signal_handler(signal.SIGUSR2, profiler.disable)
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    if profiler:
        profiler.dump_stats(profile)
    server.should_exit = True
    await serving
    await events.close()


run_on_event_loop(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
"""


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _commandstats(redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


async def measure(streams: int, events: int, gap_ms: float, profile: str | None) -> dict:
    import aiohttp
    from redis import asyncio as aioredis

    from agentry.servicekit.eventstream import RedisEventStream

    prefix = f"bench-gw:{uuid.uuid4().hex[:8]}:"
    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-c", _GATEWAY, REDIS_URL, prefix, str(port)] + ([profile] if profile else [])
    gateway = subprocess.Popen(argv)
    writer = RedisEventStream(REDIS_URL, key_prefix=prefix)
    admin = aioredis.Redis.from_url(REDIS_URL)
    runs = [uuid.uuid4().hex for _ in range(streams)]
    received = dict.fromkeys(runs, 0)
    gap = gap_ms / 1000
    payload = b'{"type":"text_delta","seq":%d,"text":"a few tokens of a reply, as one event"}'
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
            for _ in range(400):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/api/health") as response:
                        await response.read()
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)

            async def client(run: str) -> None:
                url = f"http://127.0.0.1:{port}/api/agent-run/{run}/stream"
                async with session.get(url, headers={"Authorization": "Bearer bench"}) as response:
                    assert response.status == 200, response.status
                    async for line in response.content:
                        if line.startswith(b"data:"):
                            received[run] += 1
                            if b"run_finished" in line:
                                return

            async def write(run: str) -> None:
                await asyncio.sleep(random.uniform(0, gap))
                for seq in range(1, events + 1):
                    await writer.append(run, seq, payload % seq)
                    await asyncio.sleep(gap * random.uniform(0.8, 1.2))
                await writer.append(run, events + 1, b'{"type":"run_finished","seq":%d}' % (events + 1), terminal=True)

            clients = [asyncio.create_task(client(run)) for run in runs]
            await asyncio.sleep(0.5 + streams / 200)  # every stream open and waiting
            if profile:
                gateway.send_signal(signal.SIGUSR1)
            commands, cpu, started = await _commandstats(admin), _cpu_seconds(gateway.pid), time.perf_counter()
            await asyncio.gather(*(write(run) for run in runs))
            await asyncio.gather(*clients)
            cpu, wall = _cpu_seconds(gateway.pid) - cpu, time.perf_counter() - started
            after = await _commandstats(admin)
            if profile:
                gateway.send_signal(signal.SIGUSR2)
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(15)
        await writer.delete(runs)
        await writer.close()
        await admin.aclose()
    delivered = sum(received.values())
    ran = {name: calls - commands.get(name, 0) for name, calls in after.items() if calls - commands.get(name, 0)}
    return {
        "streams": streams,
        "events": delivered,
        "wall_s": round(wall, 2),
        "gateway_cpu_s": round(cpu, 2),
        "gateway_us_per_event": round(cpu / delivered * 1e6, 1),
        "redis_commands": {name: ran[name] for name in sorted(ran) if name not in ("info", "hello", "client|setinfo")},
    }


async def main(args) -> None:
    configs = [(int(n), int(args.events or (4000 // int(n) if int(n) > 10 else 200))) for n in args.streams.split(",")]
    rows = []
    for round_ in range(args.rounds):
        for streams, events in configs:
            # Keep the total event rate the same (500 events/s at the defaults) whatever the streams.
            gap = args.gap_ms if args.gap_ms else streams * 2.0
            result = await measure(streams, events, gap, args.profile)
            result["round"] = round_ + 1
            result["gap_ms"] = gap
            rows.append(result)
            print(json.dumps(result), file=sys.stderr)
    print("| streams | gap ms | round | events | wall s | gateway CPU s | µs per event | Redis commands |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        cmds = ", ".join(f"{name} {n}" for name, n in r["redis_commands"].items())
        print(
            f"| {r['streams']} | {r['gap_ms']:g} | {r['round']} | {r['events']} | {r['wall_s']} | "
            f"{r['gateway_cpu_s']} | {r['gateway_us_per_event']} | {cmds} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="10,50", help="comma-separated numbers of streams, one configuration each")
    parser.add_argument("--events", type=int, default=None, help="events per run (default: 200 at 10, 4000/N above)")
    parser.add_argument("--gap-ms", type=float, default=None, help="ms between a run's appends (default: 2 × streams)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", metavar="FILE", help="cProfile the gateway's measured window into FILE")
    asyncio.run(main(parser.parse_args()))
