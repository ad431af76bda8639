"""The Stripe provider against the fake Stripe server (agentry.fakestripe) through the real stripe
library: the catalog's Products and Prices found or created by lookup_key, idempotently; price ids
named in the plans file; Stripe's failures as billing's errors; one event delivered many times at
once applied once (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from agentry.billing.adapters.sql import SqlBillingStore
from agentry.billing.adapters.stripe import PaymentsProviderUnavailable, PaymentsRequestRefused, StripePaymentsProvider
from agentry.billing.config import BillingSettings
from agentry.billing.errors import InvalidBillingRequest, InvalidSignature, UnknownPlan
from agentry.billing.main import build_service
from agentry.fakestripe import FakeStripeServer, sign

KEY = "sk_test_provider"
WHSEC = "whsec_provider_secret"
USD = 1_000_000


@pytest.fixture
async def fake() -> AsyncIterator[FakeStripeServer]:
    async with FakeStripeServer(api_key=KEY) as server:
        yield server


def _settings(base: str, plans_file: Path | None = None, key: str = KEY) -> BillingSettings:
    return BillingSettings(
        provider="stripe",
        STRIPE_SECRET_KEY=key,
        STRIPE_WEBHOOK_SECRET=WHSEC,
        stripe_api_base=base,
        plans_file=str(plans_file or ""),
        initial_credit_micros=0,
    )


@contextlib.asynccontextmanager
async def _provider(engine: AsyncEngine, settings: BillingSettings) -> AsyncIterator[StripePaymentsProvider]:
    provider = StripePaymentsProvider(settings, build_service(settings, SqlBillingStore(engine)), max_network_retries=0)
    try:
        yield provider
    finally:
        await provider.close()


def _prices(fake: FakeStripeServer) -> list[dict]:
    return [o for o in fake.fake.objects.values() if o["object"] == "price"]


def _plans_file(tmp_path: Path, pro_usd: str = "20", extra: str = "") -> Path:
    path = tmp_path / f"plans-{pro_usd}.toml"
    path.write_text(f"""
[[plans]]
id = "free"
name = "Free"

[[plans]]
id = "pro"
name = "Pro"
price_usd = {pro_usd}
monthly_credits_usd = 20
{extra}

