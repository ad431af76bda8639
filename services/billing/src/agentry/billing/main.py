"""Billing's composition root: the one place that reads settings and picks adapters."""

from __future__ import annotations

import contextlib
from pathlib import Path

from agentry.api.billing.v1 import billing_pb2, billing_pb2_grpc
from agentry.servicekit.db import open_database
from agentry.servicekit.health import database_check
from agentry.servicekit.server import RunningServer, run_service, start_grpc_server

from .adapters.local import LocalPaymentsProvider
from .adapters.sql import SqlBillingStore
from .config import BillingSettings
from .grpc_api import BillingServicer
from .plans import load_catalog
from .ports import PaymentsProvider
from .service import BillingService, Pricing


def build_service(settings: BillingSettings, store: SqlBillingStore) -> BillingService:
    """The BillingService for `settings`: catalog from the plans file, pricing, cache TTL."""
    pricing = Pricing(
        markup_percent=settings.markup_percent,
        model_prices={m: (p.input_per_million_usd, p.output_per_million_usd) for m, p in settings.model_prices.items()},
        unknown_price=(
            None
            if settings.unknown_model_policy == "refuse"
            else (
                settings.unknown_model_price.input_per_million_usd,
                settings.unknown_model_price.output_per_million_usd,
            )
        ),
        sandbox_usd_per_hour=settings.sandbox_usd_per_hour,
    )
    return BillingService(
        store,
        load_catalog(settings.plans_file),
        opening_grant_micros=settings.initial_credit_micros,
        blocked_models=frozenset(settings.blocked_models),
        pricing=pricing,
        cache_ttl=settings.cache_ttl_seconds,
    )


def _payments(settings: BillingSettings, service: BillingService) -> PaymentsProvider:
    # `provider` is a Literal, so settings have already refused anything not handled here.
    if settings.provider == "stripe":
        # Built by helper "stripe" (adapters/stripe.py): StripePaymentsProvider(settings, service).
        from .adapters.stripe import StripePaymentsProvider  # type: ignore[import-not-found]

        return StripePaymentsProvider(settings, service)
    return LocalPaymentsProvider()


async def start(settings: BillingSettings, stack: contextlib.AsyncExitStack) -> RunningServer:
    """Opens the database (migrated to head), builds the service and starts serving gRPC."""
    engine = await open_database(
        settings.database_url,
        migrations_dir=Path(__file__).parent / "migrations",
        version_table="alembic_version_billing",
        stack=stack,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_mode=settings.database_pool_mode,
    )
    service = build_service(settings, SqlBillingStore(engine))
    payments = _payments(settings, service)
    await payments.start()
    stack.push_async_callback(payments.close)
    return await start_grpc_server(
        name="billing",
        register=lambda server: billing_pb2_grpc.add_BillingServiceServicer_to_server(
            BillingServicer(service, payments), server
        ),
        service_names=[billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name],
        host=settings.host,
        port=settings.port,
        internal_token=settings.internal_token.get_secret_value(),
        readiness_checks={"database": database_check(engine)},
        stack=stack,
        grace=settings.grace_seconds,
        tls=settings.tls(),
    )


def main() -> None:
    from agentry.servicekit.entrypoint import Migrations

    run_service(
        start, BillingSettings, migrations=Migrations(Path(__file__).parent / "migrations", "alembic_version_billing")
    )
