"""servicekit.tracing: off by default and free, W3C propagation, the gateway's HTTP span
(FastAPI's native telemetry, once a provider is registered)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentry.servicekit import tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
_exporter = InMemorySpanExporter()


@pytest.fixture
def on(monkeypatch):
    """Tracing on, into memory (the global provider can be set once per process: kept, but the
    module flag is put back, so other tests run with tracing off)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        trace.set_tracer_provider(provider)
    monkeypatch.setattr(tracing, "_enabled", True)
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def test_off_without_an_endpoint():
    assert tracing.configure_tracing("x", environ={}) is False
    assert not tracing.enabled()
    assert tracing.current_traceparent() == "" and tracing.current_trace_id() is None
    carrier: dict[str, str] = {}
    tracing.inject(carrier)
    assert carrier == {}
    with tracing.span("nothing") as s:
        assert s is None


def test_a_span_continues_the_callers_trace_and_propagates_it(on):
    with tracing.span("job", parent={"traceparent": TRACEPARENT}):
        assert tracing.current_trace_id() == TRACE_ID
        assert tracing.current_traceparent().startswith(f"00-{TRACE_ID}-")
        metadata: dict[str, str] = {}
        tracing.grpc_client_metadata(metadata)
        assert metadata["traceparent"].split("-")[1] == TRACE_ID
    [job] = on.get_finished_spans()
    assert format(job.parent.span_id, "016x") == "00f067aa0ba902b7"


async def test_the_gateways_http_span_is_named_after_the_route_template(on):
    app = FastAPI()

    @app.post("/api/things/{thing_id}")
    async def thing(thing_id: str):
        return {"trace": tracing.current_trace_id()}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/api/things/42", headers={"traceparent": TRACEPARENT})
    assert response.json() == {"trace": TRACE_ID}
    # FastAPI's native telemetry makes the SERVER span (and children for the endpoint etc.)
    [span] = [s for s in on.get_finished_spans() if s.kind is trace.SpanKind.SERVER]
    assert span.name == "POST /api/things/{thing_id}"
    assert format(span.parent.span_id, "016x") == "00f067aa0ba902b7"
