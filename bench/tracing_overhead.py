"""In-process cost of tracing a model call: per chunk and per call, with no observer, with the
Langfuse observer (export to a discarding local endpoint) and with Langfuse + OpenTelemetry.

A model that yields N ready-made deltas (no I/O) is streamed through agentpress's ObservedModel;
the difference to the bare stream is what observation adds. CPU time (process_time), best of
--repeat rounds.

    uv run python bench/tracing_overhead.py --chunks 500 --calls 200
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator

from agentpress.models import ModelDelta, ModelRequest, ModelSettings
from agentpress.observe import FanOut, ObservedModel


class Chunks:
    name = "openai/gpt-4o-mini"
    context_window = None

    def __init__(self, n: int) -> None:
        self.deltas = [ModelDelta(text=f"tok{i} ") for i in range(n - 1)] + [
            ModelDelta(finish_reason="stop", prompt_tokens=100, completion_tokens=n)
        ]

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        for d in self.deltas:
            yield d

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return 0.0


async def consume(model, request: ModelRequest, calls: int) -> float:
    t0 = time.process_time()
    for _ in range(calls):
        async for _ in model.stream(request):
            pass
    return time.process_time() - t0


async def main_async(args) -> None:
    from ttft import trace_sink_url

    from agentry.runner.adapters.langfuse_tracing import LangfuseTracer, Masker

    sink = trace_sink_url()
    tracer = LangfuseTracer(
        public_key=f"pk-lf-{uuid.uuid4().hex[:8]}", secret_key="sk-lf-bench", base_url=sink, masker=Masker()
    )
    request = ModelRequest(
        [{"role": "system", "content": "You are a bench."}, {"role": "user", "content": "Say many tokens. " * 20}],
        [],
        ModelSettings(),
    )
    inner = Chunks(args.chunks)
    run = tracer.start_run(
        run_id=str(uuid.uuid4()), thread_id="t", account_id="a", user_id="u", model=inner.name, attempt=1
    )
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from agentry.runner.adapters.otel_observer import OtelRunObserver

    trace.set_tracer_provider(TracerProvider())  # spans made and ended, not exported
    configs = {
        "none": inner,
        "langfuse": ObservedModel(inner, run),
        "langfuse+otel": ObservedModel(inner, FanOut([run, OtelRunObserver()])),
    }
    best = {
        name: min([await consume(m, request, args.calls) for _ in range(args.repeat)]) for name, m in configs.items()
    }
    base = best["none"]
    print(f"{args.calls} calls x {args.chunks} chunks, best of {args.repeat} (CPU):")
    print("| observer | CPU per call ms | added per call ms | added per chunk µs (if all per chunk) |")
    print("|---|---:|---:|---:|")
    for name, sec in best.items():
        per_call = sec / args.calls * 1000
        added = (sec - base) / args.calls * 1000
        print(f"| {name} | {per_call:.3f} | {added:.3f} | {added * 1000 / args.chunks:.2f} |")
    # per-call fixed part: the same with 1-chunk replies
    one = Chunks(1)
    fixed = {
        name: min([await consume(m, request, args.calls) for _ in range(args.repeat)])
        for name, m in {"none": one, "langfuse": ObservedModel(one, run)}.items()
    }
    print(
        f"per call with a 1-chunk reply: +{(fixed['langfuse'] - fixed['none']) / args.calls * 1000:.3f} ms (Langfuse)"
    )
    run.end(outcome="completed")
    await tracer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
