"""A worker whose models all take agentpress's direct lane never imports LiteLLM (~200 MB of RSS
per process): a run of an `openai/...` model against the fake LLM, with the worker's own warm-up,
agent factory, prices and context window, leaves `litellm` out of sys.modules. A model outside
the lane still imports it. Each case runs in a fresh interpreter (this one has LiteLLM already)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from agentry.fakellm.process import FakeLLMProcess

_RUN = textwrap.dedent(
    """
    import asyncio, json, math, sys

    from agentpress import (MemoryMessageStore, MemorySandbox, RecordingEventSink, RecordingUsageSink,
                            RunContext, UserMessage)
    from agentpress.models import LiteLLMModel, model_context_window
    from agentry.runner.config import RunnerSettings
    from types import SimpleNamespace
    from agentry.runner.main import _warm_up_litellm
    from agentry.runner.worker import agent_factory

    model, base = sys.argv[1], sys.argv[2]
    settings = RunnerSettings(default_model=model, llm_api_base=base, llm_api_key="k")
    _warm_up_litellm(settings)
    after_warm_up = "litellm" in sys.modules

    async def main():
        run = SimpleNamespace(run_id="r1", thread_id="t1", model=model, reasoning_effort="")
        agent = agent_factory(settings)(run)
        events = RecordingEventSink()
        usage = RecordingUsageSink(None)
        ctx = RunContext(run_id="r1", thread_id="t1", messages=MemoryMessageStore([UserMessage(text="hello")]),
                         sandbox=MemorySandbox(), usage=usage, events=events, cancel=asyncio.Event())
        await agent.run(ctx)
        return "".join(e.text for e in events.of_type("text_delta"))

    text = asyncio.run(main())
    print(json.dumps({
        "after_warm_up": after_warm_up,
        "text": text,
        "nan_cost": math.isnan(LiteLLMModel(model).cost(10, 10)),
        "known_cost": LiteLLMModel("openai/gpt-4o-mini").cost(1000, 1000),
        "window": model_context_window("openai/gpt-4o-mini"),
        "litellm": "litellm" in sys.modules,
    }))
    """
)


@pytest.fixture(scope="module")
def llm_base(tmp_path_factory):
    scripts = {"limited": [{"error": {"status": 429, "headers": {"retry-after": "2"}}}]}
    with FakeLLMProcess(scripts, ttft_seconds=0.0, data_dir=tmp_path_factory.mktemp("llm")) as llm:
        yield llm.base_url


def _run(model: str, base: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _RUN, model, base], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_direct_lane_worker_never_imports_litellm(llm_base):
    result = _run("openai/agentry-demo", llm_base)
    assert result["text"], result  # the fake model answered through the direct lane
    assert result["after_warm_up"] is False
    assert result["nan_cost"] is True  # no price known: NaN, as LiteLLM says
    assert result["known_cost"] > 0
    assert result["window"] == 128000
    assert result["litellm"] is False


def test_a_model_outside_the_direct_lane_imports_litellm_at_warm_up(llm_base):
    # anthropic/... goes through LiteLLM: the warm-up imports it before the worker takes work.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from agentry.runner.config import RunnerSettings; "
            "from agentry.runner.main import _warm_up_litellm; "
            "_warm_up_litellm(RunnerSettings(default_model='anthropic/claude-x')); "
            "print('litellm' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "True"


_FAIL = textwrap.dedent(
    """
    import asyncio, json, sys

    from agentpress.errors import ModelCallError
    from agentpress.models import LiteLLMModel, ModelRequest

    async def main():
        model = LiteLLMModel("openai/limited", api_base=sys.argv[1], api_key="k")
        before = "litellm" in sys.modules
        try:
            async for _ in model.stream(ModelRequest(messages=[{"role": "user", "content": "hi"}], tools=[])):
                pass
        except ModelCallError as exc:
            return {"before": before, "kind": exc.kind, "retry_after": exc.retry_after, "message": str(exc),
                    "after": "litellm" in sys.modules}
        return {"before": before, "kind": None}

    print(json.dumps(asyncio.run(main())))
    """
)


def test_a_failed_direct_call_is_classified_without_importing_litellm(llm_base):
    # The error a direct call raises is already classified as LiteLLM's would be (both lanes
    # alike, test_litellm_live): importing LiteLLM for its exception types cost seconds of CPU
    # in a worker under load, just when calls were failing.
    out = subprocess.run(
        [sys.executable, "-c", _FAIL, llm_base], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["before"] is False
    assert result["kind"] == "rate_limit" and result["retry_after"] == 2.0, result
    assert "HTTP 429" in result["message"], result
    assert result["after"] is False


_CLOSED = textwrap.dedent(
    """
    import asyncio, gc, sys

    from agentpress.models import LiteLLMModel, ModelRequest

    async def main():
        model = LiteLLMModel("openai/agentry-demo", api_base=sys.argv[1], api_key="k")
        request = ModelRequest(messages=[{"role": "user", "content": "hi"}], tools=[])
        return "".join([d.text async for d in model.stream(request)])

    for _ in range(2):  # each loop has its own session, closed when the loop shuts down
        assert asyncio.run(main())
    gc.collect()
    print("ok")
    """
)


def test_the_direct_lanes_session_closes_with_its_event_loop(llm_base):
    # aiohttp reports a session left open ("Unclosed client session") when it is collected:
    # asyncio.run's shutdown closes it, so nothing is reported.
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _CLOSED, llm_base], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "ok"
    assert "Unclosed" not in out.stderr, out.stderr[-3000:]
