"""The gateway's Prometheus metrics: requests per route template and status, open SSE streams,
and GET /metrics (under `agentry dev`, every service's metrics: they share this process)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import Response

from agentry.servicekit.metrics import LATENCY_BUCKETS, child, exposition, family

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus text exposition of this process's metrics."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)


def _requests():
    return family(
        "counter",
        "agentry_http_requests_total",
        "HTTP requests the gateway answered, by method, route template and status code.",
        ("method", "route", "status"),
    )


def _durations():
    return family(
        "histogram",
        "agentry_http_request_duration_seconds",
        "Time from a request's arrival to its response's first byte, by method and route "
        "template (a stream's headers, not its whole life).",
        ("method", "route"),
        buckets=LATENCY_BUCKETS,
    )


def sse_streams_open():
    return family(
        "gauge",
        "agentry_sse_streams_open",
        "SSE streams this gateway is serving now, by kind.",
        ("stream",),
        multiprocess_mode="livesum",
    )


def sse_events_sent():
    return family(
        "counter",
        "agentry_sse_events_sent_total",
        "Run events sent to SSE clients (counted per chunk sent, not per event).",
        ("stream",),
    )


async def metered_stream(body: AsyncIterator[bytes], stream: str) -> AsyncIterator[bytes]:
    """`body`, counted in agentry_sse_streams_open while it is being sent."""
    gauge = sse_streams_open().labels(stream)
    gauge.inc()
    try:
        async for chunk in body:
            yield chunk
    finally:
        gauge.dec()
        await body.aclose()  # type: ignore[attr-defined]


_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class HttpMetricsMiddleware:
    """Counts and times every HTTP request by its route template (`/api/threads/{thread_id}`),
    never its raw path, so ids never become label values. A request no route matched is
    "unmatched"."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        first_byte: float | None = None

        async def send_wrapper(message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = message["status"]
                first_byte = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            method = method if method in _KNOWN_METHODS else "other"
            child(_requests(), method, template, str(status)).inc()
            child(_durations(), method, template).observe((first_byte or time.perf_counter()) - started)
