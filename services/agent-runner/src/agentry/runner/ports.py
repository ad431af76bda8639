"""What the runner needs from the outside world, in its own vocabulary."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .domain import (
    ClaimedRun,
    DispatchJob,
    MultitaskStrategy,
    NewMessage,
    Run,
    RunStatus,
    StoredEvent,
    StoredMessage,
    Thread,
)


@dataclass(frozen=True)
class BillingCheck:
    """Billing's answer to "may this account start a run on this model"."""

    allowed: bool
    reason: str = ""
    message: str = ""
    max_concurrent_runs: int = 0  # the plan's cap on active runs; 0 = none


class BillingGate(Protocol):
    """Asked before a run is created, with the model the run will really use."""

    async def check(self, account_id: str, model: str) -> BillingCheck: ...


class RunnerRepository(Protocol):
    """Projects, threads, messages, runs and durable run events (the runner's tables)."""

    async def create_thread(self, *, account_id: str, name: str) -> Thread: ...

    async def get_thread(self, thread_id: str) -> Thread | None: ...

    async def add_message(
        self,
        *,
        thread_id: str,
        account_id: str,
        type: str,
        content_json: str,
        message_id: str,
        created_at: float,
        fence: tuple[str, int] | None = None,
    ) -> StoredMessage:
        """With `fence` (run id, lease epoch): only while that lease is held, else LeaseLost."""
        ...

    async def list_messages(self, thread_id: str) -> list[StoredMessage]: ...

    async def page_messages(
        self, thread_id: str, *, limit: int, after: tuple[float, int] | None = None, descending: bool = False
    ) -> list[tuple[StoredMessage, int]]:
        """A page ordered by (created_at, position), with each message's position (its key)."""
        ...

    async def delete_message(self, thread_id: str, message_id: str) -> bool:
        """RunAlreadyActive while a run holds the thread; False when there is no such message."""
        ...

    async def list_threads(
        self, account_id: str, *, limit: int, after: tuple[float, str] | None = None, thread_id: str | None = None
    ) -> list[Thread]:
        """Newest first (created_at, thread_id) with the summary fields filled; or the one thread."""
        ...

    async def rename_thread(self, thread_id: str, name: str) -> bool: ...

    async def delete_thread(self, thread_id: str) -> tuple[str, bool, list[str]] | None:
        """(project_id, project_deleted, run ids of the thread), or None when there is no such thread."""
        ...

    async def list_runs(self, thread_id: str, *, limit: int, after: tuple[float, str] | None = None) -> list[Run]:
        """Newest first (created_at, run_id)."""
        ...

    async def create_run(
        self,
        *,
        run_id: str,
        thread_id: str,
        account_id: str,
        model: str,
        first_message: StoredMessage | None,
        reasoning_effort: str = "",
        multitask: MultitaskStrategy | str = MultitaskStrategy.REJECT,
        max_active_runs: int = 0,
        user_id: str = "",
    ) -> Run:
        """Inserts the run atomically: `queued` with its prompt when it gets the thread now,
        else (enqueue, interrupt, rollback) `pending` with the prompt kept back until a run
        ending gives it the thread. RunAlreadyActive for reject while a run holds the thread;
        TooManyActiveRuns when the account has `max_active_runs` active runs (0: no cap)."""
        ...

    def add_promotion_listener(self, listener: Callable[[], None]) -> None:
        """Called after a commit that gave a waiting run its thread (its job is not published yet)."""
        ...

    async def get_run(self, run_id: str) -> Run | None: ...

    async def transition(
        self,
        run_id: str,
        *,
        from_: Iterable[RunStatus],
        to: RunStatus,
        error: str | None = None,
        finish_reason: str | None = None,
    ) -> bool:
        """Moves the run to `to` only if it is in one of `from_`; True when it moved."""
        ...

    async def claim_run(
        self, run_id: str, *, worker_id: str = "", lease_seconds: float = 10.0, with_history: bool = False
    ) -> ClaimedRun | None:
        """Takes a queued run (moving it to running), or a running/cancelling one whose lease
        lapsed, for `worker_id` with a fresh lease and the next epoch and attempt; returns it with
        its thread's project, and with `with_history` its thread's messages as `list_messages`
        would (read with the claim: on PostgreSQL in the same statement). None when the run does
        not exist, has ended or is leased."""
        ...

    async def renew_leases(
        self, worker_id: str, lease_seconds: float, run_ids: Iterable[str] | None = None
    ) -> dict[str, int]:
        """Extends the worker's leases (of `run_ids` only, when given); run id -> epoch of every
        run it still holds."""
        ...

    async def release_lease(self, run_id: str, epoch: int) -> bool: ...

    async def pause_run(
        self,
        run_id: str,
        epoch: int,
        pending: dict,
        events: Sequence[StoredEvent] = (),
        *,
        messages: Sequence[NewMessage] = (),
    ) -> bool: ...

    async def resume_paused(self, run_id: str, resolution: dict) -> bool: ...

    async def paused_before(self, before: float, limit: int = 500) -> list[str]: ...

    async def mark_undispatched(self, run_id: str) -> None: ...

    async def queue_stats(self) -> tuple[int, float | None]:
        """(runs waiting for a worker - status queued -, creation time of the oldest, epoch s)."""
        ...

    async def dispatch_candidates(self, *, redispatch_after: float, limit: int = 500) -> list[DispatchJob]: ...

    async def finish_run(
        self,
        run_id: str,
        *,
        from_: Iterable[RunStatus],
        to: RunStatus,
        error: str,
        finish_reason: str,
        events: Sequence[StoredEvent],
        epoch: int | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> bool:
        """Ends the run and stores its final durable events and `messages` (in order, before any
        other message) atomically (fenced on `epoch`); in the same transaction the thread's first
        pending run, if any, gets the thread."""
        ...

    async def append_events(
        self,
        run_id: str,
        events: Sequence[StoredEvent],
        *,
        epoch: int | None = None,
        phase: tuple[str, str, float] | None = None,
        messages: Sequence[NewMessage] = (),
    ) -> None:
        """Stores durable events and thread messages (in order) in one transaction."""
        ...

    async def list_events(self, run_id: str, after_seq: int, limit: int = 1000) -> list[StoredEvent]: ...

    async def max_event_seq(self, run_id: str) -> int: ...

    async def list_thread_runs(self, thread_id: str, after_thread_seq: int, limit: int = 100) -> list[Run]:
        """The thread's runs with a thread_seq above `after_thread_seq`, in thread_seq order."""
        ...


@runtime_checkable
class MeteredSandbox(Protocol):
    """A sandbox that reports each command's wall seconds (float) to `on_exec` after it ran."""

    on_exec: Callable[[float], Awaitable[object]] | None


@runtime_checkable
class SandboxTimeSink(Protocol):
    """A usage sink that also meters sandbox time: `seconds` of one command; True when recorded."""

    async def record_sandbox(self, seconds: float) -> bool: ...
