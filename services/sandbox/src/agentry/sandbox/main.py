"""Composition root: reads settings, opens the database, picks the provider, reaps idle sandboxes, serves gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agentry.servicekit.db import open_database
from agentry.servicekit.health import database_check
from agentry.servicekit.server import RunningServer, run_service, start_grpc_server

from .adapters.sql import SqlSandboxRepository
from .config import SandboxSettings
from .domain import Lifecycle
from .grpc_api import SERVICE_NAME, register
from .migrations import MIGRATIONS_DIR, VERSION_TABLE
from .ports import SandboxProvider
from .service import SandboxService

logger = logging.getLogger(__name__)


def build_provider(settings: SandboxSettings) -> SandboxProvider:
    if settings.provider == "daytona":
        from .adapters.daytona import DaytonaSandboxProvider

        return DaytonaSandboxProvider(
            api_key=settings.daytona_api_key.get_secret_value(),
            api_url=settings.daytona_api_url,
            target=settings.daytona_target,
            snapshot=settings.daytona_snapshot,
            auto_stop_minutes=settings.auto_stop_minutes,
            auto_archive_minutes=settings.auto_archive_minutes,
            max_output_bytes=settings.max_output_bytes,
            max_file_bytes=settings.max_file_bytes,
            max_upload_bytes=settings.max_upload_bytes,
        )
    from .adapters.isolation import choose_isolation
    from .adapters.local import LocalLimits, LocalSandboxProvider

    isolation, bwrap = choose_isolation(settings.isolation)
    if isolation == "none":
        if settings.allow_unisolated:
            logger.warning(
                "SANDBOX COMMANDS RUN UNISOLATED ON THIS HOST: the agent can read and change anything "
                "this process can (AGENTRY_SANDBOX_ALLOW_UNISOLATED is set)"
            )
        else:
            logger.warning("bubblewrap is unavailable: sandbox commands will be refused (files still work)")
    return LocalSandboxProvider(
        settings.root_dir,
        isolation=isolation,
        bwrap=bwrap or "bwrap",
        allow_unisolated=settings.allow_unisolated,
        max_output_bytes=settings.max_output_bytes,
        max_file_bytes=settings.max_file_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        limits=LocalLimits(
            cpu_seconds=settings.cpu_seconds,
            memory_mb=settings.memory_mb,
            max_memory_mb=settings.max_memory_mb,
            processes=settings.max_processes,
            disk_mb=settings.disk_mb,
            max_disk_mb=settings.max_disk_mb,
            dedicated_users=settings.dedicated_users,
        ),
    )


async def _reap_forever(service: SandboxService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            moved = await service.reap_idle()
        except Exception:  # the next round tries again; a reaper that died would never stop anything
            logger.exception("reaping idle sandboxes failed")
            continue
        for sandbox_id, state in moved:
            logger.info("idle sandbox %s is now %s", sandbox_id, state)


async def start(settings: SandboxSettings, stack: contextlib.AsyncExitStack) -> RunningServer:
    engine = await open_database(
        settings.database_url,
        migrations_dir=MIGRATIONS_DIR,
        version_table=VERSION_TABLE,
        stack=stack,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_mode=settings.database_pool_mode,
    )
    provider = build_provider(settings)
    stack.push_async_callback(provider.close)
    service = SandboxService(
        SqlSandboxRepository(engine),
        provider,
        default_timeout=settings.default_exec_timeout_seconds,
        max_timeout=settings.max_exec_timeout_seconds,
        lifecycle=Lifecycle(
            auto_stop_seconds=settings.auto_stop_minutes * 60, auto_archive_seconds=settings.auto_archive_minutes * 60
        ),
    )
    reaper = asyncio.create_task(_reap_forever(service, settings.reap_interval_seconds), name="sandbox-reaper")

    async def _stop_reaper() -> None:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper

    stack.push_async_callback(_stop_reaper)
    return await start_grpc_server(
        name="sandbox",
        register=register(service),
        service_names=[SERVICE_NAME],
        readiness_checks={"database": database_check(engine)},
        host=settings.host,
        port=settings.port,
        internal_token=settings.internal_token.get_secret_value(),
        stack=stack,
        grace=settings.grace_seconds,
        tls=settings.tls(),
    )


def main() -> None:
    from agentry.servicekit.entrypoint import Migrations

    run_service(start, SandboxSettings, migrations=Migrations(MIGRATIONS_DIR, VERSION_TABLE), spawns_processes=True)
