"""agentpress.catalog answers as LiteLLM does, or not at all: over every row of LiteLLM's table
(as `openai/<key>`) and a few unknown names, each provider, price and window it gives without
LiteLLM equals LiteLLM's own."""

from __future__ import annotations

import math

import orjson

from agentpress import catalog
from agentpress.models import _not_mapped, import_litellm

_UNKNOWN = ["openai/no-such-model-xyz", "openai/agentry-demo", "openai/gpt-4o-mini-2099-01-01"]


def _names() -> list[str]:
    path = catalog._table_path()
    assert path is not None
    return ["openai/" + key for key in orjson.loads(path.read_bytes())] + _UNKNOWN


def test_every_answer_without_litellm_is_litellms():
    litellm = import_litellm()
    answered = {"provider": 0, "price": 0, "unknown": 0}
    for model in _names():
        name = catalog.openai_provider(model)
        if name is not None:
            answered["provider"] += 1
            assert litellm.get_llm_provider(model) == (name, "openai", None, None), model
            assert litellm.get_llm_provider(model, api_base="http://h/v1") == (name, "openai", None, "http://h/v1")
        found = catalog.lookup(model)
        if found is None:
            continue
        try:
            info = litellm.get_model_info(model)
            window = info.get("max_input_tokens") or info.get("max_tokens")
        except _not_mapped(litellm):
            window = None
        assert (found.entry.window if found.known and found.entry else None) == window, model
        for prompt, completion in ((10, 20), (150_000, 1_000), (300_000, 5_000)):
            try:
                p, c = litellm.cost_per_token(model=model, prompt_tokens=prompt, completion_tokens=completion)
                real = float(p + c)
            except _not_mapped(litellm):
                real = math.nan
            if not found.known:
                answered["unknown"] += 1
                assert math.isnan(real), model
            elif found.entry is not None and found.entry.plain_price:
                answered["price"] += 1
                mine = prompt * (found.entry.input_cost or 0.0) + completion * (found.entry.output_cost or 0.0)
                assert math.isclose(mine, real, rel_tol=1e-9, abs_tol=1e-15), (model, prompt, completion)
    # The comparison compared something: common models are answered without LiteLLM.
    assert answered["provider"] > 1000 and answered["price"] > 30 and answered["unknown"] > 0, answered
    assert catalog.answers("openai/gpt-4o-mini") and catalog.answers("openai/agentry-demo")
    assert not catalog.answers("anthropic/claude-3-5-sonnet") and not catalog.answers("gpt-4o-mini")
    assert catalog.lookup("openai/gpt-4o-mini-2099-01-01") is None  # LiteLLM strips the date: it decides
