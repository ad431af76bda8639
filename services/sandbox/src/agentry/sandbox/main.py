"""Composition root: reads settings, opens the database, picks the provider, serves gRPC."""

from __future__ import annotations

import contextlib

from agentry.servicekit.db import open_database
from agentry.servicekit.server import RunningServer, run_service, start_grpc_server

from .adapters.isolation import choose_isolation
from .adapters.local import LocalSandboxProvider
from .adapters.sql import SqlSandboxRepository
from .config import SandboxSettings
from .grpc_api import SERVICE_NAME, register
from .migrations import MIGRATIONS_DIR, VERSION_TABLE
from .service import SandboxService


async def start(settings: SandboxSettings, stack: contextlib.AsyncExitStack) -> RunningServer:
    engine = await open_database(
        settings.database_url, migrations_dir=MIGRATIONS_DIR, version_table=VERSION_TABLE, stack=stack, pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow, pool_mode=settings.database_pool_mode,
    )
    isolation, bwrap = choose_isolation(settings.isolation)
    provider = LocalSandboxProvider(
        settings.root_dir,
        isolation=isolation,
        bwrap=bwrap or "bwrap",
        max_output_bytes=settings.max_output_bytes,
        max_file_bytes=settings.max_file_bytes,
    )
    stack.push_async_callback(provider.close)
    service = SandboxService(
        SqlSandboxRepository(engine),
        provider,
        default_timeout=settings.default_exec_timeout_seconds,
        max_timeout=settings.max_exec_timeout_seconds,
    )
    return await start_grpc_server(
        name="sandbox",
        register=register(service),
        service_names=[SERVICE_NAME],
        host=settings.host,
        port=settings.port,
        internal_token=settings.internal_token.get_secret_value(),
        stack=stack,
        grace=settings.grace_seconds,
    )


def main() -> None:
    from agentry.servicekit.entrypoint import Migrations

    run_service(start, SandboxSettings, migrations=Migrations(MIGRATIONS_DIR, VERSION_TABLE))
