"""The worker role: takes run jobs off the queue, holds a lease on each run it drives, and drives
agentpress until the run ends, resuming runs whose previous worker went away.

A run's lease lives in its database row (`worker_id`, `lease_expires_at`, `lease_epoch`). One
heartbeat per worker process renews every lease it holds in one statement, every third of the
lease. Every write of a run's messages and durable events is fenced on the epoch the worker
claimed, so a worker that lost its lease (it stalled, or was partitioned away) can never write
again; one that cannot renew for most of a lease stops its runs by itself, before anyone else
may take them over. A job for a run whose lease lapsed (its worker was killed) takes the run
over: the next epoch and attempt, the event stream continued after the last sequence number with
`run_resumed`, interrupted tool calls closed (never re-run unless idempotent), and the model call
made again from the persisted history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.trace import SpanKind

from agentpress import (
    Agent,
    FinishReason,
    MessageCompleted,
    ModelSettings,
    PhaseChanged,
    RetryPolicy,
    RunContext,
    RunFinished,
    RunResult,
    RunResumed,
    SandboxPort,
    ToolCall,
    ToolExecution,
    UsageSink,
    close_interrupted_calls,
    default_tools,
)
from agentpress.observe import FanOut
from agentry.servicekit import tracing
from agentry.servicekit.context import account_id_var, run_id_var
from agentry.servicekit.eventstream import EventStream

from . import metrics
from .admission import Admission
from .config import RunnerSettings
from .domain import RESUME_USER_INPUT, ClaimedRun, Phase, Run, RunStatus
from .ports import MeteredSandbox, RunnerRepository, SandboxTimeSink
from .queue import RequeueJob, RunJob
from .sinks import Lease, RunEventSink, ThreadMessageStore
from .stopsignal import StopSignal

logger = logging.getLogger(__name__)

AgentFactory = Callable[[Run], Agent]
# The Langfuse tracer's shape: start_run(**run fields) -> an agentpress RunObserver with end().
RunTracer = Any
# (account_id, project_id, on_start, on_ready) -> the run's sandbox; (account_id, run_id, attempt) -> usage
SandboxFactory = Callable[..., SandboxPort]
UsageFactory = Callable[..., UsageSink]

_LEASED = [RunStatus.RUNNING, RunStatus.CANCELLING]


@dataclass(frozen=True)
class WorkerPolicy:
    """How long leases last and when runs give up (RunnerSettings fills it)."""

    lease_seconds: float = 10.0
    max_attempts: int = 3
    max_run_seconds: float = 3600.0
    max_idle_seconds: float = 600.0
    write_retry_seconds: float = 60.0  # how long a failing durable write is retried
    event_write_delay: float = 0.0  # seconds a durable event may wait to be batched with others
    delta_coalesce: float = 0.0  # seconds within which deltas are merged into one event (0: never)


@dataclass
class _Held:
    lease: Lease
    claimed_at: float  # monotonic
    task: asyncio.Task[object] | None = None  # the agent's run, cancelled when the lease is lost
    handed_back: bool = False
    end_override: RunFinished | None = None  # a deadline ended the run: this replaces "cancelled"
    last_event: float = field(default_factory=time.monotonic)


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RunWorker:
    def __init__(
        self,
        *,
        repo: RunnerRepository,
        events: EventStream,
        stops: StopSignal,
        sandboxes: SandboxFactory,
        usage: UsageFactory,
        agent_factory: AgentFactory,
        policy: WorkerPolicy = WorkerPolicy(),
        worker_id: str | None = None,
        clock: Callable[[], float] = time.time,
        admission: Admission | None = None,
        tracer: RunTracer | None = None,
    ) -> None:
        self._repo = repo
        self._tracer = tracer  # Langfuse (adapters/langfuse_tracing.py); None: runs are not traced
        self._admission = admission
        self._events = events
        self._stops = stops
        self._sandboxes = sandboxes
        self._usage = usage
        self._agent_factory = agent_factory
        self._policy = policy
        self.worker_id = worker_id or new_worker_id()
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._ready: asyncio.Event | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._accepting = True
        self._shutdown = asyncio.Event()

    def wait_before_claiming(self, ready: asyncio.Event) -> None:
        """Jobs wait for `ready` (the model library imported) before claiming their run."""
        self._ready = ready

    @property
    def held_runs(self) -> list[str]:
        return list(self._held)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the heartbeat that renews every held lease."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="lease-heartbeat")

    def stop_accepting(self) -> None:
        """Graceful shutdown begins: jobs that arrive now go back to the queue."""
        self._accepting = False
        self._shutdown.set()

    async def hand_back_all(self) -> None:
        """Gives every run still held back for another worker to resume (not cancelled): the
        lease is released (so the next claim takes it at once), nothing more is written, the
        agent is stopped, and each job goes back to the queue."""
        self.stop_accepting()
        held = list(self._held.values())
        await asyncio.gather(*(self._hand_back(h) for h in held))
        logger.info("handed back %d runs", len(held))

    async def _hand_back(self, held: _Held) -> None:
        if held.handed_back:
            return
        held.handed_back = True
        try:
            await self._repo.release_lease(held.lease.run_id, held.lease.epoch)
        except Exception:  # the lease then lapses by itself
            logger.warning("could not release the lease of run %s", held.lease.run_id, exc_info=True)
        held.lease.mark_lost()  # nothing more is written; the agent task is cancelled
        if held.task is not None:
            await asyncio.wait([held.task])

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait([self._heartbeat])
            self._heartbeat = None

    # -- jobs --------------------------------------------------------------------------------

    async def handle(self, job: RunJob) -> None:
        """`_handle_job` within the job's span of the request's trace (when tracing is on)."""
        if not tracing.enabled():
            return await self._handle_job(job)
        with tracing.span(
            "run job",
            kind=SpanKind.CONSUMER,
            parent={"traceparent": job.traceparent} if job.traceparent else None,
            attributes={"messaging.operation.type": "process", "agentry.run_id": job.run_id},
        ):
            return await self._handle_job(job)

    async def _handle_job(self, job: RunJob) -> None:
        """Drives the job's run to its end or hands it back. Raises RequeueJob when the job must
        go back to the queue (this worker is shutting down); returns when the job is done with
        (the run ended, or another worker holds it)."""
        run_id_var.set(job.run_id)
        account_id_var.set(job.account_id)
        if not self._accepting:
            raise RequeueJob("the worker is shutting down")
        if self._ready is not None and not self._ready.is_set():
            await self._ready.wait()
        if self._admission is not None:
            await self._admission.admit()  # unclaimed meanwhile: no lease held while it waits
            if not self._accepting:
                raise RequeueJob("the worker is shutting down")
        claimed = await self._claim(job.run_id)
        if claimed is None:
            return
        run = claimed.run
        held = _Held(Lease(run.run_id, run.lease_epoch), time.monotonic())
        self._held[run.run_id] = held
        active = metrics.active_runs()
        active.inc()
        try:
            await self._drive(claimed, held)
        finally:
            self._held.pop(run.run_id, None)
            active.dec()
        if held.handed_back:
            metrics.runs_handed_back().inc()
            raise RequeueJob("run handed back at shutdown")

    async def _claim(self, run_id: str) -> ClaimedRun | None:
        if run_id in self._held:
            return None  # a duplicate job (or a lapsed lease re-published) of a run driven here
        for _ in range(3):
            claimed = await self._repo.claim_run(
                run_id, worker_id=self.worker_id, lease_seconds=self._policy.lease_seconds, with_history=True
            )
            if claimed is not None:
                return claimed
            run = await self._repo.get_run(run_id)
            if run is None:
                logger.warning("job for unknown run dropped")
                return None
            if run.status not in _LEASED:
                return None  # ended, paused, or claimed and already over: a duplicate job
            if run.worker_id == self.worker_id:
                # Our own lease, but we drive the run no more (its attempt failed before it
                # started, and the job came back): give the lease up and take the run again.
                await self._repo.release_lease(run_id, run.lease_epoch)
                continue
            # Leased by another worker. A job redelivered because that worker died arrives while
            # its lease still runs: wait for the lease to lapse, then take the run over. A live
            # holder renews it, and this job was a duplicate.
            wait = (run.lease_expires_at or 0.0) - self._clock() + 0.05
            if wait > self._policy.lease_seconds + 1:
                return None
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._shutdown.wait(), wait)
            if not self._accepting:
                raise RequeueJob("the worker is shutting down")
        return None

    async def _drive(self, claimed: ClaimedRun, held: _Held) -> None:
        run, lease = claimed.run, held.lease
        resumed = run.attempt > 1  # another worker had it
        answered = claimed.resume_reason == RESUME_USER_INPUT  # it waited for the user
        last_seq = 0
        if resumed or answered:
            last_seq = max(await self._repo.max_event_seq(run.run_id), await self._last_stream_seq(run.run_id))

        def seen_event() -> None:
            held.last_event = time.monotonic()

        sink = RunEventSink(
            run.run_id,
            self._repo,
            self._events,
            last_seq=last_seq,
            lease=lease,
            on_event=seen_event,
            write_retry_seconds=self._policy.write_retry_seconds,
            write_delay=self._policy.event_write_delay,
            delta_coalesce=self._policy.delta_coalesce,
        )
        sink.started_at = run.started_at
        first_start = run.attempt <= 1 and not answered
        if first_start:  # how long its job waited for a worker
            metrics.queue_wait().observe(max(self._clock() - run.created_at, 0.0))
        observer = metrics.RunObserver(
            model=run.model, created_at=run.created_at if first_start else None, seq=lambda: sink.last_seq
        )
        if run.attempt > self._policy.max_attempts:
            await sink.emit(
                RunFinished(
                    reason=FinishReason.ERROR,
                    error=(f"the run was interrupted {run.attempt - 1} times (its worker was lost); giving up"),
                )
            )
            return
        try:
            agent = self._agent_factory(run)
        except Exception:
            logger.exception("the run's agent could not be built")
            await sink.emit(RunFinished(reason=FinishReason.ERROR, error="the worker failed while running the agent"))
            return
        sink.idempotent_tools = frozenset(t.name for t in agent.tools if t.idempotent)
        messages = ThreadMessageStore(
            self._repo,
            thread_id=run.thread_id,
            account_id=run.account_id,
            lease=lease,
            sink=sink,
            history=claimed.history,
        )
        if resumed or answered:
            logger.info("resuming run (attempt %d, %s)", run.attempt, claimed.resume_reason)
            metrics.runs_resumed().labels(str(claimed.resume_reason or "unknown")).inc()
            await sink.emit(RunResumed(attempt=run.attempt, reason=claimed.resume_reason))
            await sink.emit(PhaseChanged(phase=Phase.RESUMED.value))
        if run.status is RunStatus.CANCELLING:  # stopped while no worker held it
            await sink.emit(RunFinished(reason=FinishReason.CANCELLED))
            return

        async def continue_run(ctx: RunContext) -> RunResult:
            if run.pending and run.resolution:  # the user answered: apply it first
                again = await agent.resolve_pending(ctx, run.pending, run.resolution)
                if again is not None:
                    return RunResult(FinishReason.REQUIRES_ACTION, pending=again)
            if resumed:  # close what the lost worker left dangling (never re-run a side effect)
                await _kill_run_processes(ctx.sandbox, run.run_id, find=True)  # and end the processes it started
                for message in close_interrupted_calls(
                    await messages.load(), await self._started_calls(run.run_id), agent.tools
                ):
                    await messages.append(message)
                    await sink.emit(MessageCompleted(message=message))
            return await agent.run(ctx, resumed=resumed or answered)

        before_sandbox: list[tuple[str, str, float] | None] = []

        async def sandbox_starting() -> None:
            before_sandbox.append(sink.current_phase)
            await sink.emit(PhaseChanged(phase=Phase.STARTING_SANDBOX.value))

        async def sandbox_ready() -> None:  # back to what waited for the sandbox (the tool)
            previous = before_sandbox.pop() if before_sandbox else None
            if previous is not None:
                await sink.emit(PhaseChanged(phase=previous[0], tool=previous[1] or None))

        trace = self._start_trace(claimed)
        outcome, error = "error", "the worker failed while running the agent"
        try:
            async with self._stops.watch(run.run_id) as cancel:
                ctx = RunContext(
                    run_id=run.run_id,
                    thread_id=run.thread_id,
                    messages=messages,
                    sandbox=self._sandboxes(run.account_id, claimed.project_id, sandbox_starting, sandbox_ready),
                    usage=self._usage(run.account_id, run.run_id, run.attempt),
                    events=_OverridingSink(sink, held, observer),
                    cancel=cancel,
                    observer=trace,
                )
                if isinstance(ctx.sandbox, MeteredSandbox) and isinstance(ctx.usage, SandboxTimeSink):
                    ctx.sandbox.on_exec = ctx.usage.record_sandbox  # sandbox time is billed per exec second
                held.task = asyncio.create_task(continue_run(ctx), name=f"run:{run.run_id}")
                lease.on_lost(lambda: _cancel_until_done(held.task))
                deadline = asyncio.create_task(self._watch_deadlines(run, held, cancel, from_now=answered))
                try:
                    await asyncio.wait([held.task])
                except asyncio.CancelledError:
                    # The job itself was cancelled (the queue connection closed under us): the
                    # broker redelivers it, so give the run back for whoever takes it next.
                    await asyncio.shield(self._hand_back(held))
                    raise
                finally:
                    deadline.cancel()
                if held.task.cancelled():
                    logger.info("run stopped here: %s", "handed back" if held.handed_back else "lease lost")
                    if not held.handed_back and not sink.finished:  # not a run that just ended
                        metrics.lease_losses().inc()
                    outcome, error = ("handed_back" if held.handed_back else "lease_lost"), None
                    return
                result = held.task.result()
                outcome, error = str(result.reason), result.error
                if result.reason is FinishReason.REQUIRES_ACTION:
                    await self._pause(run, sink, lease, result.pending or {})
                    return
                await _kill_run_processes(ctx.sandbox, run.run_id, find=resumed)  # nothing it started outlives it
                logger.info("run finished: %s", result.reason)
        except Exception:
            if lease.lost:
                logger.info("run stopped here: lease lost", exc_info=True)
                if not held.handed_back and not sink.finished:
                    metrics.lease_losses().inc()
                return
            logger.exception("run crashed")
            if not sink.finished:
                await sink.emit(
                    RunFinished(reason=FinishReason.ERROR, error="the worker failed while running the agent")
                )
        finally:
            if trace is not None and hasattr(trace, "end"):
                trace.end(outcome=outcome, error=error)
            observer.flush()

    def _start_trace(self, claimed: ClaimedRun) -> Any:
        """The run's observer: Langfuse's, OpenTelemetry's, both (FanOut) or None."""
        otel = None
        if tracing.enabled():
            from .adapters.otel_observer import OtelRunObserver

            otel = OtelRunObserver()
        if self._tracer is None:
            return otel
        run = claimed.run
        try:
            langfuse = self._tracer.start_run(
                run_id=run.run_id,
                thread_id=run.thread_id,
                account_id=run.account_id,
                user_id=run.user_id,
                model=run.model,
                attempt=run.attempt,
                resume_reason=claimed.resume_reason,
            )
        except Exception:
            logger.warning("could not start the run's trace", exc_info=True)
            return otel
        return langfuse if otel is None else _TracedRun([langfuse, otel], langfuse)

    async def _pause(self, run: Run, sink: RunEventSink, lease: Lease, pending: dict) -> None:
        """The run waits for the user: the sink stored requires_action with the status (it holds
        no lease, and this worker's slot is free); POST /resume queues it again."""
        if sink.paused:
            logger.info("run waits for the user (%s)", pending.get("kind"))
            return
        now = await self._repo.get_run(run.run_id)
        if now is not None and now.status is RunStatus.CANCELLING and now.lease_epoch == lease.epoch:
            await sink.emit(RunFinished(reason=FinishReason.CANCELLED))  # stopped while it was pausing
        else:
            lease.mark_lost()

    async def _watch_deadlines(self, run: Run, held: _Held, cancel: asyncio.Event, *, from_now: bool = False) -> None:
        """Ends the run `timeout` once it ran longer than max_run_seconds (counted from its first
        start, across attempts; from now when it continues after waiting for the user) or sent
        no event for max_idle_seconds. One timer, re-armed."""
        policy = self._policy
        started = self._clock() if from_now else (run.started_at or self._clock())
        run_ends = time.monotonic() + policy.max_run_seconds - (self._clock() - started)
        while True:
            now = time.monotonic()
            idle_ends = held.last_event + policy.max_idle_seconds
            if now >= run_ends or now >= idle_ends:
                what = "maximum duration" if now >= run_ends else "maximum idle time"
                limit = policy.max_run_seconds if now >= run_ends else policy.max_idle_seconds
                held.end_override = RunFinished(
                    reason=FinishReason.TIMEOUT, error=f"the run exceeded its {what} ({limit:g} s)"
                )
                cancel.set()
                return
            await asyncio.sleep(min(run_ends, idle_ends) - now)

    async def _started_calls(self, run_id: str) -> list[ToolCall]:
        """Tool calls the run's earlier attempts announced as running (durable `phase` events)."""
        calls: list[ToolCall] = []
        after = 0
        while batch := await self._repo.list_events(run_id, after, limit=1000):
            after = batch[-1].seq
            for event in batch:
                if b'"type":"phase"' not in event.data:
                    continue
                data = orjson.loads(event.data)
                if data.get("call"):
                    calls.append(ToolCall(**data["call"]))
        return calls

    async def _last_stream_seq(self, run_id: str) -> int:
        last = 0
        while batch := await self._events.read(run_id, last, count=1000):
            last = batch[-1].seq
        return last

    async def _beat(self) -> None:
        """Renews every held lease each third of a lease. When renewals keep failing for most of
        a lease, this worker can no longer prove it holds its runs: it stops them all itself,
        before another worker may take them over."""
        lease_seconds = self._policy.lease_seconds
        last_ok = time.monotonic()
        failing = False
        while True:
            # After a failure, soon again: a database back from a restart renews at once, well
            # before 70% of the lease has passed, so its runs carry on.
            await asyncio.sleep(min(lease_seconds / 3, 0.25) if failing else lease_seconds / 3)
            started = time.monotonic()
            if not self._held:
                last_ok = started
                continue
            try:
                # Only the runs it drives: one it stopped (renewals failed) must lapse, for another
                # worker to take over, even while this worker holds other runs.
                held_now = await self._repo.renew_leases(self.worker_id, lease_seconds, run_ids=list(self._held))
            except Exception as exc:  # noqa: BLE001 - retried; past 70% of the lease the runs are stopped
                failing = True
                if time.monotonic() - last_ok > lease_seconds * 0.7:
                    logger.error(
                        "leases could not be renewed for %.1fs; stopping %d runs: %r",
                        time.monotonic() - last_ok,
                        len(self._held),
                        exc,
                    )
                    for h in list(self._held.values()):
                        h.lease.mark_lost()
                else:
                    logger.warning("lease renewal failed: %r", exc)
                continue
            failing = False
            last_ok = started
            for run_id, h in list(self._held.items()):
                if h.claimed_at < started and held_now.get(run_id) != h.lease.epoch:
                    logger.warning("lease of run %s lost", run_id)
                    h.lease.mark_lost()


