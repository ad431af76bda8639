"""The per-run event log port: one runner worker appends encoded events, many SSE streams tail them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One already-encoded event; `seq` is assigned by the writer, 1-based and strictly increasing."""

    seq: int
    data: bytes
    terminal: bool


class SequenceError(ValueError):
    """An append whose seq is not greater than every seq already appended to the run."""


class EventStreamUnavailable(Exception):
    """The store behind the event stream could not be reached."""


class EventStream(Protocol):
    async def append(self, run_id: str, seq: int, data: bytes, *, terminal: bool = False) -> None:
        """Append one entry; a terminal entry starts the run's expiry clock. Raises SequenceError."""
        ...

    async def read(self, run_id: str, after_seq: int, *, count: int = 500, block_ms: int = 0) -> list[StreamEntry]:
        """Entries with seq > after_seq, oldest first, at most `count`.

        When there are none and block_ms > 0, wait up to block_ms for the next append
        (woken by the write, not by polling); an empty list means the wait timed out.
        """
        ...

    async def first_seq(self, run_id: str) -> int | None:
        """Lowest seq still held, or None when nothing is held (unknown or expired run).

        A reader resuming after `after_seq` with first_seq > after_seq + 1 has lost entries
        to trimming and must fill the gap from the database.
        """
        ...

    async def delete(self, run_ids: list[str]) -> None:
        """Forgets the runs' logs (their thread was deleted); unknown ids are ignored. A reader
        blocked on one of them wakes and finds nothing."""
        ...

    async def close(self) -> None: ...


def thread_log_id(thread_id: str) -> str:
    """The stream id under which the runner announces a thread's runs (`{"thread_seq":N,"run_id":...}`
    at seq N, the run's place on the thread). Not a run's id (run ids are UUIDs): the stream is a
    doorbell that wakes a gateway tailing the thread; the runner's database says which runs exist."""
    return f"thread-{thread_id}"
