"""What one streamed token costs below Agentry's own code: the floor under CPU per token.

    uv run python bench/floor.py            # prints a Markdown table

`bench/load.py` measures CPU per streamed token across the runner worker, Redis and the gateway.
This measures, in one process, the layers a token passes through on the runner's side, each
against the same fake OpenAI-compatible model (libs/fakellm, its own process; 200 tokens/s after
50 ms), by the same method as load.py: CPU of this process per reply of 214 tokens minus per
reply of 14 tokens, divided by 200, with 10 replies streaming at a time (as load.py's C = 10),
on uvloop like the services:

- **bare aiohttp**: a client that only reads the HTTP body (`iter_any`) and drops it: no line
  splitting, no JSON. Nothing Agentry does per token can cost less than this unless the model
  sends tokens together.
- **DirectLane**: agentpress's lane for OpenAI-protocol models (lines split, each chunk decoded).
- **LiteLLMModel**: the lane plus the translation of each chunk into a ModelDelta, as the agent
  loop receives it.
- **Agent.run**: agentpress's whole loop for a one-step run (prompt, call, processor, events),
  its events dropped.
- **Agent.run + RunEventSink**: the same with the worker's event sink (numbering, encoding,
  deltas coalesced in its default 20 ms window) appending to `RedisEventStream`, as a worker
  streams a run. Its durable writes go to a repository that only accepts them (the database's
  cost is per run, not per token, and cancels out of the difference).

And the per-event floor on the Redis side, with 10 writers each appending `--events` events
(2,000) one at a time and awaiting each (as a run does):

- **bare XADD**: redis-py's `xadd` awaited per event.
- **RedisEventStream.append**: Agentry's append (batched per process, idempotent per seq).

CPU is this process's (user + system, `resource.getrusage`); Redis's own CPU is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid

import aiohttp
import uvloop

from agentpress.loop import Agent
from agentpress.memory import MemoryMessageStore, MemorySandbox, RecordingUsageSink
from agentpress.messages import UserMessage
from agentpress.models import LiteLLMModel, ModelRequest
from agentpress.openai_stream import DirectLane
from agentpress.ports import RunContext
from agentry.fakellm import FakeLLMProcess
from agentry.runner.sinks import RunEventSink
from agentry.servicekit.eventstream.redis import RedisEventStream

MESSAGES = [{"role": "user", "content": "hi"}]


def _scripts() -> dict:
    return {
        f"t{n}": {
            "turns": [{"text": " ".join(f"w{i}" for i in range(n))}],
            "tokens_per_second": 200,
            "ttft_seconds": 0.05,
        }
        for n in (14, 214)
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _per_reply(one, seconds: float, concurrency: int) -> float:
    """CPU ms per call of `one()` with `concurrency` calls in flight for `seconds`."""
    await one()  # connections made, modules imported: not counted
    calls = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal calls
        while time.monotonic() < stop:
            await one()
            calls += 1

    before = _cpu()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (_cpu() - before) * 1000 / max(calls, 1)


async def model_layers(base_url: str, redis_url: str, seconds: float, concurrency: int) -> list[tuple[str, float]]:
    rows = []
    async with aiohttp.ClientSession() as session:

        def bare(model: str):
            body = {"model": model, "messages": MESSAGES, "stream": True}

            async def one() -> None:
                async with session.post(base_url + "/chat/completions", json=body) as response:
                    async for _ in response.content.iter_any():
                        pass

            return one

        def lane(model: str):
            direct = DirectLane(model=model, provider_model=model, base_url=base_url, api_key="x", timeout=60)

            async def one() -> None:
                async for _ in direct.stream(MESSAGES, {}):
                    pass

            return one

        def translated(model: str):
            llm = LiteLLMModel(f"openai/{model}", api_base=base_url, api_key="x", timeout=60)
            request = ModelRequest(messages=MESSAGES, tools=[])

            async def one() -> None:
                async for _ in llm.stream(request):
                    pass

            return one

        def agent_run(model: str, stream: RedisEventStream | None = None):
            agent = Agent(f"openai/{model}", api_base=base_url, api_key="x", max_steps=1)

            async def one() -> None:
                run_id = str(uuid.uuid4())
                events = (
                    _Dropped()
                    if stream is None
                    else RunEventSink(run_id, _Accepting(), stream, last_seq=0, delta_coalesce=0.02)
                )
                ctx = RunContext(
                    run_id=run_id,
                    thread_id="floor",
                    messages=MemoryMessageStore([UserMessage(text="hi")]),
                    sandbox=MemorySandbox(),
                    usage=RecordingUsageSink(),
                    events=events,
                )
                await agent.run(ctx)

            return one

        prefix = f"agentry:floor:{uuid.uuid4().hex[:8]}:"
        stream = RedisEventStream(redis_url, key_prefix=prefix)
        layers = (
            ("bare aiohttp", bare),
            ("DirectLane", lane),
            ("LiteLLMModel", translated),
            ("Agent.run", agent_run),
            ("Agent.run + RunEventSink", lambda model: agent_run(model, stream)),
        )
        for name, make in layers:
            short = await _per_reply(make("t14"), seconds, concurrency)
            long = await _per_reply(make("t214"), seconds, concurrency)
            rows.append((name, (long - short) / 200 * 1000))
        await stream.close()
        await _delete_keys(redis_url, prefix)
    return rows


async def _delete_keys(redis_url: str, prefix: str) -> None:
    from redis import asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class _Dropped:
    async def emit(self, event) -> None:
        pass


class _Accepting:
    """A run repository that accepts every write (the sink's durable events and the run's end)."""

    def __getattr__(self, name: str):
        async def accept(*args, **kwargs) -> bool:
            return True

        return accept


async def append_layers(redis_url: str, events: int, concurrency: int) -> list[tuple[str, float]]:
    from redis import asyncio as aioredis

    prefix = f"agentry:floor:{uuid.uuid4().hex[:8]}:"
    data = b'{"seq":1,"type":"text_delta","data":{"text":"w1 w2 w3 w4 "}}'
    rows = []
    client = aioredis.Redis.from_url(redis_url)
    try:

        async def bare(writer: int) -> None:
            key = f"{prefix}bare:{writer}"
            for seq in range(1, events + 1):
                await client.xadd(key, {b"d": data, b"t": b"0"}, id=f"{seq}-0", maxlen=10_000, approximate=True)

        stream = RedisEventStream(redis_url, key_prefix=prefix)

        async def ours(writer: int) -> None:
            run_id = f"run{writer}-{uuid.uuid4().hex[:6]}"
            for seq in range(1, events + 1):
                await stream.append(run_id, seq, data)

        for name, writer in (("bare XADD", bare), ("RedisEventStream.append", ours)):
            await writer(-1)  # connections made: not counted
            before = _cpu()
            await asyncio.gather(*(writer(i) for i in range(concurrency)))
            rows.append((name, (_cpu() - before) * 1e6 / (events * concurrency)))
        await stream.close()
    finally:
        await client.aclose()
        await _delete_keys(redis_url, prefix)
    return rows


async def main(args) -> None:
    with FakeLLMProcess(_scripts()) as llm:
        model = await model_layers(llm.base_url, args.redis_url, args.seconds, args.concurrency)
    appends = await append_layers(args.redis_url, args.events, args.concurrency)
    print(f"CPU per streamed token, this process only ({args.concurrency} at a time, 214 - 14 tokens):\n")
    print("| layer (runner side) | µs per token |\n|---|---:|")
    for name, micros in model:
        print(f"| {name} | {micros:.1f} |")
    print(f"\nCPU per event appended ({args.concurrency} writers, {args.events} events each, awaited one by one):\n")
    print("| append | µs per event |\n|---|---:|")
    for name, micros in appends:
        print(f"| {name} | {micros:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per layer and reply length")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--events", type=int, default=2000, help="events per writer (appends)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    uvloop.run(main(parser.parse_args()))
