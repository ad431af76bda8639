"""Distributed tracing: W3C trace context across HTTP, gRPC and the queue, and OTLP export.

`current_trace_id()` is what log lines print. Export is configured by `configure_tracing()` from
the standard OpenTelemetry environment (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...):
with no endpoint set nothing is exported and the OpenTelemetry API stays a no-op.
"""

from __future__ import annotations

from opentelemetry import trace as _trace

_INVALID_TRACE_ID = 0


def current_trace_id() -> str | None:
    """The current trace id as 32 lowercase hex digits, or None outside any (valid) trace.

    Cheap (a context-variable read): safe to call for every log line.
    """
    ctx = _trace.get_current_span().get_span_context()
    if ctx.trace_id == _INVALID_TRACE_ID:
        return None
    return format(ctx.trace_id, "032x")
