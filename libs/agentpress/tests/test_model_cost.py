"""LiteLLMModel.cost: 0.0 only for a model LiteLLM has no price for (said in the log); any other
failure is raised, never hidden as a free call."""

from __future__ import annotations

import logging
import math

from agentpress import LiteLLMModel, models


def test_a_known_model_has_a_price_and_an_unknown_one_is_nan_with_a_warning(caplog):
    # NaN, not 0: an unknown price is billing's decision (refuse, or its default), never free.
    assert LiteLLMModel("openai/gpt-4o-mini").cost(1000, 1000) > 0
    with caplog.at_level(logging.WARNING, logger="agentpress.models"):
        assert math.isnan(LiteLLMModel("openai/no-such-model-xyz").cost(10, 10))
    assert "no price known for model openai/no-such-model-xyz" in caplog.text
    assert models.model_context_window("openai/no-such-model-xyz") is None
    assert models.model_context_window("openai/gpt-4o-mini") > 0