_insisting: set[asyncio.Task[None]] = set()


def _cancel_until_done(task: asyncio.Task[object] | None) -> None:
    """Cancels `task` and keeps cancelling until it has ended: a single cancel can be swallowed
    (Python 3.11's wait_for returns a result that arrived as the cancel landed, as redis-py's
    reads do), and an agent that lost its lease must not go on running tools."""
    if task is None or task.done():
        return

    async def insist() -> None:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.05)

    waiter = asyncio.get_running_loop().create_task(insist())
    _insisting.add(waiter)
    waiter.add_done_callback(_insisting.discard)


class _TracedRun(FanOut):
    """Langfuse and OpenTelemetry observers as one; `end` closes the Langfuse run."""

    def __init__(self, observers: list, langfuse: Any) -> None:
        super().__init__(observers)
        self._langfuse = langfuse

    def end(self, **kwargs: Any) -> None:
        self._langfuse.end(**kwargs)


class _OverridingSink:
    """The run's event sink, except that a deadline that stopped the run turns the "cancelled"
    ending into the deadline's "timeout"; every event is shown to the run's metrics observer."""

    def __init__(self, sink: RunEventSink, held: _Held, observer: metrics.RunObserver | None = None) -> None:
        self._sink = sink
        self._held = held
        self._observer = observer

    async def emit(self, event) -> None:
        if isinstance(event, RunFinished) and self._held.end_override is not None:
            event = self._held.end_override
        if self._observer is not None:
            self._observer.observe(event)
        await self._sink.emit(event)


