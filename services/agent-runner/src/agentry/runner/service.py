"""The runner's use cases behind its gRPC API: threads, messages, starting and stopping runs."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

from agentpress import FinishReason, RunFinished, UserMessage
from agentry.servicekit import tracing
from agentry.servicekit.eventstream import EventStream, EventStreamUnavailable, SequenceError, thread_log_id

from .domain import (
    DEFAULT_PAGE,
    MAX_ACCOUNT_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGE_PAGE,
    MAX_MODEL_CHARS,
    MAX_PAGE,
    MAX_THREAD_NAME_CHARS,
    REASONING_EFFORTS,
    MultitaskStrategy,
    Run,
    RunStatus,
    StoredEvent,
    StoredMessage,
    Thread,
)
from .errors import (
    InvalidInput,
    MessageNotFound,
    RunNotFound,
    RunNotWaiting,
    RunRefusedByBilling,
    ThreadNotFound,
    TooManyActiveRuns,
)
from .paging import decode_cursor, encode_cursor, page_size
from .ports import BillingGate, RunnerRepository
from .queue import QueueUnavailable, RunJob, RunQueue
from .sinks import end_run
from .stopsignal import StopSignal

logger = logging.getLogger(__name__)

# How long deleting a thread waits for its running run to end after asking it to stop (its worker
# finishes the step it is in); past this the rows go anyway and the worker's next write finds its
# lease gone.
DELETE_STOP_WAIT_SECONDS = 5.0


class RunnerService:
    def __init__(
        self,
        repo: RunnerRepository,
        queue: RunQueue,
        events: EventStream,
        stops: StopSignal,
        *,
        default_model: str,
        force_model: str | None = None,
        clock=time.time,
        on_undispatched: Callable[[], None] | None = None,
        max_active_runs_per_account: int = 0,
        active_runs_retry_after_seconds: int = 1,
        billing: BillingGate | None = None,
    ) -> None:
        self._repo = repo
        self._billing = billing
        self._queue = queue
        self._events = events
        self._stops = stops
        self._default_model = default_model
        self._force_model = force_model
        self._clock = clock
        self._on_undispatched = on_undispatched
        self._max_active_runs = max_active_runs_per_account
        self._retry_after = active_runs_retry_after_seconds
        self._announcing: set[asyncio.Task[None]] = set()  # doorbells being rung (see _announce)
        if on_undispatched is not None:
            # A run that ends in this process (a worker sharing the repository, or a stop here)
            # and gives its thread to a waiting run wakes the sweeper, which publishes that
            # run's job now rather than at its next pass.
            repo.add_promotion_listener(on_undispatched)

    async def create_thread(self, account_id: str, name: str) -> Thread:
        _require_account(account_id)
        name = name.strip() or "New thread"
        if len(name) > MAX_THREAD_NAME_CHARS:
            raise InvalidInput(f"name: at most {MAX_THREAD_NAME_CHARS} characters")
        _refuse_nul("name", name)
        return await self._repo.create_thread(account_id=account_id, name=name)

    async def get_thread(self, account_id: str, thread_id: str) -> Thread:
        _require_account(account_id)
        thread = await self._repo.get_thread(thread_id) if _is_uuid(thread_id) else None
        if thread is None or thread.account_id != account_id:
            raise ThreadNotFound(f"thread {thread_id} not found")
        return thread

    async def describe_thread(self, account_id: str, thread_id: str) -> Thread:
        """The thread with its summary (message count, last run status, updated_at)."""
        thread = await self.get_thread(account_id, thread_id)
        [described] = await self._repo.list_threads(account_id, limit=1, thread_id=thread.thread_id)
        return described

    async def list_threads(self, account_id: str, limit: int, cursor: str) -> tuple[list[Thread], str]:
        """A page of the account's threads, newest first, and the cursor of the next ("" at the end)."""
        _require_account(account_id)
        size = page_size(limit, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        after = decode_cursor(cursor, float, str)
        page = await self._repo.list_threads(account_id, limit=size + 1, after=after)  # type: ignore[arg-type]
        more, page = len(page) > size, page[:size]
        return page, encode_cursor(page[-1].created_at, page[-1].thread_id) if more else ""

    async def rename_thread(self, account_id: str, thread_id: str, name: str) -> Thread:
        thread = await self.get_thread(account_id, thread_id)
        name = name.strip()
        if not name:
            raise InvalidInput("name: must not be empty")
        if len(name) > MAX_THREAD_NAME_CHARS:
            raise InvalidInput(f"name: at most {MAX_THREAD_NAME_CHARS} characters")
        _refuse_nul("name", name)
        if not await self._repo.rename_thread(thread.thread_id, name):
            raise ThreadNotFound(f"thread {thread_id} not found")
        return await self.describe_thread(account_id, thread.thread_id)

    async def delete_thread(self, account_id: str, thread_id: str) -> tuple[str, bool]:
        """Stops the thread's active runs (waiting up to DELETE_STOP_WAIT_SECONDS for a running one
        to end), then deletes its messages, runs, events and live logs; the project goes with its
        last thread. (project_id, project_deleted)."""
        thread = await self.get_thread(account_id, thread_id)
        active = [run for run in await self._repo.list_runs(thread.thread_id, limit=10_000) if run.status.active]
        for run in active:
            await self._stop(run.run_id)
        for run in active:
            await self._await_end(run.run_id)
        deleted = await self._repo.delete_thread(thread.thread_id)
        if deleted is None:
            raise ThreadNotFound(f"thread {thread_id} not found")
        project_id, project_deleted, run_ids = deleted
        for run in active:
            await self._stops.request_stop(run.run_id)  # a worker still on it stops at its next step
        try:
            await self._events.delete([*run_ids, thread_log_id(thread.thread_id)])
        except EventStreamUnavailable:  # the rows are gone; live logs expire by themselves (their TTL)
            logger.warning("thread %s deleted but its live event logs were not", thread.thread_id, exc_info=True)
        return project_id, project_deleted

    async def _await_end(self, run_id: str) -> None:
        """Waits (on the run's event log, not by polling) until the run has ended, at most
        DELETE_STOP_WAIT_SECONDS."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DELETE_STOP_WAIT_SECONDS
        last = 0
        while (remaining := deadline - loop.time()) > 0:
            run = await self._repo.get_run(run_id)
            if run is None or run.status.terminal:
                return
            entries = await self._events.read(run_id, last, block_ms=int(min(remaining, 0.5) * 1000))
            if entries:
                last = entries[-1].seq

    async def page_messages(
        self, account_id: str, thread_id: str, limit: int, cursor: str, order: str
    ) -> tuple[list[StoredMessage], str]:
        """A page of the thread's messages ordered by (created_at, position), `order` "asc" (or "")
        or "desc", and the cursor of the next page ("" at the end)."""
        thread = await self.get_thread(account_id, thread_id)
        if order not in ("", "asc", "desc"):
            raise InvalidInput("order: must be asc or desc")
        size = page_size(limit, default=DEFAULT_PAGE, maximum=MAX_MESSAGE_PAGE)
        after = decode_cursor(cursor, float, int)
        page = await self._repo.page_messages(
            thread.thread_id,
            limit=size + 1,
            after=after,  # type: ignore[arg-type]
            descending=order == "desc",
        )
        more, page = len(page) > size, page[:size]
        return [m for m, _ in page], encode_cursor(page[-1][0].created_at, page[-1][1]) if more else ""

    async def delete_message(self, account_id: str, thread_id: str, message_id: str) -> None:
        """RunAlreadyActive (409) while a run holds the thread; MessageNotFound otherwise unknown."""
        thread = await self.get_thread(account_id, thread_id)
        if not await self._repo.delete_message(thread.thread_id, message_id):
            raise MessageNotFound(f"message {message_id} not found")

    async def list_runs(self, account_id: str, thread_id: str, limit: int, cursor: str) -> tuple[list[Run], str]:
        """A page of the thread's runs, newest first, and the cursor of the next ("" at the end)."""
        thread = await self.get_thread(account_id, thread_id)
        size = page_size(limit, default=DEFAULT_PAGE, maximum=MAX_PAGE)
        after = decode_cursor(cursor, float, str)
        page = await self._repo.list_runs(thread.thread_id, limit=size + 1, after=after)  # type: ignore[arg-type]
        more, page = len(page) > size, page[:size]
        return page, encode_cursor(page[-1].created_at, page[-1].run_id) if more else ""

    async def add_message(self, account_id: str, thread_id: str, content: str) -> StoredMessage:
        thread = await self.get_thread(account_id, thread_id)
        message = self._user_message(thread, content)
        return await self._repo.add_message(
            thread_id=thread.thread_id,
            account_id=account_id,
            type=message.type,
            content_json=message.content_json,
            message_id=message.message_id,
            created_at=message.created_at,
        )

    async def list_messages(self, account_id: str, thread_id: str) -> list[StoredMessage]:
        thread = await self.get_thread(account_id, thread_id)
        return await self._repo.list_messages(thread.thread_id)

    async def start_run(
        self,
        account_id: str,
        thread_id: str,
        model: str,
        prompt: str,
        reasoning_effort: str = "",
        multitask_strategy: str = "",
        *,
        user_id: str = "",
    ) -> Run:
        """Starts a run on the thread. When another run is active there, `multitask_strategy`
        decides: reject (the default: RunAlreadyActive), enqueue (the run waits, `pending`, until
        the runs ahead of it have ended), interrupt (the active run is stopped and this one runs
        next) or rollback (as interrupt, and what the stopped run added after its prompt is
        deleted before this one starts). TooManyActiveRuns beyond the per-account cap."""
        model = self._force_model or model.strip() or self._default_model
        # Billing decides on the model the run will really use (the default when none was named),
        # asked while the thread is read (two round trips at once, not one after the other); the
        # plan's concurrency cap is enforced below, atomically, where runs live.
        checking = (
            asyncio.ensure_future(self._billing.check(account_id, model))
            if self._billing is not None and len(model) <= MAX_MODEL_CHARS and "\x00" not in model
            else None
        )
        check = None
        try:
            thread = await self.get_thread(account_id, thread_id)
            if reasoning_effort not in REASONING_EFFORTS:
                raise InvalidInput("reasoning_effort: must be one of low, medium, high (or empty)")
            strategy = MultitaskStrategy.parse(multitask_strategy)
            if strategy is None:
                raise InvalidInput("multitask_strategy: must be one of reject, enqueue, interrupt, rollback (or empty)")
            if len(model) > MAX_MODEL_CHARS:
                raise InvalidInput(f"model_name: at most {MAX_MODEL_CHARS} characters")
            _refuse_nul("model_name", model)
            check = await checking if checking is not None else None
        finally:
            if checking is not None:
                if not checking.done():
                    checking.cancel()  # the start failed before billing answered: not needed
                elif not checking.cancelled():
                    checking.exception()  # retrieved: a failure there is reported only if awaited above
        max_active = self._max_active_runs
        if check is not None:
            if not check.allowed:
                raise RunRefusedByBilling(check.reason, check.message or "billing does not allow this run")
            if check.max_concurrent_runs > 0:
                max_active = min(max_active, check.max_concurrent_runs) if max_active else check.max_concurrent_runs
        first = self._user_message(thread, prompt) if prompt.strip() else None
        try:
            run = await self._repo.create_run(
                run_id=str(uuid.uuid4()),
                thread_id=thread.thread_id,
                account_id=account_id,
                model=model,
                first_message=first,
                reasoning_effort=reasoning_effort,
                multitask=strategy,
                max_active_runs=max_active,
                user_id=user_id[:64],
            )
        except TooManyActiveRuns as exc:
            exc.retry_after_seconds = self._retry_after
            raise
        from . import metrics

        metrics.runs_started().labels(metrics.model_label(model)).inc()
        if run.thread_seq is not None:
            self._announce(run)
        if run.status is RunStatus.QUEUED:
            await self._publish(run)
            return run
        if run.interrupts_run_id is not None:
            # interrupt / rollback: the run holding the thread is stopped like a StopRun; when it
            # has ended (at once if no worker had it yet) this run gets the thread.
            await self._stop(run.interrupts_run_id)
        return await self._repo.get_run(run.run_id) or run

    async def _publish(self, run: Run) -> None:
        try:
            await self._queue.publish(
                RunJob(
                    run_id=run.run_id,
                    thread_id=run.thread_id,
                    account_id=run.account_id,
                    traceparent=tracing.current_traceparent(),
                )
            )
        except QueueUnavailable as exc:
            # The run is accepted (it is in the database): the sweeper publishes its job as soon
            # as the broker is back. The caller gets its 202 like any other start.
            logger.warning("run %s accepted but not yet dispatched: %s", run.run_id, exc)
            await self._repo.mark_undispatched(run.run_id)
            if self._on_undispatched is not None:
                self._on_undispatched()

    async def get_run(self, account_id: str, run_id: str) -> Run:
        _require_account(account_id)
        run = await self._repo.get_run(run_id) if _is_uuid(run_id) else None
        if run is None or run.account_id != account_id:
            raise RunNotFound(f"agent run {run_id} not found")
        return run

    async def stop_run(self, account_id: str, run_id: str) -> Run:
        run = await self.get_run(account_id, run_id)
        await self._stop(run.run_id)
        return await self.get_run(account_id, run_id)

    async def _stop(self, run_id: str) -> None:
        # A queued or pending run is cancelled here; a running one is handed to its worker. The
        # conditional updates make the race with a worker picking the job up harmless.
        for _ in range(3):
            run = await self._repo.get_run(run_id)
            if run is None or run.status.terminal or run.status is RunStatus.CANCELLING:
                return
            if run.status in (RunStatus.QUEUED, RunStatus.PENDING):
                if await self.finish_without_worker(run.run_id, RunStatus.CANCELLED, "cancelled", ""):
                    await self._stops.request_stop(run.run_id)
                    return
            elif run.status is RunStatus.REQUIRES_ACTION:  # waiting for the user: no worker holds it
                if await self.end_paused(run.run_id, "cancelled"):
                    return
            elif await self._repo.transition(run.run_id, from_=[RunStatus.RUNNING], to=RunStatus.CANCELLING):
                await self._stops.request_stop(run.run_id)
                return

    async def resume_run(self, account_id: str, run_id: str, *, content: str | None, decision: str | None) -> Run:
        """Continues a run waiting for the user (requires_action) with their answer (`content`,
        for a question) or decision (`decision` approve/reject, optional `content`, for an
        approval): the same run, its stream going on. RunNotWaiting (409) when it is not waiting;
        InvalidInput (400) when the input does not fit what it waits for."""
        run = await self.get_run(account_id, run_id)
        if run.status is not RunStatus.REQUIRES_ACTION or not run.pending:
            raise RunNotWaiting(f"agent run {run_id} is {run.status.value}, not waiting for the user")
        content = content if content is None else content.strip()
        if content is not None and len(content) > MAX_MESSAGE_CHARS:
            raise InvalidInput(f"content: at most {MAX_MESSAGE_CHARS} characters")
        if run.pending.get("kind") == "question":
            if decision:
                raise InvalidInput("decision: this run waits for an answer to a question; send content")
            if not content:
                raise InvalidInput("content: the answer to the run's question is required")
            resolution: dict = {"content": content}
        else:
            if decision not in ("approve", "reject"):
                raise InvalidInput("decision: must be approve or reject for a call waiting for approval")
            resolution = {"decision": decision, "content": content or ""}
        if not await self._repo.resume_paused(run.run_id, resolution):
            raise RunNotWaiting(f"agent run {run_id} is no longer waiting for the user")
        try:
            await self._queue.publish(
                RunJob(
                    run_id=run.run_id,
                    thread_id=run.thread_id,
                    account_id=account_id,
                    traceparent=tracing.current_traceparent(),
                )
            )
        except QueueUnavailable as exc:
            logger.warning("run %s resumed but not yet dispatched: %s", run.run_id, exc)
            await self._repo.mark_undispatched(run.run_id)
            if self._on_undispatched is not None:
                self._on_undispatched()
        return await self.get_run(account_id, run_id)

    async def end_paused(self, run_id: str, reason: str) -> bool:
        """Ends a run waiting for the user (stopped: cancelled; waited too long: expired)."""
        seq = await self._repo.max_event_seq(run_id) + 1
        return await end_run(
            self._repo,
            self._events,
            run_id,
            seq=seq,
            event=RunFinished(reason=FinishReason(reason)),
            from_=[RunStatus.REQUIRES_ACTION],
        )

    async def expire_paused(self, ttl_seconds: float) -> int:
        """Ends every run that has waited for the user longer than `ttl_seconds` (sweeper)."""
        ended = 0
        for run_id in await self._repo.paused_before(self._clock() - ttl_seconds):
            ended += await self.end_paused(run_id, "expired")
        return ended

    async def list_run_events(self, account_id: str, run_id: str, after_seq: int) -> list[StoredEvent]:
        run = await self.get_run(account_id, run_id)
        return await self._repo.list_events(run.run_id, max(after_seq, 0))

    async def finish_without_worker(self, run_id: str, status: RunStatus, reason: str, error: str) -> bool:
        """Ends a queued (or pending) run no worker has taken, with its one terminal event."""
        del status  # the reason decides it (domain.final_status)
        seq = await self._repo.max_event_seq(run_id) + 1
        return await end_run(
            self._repo,
            self._events,
            run_id,
            seq=seq,
            event=RunFinished(reason=FinishReason(reason), error=error or None),
            from_=[RunStatus.QUEUED, RunStatus.PENDING],
        )

    def _user_message(self, thread: Thread, content: str) -> StoredMessage:
        if not content.strip():
            raise InvalidInput("content: must not be empty")
        if len(content) > MAX_MESSAGE_CHARS:
            raise InvalidInput(f"content: at most {MAX_MESSAGE_CHARS} characters")
        message = UserMessage(text=content)
        return StoredMessage(
            message.message_id, thread.thread_id, "user", message.to_json().decode(), message.created_at
        )

    async def list_thread_runs(
        self, account_id: str, thread_id: str, after_thread_seq: int, limit: int = 0
    ) -> list[Run]:
        """The thread's runs in the order they held it, after `after_thread_seq` (at most `limit`,
        100 when 0 or more)."""
        thread = await self.get_thread(account_id, thread_id)
        limit = 100 if limit <= 0 else min(limit, 100)
        return await self._repo.list_thread_runs(thread.thread_id, max(after_thread_seq, 0), limit)

    def _announce(self, run: Run) -> None:
        """Rings the thread's doorbell (thread_log_id) for a run that got its place on the thread
        as it was created, so gateways tailing the thread list its runs now. In the background: a
        start never waits for the event stream, and a doorbell that fails (or lands after a later
        one) only delays a watcher until its next refresh. A run that gets the thread when another
        ends needs none: watchers list the thread's runs when the run before it ends."""
        assert run.thread_seq is not None
        data = b'{"thread_seq":%d,"run_id":"%s"}' % (run.thread_seq, run.run_id.encode())

        thread_seq = run.thread_seq

        async def ring() -> None:
            try:
                # Terminal, so the doorbell expires like a finished run's log (each ring restarts it).
                await self._events.append(thread_log_id(run.thread_id), thread_seq, data, terminal=True)
            except SequenceError:
                pass  # a later run's ring landed first: it woke the watchers already
            except Exception:
                logger.warning("could not announce run %s on its thread", run.run_id, exc_info=True)

        task = asyncio.create_task(ring())
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)


def _require_account(account_id: str) -> None:
    if not account_id:
        raise InvalidInput("account_id: required")
    if len(account_id) > MAX_ACCOUNT_ID_CHARS:
        raise InvalidInput(f"account_id: at most {MAX_ACCOUNT_ID_CHARS} characters")
    _refuse_nul("account_id", account_id)


def _refuse_nul(field: str, value: str) -> None:
    # PostgreSQL text cannot hold NUL: without this the same input is stored on SQLite and is an
    # internal error on PostgreSQL. (Message content is JSON-encoded, so NUL is fine there.)
    if "\x00" in value:
        raise InvalidInput(f"{field}: must not contain NUL characters")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
