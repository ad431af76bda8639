"""Cost of agentpress's StreamProcessor per streamed chunk, native and XML (synthetic, no network).

Run: uv run python bench/agentpress_processor.py  → prints and writes bench/results/agentpress.md
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import orjson

from agentpress.models import ModelDelta, ToolCallChunk
from agentpress.processor import StreamProcessor
from agentpress.testing import xml_call

CHUNK = 8  # characters per delta, typical of provider token streams
ROUNDS = 30


def _pieces(text: str) -> list[str]:
    return [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)]


def native_stream() -> list[ModelDelta]:
    deltas = [ModelDelta(text=p) for p in _pieces("I will create the files and run the tests now. " * 20)]
    for index in range(5):
        args = orjson.dumps({"path": f"src/mod{index}.py", "content": "def f(x):\n    return x * 2\n" * 40}).decode()
        pieces = _pieces(args)
        deltas.append(ModelDelta(tool_calls=(ToolCallChunk(index, f"call_{index}", "create_file", pieces[0]),)))
        deltas += [ModelDelta(tool_calls=(ToolCallChunk(index, arguments=p),)) for p in pieces[1:]]
    return deltas + [ModelDelta(finish_reason="tool_calls", prompt_tokens=100, completion_tokens=900)]


def xml_stream() -> list[ModelDelta]:
    text = "I will create the files and run the tests now. " * 20
    for index in range(5):
        text += xml_call("create_file", path=f"src/mod{index}.py", content="def f(x):\n    return x * 2\n" * 40)
        text += " Next. "
    return [ModelDelta(text=p) for p in _pieces(text)] + [ModelDelta(finish_reason="stop")]


async def measure(deltas: list[ModelDelta], mode: str) -> list[float]:
    per_chunk: list[float] = []

    async def emit(_event) -> None:
        return None

    for _ in range(ROUNDS):
        calls: list = []
        proc = StreamProcessor(emit, calls.append, mode)  # type: ignore[arg-type]
        for delta in deltas:
            start = time.perf_counter_ns()
            await proc.feed(delta)
            per_chunk.append((time.perf_counter_ns() - start) / 1000)
        await proc.close()
        assert len(calls) == 5, calls
    return per_chunk


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


async def main() -> None:
    rows = []
    for name, deltas, mode in (("native", native_stream(), "native"), ("xml", xml_stream(), "xml")):
        samples = await measure(deltas, mode)
        rows.append((name, len(deltas), statistics.median(samples), _quantile(samples, 0.99), statistics.mean(samples)))
    lines = [
        "# agentpress processor: cost per streamed chunk",
        "",
        f"Synthetic streams: text then 5 `create_file` calls (~1 KB of arguments each), {CHUNK}-character chunks, "
        f"{ROUNDS} rounds, events emitted to a no-op sink. `uv run python bench/agentpress_processor.py`.",
        "",
        "| stream | chunks | p50 µs | p99 µs | mean µs |",
        "|---|---:|---:|---:|---:|",
        *(f"| {n} | {c} | {p50:.1f} | {p99:.1f} | {mean:.1f} |" for n, c, p50, p99, mean in rows),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    out = Path(__file__).parent / "results" / "agentpress.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)


if __name__ == "__main__":
    asyncio.run(main())
