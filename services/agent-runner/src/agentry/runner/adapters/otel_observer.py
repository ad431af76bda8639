"""The run's model and tool calls as OpenTelemetry spans of the request's distributed trace
(servicekit.tracing), named and attributed after the GenAI semantic conventions. Used only when
tracing is on. Nothing per chunk: the model call's span gets its first-token time as an event."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from agentpress.observe import ModelCallObservation, RunObserver, ToolCallObservation
from agentry.servicekit import tracing


class OtelRunObserver(RunObserver):
    def model_call(self, model: str, request: Any) -> ModelCallObservation:
        provider, _, name = model.partition("/")
        span = tracing.tracer().start_span(
            f"chat {model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": name or provider,
                "gen_ai.system": provider if name else "openai",
            },
        )
        return _ModelSpan(span)

    def tool_call(self, name: str, call_id: str, arguments: str) -> ToolCallObservation:
        span = tracing.tracer().start_span(
            f"execute_tool {name}",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": call_id,
            },
        )
        return _ToolSpan(span)


class _ModelSpan(ModelCallObservation):
    def __init__(self, span: Any) -> None:
        self.span = span

    def first_token(self) -> None:
        self.span.add_event("first_token")

    def finish(
        self,
        *,
        text: str,
        reasoning: str,
        tool_calls: list,
        finish_reason: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cost_usd: float | None,
    ) -> None:
        attributes: dict[str, Any] = {}
        if prompt_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = prompt_tokens
        if completion_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = completion_tokens
        if finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [finish_reason]
        if cost_usd is not None:
            attributes["agentry.cost_usd"] = cost_usd
        self.span.set_attributes(attributes)
        self.span.end()

    def fail(self, error: BaseException) -> None:
        self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        self.span.set_attribute("error.type", str(getattr(error, "kind", None) or type(error).__name__))
        self.span.end()


class _ToolSpan(ToolCallObservation):
    def __init__(self, span: Any) -> None:
        self.span = span

    def finish(self, outcome: Any) -> None:
        if outcome.error:
            self.span.set_status(Status(StatusCode.ERROR, str(outcome.error)[:100]))
        self.span.end()
