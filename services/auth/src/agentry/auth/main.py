"""The auth service's composition root: reads settings, opens resources, picks adapters, serves."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from agentry.api.auth.v1 import auth_pb2, auth_pb2_grpc
from agentry.servicekit import RunningServer, run_service, start_grpc_server
from agentry.servicekit.db import open_database

from .accounts import AccountService
from .adapters.sql import SqlAccountRepository, SqlApiKeyRepository, SqlSessionRepository, SqlUserRepository
from .apikeys import ApiKeyService
from .config import AuthSettings
from .grpc_api import AuthServicer
from .passwords import Argon2Hasher
from .ports import Clock, IdentityProvider, PasswordHasher
from .service import LocalIdentityProvider
from .tokens import TokenService, load_retired_keys, load_signing_key


async def start(
    settings: AuthSettings,
    stack: contextlib.AsyncExitStack,
    *,
    clock: Clock = time.time,
    hasher: PasswordHasher | None = None,
) -> RunningServer:
    """Starts the auth gRPC server; `clock` and `hasher` exist so tests can control time and cost."""
    checks: dict = {}  # readiness: the dependencies _build_provider opened
    provider, api_keys, accounts = await _build_provider(
        settings, stack, clock=clock, hasher=hasher or Argon2Hasher(), checks=checks
    )
    return await start_grpc_server(
        name="auth",
        register=lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthServicer(provider, api_keys, accounts), server
        ),
        service_names=[auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name],
        host=settings.host,
        port=settings.port,
        internal_token=settings.internal_token.get_secret_value(),
        stack=stack,
        grace=settings.grace_seconds,
        tls=settings.tls(),
        readiness_checks=checks,
    )


async def _build_provider(
    settings: AuthSettings,
    stack: contextlib.AsyncExitStack,
    *,
    clock: Clock,
    hasher: PasswordHasher,
    checks: dict | None = None,
) -> tuple[IdentityProvider, ApiKeyService, AccountService]:
    if settings.provider not in ("local", "supabase"):
        raise ValueError(f"unknown identity provider {settings.provider!r}")
    # Loaded before the database opens, so a bad key fails fast without touching anything.
    key = load_signing_key(
        settings.signing_key.get_secret_value() if settings.signing_key else None,
        settings.key_path,
        allow_generate=settings.dev_mode,
    )
    retired = load_retired_keys(
        settings.retired_signing_keys.get_secret_value() if settings.retired_signing_keys else None
    )
    tokens = TokenService(
        key,
        issuer=settings.issuer,
        audience=settings.audience,
        ttl_seconds=settings.access_token_ttl_seconds,
        clock=clock,
        retired_keys=retired,
        stream_ttl_seconds=settings.stream_token_ttl_seconds,
    )
    engine = await open_database(
        settings.database_url,
        migrations_dir=Path(__file__).parent / "migrations",
        version_table="alembic_version_auth",
        stack=stack,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_mode=settings.database_pool_mode,
    )
    if checks is not None:
        from agentry.servicekit.health import database_check

        checks["database"] = database_check(engine)
    users = SqlUserRepository(engine)
    provider: IdentityProvider
    if settings.provider == "supabase":
        from .adapters.supabase import SupabaseIdentityProvider  # the SDK only loads when chosen

        def secret(value) -> str | None:
            return value.get_secret_value() if value else None

        supabase = SupabaseIdentityProvider(
            url=settings.supabase_url or "",
            anon_key=secret(settings.supabase_anon_key) or "",
            service_role_key=secret(settings.supabase_service_role_key) or "",
            jwt_secret=secret(settings.supabase_jwt_secret),
            users=users,
            stream_tokens=tokens,
            clock=clock,
        )
        stack.push_async_callback(supabase.close)
        provider = supabase
    else:
        provider = LocalIdentityProvider(
            users,
            hasher,
            tokens,
            SqlSessionRepository(engine),
            refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
            clock=clock,
        )
    return (
        provider,
        ApiKeyService(SqlApiKeyRepository(engine), users, clock=clock),
        AccountService(SqlAccountRepository(engine), clock=clock),
    )


def main() -> None:
    from agentry.servicekit.entrypoint import Migrations

    run_service(
        start, AuthSettings, migrations=Migrations(Path(__file__).parent / "migrations", "alembic_version_auth")
    )