def agent_factory(settings: RunnerSettings) -> AgentFactory:
    """Builds the agent for a run from settings (model, prompt, tools, provider base URL)."""

    def build(run: Run) -> Agent:
        kwargs = {}
        if settings.llm_api_base:
            kwargs["api_base"] = settings.llm_api_base
            kwargs["api_key"] = settings.llm_api_key or "agentry-fake-llm"
        return Agent(
            model=run.model,
            system_prompt=settings.system_prompt,
            tools=default_tools(),
            max_steps=settings.max_steps,
            tool_calling=settings.tool_calling,
            tool_execution=ToolExecution(when=settings.tool_execution, parallel=settings.parallel_tools),
            fallback_models=settings.fallback_models,
            context_fallback_models=settings.context_fallback_models,
            retry=RetryPolicy(
                attempts=settings.model_max_attempts,
                run_budget=settings.model_retry_budget,
                max_retry_after=settings.model_max_retry_after_seconds,
                initial_wait=settings.model_retry_initial_wait_seconds,
            ),
            summary_model=settings.summary_model or None,
            settings=ModelSettings(reasoning_effort=run.reasoning_effort or None),
            approval_tools=settings.approval_tools,
            pause_on_ask=settings.pause_on_ask,
            **kwargs,
        )

    return build


def policy_from(settings: RunnerSettings) -> WorkerPolicy:
    return WorkerPolicy(
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        max_run_seconds=settings.max_run_seconds,
        max_idle_seconds=settings.max_idle_seconds,
        event_write_delay=settings.event_write_delay_ms / 1000,
        delta_coalesce=settings.delta_coalesce_ms / 1000,
    )


KILL_PROCESSES_SECONDS = 10.0


async def _kill_run_processes(sandbox, run_id: str, *, find: bool) -> None:
    """Kills the background processes the run started in its sandbox (when the sandbox offers it);
    bounded, so a sandbox service that is away never holds up the end of a run."""
    kill = getattr(sandbox, "kill_run_processes", None)
    if kill is None:
        return
    try:
        killed = await asyncio.wait_for(kill(run_id, find=find), KILL_PROCESSES_SECONDS)
    except Exception:  # the sandbox service is away: its own idle stop ends them later
        logger.warning("could not kill the run's sandbox processes", exc_info=True)
        return
    if killed:
        logger.info("killed %d background process(es) the run left running", killed)
