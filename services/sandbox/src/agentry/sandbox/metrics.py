"""The sandbox service's Prometheus metrics: how long commands take, and how they end."""

from __future__ import annotations

from agentry.servicekit.metrics import LONG_BUCKETS, family


def exec_duration():
    return family(
        "histogram",
        "agentry_sandbox_exec_duration_seconds",
        "Time from an exec request to its command's end (the sandbox started if it had to be), "
        "by outcome: ok (exit 0), failed (another exit code), timeout, or aborted (the caller left, or the request failed before the command ran).",
        ("outcome",),
        buckets=LONG_BUCKETS,
    )
