"""Where the benchmarks find PostgreSQL, Redis and RabbitMQ, the gateway limits they lift, and the
services' environment for an observability level (--tracing)."""

from __future__ import annotations

import os

# The gateway's rate limits (sign-ups and sign-ins per address, run starts per account) would
# refuse a benchmark's burst from one client, and the new account's starting credits ($5) run out
# after some thousands of runs (a closed loop at 130 runs/s spent them within a minute): it
# measures the platform, not the limits.
NO_RATE_LIMITS = {
    "AGENTRY_BILLING_INITIAL_CREDIT_MICROS": str(10**12),
    "AGENTRY_GATEWAY_RUN_STARTS_PER_ACCOUNT": "1000000",
    "AGENTRY_GATEWAY_SIGNUP_PER_IP": "1000000",
    "AGENTRY_GATEWAY_SIGNIN_ATTEMPTS_PER_IP": "1000000",
}

PG_ADMIN = os.environ.get("AGENTRY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("AGENTRY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AGENTRY_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


_trace_sink = None


def trace_sink_url() -> str:
    """A discarding OTLP/HTTP endpoint in this process (both the collector's `/v1/traces` and
    Langfuse's `/api/public/otel/v1/traces`): answers 200 to every POST, counts the bytes."""
    global _trace_sink
    if _trace_sink is None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Sink(BaseHTTPRequestHandler):
            received = 0

            def log_message(self, *a) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                Sink.received += len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        _trace_sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
        _trace_sink.daemon_threads = True
        threading.Thread(target=_trace_sink.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{_trace_sink.server_address[1]}"


def tracing_env(mode: str) -> dict[str, str]:
    """The services' environment for an observability level: "off" (no metrics, no tracing),
    "prometheus" (the default: metrics only) or "all" (metrics, OTLP export and Langfuse, both
    to a discarding endpoint in this process)."""
    if mode == "off":
        return {"AGENTRY_METRICS": "off"}
    if mode == "all":
        sink = trace_sink_url()
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
            "LANGFUSE_PUBLIC_KEY": "pk-lf-bench",
            "LANGFUSE_SECRET_KEY": "sk-lf-bench",
            "LANGFUSE_BASE_URL": sink,
        }
    return {}
