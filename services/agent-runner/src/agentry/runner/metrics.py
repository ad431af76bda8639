"""The runner's Prometheus metrics: runs started and finished, their duration and time to first
token, the queue, active runs, events, tokens and cost by model, tool calls, leases.

Cost per run is a few microseconds: the worker looks at each event's type once (a dict lookup)
and counts token deltas in a plain int, flushed to the events counter with the next event that is
not a delta (a tool call, a finished message, the end) - never a metric operation per token.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from agentpress import TextDelta, ToolCallFinished, UsageReported
from agentry.servicekit.metrics import LONG_BUCKETS, BoundedLabel, child, family

# Models and tools are named by requests and configuration: bounded, the rest count as "other".
model_label = BoundedLabel(limit=50)
tool_label = BoundedLabel(limit=100)


def runs_started():
    return family(
        "counter",
        "agentry_runs_started_total",
        "Runs the runner api accepted (POST /agent/start), by model.",
        ("model",),
    )


def runs_finished():
    return family(
        "counter",
        "agentry_runs_finished_total",
        "Runs that ended, by final status (completed, failed, cancelled, ...) and finish reason.",
        ("status", "reason"),
    )


def run_duration():
    return family(
        "histogram",
        "agentry_run_duration_seconds",
        "Wall time of a run from its first start to its end (ended by a worker), by status.",
        ("status",),
        buckets=LONG_BUCKETS,
    )


def time_to_first_token():
    return family(
        "histogram",
        "agentry_run_time_to_first_token_seconds",
        "From a run's creation to the first text the model streamed (first attempt only), by model.",
        ("model",),
        buckets=LONG_BUCKETS,
    )


def queue_wait():
    return family(
        "histogram",
        "agentry_run_queue_wait_seconds",
        "Age of a run's job when a worker claimed it for the first time (created -> claimed).",
        buckets=LONG_BUCKETS,
    )


def queue_depth():
    return family(
        "gauge",
        "agentry_run_queue_depth",
        "Runs waiting for a worker (status queued), sampled by the runner api.",
        multiprocess_mode="max",
    )


def queue_oldest_age():
    return family(
        "gauge",
        "agentry_run_queue_oldest_age_seconds",
        "Age of the oldest run waiting for a worker (0 when none waits), sampled by the runner api.",
        multiprocess_mode="max",
    )


def active_runs():
    return family(
        "gauge",
        "agentry_runner_active_runs",
        "Runs this worker process drives now (holding their lease).",
        multiprocess_mode="livesum",
    )


def events_emitted():
    return family(
        "counter",
        "agentry_run_events_total",
        "Run events the workers emitted to the live stream (token deltas included).",
    )


def tokens():
    return family(
        "counter",
        "agentry_llm_tokens_total",
        "Tokens the models used, by model and kind (prompt, completion).",
        ("model", "kind"),
    )


def cost():
    return family(
        "counter", "agentry_llm_cost_usd_total", "Cost of the model calls in US dollars, by model.", ("model",)
    )


def tool_calls():
    return family(
        "counter",
        "agentry_tool_calls_total",
        "Tool calls that finished, by tool and outcome (ok, error).",
        ("tool", "outcome"),
    )


def tool_duration():
    return family(
        "histogram",
        "agentry_tool_call_duration_seconds",
        "Duration of a tool call, by tool.",
        ("tool",),
        buckets=LONG_BUCKETS,
    )


def lease_losses():
    return family(
        "counter",
        "agentry_runner_lease_losses_total",
        "Runs a worker stopped driving because it lost their lease (it stalled or was cut off).",
    )


def runs_resumed():
    return family(
        "counter",
        "agentry_runs_resumed_total",
        "Runs a worker continued, by reason (worker_lost, handed_back, user_input).",
        ("reason",),
    )


def runs_handed_back():
    return family(
        "counter", "agentry_runs_handed_back_total", "Runs a worker gave back at shutdown for another worker to resume."
    )


def record_finished(status: str, reason: str) -> None:
    child(runs_finished(), status, reason or "unknown").inc()


class RunObserver:
    """Watches one run's events on their way to the sink: time to first token, token and cost
    usage, tool calls. The events counter follows the sink's sequence number (`seq()`, every
    numbered event, the terminal one included), added with each event that is not a token delta
    and at the end: per batch, never per token."""

    __slots__ = ("_counted", "_created_at", "_first_token_seen", "_model", "_seq")

    def __init__(self, *, model: str, created_at: float | None, seq: Callable[[], int]) -> None:
        self._model = model_label(model)
        self._created_at = created_at  # None: not a first attempt, no time to first token
        self._first_token_seen = created_at is None
        self._seq = seq
        self._counted = seq()

    def observe(self, event: object) -> None:
        kind = type(event)
        if kind is TextDelta:
            if not self._first_token_seen:
                self._first_token_seen = True
                assert self._created_at is not None
                time_to_first_token().labels(self._model).observe(max(time.time() - self._created_at, 0.0))
            return
        self.flush()
        if kind is UsageReported:
            model = model_label(event.model)  # type: ignore[attr-defined]
            child(tokens(), model, "prompt").inc(event.prompt_tokens)  # type: ignore[attr-defined]
            child(tokens(), model, "completion").inc(event.completion_tokens)  # type: ignore[attr-defined]
            if event.cost_usd:  # type: ignore[attr-defined]
                child(cost(), model).inc(event.cost_usd)  # type: ignore[attr-defined]
        elif kind is ToolCallFinished:
            tool = tool_label(event.name)  # type: ignore[attr-defined]
            child(tool_calls(), tool, "error" if event.error else "ok").inc()  # type: ignore[attr-defined]
            child(tool_duration(), tool).observe(event.duration_ms / 1000.0)  # type: ignore[attr-defined]

    def flush(self) -> None:
        """Adds the events numbered since the last flush to agentry_run_events_total."""
        seq = self._seq()
        if seq > self._counted:
            events_emitted().inc(seq - self._counted)
            self._counted = seq


async def sample_queue(repo, *, interval: float = 5.0) -> None:
    """Sets the queue depth and oldest-waiting-run gauges from the database every `interval`
    seconds, until cancelled (the runner api runs it). A failed sample is skipped."""
    import asyncio
    import logging

    depth, oldest_age = queue_depth(), queue_oldest_age()
    while True:
        try:
            count, oldest = await repo.queue_stats()
        except Exception as exc:  # noqa: BLE001 - the database is away: the next sample retries
            logging.getLogger(__name__).warning("queue metrics not sampled: %r", exc)
        else:
            depth.set(count)
            oldest_age.set(max(time.time() - oldest, 0.0) if oldest is not None else 0.0)
        await asyncio.sleep(interval)
