"""Distributed tracing: W3C trace context across HTTP, gRPC and the queue, and OTLP export.

One request is one trace: the gateway continues the caller's `traceparent` (or starts a trace),
gRPC calls carry it in metadata (`traceparent`, `tracestate`), the run job carries it to the
worker (a RabbitMQ message header), and the worker's model calls, tool calls and calls to the
sandbox and billing services are spans of the same trace.

`configure_tracing(service)` turns it on from the standard OpenTelemetry environment: spans are
exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
is set, with OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_* and the exporter's headers,
timeout and compression variables honoured by the SDK. Without an endpoint nothing is configured
and every helper here returns at its first line (`enabled()` is a module flag): no span, no
header, no allocation per call.

`current_trace_id()` is what log lines print.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as _context
from opentelemetry import trace as _trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

_INVALID_TRACE_ID = 0
_PROPAGATOR = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_enabled = False
_provider: Any = None


def current_trace_id() -> str | None:
    """The current trace id as 32 lowercase hex digits, or None outside any (valid) trace.

    Cheap (a context-variable read): safe to call for every log line.
    """
    ctx = _trace.get_current_span().get_span_context()
    if ctx.trace_id == _INVALID_TRACE_ID:
        return None
    return format(ctx.trace_id, "032x")


def enabled() -> bool:
    """Whether this process exports spans (configure_tracing found an endpoint)."""
    return _enabled


def configure_tracing(service_name: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Installs the process's TracerProvider with an OTLP/HTTP exporter when the standard
    OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set; returns whether tracing is on. The first call in
    a process wins (embedded mode: every service shares one provider). `service_name` is used
    unless OTEL_SERVICE_NAME names the service. OTEL_SDK_DISABLED=true turns it off."""
    global _enabled, _provider
    env = os.environ if environ is None else environ
    if _enabled:
        return True
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    # The exporter reads the endpoint (appending /v1/traces to the generic one), headers,
    # timeout and compression from the environment; the batch processor's queue is bounded
    # (OTEL_BSP_MAX_QUEUE_SIZE, 2,048 spans): a slow collector drops spans, never blocks a call.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _trace.set_tracer_provider(provider)
    _provider = provider
    _enabled = True
    logger.info("tracing: exporting spans of %s over OTLP to %s", resource.attributes[SERVICE_NAME], endpoint)
    return True


def shutdown_tracing(timeout_millis: int = 5_000) -> None:
    """Exports what is queued (at most `timeout_millis`) and stops the exporter thread."""
    global _enabled
    if _provider is not None:
        try:
            _provider.force_flush(timeout_millis)
            _provider.shutdown()
        except Exception:
            logger.debug("tracing shutdown failed", exc_info=True)
    _enabled = False


def tracer() -> _trace.Tracer:
    return _trace.get_tracer("agentry")


# -- propagation ----------------------------------------------------------------------------


def inject(carrier: MutableMapping[str, str]) -> None:
    """Adds `traceparent` (and `tracestate`) of the current span to `carrier`, if tracing is on."""
    if _enabled:
        _PROPAGATOR.inject(carrier)


def current_traceparent() -> str:
    """The current span as a `traceparent` header value ("" when off or outside a trace)."""
    if not _enabled:
        return ""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def extract(carrier: Mapping[str, str]) -> Any:
    """The OpenTelemetry context a `traceparent` in `carrier` names (the current one if none)."""
    return _PROPAGATOR.extract(carrier)


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Mapping[str, str] | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """A span, current within the block, continuing `parent` (a carrier holding a traceparent)
    when given. An exception escaping the block marks it ERROR. A no-op (yields None) when off."""
    if not _enabled:
        yield None
        return
    ctx = _PROPAGATOR.extract(parent) if parent else None
    with tracer().start_as_current_span(
        name, context=ctx, kind=kind, attributes=attributes, record_exception=True, set_status_on_exception=True
    ) as s:
        yield s


# -- gRPC -----------------------------------------------------------------------------------


def grpc_client_metadata(metadata: Any) -> Any:
    """Called by servicekit's client interceptor with the call's grpc.aio.Metadata: adds the
    current trace context (a no-op when off)."""
    if _enabled:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        for key, value in carrier.items():
            if key not in metadata:
                metadata[key] = value
    return metadata


def grpc_server_span(method: str, metadata: Mapping[str, str]) -> Any:
    """Starts (not as current) the server span of a call; `attach_span` makes it current in the
    handler's task. None when off."""
    if not _enabled:
        return None
    ctx = _PROPAGATOR.extract(metadata) if TRACEPARENT in metadata else None
    service, _, name = method.lstrip("/").rpartition("/")
    return tracer().start_span(
        method.lstrip("/"),
        context=ctx,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )


def attach_span(s: Any) -> Any:
    """Makes `s` current in this task; returns the token for `detach`."""
    return _context.attach(_trace.set_span_in_context(s))


def detach(token: Any) -> None:
    with contextlib.suppress(Exception):
        _context.detach(token)


def end_span(s: Any, error: BaseException | None = None, code: str | None = None) -> None:
    if error is not None:
        s.record_exception(error)
        s.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}"))
    if code is not None:
        s.set_attribute("rpc.grpc.status_code", code)
    s.end()


# -- HTTP (the gateway) ---------------------------------------------------------------------
# FastAPI (0.165+) traces every request natively once a TracerProvider is registered: a SERVER
# span named "<METHOD> <route template>" continuing the caller's `traceparent`, with child spans
# for dependencies, the endpoint and serialization. `configure_tracing("gateway")` registering
# the provider is all the gateway needs; no middleware of ours (it would double the span).
