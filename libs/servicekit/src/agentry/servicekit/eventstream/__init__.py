"""Per-run ordered event logs written by runner workers and tailed by gateway SSE streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentry.servicekit.eventstream.memory import MemoryEventStream
from agentry.servicekit.eventstream.port import (
    EventStream,
    EventStreamUnavailable,
    SequenceError,
    StreamEntry,
    thread_log_id,
)

if TYPE_CHECKING:
    from agentry.servicekit.eventstream.redis import RedisEventStream

__all__ = [
    "EventStream",
    "EventStreamUnavailable",
    "MemoryEventStream",
    "RedisEventStream",
    "SequenceError",
    "StreamEntry",
    "thread_log_id",
]


def __getattr__(name: str) -> Any:
    # Imported on first use so that `agentry dev` and the memory adapter do not need redis installed.
    if name == "RedisEventStream":
        from agentry.servicekit.eventstream.redis import RedisEventStream

        return RedisEventStream
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
