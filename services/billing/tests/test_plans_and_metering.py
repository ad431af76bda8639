"""Plans from the file, pricing (markup, overrides, unknown models, sandbox time), grants, usage
pages, subscriptions in units of work, and the cache CheckRun answers from."""

from __future__ import annotations

from decimal import Decimal

import pydantic
import pytest

from agentry.billing import BillingService, InvalidBillingRequest, LedgerWrite, Pricing, Subscription, Usage
from agentry.billing.adapters.local import LocalPaymentsProvider
from agentry.billing.adapters.sql import SqlBillingStore
from agentry.billing.errors import PaymentsNotConfigured
from agentry.billing.plans import catalog_from_dict, load_catalog, usd_to_micros

PLANS = """
default_plan = "basic"

[[plans]]
id = "basic"
name = "Basic"
price_usd = 0
monthly_credits_usd = 1.25
models = ["openai/gpt-4o-mini", "anthropic/*"]
max_concurrent_runs = 2

[[plans]]
id = "team"
name = "Team"
price_usd = 49.99
models = ["*"]
stripe_price_id = "price_team"

[[credit_packs]]
id = "p5"
name = "5 USD"
price_usd = 5
credits_usd = 5.5
"""


def usage(
    step: int,
    *,
    model: str = "openai/gpt-4o-mini",
    cost: int = 1_000,
    run: str = "run-1",
    account: str = "acct",
    prompt: int = 1_000,
    completion: int = 100,
) -> Usage:
    return Usage(
        account_id=account,
        run_id=run,
        step=step,
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_micros=cost,
    )


@pytest.fixture
def store(engine) -> SqlBillingStore:
    return SqlBillingStore(engine)


def service_on(store, **kw) -> BillingService:
    kw.setdefault("opening_grant_micros", 1_000_000)
    return BillingService(store, kw.pop("catalog", load_catalog(None)), **kw)


def test_the_plans_file_is_read_into_micro_dollars(tmp_path):
    path = tmp_path / "plans.toml"
    path.write_text(PLANS)
    catalog = load_catalog(path)
    basic, team = catalog.plans
    assert catalog.default_plan is basic and catalog.plan("gone") is basic
    assert (basic.monthly_credits_micros, team.price_micros) == (1_250_000, 49_990_000)
    assert basic.lookup_key == "agentry_plan_basic" and team.stripe_price_id == "price_team"
    assert catalog.plan_by_price("price_team") is team
    assert catalog.find_pack("p5").credits_micros == 5_500_000
    assert basic.allows_model("anthropic/claude-3-5-sonnet") and not basic.allows_model("openai/gpt-4o")
    assert basic.decide(10, "openai/gpt-4o").reason == "model_not_allowed"
    assert basic.decide(10, "").allowed, "an empty model checks the balance only"
    assert basic.decide(10, "openai/gpt-4o-mini").max_concurrent_runs == 2


def test_the_built_in_catalog_has_a_free_default():
    catalog = load_catalog(None)
    assert catalog.default_plan_id == "free" and catalog.default_plan.price_micros == 0


A = {"id": "a", "name": "A"}


@pytest.mark.parametrize(
    "data,field",
    [
        ({"plans": []}, "plans"),
        ({"default_plan": "a", "plans": [{**A, "price_usd": -1}]}, "price_usd"),
        ({"default_plan": "a", "plans": [{**A, "colour": "red"}]}, "colour"),
        ({"default_plan": "a b", "plans": [{**A, "id": "a b"}]}, "id"),
        ({"default_plan": "x", "plans": [A]}, "default_plan"),
        ({"default_plan": "a", "plans": [A, {**A, "name": "B"}]}, "unique"),
        ({"default_plan": "a", "plans": [A], "credit_packs": [{**A, "price_usd": 0, "credits_usd": 1}]}, "price_usd"),
    ],
)
def test_a_bad_plans_file_names_the_field(data, field):
    with pytest.raises(pydantic.ValidationError, match=field):
        catalog_from_dict(data)


def test_usd_rounds_to_the_micro():
    assert usd_to_micros("0.0000015") == 2 and usd_to_micros(Decimal("19.99")) == 19_990_000


