"""The credit ledger's contract, run on SQLite and PostgreSQL, races included."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa

from agentry.billing import AccountNotFound, SqlCreditLedger, Usage
from agentry.servicekit.db import open_database

GRANT = 5_000_000


def step(n: int, cost: int, *, run_id: str = "run-1", account_id: str = "acct") -> Usage:
    return Usage(
        account_id=account_id,
        run_id=run_id,
        step=n,
        model="gpt-test",
        prompt_tokens=100 + n,
        completion_tokens=10 + n,
        cost_micros=cost,
    )


async def assert_entries_explain_balance(ledger: SqlCreditLedger, account_id: str) -> None:
    entries = await ledger.entries(account_id)
    assert sum(e.amount_micros for e in entries) == await ledger.balance(account_id)


async def test_unknown_account_has_no_balance(ledger):
    assert await ledger.balance("nobody") is None
    assert await ledger.entries("nobody") == []


async def test_opening_grants_once(ledger):
    assert await ledger.open_account("acct", GRANT) == GRANT
    assert await ledger.open_account("acct", GRANT) == GRANT
    entries = await ledger.entries("acct")
    assert [(e.kind, e.amount_micros) for e in entries] == [("grant", GRANT)]


async def test_concurrent_first_calls_open_one_account_with_one_grant(ledger, engine):
    balances = await asyncio.gather(*(ledger.open_account("acct", GRANT) for _ in range(20)))
    assert balances == [GRANT] * 20
    async with engine.connect() as conn:
        accounts = await conn.scalar(sa.text("SELECT count(*) FROM credit_accounts"))
        grants = await conn.scalar(sa.text("SELECT count(*) FROM credit_ledger WHERE kind = 'grant'"))
    assert (accounts, grants) == (1, 1)


async def test_charge_debits_and_records_the_step(ledger):
    await ledger.open_account("acct", GRANT)
    charge = await ledger.charge(step(0, 1_250))
    assert (charge.balance_micros, charge.charged) == (GRANT - 1_250, True)
    usage = [e for e in await ledger.entries("acct") if e.kind == "usage"]
    assert len(usage) == 1
    entry = usage[0]
    assert (entry.amount_micros, entry.run_id, entry.step, entry.model) == (-1_250, "run-1", 0, "gpt-test")
    assert (entry.prompt_tokens, entry.completion_tokens) == (100, 10)
    await assert_entries_explain_balance(ledger, "acct")


async def test_a_repeated_step_charges_nothing(ledger):
    await ledger.open_account("acct", GRANT)
    await ledger.charge(step(0, 1_000))
    repeat = await ledger.charge(step(0, 1_000))
    assert (repeat.balance_micros, repeat.charged) == (GRANT - 1_000, False)
    assert len(await ledger.entries("acct")) == 2


async def test_the_last_step_may_take_the_balance_below_zero(ledger):
    await ledger.open_account("acct", 1_000)
    charge = await ledger.charge(step(0, 1_500))
    assert charge.balance_micros == -500
    assert not charge.may_continue
    await assert_entries_explain_balance(ledger, "acct")


async def test_charging_an_unopened_account_is_refused(ledger):
    with pytest.raises(AccountNotFound):
        await ledger.charge(step(0, 10, account_id="ghost"))
    with pytest.raises(AccountNotFound):
        await ledger.credit("ghost", 10, kind="adjustment")
    assert await ledger.balance("ghost") is None


async def test_credit_and_adjustment_move_the_balance_with_an_entry(ledger):
    await ledger.open_account("acct", 0)
    assert await ledger.credit("acct", 2_000_000, kind="grant") == 2_000_000
    assert await ledger.credit("acct", -500_000, kind="adjustment") == 1_500_000
    kinds = [(e.kind, e.amount_micros) for e in await ledger.entries("acct")]
    assert kinds == [("grant", 0), ("grant", 2_000_000), ("adjustment", -500_000)]
    await assert_entries_explain_balance(ledger, "acct")


async def test_fifty_concurrent_charges_all_land(ledger):
    await ledger.open_account("acct", GRANT)
    costs = [1_000 + n for n in range(50)]
    charges = await asyncio.gather(*(ledger.charge(step(n, cost)) for n, cost in enumerate(costs)))
    assert all(c.charged for c in charges)
    assert await ledger.balance("acct") == GRANT - sum(costs)
    # Every caller saw a distinct balance: no two updates read the same old value.
    assert len({c.balance_micros for c in charges}) == 50
    await assert_entries_explain_balance(ledger, "acct")


async def test_twenty_concurrent_repeats_charge_once(ledger):
    await ledger.open_account("acct", GRANT)
    charges = await asyncio.gather(*(ledger.charge(step(7, 3_000)) for _ in range(20)))
    assert sum(c.charged for c in charges) == 1
    assert await ledger.balance("acct") == GRANT - 3_000
    assert {c.balance_micros for c in charges} == {GRANT - 3_000}
    assert len([e for e in await ledger.entries("acct") if e.kind == "usage"]) == 1


async def test_migrations_are_idempotent(database_url, engine, migrations_dir):
    async with contextlib.AsyncExitStack() as stack:
        again = await open_database(
            database_url, migrations_dir=migrations_dir, version_table="alembic_version_billing", stack=stack
        )
        async with again.connect() as conn:
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version_billing"))
    assert version == "0002"
