"""Prometheus metrics: gRPC calls counted per method and code on both ends, bounded labels,
/metrics over HTTP, the multiprocess sum for prefork workers, and JSON log lines with ids."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import textwrap
import urllib.request

import grpc
import orjson
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agentry.servicekit import DEV_INTERNAL_TOKEN, NotFound, open_channel, start_grpc_server
from agentry.servicekit.context import (
    ContextFilter,
    JsonFormatter,
    account_id_var,
    request_id_var,
    run_id_var,
)
from agentry.servicekit.metrics import BoundedLabel, serve_metrics

SERVICE = "agentry.test.Metered"


async def _echo(request: bytes, context) -> bytes:
    if request == b"missing":
        raise NotFound("no such thing")
    if request == b"boom":
        raise RuntimeError("internals")
    return request


async def _parts(request: bytes, context):
    for part in request.split(b","):
        yield part


def _register(server: grpc.aio.Server) -> None:
    identity = lambda b: b  # noqa: E731
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Echo": grpc.unary_unary_rpc_method_handler(_echo, identity, identity),
                    "Parts": grpc.unary_stream_rpc_method_handler(_parts, identity, identity),
                },
            ),
        )
    )


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def server():
    async with contextlib.AsyncExitStack() as stack:
        yield await start_grpc_server(
            name="metered",
            register=_register,
            service_names=[SERVICE],
            host="127.0.0.1",
            port=0,
            internal_token=DEV_INTERNAL_TOKEN,
            stack=stack,
            grace=0.1,
        )


async def test_grpc_calls_are_counted_per_method_and_code_on_server_and_client(server):
    def server_count(method, code, kind="unary"):
        return value(
            "grpc_server_handled_total", grpc_service=SERVICE, grpc_method=method, grpc_type=kind, grpc_code=code
        )

    def client_count(method, code, kind="unary"):
        return value(
            "grpc_client_handled_total", grpc_service=SERVICE, grpc_method=method, grpc_type=kind, grpc_code=code
        )

    before = {
        key: fn(*key[1:])
        for fn in (server_count, client_count)
        for key in [
            (fn, "Echo", "OK"),
            (fn, "Echo", "NOT_FOUND"),
            (fn, "Echo", "INTERNAL"),
            (fn, "Echo", "UNAUTHENTICATED"),
            (fn, "Parts", "OK", "server_stream"),
        ]
    }
    timed = value("grpc_server_handling_seconds_count", grpc_service=SERVICE, grpc_method="Echo", grpc_type="unary")

    async with open_channel(server.target, DEV_INTERNAL_TOKEN) as channel:
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        assert await echo(b"hi") == b"hi"
        assert await echo(b"again") == b"again"
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await echo(b"missing")
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError):
            await echo(b"boom")
        parts = [p async for p in channel.unary_stream(f"/{SERVICE}/Parts")(b"a,b,c")]
        assert parts == [b"a", b"b", b"c"]
    async with open_channel(server.target, "wrong-token") as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(f"/{SERVICE}/Echo")(b"hi")

    for fn in (server_count, client_count):
        assert fn("Echo", "OK") - before[(fn, "Echo", "OK")] == 2
        assert fn("Echo", "NOT_FOUND") - before[(fn, "Echo", "NOT_FOUND")] == 1
        assert fn("Echo", "INTERNAL") - before[(fn, "Echo", "INTERNAL")] == 1
        assert fn("Echo", "UNAUTHENTICATED") - before[(fn, "Echo", "UNAUTHENTICATED")] == 1
        assert fn("Parts", "OK", "server_stream") - before[(fn, "Parts", "OK", "server_stream")] == 1
    assert (
        value("grpc_server_handling_seconds_count", grpc_service=SERVICE, grpc_method="Echo", grpc_type="unary") - timed
        == 5
    )


def test_bounded_label_maps_the_overflow_to_other():
    label = BoundedLabel(limit=2, known=["gpt-4o"])
    assert label("gpt-4o") == "gpt-4o"
    assert label("claude") == "claude"
    assert label("third") == "other"
    assert label("claude") == "claude"
    assert label("x" * 500) == "other"
    assert BoundedLabel()("y" * 500) == "y" * 100


def test_metrics_are_served_over_http():
    with contextlib.ExitStack() as stack:
        port = serve_metrics("127.0.0.1", 0, stack)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
    names = {family.name for family in text_string_to_metric_families(body)}
    assert "process_cpu_seconds" in names  # the default registry's process collector


def test_prefork_children_are_summed_by_one_metrics_endpoint(tmp_path):
    """Multiprocess mode: three forked children count, one of them serves the sum; a child that
    ended no longer counts in the live gauge, its counter stays."""
    script = textwrap.dedent(f"""
        import os, sys, urllib.request
        from agentry.servicekit.metrics import enable_multiprocess, family, mark_process_dead, serve_metrics
        enable_multiprocess({str(tmp_path / "mp")!r})
        pids = []
        for i in range(3):
            pid = os.fork()
            if pid == 0:
                family("counter", "agentry_test_jobs_total", "jobs").inc(i + 1)
                family("gauge", "agentry_test_active", "active", multiprocess_mode="livesum").inc()
                os._exit(0)
            pids.append(pid)
        for pid in pids:
            os.waitpid(pid, 0)
        mark_process_dead(pids[0])
        port = serve_metrics("127.0.0.1", 0)
        print(urllib.request.urlopen(f"http://127.0.0.1:{{port}}/metrics", timeout=5).read().decode())
    """)
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
    )
    assert out.returncode == 0, out.stderr
    samples = {s.name: s.value for f in text_string_to_metric_families(out.stdout) for s in f.samples}
    assert samples["agentry_test_jobs_total"] == 6.0
    assert samples["agentry_test_active"] == 2.0


def test_json_log_lines_carry_the_ids():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("agentry.test.jsonlog")
    log.addHandler(handler)
    log.propagate = False
    tokens = [request_id_var.set("req-1"), run_id_var.set("run-2"), account_id_var.set("acct-3")]
    try:
        log.warning('quote " and newline\n in %s', "a message")
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("failed")
    finally:
        for var, token in zip((request_id_var, run_id_var, account_id_var), tokens):
            var.reset(token)
        log.removeHandler(handler)
    first, second = (orjson.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == 'quote " and newline\n in a message'
    assert (first["request_id"], first["run_id"], first["account_id"], first["trace_id"]) == (
        "req-1",
        "run-2",
        "acct-3",
        "-",
    )
    assert first["level"] == "WARNING" and first["logger"] == "agentry.test.jsonlog"
    assert second["msg"] == "failed" and "ValueError: bad" in second["exc"]


def test_log_format_setting(monkeypatch):
    from agentry.servicekit.settings import ServiceSettings

    monkeypatch.delenv("AGENTRY_LOG_FORMAT", raising=False)
    assert ServiceSettings(dev_mode=True).log_json() is False
    assert ServiceSettings(dev_mode=False, internal_token="x" * 32).log_json() is True
    monkeypatch.setenv("AGENTRY_LOG_FORMAT", "text")
    assert ServiceSettings(dev_mode=False, internal_token="x" * 32).log_json() is False
    monkeypatch.setenv("AGENTRY_LOG_FORMAT", "json")
    assert ServiceSettings(dev_mode=True).log_json() is True


def test_metrics_off_counts_nothing(monkeypatch):
    from agentry.servicekit import metrics

    monkeypatch.setenv("AGENTRY_METRICS", "off")
    monkeypatch.setattr(metrics, "_families", {})
    counter = metrics.family("counter", "agentry_test_off_total", "never registered", ("x",))
    counter.labels("a").inc()
    assert REGISTRY.get_sample_value("agentry_test_off_total", {"x": "a"}) is None