def test_pricing_markup_overrides_and_unknown_models():
    pricing = Pricing(
        markup_percent=Decimal(20),
        model_prices={"my/model": (Decimal(2), Decimal(6))},
        unknown_price=(Decimal(10), Decimal(30)),
        sandbox_usd_per_hour=Decimal("0.36"),
    )
    assert pricing.model_cost("openai/gpt-4o-mini", 1_000, 100, 1_000, cost_unknown=False) == 1_200
    # The override wins over the measured price: (2 * 1000 + 6 * 100) / 1e6 USD = 2600 µUSD, +20 %.
    assert pricing.model_cost("my/model", 1_000, 100, 999_999, cost_unknown=False) == 3_120
    assert pricing.model_cost("who/knows", 1_000, 100, 0, cost_unknown=True) == 15_600
    refuse = Pricing(unknown_price=None)
    assert refuse.model_cost("who/knows", 1_000, 100, 0, cost_unknown=True) is None
    assert pricing.sandbox_cost(10) == 1_000  # 0.36 USD/h = 100 µUSD/s


async def test_an_unknown_model_is_refused_not_free(store):
    service = service_on(store, pricing=Pricing(unknown_price=None))
    charge = await service.record_usage(usage(0, model="who/knows", cost=0), cost_unknown=True)
    assert (charge.charged, charge.may_continue) == (False, False)
    assert await service.balance("acct") == 1_000_000


async def test_sandbox_time_is_metered_by_the_second(store):
    service = service_on(store, pricing=Pricing(sandbox_usd_per_hour=Decimal("3.6")))
    charge = await service.record_usage(
        usage(7, model="", cost=0, prompt=0, completion=0), source="sandbox", sandbox_seconds=12.5
    )
    assert (charge.charged, charge.cost_micros, charge.balance_micros) == (True, 12_500, 987_500)
    entry = [e for e in await store.entries("acct") if e.kind == "usage"][0]
    assert (entry.source, entry.quantity, entry.key) == ("sandbox", 12.5, "usage:run-1:7")
    with pytest.raises(InvalidBillingRequest, match="source"):
        await service.record_usage(usage(8), source="gpu")


async def test_a_grant_is_once_per_key_and_never_negative(store):
    service = service_on(store)
    assert await service.grant("acct", 500, key="k") == (1_000_500, True)
    assert await service.grant("acct", 500, key="k") == (1_000_500, False)
    assert (await service.grant("other", 500, key="k"))[1], "keys are per account"
    for amount in (0, -5):
        with pytest.raises(InvalidBillingRequest, match="amount_micros"):
            await service.grant("acct", amount)
    assert (await service.grant("acct", -200, kind="adjustment"))[0] == 1_000_300


async def test_ledger_writes_check_their_sign_and_key():
    with pytest.raises(InvalidBillingRequest, match="top_up"):
        LedgerWrite(account_id="a", amount_micros=-1, kind="top_up", key="k")
    with pytest.raises(InvalidBillingRequest, match="usage"):
        LedgerWrite(account_id="a", amount_micros=1, kind="usage", key="k")
    with pytest.raises(InvalidBillingRequest, match="key"):
        LedgerWrite(account_id="a", amount_micros=1, kind="grant", key="")
    with pytest.raises(InvalidBillingRequest, match="kind"):
        LedgerWrite(account_id="a", amount_micros=1, kind="bonus", key="k")  # type: ignore[arg-type]


