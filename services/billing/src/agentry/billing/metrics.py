"""Billing's Prometheus metrics: the may-this-account-run check, its latency and its refusals."""

from __future__ import annotations

from agentry.servicekit.metrics import LATENCY_BUCKETS, family


def check_duration():
    return family(
        "histogram",
        "agentry_billing_check_duration_seconds",
        "Time billing took to decide whether an account may run (CheckRun).",
        buckets=LATENCY_BUCKETS,
    )


def checks():
    return family(
        "counter",
        "agentry_billing_checks_total",
        "Run checks billing answered, by decision (allowed, refused) and refusal reason "
        "(empty when allowed; budget refusals are reason insufficient_credits).",
        ("decision", "reason"),
    )