[[credit_packs]]
id = "credits_10"
name = "10 USD"
price_usd = 10
credits_usd = 10
""")
    return path


async def test_replicas_starting_together_create_each_price_once(fake, sqlite_engine):
    settings = _settings(fake.base_url)
    async with _provider(sqlite_engine, settings) as a, _provider(sqlite_engine, settings) as b:
        await asyncio.gather(a.start(), b.start())
        prices = _prices(fake)
        assert sorted(p["lookup_key"] for p in prices) == ["agentry_pack_credits_10", "agentry_plan_pro"]
        assert (
            a._service.catalog.find_plan("pro").stripe_price_id == b._service.catalog.find_plan("pro").stripe_price_id
        )
        assert sum(o["object"] == "product" for o in fake.fake.objects.values()) == 2
    async with _provider(sqlite_engine, settings) as c:  # a restart finds them by lookup_key
        await c.start()
        assert len(_prices(fake)) == 2
        pro = fake.fake.objects[c._service.catalog.find_plan("pro").stripe_price_id]
        assert (pro["unit_amount"], pro["recurring"]["interval"], pro["metadata"]) == (
            2000,
            "month",
            {"agentry_plan_id": "pro"},
        )


async def test_a_changed_price_gets_a_new_price_and_the_lookup_key_moves(fake, sqlite_engine, tmp_path):
    async with _provider(sqlite_engine, _settings(fake.base_url, _plans_file(tmp_path))) as old:
        await old.start()
        old_price = old._service.catalog.find_plan("pro").stripe_price_id
    async with _provider(sqlite_engine, _settings(fake.base_url, _plans_file(tmp_path, "25.50"))) as new:
        await new.start()
        new_price = new._service.catalog.find_plan("pro").stripe_price_id
        assert new_price != old_price and fake.fake.objects[new_price]["unit_amount"] == 2550
        assert fake.fake.objects[new_price]["lookup_key"] == "agentry_plan_pro"
        assert fake.fake.objects[old_price]["lookup_key"] is None
        # Subscribers still paying the old price stay on the plan.
        assert new._plan_of({"items": {"data": [{"price": fake.fake.objects[old_price]}]}}).id == "pro"


async def test_a_price_id_named_in_the_file_is_used_and_a_wrong_one_stops_the_start(fake, sqlite_engine, tmp_path):
    async with _provider(sqlite_engine, _settings(fake.base_url)) as first:
        await first.start()
        existing = first._service.catalog.find_plan("pro").stripe_price_id
    count = len(_prices(fake))
    named = _settings(fake.base_url, _plans_file(tmp_path, extra=f'stripe_price_id = "{existing}"'))
    async with _provider(sqlite_engine, named) as provider:
        await provider.start()
        assert provider._service.catalog.find_plan("pro").stripe_price_id == existing
        assert len(_prices(fake)) == count
    wrong = _settings(fake.base_url, _plans_file(tmp_path, extra='stripe_price_id = "price_missing"'))
    async with _provider(sqlite_engine, wrong) as provider:
        with pytest.raises(PaymentsRequestRefused):
            await provider.start()


async def test_stripe_failures_become_billing_errors_without_secrets(fake, sqlite_engine):
    async with _provider(sqlite_engine, _settings(fake.base_url, key="sk_test_revoked")) as provider:
        with pytest.raises(PaymentsProviderUnavailable) as refused:
            await provider.start()
        assert "sk_test" not in str(refused.value) and refused.value.code == "payments_provider_unavailable"
    async with _provider(sqlite_engine, _settings(fake.base_url)) as provider:
        await provider.start()
        await fake.stop()  # Stripe goes away
        with pytest.raises(PaymentsProviderUnavailable):
            await provider.checkout("acct-down", plan_id="pro", credit_pack_id=None, success_url=None, cancel_url=None)


async def test_checkout_arguments_are_checked_before_stripe_is_called(fake, sqlite_engine):
    async with _provider(sqlite_engine, _settings(fake.base_url)) as provider:
        await provider.start()
        before = len(fake.fake.objects)
        for kwargs, error in [
            ({"plan_id": None, "credit_pack_id": None}, InvalidBillingRequest),
            ({"plan_id": "pro", "credit_pack_id": "credits_10"}, InvalidBillingRequest),
            ({"plan_id": "gold", "credit_pack_id": None}, UnknownPlan),
            ({"plan_id": "free", "credit_pack_id": None}, InvalidBillingRequest),
            ({"plan_id": None, "credit_pack_id": "nope"}, UnknownPlan),
        ]:
            with pytest.raises(error):
                await provider.checkout("acct-args", success_url=None, cancel_url=None, **kwargs)
        assert len(fake.fake.objects) == before  # not even a customer was created
        with pytest.raises(InvalidSignature):
            await provider.handle_webhook(b"not json", sign(b"not json", WHSEC))


async def test_one_event_delivered_many_times_at_once_is_applied_once(fake, engine):
    async with _provider(engine, _settings(fake.base_url)) as provider:
        await provider.start()
        session = await provider.checkout(
            "acct-race",
            plan_id=None,
            credit_pack_id="credits_10",
            success_url="https://app.example/ok",
            cancel_url=None,
        )
        [completed] = await fake.pay(session.session_id, deliver=False)
        body = json.dumps(completed.event).encode()
        outcomes = await asyncio.gather(*(provider.handle_webhook(body, sign(body, WHSEC)) for _ in range(5)))
        assert sorted(o.applied for o in outcomes) == [False] * 4 + [True]
        assert await provider._service.balance("acct-race") == 10 * USD
        entries = await provider._service.store.entries("acct-race")
        assert [(e.kind, e.amount_micros) for e in entries if e.amount_micros] == [("top_up", 10 * USD)]


async def test_a_plan_change_in_the_portal_follows_the_subscription(fake, sqlite_engine, tmp_path):
    team = '\n[[plans]]\nid = "team"\nname = "Team"\nprice_usd = 50\nmonthly_credits_usd = 60\n'
    async with _provider(sqlite_engine, _settings(fake.base_url, _plans_file(tmp_path, extra=team))) as provider:
        await provider.start()

        async def deliver(deliveries) -> list[bool]:
            outcomes = []
            for d in deliveries:
                body = json.dumps(d.event).encode()
                outcomes.append((await provider.handle_webhook(body, sign(body, WHSEC))).applied)
            return outcomes

        session = await provider.checkout(
            "acct-team", plan_id="pro", credit_pack_id=None, success_url=None, cancel_url=None
        )
        await deliver(await fake.pay(session.session_id, deliver=False))
        plan, sub, balance = await provider._service.subscription("acct-team")
        assert (plan.id, sub.status, balance) == ("pro", "active", 20 * USD)

        team_price = provider._service.catalog.find_plan("team").stripe_price_id
        sub_id = fake.fake.objects[session.session_id]["subscription"]
        changed = await fake.change_price(sub_id, team_price, deliver=False)
        assert [d.type for d in changed] == [
            "customer.subscription.updated",
            "invoice.paid",
            "invoice.payment_succeeded",
        ]
        await deliver(changed)
        plan, sub, balance = await provider._service.subscription("acct-team")
        assert (plan.id, sub.stripe_subscription_id) == ("team", sub_id)
        assert balance == 20 * USD  # the proration invoice grants nothing; the next period does
        await deliver(await fake.renew(sub_id, deliver=False))
        assert (await provider._service.subscription("acct-team"))[2] == 20 * USD + 60 * USD


def test_the_operators_guide_names_every_event_to_subscribe_to():
    from agentry.billing.adapters.stripe import HANDLED_EVENTS

    guide = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    section = guide[guide.index("## Stripe payments") :]
    assert all(f"`{event}`" in section for event in HANDLED_EVENTS)
