"""Provider errors by class and the retry policy: transient only, Retry-After honoured, bounded."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from agentpress import (
    Agent,
    ContextConfig,
    FinishReason,
    FunctionModel,
    ModelCallError,
    ModelRequest,
    ModelTransientError,
    RetryBudget,
    RetryPolicy,
    ScriptedModel,
)
from agentpress.models import import_litellm
from agentpress.retries import ErrorKind, classify, open_stream, retry_after_seconds

REQUEST = ModelRequest([{"role": "user", "content": "hi"}], [])
POLICY = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=0.002, max_retry_after=60)


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def failing(error: ModelCallError, name: str = "m") -> FunctionModel:
    def reply(request):
        return error

    return FunctionModel(reply, name=name)


def test_retry_after_headers():
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=1_000_000) == pytest.approx(30)
    assert retry_after_seconds({}) is None and retry_after_seconds({"retry-after": "soon"}) is None


def _response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers or {}, request=httpx.Request("POST", "http://x/v1/chat"))


def test_litellm_exceptions_are_classified_with_retry_after():
    litellm = import_litellm()
    args = {"llm_provider": "openai", "model": "gpt-x"}
    cases = [
        (
            litellm.RateLimitError("slow down", response=_response(429, {"retry-after": "3"}), **args),
            ErrorKind.RATE_LIMIT,
            3.0,
        ),
        (litellm.ContextWindowExceededError("too long", **args), ErrorKind.CONTEXT_WINDOW, None),
        (litellm.ContentPolicyViolationError("no", **args), ErrorKind.CONTENT_FILTER, None),
        (litellm.AuthenticationError("bad key", **args), ErrorKind.AUTH, None),
        (litellm.BadRequestError("bad", **args), ErrorKind.BAD_REQUEST, None),
        (litellm.Timeout("late", **args), ErrorKind.TIMEOUT, None),
        (litellm.APIConnectionError("refused", **args), ErrorKind.CONNECTION, None),
        (litellm.ServiceUnavailableError("busy", **args), ErrorKind.OVERLOADED, None),
        (litellm.InternalServerError("oops", **args), ErrorKind.SERVER_ERROR, None),
        (litellm.InternalServerError("Overloaded", **args), ErrorKind.OVERLOADED, None),
    ]
    for exc, kind, retry_after in cases:
        error = classify(exc, litellm)
        assert (error.kind, error.retry_after) == (kind, retry_after), exc
        assert isinstance(error, ModelTransientError) == (
            kind in {"rate_limit", "overloaded", "timeout", "server_error", "connection"}
        )
    assert str(classify(cases[0][0], litellm)).startswith("rate limit reached (HTTP 429)")


async def test_a_rate_limit_waits_retry_after_and_stops_at_the_attempt_limit():
    model = failing(ModelTransientError("429", kind="rate_limit", retry_after=2.0))
    sleeps = Sleeps()
    with pytest.raises(ModelCallError) as info:
        await open_stream([model], REQUEST, POLICY, sleep=sleeps)
    assert len(model.requests) == 3 and sleeps == [2.0, 2.0]
    assert info.value.kind == "rate_limit" and "gave up after 3 attempts" in str(info.value)


async def test_a_retry_after_beyond_the_cap_fails_at_once_naming_it():
    model = failing(ModelTransientError("429", kind="rate_limit", retry_after=600))
    sleeps = Sleeps()
    with pytest.raises(ModelCallError, match="retry after 600 s, more than the 60 s"):
        await open_stream([model], REQUEST, POLICY, sleep=sleeps)
    assert len(model.requests) == 1 and sleeps == []


async def test_the_run_budget_bounds_retries_across_calls():
    budget = RetryBudget(3)
    model = failing(ModelTransientError("503", kind="overloaded"))
    for _ in range(2):
        with pytest.raises(ModelCallError):
            await open_stream([model], REQUEST, POLICY, budget, sleep=Sleeps())
    assert len(model.requests) == 3 + 2  # 3 attempts, then 1 + 1 retry: the budget's 3 retries spent
    assert budget.left == 0


async def test_errors_that_are_not_transient_fail_fast_without_fallbacks():
    primary = failing(ModelCallError("bad key", kind="auth"), name="primary")
    backup = ScriptedModel(["never"], name="backup")
    with pytest.raises(ModelCallError, match="not retried") as info:
        await open_stream([primary, backup], REQUEST, POLICY, sleep=Sleeps())
    assert info.value.kind == "auth" and len(primary.requests) == 1 and not backup.requests


async def test_transient_errors_fall_back_after_the_attempts():
    primary = failing(ModelTransientError("500", kind="server_error"), name="primary")
    backup = ScriptedModel(["from backup"], name="backup")
    opened = await open_stream([primary, backup], REQUEST, POLICY, sleep=Sleeps())
    assert opened.model is backup and len(primary.requests) == 3


async def test_context_window_compresses_first_then_takes_the_larger_model(harness):
    too_long = ModelCallError("context_length_exceeded", kind="context_window")
    small = ScriptedModel([too_long, too_long], name="small")
    big = ScriptedModel(["fits here"], name="big")
    agent = Agent(
        model=small, context_fallback_models=[big], retry=POLICY, context=ContextConfig(context_window=10_000)
    )
    result = await agent.run(harness.ctx)
    assert result.reason is FinishReason.COMPLETED
    assert len(small.requests) == 2 and len(big.requests) == 1
    assert harness.store.messages[-1].text == "fits here"


async def test_a_run_fails_with_a_message_naming_the_cause(harness):
    model = failing(ModelTransientError("429 from provider", kind="rate_limit", retry_after=0.001))
    result = await Agent(model=model, retry=POLICY).run(harness.ctx)
    assert result.reason is FinishReason.ERROR and "429 from provider" in result.error
    assert "gave up after 3 attempts" in result.error and len(model.requests) == 3
