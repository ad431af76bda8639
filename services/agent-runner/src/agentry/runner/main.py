"""Composition root of the runner: reads settings, picks adapters, starts the api and/or worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import warnings
from pathlib import Path

from agentpress.litellm_import import after_import
from agentpress.models import warm_up as warm_up_model_library
from agentry.api.runner.v1 import runner_pb2, runner_pb2_grpc
from agentry.servicekit import RunningServer, open_channel, run_service, start_grpc_server, tracing
from agentry.servicekit.context import adopt_library_loggers
from agentry.servicekit.db import open_database
from agentry.servicekit.eventstream import EventStream, MemoryEventStream, RedisEventStream
from agentry.servicekit.health import Check, database_check, grpc_check, redis_check

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


after_import(adopt_library_loggers)  # LiteLLM's lines in our format, whenever it is imported


def configured_models(settings: RunnerSettings) -> list[str]:
    """The models the settings name (a run may still ask for another one)."""
    names = [
        settings.force_model or settings.default_model,
        *settings.fallback_models,
        *settings.context_fallback_models,
        settings.summary_model,
    ]
    return [name for name in names if name]


def _warm_up_litellm(settings: RunnerSettings) -> None:
    """Imports LiteLLM before the worker takes work, unless every configured model takes
    agentpress's direct lane (then it costs ~200 MB of RSS for nothing; a run that asks for
    another model imports it then, off the event loop)."""
    try:
        # agentpress's model adapter imports its library (LiteLLM)
        imported = warm_up_model_library(models=configured_models(settings))
    except Exception:
        logger.warning("LiteLLM warm-up import failed", exc_info=True)
        imported = True
    if imported:
        adopt_library_loggers()  # LiteLLM's lines in our format (JSON in production)


def _warm_up_for_fork(settings: RunnerSettings) -> None:
    """Everything a worker's first run would import lazily, done once in the prefork parent:
    LiteLLM itself and what its first streaming call pulls in (a mock call, no network), unless
    every configured model takes the direct lane. Leaves no thread or event loop behind, so
    forking afterwards is safe."""
    try:
        # imported first, so its lines go through ours from the start
        if not warm_up_model_library(models=configured_models(settings)):
            return
        adopt_library_loggers()
        warm_up_model_library(call=True)
    except Exception:
        logger.warning("LiteLLM warm-up call failed", exc_info=True)
    adopt_library_loggers()


def build_event_stream(settings: RunnerSettings) -> EventStream:
    if settings.events == "redis":
        return RedisEventStream(
            settings.redis_url,
            key_prefix=settings.redis_prefix,
            maxlen=settings.event_maxlen,
            ttl_seconds=settings.event_ttl_seconds,
        )
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


def _readiness_checks(settings: RunnerSettings, engine, queue: RunQueue) -> dict[str, Check]:
    """What this process needs to do its work: the database, Redis and RabbitMQ when used (the
    worker adds the services it calls)."""
    checks: dict[str, Check] = {"database": database_check(engine)}
    if settings.events == "redis":
        checks["redis"] = redis_check(settings.redis_url)
    check_queue = getattr(queue, "check", None)
    if check_queue is not None:
        checks["rabbitmq"] = check_queue
    return checks


async def start(
    settings: RunnerSettings,
    stack: contextlib.AsyncExitStack,
    *,
    events: EventStream | None = None,
    agents: AgentFactory | None = None,
) -> RunningServer:
    """Starts the roles `settings.role` asks for. `events` lets `agentry dev` share one
    in-process stream with the gateway; `agents` lets tests choose the agent."""
    tracing.configure_tracing(f"runner-{settings.role}")  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    engine = await open_database(
        settings.database_url,
        migrations_dir=Path(__file__).parent / "migrations",
        version_table="alembic_version_runner",
        stack=stack,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_mode=settings.database_pool_mode,
    )
    repo = SqlRunnerRepository(engine)
    if events is None:
        events = build_event_stream(settings)
        stack.push_async_callback(events.close)
    stops = _build_stops(settings)
    stack.push_async_callback(stops.close)
    queue = _build_queue(settings)
    stack.push_async_callback(queue.close)
    checks = _readiness_checks(settings, engine, queue)
    token = settings.internal_token.get_secret_value()

    if settings.role in ("worker", "all"):
        from .adapters.billing_grpc import GrpcUsageSink
        from .adapters.sandbox_grpc import GrpcSandbox, drain_charges

        # LiteLLM's typed dicts make pydantic warn at import; nothing a user can act on.
        warnings.filterwarnings("ignore", message=".*ReadOnly.*", category=UserWarning)
        sandbox_channel = open_channel(settings.sandbox_target, token, tls=settings.tls())
        billing_channel = open_channel(settings.billing_target, token, tls=settings.tls())
        stack.push_async_callback(sandbox_channel.close)
        stack.push_async_callback(billing_channel.close)
        # At shutdown, after the runs were handed back: the sandbox time of their cut-short
        # commands is charged before the billing channel closes (bounded).
        stack.push_async_callback(drain_charges)
        checks["sandbox"], checks["billing"] = grpc_check(sandbox_channel), grpc_check(billing_channel)

        def sandboxes(account_id, project_id, on_start=None, on_ready=None):
            return GrpcSandbox(
                sandbox_channel, account_id=account_id, project_id=project_id, on_start=on_start, on_ready=on_ready
            )

        def usage(account_id, run_id, attempt=1):
            return GrpcUsageSink(billing_channel, account_id=account_id, run_id=run_id, attempt=attempt)

        admission = Admission(
            memory_budget_mb=settings.memory_budget_mb,
            max_loop_lag_ms=settings.max_loop_lag_ms,
            max_per_second=settings.max_admissions_per_second,
        )
        admission.start()
        stack.push_async_callback(admission.close)
        tracer = None
        if settings.langfuse_public_key and settings.langfuse_secret_key:  # else nothing imported
            from .adapters.langfuse_tracing import LangfuseTracer

            tracer = LangfuseTracer.from_settings(settings)
            if tracer is not None:
                stack.push_async_callback(tracer.close)
                logger.info("runs are traced to Langfuse at %s", settings.langfuse_base_url)
        worker = RunWorker(
            repo=repo,
            events=events,
            stops=stops,
            sandboxes=sandboxes,
            usage=usage,
            agent_factory=agents or agent_factory(settings),
            policy=policy_from(settings),
            admission=admission,
            tracer=tracer,
        )
        worker.start()
        stack.push_async_callback(worker.close)
        if settings.role == "worker":
            # A worker takes jobs only once LiteLLM is imported (seconds of CPU) if a configured
            # model needs it (prefork children have it already). Otherwise it is never imported
            # unless a run asks for another model, and then off the event loop (agentpress).
            await asyncio.to_thread(_warm_up_litellm, settings)
        else:
            # Embedded: the stack starts at once and imports LiteLLM off the loop; a job that
            # arrives meanwhile waits for the import before it claims its run (no lease is held
            # while the import would block the loop). A daemon thread, so a shutdown never waits.
            loop = asyncio.get_running_loop()
            ready = asyncio.Event()
            worker.wait_before_claiming(ready)

            def warm_up() -> None:
                try:
                    _warm_up_litellm(settings)
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
                logger.info(
                    "handing back %d runs that did not finish within %.0fs",
                    len(worker.held_runs),
                    settings.grace_seconds,
                )
                await worker.hand_back_all()
            await stopping

        stack.push_async_callback(_stop_consumer)

    from agentry.servicekit.db import resolve_pool_mode

    sweeper = Sweeper(
        repo,
        queue,
        engine,
        interval=settings.sweep_interval_seconds,
        redispatch_after=settings.redispatch_after_seconds,
        lock_per_pass=resolve_pool_mode(settings.database_url, settings.database_pool_mode)[1] == "transaction",
    )
    billing_gate = None
    if settings.role in ("api", "all") and settings.check_billing:
        from .adapters.billing_grpc import GrpcBillingGate

        gate_channel = open_channel(settings.billing_target, token, tls=settings.tls())
        stack.push_async_callback(gate_channel.close)
        billing_gate = GrpcBillingGate(gate_channel)
    service = RunnerService(
        repo,
        queue,
        events,
        stops,
        default_model=settings.default_model,
        force_model=settings.force_model,
        on_undispatched=sweeper.wake,
        billing=billing_gate,
        max_active_runs_per_account=settings.max_active_runs_per_account,
        active_runs_retry_after_seconds=settings.active_runs_retry_after_seconds,
    )
    # Runs that waited for the user too long end `cancelled` (reason expired), once per pass.
    sweeper.housekeeping.append(lambda: service.expire_paused(settings.pause_ttl_seconds))
    sweeper.start()
    stack.push_async_callback(sweeper.close)

    if settings.role in ("api", "all"):  # queue depth and the oldest waiting run, for /metrics
        from .metrics import sample_queue

        sampler = asyncio.create_task(sample_queue(repo, interval=settings.queue_sample_seconds), name="queue-metrics")

        async def _stop_sampler() -> None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)

        stack.push_async_callback(_stop_sampler)

    service_names: list[str] = []
    register = lambda server: None  # noqa: E731 - a worker-only process serves health alone
    if settings.role in ("api", "all"):
        service_names = [SERVICE_NAME]
        register = lambda server: runner_pb2_grpc.add_RunnerServiceServicer_to_server(  # noqa: E731
            RunnerServicer(service), server
        )
    return await start_grpc_server(
        name=f"runner-{settings.role}",
        register=register,
        service_names=service_names,
        host=settings.host,
        port=settings.port,
        internal_token=token,
        stack=stack,
        grace=settings.grace_seconds,
        tls=settings.tls(),
        readiness_checks=checks,
    )


MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def main() -> None:
    import sys

    from agentry.servicekit.entrypoint import Migrations, service_command

    code = service_command(
        sys.argv[1:], RunnerSettings, migrations=Migrations(MIGRATIONS_DIR, "alembic_version_runner")
    )
    if code is not None:
        raise SystemExit(code)
    settings = RunnerSettings()
    if settings.role == "worker" and settings.processes > 1 and "AGENTRY_RUNNER_PROCESS_SLOT" not in os.environ:
        import sys

        from agentry.servicekit.context import configure_logging

        from .prefork import serve_prefork

        configure_logging(settings.log_level, json=settings.log_json())
        if settings.metrics_port is not None:
            # One /metrics for the pod, summing every child (prometheus-client's multiprocess
            # mode), served by slot 0 on the metrics port; set before any metric exists.
            import tempfile

            from agentry.servicekit.metrics import MULTIPROC_ENV, enable_multiprocess

            enable_multiprocess(os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="agentry-metrics-"))
        warnings.filterwarnings("ignore", message=".*ReadOnly.*", category=UserWarning)
        sys.exit(
            serve_prefork(
                settings.processes,
                lambda: run_service(start, RunnerSettings),
                warm_up=lambda: _warm_up_for_fork(settings),
            )
        )
    run_service(start, RunnerSettings)
