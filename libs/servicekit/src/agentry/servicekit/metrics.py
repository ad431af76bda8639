"""Prometheus metrics every service shares: gRPC server and client metrics, bounded labels, and
the HTTP endpoint that serves /metrics.

Metric families are built on first use, never at import (`family(...)` memoises them by name), so
a prefork parent can switch prometheus-client to multiprocess mode (`enable_multiprocess`) before
any value exists. One process has one registry (prometheus-client's default): under `agentry dev`
every service runs in the gateway's process and the gateway's /metrics serves them all.

Names follow Prometheus conventions: base units in the name (`_seconds`, `_usd`), `_total` on
counters. No label ever holds a run, thread, user or account id; labels whose values come from
users (model and tool names) go through `BoundedLabel`, which maps the overflow to "other".
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import grpc

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latency of calls between services and to the database: 1 ms to 30 s.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Whole runs and waits for a model: 100 ms to 1 h.
LONG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

_families: dict[str, Any] = {}
_families_lock = threading.Lock()


class _Off:
    """What every metric is with AGENTRY_METRICS=off: each operation does nothing (benchmarks
    measure the metrics' own cost against it)."""

    def labels(self, *args: Any, **kwargs: Any) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...
    def set(self, value: float) -> None: ...
    def observe(self, value: float) -> None: ...


_OFF = _Off()


def enabled() -> bool:
    """False when AGENTRY_METRICS=off: nothing is counted (and /metrics shows only the process)."""
    return os.environ.get("AGENTRY_METRICS", "on").lower() not in ("off", "0", "false")


def family(kind: str, name: str, documentation: str, labels: Iterable[str] = (), **kwargs: Any) -> Any:
    """The process's metric `name`, built on first use: `kind` is "counter", "gauge" or
    "histogram" (kwargs: `buckets`, or a gauge's `multiprocess_mode`). Registered once in the
    default registry; later calls return the same object."""
    found = _families.get(name)
    if found is not None:
        return found
    if not enabled():
        _families[name] = _OFF
        return _OFF
    from prometheus_client import Counter, Gauge, Histogram

    cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[kind]
    with _families_lock:
        found = _families.get(name)
        if found is None:
            found = _families[name] = cls(name, documentation, list(labels), **kwargs)
    return found


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, memoised: a labelled child costs ~2 us to look up in
    prometheus-client, ~0.1 us here. Label values are bounded, so the memo is too."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


class BoundedLabel:
    """Keeps a label's cardinality bounded: the first `limit` distinct values (and any in
    `known`) are used as they are, anything after that becomes "other". Values are cut to 100
    characters. Thread-safe enough: at worst a racing value is let in past the limit once."""

    def __init__(self, limit: int = 50, known: Iterable[str] = ()) -> None:
        self._limit = limit
        self._seen: set[str] = set(known)

    def __call__(self, value: str) -> str:
        value = (value or "unknown")[:100]
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(value)
        return value


# -- multiprocess (prefork workers) -------------------------------------------------------------


def enable_multiprocess(directory: str) -> None:
    """Switches this process (and the children it forks afterwards) to prometheus-client's
    multiprocess mode, writing values under `directory` (its old `*.db` value files removed
    first: a restarted pod must not count its previous life). Call before any metric value
    exists: in a prefork parent, before the first fork."""
    import glob

    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    os.environ[MULTIPROC_ENV] = directory
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def mark_process_dead(pid: int) -> None:
    """A prefork child ended: its live gauges (active runs, streams) stop counting; its counters
    stay in the sum, as counters must."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def _registry():
    from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The text a scrape of /metrics gets, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def serve_metrics(host: str, port: int, stack: contextlib.AsyncExitStack | contextlib.ExitStack | None = None) -> int:
    """Serves /metrics over HTTP on `host`:`port` (0: a free port) from a daemon thread; returns
    the bound port. In multiprocess mode the answer sums every process writing to the directory."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=_registry())
    bound = server.server_address[1]

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    if isinstance(stack, contextlib.AsyncExitStack):
        stack.push_async_callback(_run_in_thread, stop)
    elif stack is not None:
        stack.callback(stop)
    logger.info("serving Prometheus metrics on http://%s:%d/metrics", host, bound)
    return bound


async def _run_in_thread(fn: Callable[[], None]) -> None:
    import asyncio

    await asyncio.to_thread(fn)


# -- gRPC ---------------------------------------------------------------------------------------


def _split(method: str) -> tuple[str, str]:
    """ "/agentry.runner.v1.RunnerService/StartRun" -> ("agentry.runner.v1.RunnerService", "StartRun")."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service or "unknown", name or "unknown"


def _server_families() -> tuple[Any, Any]:
    return (
        family(
            "counter",
            "grpc_server_handled_total",
            "gRPC calls this server completed, by method, type and status code.",
            ("grpc_service", "grpc_method", "grpc_type", "grpc_code"),
        ),
        family(
            "histogram",
            "grpc_server_handling_seconds",
            "Time this server took to complete a gRPC call (a stream: until it ended).",
            ("grpc_service", "grpc_method", "grpc_type"),
            buckets=LATENCY_BUCKETS,
        ),
    )


def _client_families() -> tuple[Any, Any]:
    return (
        family(
            "counter",
            "grpc_client_handled_total",
            "gRPC calls this process made that completed, by method, type and status code.",
            ("grpc_service", "grpc_method", "grpc_type", "grpc_code"),
        ),
        family(
            "histogram",
            "grpc_client_handling_seconds",
            "Time a gRPC call this process made took to complete, by method.",
            ("grpc_service", "grpc_method", "grpc_type"),
            buckets=LATENCY_BUCKETS,
        ),
    )


def _type_of(handler: grpc.RpcMethodHandler) -> str:
    if handler.unary_unary:
        return "unary"
    if handler.unary_stream:
        return "server_stream"
    if handler.stream_unary:
        return "client_stream"
    return "bidi_stream"


def _code_name(code: grpc.StatusCode | None) -> str:
    return (code or grpc.StatusCode.OK).name


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every call by method and status code and times it. Outermost, so it sees the
    codes the other interceptors abort with (refused credentials, mapped domain errors)."""

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        from .interceptors import _rewrap

        service, method = _split(handler_call_details.method)
        kind = _type_of(handler)
        handled, seconds = _server_families()
        count = partial(child, handled, service, method, kind)
        timing = child(seconds, service, method, kind)

        def unary(behaviour):
            async def wrapper(request, context):
                started = time.perf_counter()
                code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
                try:
                    result = await behaviour(request, context)
                    code = context.code()
                    return result
                except grpc.aio.AbortError:
                    code = context.code()
                    raise
                except BaseException as exc:
                    code = _exception_code(exc)
                    raise
                finally:
                    timing.observe(time.perf_counter() - started)
                    count(_code_name(code)).inc()

            return wrapper

        def streaming(behaviour):
            async def wrapper(request, context):
                started = time.perf_counter()
                code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
                try:
                    async with contextlib.aclosing(behaviour(request, context)) as items:
                        async for item in items:
                            yield item
                    code = context.code()
                except grpc.aio.AbortError:
                    code = context.code()
                    raise
                except BaseException as exc:
                    code = _exception_code(exc)
                    raise
                finally:
                    timing.observe(time.perf_counter() - started)
                    count(_code_name(code)).inc()

            return wrapper

        return _rewrap(handler, unary, streaming)


def _exception_code(exc: BaseException) -> grpc.StatusCode:
    import asyncio

    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _status_now(call: Any) -> grpc.StatusCode:
    """The status code of a call that is done, read without awaiting (its status is already
    there, so the coroutine finishes on its first step)."""
    coro = call.code()
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - an intercepted call that failed before it was made
        return grpc.StatusCode.UNKNOWN
    coro.close()
    return grpc.StatusCode.UNKNOWN


class _ClientMetrics:
    def _observe(self, method: str, kind: str, started: float, call: Any) -> None:
        handled, seconds = _client_families()
        service, name = _split(method if isinstance(method, str) else method.decode())
        child(seconds, service, name, kind).observe(time.perf_counter() - started)
        child(handled, service, name, kind, _status_now(call).name).inc()

    async def _intercept(self, kind: str, continuation, details, request):
        started = time.perf_counter()
        call = await continuation(details, request)
        call.add_done_callback(partial(self._observe, details.method, kind, started))
        return call


class ClientUnaryMetrics(_ClientMetrics, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await self._intercept("unary", continuation, client_call_details, request)


class ClientUnaryStreamMetrics(_ClientMetrics, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await self._intercept("server_stream", continuation, client_call_details, request)


class ClientStreamUnaryMetrics(_ClientMetrics, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await self._intercept("client_stream", continuation, client_call_details, request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that count and time every call a channel makes (open_channel adds them)."""
    return [ClientUnaryMetrics(), ClientUnaryStreamMetrics(), ClientStreamUnaryMetrics()]
