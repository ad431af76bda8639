"""The worker role: takes run jobs off the queue and drives agentpress until each run ends."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc
from agentpress import Agent, ModelSettings, RunContext, RunFinished, ToolExecution, default_tools

from agentry.servicekit.context import run_id_var
from agentry.servicekit.eventstream import EventStream

from .adapters.billing_grpc import GrpcUsageSink
from .adapters.sandbox_grpc import GrpcSandbox
from .config import RunnerSettings
from .domain import FINISH_TO_STATUS, Run, RunStatus, StoredEvent
from .ports import RunnerRepository
from .queue import RunJob
from .sinks import RunEventSink, ThreadMessageStore, encode_event
from .stopsignal import StopSignal

logger = logging.getLogger(__name__)

AgentFactory = Callable[[Run], Agent]


class RunWorker:
    def __init__(self, *, repo: RunnerRepository, events: EventStream, stops: StopSignal,
                 sandbox_channel: grpc.aio.Channel, billing_channel: grpc.aio.Channel,
                 agent_factory: AgentFactory) -> None:
        self._repo = repo
        self._events = events
        self._stops = stops
        self._sandbox_channel = sandbox_channel
        self._billing_channel = billing_channel
        self._agent_factory = agent_factory

    async def handle(self, job: RunJob) -> None:
        run_id_var.set(job.run_id)
        # One round trip from the job to a running run (this is on the time-to-first-token path).
        claimed = await self._repo.claim_run(job.run_id)
        if claimed is None:
            await self._handle_not_queued(job.run_id)
            return
        run = claimed.run
        # A run that just left queued has no events: the api writes events only for runs it
        # moves out of queued itself (finish_without_worker), and then this claim fails.
        sink = RunEventSink(run.run_id, self._repo, self._events, last_seq=0,
                            on_finish=lambda event: self._record_end(run.run_id, event))
        try:
            async with self._stops.watch(run.run_id) as cancel:
                ctx = RunContext(
                    run_id=run.run_id, thread_id=run.thread_id,
                    messages=ThreadMessageStore(self._repo, thread_id=run.thread_id, account_id=run.account_id),
                    sandbox=GrpcSandbox(self._sandbox_channel, account_id=run.account_id, project_id=claimed.project_id),
                    usage=GrpcUsageSink(self._billing_channel, account_id=run.account_id, run_id=run.run_id),
                    events=sink, cancel=cancel,
                )
                result = await self._agent_factory(run).run(ctx)
                logger.info("run finished: %s", result.reason)
        except Exception:
            logger.exception("run crashed")
            if not sink.finished:
                await sink.emit(RunFinished(reason="error", error="the worker failed while running the agent"))
        finally:
            if not sink.finished:  # cancelled from outside (worker shutdown) before agentpress ended
                await sink.emit(RunFinished(reason="cancelled", error="the worker shut down"))

    async def _record_end(self, run_id: str, event: RunFinished) -> None:
        status, default_error = FINISH_TO_STATUS.get(str(event.reason), (RunStatus.FAILED, "agent error"))
        error = event.error or default_error if status is RunStatus.FAILED else (event.error or "")
        await self._repo.transition(run_id, from_=[RunStatus.RUNNING, RunStatus.CANCELLING], to=status,
                                    error=error, finish_reason=str(event.reason))

    async def _handle_not_queued(self, run_id: str) -> None:
        run = await self._repo.get_run(run_id)
        if run is None:
            logger.warning("job for unknown run dropped")
            return
        if run.status.terminal:
            return  # cancelled while queued, or a duplicate delivery of a finished run
        # A redelivered job for a run another worker had started: that worker is gone. Resuming
        # from persisted messages is a later step; for now the run ends visibly, never silently.
        last = max(await self._repo.max_event_seq(run_id), await self._last_stream_seq(run_id))
        error = "the worker running this run was lost"
        if await self._repo.transition(run_id, from_=[RunStatus.RUNNING, RunStatus.CANCELLING],
                                       to=RunStatus.FAILED, error=error, finish_reason="error"):
            data = encode_event(last + 1, RunFinished(reason="error", error=error))
            await self._repo.append_events(run_id, [StoredEvent(last + 1, data, True)])
            await self._events.append(run_id, last + 1, data, terminal=True)

    async def _last_stream_seq(self, run_id: str) -> int:
        last = 0
        while batch := await self._events.read(run_id, last, count=1000):
            last = batch[-1].seq
        return last


def agent_factory(settings: RunnerSettings) -> AgentFactory:
    """Builds the agent for a run from settings (model, prompt, tools, provider base URL)."""

    def build(run: Run) -> Agent:
        kwargs = {}
        if settings.llm_api_base:
            kwargs["api_base"] = settings.llm_api_base
            kwargs["api_key"] = settings.llm_api_key or "agentry-fake-llm"
        return Agent(model=run.model, system_prompt=settings.system_prompt, tools=default_tools(),
                     max_steps=settings.max_steps, tool_calling=settings.tool_calling,
                     tool_execution=ToolExecution(when=settings.tool_execution, parallel=settings.parallel_tools),
                     fallback_models=settings.fallback_models,
                     summary_model=settings.summary_model or None,
                     settings=ModelSettings(reasoning_effort=run.reasoning_effort or None), **kwargs)

    return build