async def test_usage_pages_by_day_model_and_run(store):
    ticks = iter(range(1_700_000_000, 1_800_000_000, 40_000))  # ~11 hours apart: several UTC days
    store._clock = lambda: float(next(ticks))
    service = service_on(store, pricing=Pricing())
    for n in range(6):
        await service.record_usage(usage(n, model=f"m{n % 2}", run=f"run-{n % 3}", cost=100 * (n + 1)))
    await service.record_usage(usage(0, model="m0", run="run-0", cost=100))  # a retry: not a row more
    seen, cursor = [], ""
    while True:
        rows, cursor = await store.usage("acct", group_by="run", cursor=cursor, limit=2)
        seen += rows
        if not cursor:
            break
    assert [r["key"] for r in seen] == ["run-2", "run-1", "run-0"]
    assert {r["key"]: r["cost_micros"] for r in seen} == {"run-0": 100 + 400, "run-1": 200 + 500, "run-2": 300 + 600}
    models, _ = await store.usage("acct", group_by="model", cursor="", limit=10)
    assert {r["key"]: (r["calls"], r["cost_micros"]) for r in models} == {"m0": (3, 900), "m1": (3, 1_200)}
    days, _ = await store.usage("acct", group_by="day", cursor="", limit=10)
    assert sum(r["calls"] for r in days) == 6 and all(len(r["key"]) == 10 for r in days)
    assert days == sorted(days, key=lambda r: r["last_at"], reverse=True)
    with pytest.raises(InvalidBillingRequest, match="cursor"):
        await store.usage("acct", group_by="day", cursor="garbage!", limit=2)
    with pytest.raises(InvalidBillingRequest, match="group_by"):
        await store.usage("acct", group_by="week", cursor="", limit=2)


async def test_subscription_changes_apply_newest_first_and_refresh_check_run(store, tmp_path):
    path = tmp_path / "plans.toml"
    path.write_text(PLANS)
    service = service_on(store, catalog=load_catalog(path), cache_ttl=3600)
    assert (await service.check_run("acct", "openai/gpt-4o")).reason == "model_not_allowed"  # basic, cached

    newer = Subscription(
        account_id="acct",
        plan_id="team",
        status="active",
        current_period_start=1.0,
        current_period_end=2.0,
        stripe_customer_id="cus_1",
        stripe_subscription_id="sub_1",
        event_created=200,
    )
    async with service.transaction() as tx:
        assert await tx.record_event("evt_2", "customer.subscription.updated", 200)
        assert await tx.upsert_subscription(newer)
    # The cache was refreshed by the transaction itself: the new plan's rules apply at once.
    assert (await service.check_run("acct", "openai/gpt-4o")).allowed

    async with service.transaction() as tx:
        assert not await tx.record_event("evt_2", "customer.subscription.updated", 200), "a replay"
        assert await tx.record_event("evt_1", "customer.subscription.created", 100)
        assert not await tx.upsert_subscription(
            Subscription(account_id="acct", plan_id="basic", status="active", event_created=100)
        ), "older than stored"
    assert (await store.subscription("acct")).plan_id == "team"
    assert await store.stripe_customer("acct") == "cus_1"
    async with service.transaction() as tx:
        assert await tx.account_for_customer("cus_1") == "acct"
        assert await tx.downgrade_to_free("acct", free_plan_id="basic", status="canceled", event_created=300)
    plan, sub, _ = await service.subscription("acct")
    assert (plan.id, sub.status, sub.stripe_customer_id, sub.stripe_subscription_id) == (
        "basic",
        "canceled",
        "cus_1",
        None,
    )
    assert (await service.check_run("acct", "openai/gpt-4o")).reason == "model_not_allowed"


async def test_a_failed_unit_of_work_leaves_nothing(store):
    service = service_on(store)
    await service.balance("acct")
    with pytest.raises(RuntimeError):
        async with service.transaction() as tx:
            await tx.record_event("evt_x", "invoice.paid", 1)
            await tx.post(LedgerWrite(account_id="acct", amount_micros=5, kind="top_up", key="checkout:cs_1"))
            raise RuntimeError("the handler failed half-way")
    assert await service.balance("acct") == 1_000_000
    async with service.transaction() as tx:
        assert await tx.record_event("evt_x", "invoice.paid", 1), "the event was not marked processed"


async def test_the_local_provider_has_no_card_payments():
    local = LocalPaymentsProvider()
    with pytest.raises(PaymentsNotConfigured):
        await local.checkout("acct", plan_id="pro", credit_pack_id=None, success_url=None, cancel_url=None)
    with pytest.raises(PaymentsNotConfigured):
        await local.portal("acct", return_url=None)
    with pytest.raises(PaymentsNotConfigured):
        await local.handle_webhook(b"{}", "t=1,v1=x")
