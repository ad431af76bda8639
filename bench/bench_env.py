"""Where the benchmarks find PostgreSQL, Redis and RabbitMQ, and the gateway limits they lift."""

from __future__ import annotations

import os

# The gateway's rate limits (sign-ups and sign-ins per address, run starts per account) would
# refuse a benchmark's burst from one client: it measures the platform, not the limits.
NO_RATE_LIMITS = {"AGENTRY_GATEWAY_RUN_STARTS_PER_ACCOUNT": "1000000", "AGENTRY_GATEWAY_SIGNUP_PER_IP": "1000000",
                  "AGENTRY_GATEWAY_SIGNIN_ATTEMPTS_PER_IP": "1000000"}

PG_ADMIN = os.environ.get("AGENTRY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("AGENTRY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("AGENTRY_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
