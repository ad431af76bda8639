"""The run queue port: the API hands runs to whichever runner worker has capacity, at least once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson


class QueueUnavailable(Exception):
    """The broker did not accept a job (unreachable, closed, or it refused the publish)."""


class RequeueJob(Exception):
    """Raised by a handler to give its job back to the queue at once (the worker is shutting
    down and handed the run back)."""


# A job whose handler keeps failing is delivered at most this many times, then dead-lettered
# (RabbitMQ: the quorum queue's x-delivery-limit into `<queue>.dead`); the runner's sweeper
# publishes a fresh job for any run that is still unfinished.
DELIVERY_LIMIT = 20
# How long a consumer waits before handing a failed job back, so a broken dependency (a database
# restarting) is not hammered by the same job in a tight loop.
REQUEUE_DELAY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RunJob:
    run_id: str
    thread_id: str
    account_id: str
    attempt: int = 1
    # W3C trace context of the request that queued the job ("" when tracing is off); RabbitMQ
    # also carries it as the message's `traceparent` header.
    traceparent: str = ""

    def encode(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def decode(cls, data: bytes) -> RunJob:
        """Parse a job; raises ValueError for anything that is not one.

        Unknown keys are ignored so that a newer producer can add fields during a rolling deploy.
        """
        try:
            raw: Any = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"run job is not JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValueError("run job is not a JSON object")
        ids: dict[str, str] = {}
        for name in ("run_id", "thread_id", "account_id"):
            value = raw.get(name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"run job has no valid {name}")
            ids[name] = value
        attempt = raw.get("attempt", 1)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise ValueError(f"run job has an invalid attempt: {attempt!r}")
        traceparent = raw.get("traceparent", "")
        return cls(
            run_id=ids["run_id"],
            thread_id=ids["thread_id"],
            account_id=ids["account_id"],
            attempt=attempt,
            traceparent=traceparent if isinstance(traceparent, str) else "",
        )


JobHandler = Callable[[RunJob], Awaitable[None]]


class Consumer(Protocol):
    async def stop(self) -> None:
        """Stop taking new jobs and wait for in-flight handlers to finish.

        Jobs not yet acked when a consumer or its connection dies are redelivered to another consumer.
        """
        ...


class RunQueue(Protocol):
    async def publish(self, job: RunJob) -> None:
        """Return once the broker has accepted the job; raise QueueUnavailable otherwise."""
        ...

    async def consume(self, handler: JobHandler, *, concurrency: int) -> Consumer:
        """Deliver jobs to `handler`, at most `concurrency` at once.

        A job is acked when the handler returns. When the handler raises RequeueJob the job goes
        back to the queue at once; when it raises anything else (an infrastructure failure: a
        pool timeout, a lost connection) the job goes back after REQUEUE_DELAY_SECONDS, so a job
        is never dropped while its run may be unfinished. After DELIVERY_LIMIT deliveries it is
        dead-lettered. A message that is not a RunJob is rejected without requeue and logged.
        """
        ...

    async def close(self) -> None:
        """Close the connection. In-flight handlers are cancelled and their jobs redelivered;
        call Consumer.stop() first to drain gracefully."""
        ...
