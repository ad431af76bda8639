"""Observation hooks: what a tracer (Langfuse, in the runner) sees of a run's model and tool calls.

A host puts a `RunObserver` in `RunContext.observer`; with None (the default) nothing here runs
and no per-call or per-chunk work is done. The hooks are synchronous and must not block or raise
into the run: `ObservedModel` and the tool executor call them and swallow (and log) what they
raise, so a broken tracer never changes a run's outcome.

One model call = one attempt of `Model.stream` (a retried call is two generations, the first
failed), covering every lane a Model implements (LiteLLM and the direct OpenAI lane alike), since
the wrapping happens above the Model protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agentpress.models import Model, ModelDelta, ModelRequest
    from agentpress.tools import ToolOutcome

logger = logging.getLogger(__name__)


@runtime_checkable
class ModelCallObservation(Protocol):
    """One model call as it happens; exactly one of `finish` / `fail` is called, once."""

    def first_token(self) -> None:
        """The first delta arrived (time to first token = now - the call's start)."""
        ...

    def finish(
        self,
        *,
        text: str,
        reasoning: str,
        tool_calls: list[dict[str, Any]],
        finish_reason: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cost_usd: float | None,
    ) -> None:
        """The stream ended (or was closed by its consumer: `finish_reason` "interrupted").
        Tokens are the provider's counts (None when it sent none); cost in US dollars, None when
        the model's price is unknown."""
        ...

    def fail(self, error: BaseException) -> None:
        """The call failed (before or after its first delta)."""
        ...


@runtime_checkable
class ToolCallObservation(Protocol):
    def finish(self, outcome: ToolOutcome) -> None:
        """The call ended: output, error (None when it succeeded), decoded arguments, duration."""
        ...


@runtime_checkable
class RunObserver(Protocol):
    def model_call(self, model: str, request: ModelRequest) -> ModelCallObservation:
        """A model call starts now with this request (messages, tools, settings)."""
        ...

    def tool_call(self, name: str, call_id: str, arguments: str) -> ToolCallObservation:
        """A tool call starts now (`arguments` as the model wrote them)."""
        ...


def _guard(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception:
        logger.warning("run observer failed in %s", what, exc_info=True)
        return None


class ObservedModel:
    """A Model whose every `stream` call is reported to an observer. Per chunk it only keeps
    references (the text pieces, tool-call pieces, usage): no clock read, no I/O, no allocation
    beyond a list append."""

    def __init__(self, inner: Model, observer: RunObserver) -> None:
        self.inner = inner
        self.observer = observer
        self.name = inner.name
        self.context_window = inner.context_window

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.inner.cost(prompt_tokens, completion_tokens)

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelDelta]:
        observation = _guard("model_call", self.observer.model_call, self.inner.name, request)
        if observation is None:
            async for delta in self.inner.stream(request):
                yield delta
            return
        text: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        finish_reason: str | None = None
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        first = True
        ended = False
        try:
            async for delta in self.inner.stream(request):
                if first:
                    first = False
                    _guard("first_token", observation.first_token)
                if delta.text:
                    text.append(delta.text)
                if delta.reasoning:
                    reasoning.append(delta.reasoning)
                for chunk in delta.tool_calls:
                    call = calls.setdefault(chunk.index, {"id": None, "name": None, "arguments": []})
                    call["id"] = call["id"] or chunk.call_id
                    call["name"] = call["name"] or chunk.name
                    if chunk.arguments:
                        call["arguments"].append(chunk.arguments)
                if delta.finish_reason:
                    finish_reason = delta.finish_reason
                if delta.prompt_tokens is not None:
                    prompt_tokens = delta.prompt_tokens
                if delta.completion_tokens is not None:
                    completion_tokens = delta.completion_tokens
                yield delta
        except (GeneratorExit, asyncio.CancelledError):
            finish_reason = "interrupted"  # the consumer stopped reading, or the run was stopped
            raise
        except BaseException as exc:
            ended = True
            _guard("fail", observation.fail, exc)
            raise
        finally:
            if not ended:
                cost = None
                if prompt_tokens is not None or completion_tokens is not None:
                    cost = _guard("cost", self.inner.cost, prompt_tokens or 0, completion_tokens or 0)
                _guard(
                    "finish",
                    observation.finish,
                    text="".join(text),
                    reasoning="".join(reasoning),
                    tool_calls=[
                        {"id": c["id"], "name": c["name"], "arguments": "".join(c["arguments"])}
                        for _, c in sorted(calls.items())
                    ],
                    finish_reason=finish_reason,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=cost,
                )


def observed(models: list[Model], observer: RunObserver | None) -> list[Model]:
    """`models`, each wrapped to report to `observer`; the same list when there is none."""
    if observer is None:
        return models
    return [m if isinstance(m, ObservedModel) else ObservedModel(m, observer) for m in models]


class RecordingObserver:
    """An in-memory RunObserver (tests, and a reference for adapters): it records every call."""

    def __init__(self) -> None:
        self.model_calls: list[dict[str, Any]] = []
        self.tool_calls: list[dict[str, Any]] = []

    def model_call(self, model: str, request: ModelRequest) -> ModelCallObservation:
        record: dict[str, Any] = {
            "model": model,
            "messages": request.messages,
            "start": time.monotonic(),
            "first_token": None,
            "error": None,
        }
        self.model_calls.append(record)
        return _RecordedModelCall(record)

    def tool_call(self, name: str, call_id: str, arguments: str) -> ToolCallObservation:
        record: dict[str, Any] = {"name": name, "call_id": call_id, "arguments": arguments}
        self.tool_calls.append(record)
        return _RecordedToolCall(record)


class _RecordedModelCall:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def first_token(self) -> None:
        self.record["first_token"] = time.monotonic()

    def finish(self, **fields: Any) -> None:
        self.record.update(fields, end=time.monotonic())

    def fail(self, error: BaseException) -> None:
        self.record.update(error=error, end=time.monotonic())


class _RecordedToolCall:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def finish(self, outcome: ToolOutcome) -> None:
        self.record.update(output=outcome.output, error=outcome.error, duration_ms=outcome.duration_ms)


class FanOut:
    """Several RunObservers as one (a Langfuse tracer and an OpenTelemetry one, say)."""

    def __init__(self, observers: list[RunObserver]) -> None:
        self.observers = observers

    def model_call(self, model: str, request: ModelRequest) -> ModelCallObservation:
        return _FanOutModelCall([o.model_call(model, request) for o in self.observers])

    def tool_call(self, name: str, call_id: str, arguments: str) -> ToolCallObservation:
        return _FanOutToolCall([o.tool_call(name, call_id, arguments) for o in self.observers])


class _FanOutModelCall:
    def __init__(self, items: list[ModelCallObservation]) -> None:
        self.items = items

    def first_token(self) -> None:
        for item in self.items:
            _guard("first_token", item.first_token)

    def finish(self, **fields: Any) -> None:
        for item in self.items:
            _guard("finish", item.finish, **fields)

    def fail(self, error: BaseException) -> None:
        for item in self.items:
            _guard("fail", item.fail, error)


class _FanOutToolCall:
    def __init__(self, items: list[ToolCallObservation]) -> None:
        self.items = items

    def finish(self, outcome: ToolOutcome) -> None:
        for item in self.items:
            _guard("tool finish", item.finish, outcome)
