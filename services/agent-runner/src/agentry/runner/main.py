"""Composition root of the runner: reads settings, picks adapters, starts the api and/or worker."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import threading
import warnings
from pathlib import Path

from agentry.api.runner.v1 import runner_pb2, runner_pb2_grpc
from agentry.servicekit import RunningServer, open_channel, run_service, start_grpc_server
from agentry.servicekit.db import open_database
from agentry.servicekit.eventstream import EventStream, MemoryEventStream, RedisEventStream

from .adapters.sql import SqlRunnerRepository
from .admission import Admission
from .config import RunnerSettings
from .grpc_api import RunnerServicer
from .queue import RunQueue
from .service import RunnerService
from .stopsignal import StopSignal
from .sweeper import Sweeper
from .worker import AgentFactory, RunWorker, agent_factory, policy_from

logger = logging.getLogger(__name__)
SERVICE_NAME = runner_pb2.DESCRIPTOR.services_by_name["RunnerService"].full_name


def _warm_up_litellm() -> None:
    try:
        importlib.import_module("litellm")
    except Exception:
        logger.warning("LiteLLM warm-up import failed", exc_info=True)


def _warm_up_for_fork() -> None:
    """Everything a worker's first run would import lazily, done once in the prefork parent:
    LiteLLM itself and what its first streaming call pulls in (a mock call, no network). Leaves
    no thread or event loop behind, so forking afterwards is safe."""
    _warm_up_litellm()
    try:
        import litellm

        async def call() -> None:
            stream = await litellm.acompletion(model="openai/warm-up", messages=[{"role": "user", "content": "hi"}],
                                               mock_response="ok", stream=True, api_key="warm-up")
            async for _ in stream:  # pyright: ignore[reportGeneralTypeIssues] - stream=True answers a CustomStreamWrapper
                pass

        asyncio.run(call())
    except Exception:
        logger.warning("LiteLLM warm-up call failed", exc_info=True)


def build_event_stream(settings: RunnerSettings) -> EventStream:
    if settings.events == "redis":
        return RedisEventStream(settings.redis_url, key_prefix=settings.redis_prefix,
                                maxlen=settings.event_maxlen, ttl_seconds=settings.event_ttl_seconds)
    return MemoryEventStream(maxlen=settings.event_maxlen, ttl_seconds=settings.event_ttl_seconds)


def _build_queue(settings: RunnerSettings) -> RunQueue:
    if settings.queue == "rabbitmq":
        from .adapters.queue_rabbitmq import RabbitRunQueue

        return RabbitRunQueue(settings.amqp_url, queue_name=settings.queue_name)
    from .adapters.queue_memory import MemoryRunQueue

    return MemoryRunQueue()


def _build_stops(settings: RunnerSettings) -> StopSignal:
    if settings.events == "redis":
        from .adapters.stop_redis import RedisStopSignal

        return RedisStopSignal(settings.redis_url, key_prefix=settings.redis_prefix)
    from .adapters.stop_memory import MemoryStopSignal

    return MemoryStopSignal()


async def start(
    settings: RunnerSettings,
    stack: contextlib.AsyncExitStack,
    *,
    events: EventStream | None = None,
    agents: AgentFactory | None = None,
) -> RunningServer:
    """Starts the roles `settings.role` asks for. `events` lets `agentry dev` share one
    in-process stream with the gateway; `agents` lets tests choose the agent."""
    engine = await open_database(settings.database_url, migrations_dir=Path(__file__).parent / "migrations",
                                 version_table="alembic_version_runner", stack=stack, pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow, pool_mode=settings.database_pool_mode)
    repo = SqlRunnerRepository(engine)
    if events is None:
        events = build_event_stream(settings)
        stack.push_async_callback(events.close)
    stops = _build_stops(settings)
    stack.push_async_callback(stops.close)
    queue = _build_queue(settings)
    stack.push_async_callback(queue.close)
    token = settings.internal_token.get_secret_value()

    if settings.role in ("worker", "all"):
        from .adapters.billing_grpc import GrpcUsageSink
        from .adapters.sandbox_grpc import GrpcSandbox

        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        # LiteLLM's typed dicts make pydantic warn at import; nothing a user can act on.
        warnings.filterwarnings("ignore", message=".*ReadOnly.*", category=UserWarning)
        sandbox_channel = open_channel(settings.sandbox_target, token, tls=settings.tls())
        billing_channel = open_channel(settings.billing_target, token, tls=settings.tls())
        stack.push_async_callback(sandbox_channel.close)
        stack.push_async_callback(billing_channel.close)

        def sandboxes(account_id, project_id, on_start=None, on_ready=None):
            return GrpcSandbox(sandbox_channel, account_id=account_id, project_id=project_id,
                               on_start=on_start, on_ready=on_ready)

        def usage(account_id, run_id, attempt=1):
            return GrpcUsageSink(billing_channel, account_id=account_id, run_id=run_id, attempt=attempt)

        admission = Admission(memory_budget_mb=settings.memory_budget_mb, max_loop_lag_ms=settings.max_loop_lag_ms,
                              max_per_second=settings.max_admissions_per_second)
        admission.start()
        stack.push_async_callback(admission.close)
        worker = RunWorker(repo=repo, events=events, stops=stops, sandboxes=sandboxes, usage=usage,
                           agent_factory=agents or agent_factory(settings), policy=policy_from(settings),
                           admission=admission)
        worker.start()
        stack.push_async_callback(worker.close)
        if settings.role == "worker":
            # A worker takes jobs only once LiteLLM is imported (seconds of CPU): a run whose first
            # model call imported it would block the event loop - and the lease heartbeat - that
            # long. (In a prefork child it is imported already.)
            await asyncio.to_thread(_warm_up_litellm)
        else:
            # Embedded: the stack starts at once and imports LiteLLM off the loop; a job that
            # arrives meanwhile waits for the import before it claims its run (no lease is held
            # while the import would block the loop). A daemon thread, so a shutdown never waits.
            loop = asyncio.get_running_loop()
            ready = asyncio.Event()
            worker.wait_before_claiming(ready)

            def warm_up() -> None:
                try:
                    _warm_up_litellm()
                finally:
                    loop.call_soon_threadsafe(ready.set)

            threading.Thread(target=warm_up, name="litellm-warm-up", daemon=True).start()
        consumer = await queue.consume(worker.handle, concurrency=settings.worker_concurrency)

        async def _stop_consumer() -> None:
            # SIGTERM (a rolling deploy): health is already NOT_SERVING. No new jobs; runs that end
            # within the grace period end; the rest are handed back (lease released, job
            # requeued) and resumed by another worker - never cancelled.
            worker.stop_accepting()
            stopping = asyncio.create_task(consumer.stop())
            done, _ = await asyncio.wait([stopping], timeout=settings.grace_seconds)
            if not done:
                logger.info("handing back %d runs that did not finish within %.0fs",
                            len(worker.held_runs), settings.grace_seconds)
                await worker.hand_back_all()
            await stopping

        stack.push_async_callback(_stop_consumer)

    from agentry.servicekit.db import resolve_pool_mode

    sweeper = Sweeper(repo, queue, engine, interval=settings.sweep_interval_seconds,
                      redispatch_after=settings.redispatch_after_seconds,
                      lock_per_pass=resolve_pool_mode(settings.database_url, settings.database_pool_mode)[1] == "transaction")
    service = RunnerService(repo, queue, events, stops, default_model=settings.default_model,
                            force_model=settings.force_model, on_undispatched=sweeper.wake,
                            max_active_runs_per_account=settings.max_active_runs_per_account,
                            active_runs_retry_after_seconds=settings.active_runs_retry_after_seconds)
    # Runs that waited for the user too long end `cancelled` (reason expired), once per pass.
    sweeper.housekeeping.append(lambda: service.expire_paused(settings.pause_ttl_seconds))
    sweeper.start()
    stack.push_async_callback(sweeper.close)

    service_names: list[str] = []
    register = lambda server: None  # noqa: E731 - a worker-only process serves health alone
    if settings.role in ("api", "all"):
        service_names = [SERVICE_NAME]
        register = lambda server: runner_pb2_grpc.add_RunnerServiceServicer_to_server(  # noqa: E731
            RunnerServicer(service), server)
    return await start_grpc_server(name=f"runner-{settings.role}", register=register, service_names=service_names,
                                   host=settings.host, port=settings.port, internal_token=token, stack=stack,
                                   grace=settings.grace_seconds, tls=settings.tls())


MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def main() -> None:
    import sys

    from agentry.servicekit.entrypoint import Migrations, service_command

    code = service_command(sys.argv[1:], RunnerSettings, migrations=Migrations(MIGRATIONS_DIR, "alembic_version_runner"))
    if code is not None:
        raise SystemExit(code)
    settings = RunnerSettings()
    if settings.role == "worker" and settings.processes > 1 and "AGENTRY_RUNNER_PROCESS_SLOT" not in os.environ:
        import sys

        from agentry.servicekit.context import configure_logging

        from .prefork import serve_prefork

        configure_logging(settings.log_level, json=not settings.dev_mode)
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        warnings.filterwarnings("ignore", message=".*ReadOnly.*", category=UserWarning)
        sys.exit(serve_prefork(settings.processes, lambda: run_service(start, RunnerSettings),
                               warm_up=_warm_up_for_fork))
    run_service(start, RunnerSettings)
