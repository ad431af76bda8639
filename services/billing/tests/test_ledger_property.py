"""The ledger's invariant under any interleaving, on PostgreSQL (hypothesis).

Concurrent usage writes, their retries, webhook-like credits (event recorded + credit + plan
change in one unit of work, delivered repeatedly and out of order) and checkout credits, all at
once on separate connections: afterwards balance == sum(entries), every idempotency key has one
entry, each usage key was charged once, every event was processed once, and the subscription is
the one from the newest event.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentry.billing import BillingService, LedgerWrite, Subscription, load_catalog
from agentry.billing.adapters.sql import SqlBillingStore
from agentry.billing.domain import checkout_key, stripe_event_key, usage_key
from agentry.servicekit.db import open_database

from .conftest import MIGRATIONS

OPENING = 1_000_000

# An operation: (kind, id, times it is delivered). Amounts are a function of the id, as a retry
# of the same write carries the same amount.
usage_op = st.tuples(st.just("usage"), st.integers(0, 15), st.integers(1, 3))
event_op = st.tuples(st.just("event"), st.integers(0, 7), st.integers(1, 3))
checkout_op = st.tuples(st.just("checkout"), st.integers(0, 4), st.integers(1, 3))
operations = st.lists(st.one_of(usage_op, event_op, checkout_op), min_size=1, max_size=30)


def usage_cost(n: int) -> int:
    return 1_000 + 37_000 * n


def event_credit(n: int) -> int:
    return 500_000 + 10_000 * n


def checkout_credit(n: int) -> int:
    return 2_000_000 + n


@pytest.fixture
async def pg_engine(postgres_url):
    async with contextlib.AsyncExitStack() as stack:
        yield await open_database(
            postgres_url,
            migrations_dir=MIGRATIONS,
            version_table="alembic_version_billing",
            stack=stack,
            pool_size=12,
            max_overflow=0,
        )


async def _apply(service: BillingService, account: str, op: tuple[str, int, int]) -> None:
    kind, n, _ = op
    if kind == "usage":
        async with service.transaction() as tx:
            await tx.post(
                LedgerWrite(
                    account_id=account,
                    amount_micros=-usage_cost(n),
                    kind="usage",
                    key=usage_key(f"run-{n % 4}", n),
                    run_id=f"run-{n % 4}",
                    step=n,  # same keys in every example: per account
                    model="m",
                    source="model",
                )
            )
    elif kind == "event":
        event_id = f"evt_{account}_{n}"
        async with service.transaction() as tx:
            if not await tx.record_event(event_id, "invoice.paid", 1_700_000_000 + n):
                return
            await tx.post(
                LedgerWrite(
                    account_id=account,
                    amount_micros=event_credit(n),
                    kind="monthly_allowance",
                    key=stripe_event_key(event_id),
                )
            )
            await tx.upsert_subscription(
                Subscription(
                    account_id=account,
                    plan_id="pro" if n % 2 else "free",
                    status="active",
                    current_period_start=float(n),
                    stripe_subscription_id=f"sub_{n}",
                    event_created=1_700_000_000 + n,
                )
            )
    else:
        async with service.transaction() as tx:
            await tx.post(
                LedgerWrite(
                    account_id=account,
                    amount_micros=checkout_credit(n),
                    kind="top_up",
                    key=checkout_key(f"cs_{account}_{n}"),
                )
            )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, order=st.randoms(use_true_random=False))
async def test_any_interleaving_keeps_balance_equal_to_entries(pg_engine, ops, order):
    store = SqlBillingStore(pg_engine)
    service = BillingService(store, load_catalog(None), opening_grant_micros=OPENING, cache_ttl=3600)
    account = f"acct-{uuid.uuid4().hex[:10]}"
    assert await service.balance(account) == OPENING  # opens it (one grant)

    deliveries = [op for op in ops for _ in range(op[2])]
    order.shuffle(deliveries)
    await asyncio.gather(*(_apply(service, account, op) for op in deliveries))

    entries = await store.entries(account)
    balance = await store.balance(account)
    assert balance == sum(e.amount_micros for e in entries)
    keys = [e.key for e in entries]
    assert len(keys) == len(set(keys)), "a key was written twice"

    usages = {n for kind, n, _ in ops if kind == "usage"}
    events = {n for kind, n, _ in ops if kind == "event"}
    checkouts = {n for kind, n, _ in ops if kind == "checkout"}
    expected = (
        OPENING
        - sum(usage_cost(n) for n in usages)
        + sum(event_credit(n) for n in events)
        + sum(checkout_credit(n) for n in checkouts)
    )
    assert balance == expected
    charged = sorted(e.step for e in entries if e.kind == "usage")
    assert charged == sorted(usages), "each usage key is charged exactly once"
    # The service's own cache saw every one of its writes: CheckRun's answer is exact.
    assert await service.balance(account) == balance

    async with pg_engine.connect() as conn:
        processed = await conn.scalar(
            sa.text("SELECT count(*) FROM processed_events WHERE event_id LIKE :p"), {"p": f"evt_{account}_%"}
        )
    assert processed == len(events)
    sub = await store.subscription(account)
    if events:
        newest = max(events)
        assert (sub.stripe_subscription_id, sub.event_created) == (f"sub_{newest}", 1_700_000_000 + newest)
    else:
        assert sub is None


async def test_post_now_moves_the_balance_once_per_key_in_one_statement(pg_engine) -> None:
    # post_now's PostgreSQL path (an account it knows: one prebuilt statement) against the
    # transaction path it stands in for: the same balances, the same ledger rows, a key twice once.
    store = SqlBillingStore(pg_engine)
    account = f"acct-{uuid.uuid4().hex[:8]}"
    async with store.transaction() as tx:
        await tx.post(LedgerWrite(account_id=account, amount_micros=OPENING, kind="grant", key=f"open:{account}"))

    def usage(n: int) -> LedgerWrite:
        return LedgerWrite(
            account_id=account,
            amount_micros=-usage_cost(n),
            kind="usage",
            key=usage_key("run-1", n),
            run_id="run-1",
            step=n,
            model="m",
            prompt_tokens=10 + n,
            completion_tokens=2,
            source="model",
            note="x" * 300,
        )

    first = await store.post_now(usage(1))
    again = await store.post_now(usage(1))
    second = await store.post_now(usage(2))
    assert (first.applied, first.balance_micros) == (True, OPENING - usage_cost(1))
    assert (again.applied, again.balance_micros) == (False, OPENING - usage_cost(1))
    assert (second.applied, second.balance_micros) == (True, OPENING - usage_cost(1) - usage_cost(2))
    async with pg_engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT step, prompt_tokens, source, length(note) FROM credit_ledger "
                    "WHERE account_id = :a AND kind = 'usage' ORDER BY step"
                ),
                {"a": account},
            )
        ).all()
    assert [tuple(r) for r in rows] == [(1, 11, "model", 255), (2, 12, "model", 255)]
